"""A pool at run time: its router, servers, counters, ejection and return of servers."""

from __future__ import annotations

import logging
import time

from .backend import BackendServer, Context, Flushable, dialect_for, start_probe
from .config import PoolConfig
from .stats import PoolCounters, PoolSnapshot

log = logging.getLogger("scatterhoard.proxy")


class Pool:
    """One configured pool: routes keys to its :class:`BackendServer` objects."""

    def __init__(self, config: PoolConfig, ctx: Context) -> None:
        self.config = config
        self.name = config.name
        self.ctx = ctx
        self.router = config.router()
        self.dialect = dialect_for(config)  # one per pool, shared by its servers
        self.servers = [BackendServer(self, i, spec, self.dialect) for i, spec in enumerate(config.servers)]
        self.stats = PoolCounters()
        self.timeout: float | None = config.timeout / 1000 if config.timeout > 0 else None
        self.order = self.router.pool_order  # twemproxy's server order, for stats
        self.sessions: set[Flushable] = set()  # client connections, closed at shutdown

    # -- ejection ------------------------------------------------------------------------------
    def eject(self, server: BackendServer) -> None:
        """Take ``server`` out of the ring for server_retry_timeout, then probe it."""
        cfg = self.config
        server.ejected = True
        server.failures = 0
        server.stats.server_ejected_at = int(time.time() * 1_000_000)
        self.stats.server_ejects += 1
        self._update_ring()
        log.warning("pool %s: ejecting server %s for %d ms after %d consecutive failures (%d of %d live)",
                    self.name, server.name, cfg.server_retry_timeout, cfg.server_failure_limit,
                    len(self.router.live), len(self.servers))
        self._schedule_probe(server)

    def _schedule_probe(self, server: BackendServer) -> None:
        if server.probe_handle is not None:
            server.probe_handle.cancel()
        server.probe_handle = self.ctx.loop.call_later(self.config.server_retry_timeout / 1000,
                                                       start_probe, server)

    def probe_done(self, server: BackendServer, ok: bool) -> None:
        """The health probe of an ejected server answered (``ok``) or failed."""
        if not server.ejected:
            return
        if ok:
            server.ejected = False
            server.failures = 0
            self._update_ring()
            log.warning("pool %s: server %s answered its health probe; back in the ring (%d of %d live)",
                        self.name, server.name, len(self.router.live), len(self.servers))
        else:
            log.info("pool %s: server %s failed its health probe; retrying in %d ms", self.name,
                     server.name, self.config.server_retry_timeout)
            self._schedule_probe(server)

    def _update_ring(self) -> None:
        self.router.set_live([s.index for s in self.servers if not s.ejected])

    # -- life cycle -----------------------------------------------------------------------------
    def preconnect(self) -> None:
        for server in self.servers:
            if not server.conns:
                server.pick()

    def close(self) -> None:
        for session in list(self.sessions):
            session.close()
        for server in self.servers:
            server.close()

    def snapshot(self) -> PoolSnapshot:
        """This pool's metrics for the stats port (servers in twemproxy's order)."""
        servers = []
        for i in self.order:
            server = self.servers[i]
            servers.append((server.name, server.stats.values(*server.queues())))
        return (self.name, self.stats.values(), servers)
