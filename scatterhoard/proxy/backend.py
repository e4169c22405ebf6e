"""The server side of the proxy: connections to one backend, reply splitting, timeouts.

Requests for a backend are appended to one of its connections (at most
``server_connections`` per server, shared by every client) together with a
*waiter* that expects the reply: a client's slot, a fragment of a split
multi-key get, a health probe.  Writes are coalesced: a connection is written
once per event-loop iteration, whatever number of clients added requests to it
(:class:`Context` runs the flush after the I/O callbacks of the iteration).

Replies are split without parsing more than needed: a line, or ``VALUE``
blocks up to ``END`` (sizes from the ``VALUE`` lines), or a meta reply (a
``VA`` carries a data block).  A meta request with the ``q`` flag is sent
followed by ``mn``, so the backend's own quiet-mode rules decide whether it
answers, and the ``MN`` tells the proxy which way it went.

Timeouts cost nothing per request: every write records (number of replies it
completes, time), and one timer per connection checks the oldest unanswered
write.  A connection that times out is reset and every request on it gets
``SERVER_ERROR Connection timed out``, as in nutcracker.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast

from ..errors import ProtocolError
from ..routing import ServerSpec
from .stats import ServerCounters

if TYPE_CHECKING:
    from .pool import Pool

log = logging.getLogger("scatterhoard.proxy")

# What a waiter expects (Waiter.kind).
LINE = 0  # one line: storage, delete, incr/decr, touch, flush_all, version
META = 1  # one meta line; VA carries a data block
QUIET = 2  # a meta request with q, sent followed by "mn": "MN" alone means no reply
MN_TAIL = 3  # the "MN" after a quiet meta request that did answer
VALUES = 4  # get/gat: "VALUE key flags bytes" blocks, then END (or one error line)
VALUES_CAS = 5  # gets/gats: "VALUE key flags bytes cas" blocks, then END

CONNECTING = 0
CONNECTED = 1
CLOSED = 2


def error_line(err: int | None) -> bytes:
    """nutcracker's error reply: ``SERVER_ERROR <strerror>``."""
    return b"SERVER_ERROR %s\r\n" % os.strerror(err or errno.ECONNRESET).encode()


ERR_TIMEDOUT = error_line(errno.ETIMEDOUT)
ERR_REFUSED = error_line(errno.ECONNREFUSED)
ERR_RESET = error_line(errno.ECONNRESET)


class Waiter:
    """Something waiting for one reply from a backend."""

    __slots__ = ("kind",)

    def __init__(self, kind: int) -> None:
        self.kind = kind

    def complete(self, raw: bytes) -> None:
        """The reply's bytes (an error line ``SERVER_ERROR ...`` when the request failed)."""

    def fail(self, msg: bytes) -> None:
        self.complete(msg)


class _Discard(Waiter):
    __slots__ = ()


DISCARD_MN = _Discard(MN_TAIL)


class Flushable(Protocol):
    """A client session, as the backend side sees it."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Context:
    """Process-wide state: the loop, write coalescing, connection counts."""

    __slots__ = ("loop", "conns", "sessions", "scheduled", "total_connections", "curr_connections",
                 "start_time", "probe_timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, start_time: float) -> None:
        self.loop = loop
        self.conns: list[BackendConnection] = []
        self.sessions: list[Flushable] = []
        self.scheduled = False
        self.total_connections = 0
        self.curr_connections = 0
        self.start_time = start_time
        self.probe_timeout = 1.0  # seconds, for pools without a timeout

    def conn_dirty(self, conn: BackendConnection) -> None:
        self.conns.append(conn)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.run)

    def session_dirty(self, session: Flushable) -> None:
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

    def __init__(self, pool: Pool, index: int, spec: ServerSpec) -> None:
        self.pool = pool
        self.index = index
        self.spec = spec
        self.name = spec.ident
        self.stats = ServerCounters()
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

    def failed(self) -> None:
        """A connection failed (refused, reset, timed out); maybe eject the server."""
        pool = self.pool
        if not pool.config.auto_eject_hosts or self.ejected:
            return
        self.failures += 1
        if self.failures >= pool.config.server_failure_limit:
            pool.eject(self)

    def queues(self) -> tuple[int, int, int, int]:
        """in_queue, in_queue_bytes, out_queue, out_queue_bytes over the server's connections.

        The in-queue holds requests not written yet, the out-queue requests
        written and not answered (counted by write, so the bytes are those of
        the writes that are not fully answered).
        """
        iq = iqb = oq = oqb = 0
        for conn in self.conns:
            pending = conn.pending
            iq += len(pending)
            iqb += sum(map(len, pending))
            done = conn.done
            unanswered = [b for b in conn.batches if b[0] > done]
            if unanswered:
                oq += unanswered[-1][0] - done
                oqb += sum(b[2] for b in unanswered)
        return iq, iqb, oq, oqb

    def close(self) -> None:
        if self.probe_handle is not None:
            self.probe_handle.cancel()
            self.probe_handle = None
        for conn in list(self.conns):
            conn.shutdown(ERR_RESET, None)
        if self.probe_conn is not None:
            self.probe_conn.shutdown(ERR_RESET, None)

    def __repr__(self) -> str:
        return f"<BackendServer {self.name} of pool {self.pool.name}>"


class BackendConnection(asyncio.Protocol):
    """One connection to a backend: a pipeline of requests and the waiters for their replies."""

    def __init__(self, server: BackendServer, timeout: float | None, probe: bool = False) -> None:
        self.server = server
        self.ctx = server.pool.ctx
        self.timeout = timeout  # seconds, None: wait forever
        self.probe = probe
        self.state = CONNECTING
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # requests not written yet
        self.expect: deque[Waiter] = deque()  # waiters, in request order (written or not)
        self.dirty = False
        self.buf = bytearray()  # the start of a reply not complete yet
        self.need = 0  # how long buf must be before the reply can be complete
        self.scan = 0  # how far into buf the VALUE blocks were already walked
        self.done = 0  # replies completed so far (sequence number)
        self.batches: deque[tuple[int, float, int]] = deque()  # (done after it, written at, bytes)
        self.timer: asyncio.TimerHandle | None = None
        self._connector: asyncio.Task[None] | None = None

    # -- requests -------------------------------------------------------------------------
    def send(self, data: bytes, waiter: Waiter | None) -> None:
        """Queue one request (``waiter`` None: noreply, nothing comes back)."""
        self.pending.append(data)
        if waiter is not None:
            self.expect.append(waiter)
        if not self.dirty and self.state == CONNECTED:
            self.dirty = True
            self.ctx.conn_dirty(self)

    def send_quiet(self, data: bytes, waiter: Waiter) -> None:
        """A meta request with ``q``: followed by ``mn`` so its (possibly absent) reply is delimited."""
        self.pending.append(data + b"mn\r\n")
        self.expect.append(waiter)
        self.expect.append(DISCARD_MN)
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
        transport = self.transport
        assert transport is not None
        transport.write(data)
        st = server.stats
        st.requests += len(pending)
        st.request_bytes += len(data)
        end = self.done + len(self.expect)
        if end > self.done:
            batches = self.batches
            done = self.done
            while batches and batches[0][0] <= done:
                batches.popleft()
            now = self.ctx.loop.time()
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
            if spec.is_unix:
                coro = loop.create_unix_connection(lambda: self, spec.host)
            else:
                coro = loop.create_connection(lambda: self, spec.host, spec.port)
            if self.timeout is not None:
                await asyncio.wait_for(coro, self.timeout)
            else:
                await coro
        except TimeoutError:
            self.shutdown(ERR_TIMEDOUT, "server_timedout")
        except OSError as exc:
            self.shutdown(error_line(exc.errno or errno.ECONNREFUSED), "server_err")
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
        n = len(data)
        expect = self.expect
        pos = 0
        count = 0
        need = 0  # bytes the incomplete reply at pos needs at least, counted from pos
        scan = self.scan  # how far the first reply's VALUE blocks were already walked
        try:
            while expect:
                waiter = expect[0]
                kind = waiter.kind
                if kind >= VALUES:
                    p = pos + scan
                    while True:
                        if data.startswith(b"VALUE ", p):
                            eol = data.find(b"\r\n", p)
                            if eol < 0:
                                need = n - pos + 1
                                break
                            sp = data.rfind(b" ", p, eol)
                            try:
                                if kind == VALUES:
                                    size = int(data[sp + 1:eol])
                                else:
                                    size = int(data[data.rfind(b" ", p, sp) + 1:sp])
                            except ValueError:
                                raise ProtocolError(f"bad VALUE line {data[p:eol][:80]!r}") from None
                            p = eol + size + 4
                            if p > n:
                                need = p - pos
                                break
                            if data.startswith(b"END\r\n", p):  # the usual last (or only) value
                                end = p + 5
                                break
                            continue
                        if data.startswith(b"END\r\n", p):
                            end = p + 5
                            break
                        eol = data.find(b"\r\n", p)
                        if eol < 0:
                            need = n - pos + 1
                        elif p != pos:
                            raise ProtocolError(f"unexpected line after VALUE blocks: {data[p:eol][:80]!r}")
                        else:
                            end = eol + 2
                        break
                    if need:
                        scan = p - pos
                        break
                    scan = 0
                else:
                    eol = data.find(b"\r\n", pos)
                    if eol < 0:
                        need = n - pos + 1
                        break
                    end = eol + 2
                    if kind != LINE:
                        if data.startswith(b"VA ", pos):
                            try:
                                size = int(data[pos + 3:eol].split(b" ", 1)[0])
                            except ValueError:
                                raise ProtocolError(f"bad meta VA line {data[pos:eol][:80]!r}") from None
                            end = eol + size + 4
                            if end > n:
                                need = end - pos
                                break
                        elif kind == QUIET and eol == pos + 2 and data.startswith(b"MN", pos):
                            expect.popleft()  # no reply: the MN answers the mn after it
                            expect.popleft()
                            count += 2
                            pos = end
                            waiter.complete(b"")
                            continue
                expect.popleft()
                count += 1
                waiter.complete(data[pos:end])
                pos = end
        except ProtocolError as exc:
            log.warning("server %s of pool %s: %s; closing the connection", self.server.name,
                        self.server.pool.name, exc)
            self.shutdown(ERR_RESET, "server_err")
            return
        self.scan = scan
        if count:
            self.done += count
            server = self.server
            server.failures = 0
            st = server.stats
            st.responses += count
            st.response_bytes += pos
        if pos < n:
            if not expect and self.state == CONNECTED:
                log.warning("server %s of pool %s sent unsolicited data %r; closing the connection",
                            self.server.name, self.server.pool.name, data[pos:pos + 80])
                self.shutdown(ERR_RESET, "server_err")
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
            self.shutdown(ERR_TIMEDOUT, "server_timedout")
        else:
            self.timer = loop.call_at(deadline, self._check_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == CLOSED:
            return
        if exc is None:
            self.shutdown(ERR_RESET, "server_eof")
        else:
            self.shutdown(error_line(getattr(exc, "errno", None)), "server_err")

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost reports it

    def shutdown(self, msg: bytes, counter: str | None) -> None:
        """Close the connection; every request still on it gets ``msg``; count a failure."""
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
        waiters = self.expect
        self.expect = deque()
        self.pending = []
        self.batches.clear()
        self.buf = bytearray()
        if not was_connected and counter is not None and not self.probe:
            server.pool.stats.forward_error += sum(1 for w in waiters if w is not DISCARD_MN)
        for waiter in waiters:
            if waiter is not DISCARD_MN:
                waiter.fail(msg)
        if counter is not None and not self.probe:
            server.failed()

    def __repr__(self) -> str:
        return f"<BackendConnection to {self.server.name} state={self.state} waiting={len(self.expect)}>"


class Probe(Waiter):
    """The ``version`` health check that brings an ejected server back."""

    __slots__ = ("server",)

    def __init__(self, server: BackendServer) -> None:
        super().__init__(LINE)
        self.server = server

    def complete(self, raw: bytes) -> None:
        server = self.server
        conn = server.probe_conn
        server.probe_conn = None
        if conn is not None:
            server.pool.ctx.loop.call_soon(conn.shutdown, ERR_RESET, None)
        server.pool.probe_done(server, raw.startswith(b"VERSION "))


def start_probe(server: BackendServer) -> None:
    """Open a fresh connection to an ejected server and send it ``version``."""
    server.probe_handle = None
    pool = server.pool
    timeout = pool.timeout if pool.timeout is not None else pool.ctx.probe_timeout
    conn = BackendConnection(server, timeout, probe=True)
    server.probe_conn = conn
    conn.send(b"version\r\n", Probe(server))
    conn.connect()
