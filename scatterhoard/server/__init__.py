"""The cache server: asyncio glue, protocol sessions, listeners, stats."""

from .app import Server
from .stats import Settings

__all__ = ["Server", "Settings"]
