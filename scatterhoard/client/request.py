"""What the client's sans-IO layer hands around: :class:`Request` and the result codes.

See :mod:`scatterhoard.client.codec` for the results each kind of request decodes to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

__all__ = ["EXISTS", "NOT_FOUND", "NOT_STORED", "OK", "Decode", "Request"]

OK: Final = 0
NOT_STORED: Final = 1
EXISTS: Final = 2
NOT_FOUND: Final = 3

Decode = Callable[["Request"], object]


class Request:
    """One server's share of a command: bytes to send and how to read the answer."""

    __slots__ = ("decode", "done", "replies", "what")

    def __init__(self, what: str, decode: Decode) -> None:
        self.what = what
        self.decode = decode
        self.replies: list[object] = []
        self.done = False

    def result(self) -> object:
        """The decoded result (call once ``done``); raises CacheError for a refusal."""
        return self.decode(self)

