"""Server-wide counters and the ``stats`` family of replies (memcached field names)."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from typing import Final

from .. import __version__
from ..store import Store

#: What ``version`` reports: a memcached 1.6 version number clients accept, then ours.
VERSION: Final = f"1.6.18-scatterhoard-{__version__}"


@dataclass
class Settings:
    """Server settings, as ``stats settings`` shows them."""

    listen: list[str] = field(default_factory=lambda: ["127.0.0.1:11211"])
    port: int = 11211
    memory_mb: int = 64
    item_size_max: int = 1024 * 1024
    maxconns: int = 1024
    verbosity: int = 0
    backlog: int = 1024


class ServerStats:
    """Counters shared by every connection of one server process.

    Compiled with mypyc: sessions update these on every request. ``resp_*``
    are RESP figures without a memcached counterpart (INFO's
    total_commands_processed and total_error_replies).
    """

    #: Every counter, in ``stats`` order; what ``stats reset`` zeroes (but ``curr_connections``).
    COUNTERS: Final = (
        "curr_connections", "total_connections", "rejected_connections", "cmd_get", "cmd_set",
        "cmd_flush", "cmd_touch", "cmd_meta", "get_hits", "get_misses", "delete_hits", "delete_misses",
        "incr_hits", "incr_misses", "decr_hits", "decr_misses", "cas_hits", "cas_misses", "cas_badval",
        "touch_hits", "touch_misses", "bytes_read", "bytes_written", "protocol_errors", "resp_commands",
        "resp_errors",
    )

    def __init__(self) -> None:
        self.started = time.time()
        #: how many times ``stats reset`` ran (lets a private copy tell that it happened)
        self.resets = 0
        self.curr_connections = 0
        self.total_connections = 0
        self.rejected_connections = 0
        self.cmd_get = 0
        self.cmd_set = 0
        self.cmd_flush = 0
        self.cmd_touch = 0
        self.cmd_meta = 0
        self.get_hits = 0
        self.get_misses = 0
        self.delete_hits = 0
        self.delete_misses = 0
        self.incr_hits = 0
        self.incr_misses = 0
        self.decr_hits = 0
        self.decr_misses = 0
        self.cas_hits = 0
        self.cas_misses = 0
        self.cas_badval = 0
        self.touch_hits = 0
        self.touch_misses = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.protocol_errors = 0
        self.resp_commands = 0
        self.resp_errors = 0

    def reset(self) -> None:
        """``stats reset``: zero every counter but ``curr_connections``."""
        for name in self.COUNTERS:
            if name != "curr_connections":
                setattr(self, name, 0)
        self.resets += 1

    def snapshot(self) -> list[int]:
        """The counters' values, in :data:`COUNTERS` order."""
        return [getattr(self, name) for name in self.COUNTERS]

    def load(self, values: list[int]) -> None:
        """Set the counters from a :meth:`snapshot`."""
        for name, value in zip(self.COUNTERS, values, strict=True):
            setattr(self, name, value)

    def add_since(self, values: list[int], base: list[int]) -> None:
        """Add what changed from ``base`` to ``values`` (two snapshots of another copy)."""
        for name, now, before in zip(self.COUNTERS, values, base, strict=True):
            if now != before:
                setattr(self, name, getattr(self, name) + now - before)

    def general(self, store: Store, settings: Settings) -> list[tuple[str, object]]:
        now = time.time()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        s = store.stats()
        rows: list[tuple[str, object]] = [
            ("pid", os.getpid()),
            ("uptime", int(now - self.started)),
            ("time", int(now)),
            ("version", VERSION),
            ("libevent", "asyncio"),
            ("pointer_size", 64),
            ("rusage_user", f"{ru.ru_utime:.6f}"),
            ("rusage_system", f"{ru.ru_stime:.6f}"),
            ("max_connections", settings.maxconns),
            ("curr_connections", self.curr_connections),
            ("total_connections", self.total_connections),
            ("rejected_connections", self.rejected_connections),
            ("connection_structures", self.curr_connections),
            ("cmd_get", self.cmd_get),
            ("cmd_set", self.cmd_set),
            ("cmd_flush", self.cmd_flush),
            ("cmd_touch", self.cmd_touch),
            ("cmd_meta", self.cmd_meta),
            ("get_hits", self.get_hits),
            ("get_misses", self.get_misses),
            ("get_expired", s.get("get_expired", 0)),
            ("get_flushed", s.get("get_flushed", 0)),
            ("delete_misses", self.delete_misses),
            ("delete_hits", self.delete_hits),
            ("incr_misses", self.incr_misses),
            ("incr_hits", self.incr_hits),
            ("decr_misses", self.decr_misses),
            ("decr_hits", self.decr_hits),
            ("cas_misses", self.cas_misses),
            ("cas_hits", self.cas_hits),
            ("cas_badval", self.cas_badval),
            ("touch_hits", self.touch_hits),
            ("touch_misses", self.touch_misses),
            ("auth_cmds", 0),
            ("auth_errors", 0),
            ("bytes_read", self.bytes_read),
            ("bytes_written", self.bytes_written),
            ("limit_maxbytes", s.get("limit_maxbytes", settings.memory_mb * 1024 * 1024)),
            ("accepting_conns", 1),
            ("threads", 1),
            ("conn_yields", 0),
            ("expired_unfetched", s.get("expired_unfetched", 0)),
            ("evicted_unfetched", s.get("evicted_unfetched", 0)),
            ("evicted_active", 0),
            ("evictions", s.get("evictions", 0)),
            ("reclaimed", s.get("reclaimed", 0)),
            ("curr_items", s.get("curr_items", 0)),
            ("total_items", s.get("total_items", 0)),
            ("bytes", s.get("bytes", 0)),
        ]
        known = {name for name, _ in rows}
        rows.extend((k, v) for k, v in s.items() if k not in known)
        return rows

    @staticmethod
    def settings(settings: Settings, store: Store) -> list[tuple[str, object]]:
        return [
            ("maxbytes", settings.memory_mb * 1024 * 1024),
            ("maxconns", settings.maxconns),
            ("tcpport", settings.port),
            ("udpport", 0),
            ("inter", ",".join(settings.listen)),
            ("verbosity", settings.verbosity),
            ("oldest", 0),
            ("evictions", "on"),
            ("domain_socket", "NULL"),
            ("umask", 700),
            ("growth_factor", "1.25"),
            ("chunk_size", 48),
            ("num_threads", 1),
            ("stat_key_prefix", ":"),
            ("detail_enabled", "no"),
            ("reqs_per_event", 20),
            ("cas_enabled", "yes"),
            ("tcp_backlog", settings.backlog),
            ("binding_protocol", "auto-negotiate"),
            ("auth_enabled_sasl", "no"),
            ("item_size_max", store.max_item_size),
            ("engine", type(store).__name__),
        ]

    @staticmethod
    def items(store: Store) -> list[tuple[str, object]]:
        return [(f"items:1:{k}", v) for k, v in store.items_snapshot().items()]

    @staticmethod
    def slabs(store: Store) -> list[tuple[str, object]]:
        s = store.stats()
        used = int(s.get("bytes", 0))
        items = int(s.get("curr_items", 0))
        rows: list[tuple[str, object]] = []
        if items:
            rows += [
                ("1:chunk_size", store.max_item_size),
                ("1:used_chunks", items),
                ("1:mem_requested", used),
            ]
        rows += [("active_slabs", 1 if items else 0), ("total_malloced", used)]
        return rows


def stats_group(stats: ServerStats, group: bytes, store: Store, settings: Settings) -> list[tuple[str, object]] | None:
    """The rows of ``stats <group>`` (``reset`` resets and returns []); None for an unknown group."""
    if group == b"":
        return stats.general(store, settings)
    if group == b"settings":
        return stats.settings(settings, store)
    if group == b"items":
        return stats.items(store)
    if group == b"slabs":
        return stats.slabs(store)
    if group == b"sizes":
        return [("sizes_status", "disabled")]
    if group == b"conns":
        return []
    if group == b"reset":
        stats.reset()
        return []
    return None
