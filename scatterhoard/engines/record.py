"""RecordStore: write four primitives, get memcached's semantics.

An engine that subclasses :class:`RecordStore` only says how to ``load``,
``save`` and ``remove`` one record and how to ``clear`` them all; the base
class supplies everything the protocols need on top: the six storage modes,
CAS comparison and unique CAS values, append/prepend, 64-bit incr/decr,
expiry (lazily, on access), touch, delayed ``flush_all`` and the counters of
``stats``. The decisions are the ones the memory engine makes
(:func:`~scatterhoard.store.base.plan_store`, :func:`~scatterhoard.store.base.plan_arith`),
so every engine answers the same.

Each operation on a key runs inside :meth:`RecordStore.key_transaction`, which
is :meth:`RecordStore.transaction` (by default one re-entrant lock) unless the
engine narrows it, so an engine may be called from several worker threads.
An engine without the ``cas`` capability hands out cas 0 everywhere (``gets``,
meta ``c``, the binary CAS field), as memcached does with CAS disabled (``-C``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from abc import abstractmethod

from ..store.base import (
    Item,
    Mode,
    Status,
    Store,
    Unsupported,
    plan_arith,
    plan_store,
)

_U64 = (1 << 64) - 1


class RecordStore(Store):
    """Base class for engines over a key -> record mapping (a dict, a table, files...).

    Subclasses implement :meth:`load`, :meth:`save`, :meth:`remove` and
    :meth:`clear`; optionally :meth:`count`, :meth:`size`, :meth:`accessed`,
    :meth:`sweep`, :meth:`close`, :meth:`transaction`, :meth:`key_transaction`
    and :meth:`reserve_cas`. Set :attr:`capabilities` to a subset of
    :data:`~scatterhoard.store.base.CAPABILITIES` to refuse what the engine
    cannot do (without ``cas`` every cas value handed out is 0), and
    :attr:`blocking` when calls may block.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tally = threading.Lock()  # the cas counter and the counters of stats, whatever the scope
        self._cas = 0
        self._flush_at = 0.0
        self.total_items = 0
        self.get_expired = 0
        self.reclaimed = 0
        self.evictions = 0

    # -- the primitives an engine implements ------------------------------------------------
    @abstractmethod
    def load(self, key: bytes) -> Item | None:
        """The record under ``key`` (expired or not: the base class checks), or None."""

    @abstractmethod
    def save(self, key: bytes, item: Item) -> None:
        """Store ``item`` under ``key``, replacing any record there."""

    @abstractmethod
    def remove(self, key: bytes) -> bool:
        """Remove the record under ``key``; False when there was none."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every record."""

    # -- optional hooks ----------------------------------------------------------------------
    def count(self) -> int:
        """How many records are held (``curr_items``; expired ones not yet removed may count)."""
        return 0

    def size(self) -> int:
        """Bytes held (``bytes`` in stats)."""
        return 0

    def accessed(self, key: bytes, item: Item) -> None:
        """``item`` (as loaded) was just fetched: its ``atime`` and ``fetched`` are updated.
        Engines that return their own objects from :meth:`load` need nothing here; others
        may persist the access time (for LRU) when they like."""

    def transaction(self) -> contextlib.AbstractContextManager[object]:
        """The scope of an operation on the whole store (``flush_all``, ``stats``) and, unless
        :meth:`key_transaction` says otherwise, of every operation: every primitive of it runs
        inside (default: one re-entrant lock, so operations run one at a time)."""
        return self._lock

    def key_transaction(self, key: bytes) -> contextlib.AbstractContextManager[object]:
        """The scope of one operation on ``key`` (get, touch, store, delete, incr/decr, meta's
        invalidation). Default: :meth:`transaction`. An engine whose primitives may run
        concurrently for different keys returns a narrower scope that still excludes every other
        operation on the same key and :meth:`transaction` (:class:`AsyncRecordStore` does: key
        stripes). A delayed ``flush_all`` that falls due is carried out under :meth:`transaction`
        before the operation enters this scope."""
        return self.transaction()

    def reserve_cas(self, cas: int) -> None:
        """Called with each new cas value before it is used: persistent engines record a
        high-water mark here so cas values stay unique across restarts."""

    def limit_bytes(self) -> int:
        """The size cap reported as ``limit_maxbytes`` (0: none)."""
        return 0

    # -- helpers -------------------------------------------------------------------------------
    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise Unsupported(f"the {type(self).__name__} engine does not support {capability}")

    def _next_cas(self, stored: int = 0) -> int:
        """A new cas value (0 without the ``cas`` capability); ``stored`` counts in total_items."""
        if "cas" not in self.capabilities:
            with self._tally:
                self.total_items += stored
            return 0
        with self._tally:
            self._cas += 1
            self.total_items += stored
            cas = self._cas
        self.reserve_cas(cas)
        return cas

    def _scope(self, key: bytes) -> contextlib.AbstractContextManager[object]:
        """:meth:`key_transaction`, after carrying out a delayed flush that fell due (under
        :meth:`transaction`: never inside a key's scope, which may not exclude other keys)."""
        if self._flush_at and time.time() >= self._flush_at:
            with self.transaction():
                if self._flush_at and time.time() >= self._flush_at:
                    self._flush_at = 0.0
                    self.clear()
        return self.key_transaction(key)

    def _live(self, key: bytes, now: float) -> Item | None:
        item = self.load(key)
        if item is not None and item.exptime and item.exptime <= now:
            self.remove(key)
            with self._tally:
                self.reclaimed += 1
                self.get_expired += 1
            return None
        return item

    # -- the Store interface ---------------------------------------------------------------------
    def get(self, key: bytes, touch: float | None = None, bump: bool = True) -> Item | None:
        if touch is not None:
            self.require("touch")
        with self._scope(key):
            now = time.time()
            item = self._live(key, now)
            if item is None:
                return None
            if touch is not None:
                item.exptime = touch
                self.save(key, item)
            if bump:
                item.fetched = True
                item.atime = now
                self.accessed(key, item)
            return item

    def store(self, mode: Mode, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0,
              cas: int = 0, invalidate: bool = False) -> tuple[Status, int]:
        if cas or mode == Mode.CAS:
            self.require("cas")
        if mode == Mode.APPEND or mode == Mode.PREPEND:
            self.require("append")
        with self._scope(key):
            return self._store(mode, key, value, flags, exptime, cas, invalidate)

    def _store(self, mode: Mode, key: bytes, value: bytes, flags: int, exptime: float, cas: int,
               invalidate: bool) -> tuple[Status, int]:
        """:meth:`store` inside the key's scope."""
        now = time.time()
        old = self._live(key, now)
        status, value, flags, exptime, stale = plan_store(mode, old, key, value, flags, exptime, cas,
                                                          invalidate, self.max_item_size)
        if status is not None:
            if status == Status.TOO_LARGE and mode == Mode.SET and old is not None:
                self.remove(key)  # memcached: a failed set leaves no stale value
            return status, 0
        new_cas = self._next_cas(stored=1)
        if exptime < 0:  # already expired: stored and gone at once
            if old is not None:
                self.remove(key)
            return Status.STORED, new_cas
        item = Item(value, flags, exptime, new_cas, now)
        item.stale = stale
        self.save(key, item)
        return Status.STORED, new_cas

    def delete(self, key: bytes, cas: int = 0) -> Status:
        if cas:
            self.require("cas")
        with self._scope(key):
            item = self._live(key, time.time())
            if item is None:
                return Status.NOT_FOUND
            if cas and item.cas != cas:
                return Status.EXISTS
            self.remove(key)
            return Status.DELETED

    def mark_stale(self, key: bytes, cas: int = 0, exptime: float | None = None) -> Status:
        """Meta ``md I``: keep the item, marked stale, with a new cas (and expiry when given)."""
        if cas:
            self.require("cas")
        with self._scope(key):
            item = self._live(key, time.time())
            if item is None:
                return Status.NOT_FOUND
            if cas and item.cas != cas:
                return Status.EXISTS
            new = Item(item.value, item.flags, item.exptime if exptime is None else exptime, self._next_cas(),
                       item.atime)
            new.fetched = item.fetched
            new.stale = True
            self.save(key, new)
            return Status.DELETED

    def arith(self, key: bytes, delta: int, incr: bool = True, initial: int | None = None,
              exptime: float = 0.0, cas: int = 0) -> tuple[Status, int, int]:
        self.require("arith")
        if cas:
            self.require("cas")
        with self._scope(key):
            now = time.time()
            item = self._live(key, now)
            if item is None:
                if initial is None:
                    return Status.NOT_FOUND, 0, 0
                number = initial & _U64
                status, new_cas = self._store(Mode.ADD, key, b"%d" % number, 0, exptime, 0, False)
                return (Status.STORED, number, new_cas) if status == Status.STORED else (status, 0, 0)
            if cas and item.cas != cas:
                return Status.EXISTS, 0, 0
            planned = plan_arith(item.value, delta, incr)
            if planned is None:
                return Status.NON_NUMERIC, 0, 0
            number, text = planned
            new = Item(text, item.flags, item.exptime, self._next_cas(stored=1), now)
            new.fetched = item.fetched
            self.save(key, new)
            return Status.STORED, number, new.cas

    def touch(self, key: bytes, exptime: float) -> bool:
        return self.get(key, touch=exptime) is not None

    def flush_all(self, delay: float = 0.0) -> None:
        self.require("flush")
        with self.transaction():
            if delay <= 0:
                self._flush_at = 0.0
                self.clear()
            else:
                self._flush_at = time.time() + delay

    def stats(self) -> dict[str, int | float | str]:
        with self.transaction():
            return {
                "limit_maxbytes": self.limit_bytes(),
                "curr_items": self.count(),
                "total_items": self.total_items,
                "bytes": self.size(),
                "evictions": self.evictions,
                "reclaimed": self.reclaimed,
                "get_expired": self.get_expired,
            }


class _AllStripes:
    """Every stripe of an :class:`AsyncRecordStore`, taken in order: the whole store's scope."""

    __slots__ = ("locks",)

    def __init__(self, locks: list[threading.RLock]) -> None:
        self.locks = locks

    def __enter__(self) -> None:
        for lock in self.locks:
            lock.acquire()

    def __exit__(self, *exc: object) -> None:
        for lock in reversed(self.locks):
            lock.release()


class AsyncRecordStore(RecordStore):
    """A :class:`RecordStore` whose primitives are ``async def`` (an asyncio database driver...).

    Subclasses implement ``async`` :meth:`aload`, :meth:`asave`, :meth:`aremove`
    and :meth:`aclear`. The server runs the engine's operations in worker
    threads (``blocking`` is True) and each primitive as a coroutine on the
    server's event loop, so other clients are never held up while it awaits.

    Operations on different keys run concurrently (their coroutines' awaits
    overlap on the loop), up to the server's worker threads (``-t``): each
    operation takes one of :attr:`stripes` re-entrant locks chosen by its key
    (:meth:`key_transaction`), so operations on one key, and on keys that share
    a stripe, run one at a time; ``flush_all`` and ``stats`` take every stripe
    (:meth:`transaction`). The primitives must therefore allow concurrent calls
    for different keys (a connection pool, not one connection); an engine whose
    driver cannot sets ``stripes = 1``.
    """

    blocking = True
    #: key-striped locks (1: every operation runs alone, as in a :class:`RecordStore`)
    stripes = 64

    def __init__(self) -> None:
        super().__init__()
        self._loop: object = None
        self._stripes = [threading.RLock() for _ in range(max(1, self.stripes))]
        self._all = _AllStripes(self._stripes)

    def transaction(self) -> contextlib.AbstractContextManager[object]:
        """Every stripe (``flush_all``, ``stats``, a delayed flush falling due)."""
        return self._all

    def key_transaction(self, key: bytes) -> contextlib.AbstractContextManager[object]:
        """The stripe of ``key``."""
        stripes = self._stripes
        return stripes[hash(key) % len(stripes)] if len(stripes) > 1 else stripes[0]

    def bind_loop(self, loop: object) -> None:
        """The event loop the coroutines run on (the server calls this when it starts)."""
        self._loop = loop

    @abstractmethod
    async def aload(self, key: bytes) -> Item | None: ...

    @abstractmethod
    async def asave(self, key: bytes, item: Item) -> None: ...

    @abstractmethod
    async def aremove(self, key: bytes) -> bool: ...

    @abstractmethod
    async def aclear(self) -> None: ...

    def _wait(self, coro: object) -> object:
        import asyncio

        loop = self._loop
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise RuntimeError("AsyncRecordStore: bind_loop() was not called")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("AsyncRecordStore: called on the event loop thread (it is a blocking engine)")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()  # type: ignore[arg-type]

    def load(self, key: bytes) -> Item | None:
        found = self._wait(self.aload(key))
        assert found is None or isinstance(found, Item)
        return found

    def save(self, key: bytes, item: Item) -> None:
        self._wait(self.asave(key, item))

    def remove(self, key: bytes) -> bool:
        return bool(self._wait(self.aremove(key)))

    def clear(self) -> None:
        self._wait(self.aclear())
