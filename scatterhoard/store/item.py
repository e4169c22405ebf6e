"""The parts of the storage interface on every request: items, statuses, expiry and store rules.

Compiled with mypyc (see :mod:`scatterhoard._build`); :mod:`.base` re-exports
everything here, so engines import from ``scatterhoard.store`` as before.
Pure logic only: no engine state.
"""

from __future__ import annotations

import time
from enum import IntEnum
from typing import Final

from mypy_extensions import mypyc_attr

#: memcached: relative expiry times are at most 30 days; larger ones are unix times.
REALTIME_MAXDELTA: Final = 60 * 60 * 24 * 30
#: memcached's per-item header (48) + cas (8) + key NUL (1) + value CRLF (2).
ITEM_HEADER_SIZE: Final = 59
KEY_MAX_LENGTH: Final = 250


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


def get_reply(key: bytes, flags: int, value: bytes) -> bytes:
    """The text protocol's answer to ``get <key>`` for a hit (:attr:`Item.value` reads the value
    back out of it: it ends with the value, ``\r\n`` and ``END\r\n``)."""
    return b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (key, flags, len(value), value)


@mypyc_attr(allow_interpreted_subclasses=True)
class Item:
    """One cached value with its metadata (an engine may use its own class).

    The memory engine's text gets keep the reply instead of the value (:meth:`text_reply`):
    built on the first get, it is written as is by every later one, with no formatting and no
    copy. :attr:`value` is then a slice of it, which the rarer paths (gets, meta, binary,
    RESP) pay for. An item's key and flags never change once it is stored there (a store makes
    a new item), so the reply stays true; assigning :attr:`value` drops it.
    """

    __slots__ = ("_value", "reply", "nbytes", "flags", "exptime", "cas", "atime", "fetched", "stale", "win",
                 "active")

    def __init__(self, value: bytes, flags: int, exptime: float, cas: int, atime: float) -> None:
        self._value: bytes | None = value
        #: ``VALUE <key> <flags> <nbytes>\r\n<value>\r\nEND\r\n`` once :meth:`text_reply` built it
        self.reply: bytes | None = None
        #: len(value), for the accounting (no slice)
        self.nbytes = len(value)
        self.flags = flags
        self.exptime = exptime
        self.cas = cas
        self.atime = atime
        self.fetched = False
        self.stale = False
        self.win = False
        #: fetched since it last reached the cold end of an LRU: it gets a second chance there
        self.active = False

    @property
    def value(self) -> bytes:
        value = self._value
        if value is None:  # kept as a text get's reply: its value part
            reply = self.reply
            assert reply is not None
            end = len(reply) - 7  # the value's \r\n, then END\r\n
            return reply[end - self.nbytes:end]
        return value

    @value.setter
    def value(self, value: bytes) -> None:
        self._value = value
        self.nbytes = len(value)
        self.reply = None

    def text_reply(self, key: bytes) -> bytes:
        """The text protocol's whole answer to ``get <key>`` (``key``: the one the item is stored
        under), kept from the first call on in place of the value."""
        reply = self.reply
        if reply is None:
            value = self._value
            assert value is not None
            reply = self.reply = get_reply(key, self.flags, value)
            self._value = None
        return reply


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


_U64: Final = (1 << 64) - 1


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
