"""The server side of the proxy: connections to one backend, reply splitting, timeouts.

Requests for a backend are appended to one of its connections (at most
``server_connections`` per server, shared by every client) together with a
*waiter* that expects the reply: a client's slot, a fragment of a split
multi-key get, a health probe.  Writes are coalesced: a connection is written
once per event-loop iteration, whatever number of clients added requests to it
(:class:`Context` runs the flush after the I/O callbacks of the iteration).

What is protocol specific is a :class:`Dialect` per pool: the
:class:`ReplyFramer` that cuts a connection's byte stream into one reply per
waiter, the requests sent first on every new connection (redis AUTH/SELECT)
and the health probe.  Memcached text/meta is
:class:`~scatterhoard.proxy.memcached_backend.MemcachedDialect`, RESP
:class:`~scatterhoard.proxy.redis_backend.RedisDialect`; another one (binary
memcached) is one more module with a subclass and a line in :func:`dialect_for`.

A memcached meta request with the ``q`` flag is sent followed by ``mn``
(:meth:`BackendConnection.send_quiet`), so the backend's own quiet-mode rules
decide whether it answers, and the ``MN`` tells the proxy which way it went.

Timeouts cost nothing per request: every write records (number of replies it
completes, time), and one timer per connection checks the oldest unanswered
write.  A connection that times out is reset and every request on it fails
with ETIMEDOUT (``SERVER_ERROR Connection timed out`` / ``-ERR Connection
timed out``: the waiter words the error for its client), as in nutcracker.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from mypy_extensions import mypyc_attr

from ..errors import ProtocolError
from ..fifo import Fifo
from ..routing import ServerSpec
from ..wire import Wired
from . import flow
from .stats import ServerCounters

if TYPE_CHECKING:
    from .config import PoolConfig
    from .pool import Pool
    from .session import ClientConnection

log = logging.getLogger("scatterhoard.proxy")

# What a waiter expects (Waiter.kind).
LINE: Final = 0  # one line: storage, delete, incr/decr, touch, flush_all, version
META: Final = 1  # one meta line; VA carries a data block
QUIET: Final = 2  # a meta request with q, sent followed by "mn": "MN" alone means no reply
MN_TAIL: Final = 3  # the "MN" after a quiet meta request that did answer
VALUES: Final = 4  # get/gat: "VALUE key flags bytes" blocks, then END (or one error line)
VALUES_CAS: Final = 5  # gets/gats: "VALUE key flags bytes cas" blocks, then END

CONNECTING: Final = 0
CONNECTED: Final = 1
CLOSED: Final = 2


def error_line(err: int | None) -> bytes:
    """nutcracker's error reply: ``SERVER_ERROR <strerror>``."""
    return b"SERVER_ERROR %s\r\n" % os.strerror(err or errno.ECONNRESET).encode()



@mypyc_attr(allow_interpreted_subclasses=True)
class Waiter:
    """Something waiting for one reply from a backend."""

    __slots__ = ("kind",)

    def __init__(self, kind: int) -> None:
        self.kind = kind

    def complete(self, raw: bytes) -> None:
        """The reply's bytes."""

    def fail(self, err: int) -> None:
        """The request failed (``err``: an errno); memcached wording by default."""
        self.complete(error_line(err))


class _Discard(Waiter):
    __slots__ = ()


DISCARD_MN: Final = _Discard(MN_TAIL)


@mypyc_attr(allow_interpreted_subclasses=True)
class ReplyFramer:
    """Cuts one backend connection's byte stream into replies, one per waiter, in order.

    One framer per connection; it may keep state between calls (how far an
    incomplete reply was already walked).  The connection buffers the bytes
    of an incomplete reply and calls again once at least ``need`` of them are
    there.
    """

    __slots__ = ()

    def split(self, data: bytes, expect: Fifo[Waiter]) -> tuple[int, int, int]:
        """Complete (and pop) the waiters at the head of ``expect`` whose replies are whole in ``data``.

        Returns (waiters popped, bytes used, ``need``: how many bytes the
        incomplete reply at the used mark needs at least, counted from there).
        Raises :class:`ProtocolError` on bytes that are no reply.
        """
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)
class Dialect:
    """A backend protocol, as the engine sees it (one instance per pool)."""

    __slots__ = ()

    # Subclasses override methods, never attributes: this class is compiled (mypyc), and its
    # compiled callers read attributes natively, past a subclass's class attribute or property.

    def probe_request(self) -> bytes:
        """The health probe sent to an ejected server on a fresh connection."""
        raise NotImplementedError

    def framer(self) -> ReplyFramer:
        raise NotImplementedError

    def handshake(self, conn: BackendConnection) -> list[tuple[bytes, Waiter]]:
        """Requests every new connection sends before any other (with their waiters)."""
        return []

    def variant(self, name: str) -> Dialect:
        """Another flavour of this protocol, for :meth:`BackendServer.variant`."""
        raise ValueError(f"{type(self).__name__} has no variant {name!r}")

    def probe_ok(self, raw: bytes) -> bool:
        raise NotImplementedError


def dialect_for(config: PoolConfig) -> Dialect:
    """The backend protocol of a pool."""
    # (imported here: both modules build on this one)
    if config.redis:
        from .redis_backend import RedisDialect

        return RedisDialect(config)
    from .memcached_backend import MemcachedDialect

    return MemcachedDialect()


class Flushable(Protocol):
    """A client session, as the backend side sees it."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Context:
    """Process-wide state: the loop, write coalescing, connection counts."""

    __slots__ = ("loop", "clock", "conns", "sessions", "scheduled", "total_connections", "curr_connections",
                 "start_time", "probe_timeout", "current")

    def __init__(self, loop: asyncio.AbstractEventLoop, start_time: float) -> None:
        self.loop = loop
        self.clock: Callable[[], float] = loop.time  # bound once: a flush reads it per batch
        self.conns: list[BackendConnection] = []
        self.sessions: list[ClientConnection] = []  # native: flush() is a vtable call, not a lookup
        self.scheduled = False
        self.total_connections = 0
        self.curr_connections = 0
        self.start_time = start_time
        self.probe_timeout = 1.0  # seconds, for pools without a timeout
        self.current: Any = None  # the client session being read (flow: who feeds a full connection)

    def conn_dirty(self, conn: BackendConnection) -> None:
        self.conns.append(conn)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def session_dirty(self, session: ClientConnection) -> None:
        self.sessions.append(session)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        """Once per loop iteration: one write per dirty backend connection, then per dirty client."""
        self.scheduled = False
        conns = self.conns
        if conns:
            self.conns = []
            for conn in conns:
                conn.flush()
        sessions = self.sessions
        if sessions:
            self.sessions = []
            for session in sessions:
                session.flush()


class BackendServer:
    """One server of a pool: its connections, failure count and ejection state."""

    def __init__(self, pool: Pool, index: int, spec: ServerSpec, dialect: Dialect,
                 primary: BackendServer | None = None) -> None:
        self.pool = pool
        self.index = index
        self.spec = spec
        self.name = spec.ident
        self.dialect = dialect
        # A variant (see :meth:`variant`) shares its primary's counters, failures and ejection.
        self.primary: BackendServer = primary or self
        self.variants: dict[str, BackendServer] = {}
        self.stats: ServerCounters = primary.stats if primary is not None else ServerCounters()
        self.conns: list[BackendConnection] = []
        self.active: BackendConnection | None = None  # the connection this iteration's requests go to
        self.max_conns = pool.config.server_connections
        self._rr = 0
        self.failures = 0  # consecutive
        self.ejected = False
        self.probe_handle: asyncio.TimerHandle | None = None
        self.probe_conn: BackendConnection | None = None

    def pick(self) -> BackendConnection:
        """The connection for the next requests: a new one while below the limit, else round robin."""
        conns = self.conns
        if len(conns) < self.max_conns:
            conn = BackendConnection(self, self.pool.timeout)
            conns.append(conn)
            conn.connect()
        else:
            self._rr = rr = (self._rr + 1) % len(conns)
            conn = conns[rr]
        self.active = conn
        return conn

    def variant(self, name: str) -> BackendServer:
        """This server through connections of another flavour of its dialect (``"resp3"``).

        Its own connections (at most ``server_connections`` more), the same
        counters, failure count, ejection and probe as the primary.
        """
        server = self.variants.get(name)
        if server is None:
            server = self.variants[name] = BackendServer(self.pool, self.index, self.spec,
                                                         self.dialect.variant(name), self)
        return server

    def failed(self) -> None:
        """A connection failed (refused, reset, timed out); maybe eject the server."""
        if self.primary is not self:
            self.primary.failed()
            return
        pool = self.pool
        if not pool.config.auto_eject_hosts or self.ejected:
            return
        self.failures += 1
        if self.failures >= pool.config.server_failure_limit:
            pool.eject(self)

    def all_conns(self) -> list[BackendConnection]:
        """The server's connections, its protocol variants' (binary, RESP3) included."""
        return [*self.conns, *(c for v in self.variants.values() for c in v.conns)]

    def queues(self) -> tuple[int, int, int, int]:
        """in_queue, in_queue_bytes, out_queue, out_queue_bytes over the server's connections.

        The in-queue holds requests not written yet, the out-queue requests
        written and not answered (counted by write, so the bytes are those of
        the writes that are not fully answered).
        """
        iq = iqb = oq = oqb = 0
        for conn in self.all_conns():
            pending = conn.pending
            iq += len(pending) + conn.grouped
            iqb += sum(map(len, pending))
            done = conn.done
            unanswered = [b for b in conn.batches if b[0] > done]
            if unanswered:
                oq += unanswered[-1][0] - done
                oqb += sum(b[2] for b in unanswered)
        return iq, iqb, oq, oqb

    def close(self) -> None:
        for variant in self.variants.values():
            variant.close()
        if self.probe_handle is not None:
            self.probe_handle.cancel()
            self.probe_handle = None
        for conn in list(self.conns):
            conn.shutdown(errno.ECONNRESET, None)
        if self.probe_conn is not None:
            self.probe_conn.shutdown(errno.ECONNRESET, None)

    def __repr__(self) -> str:
        return f"<BackendServer {self.name} of pool {self.pool.name}>"


@mypyc_attr(allow_interpreted_subclasses=True)
class BackendConnection(Wired):  # a duck-typed asyncio protocol (compiled classes cannot derive from asyncio's)
    """One connection to a backend: a pipeline of requests and the waiters for their replies."""

    def __init__(self, server: BackendServer, timeout: float | None, probe: bool = False) -> None:
        super().__init__()
        self.server = server
        self.ctx = server.pool.ctx
        self.timeout = timeout  # seconds, None: wait forever
        self.probe = probe
        self.state = CONNECTING
        self.pending: list[bytes] = []  # requests not written yet
        self.grouped = 0  # requests in pending beyond one per entry (send_many)
        self.expect: Fifo[Waiter] = Fifo()  # waiters, in request order (written or not); never replaced
        self.dirty = False
        self.buf = bytearray()  # the start of a reply not complete yet
        self.need = 0  # how long buf must be before the reply can be complete
        self.framer = server.dialect.framer()
        self.done = 0  # replies completed so far (sequence number)
        self.batches: deque[tuple[int, float, int]] = deque()  # (done after it, written at, bytes)
        self.timer: asyncio.TimerHandle | None = None
        self._connector: asyncio.Task[None] | None = None
        self.paused = False  # write buffer over the high-water mark (flow)
        self.feeders: set[Any] = set()  # client sessions blocked until it drains (flow)
        for data, waiter in server.dialect.handshake(self):
            self.pending.append(data)
            self.expect.append(waiter)

    # -- requests -------------------------------------------------------------------------
    def send(self, data: bytes, waiter: Waiter | None) -> None:
        """Queue one request (``waiter`` None: noreply, nothing comes back)."""
        self.pending.append(data)
        if waiter is not None:
            self.expect.append(waiter)
        self._queued()

    def send_many(self, data: bytes, waiters: list[Waiter]) -> None:
        """Queue consecutive requests given as one run of bytes, one waiter (one reply) each."""
        self.pending.append(data)
        self.expect.extend(waiters)
        self.grouped += len(waiters) - 1
        self._queued()

    def send_quiet(self, data: bytes, waiter: Waiter) -> None:
        """A meta request with ``q``: followed by ``mn`` so its (possibly absent) reply is delimited."""
        self.pending.append(data + b"mn\r\n")
        self.expect.append(waiter)
        self.expect.append(DISCARD_MN)
        self._queued()

    def _queued(self) -> None:
        """After a request joined ``pending``: block the client being read while this connection's
        writes are paused (see :mod:`.flow`), and have the loop flush it this iteration."""
        if self.paused:
            flow.feeding_paused(self)
        if not self.dirty and self.state == CONNECTED:
            self.dirty = True
            self.ctx.conn_dirty(self)

    def flush(self) -> None:
        self.dirty = False
        server = self.server
        if server.active is self:
            server.active = None
        pending = self.pending
        if not pending or self.state != CONNECTED:
            return
        data = b"".join(pending) if len(pending) > 1 else pending[0]
        self.pending = []
        self._write(data)
        st = server.stats
        st.requests += len(pending) + self.grouped
        self.grouped = 0
        st.request_bytes += len(data)
        end = self.done + len(self.expect)
        if end > self.done:
            batches = self.batches
            done = self.done
            while batches and batches[0][0] <= done:
                batches.popleft()
            now = self.ctx.clock()
            batches.append((end, now, len(data)))
            if self.timeout is not None and self.timer is None:
                self.timer = self.ctx.loop.call_at(now + self.timeout, self._check_timeout)

    # -- connecting -------------------------------------------------------------------------
    def connect(self) -> None:
        self._connector = self.ctx.loop.create_task(self._connect())

    async def _connect(self) -> None:
        loop = self.ctx.loop
        spec = self.server.spec
        try:
            me = cast(asyncio.BaseProtocol, self)  # a duck-typed protocol
            if spec.is_unix:
                coro = loop.create_unix_connection(lambda: me, spec.host)
            else:
                coro = loop.create_connection(lambda: me, spec.host, spec.port)
            if self.timeout is not None:
                await asyncio.wait_for(coro, self.timeout)
            else:
                await coro
        except TimeoutError:
            self.shutdown(errno.ETIMEDOUT, "server_timedout")
        except OSError as exc:
            self.shutdown(exc.errno or errno.ECONNREFUSED, "server_err")
        except asyncio.CancelledError:
            pass
        finally:
            self._connector = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = tr = cast(asyncio.Transport, transport)
        if self.state == CLOSED:  # shut down while connecting
            tr.abort()
            return
        self.state = CONNECTED
        server = self.server
        if not self.probe:
            server.stats.server_connections += 1
            ctx = self.ctx
            ctx.total_connections += 1
            ctx.curr_connections += 1
        if server.pool.config.tcpkeepalive:
            sock = tr.get_extra_info("socket")
            if sock is not None and sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if self.pending:
            self.flush()

    # -- replies ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.state != CONNECTED:
            return
        buf = self.buf
        if buf:  # the rest of a reply: wait (without copying) until it can be complete
            buf += data
            if len(buf) < self.need:
                return
            data = bytes(buf)
            buf.clear()
        expect = self.expect
        try:
            count, pos, need = self.framer.split(data, expect)
        except ProtocolError as exc:
            log.warning("server %s of pool %s: %s; closing the connection", self.server.name,
                        self.server.pool.name, exc)
            self.shutdown(errno.ECONNRESET, "server_err")
            return
        if count:
            self.done += count
            server = self.server
            server.primary.failures = 0
            st = server.stats
            st.responses += count
            st.response_bytes += pos
        if pos < len(data):
            if not expect and self.state == CONNECTED:
                log.warning("server %s of pool %s sent unsolicited data %r; closing the connection",
                            self.server.name, self.server.pool.name, data[pos:pos + 80])
                self.shutdown(errno.ECONNRESET, "server_err")
                return
            self.buf += data[pos:] if pos else data
            self.need = need

    # -- timeouts and failures -------------------------------------------------------------------
    def _check_timeout(self) -> None:
        self.timer = None
        if self.state != CONNECTED or self.timeout is None:
            return
        batches = self.batches
        done = self.done
        while batches and batches[0][0] <= done:
            batches.popleft()
        if not batches:
            return
        deadline = batches[0][1] + self.timeout
        loop = self.ctx.loop
        if loop.time() >= deadline:
            log.info("server %s of pool %s timed out; resetting the connection", self.server.name,
                     self.server.pool.name)
            self.shutdown(errno.ETIMEDOUT, "server_timedout")
        else:
            self.timer = loop.call_at(deadline, self._check_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == CLOSED:
            return
        if exc is None:
            self.shutdown(errno.ECONNRESET, "server_eof")
        else:
            self.shutdown(getattr(exc, "errno", None) or errno.ECONNRESET, "server_err")

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost reports it

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        flow.release_feeders(self)

    def shutdown(self, err: int, counter: str | None) -> None:
        """Close the connection; every request still on it fails with errno ``err``; count a failure."""
        if self.state == CLOSED:
            return
        was_connected = self.state == CONNECTED
        self.state = CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self._connector is not None and not was_connected:
            connector, self._connector = self._connector, None
            if connector is not asyncio.current_task():
                connector.cancel()
        if self.transport is not None:
            self.transport.abort()
        server = self.server
        if self in server.conns:
            server.conns.remove(self)
        if server.active is self:
            server.active = None
        st = server.stats
        if was_connected and not self.probe:
            st.server_connections -= 1
            self.ctx.curr_connections -= 1
        if counter is not None:
            setattr(st, counter, getattr(st, counter) + 1)
        self.paused = False
        flow.release_feeders(self)
        waiters = list(self.expect)
        self.expect.clear()
        self.pending = []
        self.grouped = 0
        self.batches.clear()
        self.buf = bytearray()
        if not was_connected and counter is not None and not self.probe:
            server.pool.stats.forward_error += sum(1 for w in waiters if w is not DISCARD_MN)
        for waiter in waiters:
            if waiter is not DISCARD_MN:
                waiter.fail(err)
        if counter is not None and not self.probe:
            server.failed()

    def __repr__(self) -> str:
        return f"<BackendConnection to {self.server.name} state={self.state} waiting={len(self.expect)}>"


class Probe(Waiter):
    """The health check (memcached ``version``, redis ``PING``) that brings an ejected server back."""

    __slots__ = ("server",)

    def __init__(self, server: BackendServer) -> None:
        super().__init__(LINE)
        self.server = server

    def complete(self, raw: bytes) -> None:
        server = self.server
        conn = server.probe_conn
        server.probe_conn = None
        if conn is not None:
            server.pool.ctx.loop.call_soon(conn.shutdown, errno.ECONNRESET, None)
        server.pool.probe_done(server, server.dialect.probe_ok(raw))


def start_probe(server: BackendServer) -> None:
    """Open a fresh connection to an ejected server and send it the dialect's probe."""
    server.probe_handle = None
    pool = server.pool
    timeout = pool.timeout if pool.timeout is not None else pool.ctx.probe_timeout
    conn = BackendConnection(server, timeout, probe=True)
    server.probe_conn = conn
    conn.send(server.dialect.probe_request(), Probe(server))
    conn.connect()
