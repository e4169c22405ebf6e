"""What the RESP session modules share: the command record, early replies, redis's
integer parsing and error texts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..protocol.resp import error

if TYPE_CHECKING:
    from .resp import RespSession

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

NOT_INTEGER = "value is not an integer or out of range"
SYNTAX_ERROR = "syntax error"
TOO_BIG = "string exceeds maximum allowed size (proto-max-bulk-len)"

_LONG_LONG = re.compile(rb"0|-?[1-9][0-9]*")
_CRLF_TO_SPACES = bytes.maketrans(b"\r\n", b"  ")

Handler = Callable[["RespSession", list[bytes]], bytes]


class Reply(Exception):
    """Raised by a handler to answer at once with ``reply`` (an encoded error, usually)."""

    def __init__(self, reply: bytes) -> None:
        super().__init__()
        self.reply = reply


def err(message: str | bytes) -> Reply:
    """An ``-ERR <message>`` reply to raise; CR and LF become spaces, as in redis."""
    data = message.encode() if isinstance(message, str) else message
    return Reply(error(b"ERR " + data.translate(_CRLF_TO_SPACES)))


def coded(message: str) -> Reply:
    """An error reply with its own code (``NOPROTO ...``, ``WRONGPASS ...``)."""
    return Reply(error(message))


def parse_ll(data: bytes) -> int | None:
    """redis's ``string2ll``: a canonical signed 64-bit decimal (no sign +, blanks, leading 0)."""
    if len(data) >= 21 or _LONG_LONG.fullmatch(data) is None:
        return None
    value = int(data)
    return value if INT64_MIN <= value <= INT64_MAX else None


def need_ll(data: bytes) -> int:
    value = parse_ll(data)
    if value is None:
        raise err(NOT_INTEGER)
    return value


def cstr(data: bytes) -> bytes:
    """``data`` as C code sees it: up to the first NUL."""
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def now_ms() -> int:
    return int(time.time() * 1000)


def to_ms(exptime: float) -> int:
    """A store's absolute expiry (float seconds) in redis's integer milliseconds.

    Exact to the millisecond for any time before the year 70000; later ones
    (redis accepts up to 2**63 - 1 ms) lose precision in the float.
    """
    return min(int(round(exptime * 1000)), INT64_MAX)


@dataclass(eq=False)
class Command:
    """One entry of the command table (what ``COMMAND INFO`` shows, and the handler)."""

    name: str  # redis's "fullname": "get", "client|setname"
    arity: int  # > 0 exactly that many arguments (name included), < 0 at least -arity
    handler: Handler
    flags: tuple[str, ...] = ()
    keys: tuple[int, int, int] = (0, 0, 0)  # first, last (-1: to the end), step
    categories: tuple[str, ...] = ()
    subcommands: dict[bytes, Command] | None = None
    queued: bool = True  # False: runs at once inside MULTI (EXEC, DISCARD, WATCH ...)
