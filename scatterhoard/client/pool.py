"""Connection pools, one per server: at most ``max_size`` connections, idle ones reused (LIFO).

A connection is used by one command at a time.  When every connection is in
use, ``acquire`` waits for one (up to ``wait_timeout`` seconds) and then
raises :class:`~scatterhoard.errors.CacheTimeoutError`.  After a failure the
client discards the connection it used and :meth:`clear` drops the idle ones
too: after a server restart they are all dead.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from ..errors import CacheTimeoutError

__all__ = ["AsyncPool", "Closable", "SyncPool"]


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class SyncPool(Generic[C]):
    """Thread-safe pool of blocking connections."""

    __slots__ = ("_cond", "_connect", "_lock", "_size", "_waiters", "idle", "label", "max_size",
                 "wait_timeout")

    def __init__(self, connect: Callable[[], C], max_size: int, wait_timeout: float, label: str = "") -> None:
        self._connect = connect
        self.max_size = max_size
        self.wait_timeout = wait_timeout
        self.label = label
        self.idle: list[C] = []
        self._size = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiters = 0

    @property
    def size(self) -> int:
        """Connections open (idle or in use)."""
        return self._size

    def acquire(self) -> C:
        """An idle connection, or a new one (``connect`` may raise OSError), or wait for one."""
        try:
            return self.idle.pop()
        except IndexError:
            pass
        with self._lock:
            while True:
                if self.idle:
                    return self.idle.pop()
                if self._size < self.max_size:
                    self._size += 1
                    break
                self._waiters += 1
                try:  # one given back between the check above and the announcement is taken at once
                    woke = True if self.idle else self._cond.wait(self.wait_timeout)
                finally:
                    self._waiters -= 1
                if not woke and not self.idle and self._size >= self.max_size:
                    raise CacheTimeoutError(
                        f"{self.label}: all {self.max_size} connections busy for "
                        f"{self.wait_timeout * 1000:.0f} ms (raise max_pool_size?)")
        try:
            return self._connect()
        except BaseException:
            self._forget(1)
            raise

    def release(self, conn: C) -> None:
        """Give back a healthy connection.

        Lock-free unless someone waits: a waiter announces itself (``_waiters``)
        and then looks at ``idle`` again before it sleeps, so either it sees
        this connection or this sees it and wakes it.
        """
        self.idle.append(conn)
        if self._waiters:
            with self._lock:
                self._cond.notify()

    def discard(self, conn: C) -> None:
        """Close a connection that must not be reused."""
        try:
            conn.close()
        finally:
            self._forget(1)

    def clear(self) -> None:
        """Close the idle connections."""
        n = 0
        while True:
            try:
                conn = self.idle.pop()
            except IndexError:
                break
            n += 1
            try:
                conn.close()
            except OSError:
                pass
        if n:
            self._forget(n)

    def _forget(self, n: int) -> None:
        with self._lock:
            self._size -= n
            if self._waiters:
                self._cond.notify(n)


class AsyncPool(Generic[C]):
    """Pool of asyncio connections (one event loop)."""

    __slots__ = ("_connect", "_size", "_waiters", "idle", "label", "max_size", "wait_timeout")

    def __init__(self, connect: Callable[[], Awaitable[C]], max_size: int, wait_timeout: float,
                 label: str = "") -> None:
        self._connect = connect
        self.max_size = max_size
        self.wait_timeout = wait_timeout
        self.label = label
        self.idle: list[C] = []
        self._size = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def size(self) -> int:
        return self._size

    async def acquire(self) -> C:
        while True:
            if self.idle:
                return self.idle.pop()
            if self._size < self.max_size:
                self._size += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._forget(1)
                    raise
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, self.wait_timeout)
            except TimeoutError:
                raise CacheTimeoutError(
                    f"{self.label}: all {self.max_size} connections busy for "
                    f"{self.wait_timeout * 1000:.0f} ms (raise max_pool_size?)") from None
            finally:
                if not waiter.done():
                    waiter.cancel()
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

    def _wake(self, n: int = 1) -> None:
        waiters = self._waiters
        while n and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    def release(self, conn: C) -> None:
        self.idle.append(conn)
        if self._waiters:
            self._wake()

    def discard(self, conn: C) -> None:
        try:
            conn.close()
        finally:
            self._forget(1)

    def clear(self) -> None:
        conns, self.idle = self.idle, []
        for conn in conns:
            conn.close()
        if conns:
            self._forget(len(conns))

    def _forget(self, n: int) -> None:
        self._size -= n
        if self._waiters:
            self._wake(n)
