"""The memcached text protocol for the client: :class:`TextCodec` requests and :class:`TextConnState`."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from ..errors import CacheError, ServerError
from ..protocol.text_client import (
    Expect,
    LineReply,
    StatsReply,
    TextReplyParser,
    Value,
    ValuesReply,
    encode_arith,
    encode_delete,
    encode_flush_all,
    encode_get,
    encode_store,
    encode_touch,
    is_error_line,
)
from .errors import text_error
from .request import EXISTS, NOT_FOUND, NOT_STORED, OK, Decode, Request

__all__ = [
    "GET_CHUNK",
    "QUICK_CODE",
    "QUICK_NUMBER",
    "QUICK_VALUES",
    "Quick",
    "TextCodec",
    "TextConnState",
    "TextRequest",
    "decode_ok",
    "decode_stats",
    "decode_version",
    "single_line",
    "unexpected_reply",
    "whole_code",
    "whole_number",
    "whole_values",
]

GET_CHUNK: Final = 256
"""Keys per ``get`` line of a text multi-get (more keys: more lines in one write)."""
_tuple_new = tuple.__new__
_LINE_KIND: Final = Expect.LINE
_VALUES_KIND: Final = Expect.VALUES


class TextRequest(Request):
    __slots__ = ("data", "expects")

    def __init__(self, what: str, data: bytes, expects: tuple[Expect, ...], decode: Decode) -> None:
        self.what = what
        self.decode = decode
        self.replies = []
        self.done = False
        self.data = data
        self.expects = expects



class TextConnState:
    """Replies of one text-protocol connection, handed to the requests in flight in order.

    The common case -- one request in flight expecting one reply, and that
    whole reply in one chunk (a single-key get, a set) -- is decoded right
    here; everything else goes through :class:`TextReplyParser`, which is
    told what to expect only then.
    """

    __slots__ = ("_parser", "_pending", "_registered")

    def __init__(self) -> None:
        self._parser = TextReplyParser()
        self._pending: deque[TextRequest] = deque()
        self._registered = 0  # pending requests whose expectations the parser has been given

    def submit(self, request: Request) -> bytes:
        assert isinstance(request, TextRequest)
        if not request.expects:
            request.done = True
        else:
            self._pending.append(request)
        return request.data

    def feed(self, data: bytes) -> None:
        """Raises ProtocolError for bytes that are not the replies expected."""
        pending = self._pending
        if not self._registered and len(pending) == 1:
            request = pending[0]
            expects = request.expects
            if len(expects) == 1:
                whole: LineReply | ValuesReply | None = None
                if expects[0] is _LINE_KIND:
                    line = single_line(data)
                    if line is not None:
                        whole = _tuple_new(LineReply, (line, data))
                elif expects[0] is _VALUES_KIND:
                    values = whole_values(data)
                    if values is not None:
                        whole = _tuple_new(ValuesReply, (values, data))
                if whole is not None:
                    request.replies.append(whole)
                    request.done = True
                    pending.popleft()
                    return
        parser = self._parser
        while self._registered < len(pending):
            for kind in pending[self._registered].expects:
                parser.expect(kind)
            self._registered += 1
        for reply in parser.feed(data):
            request = pending[0]
            replies = request.replies
            replies.append(reply)
            if len(replies) == len(request.expects):
                request.done = True
                pending.popleft()
                self._registered -= 1

    @property
    def idle(self) -> bool:
        return not self._pending


def single_line(data: bytes) -> bytes | None:
    """``data`` without its CRLF when it is exactly one line, else None."""
    end = len(data) - 2
    return data[:end] if end >= 0 and data.find(b"\r\n") == end else None


def whole_values(data: bytes) -> list[Value] | None:
    """The values of ``data`` when it is exactly one complete VALUES reply, else None.

    The values are walked by their announced sizes, so a value that contains
    ``END`` lines cannot fool it; anything unusual is left to the parser.
    """
    if not data.endswith(b"END\r\n"):
        return None
    values: list[Value] = []
    pos = 0
    last = len(data) - 5
    try:
        while pos < last:
            eol = data.find(b"\r\n", pos)
            parts = data[pos:eol].split(b" ")  # VALUE key flags size [cas]
            n = len(parts)
            if (n != 4 and n != 5) or parts[0] != b"VALUE":
                return None
            start = eol + 2
            pos = start + int(parts[3])
            if data[pos:pos + 2] != b"\r\n":
                return None
            values.append(_tuple_new(Value, (parts[1], int(parts[2]), data[start:pos],
                                             int(parts[4]) if n == 5 else 0)))
            pos += 2
    except ValueError:
        return None
    return values if pos == last else None



_LINE_CODES: Final[dict[bytes, int]] = {
    b"STORED": OK, b"DELETED": OK, b"TOUCHED": OK, b"OK": OK,
    b"NOT_STORED": NOT_STORED, b"EXISTS": EXISTS, b"NOT_FOUND": NOT_FOUND,
}
_LINE: Final = (Expect.LINE,)
_VALUES: Final = (Expect.VALUES,)
_NONE: Final[tuple[Expect, ...]] = ()


def unexpected_reply(line: bytes, what: str) -> CacheError:
    if is_error_line(line):
        return text_error(line, what)
    return ServerError(f"{what}: unexpected reply {line[:80]!r}")


def _line_code(reply: object, what: str) -> int | CacheError:
    assert isinstance(reply, LineReply)
    code = _LINE_CODES.get(reply.line)
    return unexpected_reply(reply.line, what) if code is None else code


def _text_code(request: Request) -> object:
    if not request.replies:
        return OK  # noreply
    reply = request.replies[0]
    assert isinstance(reply, LineReply)
    code = _LINE_CODES.get(reply.line)
    if code is None:
        raise unexpected_reply(reply.line, request.what)
    return code


def _text_codes(request: Request) -> object:
    what = request.what
    return [_line_code(reply, what) for reply in request.replies]


def _text_values(request: Request) -> object:
    replies = request.replies
    if len(replies) == 1:
        reply = replies[0]
        if type(reply) is ValuesReply:
            return reply.values
    out: list[Value] = []
    for reply in replies:
        if isinstance(reply, ValuesReply):
            out.extend(reply.values)
        else:
            assert isinstance(reply, LineReply)
            raise unexpected_reply(reply.line, request.what)
    return out


def _text_arith(request: Request) -> object:
    if not request.replies:
        return None  # noreply
    reply = request.replies[0]
    assert isinstance(reply, LineReply)
    line = reply.line
    if line.isdigit():
        return int(line)
    if line == b"NOT_FOUND":
        return None
    raise unexpected_reply(line, request.what)


def decode_stats(request: Request) -> object:
    reply = request.replies[0]
    if isinstance(reply, StatsReply):
        return {name.decode("utf-8", "replace"): value.decode("utf-8", "replace") for name, value in reply.stats}
    assert isinstance(reply, LineReply)
    raise unexpected_reply(reply.line, request.what)


def decode_version(request: Request) -> object:
    reply = request.replies[0]
    assert isinstance(reply, LineReply)
    if reply.line.startswith(b"VERSION "):
        return reply.line[8:].decode("utf-8", "replace")
    raise unexpected_reply(reply.line, request.what)


def decode_ok(request: Request) -> object:
    code = _text_code(request)
    if code != OK:
        raise ServerError(f"{request.what}: unexpected reply")
    return OK


def whole_code(data: bytes) -> int | None:
    """The result code when ``data`` is exactly one line that has one (STORED, NOT_FOUND...), else None."""
    line = single_line(data)
    return None if line is None else _LINE_CODES.get(line)


def whole_number(data: bytes) -> int | None:
    """incr/decr's new value when ``data`` is exactly one line of digits, else None."""
    line = single_line(data)
    return int(line) if line is not None and line.isdigit() else None


class Quick:
    """How a client reads the reply to one single-key request without a :class:`TextConnState`.

    ``parse(data)`` is the result a :meth:`request` would decode to, when
    ``data`` is exactly that reply in its commonest form (a whole VALUES
    reply, a STORED/DELETED/... line, a number); None for anything else,
    which the request then reads the general way (more reads, error lines).
    """

    __slots__ = ("decode", "expects", "parse")

    def __init__(self, parse: Callable[[bytes], object], expects: tuple[Expect, ...], decode: Decode) -> None:
        self.parse = parse
        self.expects = expects
        self.decode = decode

    def request(self, what: str, data: bytes) -> TextRequest:
        return TextRequest(what, data, self.expects, self.decode)


QUICK_VALUES: Final = Quick(whole_values, _VALUES, _text_values)
"""get (one key, no cas)."""
QUICK_CODE: Final = Quick(whole_code, _LINE, _text_code)
"""Storage commands, delete, touch (with a reply)."""
QUICK_NUMBER: Final = Quick(whole_number, _LINE, _text_arith)
"""incr/decr (with a reply)."""


class TextCodec:
    """Requests in the memcached text protocol."""

    name: Final = "text"
    state = TextConnState

    def retrieve(self, keys: Sequence[bytes], cas: bool = False, touch: int | None = None) -> Request:
        what = "gat" if touch is not None else ("gets" if cas else "get")
        if len(keys) <= GET_CHUNK:
            return TextRequest(what, encode_get(list(keys), cas, touch), _VALUES, _text_values)
        chunks = [list(keys[i:i + GET_CHUNK]) for i in range(0, len(keys), GET_CHUNK)]
        data = b"".join(encode_get(chunk, cas, touch) for chunk in chunks)
        return TextRequest(what, data, _VALUES * len(chunks), _text_values)

    def store(self, command: str, key: bytes, value: bytes, flags: int, exptime: int, cas: int = 0,
              noreply: bool = False) -> Request:
        data = encode_store(command.encode(), key, value, flags, exptime, cas, noreply)
        return TextRequest(command, data, _NONE if noreply else _LINE, _text_code)

    def store_many(self, command: str, items: Sequence[tuple[bytes, bytes, int]], exptime: int,
                   noreply: bool = False) -> Request:
        cmd = command.encode()
        data = b"".join(encode_store(cmd, key, value, flags, exptime, 0, noreply) for key, value, flags in items)
        return TextRequest(command, data, _NONE if noreply else _LINE * len(items), _text_codes)

    def delete(self, key: bytes, noreply: bool = False) -> Request:
        return TextRequest("delete", encode_delete(key, noreply), _NONE if noreply else _LINE, _text_code)

    def delete_many(self, keys: Sequence[bytes], noreply: bool = False) -> Request:
        data = b"".join(encode_delete(key, noreply) for key in keys)
        return TextRequest("delete", data, _NONE if noreply else _LINE * len(keys), _text_codes)

    def arith(self, key: bytes, delta: int, incr: bool, noreply: bool = False) -> Request:
        return TextRequest("incr" if incr else "decr", encode_arith(key, delta, incr, noreply),
                           _NONE if noreply else _LINE, _text_arith)

    def touch(self, key: bytes, exptime: int, noreply: bool = False) -> Request:
        return TextRequest("touch", encode_touch(key, exptime, noreply), _NONE if noreply else _LINE, _text_code)

    def flush_all(self, delay: int = 0, noreply: bool = False) -> Request:
        return TextRequest("flush_all", encode_flush_all(delay, noreply), _NONE if noreply else _LINE, decode_ok)

    def stats(self, args: Sequence[bytes] = ()) -> Request:
        data = b" ".join((b"stats", *args)) + b"\r\n"
        return TextRequest("stats", data, (Expect.STATS,), decode_stats)

    def version(self) -> Request:
        return TextRequest("version", b"version\r\n", _LINE, decode_version)

