"""Binary memcached clients of a memcached pool: packets routed by key, answered in request order.

A memcached pool's listener does what memcached does: the first byte of a
connection decides its protocol (:class:`FirstByte`: 0x80 is a binary
request, anything else text/meta).  A binary client gets a
:class:`BinarySession`, the same engine as text clients
(:class:`~.session.ClientConnection`: one :class:`~.session.Slot` per request
in the client's order, servers filling them in any order, one write per
event-loop iteration); its requests go over the servers' binary connections
(the ``"binary"`` variant of each server, :mod:`.binary_backend`).

* Every packet is parsed and checked by the core codec
  (:mod:`scatterhoard.protocol.binary`) before anything is forwarded: a
  malformed one gets memcached's own answer from the proxy (bad magic: the
  connection is closed without a reply; key too long or lengths that do not
  fit the opcode: EINVAL, then close; a value over the item limit: E2BIG, the
  value is skipped and the connection goes on; an unknown opcode:
  UNKNOWN_COMMAND).
* Keyed requests go to the key's server (the routing of text clients) with
  the client's opaque, which the server echoes.
* Quiet requests (GETQ, GETKQ, SETQ, ..., DELETEQ, INCRQ, ...) are sent as
  their non-quiet base, and the replies memcached would have suppressed
  (successes, and misses of the GET/GAT family) are dropped here; the others
  get the quiet opcode back.  So every request sent gets exactly one reply,
  in order, on its server connection: the replies of quiet requests take
  their place in the client's order like any other, a NOOP (answered by the
  proxy) is written after every reply of the requests before it, whichever
  servers they went to, and the server-connection timeout covers quiet
  requests too.  (The other design -- quiet requests forwarded as they are and
  a NOOP sent to every server that got some before the client's NOOP -- needs
  replies matched by opaque, and a quiet request on a stopped server would
  never time out.)  The price is a small reply per suppressed answer between
  proxy and server, never to the client.
* Answered by the proxy: NOOP, VERSION, VERBOSITY (success, as the text
  ``verbosity``), STAT (about the proxy, as the text ``stats``; a STAT group
  is "Not found"), QUIT (success, then close) and QUITQ (close), the SASL
  opcodes (UNKNOWN_COMMAND, as memcached without SASL).  FLUSH/FLUSHQ go to
  every live server of the pool (success when all succeed, else the first
  error).
* A request that fails on its server gets, with the client's opcode and
  opaque and ``strerror`` as the value: **0x0085 (Busy)** when the server did
  not answer in time (the text ``SERVER_ERROR Connection timed out``), **0x0086
  (Temporary failure)** when the connection failed (refused, reset) or no
  server of the pool is live -- the closest statuses of the protocol for "the
  server is there but slow" and "no server could take it now, try again
  later".  Failures count towards ejection as for text clients.
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Final, cast

from ..protocol.binary import (
    OP_FLUSH,
    OP_FLUSHQ,
    OP_GATKQ,
    OP_GATQ,
    OP_GETKQ,
    OP_GETQ,
    OP_NOOP,
    OP_QUIT,
    OP_QUITQ,
    OP_SASL_AUTH,
    OP_SASL_LIST_MECHS,
    OP_SASL_STEP,
    OP_STAT,
    OP_VERBOSITY,
    OP_VERSION,
    QUIET_BASE,
    REQUEST_MAGIC,
    STATUS_EBUSY,
    STATUS_ETMPFAIL,
    STATUS_KEY_ENOENT,
    STATUS_UNKNOWN_COMMAND,
    BinaryFramingError,
    BinaryParser,
    Packet,
    TooLarge,
    check_request,
    decode_too_large,
    encode_error,
    encode_packet,
    encode_request,
    encode_response,
    get_at,
)
from ..routing import NoLiveServersError
from . import flow
from .backend import LINE, BackendServer, Waiter
from .pool import Pool
from .session import MAX_ITEM_SIZE, ClientConnection, ClientSession, Slot
from .stats import VERSION, stats_rows

#: Quiet opcodes whose hits memcached answers, not their misses (KEY_ENOENT).
_QUIET_GETS: Final = frozenset((OP_GETQ, OP_GETKQ, OP_GATQ, OP_GATKQ))
_OPCODE: Final = [bytes((i,)) for i in range(256)]
_OK: Final = b"\0\0"
_ENOENT: Final = b"\0\x01"


def failure(opcode: int, opaque: int, err: int) -> bytes:
    """The reply to a request its server could not answer (``err``: an errno)."""
    status = STATUS_EBUSY if err == errno.ETIMEDOUT else STATUS_ETMPFAIL
    return encode_error(opcode, status, opaque, os.strerror(err).encode())


class BinarySlot(Slot):
    """A non-quiet request's place in the reply order: the server's reply goes back as it is."""

    __slots__ = ("opcode", "opaque")

    def __init__(self, session: ClientConnection, opcode: int, opaque: int) -> None:
        self.kind = LINE
        self.session = session
        self.reply = None
        self.opcode = opcode
        self.opaque = opaque

    def fail(self, err: int) -> None:
        Slot.complete(self, failure(self.opcode, self.opaque, err))


class QuietSlot(BinarySlot):
    """A quiet request sent as its base: the reply memcached would not send is dropped."""

    __slots__ = ()

    def complete(self, raw: bytes) -> None:
        # GETQ & co answer hits and errors, not misses; the others errors only
        if raw[6:8] == (_ENOENT if self.opcode in _QUIET_GETS else _OK):
            Slot.complete(self, b"")
        else:
            Slot.complete(self, raw[:1] + _OPCODE[self.opcode] + raw[2:])


class FlushSlot(BinarySlot):
    """FLUSH/FLUSHQ sent to every live server: success when all succeeded, else the first error."""

    __slots__ = ("left", "error")

    def __init__(self, session: ClientConnection, opcode: int, opaque: int, nparts: int) -> None:
        super().__init__(session, opcode, opaque)
        self.left = nparts
        self.error: bytes | None = None

    def part(self, raw: bytes) -> None:
        if self.error is None and raw[6:8] != _OK:
            self.error = raw[:1] + _OPCODE[self.opcode] + raw[2:]
        self.left -= 1
        if not self.left:
            if self.error is not None:
                reply = self.error
            else:
                reply = b"" if self.opcode == OP_FLUSHQ else encode_response(OP_FLUSH, opaque=self.opaque)
            Slot.complete(self, reply)


class FlushPart(Waiter):
    __slots__ = ("parent",)

    def __init__(self, parent: FlushSlot) -> None:
        self.kind = LINE
        self.parent = parent

    def complete(self, raw: bytes) -> None:
        self.parent.part(raw)

    def fail(self, err: int) -> None:
        parent = self.parent
        parent.part(failure(parent.opcode, parent.opaque, err))


class BinarySession(ClientConnection):
    """One binary-protocol client connection to a memcached pool's listener."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self.parser = BinaryParser(MAX_ITEM_SIZE, magic=REQUEST_MAGIC)
        self.idle = True  # the parser holds no part of a packet (the GET shortcut may be taken)

    def servers_for(self, pool: Pool) -> list[BackendServer]:
        return [s.variant("binary") for s in pool.servers]  # the servers' binary connections

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.ctx.current = self  # who feeds a server connection, should it be full (flow)
        try:
            if self.idle:
                data = self._leading_gets(data)
                if not data:
                    return
            parser = self.parser
            try:
                items = parser.feed(data)
            except BinaryFramingError as exc:  # answer what came before, then memcached's reply, close
                self._close_after(exc.packets, None if exc.status is None
                                  else encode_error(exc.opcode, exc.status, exc.opaque))
                return
            self._handle(items)
            self.idle = not parser.buffered and not parser.skipping
        except Exception:  # never let one client take the proxy down
            self._internal_error()

    def _leading_gets(self, data: bytes) -> bytes:
        """Forward the GET/GETK requests at the start of a read as they came; return the rest.

        The commonest requests (the only ones of a non-pipelined client, most
        of a pipelined one) skip the parser, the checks and the re-encoding
        (:func:`~scatterhoard.protocol.binary.get_at` checks them); the first
        other request, and all after it, go to the parser.
        """
        queue = self.queue
        servers = self.servers
        index_for = self.index_for
        pos = 0
        while len(queue) < self.limit:
            found = get_at(data, pos)
            if found is None:
                break
            end, opcode, opaque = found
            try:
                server = servers[index_for(data[pos + 24:end])]
            except NoLiveServersError:
                self.pool.stats.forward_error += 1
                self._answer(failure(opcode, opaque, errno.ECONNREFUSED))
            else:
                slot = BinarySlot(self, opcode, opaque)
                queue.append(slot)
                (server.active or server.pick()).send(data[pos:end] if pos or end != len(data) else data, slot)
            pos = end
        return data[pos:] if pos else data

    def _handle(self, items: list[Packet | TooLarge]) -> None:
        queue = self.queue
        servers = self.servers
        index_for = self.index_for
        local = _LOCAL
        for item in items:
            if len(queue) >= self.limit:
                flow.hold(self, items, item)
                return
            invalid = check_request(item) if type(item) is Packet else decode_too_large(cast(TooLarge, item))
            if invalid is not None:
                self._answer(invalid.encode())
                if invalid.close:
                    self._refuse()
                    return
                continue
            item = cast(Packet, item)
            opcode = item.opcode
            handler = local.get(opcode)
            if handler is not None:
                handler(self, item)
                if self.closing:
                    return
                continue
            try:
                server = servers[index_for(item.key)]
            except NoLiveServersError:
                self.pool.stats.forward_error += 1
                self._answer(failure(opcode, item.opaque, errno.ECONNREFUSED))
                continue
            base = QUIET_BASE.get(opcode)
            if base is None:
                slot: BinarySlot = BinarySlot(self, opcode, item.opaque)
                data = encode_packet(item)
            else:
                slot = QuietSlot(self, opcode, item.opaque)
                data = encode_request(base, item.key, item.extras, item.value, item.opaque, item.cas,
                                      item.status_or_vbucket, item.datatype)
            queue.append(slot)
            (server.active or server.pick()).send(data, slot)

    # -- answered by the proxy (or broadcast) ------------------------------------------------------
    def _noop(self, p: Packet) -> None:
        self._answer(encode_response(p.opcode, opaque=p.opaque))

    def _version(self, p: Packet) -> None:
        self._answer(encode_response(OP_VERSION, value=VERSION.encode(), opaque=p.opaque))

    def _quit(self, p: Packet) -> None:
        if p.opcode == OP_QUIT:
            self._answer(encode_response(OP_QUIT, opaque=p.opaque))
        self.closing = True
        self._mark()

    def _unknown(self, p: Packet) -> None:
        self._answer(encode_error(p.opcode, STATUS_UNKNOWN_COMMAND, p.opaque))

    def _stat(self, p: Packet) -> None:
        if p.key:
            self._answer(encode_error(OP_STAT, STATUS_KEY_ENOENT, p.opaque))
            return
        opaque = p.opaque
        replies = [encode_response(OP_STAT, key=k.encode(), value=str(v).encode(), opaque=opaque)
                   for k, v in stats_rows(self.pool)]
        replies.append(encode_response(OP_STAT, opaque=opaque))
        self._answer(b"".join(replies))

    def _flush(self, p: Packet) -> None:
        live = sorted(self.pool.router.live)
        if not live:
            self.pool.stats.forward_error += 1
            self._answer(failure(p.opcode, p.opaque, errno.ECONNREFUSED))
            return
        parent = FlushSlot(self, p.opcode, p.opaque, len(live))
        self.queue.append(parent)
        data = encode_request(OP_FLUSH, extras=p.extras, opaque=p.opaque)
        servers = self.servers
        for index in live:
            server = servers[index]
            (server.active or server.pick()).send(data, FlushPart(parent))


_LOCAL: Final = {
    OP_NOOP: BinarySession._noop, OP_VERBOSITY: BinarySession._noop, OP_VERSION: BinarySession._version,
    OP_QUIT: BinarySession._quit, OP_QUITQ: BinarySession._quit, OP_STAT: BinarySession._stat,
    OP_FLUSH: BinarySession._flush, OP_FLUSHQ: BinarySession._flush, OP_SASL_LIST_MECHS: BinarySession._unknown,
    OP_SASL_AUTH: BinarySession._unknown, OP_SASL_STEP: BinarySession._unknown,
}


class FirstByte(ClientConnection):
    """A new client of a memcached pool until its first byte says which protocol it speaks.

    As in memcached, 0x80 (a binary request's magic) makes it a
    :class:`BinarySession`, anything else a text/meta
    :class:`~.session.ClientSession`; the session takes over the connection
    (its counters and its place among the pool's sessions) and is the
    transport's protocol from then on, so the test costs nothing per read.
    """

    def data_received(self, data: bytes) -> None:
        pool = self.pool
        session = BinarySession(pool) if data[0] == REQUEST_MAGIC else ClientSession(pool)
        transport = self.transport
        assert transport is not None
        session.transport = transport
        pool.sessions.discard(self)
        pool.sessions.add(session)
        self.closed = True  # nothing reaches this object any more
        transport.set_protocol(cast(asyncio.BaseProtocol, session))  # duck-typed protocols
        session.data_received(data)
