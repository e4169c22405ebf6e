"""The sans-IO protocol core: bytes in, typed commands/replies out, bytes back.

No sockets, no asyncio here: the server, the proxy, the clients, snoop and
bench all drive these parsers and serializers.
"""
