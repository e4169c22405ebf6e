"""Storage engines behind one small interface (:class:`Store`)."""

from .base import Item, Mode, Status, Store, absolute_exptime, remaining_ttl
from .memory import MemoryStore

__all__ = ["Item", "MemoryStore", "Mode", "Status", "Store", "absolute_exptime", "remaining_ttl"]
