"""Storage engines behind one small interface (:class:`Store`)."""

from .base import (
    CAPABILITIES,
    AccessDenied,
    EngineConfig,
    EngineError,
    Item,
    Mode,
    Status,
    Store,
    Unsupported,
    absolute_exptime,
    remaining_ttl,
)
from .memory import MemoryStore

__all__ = ["CAPABILITIES", "AccessDenied", "EngineConfig", "EngineError", "Item", "MemoryStore", "Mode",
           "Status", "Store", "Unsupported", "absolute_exptime", "remaining_ttl"]
