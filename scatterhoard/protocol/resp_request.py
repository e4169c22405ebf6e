"""Sans-IO parser of redis commands, the server/proxy side: :class:`RequestParser`.

A command is an array of bulk strings, or an inline line split like redis
does (:func:`split_inline`). Errors use redis's wording (see
:mod:`.resp_parser` for the buffering and error rules shared with the reply
parser).
"""

from __future__ import annotations

import re

from .resp_parser import (
    ERR_BULK_COUNT_TOO_BIG,
    ERR_BULK_LENGTH,
    ERR_INLINE_TOO_BIG,
    ERR_MBULK_COUNT_TOO_BIG,
    ERR_MULTIBULK_LENGTH,
    ERR_UNBALANCED_QUOTES,
    MAX_BULK,
    MAX_ELEMENTS,
    MAX_INLINE,
    RespProtocolError,
    _Buffered,
    _show,
)

_SLOW_INLINE = re.compile(b"[\"'\x0b\x0c\x00]")
_SPACE = frozenset(b" \t\n\r\x0b\x0c")
_PLAIN_RUN = re.compile(b"[^ \t\n\r\"']+")
_DQ_RUN = re.compile(b'[^\\\\"]+')
_SQ_RUN = re.compile(b"[^\\\\']+")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command into arguments the way redis does (``sdssplitargs``).

    Arguments are separated by blanks. ``"double quotes"`` take the escapes
    ``\\n \\r \\t \\b \\a \\xHH`` (any other escaped byte stands for itself);
    ``'single quotes'`` only ``\\'``. A closing quote must be followed by a
    blank or the end. A NUL byte ends the line. Unbalanced quotes raise
    ProtocolError("Protocol error: unbalanced quotes in request").
    """
    if _SLOW_INLINE.search(line) is None:
        return line.split()
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    argv: list[bytes] = []
    size = len(line)
    i = 0
    while True:
        while i < size and line[i] in _SPACE:
            i += 1
        if i >= size:
            return argv
        current = bytearray()
        while i < size:
            byte = line[i]
            if byte == 34:  # "
                i = _double_quoted(line, i + 1, current)
                break
            if byte == 39:  # '
                i = _single_quoted(line, i + 1, current)
                break
            if byte in b" \t\n\r":
                i += 1
                break
            match = _PLAIN_RUN.match(line, i)
            assert match is not None
            current += match.group()
            i = match.end()
        argv.append(bytes(current))


def _closing_quote(line: bytes, i: int) -> int:
    """Index after the closing quote at ``i``; it must be followed by a blank or the end."""
    if i + 1 < len(line) and line[i + 1] not in _SPACE:
        raise RespProtocolError(ERR_UNBALANCED_QUOTES)
    return i + 1


def _double_quoted(line: bytes, i: int, current: bytearray) -> int:
    size = len(line)
    while i < size:
        byte = line[i]
        if byte == 92:  # backslash
            if i + 3 < size and line[i + 1] == 120 and line[i + 2] in _HEX and line[i + 3] in _HEX:
                current.append(int(line[i + 2:i + 4], 16))
                i += 4
            elif i + 1 < size:
                escaped = line[i + 1]
                current.append(_ESCAPES.get(escaped, escaped))
                i += 2
            else:
                break
        elif byte == 34:
            return _closing_quote(line, i)
        else:
            match = _DQ_RUN.match(line, i)
            assert match is not None
            current += match.group()
            i = match.end()
    raise RespProtocolError(ERR_UNBALANCED_QUOTES)


def _single_quoted(line: bytes, i: int, current: bytearray) -> int:
    size = len(line)
    while i < size:
        byte = line[i]
        if byte == 92 and i + 1 < size and line[i + 1] == 39:
            current.append(39)
            i += 2
        elif byte == 39:
            return _closing_quote(line, i)
        elif byte == 92:
            current.append(92)
            i += 1
        else:
            match = _SQ_RUN.match(line, i)
            assert match is not None
            current += match.group()
            i = match.end()
    raise RespProtocolError(ERR_UNBALANCED_QUOTES)


class RequestParser(_Buffered[list[bytes]]):
    """Incremental parser of client commands, as a redis server reads them.

    ``feed(data)`` returns the complete commands, each a ``list[bytes]``
    (never empty). A command is an array of bulk strings (``*2\\r\\n$3\\r\\nGET
    ...``) or, when it does not start with ``*``, an inline command line
    (``PING\\r\\n``, ``SET a "b c"\\n``; see :func:`split_inline`). Empty
    arrays (``*0``, ``*-1``) and blank inline lines are skipped, as redis does.

    Errors carry redis's wording: ``Protocol error: invalid multibulk
    length``, ``invalid bulk length``, ``expected '$', got 'x'``,
    ``unbalanced quotes in request``, ``too big inline request``, ``too big
    mbulk count string``, ``too big bulk count string``.
    """

    __slots__ = ("_args", "_max_bulk", "_max_elements", "_remaining")

    def __init__(self, max_bulk: int = MAX_BULK, max_elements: int = MAX_ELEMENTS,
                 max_inline: int = MAX_INLINE) -> None:
        super().__init__(max_line=max_inline)
        self._max_bulk = max_bulk
        self._max_elements = max_elements
        self._args: list[bytes] | None = None
        self._remaining = 0

    def _line_error(self) -> str:
        if self._args is None:
            return ERR_INLINE_TOO_BIG if self._chunks and self._chunks[0][:1] != b"*" else ERR_MBULK_COUNT_TOO_BIG
        return ERR_BULK_COUNT_TOO_BIG

    def _parse(self, src: bytes, out: list[list[bytes]]) -> int:
        pos = 0
        end = len(src)
        find = src.find
        max_line = self._max_line
        max_bulk = self._max_bulk
        args = self._args
        remaining = self._remaining
        try:
            while True:
                if args is None:
                    if pos >= end:
                        return pos
                    if src[pos] != 42:  # '*'
                        nl = find(b"\n", pos)
                        if nl < 0:
                            if end - pos > max_line:
                                raise RespProtocolError(ERR_INLINE_TOO_BIG)
                            self._wait_nl = True
                            self._need = 0
                            return pos
                        stop = nl - 1 if nl > pos and src[nl - 1] == 13 else nl
                        argv = split_inline(src[pos:stop])
                        pos = nl + 1
                        if argv:
                            out.append(argv)
                        continue
                    nl = find(b"\r\n", pos + 1)
                    if nl < 0:
                        if end - pos > max_line:
                            raise RespProtocolError(ERR_MBULK_COUNT_TOO_BIG)
                        self._wait_nl = True
                        self._need = 0
                        return pos
                    line = src[pos + 1:nl]
                    if line.isdigit() and len(line) < 19:
                        remaining = int(line)
                        if remaining > self._max_elements:
                            raise RespProtocolError(ERR_MULTIBULK_LENGTH)
                    elif line == b"-1":
                        remaining = 0
                    else:
                        raise RespProtocolError(ERR_MULTIBULK_LENGTH)
                    pos = nl + 2
                    if not remaining:
                        continue
                    args = []
                # Inside a multibulk: one "$<len>\r\n<bytes>\r\n" per argument.
                while remaining:
                    if pos >= end:
                        self._wait_nl = False
                        self._need = 1
                        return pos
                    if src[pos] != 36:  # '$'
                        raise RespProtocolError(f"Protocol error: expected '$', got '{_show(src[pos])}'")
                    nl = find(b"\r\n", pos + 1)
                    if nl < 0:
                        if end - pos > max_line:
                            raise RespProtocolError(ERR_BULK_COUNT_TOO_BIG)
                        self._wait_nl = True
                        self._need = 0
                        return pos
                    line = src[pos + 1:nl]
                    if not line.isdigit() or len(line) > 18:
                        raise RespProtocolError(ERR_BULK_LENGTH)
                    size = int(line)
                    if size > max_bulk:
                        raise RespProtocolError(ERR_BULK_LENGTH)
                    start = nl + 2
                    stop = start + size
                    if stop + 2 > end:
                        self._wait_nl = False
                        self._need = stop + 2 - pos
                        return pos
                    if src[stop] != 13 or src[stop + 1] != 10:
                        raise RespProtocolError("Protocol error: bulk string not followed by CRLF")
                    args.append(src[start:stop])
                    pos = stop + 2
                    remaining -= 1
                out.append(args)
                args = None
        finally:
            self._args = args
            self._remaining = remaining
