"""TLS for asyncio servers on libssl (cffi, ABI mode), with sessions shared by a server farm.

Python's :mod:`ssl` cannot plug an external session cache; this package owns
the ``SSL_CTX``/``SSL`` objects itself and drives them over memory BIOs::

    from scatterhoard.tls import Sealer, SessionStore, TLSContext, load_key_file, start_tls_server

    store = SessionStore("IP:cache.example:9001", Sealer(load_key_file("/etc/hoard/farm.key"),
                                                         context=b"my-farm"))
    ctx = TLSContext("cert.pem", "key.pem", session_store=store, session_id_context=b"my-farm")
    server = await start_tls_server(MyProtocol, ctx, "0.0.0.0:443")

``hoard tls`` (:mod:`.terminator`) is a TLS terminator built on it.
"""

from .connection import Handshake, TLSConnection
from .context import TLSContext
from .sealing import Sealer, generate_key_file, load_key_file
from .server import TLSServerProtocol, TLSStats, TLSTransport, start_stream_server, start_tls_server
from .store import DistcacheBackend, MemcacheBackend, SessionStore, open_backend
from .terminator import Terminator
from .tickets import TicketKeys

__all__ = [
    "DistcacheBackend",
    "Handshake",
    "MemcacheBackend",
    "Sealer",
    "SessionStore",
    "TLSConnection",
    "TLSContext",
    "TLSServerProtocol",
    "TLSStats",
    "TLSTransport",
    "Terminator",
    "TicketKeys",
    "generate_key_file",
    "load_key_file",
    "open_backend",
    "start_stream_server",
    "start_tls_server",
]
