"""``dc_client`` / ``hoard client``: the local multiplexing proxy.

Applications on one host connect to a local (usually unix) socket; the proxy
carries all their requests over ONE persistent connection to the cache
server.  The protocol of each local connection is picked from its first byte,
as ``hoard server`` does:

* distcache (0x00): request uids are rewritten on the way up (one uid space
  for the shared upstream connection) and restored on the way down.  While
  the upstream connection is down every request is answered at once with
  DISCONNECTED (result 2), in-flight ones included; the proxy reconnects
  every ``retry`` ms.
* memcached binary (0x80) and text (anything else): see
  :mod:`.proxy_memcache`.  Each of these protocols gets its own persistent
  upstream connection, opened when the first local client of that protocol
  arrives.

Replies reach each local client in the order of its requests (every request
takes a reply *slot*; slots are written out from the front as they fill).
A local client that disconnects mid-request only loses its own replies: they
are dropped when they arrive.  A local client that breaks the framing is
closed, and no one else notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol as TypingProtocol
from typing import cast

from ..address import Address
from ..protocol import distcache as dc
from ..service import Service
from .net import connect_async, serve_socket

log = logging.getLogger("scatterhoard.distcache.proxy")

DEFAULT_RETRY_MS = 5000
CONNECT_TIMEOUT = 5.0


class Slot:
    """One reply owed to a local client, in request order."""

    __slots__ = ("parts", "done")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.done = False

    def fill(self, data: bytes) -> None:
        self.parts.append(data)
        self.done = True


class LocalHandler(TypingProtocol):
    """What a local connection delegates its protocol to."""

    def feed(self, data: bytes) -> None: ...

    def lost(self) -> None: ...


class Link(asyncio.Protocol):
    """One persistent upstream connection, reconnected every ``retry`` ms while down.

    ``mux`` receives its events.  ``state`` is "down", "connecting" or "up".
    While connecting, :meth:`write` buffers (the memcached multiplexers use
    that; distcache answers DISCONNECTED instead of queueing).
    """

    def __init__(self, proxy: Proxy, name: str, mux: Mux) -> None:
        self.proxy = proxy
        self.name = name
        self.mux = mux
        self.state = "down"
        self.transport: asyncio.Transport | None = None
        self._early: list[bytes] = []
        self._retry: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._logged_down = False
        self.paused = False

    # -- connecting ---------------------------------------------------------------------
    def start(self) -> None:
        if self.state == "down" and self._retry is None:
            self.connect_now()

    def connect_now(self) -> asyncio.Task[None]:
        self._retry = None
        self.state = "connecting"
        self._task = asyncio.get_running_loop().create_task(self._connect())
        return self._task

    async def _connect(self) -> None:
        addr = self.proxy.server
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await connect_async(lambda: self, addr)
        except (OSError, TimeoutError) as exc:
            if self.proxy.closing:
                return
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            if not self._logged_down:
                log.warning("%s upstream %s unreachable (%s); retrying every %d ms", self.name, addr, reason,
                            self.proxy.retry_ms)
                self._logged_down = True
            self._went_down(reason)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.state = "up"
        log.info("%s upstream connected to %s", self.name, self.proxy.server)
        self._logged_down = False
        self.mux.up()
        early, self._early = self._early, []
        if early:
            self.transport.write(b"".join(early))

    def _went_down(self, reason: str) -> None:
        self.state = "down"
        self.transport = None
        self._early.clear()
        self.mux.down(reason)
        if self.paused:
            self.paused = False
            self.proxy.resume_locals()
        if not self.proxy.closing:
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(self.proxy.retry_ms / 1000.0, self.connect_now)

    # -- traffic ------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.state == "up" and self.transport is not None:
            self.transport.write(data)
        elif self.state == "connecting":
            self._early.append(data)

    def data_received(self, data: bytes) -> None:
        self.mux.upstream_data(data)

    def abort(self, reason: str) -> None:
        log.warning("%s upstream: %s; reconnecting", self.name, reason)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state != "up":
            return
        reason = "connection closed by the server" if exc is None else str(exc)
        if not self.proxy.closing:
            log.warning("%s upstream lost (%s); retrying every %d ms", self.name, reason, self.proxy.retry_ms)
            self._logged_down = True
        self._went_down(reason)

    def pause_writing(self) -> None:
        self.paused = True
        self.proxy.pause_locals()

    def resume_writing(self) -> None:
        self.paused = False
        self.proxy.resume_locals()

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self.transport is not None:
            self.transport.close()


class Mux:
    """Base of the per-protocol multiplexers (one per upstream connection)."""

    name = "?"

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.link = Link(proxy, self.name, self)

    def open_local(self, conn: LocalConnection) -> LocalHandler:
        raise NotImplementedError

    def up(self) -> None:
        """The upstream connection is (re)established."""

    def down(self, reason: str) -> None:
        """The upstream connection is gone: fail what is in flight."""

    def upstream_data(self, data: bytes) -> None:
        raise NotImplementedError


class DistcacheMux(Mux):
    """distcache clients over one upstream connection, request uids rewritten."""

    name = "distcache"

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(proxy)
        self.parser = dc.DistcacheParser("client")
        #: upstream uid -> (local connection, its slot, local uid, operation); in send order.
        self.in_flight: dict[int, tuple[LocalConnection, Slot, int, int]] = {}
        self._uid = 0

    def open_local(self, conn: LocalConnection) -> LocalHandler:
        return _LocalDistcache(self, conn)

    def _next_uid(self) -> int:
        uid = self._uid = (self._uid + 1) & dc.MAX_UID
        while uid in self.in_flight:  # 2**32 requests later, a slow reply may still be out
            uid = self._uid = (self._uid + 1) & dc.MAX_UID
        return uid

    def requests(self, conn: LocalConnection, messages: list[dc.Message]) -> None:
        if self.link.state != "up":
            for m in messages:
                conn.new_slot().fill(dc.encode_result(m.uid, m.op, dc.RESULT_DISCONNECTED))
            conn.flush()
            return
        wire: list[bytes] = []
        in_flight = self.in_flight
        for m in messages:
            uid = self._next_uid()
            in_flight[uid] = (conn, conn.new_slot(), m.uid, m.op)
            wire.append(dc.encode_message(False, uid, m.op, m.payload))
        self.link.write(b"".join(wire))

    def up(self) -> None:
        self.parser = dc.DistcacheParser("client")

    def down(self, reason: str) -> None:
        in_flight, self.in_flight = self.in_flight, {}
        dirty: set[LocalConnection] = set()
        for conn, slot, uid, op in in_flight.values():
            slot.fill(dc.encode_result(uid, op, dc.RESULT_DISCONNECTED))
            dirty.add(conn)
        for conn in dirty:
            conn.flush()

    def upstream_data(self, data: bytes) -> None:
        try:
            messages = self.parser.feed(data)
        except dc.FramingError as exc:
            self._deliver(exc.messages)
            self.link.abort(f"bad reply stream: {exc.reason}")
            return
        self._deliver(messages)

    def _deliver(self, messages: list[dc.Message]) -> None:
        dirty: set[LocalConnection] = set()
        in_flight = self.in_flight
        for m in messages:
            entry = in_flight.pop(m.uid, None)
            if entry is None:
                log.warning("distcache upstream: reply with unknown uid %d dropped", m.uid)
                continue
            conn, slot, uid, _ = entry
            slot.fill(dc.encode_message(True, uid, m.op, m.payload))
            dirty.add(conn)
        for conn in dirty:
            conn.flush()


class _LocalDistcache:
    __slots__ = ("mux", "conn", "parser")

    def __init__(self, mux: DistcacheMux, conn: LocalConnection) -> None:
        self.mux = mux
        self.conn = conn
        self.parser = dc.DistcacheParser("server")

    def feed(self, data: bytes) -> None:
        try:
            messages = self.parser.feed(data)
        except dc.FramingError as exc:
            if exc.messages:
                self.mux.requests(self.conn, exc.messages)
            self.conn.fail(f"distcache: {exc.reason}")
            return
        if messages:
            self.mux.requests(self.conn, messages)

    def lost(self) -> None:
        """Replies still in flight are dropped on arrival (their slots die with the connection)."""


class LocalConnection(asyncio.Protocol):
    """One application connection to the proxy."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.handler: LocalHandler | None = None
        self.slots: deque[Slot] = deque()
        self.closed = False
        self.close_when_flushed = False
        self.last_active = time.monotonic()
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.proxy.locals.add(self)
        if self.proxy.reading_paused:
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_active = time.monotonic()
        handler = self.handler
        if handler is None:
            handler = self.handler = self.proxy.mux_for(data[0]).open_local(self)
        try:
            handler.feed(data)
        except Exception:  # one client's bytes never take the proxy down
            log.exception("internal error on a local connection; closing it")
            self.abort()

    def new_slot(self) -> Slot:
        slot = Slot()
        self.slots.append(slot)
        return slot

    def reply(self, data: bytes) -> None:
        """A reply the proxy makes itself, in order with the forwarded ones."""
        self.new_slot().fill(data)

    def flush(self) -> None:
        slots = self.slots
        if self.closed or self.transport is None:
            slots.clear()
            return
        out: list[bytes] = []
        while slots and slots[0].done:
            out.extend(slots.popleft().parts)
        if out:
            self.transport.write(b"".join(out))
            self.last_active = time.monotonic()
        if self.close_when_flushed and not slots:
            self.transport.close()

    def finish(self) -> None:
        """Close once every owed reply is written (a ``quit``)."""
        self.close_when_flushed = True
        if self.transport is not None:
            self.transport.pause_reading()
        self.flush()

    def fail(self, reason: str) -> None:
        """The client broke its protocol: log one line and close this connection only."""
        log.warning("closing local connection %s: %s", self.peer or id(self), reason)
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    @property
    def idle(self) -> bool:
        return not self.slots

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.proxy.reading_paused:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.slots.clear()
        self.proxy.locals.discard(self)
        if self.handler is not None:
            self.handler.lost()


class Proxy(Service):
    """The dc_client engine: local listeners, one upstream connection per protocol."""

    def __init__(self, server: Address, retry_ms: int = DEFAULT_RETRY_MS, idle_ms: int = 0) -> None:
        self.server = server
        self.retry_ms = max(1, retry_ms)
        self.idle_ms = idle_ms
        self.locals: set[LocalConnection] = set()
        self.closing = False
        self.reading_paused = False
        self.distcache = DistcacheMux(self)
        self._muxes: dict[int, Mux] = {0x00: self.distcache}
        self._other: Callable[[Proxy, int], Mux] | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._idle_timer: asyncio.TimerHandle | None = None

    def mux_for(self, first: int) -> Mux:
        key = 0x00 if first == 0x00 else (0x80 if first == 0x80 else 0x01)
        mux = self._muxes.get(key)
        if mux is None:
            from .proxy_memcache import BinaryMux, TextMux

            mux = BinaryMux(self) if key == 0x80 else TextMux(self)
            self._muxes[key] = mux
        mux.link.start()
        return mux

    def pause_locals(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            for conn in self.locals:
                if conn.transport is not None:
                    conn.transport.pause_reading()

    def resume_locals(self) -> None:
        if self.reading_paused and not any(m.link.paused for m in self._muxes.values()):
            self.reading_paused = False
            for conn in self.locals:
                if conn.transport is not None and not conn.close_when_flushed:
                    conn.transport.resume_reading()

    async def start(self, socks: list[socket.socket]) -> None:
        """Connect upstream (one first attempt), then accept on the listening sockets."""
        await self.distcache.link.connect_now()
        for sock in socks:
            self._servers.append(await serve_socket(sock, lambda: LocalConnection(self)))
        if self.idle_ms > 0:
            self._schedule_idle()

    def _schedule_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(min(self.idle_ms, 1000) / 1000.0, self._close_idle)

    def _close_idle(self) -> None:
        limit = time.monotonic() - self.idle_ms / 1000.0
        for conn in list(self.locals):
            if conn.idle and conn.last_active < limit and conn.transport is not None:
                conn.transport.close()
        self._schedule_idle()

    async def serve(self, socks: list[socket.socket], ready: Callable[[], None] | None = None) -> None:
        await self.start(socks)
        await self.run_until_stopped(ready)

    async def close(self) -> None:
        self.closing = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for srv in self._servers:
            srv.close()
        for conn in list(self.locals):
            if conn.transport is not None:
                conn.transport.close()
        for mux in self._muxes.values():
            mux.link.close()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2.0)
