"""memcached text protocol, client side, sans-IO: request encoders and a reply parser.

Text replies are not self-describing (``END`` ends a retrieval, a bare number
answers incr), so the caller says what it expects, in request order, with
:meth:`TextReplyParser.expect`; :meth:`TextReplyParser.feed` then returns the
completed replies in that order. Every reply keeps its ``raw`` bytes so a
proxy can forward it untouched. An error line (``ERROR``, ``CLIENT_ERROR
...``, ``SERVER_ERROR ...``) answers any expectation.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum
from typing import Final, NamedTuple

from ..errors import ProtocolError
from .text import at, find_crlf, scan_number, to_int


class Expect(IntEnum):
    """The shape of the reply a request gets."""

    LINE = 0  # storage, delete, incr/decr, touch, flush_all, verbosity, version
    VALUES = 1  # get gets gat gats: VALUE blocks then END
    STATS = 2  # stats: STAT lines then END
    META = 3  # mg ms md ma mn me: one line, VA carries a data block
    NONE = 4  # noreply: nothing comes back


class Value(NamedTuple):
    key: bytes
    flags: int
    value: bytes
    cas: int  # 0 when the request did not ask for it


class LineReply(NamedTuple):
    line: bytes  # without CRLF
    raw: bytes

    @property
    def is_error(self) -> bool:
        return is_error_line(self.line)


class ValuesReply(NamedTuple):
    values: list[Value]
    raw: bytes


class StatsReply(NamedTuple):
    stats: list[tuple[bytes, bytes]]
    raw: bytes


class MetaReply(NamedTuple):
    code: bytes  # HD VA EN NF NS EX MN ME
    flags: list[bytes]  # return flags as sent, e.g. [b"f5", b"c12", b"W"]
    value: bytes | None
    raw: bytes


TextReply = LineReply | ValuesReply | StatsReply | MetaReply

# The parser's hot loop compares plain ints (an IntEnum compare is a generic call when compiled)
# and builds its NamedTuples with tuple.__new__ (a NamedTuple's own __new__ is interpreted code).
_LINE: Final = 0
_VALUES: Final = 1
_STATS: Final = 2
_META: Final = 3
_NONE: Final = 4
_new: Final = tuple.__new__
#: what a parser made with ``keep=False`` puts in a ValuesReply for each value found
UNKEPT: Final = Value(b"", 0, b"", 0)


def _value_line(view: bytes, pos: int, eol: int) -> tuple[int, int, int, int]:
    """``VALUE <key> <flags> <bytes> [<cas>]`` at ``view[pos:eol]``, read in place (compiled: no
    slices, no split): (end of the key, flags, bytes, cas); bytes is -1 when the line is malformed."""
    k = pos + 6
    while k < eol and view[k] != 32:
        k += 1
    if k == pos + 6 or k >= eol:
        return 0, 0, -1, 0
    flags, i = scan_number(view, k + 1, eol)
    if flags < 0 or i >= eol:
        return 0, 0, -1, 0
    size, i = scan_number(view, i + 1, eol)
    if size < 0:
        return 0, 0, -1, 0
    cas = 0
    if i < eol:
        cas, i = scan_number(view, i + 1, eol)
        if cas < 0 or i < eol:
            return 0, 0, -1, 0
    return k, flags, size, cas


def is_error_line(line: bytes) -> bool:
    return line == b"ERROR" or line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR", b"ERROR "))


class TextReplyParser:
    """Incremental parser of server replies, driven by the expectations queued."""

    __slots__ = ("_buf", "_expect", "_values", "_start", "_need", "_keep")
    _values: list[Value] | list[tuple[bytes, bytes]]

    def __init__(self, keep: bool = True) -> None:
        """``keep=False`` is for load generators that only count: every reply is framed and
        checked as usual, but a retrieval's values are all :data:`UNKEPT` and no reply keeps
        its ``raw`` bytes (saves copying what nobody reads)."""
        self._keep = keep
        self._buf = bytearray()
        self._expect: deque[int] = deque()  # Expect values, as ints
        self._values: list[Value] | list[tuple[bytes, bytes]] = []
        self._start = 0  # how far into _buf (the reply being assembled) earlier feeds got
        self._need = 0  # _buf must hold this many bytes before parsing can go on

    def expect(self, kind: Expect) -> None:
        k = int(kind)
        if k != _NONE:
            self._expect.append(k)

    @property
    def pending(self) -> int:
        """Replies still expected."""
        return len(self._expect)

    def feed(self, data: bytes) -> list[TextReply]:
        buf = self._buf
        if buf:  # a reply was cut short: go on only once the bytes it was missing are here
            buf += data
            if len(buf) < self._need:
                return []
            view = bytes(buf)
            buf.clear()
        else:
            view = data
        out: list[TextReply] = []
        reply_start = 0  # where the reply being assembled began in view
        pos = self._start  # how far into it earlier feeds got (VALUE/STAT lines already taken)
        need = 0  # bytes from reply_start the parse needs before it can go on
        expect = self._expect
        end = len(view)
        keep = self._keep
        while expect:
            kind = expect[0]
            if kind == _VALUES and at(view, pos, b"END\r\n"):
                pos += 5  # a retrieval's end, found without a search and a slice
                out.append(_new(ValuesReply, (self._values, view[reply_start:pos] if keep else b"")))
                self._values = []
                expect.popleft()
                reply_start = pos
                continue
            eol = find_crlf(view, pos, end)
            if eol < 0:
                need = end - reply_start + 1
                break
            nxt = eol + 2
            if kind == _VALUES and eol > pos + 6 and at(view, pos, b"VALUE "):
                key_end, flags_v, size, cas = _value_line(view, pos, eol)
                if size < 0:
                    raise ProtocolError(f"bad VALUE line: {view[pos:min(eol, pos + 80)]!r}")
                if end < nxt + size + 2:
                    need = nxt + size + 2 - reply_start
                    break
                if keep:
                    self._values.append(_new(Value, (view[pos + 6:key_end], flags_v, view[nxt:nxt + size], cas)))  # type: ignore[arg-type]
                else:
                    self._values.append(UNKEPT)  # type: ignore[arg-type]
                pos = nxt + size + 2
                continue
            line = view[pos:eol]
            if kind == _LINE:
                out.append(_new(LineReply, (line, view[reply_start:nxt] if keep else b"")))
            elif kind == _META:
                code = line[:2]
                value = None
                if code == b"VA":
                    parts = line.split(b" ")
                    try:
                        size = to_int(parts[1])
                    except (IndexError, ValueError):
                        raise ProtocolError(f"bad meta VA line: {line[:80]!r}") from None
                    if end < nxt + size + 2:
                        need = nxt + size + 2 - reply_start
                        break
                    value = view[nxt:nxt + size]
                    nxt += size + 2
                    flags = parts[2:]
                elif is_error_line(line):
                    out.append(_new(LineReply, (line, view[reply_start:nxt] if keep else b"")))
                    expect.popleft()
                    pos = reply_start = nxt
                    continue
                else:
                    flags = line.split(b" ")[1:]
                out.append(_new(MetaReply, (code, flags, value, view[reply_start:nxt] if keep else b"")))
            elif line == b"END":  # of stats (a retrieval's END is taken above)
                out.append(_new(StatsReply, (self._values, view[reply_start:nxt] if keep else b"")))
                self._values = []
            elif kind == _STATS and line.startswith(b"STAT "):
                _, name, value_s = (line.split(b" ", 2) + [b""])[:3]
                self._values.append((name, value_s))  # type: ignore[arg-type]
                pos = nxt
                continue
            elif is_error_line(line):
                self._values = []
                out.append(_new(LineReply, (line, view[reply_start:nxt] if keep else b"")))
            else:
                raise ProtocolError(f"unexpected reply line {line[:80]!r} for a {Expect(kind).name} request")
            expect.popleft()
            pos = reply_start = nxt
        if not expect and pos < end:
            raise ProtocolError(f"unsolicited data from server: {view[pos:pos + 80]!r}")
        if reply_start < end:  # keep only the reply being assembled
            buf += view[reply_start:] if reply_start else view
        self._start = pos - reply_start
        self._need = need
        return out


# -- request encoders ------------------------------------------------------------------------
def _nr(noreply: bool) -> bytes:
    return b" noreply" if noreply else b""


def encode_get(keys: list[bytes], cas: bool = False, touch: int | None = None) -> bytes:
    if touch is None:
        return (b"gets " if cas else b"get ") + b" ".join(keys) + b"\r\n"
    return (b"gats %d " if cas else b"gat %d ") % touch + b" ".join(keys) + b"\r\n"


def encode_store(command: bytes, key: bytes, value: bytes, flags: int = 0, exptime: int = 0,
                 cas: int = 0, noreply: bool = False) -> bytes:
    if command == b"cas":
        head = b"cas %s %d %d %d %d" % (key, flags, exptime, len(value), cas)
    else:
        head = b"%s %s %d %d %d" % (command, key, flags, exptime, len(value))
    return b"%s%s\r\n%s\r\n" % (head, _nr(noreply), value)


def encode_delete(key: bytes, noreply: bool = False) -> bytes:
    return b"delete %s%s\r\n" % (key, _nr(noreply))


def encode_arith(key: bytes, delta: int, incr: bool = True, noreply: bool = False) -> bytes:
    return b"%s %s %d%s\r\n" % (b"incr" if incr else b"decr", key, delta, _nr(noreply))


def encode_touch(key: bytes, exptime: int, noreply: bool = False) -> bytes:
    return b"touch %s %d%s\r\n" % (key, exptime, _nr(noreply))


def encode_flush_all(delay: int = 0, noreply: bool = False) -> bytes:
    return b"flush_all %d%s\r\n" % (delay, _nr(noreply))


def encode_meta(command: bytes, key: bytes, flags: list[bytes], value: bytes | None = None) -> bytes:
    tail = b" " + b" ".join(flags) if flags else b""
    if command == b"ms":
        assert value is not None
        return b"ms %s %d%s\r\n%s\r\n" % (key, len(value), tail, value)
    if command == b"mn":
        return b"mn\r\n"
    return b"%s %s%s\r\n" % (command, key, tail)


def parse_meta_reply(buf: bytes | bytearray, pos: int = 0) -> tuple[MetaReply | LineReply, int] | None:
    """The reply to one meta command that starts at ``buf[pos]``, and the offset just after it.

    None while the reply is incomplete (nothing is consumed).  An error line
    (``ERROR``, ``CLIENT_ERROR ...``, ``SERVER_ERROR ...``) comes back as a
    :class:`LineReply`; a ``VA`` data block is read by its announced size, so
    it may hold any bytes.  Raises :class:`ProtocolError` for a ``VA`` line
    without a valid size or a data block not followed by CRLF.
    """
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        return None
    line = bytes(buf[pos:eol])
    nxt = eol + 2
    if is_error_line(line):
        return LineReply(line, bytes(buf[pos:nxt])), nxt
    parts = line.split(b" ")
    code = parts[0]
    if code != b"VA":
        return MetaReply(code, parts[1:], None, bytes(buf[pos:nxt])), nxt
    size = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
    if size < 0:
        raise ProtocolError(f"bad meta VA line: {line[:80]!r}")
    end = nxt + size
    if len(buf) < end + 2:
        return None
    if buf[end:end + 2] != b"\r\n":
        raise ProtocolError(f"meta VA data block of {size} bytes is not followed by CRLF")
    return MetaReply(code, parts[2:], bytes(buf[nxt:end]), bytes(buf[pos:end + 2])), end + 2
