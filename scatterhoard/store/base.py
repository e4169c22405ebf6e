"""The storage interface every engine implements.

Keys and values are bytes. Expiry times handed to an engine are absolute
(seconds since the epoch, float; ``0`` means never); :func:`absolute_exptime`
turns memcached's relative/absolute/negative forms into that.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from enum import IntEnum

#: memcached: relative expiry times are at most 30 days; larger ones are unix times.
REALTIME_MAXDELTA = 60 * 60 * 24 * 30
#: memcached's per-item header (48) + cas (8) + key NUL (1) + value CRLF (2).
ITEM_HEADER_SIZE = 59
KEY_MAX_LENGTH = 250


def absolute_exptime(exptime: int, now: float | None = None) -> float:
    """memcached exptime -> absolute time (0 = never, in the past = already expired)."""
    if exptime == 0:
        return 0.0
    if now is None:
        now = time.time()
    if exptime < 0:
        return -1.0
    if exptime > REALTIME_MAXDELTA:
        return float(exptime) if exptime > now else -1.0
    return now + exptime


def flush_delay(exptime: int) -> float:
    """flush_all's argument (relative seconds or a unix time) -> seconds from now."""
    if exptime <= 0:
        return 0.0
    now = time.time()
    return max(absolute_exptime(exptime, now) - now, 0.0)


def remaining_ttl(exptime: float, now: float | None = None) -> int:
    """Seconds an item has left (-1 when it never expires), as memcached reports it."""
    if exptime == 0:
        return -1
    if now is None:
        now = time.time()
    left = exptime - now
    return int(left + 0.5) if left > 0 else 0


class Mode(IntEnum):
    """Storage modes of set-like commands."""

    SET = 0
    ADD = 1
    REPLACE = 2
    APPEND = 3
    PREPEND = 4
    CAS = 5


class Status(IntEnum):
    """Outcome of a storage, delete or arithmetic operation."""

    STORED = 0
    NOT_STORED = 1
    EXISTS = 2  # CAS mismatch (or ADD of an existing key, for binary)
    NOT_FOUND = 3
    TOO_LARGE = 4
    NO_MEMORY = 5
    NON_NUMERIC = 6
    DELETED = 7


class Item:
    """One cached value with its metadata (an engine may use its own class)."""

    __slots__ = ("value", "flags", "exptime", "cas", "atime", "fetched", "stale", "win")

    def __init__(self, value: bytes, flags: int, exptime: float, cas: int, atime: float) -> None:
        self.value = value
        self.flags = flags
        self.exptime = exptime
        self.cas = cas
        self.atime = atime
        self.fetched = False
        self.stale = False
        self.win = False


class Store(ABC):
    """A cache engine: one small interface that every protocol front end drives.

    Engines report what they hold through :meth:`stats` (memcached field names:
    ``curr_items``, ``bytes``, ``evictions``, ``limit_maxbytes`` ...).
    """

    max_item_size: int = 1024 * 1024

    @abstractmethod
    def get(self, key: bytes, touch: float | None = None, bump: bool = True) -> Item | None:
        """The live item under ``key`` (touching its expiry to ``touch`` when given)."""

    @abstractmethod
    def store(self, mode: Mode, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0,
              cas: int = 0, invalidate: bool = False) -> tuple[Status, int]:
        """Store by ``mode``; returns (status, new cas). ``cas`` != 0 makes any mode compare first."""

    @abstractmethod
    def delete(self, key: bytes, cas: int = 0) -> Status:
        """DELETED, NOT_FOUND, or EXISTS when ``cas`` is given and differs."""

    @abstractmethod
    def arith(self, key: bytes, delta: int, incr: bool = True, initial: int | None = None,
              exptime: float = 0.0, cas: int = 0) -> tuple[Status, int, int]:
        """Add/subtract ``delta`` (64-bit wrap up, floor 0 down). Returns (status, value, cas).

        A miss creates the item with ``initial`` when it is not ``None``.
        """

    @abstractmethod
    def touch(self, key: bytes, exptime: float) -> bool:
        """Set a new expiry on a live item; False when there is none."""

    @abstractmethod
    def flush_all(self, delay: float = 0.0) -> None:
        """Invalidate every item now, or at ``delay`` seconds from now."""

    @abstractmethod
    def stats(self) -> dict[str, int | float | str]:
        """Engine statistics, memcached field names where they apply."""

    def mark_stale(self, key: bytes, cas: int = 0, exptime: float | None = None) -> Status:
        """Meta-protocol invalidation: keep the item but mark it stale (default: delete)."""
        return self.delete(key, cas)

    def items_snapshot(self) -> dict[str, int]:
        """Per-class item statistics for ``stats items`` (engines may return {})."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (files, connections)."""

    # Convenience wrappers (the names of the memcached commands).
    def set(self, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0) -> Status:
        return self.store(Mode.SET, key, value, flags, exptime)[0]

    def add(self, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0) -> Status:
        return self.store(Mode.ADD, key, value, flags, exptime)[0]

    def replace(self, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0) -> Status:
        return self.store(Mode.REPLACE, key, value, flags, exptime)[0]

    def append(self, key: bytes, value: bytes) -> Status:
        return self.store(Mode.APPEND, key, value)[0]

    def prepend(self, key: bytes, value: bytes) -> Status:
        return self.store(Mode.PREPEND, key, value)[0]

    def cas(self, key: bytes, value: bytes, cas: int, flags: int = 0, exptime: float = 0.0) -> Status:
        return self.store(Mode.CAS, key, value, flags, exptime, cas)[0]

    def incr(self, key: bytes, delta: int) -> int | None:
        status, value, _ = self.arith(key, delta, True)
        return value if status == Status.STORED else None

    def decr(self, key: bytes, delta: int) -> int | None:
        status, value, _ = self.arith(key, delta, False)
        return value if status == Status.STORED else None


def parse_counter(value: bytes) -> int | None:
    """A stored value as memcached's incr/decr reads it (strtoull: leading space, trailing junk
    after whitespace ok); None when it is not a number below 2**64."""
    parts = value.split(None, 1)
    if not parts:
        return None
    head = parts[0]
    if head.startswith(b"+"):
        head = head[1:]
    if not head.isdigit():
        return None
    n = int(head)
    return n if n < 1 << 64 else None
