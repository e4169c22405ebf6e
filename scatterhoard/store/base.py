"""The storage interface every engine implements.

Keys and values are bytes. Expiry times handed to an engine are absolute
(seconds since the epoch, float; ``0`` means never); :func:`absolute_exptime`
turns memcached's relative/absolute/negative forms into that.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import IntEnum

from ..errors import HoardError

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


#: What an engine may support; an engine lists what it has in :attr:`Store.capabilities`.
#: ``cas``: compare-and-swap (cas/gets-cas, binary CAS, meta C, WATCH);
#: ``append``: append/prepend; ``arith``: incr/decr; ``touch``: touch/gat and new expiries;
#: ``flush``: flush_all.
CAPABILITIES = frozenset({"cas", "append", "arith", "touch", "flush"})


class EngineError(HoardError):
    """An engine (or a handler in front of it) refused an operation.

    The server answers it with the client's protocol's error reply and keeps
    the connection open; the message becomes part of the reply.
    """


class Unsupported(EngineError):
    """The engine lacks the capability the command needs (text ``SERVER_ERROR``,
    binary status 0x83 "Not supported", RESP ``-ERR``)."""


class AccessDenied(EngineError):
    """A handler refused the command (text ``CLIENT_ERROR``, binary 0x20 "Auth error",
    RESP ``-NOPERM``)."""


@dataclass
class EngineConfig:
    """What an engine is built from: ``--engine-opt k=v`` strings and the server's limits.

    An engine class (or factory) with a ``from_config(config)`` classmethod
    gets this; any other engine callable is called with the options as
    keyword arguments (strings). The server then sets ``max_item_size``.
    """

    options: dict[str, str] = field(default_factory=dict)
    #: ``-m``: the memory budget in bytes (memory engines; the tiered engine's front by default)
    memory_bytes: int = 64 * 1024 * 1024
    #: ``-I``: the largest item (key + value + header)
    item_size_max: int = 1024 * 1024


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

    Class attributes: ``max_item_size`` (set by the server from ``-I``; key +
    value + 59 bytes must fit), ``blocking`` (True: calls may block, the server
    runs them in worker threads), ``capabilities`` (what of
    :data:`CAPABILITIES` the engine supports). Engines may also offer
    ``sweep(budget) -> int`` (called every second to reclaim expired items)
    and ``bind_loop(loop)`` (called with the server's event loop at start).
    Keys are bytes of at most 250; expiry times are absolute unix times (0:
    never, negative: already expired).
    """

    max_item_size: int = 1024 * 1024
    #: True when calls may block (disk, network): the server then runs them in worker threads.
    blocking: bool = False
    #: What the engine supports; a command needing anything else gets the protocol's
    #: "not supported" error (the engine raises :class:`Unsupported`).
    capabilities: frozenset[str] = CAPABILITIES

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


def plan_store(mode: Mode, old: Item | None, key: bytes, value: bytes, flags: int, exptime: float,
               cas: int, invalidate: bool, max_item_size: int) -> tuple[Status | None, bytes, int, float, bool]:
    """memcached's decision for a set-like command over the live item ``old``.

    Returns ``(status, value, flags, exptime, stale)``: a status to answer at
    once without writing (None: write ``value``/``flags``/``exptime``, the
    item marked stale when ``stale``). The caller does the side effects: a
    failed (TOO_LARGE) SET removes ``old``; a new cas is given to the write.
    """
    if len(key) + len(value) + ITEM_HEADER_SIZE > max_item_size:
        return Status.TOO_LARGE, value, flags, exptime, False
    stale = False
    if mode == Mode.CAS or cas:
        if old is None:
            return Status.NOT_FOUND, value, flags, exptime, False
        if old.cas != cas:
            if not (invalidate and cas < old.cas):
                return Status.EXISTS, value, flags, exptime, False
            stale = True
    if mode == Mode.ADD:
        if old is not None:
            return Status.NOT_STORED, value, flags, exptime, False
    elif mode == Mode.REPLACE:
        if old is None:
            return Status.NOT_STORED, value, flags, exptime, False
    elif mode == Mode.APPEND or mode == Mode.PREPEND:
        if old is None:
            return Status.NOT_STORED, value, flags, exptime, False
        value = old.value + value if mode == Mode.APPEND else value + old.value
        if len(key) + len(value) + ITEM_HEADER_SIZE > max_item_size:
            return Status.NOT_STORED, value, flags, exptime, False  # the combined item cannot be allocated
        flags, exptime = old.flags, old.exptime
    return None, value, flags, exptime, stale


_U64 = (1 << 64) - 1


def plan_arith(current: bytes, delta: int, incr: bool) -> tuple[int, bytes] | None:
    """incr/decr of a stored value: (new number, new value bytes), None when not numeric.

    64-bit wrap upwards, floor 0 downwards; a shorter result is space-padded to
    the old length, as memcached rewrites the value in place.
    """
    number = parse_counter(current)
    if number is None:
        return None
    number = (number + delta) & _U64 if incr else max(number - delta, 0)
    text = b"%d" % number
    if len(text) < len(current):
        text = text.ljust(len(current))
    return number, text
