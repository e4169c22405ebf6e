"""``dc_client`` for memcached clients: text and binary, one upstream connection each.

Binary protocol: every request's opaque is rewritten to a proxy-wide value on
the way up and restored on the way down.  The server answers in order, so a
reply to opaque X also settles every earlier request still waiting: those
were quiet commands that succeeded silently.  STAT replies keep their request
open until the empty-key terminator.

Text protocol: there is no request id, so requests are forwarded in batches,
each followed by a ``mn`` (meta no-op) sentinel; every reply byte up to the
sentinel's ``MN`` belongs to that batch's client (a client's own ``mn``
commands are counted, so their ``MN`` replies reach it).  Requests are parsed
locally with the server's own text parser and forwarded re-serialised, so
malformed input is answered here and never reaches the shared connection;
``quit`` closes only the local connection.

While an upstream connection is being (re)established requests wait for it;
while it is down they are answered at once with an error (text
``SERVER_ERROR``, binary status 0x86 "temporary failure"); a text client with
requests in flight when the connection dies gets one ``SERVER_ERROR`` and is
closed, since the number of replies it still expects is unknown.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque

from ..protocol import binary as b
from ..protocol import text as t
from ..protocol import text_client as tc
from .proxy import LocalConnection, LocalHandler, Mux, Proxy, Slot

log = logging.getLogger("scatterhoard.distcache.proxy")

#: The largest request body / data block the proxy buffers (the server applies its own limit).
MAX_FORWARD = 16 * 1024 * 1024
STATUS_TEMPORARY_FAILURE = 0x86
_TMPFAIL_TEXT = b"Temporary failure"
_TEXT_DOWN = b"SERVER_ERROR proxy upstream connection unavailable\r\n"
_TEXT_LOST = b"SERVER_ERROR proxy upstream connection lost\r\n"
_SENTINEL = b"mn\r\n"


# --------------------------------------------------------------------------
# Binary
# --------------------------------------------------------------------------


class BinaryMux(Mux):
    name = "memcached-binary"

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(proxy)
        self.parser = b.BinaryParser(None, magic=b.RESPONSE_MAGIC)
        #: upstream opaque -> (local connection or None, slot, local opaque); in send order.
        self.in_flight: OrderedDict[int, tuple[LocalConnection | None, Slot, int]] = OrderedDict()
        self._opaque = 0

    def open_local(self, conn: LocalConnection) -> LocalHandler:
        return _LocalBinary(self, conn)

    def _next(self) -> int:
        op = self._opaque = (self._opaque + 1) & 0xFFFFFFFF
        while op in self.in_flight:
            op = self._opaque = (self._opaque + 1) & 0xFFFFFFFF
        return op

    def forward(self, conn: LocalConnection | None, packets: list[b.Packet]) -> None:
        if self.link.state == "down":
            if conn is not None:
                for p in packets:
                    conn.reply(b.encode_error(p.opcode, STATUS_TEMPORARY_FAILURE, p.opaque, _TMPFAIL_TEXT))
            return
        wire: list[bytes] = []
        for p in packets:
            opaque = self._next()
            slot = conn.new_slot() if conn is not None else Slot()
            self.in_flight[opaque] = (conn, slot, p.opaque)
            wire.append(b.encode_packet(p._replace(opaque=opaque)))
        self.link.write(b"".join(wire))

    def up(self) -> None:
        self.parser = b.BinaryParser(None, magic=b.RESPONSE_MAGIC)

    def down(self, reason: str) -> None:
        in_flight, self.in_flight = self.in_flight, OrderedDict()
        dirty: set[LocalConnection] = set()
        for conn, slot, _ in in_flight.values():
            slot.done = True
            if conn is not None:
                dirty.add(conn)
        for conn in dirty:
            conn.reply(b.encode_error(b.OP_NOOP, STATUS_TEMPORARY_FAILURE, 0, _TMPFAIL_TEXT))
            conn.finish()

    def upstream_data(self, data: bytes) -> None:
        try:
            packets = self.parser.feed(data)
        except b.BinaryFramingError as exc:
            self._deliver(exc.packets)
            self.link.abort(f"bad reply stream: {exc}")
            return
        self._deliver(packets)

    def _deliver(self, packets: list[b.Packet | b.TooLarge]) -> None:
        in_flight = self.in_flight
        dirty: set[LocalConnection] = set()
        for p in packets:
            if type(p) is not b.Packet or p.opaque not in in_flight:
                log.warning("memcached-binary upstream: unexpected reply dropped")
                continue
            while True:  # earlier requests without a reply were quiet successes
                opaque, (conn, slot, local_opaque) = next(iter(in_flight.items()))
                if opaque == p.opaque:
                    break
                del in_flight[opaque]
                slot.done = True
                if conn is not None:
                    dirty.add(conn)
            slot.parts.append(b.encode_packet(p._replace(opaque=local_opaque)))
            if not (p.opcode == b.OP_STAT and p.key):
                slot.done = True
                del in_flight[opaque]
            if conn is not None:
                dirty.add(conn)
        for conn in dirty:
            conn.flush()


class _LocalBinary:
    __slots__ = ("mux", "conn", "parser")

    def __init__(self, mux: BinaryMux, conn: LocalConnection) -> None:
        self.mux = mux
        self.conn = conn
        self.parser = b.BinaryParser(MAX_FORWARD, magic=b.REQUEST_MAGIC)

    def feed(self, data: bytes) -> None:
        conn = self.conn
        try:
            items = self.parser.feed(data)
        except b.BinaryFramingError as exc:
            self._run(exc.packets)
            if exc.status is not None:
                conn.reply(b.encode_error(exc.opcode, exc.status, exc.opaque))
            conn.finish()
            log.warning("closing local connection: memcached binary: %s", exc)
            return
        self._run(items)

    def _run(self, items: list[b.Packet | b.TooLarge]) -> None:
        conn = self.conn
        batch: list[b.Packet] = []
        for item in items:
            if conn.close_when_flushed:
                break
            if type(item) is b.TooLarge:
                inv = b.decode_too_large(item)
                self._flush(batch)
                if inv.status == b.STATUS_E2BIG and b.base_opcode(item.opcode) == b.OP_SET:
                    # memcached: a failed set leaves no stale value behind
                    self.mux.forward(None, [b.Packet(b.REQUEST_MAGIC, b.OP_DELETEQ, item.key, b"", b"", 0, 0, 0)])
                conn.reply(inv.encode())
                if inv.close:
                    conn.finish()
                continue
            assert type(item) is b.Packet
            req = b.decode_request(item)
            if type(req) is b.BinInvalid:  # never let it reach (and close) the shared connection
                self._flush(batch)
                conn.reply(req.encode())
                if req.close:
                    conn.finish()
                continue
            if item.opcode == b.OP_QUIT or item.opcode == b.OP_QUITQ:
                self._flush(batch)
                if item.opcode == b.OP_QUIT:
                    conn.reply(b.encode_response(item.opcode, 0, opaque=item.opaque))
                conn.finish()
                break
            batch.append(item)
        self._flush(batch)
        conn.flush()

    def _flush(self, batch: list[b.Packet]) -> None:
        if batch:
            self.mux.forward(self.conn, batch)
            batch.clear()

    def lost(self) -> None:
        """In-flight replies are dropped when they arrive."""


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------


def encode_text_command(cmd: t.TextCommand) -> bytes | None:
    """The wire form of a parsed request (None for what is never forwarded)."""
    if isinstance(cmd, t.Get):
        return tc.encode_get(cmd.keys, cmd.with_cas, cmd.exptime)
    if isinstance(cmd, t.StoreCmd):
        return tc.encode_store(cmd.command, cmd.key, cmd.value, cmd.flags, cmd.exptime, cmd.cas, cmd.noreply)
    if isinstance(cmd, t.Meta):
        flags = [f.encode() + tok for f, tok in cmd.flags]
        return tc.encode_meta(cmd.command, cmd.raw_key, flags, (cmd.value or b"") if cmd.command == b"ms" else None)
    if isinstance(cmd, t.Delete):
        return tc.encode_delete(cmd.key, cmd.noreply)
    if isinstance(cmd, t.Arith):
        return tc.encode_arith(cmd.key, cmd.delta, cmd.incr, cmd.noreply)
    if isinstance(cmd, t.Touch):
        return tc.encode_touch(cmd.key, cmd.exptime, cmd.noreply)
    if isinstance(cmd, t.FlushAll):
        return tc.encode_flush_all(cmd.delay, cmd.noreply)
    if isinstance(cmd, t.Version):
        return b"version\r\n"
    if isinstance(cmd, t.Verbosity):
        return b"verbosity %d%s\r\n" % (cmd.level, b" noreply" if cmd.noreply else b"")
    if isinstance(cmd, t.Stats):
        return b" ".join([b"stats", *cmd.args]) + b"\r\n"
    return None


class _BadReplies(Exception):
    """The server's reply stream cannot be cut into replies."""


class _ReplyReader:
    """Cuts the server's text reply stream into replies (VALUE/VA blocks whole)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            eol = buf.find(b"\n", pos)
            if eol < 0:
                break
            stop = eol + 1
            if buf.startswith(b"VALUE ", pos) or buf.startswith(b"VA ", pos):
                parts = bytes(buf[pos:eol]).split()
                try:
                    size = int(parts[3] if parts[0] == b"VALUE" else parts[1])
                except (IndexError, ValueError):
                    raise _BadReplies(f"bad value line {bytes(buf[pos:eol])[:80]!r}") from None
                if size < 0:
                    raise _BadReplies("negative value size")
                stop += size + 2
                if stop > end:
                    break
            out.append(bytes(buf[pos:stop]))
            pos = stop
        del buf[:pos]
        return out


class _Batch:
    """Requests of one local client sent together, answered up to the sentinel's MN."""

    __slots__ = ("conn", "slot", "own_mn")

    def __init__(self, conn: LocalConnection, slot: Slot, own_mn: int) -> None:
        self.conn = conn
        self.slot = slot
        self.own_mn = own_mn  # the client's own ``mn`` replies still to pass on


class TextMux(Mux):
    name = "memcached-text"

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(proxy)
        self.reader = _ReplyReader()
        self.batches: deque[_Batch] = deque()  # in send order

    def open_local(self, conn: LocalConnection) -> LocalHandler:
        return _LocalText(self, conn)

    def forward(self, conn: LocalConnection, wire: list[bytes], replies: int, own_mn: int) -> None:
        """Send one batch; ``replies`` counts its commands that expect an answer."""
        if self.link.state == "down":
            for _ in range(replies):
                conn.reply(_TEXT_DOWN)
            return
        self.batches.append(_Batch(conn, conn.new_slot(), own_mn))
        wire.append(_SENTINEL)
        self.link.write(b"".join(wire))

    def up(self) -> None:
        self.reader = _ReplyReader()

    def down(self, reason: str) -> None:
        batches, self.batches = self.batches, deque()
        for batch in batches:
            batch.slot.fill(_TEXT_LOST)
            batch.conn.finish()

    def upstream_data(self, data: bytes) -> None:
        try:
            replies = self.reader.feed(data)
        except _BadReplies as exc:
            self.link.abort(f"bad reply stream: {exc}")
            return
        batches = self.batches
        dirty: set[LocalConnection] = set()
        for reply in replies:
            if not batches:
                self.link.abort("reply without a request")
                return
            batch = batches[0]
            if reply == b"MN\r\n":
                if batch.own_mn == 0:
                    batch.slot.done = True
                    batches.popleft()
                    dirty.add(batch.conn)
                    continue
                batch.own_mn -= 1
            batch.slot.parts.append(reply)
        for conn in dirty:
            conn.flush()


class _LocalText:
    __slots__ = ("mux", "conn", "parser")

    def __init__(self, mux: TextMux, conn: LocalConnection) -> None:
        self.mux = mux
        self.conn = conn
        self.parser = t.TextRequestParser(MAX_FORWARD)

    def feed(self, data: bytes) -> None:
        conn = self.conn
        wire: list[bytes] = []
        replies = 0
        own_mn = 0
        for cmd in self.parser.feed(data):
            tp = type(cmd)
            if tp is t.ErrorReply or tp is t.TooLarge or tp is t.Quit:
                if wire:
                    self.mux.forward(conn, wire, replies, own_mn)
                    wire, replies, own_mn = [], 0, 0
                if tp is t.Quit:
                    conn.finish()
                    break
                if isinstance(cmd, t.ErrorReply):
                    conn.reply(cmd.message + b"\r\n")
                    if cmd.close:
                        conn.finish()
                        break
                elif isinstance(cmd, t.TooLarge):
                    if cmd.command == b"set":  # memcached: a failed set leaves no stale value
                        self.mux.forward(conn, [b"delete %s noreply\r\n" % cmd.key], 0, 0)
                    if not cmd.noreply:
                        conn.reply(b"SERVER_ERROR object too large for cache\r\n")
                continue
            raw = encode_text_command(cmd)
            if raw is None:
                continue
            wire.append(raw)
            if not getattr(cmd, "noreply", False):
                replies += 1
            if tp is t.Meta and isinstance(cmd, t.Meta) and cmd.command == b"mn":
                own_mn += 1
        if wire:
            self.mux.forward(conn, wire, replies, own_mn)
        conn.flush()

    def lost(self) -> None:
        """Batches in flight still consume their replies; they are dropped on arrival."""
