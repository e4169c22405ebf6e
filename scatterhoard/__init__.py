"""scatterhoard: a distributed cache toolkit.

Speaks memcached (text, meta, binary), and later RESP and distcache, over one
sans-IO protocol core shared by the server, proxy, clients and tools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import AsyncClient, AsyncSessionCache, Client, SessionCache

__version__ = "0.1.0"

__all__ = ["AsyncClient", "AsyncSessionCache", "Client", "SessionCache", "__version__"]


def __getattr__(name: str) -> Any:
    # The clients are imported on first use, so the command-line tools start without them.
    if name in ("Client", "AsyncClient", "SessionCache", "AsyncSessionCache"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
