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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol as TypingProtocol
from typing import cast

from ..address import Address, parse_address
from ..engines import guard
from ..engines.handlers import Context, HandledStore, Handler, current_context
from ..errors import HoardError
from ..protocol import binary_consts as bc
from ..service import Service, unlink_stale_socket
from ..store import MemoryStore, Store
from .binary import BinarySession
from .connection import Connection
from .distcache import DistcacheSession, SessionLimitStore
from .resp import RespSession
from .stats import ServerStats, Settings
from .text import TextSession

log = logging.getLogger("scatterhoard.server")

SWEEP_INTERVAL = 1.0
#: Worker threads for a blocking engine (``-t``): this many slow calls can be in flight at once.
DEFAULT_WORKERS = 16
#: Seconds a graceful stop waits for running engine calls.
JOB_GRACE = 10.0


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


class _StatsMirror:
    """Keeps the server counters exact when sessions run in worker threads.

    Before a job the connection's session gets a private copy of the shared
    counters (so ``stats`` shows current figures); after it, on the event
    loop, the job's increments are added to the shared counters. No counter
    is ever incremented from two threads at once.
    """

    __slots__ = ("shared", "local", "base", "resets")

    def __init__(self, shared: ServerStats) -> None:
        self.shared = shared
        self.local = ServerStats()
        self.base: list[int] = []
        self.resets = 0

    def adopt(self, session: Session) -> None:
        """Point the session at the private copy."""
        if hasattr(session, "stats"):
            session.stats = self.local

    def begin(self) -> None:
        self.base = self.shared.snapshot()
        self.local.load(self.base)
        self.resets = self.local.resets

    def commit(self) -> None:
        base = self.base
        if self.local.resets != self.resets:  # ``stats reset`` ran in the job
            self.shared.reset()
            after = ServerStats()  # what the reset left of the counters the job started from
            after.load(base)
            after.reset()
            base = after.snapshot()
        self.shared.add_since(self.local.snapshot(), base)


#: Text and meta commands that never reach the engine (first word of a line)
_LOOP_WORDS = frozenset((b"version", b"verbosity", b"quit", b"mn"))
#: Binary opcodes that never reach the engine
_LOOP_OPCODES = frozenset((bc.OP_NOOP, bc.OP_VERSION, bc.OP_QUIT, bc.OP_QUITQ, bc.OP_VERBOSITY))
#: A read longer than this always goes to a worker (the scan below stays cheap)
_LOOP_SCAN_MAX = 4096


def engine_free(session: Session, data: bytes) -> bool:
    """True when ``data`` holds only whole commands that never reach the engine (text/meta
    ``version``, ``verbosity``, ``quit``, ``mn``; binary NOOP, VERSION, QUIT(Q), VERBOSITY) and
    ``session`` holds no partial input: the loop may answer it without a worker thread."""
    if len(data) > _LOOP_SCAN_MAX:
        return False
    if isinstance(session, TextSession):
        if not data.endswith(b"\n") or not session.parser.idle():
            return False
        for line in data[:-1].split(b"\n"):
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.split(b" ", 1)[0] not in _LOOP_WORDS:
                return False
        return True
    if isinstance(session, BinarySession):
        parser = session.parser
        if parser.buffered or parser.skipping:
            return False
        pos, end = 0, len(data)
        while pos < end:
            if end - pos < 24 or data[pos] != bc.REQUEST_MAGIC or data[pos + 1] not in _LOOP_OPCODES:
                return False
            pos += 24 + int.from_bytes(data[pos + 8:pos + 12], "big")
        return pos == end
    return False


class EngineConnection(Connection):
    """A connection to an engine that blocks (worker threads) or answers through handlers.

    With a blocking engine the session runs in the server's worker threads:
    reading pauses while a job runs (data already received waits in order),
    the reply is written from the loop, then reading resumes. One job per
    connection at a time keeps its replies in order; other connections run
    in other threads meanwhile. A read that holds only commands that never
    reach the engine (:func:`engine_free`: ``version``, ``mn``, binary NOOP...)
    on a connection with no job in flight is answered on the loop at once, so
    it never waits for a worker however slow the engine is. With handlers,
    each read runs with the connection's
    :class:`~scatterhoard.engines.handlers.Context` set.
    """

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.context: Context | None = None
        self.pending: list[bytes] = []
        self.mirror: _StatsMirror | None = None

    def _start(self, first: int) -> Session:
        session = super()._start(first)
        srv = self.server
        if srv.guarded:
            self.context = Context(guard.guard_session(session), self.peer)
        if srv.blocking:
            self.mirror = _StatsMirror(srv.stats)
            self.mirror.adopt(session)
        return session

    def data_received(self, data: bytes) -> None:
        if not self.accepted:
            return
        srv = self.server
        srv.stats.bytes_read += len(data)
        session = self.session
        if session is None:
            session = self._start(data[0])
        if srv.blocking:
            if not self.busy and engine_free(session, data):
                self._answer_here(session, data)
                return
            self.pending.append(data)
            if not self.busy:
                self._submit()
            return
        try:
            out = self._work(data)
        except Exception as exc:
            self._failed(exc)
            return
        self._deliver(session, out)

    # -- blocking engines: the session runs in a worker thread --------------------------------------
    def _answer_here(self, session: Session, data: bytes) -> None:
        """Run a read that never reaches the engine on the loop (no job is in flight)."""
        mirror = self.mirror
        assert mirror is not None
        mirror.begin()
        try:
            out = self._work(data)
        except Exception as exc:
            mirror.commit()
            self._failed(exc)
            return
        mirror.commit()
        self._deliver(session, out)

    def _submit(self) -> None:
        data = b"".join(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending.clear()
        self.busy = True
        transport = self.transport
        assert transport is not None and self.mirror is not None
        transport.pause_reading()
        self.mirror.begin()
        srv = self.server
        future = asyncio.get_running_loop().run_in_executor(srv.executor(), self._work, data)
        srv.jobs.add(future)
        future.add_done_callback(self._done)

    def _work(self, data: bytes) -> bytes:
        """One read through the session, under the connection's handler context (a worker thread runs
        it for a blocking engine)."""
        session = self.session
        assert session is not None
        token = None if self.context is None else current_context.set(self.context)
        try:
            return session.feed(data)
        finally:
            if token is not None:
                current_context.reset(token)

    def _done(self, future: asyncio.Future[bytes]) -> None:
        self.server.jobs.discard(future)
        self.busy = False
        assert self.mirror is not None and self.session is not None
        self.mirror.commit()
        transport = self.transport
        if not self.accepted or transport is None or transport.is_closing() or future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self._failed(exc)
            return
        session = self.session
        self._deliver(session, future.result())
        if session.closing:
            return
        if self.pending:
            data = b"".join(self.pending)
            if engine_free(session, data):  # what arrived meanwhile needs no worker either
                self.pending.clear()
                self._answer_here(session, data)
                if session.closing:
                    return
            else:
                self._submit()
                return
        if not self.write_paused:
            transport.resume_reading()


class Server(Service):
    """A cache server: listeners, connections, one store, periodic expiry sweep.

    ``store`` is any engine (default: the memory engine sized by ``settings``);
    ``handlers`` wrap it (:mod:`scatterhoard.engines.handlers`). A blocking
    engine runs in up to ``workers`` threads.
    """

    def __init__(self, settings: Settings, store: Store | None = None, handlers: Sequence[Handler] = (),
                 workers: int = DEFAULT_WORKERS) -> None:
        self.settings = settings
        engine: Store = store if store is not None else MemoryStore(
            settings.memory_mb * 1024 * 1024, settings.item_size_max)
        self.store: Store = HandledStore(engine, handlers) if handlers else engine
        #: sessions answer engine errors in their protocol (not needed by the memory engine alone)
        self.guarded = not _plain_memory(self.store)
        self.blocking = self.store.blocking
        self.workers = max(1, workers)
        self._executor: ThreadPoolExecutor | None = None
        self.jobs: set[asyncio.Future[bytes]] = set()
        self._sweeping = False
        self.stats = ServerStats()
        self.connections: set[Connection] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._unix_paths: list[str] = []
        if isinstance(engine, MemoryStore):
            engine.trim_hook = _glibc_memory_hooks()
        #: first byte of a connection -> its session; anything else speaks text/meta
        self.session_factories: dict[int, SessionFactory] = {
            0x80: lambda srv: BinarySession(srv.store, srv.stats, srv.settings),
            0x00: lambda srv: DistcacheSession(srv.store, srv.stats, srv.settings),
            0x2A: lambda srv: RespSession(srv.store, srv.stats, srv.settings),
        }

    def executor(self) -> ThreadPoolExecutor:
        """The worker threads of a blocking engine (created on first use)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="hoard-engine")
        return self._executor

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
        bind = getattr(self.store, "bind_loop", None)
        if bind is not None:
            bind(loop)
        for text in self.settings.listen:
            addr = parse_address(text, default_port=self.settings.port)
            srv = await self._listen(loop, addr)
            self._servers.append(srv)
            bound.append(str(addr))
        self._schedule_sweep()
        return bound

    async def _listen(self, loop: asyncio.AbstractEventLoop, addr: Address) -> asyncio.AbstractServer:
        conn_class = EngineConnection if self.blocking or self.guarded else Connection

        def factory() -> asyncio.BaseProtocol:
            # Connection is a duck-typed protocol (a compiled class cannot derive from asyncio's)
            return cast(asyncio.BaseProtocol, conn_class(self))

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
        if sweep is not None and self.blocking:
            if not self._sweeping:  # one sweep at a time, off the loop
                self._sweeping = True
                future = asyncio.get_running_loop().run_in_executor(self.executor(), sweep)
                future.add_done_callback(self._swept)
        elif sweep is not None:
            try:
                sweep()
            except Exception:
                log.exception("expiry sweep failed")
        self._schedule_sweep()

    def _swept(self, future: asyncio.Future[object]) -> None:
        self._sweeping = False
        if not future.cancelled() and future.exception() is not None:
            log.error("expiry sweep failed", exc_info=future.exception())

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
        if self.jobs:  # let running engine calls finish and their replies go out
            await asyncio.wait(list(self.jobs), timeout=JOB_GRACE)
            await asyncio.sleep(0)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()  # flushes pending replies first
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2.0)
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)
        self.store.close()


def _plain_memory(store: Store) -> bool:
    """The memory engine (maybe with dc_server's session limit): it never raises EngineError."""
    inner = getattr(store, "inner", None) if isinstance(store, SessionLimitStore) else store
    return isinstance(inner, MemoryStore)


def install_event_loop_policy() -> None:
    """Use uvloop when it is installed (it is a dependency on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
