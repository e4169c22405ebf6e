"""``hoard server``: asyncio glue around the protocol sessions and the store.

One listener serves every protocol: the first byte of a connection picks the
session (0x80 binary memcached, 0x00 distcache, ``*`` RESP, else text).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Protocol as TypingProtocol
from typing import cast

from ..address import Address, parse_address
from ..errors import HoardError, ProtocolError
from ..service import Service, unlink_stale_socket
from ..store import MemoryStore, Store
from .binary import BinarySession
from .distcache import DistcacheSession
from .resp import RespSession
from .stats import ServerStats, Settings
from .text import TextSession

log = logging.getLogger("scatterhoard.server")

SWEEP_INTERVAL = 1.0
def _glibc_memory_hooks() -> Callable[[], object] | None:
    """Tune glibc malloc for a cache and return ``malloc_trim(0)`` (None elsewhere).

    A fixed mmap threshold of 64 KB makes large values live in their own
    mappings, returned to the OS when evicted (glibc's default threshold
    adapts upwards and keeps them in the heap); the trim hands back free heap
    pages after heavy eviction.
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    m_mmap_threshold = -3
    mallopt(m_mmap_threshold, 64 * 1024)
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


class Session(TypingProtocol):
    """What a protocol session offers the connection: bytes in, reply bytes out."""

    closing: bool

    def feed(self, data: bytes) -> bytes: ...


SessionFactory = Callable[["Server"], Session]


class Connection(asyncio.Protocol):
    """One client connection; the session is chosen from the first byte received."""

    __slots__ = ("server", "transport", "session", "accepted", "peer")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.accepted = False
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        srv = self.server
        st = srv.stats
        if st.curr_connections >= srv.settings.maxconns:
            st.rejected_connections += 1
            self.transport.write(b"ERROR Too many open connections\r\n")
            self.transport.close()
            return
        self.accepted = True
        st.curr_connections += 1
        st.total_connections += 1
        srv.connections.add(self)
        if srv.settings.verbosity > 1:
            self.peer = str(self.transport.get_extra_info("peername"))
            log.info("<%s new client connection", self.peer)

    def data_received(self, data: bytes) -> None:
        if not self.accepted:
            return
        srv = self.server
        srv.stats.bytes_read += len(data)
        session = self.session
        if session is None:
            session = self.session = srv.session_for(data[0])
        try:
            out = session.feed(data)
        except ProtocolError as exc:
            log.warning("closing connection %s: %s", self.peer or id(self), exc)
            self._close()
            return
        except Exception:  # never let one client's input take the server down
            log.exception("internal error on a connection; closing it")
            self._close()
            return
        transport = self.transport
        assert transport is not None
        if out:
            srv.stats.bytes_written += len(out)
            transport.write(out)
        if session.closing:
            transport.close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.accepted:
            self.accepted = False
            self.server.stats.curr_connections -= 1
            self.server.connections.discard(self)


class Server(Service):
    """A cache server: listeners, connections, one store, periodic expiry sweep."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store: Store = store if store is not None else MemoryStore(
            settings.memory_mb * 1024 * 1024, settings.item_size_max)
        self.stats = ServerStats()
        self.connections: set[Connection] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._unix_paths: list[str] = []
        if isinstance(self.store, MemoryStore):
            self.store.trim_hook = _glibc_memory_hooks()
        #: first byte of a connection -> its session; anything else speaks text/meta
        self.session_factories: dict[int, SessionFactory] = {
            0x80: lambda srv: BinarySession(srv.store, srv.stats, srv.settings),
            0x00: lambda srv: DistcacheSession(srv.store, srv.stats, srv.settings),
            0x2A: lambda srv: RespSession(srv.store, srv.stats, srv.settings),
        }

    def session_for(self, first: int) -> Session:
        factory = self.session_factories.get(first)
        if factory is not None:
            return factory(self)
        return TextSession(self.store, self.stats, self.settings)

    # -- listeners ------------------------------------------------------------------
    async def start(self) -> list[str]:
        """Open every listener; returns their printable addresses."""
        loop = asyncio.get_running_loop()
        bound: list[str] = []
        for text in self.settings.listen:
            addr = parse_address(text, default_port=self.settings.port)
            srv = await self._listen(loop, addr)
            self._servers.append(srv)
            bound.append(str(addr))
        self._schedule_sweep()
        return bound

    async def _listen(self, loop: asyncio.AbstractEventLoop, addr: Address) -> asyncio.AbstractServer:
        factory = lambda: Connection(self)  # noqa: E731
        backlog = self.settings.backlog
        try:
            if addr.kind == "unix":
                unlink_stale_socket(addr.path)
                srv = await loop.create_unix_server(factory, addr.path, backlog=backlog)
                self._unix_paths.append(addr.path)
                return srv
            if addr.kind == "fd":
                sock = socket.socket(fileno=addr.fd)
                sock.setblocking(False)
                if sock.family == socket.AF_UNIX:
                    return await loop.create_unix_server(factory, sock=sock, backlog=backlog)
                return await loop.create_server(factory, sock=sock, backlog=backlog)
            return await loop.create_server(factory, addr.host, addr.port, backlog=backlog,
                                            reuse_address=True)
        except OSError as exc:
            raise HoardError(f"cannot listen on {addr}: {exc.strerror or exc}") from None

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        sweep = getattr(self.store, "sweep", None)
        if sweep is not None:
            try:
                sweep()
            except Exception:
                log.exception("expiry sweep failed")
        self._schedule_sweep()

    # -- running and stopping ---------------------------------------------------------
    async def serve(self, ready: Callable[[list[str]], None] | None = None) -> None:
        """Start, run until :meth:`stop` (or SIGTERM/SIGINT), then shut down gracefully."""
        bound = await self.start()
        await self.run_until_stopped(None if ready is None else lambda: ready(bound))

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for srv in self._servers:
            srv.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()  # flushes pending replies first
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2.0)
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.store.close()


def install_event_loop_policy() -> None:
    """Use uvloop when it is installed (it is a dependency on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
