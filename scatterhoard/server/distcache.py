"""Executes distcache (session cache) requests against a store (no I/O here).

A distcache session lives in the same store as memcached items: the key is
the session id bytes, the value the session data, the expiry ``now +
timeout_ms / 1000`` (a float, so millisecond timeouts are honoured).  A
session added over distcache is therefore a memcached ``get`` of the same
key, and an item set over memcached is a distcache GET of the same id.

Semantics follow the original dc_server: a duplicate ADD of a live id gets
101 and leaves the stored entry untouched; GET and HAVE never extend a
session's life; REMOVE deletes.

Two cases the protocol cannot express:

* a stored value that is exactly the byte ``0x01`` (or ``0x02``) is sent as
  is, and a distcache client reads it as a miss (a disconnect): the GET
  reply format has no way to tell them apart;
* an empty value (possible through memcached) is answered as a miss, since a
  GET hit must carry at least one byte.

A framing violation answers the complete requests that came before it,
logs one line and closes only that connection.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable

from ..protocol import distcache as dc
from ..store import Item, Mode, Status, Store
from .stats import ServerStats, Settings

log = logging.getLogger("scatterhoard.server")

_INF = float("inf")


class DistcacheCounters:
    """Operation counters shared by every distcache connection of one server.

    ``on_op`` (when set) is called after every operation; ``dc_server
    -progress`` uses it to print its progress line.
    """

    __slots__ = ("operations", "adds", "gets", "removes", "haves", "framing_errors", "on_op")

    def __init__(self) -> None:
        self.operations = 0
        self.adds = 0
        self.gets = 0
        self.removes = 0
        self.haves = 0
        self.framing_errors = 0
        self.on_op: Callable[[], None] | None = None


class DistcacheSession:
    """One client connection speaking the distcache protocol."""

    __slots__ = ("store", "stats", "settings", "counters", "parser", "closing")

    def __init__(self, store: Store, stats: ServerStats, settings: Settings,
                 counters: DistcacheCounters | None = None) -> None:
        self.store = store
        self.stats = stats
        self.settings = settings
        self.counters = counters if counters is not None else DistcacheCounters()
        self.parser = dc.DistcacheParser("server")
        self.closing = False

    def feed(self, data: bytes) -> bytes:
        if self.closing:
            return b""
        try:
            messages = self.parser.feed(data)
        except dc.FramingError as exc:
            out = self._run(exc.messages)
            self.closing = True
            self.stats.protocol_errors += 1
            self.counters.framing_errors += 1
            log.warning("distcache: closing connection: %s", exc.reason)
            return out
        return self._run(messages)

    def _run(self, messages: list[dc.Message]) -> bytes:
        if not messages:
            return b""
        out = []
        for m in messages:
            out.append(self.execute(m))
            if self.closing:  # a corrupt ADD: answered, then the connection ends
                break
        counters = self.counters
        counters.operations += len(out)
        if counters.on_op is not None:
            counters.on_op()
        return b"".join(out)

    def execute(self, message: dc.Message) -> bytes:
        """The reply bytes to one request message."""
        op = message.op
        uid = message.uid
        store = self.store
        counters = self.counters
        if op == dc.OP_GET:
            counters.gets += 1
            self.stats.cmd_get += 1
            item = store.get(message.payload)
            if item is None or not item.value:
                self.stats.get_misses += 1
                return dc.encode_get_reply(uid, None)
            self.stats.get_hits += 1
            return dc.encode_get_reply(uid, item.value)
        if op == dc.OP_ADD:
            counters.adds += 1
            self.stats.cmd_set += 1
            code = self._add(message.payload)
            if code == dc.RESULT_ADD_CORRUPT or code == dc.RESULT_ADD_ID_LEN:
                # the result code is sent (as the original does), then only this connection
                # is closed: a client that frames ADDs wrongly is not trusted further
                self.closing = True
                self.stats.protocol_errors += 1
                log.warning("distcache: closing connection after a corrupt ADD (result %d)", code)
            return dc.encode_result(uid, op, code)
        if op == dc.OP_REMOVE:
            counters.removes += 1
            if store.delete(message.payload) == Status.DELETED:
                self.stats.delete_hits += 1
                return dc.encode_result(uid, op, dc.RESULT_OK)
            self.stats.delete_misses += 1
            return dc.encode_result(uid, op, dc.RESULT_NOTOK)
        # OP_HAVE (the parser refuses any other operation)
        counters.haves += 1
        found = store.get(message.payload, bump=False) is not None
        return dc.encode_result(uid, op, dc.RESULT_OK if found else dc.RESULT_NOTOK)

    def _add(self, payload: bytes) -> int:
        req = dc.check_add(payload)
        if isinstance(req, int):
            return req
        exptime = time.time() + req.timeout_ms / 1000.0
        status, _ = self.store.store(Mode.ADD, req.session_id, req.data, 0, exptime)
        if status == Status.STORED:
            return dc.RESULT_OK
        if status == Status.NOT_STORED:
            return dc.RESULT_ADD_DUPLICATE
        return dc.RESULT_ADD_DATA_LEN  # too large for this store's item size limit


class SessionLimitStore(Store):
    """A store wrapper holding at most ``capacity`` items (``dc_server -sessions``).

    When an item would be added to a full store, the items nearest to expiry
    are evicted first (items that never expire last), as the original
    dc_server does.  Everything else is delegated to the wrapped store; the
    wrapper is only used by ``dc_server``, so plain ``hoard server`` keeps
    the memory engine's hot path untouched.

    The wrapper tracks the keys it saw created, with their expiry, in a dict
    and a lazy heap.  Keys the engine dropped on its own (expired, flushed,
    LRU-evicted) leave the tracking when they reach the top of the heap or
    at the periodic :meth:`sweep`.
    """

    def __init__(self, inner: Store, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("session capacity must be at least 1")
        self.inner = inner
        self.capacity = capacity
        self.max_item_size = inner.max_item_size
        self._exp: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []
        self.capacity_evictions = 0

    def __len__(self) -> int:
        return len(self._exp)

    # -- tracking ---------------------------------------------------------------------
    def _track(self, key: bytes, exptime: float) -> None:
        when = exptime if exptime > 0 else _INF
        if self._exp.get(key) == when:
            return
        self._exp[key] = when
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > 2 * len(self._exp) + 1024:
            self._heap = [(w, k) for k, w in self._exp.items()]
            heapq.heapify(self._heap)

    def _make_room(self, key: bytes) -> None:
        """Evict until one more key fits (no-op when ``key`` is already held)."""
        exp = self._exp
        if key in exp and self.inner.get(key, bump=False) is not None:
            return
        exp.pop(key, None)
        heap = self._heap
        now = time.time()
        while len(exp) >= self.capacity and heap:
            when, victim = heapq.heappop(heap)
            if exp.get(victim) != when:
                continue  # stale heap entry
            del exp[victim]
            if self.inner.delete(victim) == Status.DELETED and when > now:
                self.capacity_evictions += 1

    # -- the interface ----------------------------------------------------------------
    def get(self, key: bytes, touch: float | None = None, bump: bool = True) -> Item | None:
        item = self.inner.get(key, touch, bump)
        if touch is not None and item is not None:
            self._track(key, touch)
        return item

    def store(self, mode: Mode, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0,
              cas: int = 0, invalidate: bool = False) -> tuple[Status, int]:
        if mode in (Mode.SET, Mode.ADD) and not cas:
            self._make_room(key)
        status, new_cas = self.inner.store(mode, key, value, flags, exptime, cas, invalidate)
        if status == Status.STORED:
            if mode != Mode.APPEND and mode != Mode.PREPEND:
                self._track(key, exptime)
            elif key not in self._exp:
                item = self.inner.get(key, bump=False)
                if item is not None:
                    self._track(key, item.exptime)
        elif status == Status.TOO_LARGE and mode == Mode.SET:
            self._exp.pop(key, None)
        return status, new_cas

    def delete(self, key: bytes, cas: int = 0) -> Status:
        status = self.inner.delete(key, cas)
        if status == Status.DELETED:
            self._exp.pop(key, None)
        return status

    def mark_stale(self, key: bytes, cas: int = 0, exptime: float | None = None) -> Status:
        status = self.inner.mark_stale(key, cas, exptime)
        if status == Status.DELETED and exptime is not None:
            self._track(key, exptime)
        return status

    def arith(self, key: bytes, delta: int, incr: bool = True, initial: int | None = None,
              exptime: float = 0.0, cas: int = 0) -> tuple[Status, int, int]:
        if initial is not None:
            self._make_room(key)
        result = self.inner.arith(key, delta, incr, initial, exptime, cas)
        if result[0] == Status.STORED and key not in self._exp:
            self._track(key, exptime)
        return result

    def touch(self, key: bytes, exptime: float) -> bool:
        return self.get(key, touch=exptime) is not None

    def flush_all(self, delay: float = 0.0) -> None:
        self.inner.flush_all(delay)
        if delay <= 0:
            self._exp.clear()
            self._heap.clear()

    def sweep(self, budget: int = 10000) -> int:
        """Sweep the engine, then forget tracked keys that have expired."""
        inner_sweep = getattr(self.inner, "sweep", None)
        removed = int(inner_sweep(budget)) if inner_sweep is not None else 0
        now = time.time()
        heap, exp = self._heap, self._exp
        while heap and heap[0][0] <= now:
            when, key = heapq.heappop(heap)
            if exp.get(key) == when:
                del exp[key]
                self.inner.delete(key)  # already expired: only reclaims it
        return removed

    def stats(self) -> dict[str, int | float | str]:
        s = dict(self.inner.stats())
        s["session_capacity"] = self.capacity
        s["session_capacity_evictions"] = self.capacity_evictions
        return s

    def items_snapshot(self) -> dict[str, int]:
        return self.inner.items_snapshot()

    def close(self) -> None:
        self.inner.close()
