"""Build your own cache server: the public engine and handler API.

An engine is a :class:`Store` (the interface every protocol front end
drives). The quickest way to write one is :class:`RecordStore`: implement
``load``/``save``/``remove``/``clear`` and get memcached's semantics;
:class:`AsyncRecordStore` takes ``async def`` primitives. Engines are found
by ``hoard server --engine NAME`` through the ``scatterhoard.engines`` entry
point group or a ``package.module:Class`` path; :func:`run_server` runs one
with every ``hoard server`` flag. :class:`Handler` intercepts every command
of every protocol. See ``docs/engines.md``.
"""

from __future__ import annotations

from ..store.base import (
    CAPABILITIES,
    AccessDenied,
    EngineConfig,
    EngineError,
    Item,
    Mode,
    Status,
    Store,
    Unsupported,
)
from ..store.memory import MemoryStore
from .handlers import Call, Context, Forward, HandledStore, Handler, current_context
from .loader import create_engine, create_handler
from .record import AsyncRecordStore, RecordStore
from .runner import run_server

__all__ = [
    "CAPABILITIES", "AccessDenied", "AsyncRecordStore", "Call", "Context", "EngineConfig", "EngineError",
    "Forward", "HandledStore", "Handler", "Item", "MemoryStore", "Mode", "RecordStore", "Status", "Store",
    "Unsupported", "create_engine", "create_handler", "current_context", "run_server",
]
