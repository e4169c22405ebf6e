"""The client's sans-IO layer: requests for each command, per protocol, and connection states.

A :class:`Request` is everything one server is asked as part of a command
(one ``get k1 k2 ...`` line, or the N ``set``s of a ``set_many``), with a
``decode`` function that turns the replies into a protocol-neutral result:

========================= ====================================================
retrieve                  ``list[Value]`` (hits only)
store, delete, touch,     a result code (:data:`OK`, :data:`NOT_STORED`,
flush_all                 :data:`EXISTS`, :data:`NOT_FOUND`)
store_many, delete_many   ``list[int | CacheError]``, one per item
arith                     the new value, or ``None`` when the key is missing
stats                     ``dict[str, str]``
version                   ``str``
========================= ====================================================

``decode`` raises a :class:`~scatterhoard.errors.CacheError` when the server
refused the whole request.  :class:`TextCodec` and :class:`BinaryCodec`
build requests; :class:`TextConnState` / :class:`BinaryConnState` track one
connection: ``submit(request)`` gives the bytes to write, ``feed(data)``
hands replies to the requests in flight and sets their ``done``.  No I/O
happens here; the sync and asyncio clients only move bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from ..errors import CacheError, ServerError
from ..protocol import binary as bp
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
from .errors import binary_status_error, text_error

__all__ = [
    "EXISTS",
    "NOT_FOUND",
    "NOT_STORED",
    "OK",
    "BinaryCodec",
    "BinaryConnState",
    "BinaryRequest",
    "Codec",
    "ConnState",
    "Request",
    "TextCodec",
    "TextConnState",
    "TextRequest",
    "Value",
]

OK: Final = 0
NOT_STORED: Final = 1
EXISTS: Final = 2
NOT_FOUND: Final = 3

GET_CHUNK: Final = 256
"""Keys per ``get`` line of a text multi-get (more keys: more lines in one write)."""

Decode = Callable[["Request"], object]
_tuple_new = tuple.__new__
_LINE_KIND: Final = Expect.LINE
_VALUES_KIND: Final = Expect.VALUES
_HEADER = bp.HEADER


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


class TextRequest(Request):
    __slots__ = ("data", "expects")

    def __init__(self, what: str, data: bytes, expects: tuple[Expect, ...], decode: Decode) -> None:
        self.what = what
        self.decode = decode
        self.replies = []
        self.done = False
        self.data = data
        self.expects = expects


class BinaryRequest(Request):
    """``build(base)`` encodes the packets with opaques ``base .. base + count - 1``.

    The request is complete at the packet with the last opaque (for a STAT:
    the one with an empty key, or an error); ``wait=False`` requests (quiet
    commands sent with noreply) are complete once written, and error replies
    they may cause later are dropped.
    """

    __slots__ = ("base", "build", "count", "stat", "wait")

    def __init__(self, what: str, build: Callable[[int], bytes], count: int, decode: Decode,
                 *, wait: bool = True, stat: bool = False) -> None:
        super().__init__(what, decode)
        self.build = build
        self.count = count
        self.wait = wait
        self.stat = stat
        self.base = 0


# -- connection states -----------------------------------------------------------------------------


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
                if expects[0] is _LINE_KIND and data.find(b"\r\n") == len(data) - 2:
                    whole: LineReply | ValuesReply | None = _tuple_new(LineReply, (data[:-2], data))
                else:
                    whole = _whole_reply(expects[0], data)
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


def _whole_reply(kind: Expect, data: bytes) -> LineReply | ValuesReply | None:
    """``data`` decoded when it is exactly one complete VALUES reply, else None (nothing consumed).

    The values are walked by their announced sizes, so a value that contains
    ``END`` lines cannot fool it; anything unusual is left to the parser.
    """
    if kind is not _VALUES_KIND or not data.endswith(b"END\r\n"):
        return None
    values: list[Value] = []
    append = values.append
    pos = 0
    last = len(data) - 5
    find = data.find
    try:
        while pos < last:
            if not data.startswith(b"VALUE ", pos):
                return None
            eol = find(b"\r\n", pos)
            parts = data[pos + 6:eol].split(b" ")
            n = len(parts)
            if n != 3 and n != 4:
                return None
            start = eol + 2
            end = start + int(parts[2])
            if data[end:end + 2] != b"\r\n":
                return None
            append(_tuple_new(Value, (parts[0], int(parts[1]), data[start:end], int(parts[3]) if n == 4 else 0)))
            pos = end + 2
    except ValueError:
        return None
    if pos != last:
        return None
    return _tuple_new(ValuesReply, (values, data))


class BinaryConnState:
    """Packets of one binary-protocol connection, matched to requests by opaque."""

    __slots__ = ("_opaque", "_parser", "_pending")

    def __init__(self) -> None:
        self._parser = bp.BinaryParser(None, magic=bp.RESPONSE_MAGIC)
        self._pending: deque[BinaryRequest] = deque()
        self._opaque = 0

    def submit(self, request: Request) -> bytes:
        assert isinstance(request, BinaryRequest)
        base = self._opaque + 1
        if base + request.count > 0xFFFFFFFF:
            base = 1
        self._opaque = base + request.count - 1
        request.base = base
        data = request.build(base)
        if request.wait:
            self._pending.append(request)
        else:
            request.done = True
        return data

    def feed(self, data: bytes) -> None:
        pending = self._pending
        parser = self._parser
        if len(pending) == 1 and len(data) >= 24 and not parser.buffered and not parser.skipping:
            # The common case: the one request in flight answered by exactly one packet.
            request = pending[0]
            magic, opcode, kl, el, dt, status, bl, opaque, cas = _HEADER.unpack_from(data)
            if (magic == bp.RESPONSE_MAGIC and 24 + bl == len(data) and kl + el <= bl
                    and request.count == 1 and opaque == request.base and not request.stat):
                ke = 24 + el
                ve = ke + kl
                request.replies.append(_tuple_new(bp.Packet, (magic, opcode, data[ke:ve], data[24:ke], data[ve:],
                                                              status, opaque, cas, dt)))
                request.done = True
                pending.popleft()
                return
        for packet in parser.feed(data):
            if not pending:
                continue  # an error answering an earlier fire-and-forget quiet command
            request = pending[0]
            offset = (packet.opaque - request.base) & 0xFFFFFFFF
            if offset >= request.count:
                continue  # same: not this request's
            assert isinstance(packet, bp.Packet)
            request.replies.append(packet)
            if offset == request.count - 1 and (
                not request.stat or not packet.key or packet.status_or_vbucket
            ):
                request.done = True
                pending.popleft()

    @property
    def idle(self) -> bool:
        return not self._pending


ConnState = TextConnState | BinaryConnState


# -- text ------------------------------------------------------------------------------------------

_LINE_CODES: Final[dict[bytes, int]] = {
    b"STORED": OK, b"DELETED": OK, b"TOUCHED": OK, b"OK": OK,
    b"NOT_STORED": NOT_STORED, b"EXISTS": EXISTS, b"NOT_FOUND": NOT_FOUND,
}
_LINE: Final = (Expect.LINE,)
_VALUES: Final = (Expect.VALUES,)
_NONE: Final[tuple[Expect, ...]] = ()


def _unexpected(line: bytes, what: str) -> CacheError:
    if is_error_line(line):
        return text_error(line, what)
    return ServerError(f"{what}: unexpected reply {line[:80]!r}")


def _line_code(reply: object, what: str) -> int | CacheError:
    assert isinstance(reply, LineReply)
    code = _LINE_CODES.get(reply.line)
    return _unexpected(reply.line, what) if code is None else code


def _text_code(request: Request) -> object:
    if not request.replies:
        return OK  # noreply
    reply = request.replies[0]
    assert isinstance(reply, LineReply)
    code = _LINE_CODES.get(reply.line)
    if code is None:
        raise _unexpected(reply.line, request.what)
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
            raise _unexpected(reply.line, request.what)
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
    raise _unexpected(line, request.what)


def _text_stats(request: Request) -> object:
    reply = request.replies[0]
    if isinstance(reply, StatsReply):
        return {name.decode("utf-8", "replace"): value.decode("utf-8", "replace") for name, value in reply.stats}
    assert isinstance(reply, LineReply)
    raise _unexpected(reply.line, request.what)


def _text_version(request: Request) -> object:
    reply = request.replies[0]
    assert isinstance(reply, LineReply)
    if reply.line.startswith(b"VERSION "):
        return reply.line[8:].decode("utf-8", "replace")
    raise _unexpected(reply.line, request.what)


def _text_ok(request: Request) -> object:
    code = _text_code(request)
    if code != OK:
        raise ServerError(f"{request.what}: unexpected reply")
    return OK


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
        return TextRequest("flush_all", encode_flush_all(delay, noreply), _NONE if noreply else _LINE, _text_ok)

    def stats(self, args: Sequence[bytes] = ()) -> Request:
        data = b" ".join((b"stats", *args)) + b"\r\n"
        return TextRequest("stats", data, (Expect.STATS,), _text_stats)

    def version(self) -> Request:
        return TextRequest("version", b"version\r\n", _LINE, _text_version)


# -- binary ----------------------------------------------------------------------------------------

_STATUS_CODES: Final[dict[int, int]] = {
    bp.STATUS_NO_ERROR: OK,
    bp.STATUS_NOT_STORED: NOT_STORED,
    bp.STATUS_KEY_EEXISTS: EXISTS,
    bp.STATUS_KEY_ENOENT: NOT_FOUND,
}
_STORE_OPS: Final[dict[str, int]] = {
    "set": bp.OP_SET, "add": bp.OP_ADD, "replace": bp.OP_REPLACE, "cas": bp.OP_SET,
    "append": bp.OP_APPEND, "prepend": bp.OP_PREPEND,
}
_WITH_EXTRAS: Final = frozenset(("set", "add", "replace", "cas"))
_encode = bp.encode_request
_unpack_flags = bp.unpack_get_reply_extras


def _noop(opaque: int) -> bytes:
    return _encode(bp.OP_NOOP, opaque=opaque)


def _packet_code(packet: bp.Packet, what: str) -> int | CacheError:
    status = packet.status_or_vbucket
    code = _STATUS_CODES.get(status)
    return binary_status_error(status, packet.value, what) if code is None else code


def _bin_code(request: Request) -> object:
    if not request.replies:
        return OK  # quiet, not waited for
    packet = request.replies[0]
    assert isinstance(packet, bp.Packet)
    code = _packet_code(packet, request.what)
    if isinstance(code, CacheError):
        raise code
    return code


def _bin_codes(request: Request) -> object:
    """One code per item of a quiet batch: OK unless an error packet names the item."""
    assert isinstance(request, BinaryRequest)
    codes: list[int | CacheError] = [OK] * (request.count - 1)
    base = request.base
    what = request.what
    for packet in request.replies:
        assert isinstance(packet, bp.Packet)
        offset = (packet.opaque - base) & 0xFFFFFFFF
        if offset < len(codes):
            codes[offset] = _packet_code(packet, what)
    return codes


def _bin_values(request: Request) -> object:
    assert isinstance(request, BinaryRequest)
    out: list[Value] = []
    single = request.count == 1
    for packet in request.replies:
        assert isinstance(packet, bp.Packet)
        status = packet.status_or_vbucket
        if status == bp.STATUS_NO_ERROR:
            if packet.opcode == bp.OP_NOOP:
                continue
            key = request.keys[0] if single and isinstance(request, _KeyedBinaryRequest) else packet.key
            out.append(Value(key, _unpack_flags(packet.extras), packet.value, packet.cas))
        elif status != bp.STATUS_KEY_ENOENT:
            raise binary_status_error(status, packet.value, request.what)
    return out


def _bin_arith(request: Request) -> object:
    if not request.replies:
        return None
    packet = request.replies[0]
    assert isinstance(packet, bp.Packet)
    status = packet.status_or_vbucket
    if status == bp.STATUS_NO_ERROR:
        return bp.unpack_counter(packet.value)
    if status == bp.STATUS_KEY_ENOENT:
        return None
    raise binary_status_error(status, packet.value, request.what)


def _bin_stats(request: Request) -> object:
    out: dict[str, str] = {}
    for packet in request.replies:
        assert isinstance(packet, bp.Packet)
        if packet.status_or_vbucket:
            raise binary_status_error(packet.status_or_vbucket, packet.value, request.what)
        if packet.key:
            out[packet.key.decode("utf-8", "replace")] = packet.value.decode("utf-8", "replace")
    return out


def _bin_version(request: Request) -> object:
    packet = request.replies[0]
    assert isinstance(packet, bp.Packet)
    if packet.status_or_vbucket:
        raise binary_status_error(packet.status_or_vbucket, packet.value, request.what)
    return packet.value.decode("utf-8", "replace")


def _bin_ok(request: Request) -> object:
    _bin_code(request)
    return OK


class _KeyedBinaryRequest(BinaryRequest):
    """A single-key GET/GAT: its reply does not carry the key, so the request keeps it."""

    __slots__ = ("keys",)

    def __init__(self, what: str, keys: Sequence[bytes], build: Callable[[int], bytes], count: int,
                 decode: Decode) -> None:
        super().__init__(what, build, count, decode)
        self.keys = keys


class BinaryCodec:
    """Requests in the memcached binary protocol (quiet opcodes + NOOP for batches and noreply)."""

    name: Final = "binary"
    state = BinaryConnState

    def retrieve(self, keys: Sequence[bytes], cas: bool = False, touch: int | None = None) -> Request:
        what = "gat" if touch is not None else ("gets" if cas else "get")
        extras = b"" if touch is None else bp.pack_touch_extras(touch)
        if len(keys) == 1:
            key = keys[0]
            op = bp.OP_GET if touch is None else bp.OP_GAT
            return _KeyedBinaryRequest(what, keys, lambda base: _encode(op, key, extras, opaque=base), 1,
                                       _bin_values)
        op = bp.OP_GETKQ if touch is None else bp.OP_GATKQ

        def build(base: int) -> bytes:
            parts = [_encode(op, key, extras, opaque=base + i) for i, key in enumerate(keys)]
            parts.append(_noop(base + len(keys)))
            return b"".join(parts)

        return BinaryRequest(what, build, len(keys) + 1, _bin_values)

    def store(self, command: str, key: bytes, value: bytes, flags: int, exptime: int, cas: int = 0,
              noreply: bool = False) -> Request:
        op = _STORE_OPS[command]
        if noreply:
            op = bp.QUIET_VARIANT[op]
        extras = bp.pack_store_extras(flags, exptime) if command in _WITH_EXTRAS else b""
        return BinaryRequest(command, lambda base: _encode(op, key, extras, value, opaque=base, cas=cas), 1,
                             _bin_code, wait=not noreply)

    def store_many(self, command: str, items: Sequence[tuple[bytes, bytes, int]], exptime: int,
                   noreply: bool = False) -> Request:
        op = bp.QUIET_VARIANT[_STORE_OPS[command]]
        with_extras = command in _WITH_EXTRAS
        pack = bp.pack_store_extras

        def build(base: int) -> bytes:
            parts = [_encode(op, key, pack(flags, exptime) if with_extras else b"", value, opaque=base + i)
                     for i, (key, value, flags) in enumerate(items)]
            if not noreply:
                parts.append(_noop(base + len(items)))
            return b"".join(parts)

        return BinaryRequest(command, build, len(items) + (0 if noreply else 1), _bin_codes, wait=not noreply)

    def delete(self, key: bytes, noreply: bool = False) -> Request:
        op = bp.OP_DELETEQ if noreply else bp.OP_DELETE
        return BinaryRequest("delete", lambda base: _encode(op, key, opaque=base), 1, _bin_code,
                             wait=not noreply)

    def delete_many(self, keys: Sequence[bytes], noreply: bool = False) -> Request:
        def build(base: int) -> bytes:
            parts = [_encode(bp.OP_DELETEQ, key, opaque=base + i) for i, key in enumerate(keys)]
            if not noreply:
                parts.append(_noop(base + len(keys)))
            return b"".join(parts)

        return BinaryRequest("delete", build, len(keys) + (0 if noreply else 1), _bin_codes, wait=not noreply)

    def arith(self, key: bytes, delta: int, incr: bool, noreply: bool = False) -> Request:
        op = bp.OP_INCREMENT if incr else bp.OP_DECREMENT
        if noreply:
            op = bp.QUIET_VARIANT[op]
        extras = bp.pack_arith_extras(delta, 0, bp.INCR_NO_CREATE)
        return BinaryRequest("incr" if incr else "decr", lambda base: _encode(op, key, extras, opaque=base), 1,
                             _bin_arith, wait=not noreply)

    def touch(self, key: bytes, exptime: int, noreply: bool = False) -> Request:
        # TOUCH has no quiet variant: noreply is not possible here, the reply is awaited.
        extras = bp.pack_touch_extras(exptime)
        return BinaryRequest("touch", lambda base: _encode(bp.OP_TOUCH, key, extras, opaque=base), 1, _bin_code)

    def flush_all(self, delay: int = 0, noreply: bool = False) -> Request:
        op = bp.OP_FLUSHQ if noreply else bp.OP_FLUSH
        extras = bp.pack_flush_extras(delay) if delay else b""
        return BinaryRequest("flush_all", lambda base: _encode(op, b"", extras, opaque=base), 1, _bin_ok,
                             wait=not noreply)

    def stats(self, args: Sequence[bytes] = ()) -> Request:
        key = b" ".join(args)
        return BinaryRequest("stats", lambda base: _encode(bp.OP_STAT, key, opaque=base), 1, _bin_stats,
                             stat=True)

    def version(self) -> Request:
        return BinaryRequest("version", lambda base: _encode(bp.OP_VERSION, opaque=base), 1, _bin_version)


Codec = TextCodec | BinaryCodec
