"""The client side of the proxy: parse, route, forward, and answer in request order.

Every read from a client is parsed whole by the core text-protocol parser
(:class:`~scatterhoard.protocol.text.TextRequestParser`), so a malformed
request gets memcached's own error reply from the proxy and is never
forwarded.  Each request that expects a reply takes a :class:`Slot` at the end
of the session's queue; backends fill slots in any order and the session
writes the completed head of its queue, once per event-loop iteration.

* single-key commands go to the key's server (hash_tag aware routing);
* ``get``/``gets``/``gat``/``gats`` with keys on several servers are split,
  one fragment per server, and merged back in the request's key order with one
  ``END``; if a fragment fails the client gets that error, as in nutcracker;
* ``noreply`` requests are forwarded with no slot: nothing comes back;
* meta commands are routed on their (decoded) key; ``mn`` is answered by the
  proxy at its place in the order, which is what a client pipelining quiet
  requests needs;
* ``version``, ``verbosity``, ``stats`` and ``quit`` are answered by the
  proxy, ``flush_all`` is sent to every live server of the pool (``OK`` when
  all say ``OK``).

A client whose first byte is 0x80 speaks binary: :mod:`.binary_session`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from typing import Any, Final, cast

from mypy_extensions import mypyc_attr

from ..fifo import Fifo
from ..protocol.text import (
    Arith,
    Delete,
    ErrorReply,
    FlushAll,
    Get,
    Meta,
    Quit,
    Stats,
    StoreCmd,
    TextRequestParser,
    TooLarge,
    Touch,
    Verbosity,
    Version,
    at,
    find_lf,
    plain_get_key,
)
from ..routing import NoLiveServersError
from ..wire import Wired
from . import flow
from .backend import LINE, META, QUIET, VALUES, VALUES_CAS, BackendServer, Waiter, error_line
from .pool import Pool
from .stats import VERSION, stats_text

log = logging.getLogger("scatterhoard.proxy")

#: Largest data block accepted from a client (nutcracker has no limit; the backend applies its own).
MAX_ITEM_SIZE: Final = 64 * 1024 * 1024
ERR_NO_LIVE: Final = error_line(errno.ECONNREFUSED)  # every server ejected: nutcracker answers ECONNREFUSED too
TOO_LARGE: Final = b"SERVER_ERROR object too large for cache\r\n"
NOREPLY: Final = b" noreply"


@mypyc_attr(allow_interpreted_subclasses=True)
class Slot(Waiter):
    """A request's place in its session's reply order; ``reply`` is set when it is answered."""

    __slots__ = ("session", "reply")

    def __init__(self, session: ClientConnection, kind: int) -> None:
        self.kind = kind
        self.session = session
        self.reply: bytes | None = None

    def complete(self, raw: bytes) -> None:
        self.reply = raw
        session = self.session
        queue = session.queue
        if queue and queue.first() is self:  # the oldest request: its reply can go out now
            queue.popleft()
            session.out.append(raw)
            if queue and queue.first().reply is not None:
                session.drain()
            elif not session.dirty:
                session.dirty = True
                ctx = session.ctx
                ctx.sessions.append(session)  # ctx.session_dirty(session), inlined
                if not ctx.scheduled:
                    ctx.scheduled = True
                    ctx.loop.call_soon(ctx.run)


def split_values(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The ``VALUE`` blocks of a complete retrieval reply, as (key, block bytes)."""
    blocks = []
    p = 0
    while raw.startswith(b"VALUE ", p):
        eol = raw.find(b"\r\n", p)
        parts = raw[p:eol].split(b" ")
        nxt = eol + int(parts[3]) + 4
        blocks.append((parts[1], raw[p:nxt]))
        p = nxt
    return blocks


class MultiGet(Slot):
    """A retrieval whose keys live on several servers: one fragment per server, merged in key order."""

    __slots__ = ("keys", "owners", "parts", "left")

    def __init__(self, session: ClientSession, keys: list[bytes], owners: list[int], nparts: int) -> None:
        super().__init__(session, VALUES)  # the kind of a MultiGet itself is never read
        self.keys = keys
        self.owners = owners
        self.parts: dict[int, bytes] = {}
        self.left = nparts

    def part(self, index: int, raw: bytes) -> None:
        self.parts[index] = raw
        self.left -= 1
        if self.left == 0:
            self.complete(self.merge())

    def merge(self) -> bytes:
        blocks: dict[int, list[tuple[bytes, bytes]]] = {}
        for index, raw in self.parts.items():
            if not (raw.startswith(b"VALUE ") or raw == b"END\r\n"):
                return raw  # a failed fragment fails the request
            blocks[index] = split_values(raw)
        taken = dict.fromkeys(blocks, 0)
        out = []
        for key, index in zip(self.keys, self.owners, strict=True):
            got = blocks[index]
            i = taken[index]
            if i < len(got) and got[i][0] == key:
                out.append(got[i][1])
                taken[index] = i + 1
        for index, got in blocks.items():  # a server that answered out of order: keep what it sent
            out.extend(block for _, block in got[taken[index]:])
        out.append(b"END\r\n")
        return b"".join(out)


class Fragment(Waiter):
    __slots__ = ("parent", "index")

    def __init__(self, parent: MultiGet, index: int, kind: int) -> None:
        self.kind = kind
        self.parent = parent
        self.index = index

    def complete(self, raw: bytes) -> None:
        self.parent.part(self.index, raw)


class Broadcast(Slot):
    """``flush_all`` sent to every live server: ``OK`` when every server said ``OK``."""

    __slots__ = ("left", "error")

    def __init__(self, session: ClientSession, nparts: int) -> None:
        super().__init__(session, LINE)
        self.left = nparts
        self.error: bytes | None = None

    def part(self, raw: bytes) -> None:
        if raw != b"OK\r\n" and self.error is None:
            self.error = raw
        self.left -= 1
        if self.left == 0:
            self.complete(self.error or b"OK\r\n")


class BroadcastPart(Waiter):
    __slots__ = ("parent",)

    def __init__(self, parent: Broadcast) -> None:
        self.kind = LINE
        self.parent = parent

    def complete(self, raw: bytes) -> None:
        self.parent.part(raw)


def _retrieval_prefix(cmd: Get) -> bytes:
    if cmd.exptime is None:
        return b"gets " if cmd.with_cas else b"get "
    return (b"gats %d " if cmd.with_cas else b"gat %d ") % cmd.exptime


@mypyc_attr(allow_interpreted_subclasses=True)
class ClientConnection(Wired):  # a duck-typed asyncio protocol (compiled classes cannot derive from asyncio's)
    """What every client connection of a pool shares, whatever its protocol.

    Requests that expect a reply take a :class:`Slot` at the end of
    ``queue``; the answered head of the queue goes to ``out``, written once
    per event-loop iteration (:meth:`flush`).  Subclasses parse and route.
    """

    #: What a request gets when every server of the pool is ejected.
    no_live_reply = ERR_NO_LIVE
    # Backpressure (:mod:`.flow`): why reading is paused (bits), requests accepted in flight
    # (0 while paused), requests parsed but held back, server connections it waits for.
    blocked = 0
    limit = flow.MAX_INFLIGHT
    held: list[Any] | None = None
    waits = 0

    def __init__(self, pool: Pool) -> None:
        super().__init__()
        self.pool = pool
        self.ctx = pool.ctx
        self.servers = self.servers_for(pool)
        self.index_for = pool.router.index_for
        self.queue: Fifo[Slot] = Fifo()  # compiled: its calls are native
        self.out: list[bytes] = []
        self.dirty = False
        self.closing = False  # no more requests; close once every reply is written
        self.closed = False

    # -- connection events -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.pool.sessions.add(self)
        st = self.pool.stats
        st.client_connections += 1
        ctx = self.ctx
        ctx.curr_connections += 1
        ctx.total_connections += 1
        limit = self.pool.config.client_connections
        if limit and st.client_connections > limit:
            log.warning("pool %s: client connection limit %d reached; closing a new connection",
                        self.pool.name, limit)
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.sessions.discard(self)
        st = self.pool.stats
        st.client_connections -= 1
        self.ctx.curr_connections -= 1
        if exc is None:
            st.client_eof += 1
        else:
            st.client_err += 1
        self.queue.clear()
        self.out = []

    def close(self) -> None:
        """Shutdown: write what is answered, then close."""
        if self.transport is not None and not self.closed:
            self.flush()
            self.transport.close()

    def rebind(self, pool: Pool) -> None:
        """Route the next requests with ``pool`` (a reload replaced this connection's pool)."""
        self.pool = pool
        self.ctx = pool.ctx
        self.servers = self.servers_for(pool)
        self.index_for = pool.router.index_for

    def servers_for(self, pool: Pool) -> list[BackendServer]:
        """The connections to ``pool``'s servers this session routes to (binary: their binary variants)."""
        return pool.servers

    def eof_received(self) -> bool:
        """The client will send no more: answer what it asked, then close."""
        self.closing = True
        self._mark()
        return True

    def pause_writing(self) -> None:
        flow.block(self, flow.WRITE)

    def resume_writing(self) -> None:
        flow.unblock(self, flow.WRITE)

    def _internal_error(self) -> None:
        """Never let one client take the proxy down: log, count, drop that connection."""
        log.exception("pool %s: internal error on a client connection; closing it", self.pool.name)
        self.pool.stats.client_err += 1
        if self.transport is not None:
            self.transport.abort()

    def _handle(self, items: list[Any]) -> None:
        """Route or answer parsed requests, in order (each protocol's session)."""
        raise NotImplementedError

    def _refuse(self) -> None:
        """A request the server closes the connection for: what came before is answered, then close."""
        self.pool.stats.client_err += 1
        self.closing = True
        self._mark()

    def _close_after(self, parsed: list[Any], reply: bytes | None) -> None:
        """Input the parser cannot go on from: the requests parsed before it run as usual (none held
        back: the error comes after them), then ``reply`` (when given and no QUIT among them
        already ended the session), then the connection closes."""
        self.limit = 1 << 30
        self._handle(parsed)
        if not self.closing:
            if reply is not None:
                self._answer(reply)
            self._refuse()

    # -- answers -------------------------------------------------------------------------
    def _answer(self, data: bytes) -> None:
        """A reply the proxy gives itself, at its place in the order."""
        if self.queue:
            slot = Slot(self, LINE)
            slot.reply = data
            self.queue.append(slot)
        else:
            self.out.append(data)
            self._mark()

    def _no_live(self, noreply: bool) -> None:
        self.pool.stats.forward_error += 1
        if not noreply:
            self._answer(self.no_live_reply)

    def drain(self) -> None:
        """Move the answered head of the queue to the output (written at the end of the iteration)."""
        queue = self.queue
        out = self.out
        while queue:
            reply = queue.first().reply
            if reply is None:
                break
            queue.popleft()
            out.append(reply)
        if not self.dirty:
            self.dirty = True
            self.ctx.session_dirty(self)

    def _mark(self) -> None:
        if not self.dirty:
            self.dirty = True
            self.ctx.session_dirty(self)

    def flush(self) -> None:
        self.dirty = False
        transport = self.transport
        if self.closed or transport is None:
            self.out = []
            return
        if self.blocked:
            flow.recheck(self)
        out = self.out
        if out:
            self.out = []
            self._write(b"".join(out) if len(out) > 1 else out[0])
        if self.closing and not self.queue:
            transport.close()


@mypyc_attr(allow_interpreted_subclasses=True)
class ClientSession(ClientConnection):
    """One memcached (text/meta) client connection to a pool's listener."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self.parser = TextRequestParser(MAX_ITEM_SIZE)
        self.idle = True  # the parser is between requests (the fast path may be taken)
        self._handlers: dict[type, Callable[[Any], None]] = {
            Delete: self._delete, Arith: self._arith, Touch: self._touch, Meta: self._meta,
            FlushAll: self._flush_all, Version: self._version, Verbosity: self._verbosity,
            Quit: self._quit, Stats: self._stats, ErrorReply: self._error, TooLarge: self._too_large,
        }

    # -- requests ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.ctx.current = self  # who feeds a server connection, should it be full (flow)
        try:
            if self.idle and at(data, 0, b"get "):
                # The commonest requests by far: "get <key>\r\n" lines at the start of a read are
                # forwarded as they are, without the parser, when they are exactly what it would
                # accept (one key of 1..250 bytes, no space).  The first line that is anything
                # else, and everything after it, goes to the parser.
                key = self.parser.single_get(data)
                if key is not None:  # the whole read is one such line
                    self._keyed(key, data, False, VALUES)
                    return
                data = self._leading_gets(data)
                if not data:
                    return
            elif self.idle and at(data, 0, b"set "):
                key = self.parser.single_set(data)
                if key is not None:  # the whole read is one plain set: forwarded as it came
                    self._keyed(key, data, False)
                    return
            parser = self.parser
            self._handle(parser.feed(data))
            self.idle = parser.idle()
        except Exception:  # never let one client take the proxy down
            self._internal_error()

    def _leading_gets(self, data: bytes) -> bytes:
        """Forward the single-key ``get`` lines at the start of a pipelined read; return the rest."""
        queue = self.queue
        servers = self.servers
        index_for = self.index_for
        pos = 0
        end = len(data)
        while len(queue) < self.limit:
            eol = find_lf(data, pos, end)
            if eol < 0 or data[eol - 1] != 13:
                break
            key = plain_get_key(data, pos, eol - 1)
            if key is None:
                break
            nxt = eol + 1
            try:
                server = servers[index_for(key)]
            except NoLiveServersError:
                self._no_live(False)
            else:
                slot = Slot(self, VALUES)
                self.queue.append(slot)
                (server.active or server.pick()).send(data[pos:nxt], slot)
            pos = nxt
            if pos == end:
                break
        return data[pos:] if pos else data

    def _handle(self, cmds: list[Any]) -> None:
        queue = self.queue
        for cmd in cmds:
            if len(queue) >= self.limit:
                flow.hold(self, cmds, cmd)
                return
            kind = type(cmd)
            if kind is Get:
                keys = cmd.keys
                if len(keys) != 1:
                    self._multi_get(cmd)
                    continue
                key = keys[0]
                if cmd.with_cas:
                    self._keyed(key, _retrieval_prefix(cmd) + key + b"\r\n", False, VALUES_CAS)
                else:
                    self._keyed(key, (b"get " if cmd.exptime is None else _retrieval_prefix(cmd)) + key + b"\r\n",
                                False, VALUES)
            elif kind is StoreCmd:
                value = cmd.value
                if cmd.command == b"cas":
                    data = b"cas %s %d %d %d %d%s\r\n%s\r\n" % (
                        cmd.key, cmd.flags, cmd.exptime, len(value), cmd.cas, NOREPLY if cmd.noreply else b"",
                        value)
                else:
                    data = b"%s %s %d %d %d%s\r\n%s\r\n" % (
                        cmd.command, cmd.key, cmd.flags, cmd.exptime, len(value),
                        NOREPLY if cmd.noreply else b"", value)
                self._keyed(cmd.key, data, cmd.noreply)
            else:
                self._handlers[kind](cmd)
                if self.closing:
                    break

    def _keyed(self, key: bytes, data: bytes, noreply: bool, kind: int = LINE) -> None:
        """Forward a single-key request."""
        try:
            server = self.servers[self.index_for(key)]
        except NoLiveServersError:
            self._no_live(noreply)
            return
        conn = server.active or server.pick()
        if noreply:
            conn.send(data, None)
        else:
            slot = Slot(self, kind)
            self.queue.append(slot)
            conn.send(data, slot)

    def _multi_get(self, cmd: Get) -> None:
        keys = cmd.keys
        index_for = self.index_for
        try:
            owners = [index_for(k) for k in keys]
        except NoLiveServersError:
            self._no_live(False)
            return
        prefix = _retrieval_prefix(cmd)
        kind = VALUES_CAS if cmd.with_cas else VALUES
        first = owners[0]
        if all(o == first for o in owners):
            server = self.servers[first]
            slot = Slot(self, kind)
            self.queue.append(slot)
            (server.active or server.pick()).send(prefix + b" ".join(keys) + b"\r\n", slot)
            return
        groups: dict[int, list[bytes]] = {}
        for key, owner in zip(keys, owners, strict=True):
            group = groups.get(owner)
            if group is None:
                groups[owner] = [key]
            else:
                group.append(key)
        parent = MultiGet(self, keys, owners, len(groups))
        self.queue.append(parent)
        self.pool.stats.fragments += len(groups)
        servers = self.servers
        for owner, group_keys in groups.items():
            server = servers[owner]
            (server.active or server.pick()).send(prefix + b" ".join(group_keys) + b"\r\n",
                                                  Fragment(parent, owner, kind))

    def _delete(self, cmd: Delete) -> None:
        self._keyed(cmd.key, b"delete %s%s\r\n" % (cmd.key, NOREPLY if cmd.noreply else b""), cmd.noreply)

    def _arith(self, cmd: Arith) -> None:
        self._keyed(cmd.key, b"%s %s %d%s\r\n" % (b"incr" if cmd.incr else b"decr", cmd.key, cmd.delta,
                                                  NOREPLY if cmd.noreply else b""), cmd.noreply)

    def _touch(self, cmd: Touch) -> None:
        self._keyed(cmd.key, b"touch %s %d%s\r\n" % (cmd.key, cmd.exptime, NOREPLY if cmd.noreply else b""),
                    cmd.noreply)

    def _meta(self, cmd: Meta) -> None:
        name = cmd.command
        if name == b"mn":
            self._answer(b"MN\r\n")
            return
        try:
            server = self.servers[self.index_for(cmd.key)]
        except NoLiveServersError:
            self._no_live(False)
            return
        parts = [name, b" ", cmd.raw_key]
        value = cmd.value
        if value is not None:
            parts.append(b" %d" % len(value))
        quiet = False
        for flag, token in cmd.flags:
            parts += (b" ", flag.encode(), token)
            if flag == "q":
                quiet = True
        parts.append(b"\r\n")
        if value is not None:
            parts += (value, b"\r\n")
        data = b"".join(parts)
        conn = server.active or server.pick()
        slot = Slot(self, QUIET if quiet else META)
        self.queue.append(slot)
        (conn.send_quiet if quiet else conn.send)(data, slot)

    def _flush_all(self, cmd: FlushAll) -> None:
        live = sorted(self.pool.router.live)
        if not live:
            self._no_live(cmd.noreply)
            return
        noreply = NOREPLY if cmd.noreply else b""
        data = b"flush_all %d%s\r\n" % (cmd.delay, noreply) if cmd.delay else b"flush_all%s\r\n" % noreply
        parent = None
        if not cmd.noreply:
            parent = Broadcast(self, len(live))
            self.queue.append(parent)
        for index in live:
            server = self.servers[index]
            (server.active or server.pick()).send(data, None if parent is None else BroadcastPart(parent))

    def _version(self, cmd: Version) -> None:
        self._answer(b"VERSION %s\r\n" % VERSION.encode())

    def _verbosity(self, cmd: Verbosity) -> None:
        if not cmd.noreply:
            self._answer(b"OK\r\n")

    def _stats(self, cmd: Stats) -> None:
        self._answer(stats_text(self.pool) if not cmd.args else b"ERROR\r\n")

    def _quit(self, cmd: Quit) -> None:
        self.closing = True
        self._mark()

    def _error(self, cmd: ErrorReply) -> None:
        self._answer(cmd.message + b"\r\n")
        if cmd.close:
            self._refuse()

    def _too_large(self, cmd: TooLarge) -> None:
        if not cmd.noreply:
            self._answer(TOO_LARGE)

