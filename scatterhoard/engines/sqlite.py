"""The ``sqlite`` engine: a persistent cache in one SQLite file (stdlib ``sqlite3``, WAL).

``hoard server --engine sqlite --engine-opt path=/var/cache/hoard.db [--durable]``

Options (``--engine-opt k=v``):

``path``
    the database file (required); created when missing. Items, their cas
    values and the cas counter survive restarts.
``durable`` (``--durable``)
    ``1``: every write is committed with ``synchronous=FULL`` (an fsync of
    the WAL) before it is acknowledged, so an acknowledged write survives
    ``kill -9`` and a power loss (what reads record, the access time kept
    for LRU and the fetched bit, is bookkeeping: it is committed with the
    next write or within ``commit_ms``, so a read never waits for an
    fsync). ``0`` (default): writes are grouped into
    one transaction committed every ``commit_ms``; a ``kill -9`` or crash
    loses at most the writes acknowledged during the last
    ``commit_ms`` x 1.25 (plus the commit's own duration); with
    ``synchronous=NORMAL`` a power loss may also lose commits the OS had not
    yet written. The database itself is never corrupted (SQLite's WAL).
``commit_ms``
    the group-commit interval without ``durable`` (default 100); with it,
    the longest a read's bookkeeping waits for a commit.
``max_mb``
    size cap in MB of keys + values (default 1024; 0 = none). Past it the
    least recently used items go first; "recently used" is tracked to
    :data:`ATIME_RESOLUTION` seconds so that reads rarely write.

Expired items are removed when read and by the server's once-a-second sweep.
The engine is ``blocking``: the server runs it in worker threads, so a slow
disk never stalls the event loop. All calls share one SQLite connection
under one lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from types import TracebackType

from ..errors import ConfigError
from ..store.base import EngineConfig, EngineError, Item
from .record import RecordStore

#: Seconds: an item's access time is written back at most this often (LRU-ish eviction).
ATIME_RESOLUTION = 30.0
#: cas values are reserved in blocks; the high-water mark is stored with the data.
CAS_BLOCK = 10000
#: ``bits`` column: fetched since stored, meta's stale mark, meta's recache token handed out
FETCHED, STALE, WIN = 1, 2, 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, flags INTEGER NOT NULL, exptime REAL NOT NULL,
    cas INTEGER NOT NULL, atime REAL NOT NULL, bits INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS items_atime ON items(atime);
CREATE INDEX IF NOT EXISTS items_exptime ON items(exptime) WHERE exptime > 0;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _flag(options: dict[str, str], name: str, default: bool) -> bool:
    text = options.get(name)
    if text is None:
        return default
    if text.lower() in ("1", "yes", "true", "on"):
        return True
    if text.lower() in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f"engine option {name}={text!r}: use 1 or 0")


def _number(options: dict[str, str], name: str, default: int) -> int:
    text = options.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise ConfigError(f"engine option {name}={text!r}: expected a non-negative whole number")
    return int(text)


class _Transaction:
    """One operation's scope: the engine lock; commits on the way out as the policy says."""

    __slots__ = ("engine",)

    def __init__(self, engine: SqliteStore) -> None:
        self.engine = engine

    def __enter__(self) -> None:
        e = self.engine
        e._lock.acquire()
        e._depth += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        e = self.engine
        try:
            e._depth -= 1
            if e._depth == 0 and e._in_txn and (
                    (e.durable and e._dirty) or time.monotonic() - e._txn_started >= e.commit_s):
                e._commit()
        except sqlite3.Error as error:
            exc = exc or error
        finally:
            if isinstance(exc, sqlite3.Error) and not e.db.in_transaction:
                e._in_txn = e._dirty = False  # SQLite rolled the transaction back itself (disk full, I/O error)
            e._lock.release()
        if isinstance(exc, sqlite3.Error):  # the client gets SERVER_ERROR, the connection goes on
            raise EngineError(f"sqlite: {exc}") from exc


class SqliteStore(RecordStore):
    """Persistent engine over one SQLite table (see the module documentation)."""

    blocking = True

    def __init__(self, path: str, durable: bool = False, commit_ms: int = 100, max_mb: int = 1024) -> None:
        super().__init__()
        self.path = path
        self.durable = durable
        self.commit_s = commit_ms / 1000.0
        self.max_bytes = max_mb * 1024 * 1024
        self._depth = 0
        self._in_txn = False
        self._dirty = False  # the open transaction holds a write (not only a read's bookkeeping)
        self._txn_started = 0.0
        self._loaded: tuple[bytes, int, float, bool] | None = None  # key, size, atime, fetched
        self._local = threading.local()  # the last row object handed to each thread
        self.commits = 0
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"sqlite engine: cannot open {path}: {exc}") from None
        count, size, top = self.db.execute(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(max(cas), 0) FROM items").fetchone()
        self._count, self._bytes = int(count), int(size)
        row = self.db.execute("SELECT value FROM meta WHERE name = 'cas_reserved'").fetchone()
        # a reservation lost with the last (uncommitted) batch is at most one block old
        self._cas = max(int(top), (int(row[0]) + CAS_BLOCK) if row else 0)
        self._cas_reserved = self._cas
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="hoard-sqlite-commit", daemon=True)
        self._flusher.start()

    @classmethod
    def from_config(cls, config: EngineConfig) -> SqliteStore:
        """Build from ``--engine-opt`` strings (``path``, ``durable``, ``commit_ms``, ``max_mb``)."""
        options = config.options
        unknown = set(options) - {"path", "durable", "commit_ms", "max_mb"}
        if unknown:
            raise ConfigError(f"sqlite engine: unknown option {sorted(unknown)[0]!r} "
                              "(known: path, durable, commit_ms, max_mb)")
        path = options.get("path")
        if not path:
            raise ConfigError("sqlite engine: missing option path=FILE (--engine-opt path=/var/cache/hoard.db)")
        commit_ms = _number(options, "commit_ms", 100)
        if commit_ms < 1:
            raise ConfigError("sqlite engine: commit_ms must be at least 1")
        engine = cls(path, _flag(options, "durable", False), commit_ms, _number(options, "max_mb", 1024))
        engine.max_item_size = config.item_size_max
        return engine

    # -- transactions ---------------------------------------------------------------------------
    def transaction(self) -> _Transaction:
        return _Transaction(self)

    def _write(self, sql: str, params: tuple[object, ...] = (), bookkeeping: bool = False) -> sqlite3.Cursor:
        if not self._in_txn:
            self.db.execute("BEGIN IMMEDIATE")
            self._in_txn = True
            self._txn_started = time.monotonic()
        if not bookkeeping:
            self._dirty = True
        return self.db.execute(sql, params)

    def _commit(self) -> None:
        if self._in_txn:
            self._in_txn = self._dirty = False
            self.db.execute("COMMIT")
            self.commits += 1

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.commit_s / 4):
            with self._lock:
                if self._depth == 0 and self._in_txn and time.monotonic() - self._txn_started >= self.commit_s:
                    self._commit()

    # -- primitives ------------------------------------------------------------------------------
    def load(self, key: bytes) -> Item | None:
        row = self.db.execute("SELECT value, flags, exptime, cas, atime, bits, size FROM items WHERE key = ?",
                              (key,)).fetchone()
        if row is None:
            self._loaded = (key, -1, 0.0, False)
            return None
        value, flags, exptime, cas, atime, bits, size = row
        self._loaded = (key, size, atime, bool(bits & FETCHED))
        last: _Row | None = getattr(self._local, "row", None)
        if last is not None and last._key == key:
            # the same object again to the same thread, refreshed: a session that touches or
            # marks the item it holds (meta's mg T, W) sees the change on it, as with the memory engine
            last.refresh(value, flags, exptime, cas, atime, bits)
            return last
        row_item = self._local.row = _Row(value, flags, exptime, cas, atime, bits, key)
        return row_item

    def mark_win(self, key: bytes, item: Item) -> None:
        """Meta's recache token was handed out for this version of the item: persist the mark."""
        if not item.win:
            with self.transaction():
                self._write("UPDATE items SET bits = bits | ? WHERE key = ? AND cas = ?", (WIN, key, item.cas))
        item.win = True

    def _old_size(self, key: bytes) -> int:
        loaded = self._loaded
        if loaded is not None and loaded[0] == key:
            return loaded[1]
        row = self.db.execute("SELECT size FROM items WHERE key = ?", (key,)).fetchone()
        return -1 if row is None else int(row[0])

    def save(self, key: bytes, item: Item) -> None:
        old = self._old_size(key)
        size = len(key) + len(item.value)
        bits = (FETCHED if item.fetched else 0) | (STALE if item.stale else 0) | (WIN if item.win else 0)
        self._write("INSERT OR REPLACE INTO items (key, value, flags, exptime, cas, atime, bits, size) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, item.value, item.flags, item.exptime, item.cas, item.atime, bits, size))
        self._loaded = (key, size, item.atime, item.fetched)
        if old < 0:
            self._count += 1
            self._bytes += size
        else:
            self._bytes += size - old
        if self.max_bytes and self._bytes > self.max_bytes:
            self._evict(key)

    def remove(self, key: bytes) -> bool:
        rows = self._write("DELETE FROM items WHERE key = ? RETURNING size", (key,)).fetchall()
        self._loaded = None
        if not rows:
            return False
        self._count -= 1
        self._bytes -= int(rows[0][0])
        return True

    def clear(self) -> None:
        self._write("DELETE FROM items")
        self._loaded = None
        self._count = self._bytes = 0

    def accessed(self, key: bytes, item: Item) -> None:
        loaded = self._loaded
        if loaded is not None and loaded[0] == key and loaded[3] and item.atime - loaded[2] < ATIME_RESOLUTION:
            return  # fetched before and its access time is recent enough: no write
        try:
            self._write("UPDATE items SET atime = ?, bits = bits | 1 WHERE key = ?", (item.atime, key), True)
        except sqlite3.Error:  # bookkeeping only: a read does not fail because it cannot be recorded
            return
        self._loaded = (key, loaded[1] if loaded is not None and loaded[0] == key else 0, item.atime, True)

    def reserve_cas(self, cas: int) -> None:
        if cas > self._cas_reserved:
            self._cas_reserved = cas + CAS_BLOCK
            self._write("INSERT OR REPLACE INTO meta (name, value) VALUES ('cas_reserved', ?)",
                        (self._cas_reserved,))

    def _evict(self, keep: bytes) -> None:
        now = time.time()
        while self._bytes > self.max_bytes:
            rows = self.db.execute("SELECT key, exptime FROM items WHERE key != ? ORDER BY atime LIMIT 64",
                                   (keep,)).fetchall()
            if not rows:
                return
            for key, exptime in rows:
                if self.remove(key):
                    if exptime and exptime <= now:
                        self.reclaimed += 1
                    else:
                        self.evictions += 1
                if self._bytes <= self.max_bytes:
                    return

    # -- housekeeping -----------------------------------------------------------------------------
    def count(self) -> int:
        return self._count

    def size(self) -> int:
        return self._bytes

    def limit_bytes(self) -> int:
        return self.max_bytes

    def sweep(self, budget: int = 10000) -> int:
        """Remove up to ``budget`` expired items (the server calls this every second)."""
        with self.transaction():
            if self._flush_at and time.time() >= self._flush_at:
                self._flush_at = 0.0
                self.clear()
                return 0
            rows = self.db.execute("SELECT key FROM items WHERE exptime > 0 AND exptime <= ? LIMIT ?",
                                   (time.time(), budget)).fetchall()
            removed = 0
            for (key,) in rows:
                if self.remove(key):
                    removed += 1
            self.reclaimed += removed
            return removed

    def stats(self) -> dict[str, int | float | str]:
        s = super().stats()
        s["sqlite_commits"] = self.commits
        s["sqlite_durable"] = int(self.durable)
        return s

    def commit(self) -> None:
        """Commit the pending group of writes now."""
        with self._lock:
            self._commit()

    def close(self) -> None:
        self._stop.set()
        self._flusher.join(5)
        with self._lock:
            try:
                self._commit()
                self.db.close()
            except sqlite3.Error:
                pass


class _Row(Item):
    """An item read from the table (meta's ``W`` mark on it is written back by :meth:`SqliteStore.mark_win`)."""

    __slots__ = ("_key",)

    def __init__(self, value: bytes, flags: int, exptime: float, cas: int, atime: float, bits: int,
                 key: bytes) -> None:
        super().__init__(value, flags, exptime, cas, atime)
        self._key = key
        self.refresh(value, flags, exptime, cas, atime, bits)

    def refresh(self, value: bytes, flags: int, exptime: float, cas: int, atime: float, bits: int) -> None:
        self.value, self.flags, self.exptime, self.cas, self.atime = value, flags, exptime, cas, atime
        self.fetched = bool(bits & FETCHED)
        self.stale = bool(bits & STALE)
        self.win = bool(bits & WIN)
