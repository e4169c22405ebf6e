"""``dc_snoop``: a transparent distcache proxy that prints every message both ways.

Bytes are forwarded exactly as received, the moment they arrive, whatever
the parser makes of them; a copy goes through the sans-IO codec and every
message is printed with :func:`~scatterhoard.protocol.distcache.describe`
(direction, uid, operation, lengths, result), its frames, and for a response
the time since its request.  Flow control is end to end: when one side stops
reading, the other side's reading is paused, nothing piles up and nothing
stalls.  Traffic the codec refuses is reported once and still forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import sys
import time
from collections.abc import Callable
from typing import TextIO, cast

from ..address import Address
from ..protocol import distcache as dc
from ..service import Service
from .net import connect_async, serve_socket

_conn_ids = itertools.count(1)


def frame_lengths(payload_len: int) -> list[int]:
    """The data_len of every frame of a message (non-final frames carry exactly 2048)."""
    if payload_len == 0:
        return [0]
    full, rest = divmod(payload_len, dc.MAX_FRAME_DATA)
    return [dc.MAX_FRAME_DATA] * full + ([rest] if rest else [])


class Printer:
    """Formats snoop lines; ``out`` is flushed after every batch."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()

    def line(self, conn: int, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.started:10.6f}] conn {conn} {text}\n")

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.out.flush()


class _Side(asyncio.Protocol):
    """One end of a snooped connection; ``peer`` is the other end."""

    def __init__(self, pipe: _Pipe, upstream: bool) -> None:
        self.pipe = pipe
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.upstream:
            self.pipe.client_connected(self)

    def data_received(self, data: bytes) -> None:
        self.pipe.forward(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.lost(self)

    def pause_writing(self) -> None:
        other = self.pipe.other(self)
        if other is not None and other.transport is not None:
            other.transport.pause_reading()

    def resume_writing(self) -> None:
        other = self.pipe.other(self)
        if other is not None and other.transport is not None:
            other.transport.resume_reading()


class _Pipe:
    """A client connection, its server connection, and the decoding of both directions."""

    def __init__(self, snoop: Snoop) -> None:
        self.snoop = snoop
        self.id = next(_conn_ids)
        self.client: _Side | None = None
        self.server: _Side | None = None
        self.parsers = {True: dc.DistcacheParser("server"), False: dc.DistcacheParser("client")}
        self.broken: dict[bool, bool] = {True: False, False: False}
        self.sent_at: dict[int, float] = {}
        self.early: list[bytes] = []  # client bytes that arrived before the server connection was up
        self.closed = False

    def other(self, side: _Side) -> _Side | None:
        return self.server if side is self.client else self.client

    def client_connected(self, side: _Side) -> None:
        self.client = side
        assert side.transport is not None
        peer = side.transport.get_extra_info("peername") or "local client"
        self.snoop.printer.line(self.id, f"open from {peer}")
        side.transport.pause_reading()  # until the server connection is up
        task = asyncio.get_running_loop().create_task(self._connect())
        tasks = self.snoop.tasks
        tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(tasks.discard)

    async def _connect(self) -> None:
        try:
            _, server = await connect_async(lambda: _Side(self, True), self.snoop.server)
        except OSError as exc:
            self.snoop.printer.line(self.id, f"cannot connect to {self.snoop.server}: {exc.strerror or exc}")
            self.snoop.printer.flush()
            if self.client is not None and self.client.transport is not None:
                self.client.transport.close()
            return
        self.server = server
        if self.client is None or self.client.transport is None or self.closed:
            if server.transport is not None:
                server.transport.close()
            return
        if self.early and server.transport is not None:
            server.transport.write(b"".join(self.early))
            self.early.clear()
        self.client.transport.resume_reading()

    def forward(self, side: _Side, data: bytes) -> None:
        other = self.other(side)
        if other is not None and other.transport is not None:
            other.transport.write(data)  # first, untouched: the snoop never holds bytes back
        else:
            self.early.append(data)
        self._decode(side is self.client, data)

    def _decode(self, from_client: bool, data: bytes) -> None:
        if self.broken[from_client]:
            return
        printer = self.snoop.printer
        direction = "client->server" if from_client else "server->client"
        try:
            messages = self.parsers[from_client].feed(data)
        except dc.FramingError as exc:
            messages = exc.messages
            self._show(direction, messages)
            printer.line(self.id, f"{direction} not distcache any more ({exc.reason}); "
                                  "forwarding without decoding")
            self.broken[from_client] = True
            printer.flush()
            return
        if messages:
            self._show(direction, messages)
            printer.flush()

    def _show(self, direction: str, messages: list[dc.Message]) -> None:
        printer = self.snoop.printer
        now = time.monotonic()
        for m in messages:
            lens = frame_lengths(len(m.payload))
            frames = f"frames={len(lens)}" + (f" ({'+'.join(map(str, lens))})" if len(lens) > 1 else "")
            timing = ""
            if m.is_response:
                sent = self.sent_at.pop(m.uid, None)
                if sent is not None:
                    timing = f" {(now - sent) * 1000:.3f} ms"
            else:
                self.sent_at[m.uid] = now
            wire = len(m.payload) + dc.HEADER_SIZE * len(lens)
            printer.line(self.id, f"{direction} {dc.describe(m)} {frames} bytes={wire}{timing}")

    def lost(self, side: _Side) -> None:
        other = self.other(side)
        if other is not None and other.transport is not None:
            other.transport.close()
        if not self.closed:
            self.closed = True
            who = "client" if side is self.client else "server"
            self.snoop.printer.line(self.id, f"closed by the {who}")
            self.snoop.printer.flush()


class Snoop(Service):
    """The dc_snoop engine: accept, connect a twin to ``server``, print both directions."""

    def __init__(self, server: Address, out: TextIO | None = None) -> None:
        self.server = server
        self.printer = Printer(out if out is not None else sys.stdout)
        self._servers: list[asyncio.AbstractServer] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self, socks: list[socket.socket], ready: Callable[[], None] | None = None) -> None:
        for sock in socks:
            self._servers.append(await serve_socket(sock, lambda: _Side(_Pipe(self), False)))
        await self.run_until_stopped(ready)

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
