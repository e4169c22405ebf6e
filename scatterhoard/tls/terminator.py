"""``hoard tls``: a TLS terminator (stunnel-like) that shares sessions through the cache.

Each accepted TLS connection gets one plaintext connection to the backend, opened once its
handshake has succeeded;
bytes flow both ways with back-pressure (a slow side pauses reading on the
other).  The client's close_notify becomes a half-close towards the backend;
the backend closing becomes our close_notify.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Sequence
from typing import cast

from ..address import Address
from ..distcache.net import connect_async, listen_socket, serve_socket
from ..errors import HoardError
from ..service import Service
from .context import TLSContext
from .server import TLSServerProtocol, TLSStats

log = logging.getLogger("scatterhoard.tls")

__all__ = ["Terminator", "reuseport_socket"]


def reuseport_socket(addr: Address, backlog: int) -> socket.socket:
    """A TCP listener with SO_REUSEPORT: several terminators on one address, the kernel spreads
    the connections (a farm on one machine without a load balancer)."""
    try:
        infos = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise HoardError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class _Backend(asyncio.Protocol):
    """The plaintext side of one forwarded connection."""

    __slots__ = ("front", "transport")

    def __init__(self, front: _Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.front.transport is not None:
            self.front.transport.write(data)

    def eof_received(self) -> bool | None:
        if self.front.transport is not None:
            self.front.transport.close()  # close_notify after the data
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.front.transport is not None:
            self.front.transport.close()

    def pause_writing(self) -> None:
        if self.front.transport is not None:
            self.front.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.front.transport is not None:
            self.front.transport.resume_reading()


class _Front(asyncio.Protocol):
    """The decrypted side: the application protocol on top of the TLS transport.

    It exists only once the handshake has succeeded, so an unauthenticated peer (a port scan, a
    failed or timed-out handshake) never causes a backend connection, as with stunnel."""

    __slots__ = ("backend_address", "loop", "transport", "backend", "pending", "eof", "task")

    def __init__(self, backend: Address, loop: asyncio.AbstractEventLoop) -> None:
        self.backend_address = backend
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.backend: _Backend | None = None
        self.pending: list[bytes] = []
        self.eof = False
        self.task: asyncio.Task[tuple[asyncio.Transport, _Backend]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        addr = self.backend_address
        if addr.kind == "tcp":
            # The event loop's own connection (no wrapper coroutine, no extra system calls): asyncio
            # and uvloop set TCP_NODELAY on TCP transports themselves; a numeric host skips the resolver.
            coro = self.loop.create_connection(self._make_backend, addr.host, addr.port)
        else:
            coro = connect_async(self._make_backend, addr)
        self.task = task = self.loop.create_task(coro)
        task.add_done_callback(self._connected)

    def _make_backend(self) -> _Backend:
        return _Backend(self)

    def _connected(self, task: asyncio.Task[tuple[asyncio.Transport, _Backend]]) -> None:
        self.task = None
        if task.cancelled():
            return  # the client left first (connection_lost)
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, OSError):
                log.warning("tls: cannot connect to the backend %s: %s", self.backend_address, exc.strerror or exc)
            else:
                log.error("tls: cannot connect to the backend %s: %r", self.backend_address, exc)
            if self.transport is not None:
                self.transport.close()
            return
        _, backend = task.result()
        if self.transport is None:  # the client left meanwhile
            if backend.transport is not None:
                backend.transport.close()
            return
        self.backend = backend
        assert backend.transport is not None
        if self.pending:
            backend.transport.write(b"".join(self.pending))
            self.pending.clear()
        if self.eof and backend.transport.can_write_eof():
            backend.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.backend is not None and self.backend.transport is not None:
            if self.backend.transport.can_write_eof():
                self.backend.transport.write_eof()
            else:
                self.backend.transport.close()
        return True  # keep our side open for the backend's answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        backend, self.backend = self.backend, None  # no reference cycle left for the collector
        if backend is not None and backend.transport is not None:
            backend.transport.close()

    def pause_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.resume_reading()


class Terminator(Service):
    """TLS on ``listen`` addresses, plaintext to ``backend``."""

    def __init__(self, context: TLSContext, listen: Sequence[Address], backend: Address, *,
                 handshake_timeout: float = 30.0, backlog: int = 512, reuseport: bool = False) -> None:
        self.context = context
        self.backend = backend
        self.stats = TLSStats()
        self.handshake_timeout = handshake_timeout
        # bind now, so that errors show before the event loop starts
        self.sockets = [reuseport_socket(a, backlog) if reuseport and a.kind == "tcp" else listen_socket(a, backlog)
                        for a in listen]
        self.servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        # The shared ticket key ring first: a connection accepted before it is loaded would get a
        # ticket under a key only this process knows (clients wait in the listen backlog meanwhile).
        if self.context.tickets is not None:
            await self.context.tickets.start()
        # one factory for every connection (no closure made per accepted connection)
        front = functools.partial(_Front, self.backend, asyncio.get_running_loop())
        protocol = functools.partial(TLSServerProtocol, self.context, front, self.stats, self.handshake_timeout)
        for sock in self.sockets:
            self.servers.append(await serve_socket(sock, protocol))
        for sock in self.sockets:
            log.info("tls: listening on %s, forwarding to %s", sock.getsockname(), self.backend)

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        if self.context.tickets is not None:
            await self.context.tickets.close()
        if self.context.session_store is not None:
            await self.context.session_store.close()
        s = self.stats
        log.info("tls: %d connections, %d full and %d resumed handshakes, %d failed", s.connections,
                 s.handshakes_full, s.handshakes_resumed, s.handshakes_failed)
