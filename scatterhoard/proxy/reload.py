"""Configuration reload without a restart (SIGUSR1, ``hoard proxy reload``).

The file the proxy was started with is read and validated again (the same
checks as ``-t``); a configuration that does not parse, or whose new listen
addresses cannot be bound, is rejected with one logged line and the running
configuration keeps serving, untouched.  Otherwise, pool by pool (pools are
matched by name):

* unchanged pools keep everything: listener, server connections, ejections;
* a changed pool gets a new router and new server connections; its connected
  clients stay connected and their *new* requests are routed by the new pool,
  while requests already forwarded finish on the old connections, which are
  closed as soon as they have nothing in flight (counters carry over, per
  pool and per server name);
* a new pool starts listening; a removed pool's listener closes, and its
  clients get the replies to what they already asked, then are disconnected
  (unless another pool now listens on their address -- a renamed pool: they
  move to it, like the clients of a changed pool);
* a listen address that stays (even under another pool name) keeps its socket,
  so no connection attempt is refused during a reload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from ..errors import ConfigError, HoardError
from .config import PoolConfig, ProxyConfig, check_resolvable, load_config_text
from .pool import Pool

if TYPE_CHECKING:
    from .app import Listener, Proxy

log = logging.getLogger("scatterhoard.proxy")

DRAIN_INTERVAL = 0.1  # seconds between looks at the connections of replaced pools


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def validate(path: str) -> ProxyConfig:
    """Read ``path`` and check it as ``-t`` and the start do (raises :class:`ConfigError`)."""
    return validate_text(path)[0]


def validate_text(path: str) -> tuple[ProxyConfig, str]:
    """:func:`validate`, and the text that was validated."""
    config, text = load_config_text(path)
    check_resolvable(config)
    return config, text


def reload_from_file(proxy: Proxy) -> bool:
    """Validate the configuration file again and, if it is good, apply it (asynchronously)."""
    path = proxy.config.path
    try:
        config = validate(path)
    except ConfigError as exc:
        log.error("reload rejected, the running configuration stays: %s", one_line(exc))
        return False
    loop = asyncio.get_running_loop()
    task = loop.create_task(apply(proxy, config))
    task.add_done_callback(_report)
    return True


def _report(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("reload failed: %s", one_line(exc) if exc else "?")


def _comparable(pool: PoolConfig) -> PoolConfig:
    """The pool without what only says where it was written in the file."""
    return dataclasses.replace(pool, line=0, listen_line=0, server_lines=())


def _move_sessions(old: Pool, new: Pool) -> None:
    """Clients of ``old`` send their next requests through ``new``'s routing and servers."""
    if bool(old.config.redis) != bool(new.config.redis):
        for session in list(old.sessions):  # the pool changed protocol: answer, then disconnect
            session.eof_received()  # type: ignore[attr-defined]
        return
    for session in list(old.sessions):
        session.rebind(new)  # type: ignore[attr-defined]
        new.sessions.add(session)
        if old.stats is not new.stats:  # a renamed pool: the gauge follows its clients
            old.stats.client_connections -= 1
            new.stats.client_connections += 1
    old.sessions.clear()


def _adopt_counters(old: Pool, new: Pool) -> None:
    new.stats = old.stats
    by_name = {s.name: s for s in old.servers}
    for server in new.servers:
        previous = by_name.get(server.name)
        if previous is not None:
            server.stats = previous.stats


async def apply(proxy: Proxy, config: ProxyConfig) -> bool:
    """Switch ``proxy`` to ``config`` (already validated); False if a new listener cannot be bound."""
    from .app import listen_key

    ctx = proxy.ctx
    assert ctx is not None
    # 1. every listener the new configuration needs and does not have yet, or nothing changes
    fresh: dict[str, Listener] = {}
    skipped: set[str] = set()
    try:
        for pool_config in config.pools:
            key = listen_key(pool_config.listen)
            if key in proxy.listeners or key in fresh:
                continue
            if (pool_config.listen.is_unix and not proxy.options.bind_new_unix
                    and key not in proxy.options.inherited):
                skipped.add(pool_config.name)  # --workers: worker 0 serves unix listeners added by a reload
                continue
            fresh[key] = proxy.bind_pool(pool_config)
    except HoardError as exc:
        for listener in fresh.values():
            proxy.close_listener(listener)
        log.error("reload rejected, the running configuration stays: %s", one_line(exc))
        return False
    # 2. pools: kept, replaced or new
    old_pools = {p.name: p for p in proxy.pools}
    added, changed, kept = [], [], []
    proxy.pools = []
    proxy.listeners.update(fresh)
    wanted: set[str] = set()
    for pool_config in config.pools:
        if pool_config.name in skipped:
            continue
        key = listen_key(pool_config.listen)
        wanted.add(key)
        old = old_pools.pop(pool_config.name, None)
        if old is not None and _comparable(old.config) == _comparable(pool_config):
            pool = old
            kept.append(pool.name)
        else:
            pool = Pool(pool_config, ctx)
            if old is not None:
                _adopt_counters(old, pool)
                _move_sessions(old, pool)
                proxy.retired.append(old)
                changed.append(pool.name)
            else:
                added.append(pool.name)
        await proxy.serve_pool(pool, proxy.listeners[key])
    # 3. removed pools: their clients move to the pool now on their address (a renamed pool), or
    #    get what they asked for and are disconnected
    for old in old_pools.values():
        heir = proxy.listeners.get(listen_key(old.config.listen))
        if heir is not None and heir.pool is not None and heir.key in wanted:
            _move_sessions(old, heir.pool)
        for session in list(old.sessions):
            session.eof_received()  # type: ignore[attr-defined]
        proxy.retired.append(old)
    # 4. listeners nobody uses any more
    for key in [k for k in proxy.listeners if k not in wanted]:
        proxy.close_listener(proxy.listeners.pop(key))
        ctx.curr_connections -= 1
    proxy.config = config
    if proxy.retired:
        ctx.loop.call_later(DRAIN_INTERVAL, drain_retired, proxy)
    log.log(25, "configuration reloaded from %s: %d pool(s) unchanged, added %s, changed %s, removed %s",
            config.path, len(kept), _names(added), _names(changed), _names(list(old_pools)))
    return True


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def drain_retired(proxy: Proxy) -> None:
    """Close the idle connections of replaced pools; look again later while some are busy."""
    busy = []
    for pool in proxy.retired:
        left = len(pool.sessions)  # clients of a removed pool, finishing
        for server in pool.servers:
            if server.probe_handle is not None:
                server.probe_handle.cancel()
                server.probe_handle = None
            inflight = sum(1 for conn in server.all_conns() if conn.expect or conn.pending)
            if inflight:
                left += inflight
            else:
                server.close()  # no request in flight: its connections (and any probe) go
        if left:
            busy.append(pool)
    proxy.retired = busy
    if busy and proxy.ctx is not None:
        proxy.ctx.loop.call_later(DRAIN_INTERVAL, drain_retired, proxy)
