"""Session-cache clients: blocking :class:`SessionCache` and asyncio :class:`AsyncSessionCache`.

The two levels of libdistcache's client API, as thin shells over the sans-IO
codec (:mod:`scatterhoard.protocol.distcache`)::

    cache = SessionCache("UNIX:/tmp/scache")          # or "IP:cache1:9001", "127.0.0.1:9001"
    cache.add(b"session-id", b"state", timeout_ms=300_000)   # True when stored
    cache.get(b"session-id")                                  # b"state", or None
    cache.have(b"session-id"), cache.remove(b"session-id")    # bool

A dead cache never raises into the application unless ``strict=True``: the
call logs one warning (when the cache goes away) and answers a miss
(``False`` / ``None``).  With ``strict=True`` connection failures raise
:class:`~scatterhoard.errors.CacheConnectionError` and timeouts
:class:`~scatterhoard.errors.CacheTimeoutError`.  A DISCONNECTED reply from a
local ``dc_client`` whose server is down counts as a connection failure.

Arguments the protocol cannot carry (an id of 0 or more than 64 bytes, empty
data, a message over 32768 bytes, a timeout over one week) raise
:class:`ValueError` whatever ``strict`` says: that is a bug in the caller,
not a dead cache.

Both clients reconnect by themselves on the next call after a failure.  The
blocking client retries a request once on a fresh connection when a *reused*
connection turns out to be dead before any reply byte arrived (the server
restarted, an idle timeout closed it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from ..address import Address
from ..errors import CacheConnectionError, CacheTimeoutError, ProtocolError
from ..protocol import distcache as dc
from .net import connect_async, connect_blocking, to_address

log = logging.getLogger("scatterhoard.distcache")

__all__ = ["AsyncSessionCache", "SessionCache", "check_session_args"]

Encoder = Callable[[int], bytes]


def check_session_args(session_id: bytes, data: bytes | None = None, timeout_ms: int = 0) -> None:
    """Raise :class:`ValueError` for what the distcache protocol cannot carry."""
    n = len(session_id)
    if not 0 < n <= dc.MAX_ID_LEN:
        raise ValueError(f"distcache: a session id must be 1..{dc.MAX_ID_LEN} bytes, not {n}")
    if data is not None:
        room = dc.MAX_PAYLOAD - dc.ADD_HEADER_SIZE - n
        if not 0 < len(data) <= room:
            raise ValueError(f"distcache: session data must be 1..{room} bytes with a {n}-byte id, "
                             f"not {len(data)}")
        if not 0 <= timeout_ms <= dc.MAX_TIMEOUT_MS:
            raise ValueError(f"distcache: timeout must be 0..{dc.MAX_TIMEOUT_MS} ms, not {timeout_ms}")


class _Failure(Exception):
    """Internal: a request failed; ``kind`` says how."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # "connection" or "timeout"
        self.reason = reason


class _Common:
    """What the blocking and asyncio clients share: arguments, results, failure policy."""

    def __init__(self, address: str | Address, timeout: float, strict: bool) -> None:
        self.address = to_address(address)
        self.timeout = timeout
        self.strict = strict
        self._healthy = True
        self._uids = itertools.count(1)

    def _next_uid(self) -> int:
        uid = next(self._uids)
        if uid > dc.MAX_UID:
            self._uids = itertools.count(1)
            uid = next(self._uids)
        return uid

    def _ok(self) -> None:
        if not self._healthy:
            log.warning("distcache: cache at %s is reachable again", self.address)
            self._healthy = True

    def _fail(self, failure: _Failure) -> None:
        """Raise (strict) or log (once per outage) a failed request."""
        if self.strict:
            if failure.kind == "timeout":
                raise CacheTimeoutError(f"distcache {self.address}: {failure.reason}") from None
            raise CacheConnectionError(f"distcache {self.address}: {failure.reason}") from None
        if self._healthy:
            log.warning("distcache: cache at %s failed (%s); answering misses", self.address, failure.reason)
            self._healthy = False
        else:
            log.debug("distcache: cache at %s still failing: %s", self.address, failure.reason)

    def _result(self, resp: dc.Response) -> dc.Response | None:
        if resp.code == dc.RESULT_DISCONNECTED:
            self._fail(_Failure("connection", "the local proxy has lost its cache server (DISCONNECTED)"))
            return None
        self._ok()
        return resp

    @staticmethod
    def _add_wire(session_id: bytes, data: bytes, timeout_ms: int) -> Encoder:
        check_session_args(session_id, data, timeout_ms)
        return lambda uid: dc.encode_add(uid, session_id, data, timeout_ms)

    @staticmethod
    def _id_wire(op: int, session_id: bytes) -> Encoder:
        check_session_args(session_id)
        return lambda uid: dc.encode_message(False, uid, op, session_id)


class SessionCache(_Common):
    """Blocking distcache client: one connection, one request at a time.

    ``timeout`` (seconds) bounds every call, connecting included; each method
    takes its own ``timeout=`` too.  Not thread-safe: use one per thread.
    """

    def __init__(self, address: str | Address, timeout: float = 5.0, strict: bool = False) -> None:
        super().__init__(address, timeout, strict)
        self._sock: socket.socket | None = None
        self._parser = dc.DistcacheParser("client")

    # -- the API ---------------------------------------------------------------------
    def add(self, session_id: bytes, data: bytes, timeout_ms: int, *, timeout: float | None = None) -> bool:
        """Store a new session; False when the id is already live (or on failure)."""
        resp = self._call(self._add_wire(session_id, data, timeout_ms), timeout)
        return resp is not None and resp.code == dc.RESULT_OK

    def add_result(self, session_id: bytes, data: bytes, timeout_ms: int, *,
                   timeout: float | None = None) -> int | None:
        """Like :meth:`add`, but the raw result code (101 duplicate ...), None on failure."""
        resp = self._call(self._add_wire(session_id, data, timeout_ms), timeout)
        return None if resp is None else resp.code

    def get(self, session_id: bytes, *, timeout: float | None = None) -> bytes | None:
        resp = self._call(self._id_wire(dc.OP_GET, session_id), timeout)
        return None if resp is None else resp.data

    def remove(self, session_id: bytes, *, timeout: float | None = None) -> bool:
        resp = self._call(self._id_wire(dc.OP_REMOVE, session_id), timeout)
        return resp is not None and resp.code == dc.RESULT_OK

    def have(self, session_id: bytes, *, timeout: float | None = None) -> bool:
        resp = self._call(self._id_wire(dc.OP_HAVE, session_id), timeout)
        return resp is not None and resp.code == dc.RESULT_OK

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._parser = dc.DistcacheParser("client")

    def __enter__(self) -> SessionCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, op: int, session_id: bytes, data: bytes = b"", timeout_ms: int = 0, *,
                timeout: float | None = None) -> dc.Response:
        """One raw request; the decoded reply whatever its code (DISCONNECTED included).

        Always raises :class:`CacheConnectionError` / :class:`CacheTimeoutError`
        on failure, whatever ``strict`` says (``dc_test`` is built on it).
        """
        wire = self._add_wire(session_id, data, timeout_ms) if op == dc.OP_ADD else self._id_wire(op, session_id)
        try:
            return self._call_raw(wire, timeout)
        except _Failure as failure:
            cls = CacheTimeoutError if failure.kind == "timeout" else CacheConnectionError
            raise cls(f"distcache {self.address}: {failure.reason}") from None

    # -- machinery -------------------------------------------------------------------
    def _call(self, wire: Encoder, timeout: float | None) -> dc.Response | None:
        try:
            resp = self._call_raw(wire, timeout)
        except _Failure as failure:
            self._fail(failure)
            return None
        return self._result(resp)

    def _call_raw(self, wire: Encoder, timeout: float | None) -> dc.Response:
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        reused = self._sock is not None
        try:
            return self._exchange(wire, deadline)
        except _Failure as failure:
            self.close()
            if not (reused and failure.kind == "stale"):
                if failure.kind == "stale":
                    failure.kind = "connection"
                raise
        try:
            return self._exchange(wire, deadline)  # once more, on a fresh connection
        except _Failure as failure:
            self.close()
            if failure.kind == "stale":
                failure.kind = "connection"
            raise

    def _exchange(self, wire: Encoder, deadline: float) -> dc.Response:
        uid = self._next_uid()
        data = wire(uid)
        try:
            sock = self._sock
            if sock is None:
                sock = self._sock = connect_blocking(self.address, _left(deadline))
            sock.settimeout(_left(deadline))
            sock.sendall(data)
            got_any = False
            while True:
                sock.settimeout(_left(deadline))
                chunk = sock.recv(65536)
                if not chunk:
                    raise _Failure("connection" if got_any else "stale", "connection closed by the server")
                got_any = True
                messages = self._parser.feed(chunk)
                if messages:
                    break
        except TimeoutError:
            raise _Failure("timeout", "no reply in time") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _Failure("stale", exc.strerror or str(exc)) from None
        except OSError as exc:
            raise _Failure("connection", exc.strerror or str(exc)) from None
        except ProtocolError as exc:
            raise _Failure("connection", f"bad reply: {exc}") from None
        if len(messages) != 1 or messages[0].uid != uid or self._parser.in_message:
            raise _Failure("connection", f"reply out of step (expected uid {uid})")
        try:
            return dc.decode_response(messages[0])
        except ProtocolError as exc:
            raise _Failure("connection", f"bad reply: {exc}") from None


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


class _AsyncConnection(asyncio.Protocol):
    """One pipelined connection: replies are matched to waiting futures by uid."""

    def __init__(self) -> None:
        self.parser = dc.DistcacheParser("client")
        self.pending: dict[int, asyncio.Future[dc.Response]] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.parser.feed(data)
        except dc.FramingError as exc:
            for m in exc.messages:
                self._deliver(m)
            self._abort(f"bad reply stream: {exc.reason}")
            return
        for m in messages:
            self._deliver(m)

    def _deliver(self, message: dc.Message) -> None:
        fut = self.pending.pop(message.uid, None)
        if fut is None or fut.done():
            return  # its caller timed out
        try:
            fut.set_result(dc.decode_response(message))
        except ProtocolError as exc:
            fut.set_exception(_Failure("connection", f"bad reply: {exc}"))

    def _abort(self, reason: str) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        self.closed = True
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(_Failure("connection", reason))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all("connection lost" if exc is None else f"connection lost: {exc}")

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def writable(self) -> None:
        if self._writable is not None and not self._writable.done():
            await self._writable


class AsyncSessionCache(_Common):
    """asyncio distcache client: the same API, ``async``, pipelined on one connection.

    Any number of coroutines may call it at once; their requests share one
    connection and replies are matched by request uid.
    """

    def __init__(self, address: str | Address, timeout: float = 5.0, strict: bool = False) -> None:
        super().__init__(address, timeout, strict)
        self._conn: _AsyncConnection | None = None
        self._connecting: asyncio.Lock | None = None

    async def add(self, session_id: bytes, data: bytes, timeout_ms: int, *,
                  timeout: float | None = None) -> bool:
        resp = await self._call(self._add_wire(session_id, data, timeout_ms), timeout)
        return resp is not None and resp.code == dc.RESULT_OK

    async def add_result(self, session_id: bytes, data: bytes, timeout_ms: int, *,
                         timeout: float | None = None) -> int | None:
        resp = await self._call(self._add_wire(session_id, data, timeout_ms), timeout)
        return None if resp is None else resp.code

    async def get(self, session_id: bytes, *, timeout: float | None = None) -> bytes | None:
        resp = await self._call(self._id_wire(dc.OP_GET, session_id), timeout)
        return None if resp is None else resp.data

    async def remove(self, session_id: bytes, *, timeout: float | None = None) -> bool:
        resp = await self._call(self._id_wire(dc.OP_REMOVE, session_id), timeout)
        return resp is not None and resp.code == dc.RESULT_OK

    async def have(self, session_id: bytes, *, timeout: float | None = None) -> bool:
        resp = await self._call(self._id_wire(dc.OP_HAVE, session_id), timeout)
        return resp is not None and resp.code == dc.RESULT_OK

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()
            conn._fail_all("client closed")

    async def __aenter__(self) -> AsyncSessionCache:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _connection(self) -> _AsyncConnection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._conn
            if conn is None or conn.closed:
                _, conn = await connect_async(_AsyncConnection, self.address)
                self._conn = conn
            return conn

    async def _call(self, wire: Encoder, timeout: float | None) -> dc.Response | None:
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                try:
                    conn = await self._connection()
                except OSError as exc:
                    raise _Failure("connection", exc.strerror or str(exc)) from None
                await conn.writable()
                if conn.closed or conn.transport is None:
                    raise _Failure("connection", "connection lost")
                uid = self._next_uid()
                fut: asyncio.Future[dc.Response] = asyncio.get_running_loop().create_future()
                conn.pending[uid] = fut
                try:
                    conn.transport.write(wire(uid))
                    resp = await fut
                finally:
                    conn.pending.pop(uid, None)
        except TimeoutError:
            self._fail(_Failure("timeout", f"no reply within {limit:g} s"))
            return None
        except _Failure as failure:
            self._fail(failure)
            return None
        return self._result(resp)
