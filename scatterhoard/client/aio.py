"""``scatterhoard.AsyncClient``: the asyncio client (``asyncio.BufferedProtocol`` connections, no streams).

The commands are the same plans as the blocking client's
(:class:`~scatterhoard.client.core.ClientCore`); only the I/O loop differs:
a batch's requests are written to every server's connection at once and
their answers awaited together, so a multi-server ``get_many`` costs one
round trip to the slowest server.  Per-operation timeouts are enforced by
one watchdog timer per client rather than one timer per operation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

from ..errors import CacheConnectionError, CacheError, CacheTimeoutError, ProtocolError, ServerError
from ..routing import ServerSpec
from .codec import ConnState, Request
from .config import Server
from .core import Batch, ClientCore, Key, Plan, T, is_ok, number
from .errors import socket_error
from .pool import AsyncPool
from .serde import Serde

__all__ = ["AsyncClient"]


RECV_SIZE = 64 * 1024


class _AioConn(asyncio.BufferedProtocol):
    """One connection: feeds received bytes to the protocol state, wakes the waiting command.

    A BufferedProtocol: the transport reads into one preallocated buffer
    (``recv_into``) instead of allocating a fresh 256 KiB bytes per read.
    """

    def __init__(self, state: ConnState, label: str) -> None:
        self.state = state
        self.label = label
        self._view = memoryview(bytearray(RECV_SIZE))
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.error: CacheError | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._view[:nbytes]))

    def data_received(self, data: bytes) -> None:
        try:
            self.state.feed(data)
        except ProtocolError as exc:
            self._fail(ServerError(f"{self.label}: reply that is not the protocol ({exc}); connection dropped"))
            self.close()
            return
        request = self.request
        if request is not None and request.done:
            waiter = self.waiter
            self.request = self.waiter = None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool | None:
        self._fail(CacheConnectionError(f"{self.label}: connection closed by the server"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(socket_error(exc, self.label) if exc is not None
                   else CacheConnectionError(f"{self.label}: connection closed"))

    # client side
    def _fail(self, error: CacheError) -> None:
        if self.error is None:
            self.error = error
        waiter = self.waiter
        self.request = self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def send(self, request: Request, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None] | None:
        """Write the request; a future that completes when it is answered (None: nothing to wait for)."""
        if self.error is not None:
            raise self.error
        assert self.transport is not None
        self.transport.write(self.state.submit(request))
        if request.done:
            return None
        waiter: asyncio.Future[None] = loop.create_future()
        self.request = request
        self.waiter = waiter
        return waiter

    @property
    def usable(self) -> bool:
        return self.error is None and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


    def time_out(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(CacheTimeoutError(f"{self.label}: no answer in time"))


class _Watchdog:
    """Per-operation timeouts without a timer per operation.

    Connections waiting for an answer are registered with their deadline; one
    timer, re-armed every ``timeout / 4`` while anything is registered, fails
    the overdue ones.  An operation therefore times out between ``timeout``
    and ``1.25 * timeout`` after it was sent (a timer per operation would
    cost more than the rest of a get).
    """

    __slots__ = ("_deadlines", "_every", "_handle", "_loop")

    def __init__(self, timeout: float) -> None:
        self._deadlines: dict[_AioConn, float] = {}
        self._every = max(timeout / 4, 0.001)
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, conn: _AioConn, deadline: float, loop: asyncio.AbstractEventLoop) -> None:
        self._deadlines[conn] = deadline
        if self._handle is None or self._loop is not loop:
            self._loop = loop
            self._handle = loop.call_later(self._every, self._sweep)

    def done(self, conn: _AioConn) -> None:
        self._deadlines.pop(conn, None)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for conn, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[conn]
                conn.time_out()
        self._handle = loop.call_later(self._every, self._sweep) if self._deadlines else None


class AsyncClient:
    """The asyncio twin of :class:`scatterhoard.Client`: same options, same methods, awaited.

    Use one client per event loop; ``async with AsyncClient(...) as c:`` closes it.
    """

    def __init__(self, servers: str | ServerSpec | Server | Sequence[str | ServerSpec | Server],
                 **options: Any) -> None:
        core = self._core = ClientCore(servers, **options)
        self._watchdog = _Watchdog(core.timeout)
        self._pools: list[AsyncPool[_AioConn]] = [
            AsyncPool(self._connector(i), core.max_pool_size, core.timeout, core.labels[i])
            for i in range(len(core.servers))
        ]

    @property
    def core(self) -> ClientCore:
        return self._core

    def _connector(self, index: int) -> Any:
        core = self._core
        address = core.servers[index].address
        label = core.labels[index]

        async def connect() -> _AioConn:
            loop = asyncio.get_running_loop()
            conn = _AioConn(core.codec.state(), label)
            if address.kind == "unix":
                opening = loop.create_unix_connection(lambda: conn, address.path)
            else:
                opening = loop.create_connection(lambda: conn, address.host, address.port)
            await asyncio.wait_for(opening, core.connect_timeout)
            return conn

        return connect

    async def _run(self, plan: Plan[T]) -> T:
        try:
            batch = next(plan)
            while True:
                if len(batch) == 1:
                    server, request = batch[0]
                    batch = plan.send([await self._one(server, request)])
                else:
                    batch = plan.send(await self._execute_many(batch))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _one(self, server: int, request: Request) -> object:
        """One request (most commands): its result, or the CacheError that stopped it.

        What :meth:`_execute_many` does for many, inline and without gathering.
        The single-key commands call it directly, without a plan.
        """
        pool = self._pools[server]
        idle = pool.idle
        if idle and idle[-1].usable:
            conn = idle.pop()
        else:
            acquired = await self._acquire(server)
            if isinstance(acquired, CacheError):
                return acquired
            conn = acquired
        try:
            loop = asyncio.get_running_loop()
            waiter = conn.send(request, loop)
            if waiter is not None:
                watchdog = self._watchdog
                watchdog.watch(conn, loop.time() + self._core.timeout, loop)
                try:
                    await waiter
                finally:
                    watchdog.done(conn)
        except CacheError as exc:
            return self._fail(server, conn, exc)
        except BaseException:
            pool.discard(conn)
            raise
        return self._finish(server, conn, request)

    def _fail(self, server: int, conn: _AioConn | None, exc: BaseException) -> CacheError:
        core = self._core
        error = socket_error(exc, core.labels[server])
        pool = self._pools[server]
        if conn is not None:
            pool.discard(conn)
        if core.is_connection_failure(error) or (conn is not None and conn.error is error):
            pool.clear()
            core.io_failed(server, error)
        return error

    async def _acquire(self, server: int) -> _AioConn | CacheError:
        pool = self._pools[server]
        while pool.idle:
            conn = pool.idle.pop()
            if conn.usable:
                return conn
            pool.discard(conn)
        try:
            return await pool.acquire()
        except CacheTimeoutError as exc:  # pool exhausted: not the server's fault
            return exc
        except (OSError, CacheError) as exc:
            return self._fail(server, None, exc)

    def _finish(self, server: int, conn: _AioConn, request: Request) -> object:
        self._pools[server].release(conn)
        self._core.io_ok(server)
        try:
            return request.result()
        except CacheError as exc:
            return exc
        except ProtocolError as exc:
            return ServerError(f"{self._core.labels[server]}: {exc}")

    async def _execute_many(self, batch: Batch) -> list[object]:
        loop = asyncio.get_running_loop()
        timeout = self._core.timeout
        # Several servers: connect where needed (concurrently), write everything, then await the answers.
        acquired = await asyncio.gather(*(self._acquire(server) for server, _ in batch))
        results: list[object] = [None] * len(batch)
        waiting: list[tuple[int, int, _AioConn, Request, asyncio.Future[None] | None]] = []
        for i, ((server, request), conn) in enumerate(zip(batch, acquired, strict=True)):
            if isinstance(conn, CacheError):
                results[i] = conn
                continue
            try:
                waiting.append((i, server, conn, request, conn.send(request, loop)))
            except CacheError as exc:
                results[i] = self._fail(server, conn, exc)
        deadline = loop.time() + timeout
        try:
            for i, server, conn, request, waiter in waiting:
                if waiter is not None:
                    self._watchdog.watch(conn, deadline, loop)
                    try:
                        await waiter
                    except CacheError as exc:
                        results[i] = self._fail(server, conn, exc)
                        continue
                    finally:
                        self._watchdog.done(conn)
                results[i] = self._finish(server, conn, request)
        except BaseException:
            for i, server, conn, _, waiter in waiting:
                if results[i] is None:
                    if waiter is not None and not waiter.done():
                        waiter.cancel()
                    self._pools[server].discard(conn)
            raise
        return results

    # -- lifecycle ---------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the idle connections (the client stays usable: it connects again on demand)."""
        for pool in self._pools:
            pool.clear()
        await asyncio.sleep(0)  # let the transports finish closing

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        core = self._core
        return (f"AsyncClient({core.labels!r}, protocol={core.protocol!r}, hash={core.router.hash_name!r}, "
                f"distribution={core.router.distribution!r})")

    # -- commands (see scatterhoard.Client for what each returns) ----------------------------------

    @property
    def serde(self) -> Serde:
        return self._core.serde

    # The commonest single-key commands skip the plan machinery: the same steps as the plans in
    # ClientCore (revive, route, request, answer), awaited one after the other.

    async def _keyed(self, key: Key, build: Callable[[bytes], Request]) -> tuple[bytes, object]:
        """Revive due servers, route ``key``, send ``build(wire key)``: (wire key, reply or error)."""
        core = self._core
        if core.ejected:
            await self._run(core.revive())
        wire, server = core.route(key)
        if isinstance(server, CacheError):
            return wire, server
        return wire, await self._one(server, build(wire))

    async def get(self, key: Key, default: Any = None) -> Any:
        codec = self._core.codec
        wire, result = await self._keyed(key, lambda w: codec.retrieve((w,)))
        return self._core.got(wire, result, default)

    async def get_many(self, keys: Iterable[Key]) -> dict[Any, Any]:
        return await self._run(self._core.get_many(keys))

    async def gets(self, key: Key, default: Any = None) -> tuple[Any, int | None]:
        return await self._run(self._core.gets(key, default))

    async def gat(self, key: Key, expire: int, default: Any = None) -> Any:
        return await self._run(self._core.gat(key, expire, default))

    async def set(self, key: Key, value: Any, expire: int | None = None, noreply: bool = False) -> bool:
        return await self._store(self._core.store_command, key, value, expire, noreply)

    async def _store(self, command: str, key: Key, value: Any, expire: int | None, noreply: bool) -> bool:
        core = self._core
        if core.ejected:
            await self._run(core.revive())
        wire, data, flags, exptime, server = core.store_args(key, value, expire)
        result = server if isinstance(server, CacheError) else await self._one(
            server, core.codec.store(command, wire, data, flags, exptime, 0, noreply))
        return is_ok(core.outcome(result, command))

    async def set_many(self, mapping: Mapping[Key, Any] | Iterable[tuple[Key, Any]], expire: int | None = None,
                       noreply: bool = False) -> list[Key]:
        return await self._run(self._core.set_many(mapping, expire, noreply))

    async def add(self, key: Key, value: Any, expire: int | None = None, noreply: bool = False) -> bool:
        return await self._store("add", key, value, expire, noreply)

    async def replace(self, key: Key, value: Any, expire: int | None = None, noreply: bool = False) -> bool:
        return await self._store("replace", key, value, expire, noreply)

    async def append(self, key: Key, value: Any, noreply: bool = False) -> bool:
        return await self._store("append", key, value, 0, noreply)

    async def prepend(self, key: Key, value: Any, noreply: bool = False) -> bool:
        return await self._store("prepend", key, value, 0, noreply)

    async def cas(self, key: Key, value: Any, cas: int, expire: int | None = None,
                  noreply: bool = False) -> bool | None:
        return await self._run(self._core.cas(key, value, cas, expire, noreply))

    async def delete(self, key: Key, noreply: bool = False) -> bool:
        codec = self._core.codec
        _, result = await self._keyed(key, lambda w: codec.delete(w, noreply))
        return is_ok(self._core.outcome(result, "delete"))

    async def delete_many(self, keys: Iterable[Key], noreply: bool = False) -> bool:
        return await self._run(self._core.delete_many(keys, noreply))

    async def incr(self, key: Key, delta: int = 1, noreply: bool = False) -> int | None:
        return await self._arith("incr", key, delta, noreply)

    async def decr(self, key: Key, delta: int = 1, noreply: bool = False) -> int | None:
        return await self._arith("decr", key, delta, noreply)

    async def _arith(self, what: str, key: Key, delta: int, noreply: bool) -> int | None:
        core = self._core
        delta = core._delta(delta)
        codec = core.codec
        _, result = await self._keyed(key, lambda w: codec.arith(w, delta, what == "incr", noreply))
        return number(core.outcome(result, what))

    async def touch(self, key: Key, expire: int, noreply: bool = False) -> bool:
        core = self._core
        exptime = core._exptime(expire)
        codec = core.codec
        _, result = await self._keyed(key, lambda w: codec.touch(w, exptime, noreply))
        return is_ok(core.outcome(result, "touch"))

    async def flush_all(self, delay: int = 0, noreply: bool = False) -> bool:
        return await self._run(self._core.flush_all(delay, noreply))

    async def stats(self, *args: str) -> dict[str, dict[str, str]]:
        return await self._run(self._core.stats(*args))

    async def version(self) -> dict[str, str]:
        return await self._run(self._core.version())
