"""The storage interface every engine implements.

Keys and values are bytes. Expiry times handed to an engine are absolute
(seconds since the epoch, float; ``0`` means never); :func:`absolute_exptime`
turns memcached's relative/absolute/negative forms into that.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..errors import HoardError
from .item import (
    ITEM_HEADER_SIZE,
    KEY_MAX_LENGTH,
    REALTIME_MAXDELTA,
    Item,
    Mode,
    Status,
    absolute_exptime,
    flush_delay,
    parse_counter,
    plan_arith,
    plan_store,
    remaining_ttl,
)

__all__ = ["CAPABILITIES", "ITEM_HEADER_SIZE", "KEY_MAX_LENGTH", "REALTIME_MAXDELTA", "AccessDenied", "EngineConfig",
           "EngineError", "Item", "Mode", "Status", "Store", "Unsupported", "absolute_exptime", "flush_delay",
           "parse_counter", "plan_arith", "plan_store", "remaining_ttl"]

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

    def mark_win(self, key: bytes, item: Item) -> None:
        """Meta protocol: the recache token (``W``) for this version of ``key`` was handed out.

        Later ``mg`` requests see ``item.win`` set (``Z``). Engines that keep items
        outside memory override this to persist the mark.
        """
        item.win = True

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


