#!/usr/bin/env python3
"""A floor for ``hoard server``'s benchmark: the least a uvloop memcached server can do.

Not part of scatterhoard and not a cache: an asyncio ``Protocol`` on uvloop
holding one dict of key -> ready-made ``get`` reply. It answers just what
memcaslap sends (``get <key>`` and ``set <key> <flags> <exptime> <bytes>``)
plus an empty ``stats``; no expiry, no LRU, no memory limit, no CAS, no
statistics, no error replies. ``bench_server.py --floor`` runs it beside
hoard and memcached on the same load: its ratio to memcached is about the
best a server on this stack (CPython + uvloop, one dict lookup and one write
per request) can reach, whatever its protocol code does.

    python benchmarks/floor_server.py PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import cast

import uvloop

STORED = b"STORED\r\n"
END = b"END\r\n"


class FloorProtocol(asyncio.Protocol):
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data
        self.buf = b""
        self.write: Callable[[bytes], object] = print

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.write = cast(asyncio.Transport, transport).write

    def data_received(self, chunk: bytes) -> None:
        if not self.buf:  # the usual read: one whole request
            eol = chunk.find(b"\r\n")
            if eol == len(chunk) - 2 and chunk.startswith(b"get "):
                reply = self.data.get(chunk[4:-2])
                self.write(END if reply is None else reply)
                return
            if chunk.startswith(b"set "):
                parts = chunk[:eol].split()
                if len(parts) == 5 and eol + 4 + int(parts[4]) == len(chunk):
                    self.data[parts[1]] = b"VALUE %s %s %s\r\n%s\r\nEND\r\n" % (
                        parts[1], parts[2], parts[4], chunk[eol + 2:-2])
                    self.write(STORED)
                    return
        buf = self.buf + chunk if self.buf else chunk
        out: list[bytes] = []
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            if buf.startswith(b"get ", pos):
                reply = self.data.get(buf[pos + 4:eol])
                out.append(END if reply is None else reply)
                pos = eol + 2
            elif buf.startswith(b"set ", pos):
                parts = buf[pos:eol].split()
                end = eol + 2 + int(parts[4])
                if len(buf) < end + 2:
                    break
                self.data[parts[1]] = b"VALUE %s %s %s\r\n%s\r\nEND\r\n" % (
                    parts[1], parts[2], parts[4], buf[eol + 2:end])
                out.append(STORED)
                pos = end + 2
            else:  # stats, or anything else: an empty answer
                out.append(END)
                pos = eol + 2
        self.buf = buf[pos:]
        if out:
            self.write(out[0] if len(out) == 1 else b"".join(out))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    data: dict[bytes, bytes] = {}
    server = await loop.create_server(lambda: FloorProtocol(data), "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: floor_server.py PORT")
    uvloop.run(serve(int(sys.argv[1])))
