"""Sans-IO RESP parser of values: :class:`RespParser` (any RESP2/RESP3 value,
the client side), plus what it shares with
:class:`scatterhoard.protocol.resp_request.RequestParser` (commands, the
server/proxy side): limits, error texts, buffering.

Both parsers are fed bytes as they arrive, in pieces cut anywhere, and return every
complete top-level value. Work is linear in the bytes fed: a partial bulk is
not looked at again until enough bytes have arrived to complete it, a partial
line not until a newline arrives, and the elements of a partial aggregate
already parsed are kept, never parsed again.

Bad input raises :class:`RespProtocolError` (a
:class:`scatterhoard.errors.ProtocolError`) with redis's own wording where
redis has one, so a server can reply ``-ERR <message>`` and close. Values
completed earlier in the same :meth:`feed` call are on the exception's
``parsed`` list (redis runs the commands that precede the bad one). After an
error the parser is unusable: every later :meth:`feed` raises again.
"""

from __future__ import annotations

import re
from typing import Final, Generic, TypeVar, cast

from ..errors import ProtocolError
from .resp_types import (
    Attributed,
    BigNumber,
    BlobError,
    Error,
    Push,
    RespSet,
    RespValue,
    SimpleString,
    Verbatim,
)

MAX_BULK: Final = 512 * 1024 * 1024
"""redis's default ``proto-max-bulk-len``."""
MAX_INLINE: Final = 64 * 1024
"""redis's ``PROTO_INLINE_MAX_SIZE``: longest inline command / header line."""
MAX_ELEMENTS: Final = 2**31 - 1
"""redis's limit on a multibulk count (``INT_MAX``)."""
MAX_DEPTH: Final = 64
"""Default limit on nested aggregates in a reply (redis's own replies use < 10)."""

ERR_BULK_LENGTH: Final = "Protocol error: invalid bulk length"
ERR_MULTIBULK_LENGTH: Final = "Protocol error: invalid multibulk length"
ERR_UNBALANCED_QUOTES: Final = "Protocol error: unbalanced quotes in request"
ERR_INLINE_TOO_BIG: Final = "Protocol error: too big inline request"
ERR_MBULK_COUNT_TOO_BIG: Final = "Protocol error: too big mbulk count string"
ERR_BULK_COUNT_TOO_BIG: Final = "Protocol error: too big bulk count string"


class RespProtocolError(ProtocolError):
    """A :class:`ProtocolError` that also carries the values parsed before it."""

    def __init__(self, message: str, parsed: list[RespValue] | list[list[bytes]] | None = None) -> None:
        super().__init__(message)
        self.parsed: list[RespValue] | list[list[bytes]] = parsed if parsed is not None else []


def _show(byte: int) -> str:
    """A byte as redis prints it in ``expected '$', got 'x'`` (escaped if unprintable)."""
    return chr(byte) if 32 <= byte < 127 else f"\\x{byte:02x}"


_T = TypeVar("_T")


class _Buffered(Generic[_T]):
    """The byte accumulation and the ``feed`` loop shared by both parsers (``_T``: what they return).

    Unparsed bytes are kept as a list of chunks and only joined when the
    parser said progress is possible: ``_need`` bytes are buffered (a bulk
    body), or a newline arrived (``_wait_nl``, a line).
    """

    __slots__ = ("_chunks", "_error", "_have", "_max_line", "_need", "_wait_nl")

    def __init__(self, max_line: int) -> None:
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0
        self._wait_nl = False
        self._max_line = max_line
        self._error: str | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> list[_T]:
        """Add bytes; return every value (every command, for a request parser) they complete, in order."""
        src = self._take(data)
        out: list[_T] = []
        if src is None:
            return out
        try:
            pos = self._parse(src, out)
        except RespProtocolError as exc:
            self._error = str(exc)
            self._chunks = []
            exc.parsed = cast("list[RespValue] | list[list[bytes]]", out)
            raise
        self._keep(src, pos)
        return out

    def _parse(self, src: bytes, out: list[_T]) -> int:
        """Parse ``src``, appending what completes to ``out``; return where the incomplete rest starts."""
        raise NotImplementedError

    def _take(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """The bytes to parse now, or None when nothing can complete yet."""
        if self._error is not None:
            raise RespProtocolError(self._error)
        if type(data) is not bytes:
            data = bytes(data)
        if not self._chunks:
            return data or None
        if not data:
            return None
        self._chunks.append(data)
        self._have += len(data)
        if self._have < self._need:
            return None
        if self._wait_nl and b"\n" not in data:
            if self._have > self._max_line:
                self._fail(self._line_error())
            return None
        src = b"".join(self._chunks)
        self._chunks = []
        return src

    def _keep(self, src: bytes, pos: int) -> None:
        """Remember ``src[pos:]``, the start of an incomplete value."""
        if pos < len(src):
            rest = src[pos:] if pos else src
            self._chunks = [rest]
            self._have = len(rest)
        else:
            self._have = 0
            self._need = 0
            self._wait_nl = False

    def _line_error(self) -> str:
        return ERR_INLINE_TOO_BIG

    def _fail(self, message: str) -> None:
        self._error = message
        self._chunks = []
        raise RespProtocolError(message)

    @property
    def buffered(self) -> int:
        """How many bytes are held, waiting for the rest of a value."""
        return self._have if self._chunks else 0


class _Frame:
    """An aggregate being filled in: its kind byte, what it still needs, its items."""

    __slots__ = ("attr", "items", "kind", "remaining")

    def __init__(self, kind: int, remaining: int, items: list[RespValue]) -> None:
        self.kind = kind
        self.remaining = remaining
        self.items = items
        self.attr: list[dict[RespValue, RespValue]] | None = None


_DOUBLE = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?i:inf|nan)")

# Type bytes.
_BULK, _ARRAY, _SIMPLE, _INT, _ERROR = 36, 42, 43, 58, 45  # $ * + : -
_NULL, _BOOL, _DOUBLE_T, _BIGNUM = 95, 35, 44, 40  # _ # , (
_BLOB_ERR, _VERBATIM = 33, 61  # ! =
_MAP, _SET, _PUSH, _ATTR = 37, 126, 62, 124  # % ~ > |
_BLOB_KINDS = frozenset((_BULK, _BLOB_ERR, _VERBATIM))
_AGGREGATE_KINDS = frozenset((_ARRAY, _MAP, _SET, _PUSH, _ATTR))


def _int_or_none(line: bytes) -> int | None:
    """A decimal integer with an optional sign (``string2ll`` plus ``+``), else None."""
    if line.isdigit() or (len(line) > 1 and line[0] in b"+-" and line[1:].isdigit()):
        try:
            return int(line)
        except ValueError:  # more digits than int() converts (sys.int_info.default_max_str_digits)
            return None
    return None


def _hashable(key: RespValue) -> RespValue:
    """A map key Python can hash: aggregates become tuples."""
    if isinstance(key, dict):
        return tuple((_hashable(k), _hashable(v)) for k, v in key.items())
    if isinstance(key, list | tuple):
        return tuple(_hashable(k) for k in key)
    if isinstance(key, Attributed):
        return _hashable(key.value)
    return key


def _attach(value: RespValue, attrs: list[dict[RespValue, RespValue]]) -> Attributed:
    """Wrap ``value`` in the attribute maps read before it (the first read is outermost)."""
    for attributes in reversed(attrs):
        value = Attributed(value, attributes)
    assert isinstance(value, Attributed)
    return value


def _build_map(items: list[RespValue]) -> dict[RespValue, RespValue]:
    try:
        return dict(zip(items[::2], items[1::2], strict=True))
    except TypeError:
        return {_hashable(k): v for k, v in zip(items[::2], items[1::2], strict=True)}


class RespParser(_Buffered[RespValue]):
    """Incremental parser of RESP2 and RESP3 values (replies, or full-duplex RESP3).

    ``feed(data)`` returns the complete top-level values (see
    :mod:`scatterhoard.protocol.resp_types` for the Python types). RESP3
    attributes are dropped, or with ``keep_attributes=True`` the value that
    follows one is returned as :class:`Attributed`.

    Limits: ``max_bulk`` bytes per bulk string / blob error / verbatim string
    and per line, ``max_depth`` nested aggregates, ``max_elements`` per
    aggregate (pairs for maps).
    """

    __slots__ = ("_keep_attributes", "_max_bulk", "_max_depth", "_max_elements", "_stack", "_top_attr")

    def __init__(self, max_bulk: int = MAX_BULK, max_depth: int = MAX_DEPTH,
                 max_elements: int = MAX_ELEMENTS, keep_attributes: bool = False) -> None:
        super().__init__(max_line=max_bulk)
        self._max_bulk = max_bulk
        self._max_depth = max_depth
        self._max_elements = max_elements
        self._keep_attributes = keep_attributes
        self._stack: list[_Frame] = []
        self._top_attr: list[dict[RespValue, RespValue]] | None = None

    def _line_error(self) -> str:
        return "Protocol error: too big line"

    def _parse(self, src: bytes, out: list[RespValue]) -> int:
        pos = 0
        end = len(src)
        find = src.find
        stack = self._stack
        max_bulk = self._max_bulk
        value: RespValue
        while pos < end:
            nl = find(b"\r\n", pos + 1)
            if nl < 0:
                if end - pos > max_bulk:
                    raise RespProtocolError(self._line_error())
                self._wait_nl = True
                self._need = 0
                return pos
            kind = src[pos]
            if kind in _BLOB_KINDS:
                line = src[pos + 1:nl]
                if line.isdigit() and len(line) < 19:
                    size = int(line)
                    if size > max_bulk:
                        raise RespProtocolError(ERR_BULK_LENGTH)
                elif line == b"-1" and kind == _BULK:
                    value = None
                    pos = nl + 2
                    size = -1
                else:
                    raise RespProtocolError(ERR_BULK_LENGTH)
                if size >= 0:
                    start = nl + 2
                    stop = start + size
                    if stop + 2 > end:
                        self._need = stop + 2 - pos
                        self._wait_nl = False
                        return pos
                    if src[stop] != 13 or src[stop + 1] != 10:
                        raise RespProtocolError("Protocol error: bulk string not followed by CRLF")
                    if kind == _BULK:
                        value = src[start:stop]
                    elif kind == _BLOB_ERR:
                        value = BlobError(src[start:stop])
                    else:
                        if size < 4 or src[start + 3] != 58:  # ':'
                            raise RespProtocolError("Protocol error: invalid verbatim string")
                        value = Verbatim(src[start:start + 3], src[start + 4:stop])
                    pos = stop + 2
            elif kind in _AGGREGATE_KINDS:
                line = src[pos + 1:nl]
                pos = nl + 2
                if line.isdigit() and len(line) < 19:
                    count = int(line)
                    if count > self._max_elements:
                        raise RespProtocolError(ERR_MULTIBULK_LENGTH)
                elif line == b"-1" and kind == _ARRAY:
                    count = -1
                else:
                    raise RespProtocolError(ERR_MULTIBULK_LENGTH)
                if count > 0:
                    if len(stack) >= self._max_depth:
                        raise RespProtocolError(
                            f"Protocol error: aggregates nested deeper than {self._max_depth}")
                    if kind == _ARRAY:
                        stack.append(_Frame(kind, count, []))
                    elif kind != _SET and kind != _PUSH:
                        stack.append(_Frame(kind, 2 * count, []))
                    elif kind == _SET:
                        stack.append(_Frame(kind, count, RespSet()))
                    else:
                        stack.append(_Frame(kind, count, Push()))
                    continue
                if count < 0:
                    value = None
                elif kind == _ARRAY:
                    value = []
                elif kind == _MAP:
                    value = {}
                elif kind == _SET:
                    value = RespSet()
                elif kind == _PUSH:
                    value = Push()
                else:
                    self._set_attr({})
                    continue
            else:
                line = src[pos + 1:nl]
                pos = nl + 2
                if kind == _SIMPLE:
                    value = SimpleString(line)
                elif kind == _INT:
                    number = _int_or_none(line)
                    if number is None:
                        raise RespProtocolError("Protocol error: invalid integer")
                    value = number
                elif kind == _ERROR:
                    value = Error(line)
                elif kind == _NULL:
                    if line:
                        raise RespProtocolError("Protocol error: invalid null")
                    value = None
                elif kind == _BOOL:
                    if line == b"t":
                        value = True
                    elif line == b"f":
                        value = False
                    else:
                        raise RespProtocolError("Protocol error: invalid boolean")
                elif kind == _DOUBLE_T:
                    if _DOUBLE.fullmatch(line) is None:
                        raise RespProtocolError("Protocol error: invalid double")
                    value = float(line)
                elif kind == _BIGNUM:
                    number = _int_or_none(line)
                    if number is None:
                        raise RespProtocolError("Protocol error: invalid big number")
                    value = BigNumber(number)
                else:
                    raise RespProtocolError(f"Protocol error, got '{_show(kind)}' as reply type byte")

            # A value is complete: hand it to its aggregate, or out.
            while True:
                if not stack:
                    if self._top_attr is not None:
                        value = _attach(value, self._top_attr)
                        self._top_attr = None
                    out.append(value)
                    break
                frame = stack[-1]
                if frame.attr is not None:
                    value = _attach(value, frame.attr)
                    frame.attr = None
                frame.items.append(value)
                frame.remaining -= 1
                if frame.remaining:
                    break
                stack.pop()
                if frame.kind == _MAP:
                    value = _build_map(frame.items)
                elif frame.kind == _ATTR:
                    self._set_attr(_build_map(frame.items))
                    break
                else:
                    value = frame.items
        return pos

    def _set_attr(self, attrs: dict[RespValue, RespValue]) -> None:
        """An attribute map was read: keep it for the next value at its level."""
        if not self._keep_attributes:
            return
        if self._stack:
            frame = self._stack[-1]
            if frame.attr is None:
                frame.attr = [attrs]
            else:
                frame.attr.append(attrs)
        elif self._top_attr is None:
            self._top_attr = [attrs]
        else:
            self._top_attr.append(attrs)

    @property
    def depth(self) -> int:
        """How many aggregates are open (0 between top-level values)."""
        return len(self._stack)


def decode(data: bytes, keep_attributes: bool = False) -> RespValue:
    """Parse exactly one complete value from ``data`` (ProtocolError otherwise)."""
    parser = RespParser(keep_attributes=keep_attributes)
    values = parser.feed(data)
    if len(values) != 1 or parser.buffered or parser.depth:
        raise RespProtocolError(f"Protocol error: expected one complete value, got {len(values)}")
    return values[0]
