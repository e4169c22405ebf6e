"""memcached text protocol (classic and meta commands), request side, sans-IO.

Feed bytes to :class:`TextRequestParser`; get typed commands back. Errors
that the protocol answers (``ERROR``, ``CLIENT_ERROR ...``) come back as
:class:`ErrorReply` items in the same stream, in order, so a server simply
writes them; an oversized data block is swallowed and reported as
:class:`TooLarge`. Tokenisation follows memcached: tokens are separated by
spaces only, a line ends with ``\\n`` (an optional ``\\r`` before it is dropped).
"""

from __future__ import annotations

import binascii
from typing import Final, NamedTuple, cast

from mypy_extensions import i64

KEY_MAX_LENGTH: Final = 250
#: A command line longer than this (without a newline) closes the connection,
#: except retrieval lines, which may carry many keys.
MAX_LINE: Final = 8192
MAX_GET_LINE: Final = 4 * 1024 * 1024
#: find_lf/find_crlf scan this many bytes in place before calling bytes.find (memchr)
SCAN: Final = 64
_U32: Final = 1 << 32
_U64: Final = 1 << 64
_I32_MIN: Final = -(1 << 31)

ERROR: Final = b"ERROR"
BAD_FORMAT: Final = b"CLIENT_ERROR bad command line format"
BAD_CHUNK: Final = b"CLIENT_ERROR bad data chunk"


class Get(NamedTuple):
    """get/gets/gat/gats: ``exptime`` is set for the touching forms."""

    keys: list[bytes]
    with_cas: bool
    exptime: int | None


class StoreCmd(NamedTuple):
    """set/add/replace/append/prepend/cas with its data block."""

    command: bytes
    key: bytes
    flags: int
    exptime: int
    value: bytes
    cas: int
    noreply: bool


class Delete(NamedTuple):
    key: bytes
    noreply: bool


class Arith(NamedTuple):
    key: bytes
    incr: bool
    delta: int
    noreply: bool


class Touch(NamedTuple):
    key: bytes
    exptime: int
    noreply: bool


class FlushAll(NamedTuple):
    delay: int
    noreply: bool


class Version(NamedTuple):
    pass


class Verbosity(NamedTuple):
    level: int
    noreply: bool


class Quit(NamedTuple):
    pass


class Stats(NamedTuple):
    args: list[bytes]


class Meta(NamedTuple):
    """A meta command (mg ms md ma mn me).

    ``key`` is the decoded key (base64-decoded with the ``b`` flag),
    ``raw_key`` what the client sent (echoed by the ``k`` flag), ``flags``
    the flag tokens in request order as (flag letter, token).
    """

    command: bytes
    key: bytes
    raw_key: bytes
    flags: list[tuple[str, bytes]]
    value: bytes | None


class ErrorReply(NamedTuple):
    """A protocol error to send back; ``close`` ends the connection after it."""

    message: bytes
    close: bool = False


class TooLarge(NamedTuple):
    """A storage command whose data block exceeded the item size limit (swallowed)."""

    command: bytes
    key: bytes
    noreply: bool


# Builds a command tuple without NamedTuple's interpreted __new__ (a third of a set's parse time
# when compiled). Final: a static when compiled, not a globals lookup.
_new: Final = tuple.__new__

TextCommand = (Get | StoreCmd | Delete | Arith | Touch | FlushAll | Version | Verbosity | Quit | Stats
               | Meta | ErrorReply | TooLarge)

_STORAGE: Final = {b"set", b"add", b"replace", b"append", b"prepend", b"cas"}
_GETS: Final = {b"get": (False, False), b"gets": (True, False), b"gat": (False, True), b"gats": (True, True)}
_META: Final = {b"mg", b"ms", b"md", b"ma", b"mn", b"me"}


def scan_number(view: bytes, i: i64, stop: i64) -> tuple[int, int]:
    """The decimal number at ``view[i:]`` up to the next space or ``stop``, read in place:
    (value, where it stopped); value -1 when there is no digit or a byte other than a digit.
    Compiled, this loop is native arithmetic: 4x faster than int() of a slice."""
    start: i64 = i
    n = 0
    while i < stop:
        c = view[i]
        if c == 32:
            break
        if c < 48 or c > 57:
            return -1, i
        n = n * 10 + (c - 48)
        i += 1
    return (n if i > start else -1), i


def plain_set_fields(view: bytes, pos: i64, line_end: i64) -> tuple[i64, int, int, int, bool]:
    """The line ``view[pos:line_end]``, which starts with ``set `` (the callers check it first), as
    a plain ``set <key> <flags> <exptime> <bytes>[ noreply]`` (single spaces, a key of 1 to 250
    bytes, numbers of 1 to 9 digits): (where the key ends, flags, exptime, bytes, noreply); where
    the key ends is 0 for any other line."""
    i: i64 = pos + 4
    stop: i64 = line_end if line_end - i <= KEY_MAX_LENGTH + 40 else i + KEY_MAX_LENGTH + 40
    while i < stop and view[i] != 32:
        i += 1
    if i == pos + 4 or i - pos - 4 > KEY_MAX_LENGTH or i >= stop:
        return 0, 0, 0, 0, False
    key_end = i
    flags, j = scan_number(view, i + 1, line_end)
    if flags < 0 or j >= line_end or j - key_end > 10:
        return 0, 0, 0, 0, False
    exptime, k = scan_number(view, j + 1, line_end)
    if exptime < 0 or k >= line_end or k - j > 10:
        return 0, 0, 0, 0, False
    length, m = scan_number(view, k + 1, line_end)
    if length < 0 or m - k > 10:
        return 0, 0, 0, 0, False
    noreply = False
    if m < line_end:
        if line_end - m != 8 or not at(view, m, b" noreply"):
            return 0, 0, 0, 0, False
        noreply = True
    return key_end, flags, exptime, length, noreply


def _digits(tok: bytes, start: int) -> int:
    """The number written in ``tok[start:]`` when it is 1 to 18 ASCII digits (below 2**63), else -1
    (then the caller asks int())."""
    end = len(tok)
    if end - start > 18:
        return -1
    n, i = scan_number(tok, start, end)
    return n if i == end else -1


def to_int(tok: bytes) -> int:
    """``int(tok)``, the short all-digit case (every number a server sends) native when compiled."""
    n = _digits(tok, 0)
    return n if n >= 0 else int(tok)


def at(view: bytes, pos: i64, word: bytes) -> bool:
    """``view.startswith(word, pos)``, compiled without a method call (i64: native indexes, no
    tagged-integer conversions: ~1 ns a byte)."""
    n: i64 = len(word)
    if pos + n > len(view):
        return False
    j: i64 = 0
    while j < n and view[pos + j] == word[j]:
        j += 1
    return j == n


def plain_get_key(view: bytes, pos: i64, line_end: i64) -> bytes | None:
    """The key of ``view[pos:line_end]`` (a line, its newline excluded) when it is a plain one-key
    ``get <key>``: 1 to 250 bytes without a space; else None (the parser's general path)."""
    n: i64 = line_end - pos
    if n > 4 and n <= 254 and at(view, pos, b"get "):
        if n <= SCAN:  # a short key: look for a space in place (a `in` test is a generic call)
            i: i64 = pos + 4
            while i < line_end:
                if view[i] == 32:
                    return None
                i += 1
            return view[pos + 4:line_end]
        key = view[pos + 4:line_end]
        if 32 not in key:  # an int operand: a bytes one first fails as an index, raising
            return key
    return None


def find_lf(view: bytes, pos: i64, end: i64) -> i64:
    """``view.find(b"\\n", pos)`` for ``end == len(view)``. Compiled, a scan of a short line costs
    less than a bytes.find call (~55 ns, most of it the call; the scan ~1 ns a byte with i64
    indexes); past :data:`SCAN` bytes the rest is left to find, whose one-byte search is memchr."""
    stop: i64 = pos + SCAN if pos + SCAN < end else end
    i: i64 = pos
    while i < stop:
        if view[i] == 10:
            return i
        i += 1
    return view.find(b"\n", stop) if stop < end else -1


def find_crlf(view: bytes, pos: i64, end: i64) -> i64:
    """``view.find(b"\\r\\n", pos)`` for ``end == len(view)``, as :func:`find_lf`: past
    :data:`SCAN` bytes, the next LF (memchr; a two-byte find is a byte-by-byte search) preceded
    by CR."""
    stop: i64 = pos + SCAN if pos + SCAN < end else end
    i: i64 = pos
    while i < stop:
        if view[i] == 13 and i + 1 < end and view[i + 1] == 10:
            return i
        i += 1
    if stop >= end:
        return -1
    j: i64 = view.find(b"\n", stop)  # a CRLF across stop was found above: here j - 1 >= stop - 1
    while j > 0:
        if view[j - 1] == 13:
            return j - 1
        j = view.find(b"\n", j + 1)
    return -1


def parse_uint(tok: bytes, limit: int) -> int | None:
    n = _digits(tok, 0)
    if n < 0:
        if not tok.isdigit():
            return None
        n = int(tok)
    return n if n < limit else None


def parse_i32(tok: bytes) -> int | None:
    """memcached's safe_strtol into an int32: a 64-bit number, wrapped to 32 bits."""
    neg = len(tok) > 0 and tok[0] == 45  # "-"
    n = _digits(tok, 1 if neg else 0)
    if n >= 0:
        n = -n if neg else n
    else:
        if not (tok[1:] if neg else tok).isdigit():
            return None
        n = int(tok)
        if not -(1 << 63) <= n < 1 << 63:
            return None
    return ((n + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def parse_flags32(tok: bytes) -> int | None:
    """Client flags: an unsigned 64-bit number, truncated to 32 bits (as memcached)."""
    n = parse_uint(tok, _U64)
    return None if n is None else n & 0xFFFFFFFF


# Meta flags that carry a number, per command, with memcached's parse rule.
_META_NUMERIC: Final[dict[bytes, dict[str, str]]] = {
    b"mg": {"T": "i32", "R": "i32", "N": "i32"},
    b"ms": {"T": "i32", "C": "u64", "F": "flags"},
    b"md": {"T": "i32", "C": "u64"},
    b"ma": {"T": "i32", "C": "u64", "N": "i32", "J": "u64", "D": "u64"},
    b"me": {},
}
_BAD_TOKEN: Final = b"CLIENT_ERROR bad token in command line format"
_INVALID_OR_DUP: Final = b"CLIENT_ERROR invalid or duplicate flag"


def parse_meta_flags(command: bytes, tokens: list[bytes]) -> list[tuple[str, bytes]] | bytes:
    """Meta flags as (letter, token) in request order, or memcached's CLIENT_ERROR text."""
    out: list[tuple[str, bytes]] = []
    seen = set()
    strict = command in (b"md", b"ma")  # these answer one message for every flag error
    numeric = _META_NUMERIC.get(command, {})
    for tok in tokens:
        c = chr(tok[0])
        if not c.isalpha():
            return _INVALID_OR_DUP if strict else b"CLIENT_ERROR invalid flag"
        if c in seen:
            return _INVALID_OR_DUP if strict else b"CLIENT_ERROR duplicate flag"
        seen.add(c)
        kind = numeric.get(c)
        if kind is not None:
            arg = tok[1:]
            ok = (parse_i32(arg) if kind == "i32" else parse_flags32(arg) if kind == "flags" else parse_uint(arg, _U64))
            if ok is None:
                if strict:
                    return _INVALID_OR_DUP
                return BAD_FORMAT if kind == "flags" else _BAD_TOKEN
        out.append((c, tok[1:]))
    return out


class TextRequestParser:
    """Incremental parser of client requests in the memcached text protocol."""

    __slots__ = ("_buf", "_pending", "_swallow", "_need", "max_item_size")

    def __init__(self, max_item_size: int = 1024 * 1024) -> None:
        self._buf = bytearray()
        # A storage command waiting for its data block: (builder args, length)
        self._pending: tuple[StoreCmd | Meta, int] | None = None
        self._swallow = 0
        self._need = 0  # _buf must hold this many bytes before parsing can go on
        self.max_item_size = max_item_size

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def idle(self) -> bool:
        """True between requests: nothing buffered, no data block awaited or being skipped."""
        return not self._buf and self._pending is None and not self._swallow

    def single_get(self, data: bytes) -> bytes | None:
        """The key when ``data`` is exactly one plain ``get <key>\\r\\n`` and nothing is buffered
        (what a non-pipelined client sends most), else None: feed it then. Consumes nothing."""
        end = len(data)
        if end > 2 and data[end - 1] == 10 and data[end - 2] == 13 and self.idle():
            key = plain_get_key(data, 0, end - 2)
            if key is not None and 10 not in key:  # one line
                return key
        return None

    def single_set(self, data: bytes) -> bytes | None:
        """The key when ``data`` is exactly one plain ``set`` (as :meth:`_whole_set` takes it, and
        not noreply) with its whole data block and nothing is buffered, else None: feed it then.
        What a proxy forwards as it came. Consumes nothing."""
        end: i64 = len(data)
        if end < 12 or data[end - 1] != 10 or data[end - 2] != 13 or not at(data, 0, b"set ") or not self.idle():
            return None
        eol = find_lf(data, 0, end)
        if eol < 1 or data[eol - 1] != 13:
            return None
        key_end, _flags, _exptime, length, noreply = plain_set_fields(data, 0, eol - 1)
        if not key_end or noreply or eol + length + 3 != end:
            return None
        key = data[4:key_end]
        return None if self._too_large(key, length) else key

    def feed(self, data: bytes) -> list[TextCommand]:
        """Consume ``data``; return every command completed by it, in order."""
        return cast(list[TextCommand], self._feed(data, False))

    def feed_bare(self, data: bytes) -> list[TextCommand | bytes]:
        """As :meth:`feed`, but a plain one-key ``get`` comes out as its key alone, with no
        command object to build and take apart (the server's hot path)."""
        return self._feed(data, True)

    def _feed(self, data: bytes, bare: bool) -> list[TextCommand | bytes]:
        out: list[TextCommand | bytes] = []
        buf = self._buf
        if buf:  # a line or data block was cut short: go on once what it lacked is here
            buf += data
            if len(buf) < self._need:
                return out
            if self._pending is None and not self._swallow and 10 not in data:  # no newline yet
                self._check_line(buf, 0, len(buf), out)
                return out
            view = bytes(buf)  # parse over bytes only: its slices and indexing compile to native calls
            buf.clear()
        else:
            view = data
        pos = 0
        end = len(view)
        need = 0
        while pos < end:
            if self._swallow:
                n = min(self._swallow, end - pos)
                self._swallow -= n
                pos += n
                continue
            pending = self._pending
            if pending is not None:
                cmd, length = pending
                stop = pos + length
                if end < stop + 2:
                    need = length + 2
                    break
                self._pending = None
                if view[stop] != 13 or view[stop + 1] != 10:
                    # memcached: the block is consumed, then the rest is read as commands
                    out.append(ErrorReply(BAD_CHUNK))
                    pos = stop + 2
                    continue
                # StoreCmd and Meta both carry the value at index 4 (NamedTuple._replace is slow)
                value = view[pos:stop]
                if type(cmd) is StoreCmd:
                    out.append(_new(StoreCmd, (cmd[0], cmd[1], cmd[2], cmd[3], value, cmd[5], cmd[6])))
                else:
                    out.append(_new(Meta, (cmd[0], cmd[1], cmd[2], cmd[3], value)))
                pos = stop + 2
                continue
            eol = find_lf(view, pos, end)
            if eol < 0:
                if self._check_line(view, pos, end, out):
                    pos = end
                break
            line_end = eol - 1 if eol > pos and view[eol - 1] == 13 else eol
            key = plain_get_key(view, pos, line_end)  # the hot path
            if key is not None:
                out.append(key if bare else _new(Get, ([key], False, None)))
                pos = eol + 1
                continue
            if at(view, pos, b"set "):  # a whole plain set in this read: no split, one command object
                after = self._whole_set(view, pos, line_end, eol, end, out)
                if after > 0:
                    pos = after
                    continue
            line = view[pos:line_end]
            pos = eol + 1
            parsed = self._parse_line(line)
            if parsed is not None:
                out.append(parsed)
                if isinstance(parsed, ErrorReply) and parsed.close:
                    pos = end
                    break
        if pos < end:
            buf += view[pos:] if pos else view
        self._need = need
        return out

    def _too_large(self, key: bytes, length: int) -> bool:
        """A data block of ``length`` bytes under ``key`` cannot be an item: memcached's size rule,
        the key and the value plus its item header (~59 bytes) against ``max_item_size``."""
        return length + len(key) + 59 > self.max_item_size

    def _whole_set(self, view: bytes, pos: int, line_end: int, eol: int, end: int,
                   out: list[TextCommand | bytes]) -> int:
        """``set <key> <flags> <exptime> <bytes>[ noreply]`` with single spaces, numbers of 1 to 9
        digits and its data block complete in ``view``: the command appended, and where the next
        request starts. 0 for anything else (an odd form, a block still to come, a bad block, an
        item too large), which the general path parses as before."""
        key_end, flags, exptime, length, noreply = plain_set_fields(view, pos, line_end)
        if not key_end:
            return 0
        key = view[pos + 4:key_end]
        start = eol + 1
        stop = start + length
        if (stop + 2 > end or view[stop] != 13 or view[stop + 1] != 10
                or self._too_large(key, length)):
            return 0
        out.append(_new(StoreCmd, (b"set", key, flags, exptime, view[start:stop], 0, noreply)))
        return stop + 2

    def _check_line(self, view: bytes | bytearray, pos: int, end: int, out: list[TextCommand | bytes]) -> bool:
        """A line without its newline yet: True (and an error that closes) when it is already too long."""
        pending_len = end - pos
        if pending_len > MAX_LINE:
            head = bytes(view[pos:pos + 5])
            if not head.startswith((b"get ", b"gets ", b"gat ", b"gats ")) or pending_len > MAX_GET_LINE:
                out.append(ErrorReply(b"CLIENT_ERROR line too long", close=True))
                if view is self._buf:
                    self._buf.clear()
                return True
        return False

    # -- line parsing --------------------------------------------------------------
    def _parse_line(self, line: bytes) -> TextCommand | None:
        parts = line.split(b" ")
        if b"" in parts:
            parts = [p for p in parts if p]
            if not parts:
                return ErrorReply(ERROR)
        name = parts[0]
        n = len(parts)
        get = _GETS.get(name)
        if get is not None:
            with_cas, touching = get
            exptime: int | None = None
            keys = parts[1:]
            if touching:
                if n < 2:
                    return ErrorReply(ERROR)
                exptime = parse_i32(parts[1])
                if exptime is None:
                    return ErrorReply(b"CLIENT_ERROR invalid exptime argument")
                keys = parts[2:]
            elif n < 2:
                return ErrorReply(ERROR)
            for k in keys:
                if len(k) > KEY_MAX_LENGTH:
                    return ErrorReply(BAD_FORMAT)
            return _new(Get, (keys, with_cas, exptime))
        if name in _STORAGE:
            return self._parse_storage(name, parts, n)
        if name in _META:
            return self._parse_meta(name, parts, n)
        noreply = parts[-1] == b"noreply"
        if name == b"delete":
            if n < 2 or n > 4:
                return ErrorReply(ERROR)
            if len(parts[1]) > KEY_MAX_LENGTH:
                return ErrorReply(BAD_FORMAT)
            extra = n - 2 - noreply
            if extra > 1 or (extra == 1 and parts[2] != b"0"):
                return ErrorReply(b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]")
            return _new(Delete, (parts[1], noreply))
        if name == b"incr" or name == b"decr":
            if n != 3 and n != 4:
                return ErrorReply(ERROR)
            if len(parts[1]) > KEY_MAX_LENGTH:
                return ErrorReply(BAD_FORMAT)
            delta = parse_uint(parts[2], _U64)
            if delta is None:
                return ErrorReply(b"CLIENT_ERROR invalid numeric delta argument")
            return _new(Arith, (parts[1], name == b"incr", delta, noreply))
        if name == b"touch":
            if n != 3 and n != 4:
                return ErrorReply(ERROR)
            if len(parts[1]) > KEY_MAX_LENGTH:
                return ErrorReply(BAD_FORMAT)
            exp = parse_i32(parts[2])
            if exp is None:
                return ErrorReply(b"CLIENT_ERROR invalid exptime argument")
            return _new(Touch, (parts[1], exp, noreply))
        if name == b"flush_all":
            if n > 3:
                return ErrorReply(ERROR)
            delay = 0
            if n - noreply == 2:
                d = parse_i32(parts[1])
                if d is None:
                    return ErrorReply(b"CLIENT_ERROR invalid exptime argument")
                delay = d
            return FlushAll(delay, noreply)
        if name == b"version":
            return Version()
        if name == b"quit":
            return Quit()
        if name == b"stats":
            return Stats(parts[1:])
        if name == b"verbosity":
            if n < 2 or n > 3:
                return ErrorReply(ERROR)
            level = parse_uint(parts[1], _U32)
            if level is None:
                return None if noreply else ErrorReply(BAD_FORMAT)
            return Verbosity(level, noreply)
        return ErrorReply(ERROR)

    def _parse_storage(self, name: bytes, parts: list[bytes], n: int) -> TextCommand | None:
        is_cas = name == b"cas"
        if n != (6 if is_cas else 5) and n != (7 if is_cas else 6):
            return ErrorReply(ERROR)
        key = parts[1]
        if len(key) > KEY_MAX_LENGTH:
            return ErrorReply(BAD_FORMAT)
        flags = parse_flags32(parts[2])
        exptime = parse_i32(parts[3])
        length = parse_i32(parts[4])
        if flags is None or exptime is None or length is None or length < 0:
            return ErrorReply(BAD_FORMAT)
        cas = 0
        if is_cas:
            c = parse_uint(parts[5], _U64)
            if c is None:
                return ErrorReply(BAD_FORMAT)
            cas = c
        noreply = parts[-1] == b"noreply" and n == (7 if is_cas else 6)
        if self._too_large(key, length):
            self._swallow = length + 2
            return TooLarge(name, key, noreply)
        self._pending = (_new(StoreCmd, (name, key, flags, exptime, b"", cas, noreply)), length)
        return None

    def _parse_meta(self, name: bytes, parts: list[bytes], n: int) -> TextCommand | None:
        if name == b"mn":
            return Meta(name, b"", b"", [], None)
        if n < 2:
            return ErrorReply(ERROR)
        raw_key = parts[1]
        rest = parts[2:]
        length = -1
        if name == b"ms":
            if n < 3:
                return ErrorReply(BAD_FORMAT)
            dl = parse_i32(parts[2])
            if dl is None or dl < 0:
                return ErrorReply(BAD_FORMAT)
            length = dl
            rest = parts[3:]
        flags = parse_meta_flags(name, rest)
        if isinstance(flags, bytes):
            if length >= 0:
                self._swallow = length + 2
            return ErrorReply(flags)
        key = raw_key
        if any(f == "b" for f, _ in flags):
            try:
                key = binascii.a2b_base64(raw_key, strict_mode=True)
            except (binascii.Error, ValueError):
                if length >= 0:
                    self._swallow = length + 2
                return ErrorReply(b"CLIENT_ERROR error decoding key")
        if len(raw_key) > KEY_MAX_LENGTH or not key:
            return ErrorReply(BAD_FORMAT)  # memcached does not swallow the data block here
        cmd = Meta(name, key, raw_key, flags, None)
        if length >= 0:
            if self._too_large(key, length):
                self._swallow = length + 2
                return ErrorReply(b"SERVER_ERROR object too large for cache")
            self._pending = (cmd, length)
            return None
        return cmd
