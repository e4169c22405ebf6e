"""``hoard snoop -l ADDR -c ADDR``: a transparent proxy that prints every request and reply.

The engine, :class:`SnoopProxy`, accepts clients, opens a twin connection to
the server for each and forwards bytes both ways *first*, untouched, the
moment they arrive; only then is a copy handed to the connection's
:class:`Tap`.  Flow control is end to end (a side that stops reading pauses
the other side's reading), so nothing piles up in the snoop and nothing is
held back.  A tap that fails is switched off for its connection; the
forwarding goes on.

``hoard snoop`` taps every connection with a :class:`DecodingTap`: the
protocol is picked from the client's first byte the way ``hoard server``
picks it (0x80 memcached binary, 0x00 distcache, ``*`` RESP, anything else
memcached text/meta), both directions go through the sans-IO codecs
(:mod:`.snoop_decode`), and each request is printed with its reply on one
line: time, connection id, protocol, the request, the reply, the latency and
the sizes on the wire.  Bytes the codec refuses are printed raw (cut) once,
and the connection is then forwarded without decoding.

``dc_snoop`` (:mod:`scatterhoard.distcache.snoop`) is the same engine with a
distcache-only tap of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Protocol, TextIO, cast

from ..address import ACCEPTED_FORMS, Address, parse_address
from ..errors import HoardError
from ..service import Service
from .snoop_decode import DecodeError, Decoder, Exchange, decoder_for, show_value
from .snoop_output import BackgroundOutput, Output

# -- the engine -----------------------------------------------------------------------------------


class Tap(Protocol):
    """What sees a snooped connection (always after its bytes were forwarded)."""

    def opened(self, peer: str) -> None: ...

    def connect_failed(self, reason: str) -> None: ...

    def client_data(self, data: bytes) -> None: ...

    def server_data(self, data: bytes) -> None: ...

    def closed(self, by: str) -> None: ...


TapFactory = Callable[[int], Tap]


class _Side(asyncio.Protocol):
    """One end of a snooped connection; the pipe knows the other."""

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

    def eof_received(self) -> bool | None:
        self.pipe.half_close(self)
        return True  # keep the other direction open until it ends too

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
    """A client connection, its server connection, and the tap that watches both."""

    def __init__(self, proxy: SnoopProxy, conn_id: int) -> None:
        self.proxy = proxy
        self.id = conn_id
        self.tap: Tap | None = proxy.tap_factory(conn_id)
        self.client: _Side | None = None
        self.server: _Side | None = None
        self.early: list[bytes] = []  # client bytes that came before the server connection was up
        self.early_eof = False
        self.eofs: set[bool] = set()  # the sides (upstream or not) that have sent their EOF
        self.closed = False

    def other(self, side: _Side) -> _Side | None:
        return self.server if side is self.client else self.client

    def _tap(self, method: str, *args: object) -> None:
        tap = self.tap
        if tap is None:
            return
        try:
            getattr(tap, method)(*args)
        except Exception as exc:  # a tap bug must never touch the traffic
            self.tap = None
            self.proxy.tap_failed(self.id, exc)

    def client_connected(self, side: _Side) -> None:
        self.client = side
        assert side.transport is not None
        peer = side.transport.get_extra_info("peername")
        self._tap("opened", _peer_text(peer))
        side.transport.pause_reading()  # until the server connection is up
        task = asyncio.get_running_loop().create_task(self._connect())
        tasks = self.proxy.tasks
        tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(tasks.discard)

    async def _connect(self) -> None:
        try:
            _, server = await _connect(lambda: _Side(self, True), self.proxy.server)
        except OSError as exc:
            self._tap("connect_failed", f"cannot connect to {self.proxy.server}: {exc.strerror or exc}")
            self.closed = True
            if self.client is not None and self.client.transport is not None:
                self.client.transport.close()
            return
        self.server = server
        if self.client is None or self.client.transport is None or self.closed:
            if server.transport is not None:
                server.transport.close()
            return
        if server.transport is not None:
            if self.early:
                server.transport.write(b"".join(self.early))
                self.early.clear()
            if self.early_eof and server.transport.can_write_eof():
                server.transport.write_eof()
        if self.client.transport is not None and not self.client.transport.is_closing():
            self.client.transport.resume_reading()

    def forward(self, side: _Side, data: bytes) -> None:
        other = self.other(side)
        if other is not None and other.transport is not None:
            other.transport.write(data)  # first, untouched: the snoop never holds bytes back
        else:
            self.early.append(data)
        self._tap("client_data" if side is self.client else "server_data", data)

    def half_close(self, side: _Side) -> None:
        """One side finished sending: pass the EOF on; once both have, close both."""
        self.eofs.add(side.upstream)
        other = self.other(side)
        if len(self.eofs) == 2:
            for s in (side, other):
                if s is not None and s.transport is not None:
                    s.transport.close()
            return
        if other is None or other.transport is None:
            self.early_eof = True
            return
        if other.transport.can_write_eof():
            other.transport.write_eof()
        else:
            other.transport.close()

    def lost(self, side: _Side) -> None:
        other = self.other(side)
        if other is not None and other.transport is not None:
            other.transport.close()
        if not self.closed:
            self.closed = True
            self._tap("closed", "client" if side is self.client else "server")


def _peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer) if peer else "a local client"


async def _connect(factory: Callable[[], _Side], addr: Address) -> tuple[asyncio.Transport, _Side]:
    from ..distcache.net import connect_async

    return await connect_async(factory, addr)


class SnoopProxy(Service):
    """Accept clients, connect each to ``server``, forward both ways, show a tap every byte."""

    def __init__(self, server: Address, tap_factory: TapFactory, err: TextIO | None = None) -> None:
        self.server = server
        self.tap_factory = tap_factory
        self.err = err if err is not None else sys.stderr
        self._servers: list[asyncio.AbstractServer] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    async def serve(self, socks: list[socket.socket], ready: Callable[[], None] | None = None) -> None:
        from ..distcache.net import serve_socket

        for sock in socks:
            self._servers.append(await serve_socket(sock, lambda: _Side(_Pipe(self, next(self._ids)), False)))
        await self.run_until_stopped(ready)

    def tap_failed(self, conn_id: int, exc: BaseException) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.err.write(f"snoop: internal error decoding connection {conn_id} ({type(exc).__name__}: {exc}); "
                           "it is still forwarded\n")
            self.err.flush()

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()


# -- printing -------------------------------------------------------------------------------------


class Filters:
    """--key, --command and --slow: which exchanges are printed."""

    def __init__(self, keys: Sequence[str] = (), commands: Sequence[str] = (), slow_ms: float | None = None) -> None:
        self.keys = [k.encode("latin-1") for k in keys]
        self.commands = {c.strip().upper() for item in commands for c in item.split(",") if c.strip()}
        self.slow = None if slow_ms is None else slow_ms / 1000.0

    @property
    def active(self) -> bool:
        return bool(self.keys or self.commands or self.slow is not None)

    def accept(self, ex: Exchange) -> bool:
        req = ex.request
        if self.commands and (req is None
                              or not {req.command.upper(), *(a.upper() for a in req.aliases)} & self.commands):
            return False
        if self.keys and (req is None or not any(fnmatchcase(k, pat) for k in req.keys for pat in self.keys)):
            return False
        if self.slow is not None:
            lat = ex.latency
            if lat is None or lat < self.slow:
                return False
        return True


_NOTES = {"noreply": "no reply expected", "quiet": "no reply (quiet)", "closed": "no reply before close",
          "unsolicited": "reply to no request", "push": "push"}


class Printer:
    """One line per exchange or event, as text or JSON lines; flushed per batch."""

    def __init__(self, out: Output, filters: Filters | None = None, as_json: bool = False,
                 raw_limit: int = 64) -> None:
        self.out = out
        self.filters = filters or Filters()
        self.json = as_json
        self.raw_limit = raw_limit

    @staticmethod
    def _clock(wall: float) -> str:
        return datetime.fromtimestamp(wall).strftime("%H:%M:%S.%f")

    def exchange(self, conn: int, protocol: str, ex: Exchange) -> None:
        if not self.filters.accept(ex):
            return
        req, rep = ex.request, ex.reply
        wall = req.wall if req is not None else time.time()
        lat = ex.latency
        if self.json:
            obj: dict[str, object] = {
                "ts": round(wall, 6), "conn": conn, "protocol": protocol,
                "command": req.command if req else None,
                "keys": [k.decode("latin-1") for k in req.keys] if req else [],
                "request": req.text if req else None, "request_bytes": req.size if req else None,
                "reply": rep.text if rep else None, "reply_bytes": rep.size if rep else None,
                "status": rep.status if rep else None,
                "latency_ms": round(lat * 1000, 3) if lat is not None else None,
            }
            if ex.note:
                obj["note"] = ex.note
            self._write(json.dumps(obj))
            return
        left = req.text if req is not None else "(no request)"
        right = rep.text if rep is not None else f"({_NOTES.get(ex.note, ex.note)})"
        if lat is not None and req is not None and rep is not None:
            tail = f"  {lat * 1000:.3f} ms  {req.size}B/{rep.size}B"
        elif req is not None:
            tail = f"  {req.size}B"
        else:
            tail = f"  {rep.size}B" if rep is not None else ""
        self._write(f"{self._clock(wall)} #{conn} {protocol} {left} -> {right}{tail}")

    def event(self, conn: int, text: str, always: bool = False, **fields: object) -> None:
        if self.filters.active and not always:
            return
        if self.json:
            self._write(json.dumps({"ts": round(time.time(), 6), "conn": conn, "event": text.split(" ", 1)[0],
                                    "detail": text, **fields}))
        else:
            self._write(f"{self._clock(time.time())} #{conn} {text}")

    def raw(self, conn: int, protocol: str, direction: str, reason: str, data: bytes) -> None:
        text = (f"{protocol} {direction} not decodable ({reason}); raw {len(data)}B: "
                f"{show_value(data, self.raw_limit)}; forwarding without decoding")
        self.event(conn, text, always=True, raw=data[:self.raw_limit].hex())

    def _write(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.out.write(line + "\n")

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.out.flush()


class DecodingTap:
    """``hoard snoop``'s tap: detect the protocol, decode both directions, print the pairs."""

    def __init__(self, conn: int, printer: Printer, values: int = 32) -> None:
        self.conn = conn
        self.printer = printer
        self.values = values
        self.decoder: Decoder | None = None
        self.broken = False

    def opened(self, peer: str) -> None:
        self.printer.event(self.conn, f"open from {peer}")
        self.printer.flush()

    def connect_failed(self, reason: str) -> None:
        self.printer.event(self.conn, reason, always=True)
        self.printer.flush()

    def client_data(self, data: bytes) -> None:
        if self.broken or not data:
            return
        if self.decoder is None:
            self.decoder = decoder_for(data[0], self.values)
            self.printer.event(self.conn, f"protocol {self.decoder.protocol}")
        try:
            exchanges = self.decoder.client(data, time.monotonic(), time.time())
        except DecodeError as exc:
            self._fail("client->server", str(exc), data)
            return
        self._print(exchanges)

    def server_data(self, data: bytes) -> None:
        if self.broken or not data:
            return
        if self.decoder is None:  # the server spoke first: nothing to decode it with
            self._fail("server->client", "the server spoke before the client", data)
            return
        try:
            exchanges = self.decoder.server(data, time.monotonic())
        except DecodeError as exc:
            self._fail("server->client", str(exc), data)
            return
        self._print(exchanges)

    def closed(self, by: str) -> None:
        if self.decoder is not None and not self.broken:
            self._print(self.decoder.close())
        self.printer.event(self.conn, f"closed by the {by}")
        self.printer.flush()

    def _print(self, exchanges: list[Exchange]) -> None:
        if not exchanges:
            return
        protocol = self.decoder.protocol if self.decoder is not None else "?"
        for ex in exchanges:
            self.printer.exchange(self.conn, protocol, ex)
        self.printer.flush()

    def _fail(self, direction: str, reason: str, data: bytes) -> None:
        self.broken = True
        protocol = self.decoder.protocol if self.decoder is not None else "?"
        self.printer.raw(self.conn, protocol, direction, reason, data)
        self.printer.flush()


# -- command line ---------------------------------------------------------------------------------

DESCRIPTION = f"""\
A transparent proxy that prints each request with its reply: listen on -l,
forward every connection to -c byte for byte (never altered, never held back)
and decode a copy. The protocol is detected per connection from the client's
first byte: 0x80 memcached binary, 0x00 distcache, '*' RESP, anything else
memcached text and meta commands.

Each line: time of the request, #connection, protocol, request -> reply,
latency (request's last byte to reply's last byte, as seen by the snoop) and
bytes on the wire each way. Bytes that do not decode are printed raw (cut)
once and the connection is then forwarded without decoding.

addresses: {ACCEPTED_FORMS}

examples:
  hoard snoop -l 127.0.0.1:11311 -c 127.0.0.1:11211
  hoard snoop -l 127.0.0.1:6380 -c 127.0.0.1:6379 --key 'user:*' --slow 5
  hoard snoop -l unix:/tmp/snoop.sock -c 127.0.0.1:11211 --command get,set --json
"""


def _address(text: str) -> Address:
    try:
        return parse_address(text)
    except HoardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("snoop", help="transparent proxy printing requests and replies of every protocol",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-l", "--listen", type=_address, required=True, metavar="ADDR", help="address to listen on")
    p.add_argument("-c", "--connect", type=_address, required=True, metavar="ADDR", help="server to forward to")
    p.add_argument("--values", type=int, default=32, metavar="N",
                   help="show at most N bytes of each value (0: sizes only; default 32)")
    p.add_argument("--key", action="append", default=[], metavar="PATTERN",
                   help="only requests with a key matching this glob, e.g. 'session:*' (repeatable)")
    p.add_argument("--command", action="append", default=[], metavar="NAME",
                   help="only these commands, e.g. get,set or GETQ or ADD (case-insensitive; repeatable)")
    p.add_argument("--slow", type=float, metavar="MS", help="only requests whose reply took at least MS ms")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..distcache.net import listen_socket
    from ..server.app import install_event_loop_policy

    out = BackgroundOutput(sys.stdout)  # a slow reader of the output never stalls the traffic
    printer = Printer(out, Filters(args.key, args.command, args.slow), as_json=args.json)
    sock = listen_socket(args.listen)
    install_event_loop_policy()
    proxy = SnoopProxy(args.connect, lambda conn: DecodingTap(conn, printer, max(0, args.values)))

    def ready() -> None:
        print(f"hoard snoop: listening on {args.listen}, forwarding to {args.connect}", file=sys.stderr)

    try:
        asyncio.run(proxy.serve([sock], ready))
    finally:
        sock.close()
        if args.listen.kind == "unix":
            with contextlib.suppress(OSError):
                os.unlink(args.listen.path)
        out.close()
    return 0
