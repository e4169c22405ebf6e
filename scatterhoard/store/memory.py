"""The memory engine: an LRU over one ordered dict, with a hard byte budget.

The order is of storage; a get does not reorder (that would cost a second
dict operation on every hit), it marks the item active. Eviction takes
the oldest item, but one marked active since it was last there is moved
back to the warm end with its mark cleared (a second chance, CLOCK-like;
memcached's segmented LRU likewise bumps fetched items lazily). So an item
fetched since the cache last cycled through it survives, as with a strict LRU.

Accounting: every item is charged ``len(key) + len(value) + ITEM_OVERHEAD``,
where ``ITEM_OVERHEAD`` estimates what CPython really spends per item (the
item object, two bytes objects' headers, the ordered-dict entry, the expiry
heap entry). An item a text get has fetched keeps the get's reply instead of
its value (:meth:`Item.text_reply`): the key and ~30 bytes more, not charged.
With that, the process RSS stays near ``budget + interpreter``; the README
states the factor measured by ``tests/test_memory.py``.

Expired items are reclaimed lazily (on access) and by :meth:`sweep`, which
the server calls periodically: an expiry wheel (one set of keys per second of
expiry) finds them without scanning the whole cache and without stale
entries.
"""

from __future__ import annotations

import abc
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from mypy_extensions import mypyc_attr

from ..errors import ConfigError
from .base import ITEM_HEADER_SIZE, EngineConfig, Item, Mode, Status, Store, plan_arith, plan_store

#: After this many bytes are evicted, :attr:`MemoryStore.trim_hook` runs (returns memory to the OS).
TRIM_AFTER_BYTES: Final = 32 * 1024 * 1024
#: Estimated CPython bytes per item beyond key and value bytes (measured with tracemalloc).
ITEM_OVERHEAD: Final = 380
_U64: Final = (1 << 64) - 1
_clock: Final = time.time  # Final: a static when compiled, not a module attribute lookup per call


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled with mypyc; engines and tests extend it
class MemoryStore(Store):
    """In-process LRU cache engine (the default)."""

    def __init__(self, limit_bytes: int = 64 * 1024 * 1024, max_item_size: int = 1024 * 1024) -> None:
        self.limit = limit_bytes
        self.max_item_size = max_item_size
        self._data: OrderedDict[bytes, Item] = OrderedDict()
        self._wheel: dict[int, set[bytes]] = {}
        self._swept_to = int(_clock())
        self._cas = 0
        self._flush_at = 0.0
        self.used = 0
        self.total_items = 0
        self.evictions = 0
        self.evicted_unfetched = 0
        self.reclaimed = 0
        self.expired_unfetched = 0
        self.get_expired = 0
        self.get_flushed = 0
        self.trim_hook: Callable[[], object] | None = None
        self._evicted_bytes = 0

    @classmethod
    def from_config(cls, config: EngineConfig) -> MemoryStore:
        """The ``memory`` engine: ``-m`` budget; no options."""
        if config.options:
            raise ConfigError(f"memory engine: unknown option {sorted(config.options)[0]!r} (it takes none)")
        return cls(config.memory_bytes, config.item_size_max)

    # -- internals -------------------------------------------------------------
    def _next_cas(self) -> int:
        self._cas += 1
        return self._cas

    def _wheel_add(self, key: bytes, exptime: float) -> None:
        if exptime > 0:
            sec = int(exptime)
            bucket = self._wheel.get(sec)
            if bucket is None:
                self._wheel[sec] = bucket = set()
            bucket.add(key)

    def _wheel_del(self, key: bytes, exptime: float) -> None:
        if exptime > 0:
            bucket = self._wheel.get(int(exptime))
            if bucket is not None:
                bucket.discard(key)

    def _set_exptime(self, key: bytes, item: Item, exptime: float) -> None:
        self._wheel_del(key, item.exptime)
        item.exptime = exptime
        self._wheel_add(key, exptime)

    def _unlink(self, key: bytes, item: Item) -> None:
        del self._data[key]
        self._wheel_del(key, item.exptime)
        self.used -= len(key) + item.nbytes + ITEM_OVERHEAD

    def _expire(self, key: bytes, item: Item) -> None:
        self._unlink(key, item)
        self.reclaimed += 1
        if not item.fetched:
            self.expired_unfetched += 1

    def _flush_now(self) -> None:
        self._data.clear()
        self._wheel.clear()
        self.used = 0
        self._flush_at = 0.0

    def _live(self, key: bytes, now: float) -> Item | None:
        if self._flush_at and now >= self._flush_at:
            self._flush_now()
            return None
        item = self._data.get(key)
        if item is not None and item.exptime and item.exptime <= now:
            self._expire(key, item)
            self.get_expired += 1
            return None
        return item

    def _link(self, key: bytes, item: Item, old: Item | None) -> None:
        data = self._data
        if old is not None:
            self._wheel_del(key, old.exptime)
            self.used -= old.nbytes
            data[key] = item
            data.move_to_end(key)
            self.used += item.nbytes
        else:
            data[key] = item
            self.used += len(key) + item.nbytes + ITEM_OVERHEAD
        self.total_items += 1
        if item.exptime > 0:
            self._wheel_add(key, item.exptime)
        if self.used > self.limit:
            self._evict()

    def _evict(self) -> None:
        data = self._data
        now = _clock()
        freed = 0
        while self.used > self.limit and len(data) > 1:
            key, item = data.popitem(last=False)
            if item.active and not (item.exptime and item.exptime <= now):
                item.active = False  # fetched since it was last here: back to the warm end
                data[key] = item
                continue
            self._wheel_del(key, item.exptime)
            size = len(key) + item.nbytes + ITEM_OVERHEAD
            self.used -= size
            freed += size
            if item.exptime and item.exptime <= now:
                self.reclaimed += 1
            else:
                self.evictions += 1
                if not item.fetched:
                    self.evicted_unfetched += 1
        self._evicted_bytes += freed
        if self._evicted_bytes > TRIM_AFTER_BYTES and self.trim_hook is not None:
            self._evicted_bytes = 0
            self.trim_hook()

    # -- the interface -----------------------------------------------------------
    def get(self, key: bytes, touch: float | None = None, bump: bool = True, now: float = 0.0) -> Item | None:
        """``now``: the current time when the caller already has it (the server reads the clock
        once per batch of requests); 0 reads it here."""
        item = self._data.get(key)
        if item is None and not self._flush_at:
            return None
        if not now:
            now = _clock()
        if self._flush_at and now >= self._flush_at:
            self._flush_now()
            return None
        if item is None:
            return None
        exptime = item.exptime
        if exptime and exptime <= now:
            self._expire(key, item)
            self.get_expired += 1
            return None
        if bump:  # no reordering here: eviction gives a fetched item a second chance (see _evict)
            item.fetched = True
            item.active = True
            item.atime = now
        if touch is not None:
            self._set_exptime(key, item, touch)
        return item

    def store(self, mode: Mode, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0,
              cas: int = 0, invalidate: bool = False) -> tuple[Status, int]:
        now = _clock()
        old = self._live(key, now)
        status, value, flags, exptime, stale = plan_store(mode, old, key, value, flags, exptime, cas,
                                                          invalidate, self.max_item_size)
        if status is not None:
            if old is not None:
                if status == Status.TOO_LARGE and mode == Mode.SET:
                    self._unlink(key, old)  # memcached: a failed set must not leave stale data
                elif status == Status.NOT_STORED and mode == Mode.ADD:
                    self._data.move_to_end(key)
            return status, 0
        new_cas = self._next_cas()
        if exptime < 0:  # already expired: stored and gone at once
            if old is not None:
                self._unlink(key, old)
            self.total_items += 1
            return Status.STORED, new_cas
        item = Item(value, flags, exptime, new_cas, now)
        if stale:
            item.stale = True
        self._link(key, item, old)
        return Status.STORED, new_cas

    def insert(self, key: bytes, item: Item) -> None:
        """Put a finished item (its own cas) in place, replacing any other: for engines
        that keep this store as a cache of another (:class:`~scatterhoard.engines.tiered.TieredStore`)."""
        old = self._live(key, _clock())
        if item.exptime < 0 or len(key) + item.nbytes + ITEM_HEADER_SIZE > self.max_item_size:
            if old is not None:
                self._unlink(key, old)
            return
        self._link(key, item, old)
        self.total_items -= 1  # not a new write of the engine, only a copy

    def delete(self, key: bytes, cas: int = 0) -> Status:
        item = self._live(key, _clock())
        if item is None:
            return Status.NOT_FOUND
        if cas and item.cas != cas:
            return Status.EXISTS
        self._unlink(key, item)
        return Status.DELETED

    def mark_stale(self, key: bytes, cas: int = 0, exptime: float | None = None) -> Status:
        item = self._live(key, _clock())
        if item is None:
            return Status.NOT_FOUND
        if cas and item.cas != cas:
            return Status.EXISTS
        item.stale = True
        item.win = False
        item.cas = self._next_cas()
        if exptime is not None:
            self._set_exptime(key, item, exptime)
        return Status.DELETED

    def arith(self, key: bytes, delta: int, incr: bool = True, initial: int | None = None,
              exptime: float = 0.0, cas: int = 0) -> tuple[Status, int, int]:
        now = _clock()
        item = self._live(key, now)
        if item is None:
            if initial is None:
                return Status.NOT_FOUND, 0, 0
            value = initial & _U64
            status, new_cas = self.store(Mode.ADD, key, b"%d" % value, 0, exptime)
            return (Status.STORED, value, new_cas) if status == Status.STORED else (status, 0, 0)
        if cas and item.cas != cas:
            return Status.EXISTS, 0, 0
        planned = plan_arith(item.value, delta, incr)
        if planned is None:
            return Status.NON_NUMERIC, 0, 0
        value, text = planned
        new = Item(text, item.flags, item.exptime, self._next_cas(), now)
        new.fetched = item.fetched
        self._link(key, new, item)
        return Status.STORED, value, new.cas

    def touch(self, key: bytes, exptime: float) -> bool:
        return self.get(key, touch=exptime) is not None

    def flush_all(self, delay: float = 0.0) -> None:
        if delay <= 0:
            self._flush_now()
        else:
            self._flush_at = _clock() + delay

    def sweep(self, budget: int = 10000) -> int:
        """Reclaim up to ``budget`` expired items; returns how many were removed."""
        now = _clock()
        if self._flush_at and now >= self._flush_at:
            self._flush_now()
            return 0
        wheel, data = self._wheel, self._data
        removed = 0
        sec = self._swept_to
        last = int(now) - 1  # every bucket up to here holds only expired times
        if last - sec > 4 * len(wheel) + 60:  # idle for long: jump over the empty seconds
            sec = min(wheel, default=last + 1)
        while sec <= last and budget > 0:
            bucket = wheel.get(sec)
            while bucket and budget > 0:
                key = bucket.pop()
                budget -= 1
                item = data.get(key)
                if item is not None and item.exptime and item.exptime <= now:
                    item.exptime = 0.0  # already out of the wheel
                    self._expire(key, item)
                    removed += 1
            if bucket:
                break  # budget used up inside this second; resume here next time
            wheel.pop(sec, None)
            sec += 1
        self._swept_to = sec
        return removed

    def stats(self) -> dict[str, int | float | str]:
        return {
            "limit_maxbytes": self.limit,
            "curr_items": len(self._data),
            "total_items": self.total_items,
            "bytes": self.used,
            "evictions": self.evictions,
            "evicted_unfetched": self.evicted_unfetched,
            "reclaimed": self.reclaimed,
            "expired_unfetched": self.expired_unfetched,
            "get_expired": self.get_expired,
            "get_flushed": self.get_flushed,
        }

    def items_snapshot(self) -> dict[str, int]:
        if not self._data:
            return {}
        oldest = next(iter(self._data.values()))
        return {
            "number": len(self._data),
            "age": int(_clock() - oldest.atime),
            "evicted": self.evictions,
            "evicted_nonzero": 0,
            "outofmemory": 0,
            "reclaimed": self.reclaimed,
            "expired_unfetched": self.expired_unfetched,
            "evicted_unfetched": self.evicted_unfetched,
        }


if "_abc_impl" not in vars(MemoryStore):
    # Compiled by mypyc, the class does not get ABCMeta's per-class registry and would share
    # Store's: isinstance(any_engine, MemoryStore) would then answer as isinstance(.., Store).
    getattr(abc, "_abc_init")(MemoryStore)  # noqa: B009 - a private hook, used once, checked by tests
