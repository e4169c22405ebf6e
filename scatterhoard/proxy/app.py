"""``hoard proxy`` at run time: listeners, pools, the stats port, signals.

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

from ..errors import ConfigError, HoardError
from ..service import Service, unlink_stale_socket
from .backend import Context
from .config import Listen, PoolConfig, ProxyConfig
from .pool import Pool
from .session import ClientSession
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


def check_supported(config: ProxyConfig) -> None:
    """Refuse, at start, what this milestone does not serve yet."""
    for pool in config.pools:
        if pool.redis:
            raise ConfigError(f"{config.path}:{pool.line}: pool '{pool.name}': redis pools are not "
                              "supported yet (redis: true); only memcached pools can be served")


def bind_listener(listen: Listen, backlog: int, reuseport: bool = False) -> socket.socket:
    """A listening socket for a pool's ``listen:`` (unix sockets get their permissions)."""
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
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


def _pool_sort_key(pool: PoolConfig) -> tuple[int, bytes]:
    raw = pool.name.encode()
    return (len(raw), raw)


class StatsConnection(asyncio.Protocol):
    """A stats-port connection: one JSON document, then close."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.WriteTransport, transport)
        tr.write(self.proxy.stats_document())
        tr.close()

    def data_received(self, data: bytes) -> None:
        pass


class Proxy(Service):
    """Every pool of a configuration, served from one event loop."""

    def __init__(self, config: ProxyConfig, options: ProxyOptions | None = None) -> None:
        check_supported(config)
        self.config = config
        self.options = options or ProxyOptions()
        self.sockets: list[tuple[PoolConfig, socket.socket]] = []
        self.stats_socket: socket.socket | None = None
        self.pools: list[Pool] = []
        self.ctx: Context | None = None
        self.start_time = time.time()
        self._servers: list[asyncio.AbstractServer] = []
        self._snapshot: list[PoolSnapshot] = []
        self._aggregator: asyncio.TimerHandle | None = None
        self.signal_handlers: dict[int, Callable[[], None]] = {}

    # -- sockets ---------------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind every listener and the stats port (call before daemonizing)."""
        try:
            for pool in self.config.pools:
                try:
                    sock = bind_listener(pool.listen, pool.backlog, pool.reuseport)
                except OSError as exc:
                    raise HoardError(f"pool '{pool.name}': cannot listen on {pool.listen}: "
                                     f"{exc.strerror or exc}") from None
                self.sockets.append((pool, sock))
            opts = self.options
            try:
                self.stats_socket = bind_listener(
                    Listen(f"{opts.stats_addr}:{opts.stats_port}", host=opts.stats_addr, port=opts.stats_port),
                    512)
            except (OSError, IndexError) as exc:
                raise HoardError(f"cannot listen on stats address {opts.stats_addr}:{opts.stats_port}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
        except BaseException:
            self.close_sockets()
            raise

    def close_sockets(self) -> None:
        for pool, sock in self.sockets:
            sock.close()
            if pool.listen.is_unix:
                with contextlib.suppress(OSError):
                    os.unlink(pool.listen.path)
        self.sockets = []
        if self.stats_socket is not None:
            self.stats_socket.close()
            self.stats_socket = None

    # -- running ---------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.sockets:
            self.bind()
        self.start_time = time.time()
        ctx = self.ctx = Context(loop, self.start_time)
        for pool_config, sock in self.sockets:
            pool = Pool(pool_config, ctx)
            self.pools.append(pool)
            factory = (lambda p: lambda: ClientSession(p))(pool)
            if pool_config.listen.is_unix:
                srv = await loop.create_unix_server(factory, sock=sock, backlog=pool_config.backlog)
            else:
                srv = await loop.create_server(factory, sock=sock, backlog=pool_config.backlog)
            self._servers.append(srv)
            ctx.total_connections += 1  # nutcracker counts its listening connections
            ctx.curr_connections += 1
            if pool_config.preconnect:
                pool.preconnect()
        if self.stats_socket is not None:
            self._servers.append(await loop.create_server(lambda: StatsConnection(self), sock=self.stats_socket))
        self._aggregate()
        log.log(25, "hoard proxy serving %d pool(s): %s; stats on %s:%d", len(self.pools),
                ", ".join(f"{p.name}@{p.config.listen}" for p in self.pools), self.options.stats_addr,
                self.options.stats_port)

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Start, run until :meth:`stop` (SIGTERM/SIGINT), then shut down."""
        await self.start()
        await self.run_until_stopped(ready, {
            signal.SIGUSR1: lambda: log.warning("SIGUSR1: configuration reload is not implemented yet"),
            **self.signal_handlers,
        })

    async def close(self) -> None:
        if self._aggregator is not None:
            self._aggregator.cancel()
        for srv in self._servers:
            srv.close()
        for pool in self.pools:
            pool.close()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1.0)
        for pool_config, _sock in self.sockets:
            if pool_config.listen.is_unix:
                with contextlib.suppress(OSError):
                    os.unlink(pool_config.listen.path)
        log.log(25, "hoard proxy stopped")

    # -- stats ------------------------------------------------------------------------------------
    def _aggregate(self) -> None:
        pools = sorted(self.pools, key=lambda p: _pool_sort_key(p.config))
        self._snapshot = [p.snapshot() for p in pools]
        interval = self.options.stats_interval
        if interval > 0 and self.ctx is not None:
            self._aggregator = self.ctx.loop.call_later(interval / 1000, self._aggregate)

    def stats_document(self) -> bytes:
        """What the stats port sends: live header, pool and server metrics as of the last aggregation."""
        if self.options.stats_interval <= 0:
            self._snapshot = [p.snapshot() for p in sorted(self.pools, key=lambda p: _pool_sort_key(p.config))]
        ctx = self.ctx
        now = time.time()
        return render(self._snapshot, uptime=int(now - self.start_time), timestamp=int(now),
                      total_connections=ctx.total_connections if ctx else 0,
                      curr_connections=ctx.curr_connections if ctx else 0, source=self.options.source)
