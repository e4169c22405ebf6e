"""``hoard proxy`` at run time: listeners, pools, the stats port, signals (SIGUSR1: :mod:`.reload`).

Listeners are keyed by address and point at the pool their new clients join,
so a reload can hand an address to another pool without closing its socket.

Listening sockets (every pool's ``listen:`` and the stats port) are bound
before the event loop starts -- before ``-d`` daemonizes, so a port in use is
reported on the terminal and a daemonized proxy accepts connections as soon
as its parent exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from ..errors import HoardError
from ..service import Service, unlink_stale_socket
from .backend import Context
from .binary_session import FirstByte
from .config import Listen, PoolConfig, ProxyConfig
from .pool import Pool
from .redis_session import RedisSession
from .session import ClientConnection
from .stats import PoolSnapshot, render

log = logging.getLogger("scatterhoard.proxy")


@dataclass
class ProxyOptions:
    """The command-line settings the proxy itself uses (nutcracker's defaults)."""

    stats_port: int = 22222
    stats_addr: str = "0.0.0.0"
    stats_interval: int = 30_000  # ms
    mbuf_size: int = 16384
    source: str = field(default_factory=socket.gethostname)
    # --workers: SO_REUSEPORT on every TCP listener; listeners inherited from the parent (by
    # listen_key); whether unix listeners added by a reload are bound here; a hook run at
    # every aggregation (a worker reports its counters to the parent)
    reuseport: bool = False
    inherited: dict[str, socket.socket] = field(default_factory=dict)
    bind_new_unix: bool = True
    on_aggregate: Callable[[Proxy], None] | None = None


def bind_listener(listen: Listen, backlog: int, reuseport: bool = False, listening: bool = True) -> socket.socket:
    """A listening socket for a pool's ``listen:`` (unix sockets get their permissions);
    ``listening=False``: bound only, the address checked and held (a --workers parent's)."""
    if listen.is_unix:
        unlink_stale_socket(listen.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(listen.path)
            if listen.perm is not None:
                os.chmod(listen.path, listen.perm)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
    else:
        family, kind, proto, _, addr = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport and hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
            if listening:
                sock.listen(backlog)
        except OSError:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


def bind_stats(opts: ProxyOptions) -> socket.socket:
    """The stats port's listening socket (-s/-a)."""
    try:
        return bind_listener(Listen(f"{opts.stats_addr}:{opts.stats_port}", host=opts.stats_addr,
                                    port=opts.stats_port), 512)
    except (OSError, IndexError) as exc:
        raise HoardError(f"cannot listen on stats address {opts.stats_addr}:{opts.stats_port}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None


def pool_order(name: str) -> tuple[int, bytes]:
    """Pools in nutcracker's stats order: by name length, then name."""
    return len(name.encode()), name.encode()


def listen_key(listen: Listen) -> str:
    """What identifies a listening address across reloads (the path, or host:port)."""
    return listen.path if listen.is_unix else f"{listen.host}:{listen.port}"


class StatsConnection(asyncio.Protocol):
    """A stats-port connection: one JSON document, then close."""

    def __init__(self, document: Callable[[], bytes]) -> None:
        self.document = document

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.WriteTransport, transport)
        tr.write(self.document())
        tr.close()

    def data_received(self, data: bytes) -> None:
        pass


@dataclass(eq=False)
class Listener:
    """A pool's listening socket; ``pool`` is the pool its new clients join (reload may change it)."""

    key: str
    listen: Listen
    sock: socket.socket
    owned: bool = True  # bound here (not inherited from a --workers parent): unlink a unix path at exit
    pool: Pool | None = None
    server: asyncio.AbstractServer | None = None

    def session(self) -> asyncio.BaseProtocol:
        """A new client's protocol object (duck-typed: the sessions are compiled classes)."""
        assert self.pool is not None
        conn: ClientConnection = RedisSession(self.pool) if self.pool.config.redis else FirstByte(self.pool)
        return cast(asyncio.BaseProtocol, conn)


class Proxy(Service):
    """Every pool of a configuration, served from one event loop."""

    def __init__(self, config: ProxyConfig, options: ProxyOptions | None = None) -> None:
        self.config = config
        self.options = options or ProxyOptions()
        self.listeners: dict[str, Listener] = {}
        self.stats_socket: socket.socket | None = None
        self.pools: list[Pool] = []
        self.retired: list[Pool] = []  # pools replaced or removed by a reload, draining
        self.ctx: Context | None = None
        self.start_time = time.time()
        self._stats_server: asyncio.AbstractServer | None = None
        self._snapshot: list[PoolSnapshot] = []
        self._aggregator: asyncio.TimerHandle | None = None
        self.signal_handlers: dict[int, Callable[[], None]] = {}

    # -- sockets ---------------------------------------------------------------------------------
    def bind_pool(self, pool: PoolConfig) -> Listener:
        """The listener for ``pool.listen``: inherited from a --workers parent, or bound now."""
        opts = self.options
        key = listen_key(pool.listen)
        inherited = opts.inherited.get(key)
        if inherited is not None:
            return Listener(key, pool.listen, inherited, owned=False)
        try:
            sock = bind_listener(pool.listen, pool.backlog, pool.reuseport or opts.reuseport)
        except OSError as exc:
            raise HoardError(f"pool '{pool.name}': cannot listen on {pool.listen}: "
                             f"{exc.strerror or exc}") from None
        return Listener(key, pool.listen, sock)

    def bind(self) -> None:
        """Bind every listener and the stats port (call before daemonizing)."""
        try:
            for pool in self.config.pools:
                self.listeners[listen_key(pool.listen)] = self.bind_pool(pool)
            opts = self.options
            if opts.stats_port:
                self.stats_socket = bind_stats(opts)
        except BaseException:
            self.close_sockets()
            raise

    def close_listener(self, listener: Listener) -> None:
        if listener.server is not None:
            listener.server.close()
        listener.sock.close()
        if listener.listen.is_unix and listener.owned:
            with contextlib.suppress(OSError):
                os.unlink(listener.listen.path)

    def close_sockets(self) -> None:
        for listener in self.listeners.values():
            self.close_listener(listener)
        self.listeners = {}
        if self.stats_socket is not None:
            self.stats_socket.close()
            self.stats_socket = None

    # -- running ---------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.listeners:
            self.bind()
        self.start_time = time.time()
        self.ctx = Context(loop, self.start_time)
        for pool_config in self.config.pools:
            listener = self.listeners[listen_key(pool_config.listen)]
            await self.serve_pool(Pool(pool_config, self.ctx), listener)
        if self.stats_socket is not None:
            self._stats_server = await loop.create_server(lambda: StatsConnection(self.stats_document),
                                                          sock=self.stats_socket)
        self._aggregate()
        log.log(25, "hoard proxy serving %d pool(s): %s; stats on %s", len(self.pools),
                ", ".join(f"{p.name}@{p.config.listen}" for p in self.pools),
                f"{self.options.stats_addr}:{self.options.stats_port}" if self.stats_socket else "(none)")

    async def serve_pool(self, pool: Pool, listener: Listener) -> None:
        """Start accepting ``pool``'s clients on ``listener`` (already serving: just switch pools)."""
        listener.pool = pool
        self.pools.append(pool)
        if listener.server is None:
            loop = asyncio.get_running_loop()
            backlog = pool.config.backlog
            if listener.listen.is_unix:
                listener.server = await loop.create_unix_server(listener.session, sock=listener.sock,
                                                                backlog=backlog)
            else:
                listener.server = await loop.create_server(listener.session, sock=listener.sock, backlog=backlog)
            ctx = pool.ctx
            ctx.total_connections += 1  # nutcracker counts its listening connections
            ctx.curr_connections += 1
        if pool.config.preconnect:
            pool.preconnect()

    def reload(self) -> bool:
        """SIGUSR1: re-read the configuration file and apply it (see :mod:`.reload`)."""
        from .reload import reload_from_file

        return reload_from_file(self)

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Start, run until :meth:`stop` (SIGTERM/SIGINT), then shut down."""
        await self.start()
        await self.run_until_stopped(ready, {signal.SIGUSR1: self._reload, **self.signal_handlers})

    def _reload(self) -> None:
        self.reload()

    async def close(self) -> None:
        if self._aggregator is not None:
            self._aggregator.cancel()
        servers = [lst.server for lst in self.listeners.values() if lst.server is not None]
        if self._stats_server is not None:
            servers.append(self._stats_server)
        for srv in servers:
            srv.close()
        for pool in self.pools + self.retired:
            pool.close()
        for srv in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1.0)
        for listener in self.listeners.values():
            if listener.listen.is_unix and listener.owned:
                with contextlib.suppress(OSError):
                    os.unlink(listener.listen.path)
        log.log(25, "hoard proxy stopped")

    # -- stats ------------------------------------------------------------------------------------
    def snapshot(self) -> list[PoolSnapshot]:
        return [p.snapshot() for p in sorted(self.pools, key=lambda p: pool_order(p.config.name))]

    def _aggregate(self) -> None:
        self._snapshot = self.snapshot()
        if self.options.on_aggregate is not None:
            self.options.on_aggregate(self)
        interval = self.options.stats_interval
        if interval > 0 and self.ctx is not None:
            self._aggregator = self.ctx.loop.call_later(interval / 1000, self._aggregate)

    def stats_document(self) -> bytes:
        """What the stats port sends: live header, pool and server metrics as of the last aggregation."""
        if self.options.stats_interval <= 0:
            self._snapshot = self.snapshot()
        ctx = self.ctx
        now = time.time()
        return render(self._snapshot, uptime=int(now - self.start_time), timestamp=int(now),
                      total_connections=ctx.total_connections if ctx else 0,
                      curr_connections=ctx.curr_connections if ctx else 0, source=self.options.source)
