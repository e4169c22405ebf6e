"""The ``tiered`` engine: the memory engine in front of another engine.

``hoard server --engine tiered --engine-opt back=sqlite --engine-opt path=/x.db --engine-opt front_mb=16``

Reads go to the front first and, on a miss, to the back engine; what the
back returns is copied into the front (read-through). Writes go to the back
engine first, which decides (CAS, add/replace, sizes) and numbers them; a
stored value is then copied into the front with the back's cas
(write-through), and anything else that changed the item (append, incr,
touch to the past, delete) drops the front copy. The back engine is the
truth: a restart starts with an empty front.

Options: ``back`` (engine name or dotted path, default ``sqlite``),
``front_mb`` (the front's budget, default the server's ``-m``); every other
option goes to the back engine.
"""

from __future__ import annotations

import threading
import time

from ..errors import ConfigError
from ..store.base import EngineConfig, Item, Mode, Status, Store
from ..store.memory import MemoryStore

_COPIED = (Mode.SET, Mode.ADD, Mode.REPLACE, Mode.CAS)


def _copy(item: Item) -> Item:
    new = Item(item.value, item.flags, item.exptime, item.cas, item.atime)
    new.fetched, new.stale, new.win = item.fetched, item.stale, item.win
    return new


class TieredStore(Store):
    """Memory front (its own LRU budget) over any back engine."""

    def __init__(self, front: MemoryStore, back: Store) -> None:
        self.front = front
        self.back = back
        self.blocking = back.blocking
        self.capabilities = back.capabilities
        self._lock = threading.RLock()
        self.front_hits = 0
        self.front_misses = 0

    @classmethod
    def from_config(cls, config: EngineConfig) -> TieredStore:
        from .loader import create_engine  # the loader knows every engine

        options = dict(config.options)
        back_name = options.pop("back", "sqlite")
        front_mb = options.pop("front_mb", None)
        if front_mb is not None and not front_mb.isdigit():
            raise ConfigError(f"tiered engine: front_mb={front_mb!r}: expected a whole number of MB")
        if back_name in ("tiered", "memory"):
            raise ConfigError(f"tiered engine: back={back_name} makes no sense; use a persistent engine")
        front_bytes = int(front_mb) * 1024 * 1024 if front_mb is not None else config.memory_bytes
        back = create_engine(back_name, EngineConfig(options, config.memory_bytes, config.item_size_max))
        return cls(MemoryStore(front_bytes, config.item_size_max), back)

    @property
    def max_item_size(self) -> int:
        return self.back.max_item_size

    @max_item_size.setter
    def max_item_size(self, size: int) -> None:
        self.back.max_item_size = size
        self.front.max_item_size = size

    def bind_loop(self, loop: object) -> None:
        bind = getattr(self.back, "bind_loop", None)
        if bind is not None:
            bind(loop)

    # -- the Store interface ------------------------------------------------------------------
    def get(self, key: bytes, touch: float | None = None, bump: bool = True) -> Item | None:
        with self._lock:
            if touch is None:
                item = self.front.get(key, None, bump)
                if item is not None:
                    self.front_hits += 1
                    return item
                self.front_misses += 1
            item = self.back.get(key, touch, bump)
            if item is None:
                self.front.delete(key)
                return None
            copy = _copy(item)
            self.front.insert(key, copy)
            return copy  # the object the front keeps: meta's marks on it stay with it

    def store(self, mode: Mode, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0,
              cas: int = 0, invalidate: bool = False) -> tuple[Status, int]:
        with self._lock:
            status, new_cas = self.back.store(mode, key, value, flags, exptime, cas, invalidate)
            if status == Status.STORED and mode in _COPIED and exptime >= 0:
                self.front.insert(key, Item(value, flags, exptime, new_cas, time.time()))
            elif status == Status.STORED or status == Status.TOO_LARGE:
                self.front.delete(key)
            return status, new_cas

    def delete(self, key: bytes, cas: int = 0) -> Status:
        with self._lock:
            status = self.back.delete(key, cas)
            if status != Status.EXISTS:
                self.front.delete(key)
            return status

    def mark_win(self, key: bytes, item: Item) -> None:
        with self._lock:
            self.back.mark_win(key, item)  # the front's copy carries the back's cas

    def mark_stale(self, key: bytes, cas: int = 0, exptime: float | None = None) -> Status:
        with self._lock:
            status = self.back.mark_stale(key, cas, exptime)
            self.front.delete(key)
            return status

    def arith(self, key: bytes, delta: int, incr: bool = True, initial: int | None = None,
              exptime: float = 0.0, cas: int = 0) -> tuple[Status, int, int]:
        with self._lock:
            result = self.back.arith(key, delta, incr, initial, exptime, cas)
            if result[0] == Status.STORED:
                self.front.delete(key)
            return result

    def touch(self, key: bytes, exptime: float) -> bool:
        with self._lock:
            found = self.back.touch(key, exptime)
            if found and exptime >= 0:
                self.front.get(key, touch=exptime, bump=False)
            else:
                self.front.delete(key)
            return found

    def flush_all(self, delay: float = 0.0) -> None:
        with self._lock:
            self.back.flush_all(delay)
            self.front.flush_all(delay)

    def sweep(self, budget: int = 10000) -> int:
        with self._lock:
            self.front.sweep(budget)
        sweep = getattr(self.back, "sweep", None)
        return int(sweep(budget)) if sweep is not None else 0

    def stats(self) -> dict[str, int | float | str]:
        with self._lock:
            s = dict(self.back.stats())
            front = self.front.stats()
            s.update({"front_items": front["curr_items"], "front_bytes": front["bytes"],
                      "front_limit_maxbytes": front["limit_maxbytes"], "front_evictions": front["evictions"],
                      "front_hits": self.front_hits, "front_misses": self.front_misses})
            return s

    def close(self) -> None:
        self.back.close()
