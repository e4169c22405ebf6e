"""The memcached meta protocol for the client: :class:`MetaCodec` requests and :class:`MetaConnState`.

Every command maps onto ``mg``/``ms``/``md``/``ma``:

============== ==============================================================
get/gets/gat   ``mg <key> v f`` (+ ``c`` for the CAS token, ``T<ttl>`` to touch)
               per key; a multi-get is one ``mg`` per key, answered in order
set/add/...    ``ms <key> <len> F<flags> T<ttl> M<mode>`` (``C<cas>`` for cas);
               append/prepend keep the item's flags and TTL, as in text
delete         ``md <key>``
incr/decr      ``ma <key> D<delta> MI|MD v``
touch          ``mg <key> T<ttl>`` (HD touched, EN missing)
noreply        the same commands with ``q`` (only failures are answered)
               followed by ``mn``: the connection stays in step because the
               client reads up to the ``MN``, and the answer is assumed, as
               with text ``noreply``
flush_all,     the classic text commands (a meta connection is a text
stats, version connection)
============== ==============================================================

The replies are parsed with :func:`scatterhoard.protocol.text_client.parse_meta_reply`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Final

from ..errors import CacheError, ProtocolError, ServerError
from ..protocol.text_client import LineReply, MetaReply, StatsReply, Value, encode_flush_all, parse_meta_reply
from .codec_text import decode_ok, decode_stats, decode_version, unexpected_reply
from .errors import text_error
from .request import EXISTS, NOT_FOUND, NOT_STORED, OK, Decode, Request

__all__ = ["MetaCodec", "MetaConnState", "MetaRequest"]

META: Final = 0  # ``count`` meta replies, one per command
UNTIL_MN: Final = 1  # quiet commands then ``mn``: whatever replies come, up to ``MN``
LINE: Final = 2  # one classic reply line
STATS: Final = 3  # STAT lines up to END

_META_CODES: Final[dict[bytes, int]] = {
    b"HD": OK, b"NS": NOT_STORED, b"EX": EXISTS, b"NF": NOT_FOUND, b"EN": NOT_FOUND,
}
_MODES: Final[dict[str, bytes]] = {
    "set": b"", "cas": b"", "add": b" ME", "replace": b" MR", "append": b" MA", "prepend": b" MP",
}
_KEEPS_ITEM: Final = frozenset(("append", "prepend"))  # flags and TTL stay the item's
_MN: Final = b"mn\r\n"
_tuple_new = tuple.__new__


class MetaRequest(Request):
    """``kind`` says how the answer ends (see the module constants); ``keys`` for retrievals."""

    __slots__ = ("count", "data", "keys", "kind")

    def __init__(self, what: str, data: bytes, kind: int, count: int, decode: Decode,
                 keys: Sequence[bytes] = ()) -> None:
        self.what = what
        self.decode = decode
        self.replies: list[object] = []
        self.done = False
        self.data = data
        self.kind = kind
        self.count = count
        self.keys = keys


class MetaConnState:
    """Replies of one meta-protocol connection, handed to the requests in flight in order."""

    __slots__ = ("_buf", "_pending")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pending: deque[MetaRequest] = deque()

    def submit(self, request: Request) -> bytes:
        assert isinstance(request, MetaRequest)
        if request.count:
            self._pending.append(request)
        else:
            request.done = True
        return request.data

    @property
    def idle(self) -> bool:
        return not self._pending

    def feed(self, data: bytes) -> None:
        """Raises ProtocolError for bytes that are not the replies expected."""
        buf = self._buf
        view: bytes | bytearray
        if buf:
            buf += data
            view = buf
        else:
            view = data
        pending = self._pending
        size = len(view)
        pos = 0
        while pos < size:
            if not pending:
                raise ProtocolError(f"unsolicited data from server: {bytes(view[pos:pos + 80])!r}")
            request = pending[0]
            kind = request.kind
            replies = request.replies
            if kind <= UNTIL_MN:  # META or UNTIL_MN
                parsed = parse_meta_reply(view, pos)
                if parsed is None:
                    break
                reply, pos = parsed
                if kind == UNTIL_MN and type(reply) is MetaReply and reply.code == b"MN":
                    done = True
                else:
                    replies.append(reply)
                    done = kind == META and len(replies) == request.count
            else:
                eol = view.find(b"\r\n", pos)
                if eol < 0:
                    break
                line = bytes(view[pos:eol])
                pos = eol + 2
                if kind == LINE:
                    replies.append(_tuple_new(LineReply, (line, b"")))
                    done = True
                elif line.startswith(b"STAT "):
                    _, name, value = (line.split(b" ", 2) + [b""])[:3]
                    replies.append((name, value))
                    done = False
                elif line == b"END":
                    stats = list(replies)
                    replies[:] = [StatsReply(stats, b"")]  # type: ignore[arg-type]
                    done = True
                else:
                    replies[:] = [LineReply(line, b"")]
                    done = True
            if done:
                request.done = True
                pending.popleft()
        if pos >= size:
            if buf:
                buf.clear()
        elif view is buf:
            del buf[:pos]
        else:
            self._buf = bytearray(view[pos:])


# -- decoding --------------------------------------------------------------------------------------


def _code(reply: object, what: str) -> int | CacheError:
    if type(reply) is MetaReply:
        code = _META_CODES.get(reply.code)
        if code is not None:
            return code
        return ServerError(f"{what}: unexpected reply {reply.raw[:80]!r}")
    assert isinstance(reply, LineReply)
    return unexpected_reply(reply.line, what)


def _meta_code(request: Request) -> object:
    code = _code(request.replies[0], request.what)
    if isinstance(code, CacheError):
        raise code
    return code


def _meta_codes(request: Request) -> object:
    what = request.what
    return [_code(reply, what) for reply in request.replies]


def _assumed_ok(request: Request) -> object:
    return OK  # noreply: the answer is assumed, as with text noreply


def _assumed_none(request: Request) -> object:
    return None


def _assumed_codes(request: Request) -> object:
    return []


def _failure(reply: object, what: str) -> CacheError:
    if isinstance(reply, LineReply):
        return text_error(reply.line, what) if reply.is_error else ServerError(f"{what}: unexpected reply")
    assert isinstance(reply, MetaReply)
    return ServerError(f"{what}: unexpected reply {reply.raw[:80]!r}")


def _meta_values(request: Request) -> object:
    assert isinstance(request, MetaRequest)
    out: list[Value] = []
    keys = request.keys
    for i, reply in enumerate(request.replies):
        if type(reply) is MetaReply:
            code = reply.code
            if code == b"VA" and reply.value is not None:
                flags = cas = 0
                for token in reply.flags:
                    if token.startswith(b"f"):
                        flags = int(token[1:])
                    elif token.startswith(b"c"):
                        cas = int(token[1:])
                out.append(_tuple_new(Value, (keys[i], flags, reply.value, cas)))
                continue
            if code == b"EN":
                continue
        raise _failure(reply, request.what)
    return out


def _meta_arith(request: Request) -> object:
    reply = request.replies[0]
    if type(reply) is MetaReply:
        if reply.code == b"VA" and reply.value is not None and reply.value.isdigit():
            return int(reply.value)
        if reply.code == b"NF":
            return None
    raise _failure(reply, request.what)


class MetaCodec:
    """Requests in the memcached meta protocol (``mg ms md ma mn``)."""

    name: Final = "meta"
    state = MetaConnState

    def retrieve(self, keys: Sequence[bytes], cas: bool = False, touch: int | None = None) -> Request:
        what = "gat" if touch is not None else ("gets" if cas else "get")
        tail = b" v f"
        if cas:
            tail += b" c"
        if touch is not None:
            tail += b" T%d" % touch
        tail += b"\r\n"
        if len(keys) == 1:
            data = b"mg " + keys[0] + tail
        else:
            data = b"".join([b"mg " + key + tail for key in keys])
        return MetaRequest(what, data, META, len(keys), _meta_values, keys)

    @staticmethod
    def _ms(command: str, key: bytes, value: bytes, flags: int, exptime: int, cas: int, quiet: bool) -> bytes:
        if command in _KEEPS_ITEM:
            head = b"ms %s %d%s" % (key, len(value), _MODES[command])
        else:
            head = b"ms %s %d F%d T%d%s" % (key, len(value), flags, exptime, _MODES[command])
        if cas:
            head += b" C%d" % cas
        return b"%s%s\r\n%s\r\n" % (head, b" q" if quiet else b"", value)

    def store(self, command: str, key: bytes, value: bytes, flags: int, exptime: int, cas: int = 0,
              noreply: bool = False) -> Request:
        data = self._ms(command, key, value, flags, exptime, cas, noreply)
        if noreply:
            return MetaRequest(command, data + _MN, UNTIL_MN, 1, _assumed_ok)
        return MetaRequest(command, data, META, 1, _meta_code)

    def store_many(self, command: str, items: Sequence[tuple[bytes, bytes, int]], exptime: int,
                   noreply: bool = False) -> Request:
        ms = self._ms
        data = b"".join([ms(command, key, value, flags, exptime, 0, noreply) for key, value, flags in items])
        if noreply:
            return MetaRequest(command, data + _MN, UNTIL_MN, 1, _assumed_codes)
        return MetaRequest(command, data, META, len(items), _meta_codes)

    def delete(self, key: bytes, noreply: bool = False) -> Request:
        if noreply:
            return MetaRequest("delete", b"md %s q\r\nmn\r\n" % key, UNTIL_MN, 1, _assumed_ok)
        return MetaRequest("delete", b"md %s\r\n" % key, META, 1, _meta_code)

    def delete_many(self, keys: Sequence[bytes], noreply: bool = False) -> Request:
        if noreply:
            data = b"".join([b"md %s q\r\n" % key for key in keys]) + _MN
            return MetaRequest("delete", data, UNTIL_MN, 1, _assumed_codes)
        data = b"".join([b"md %s\r\n" % key for key in keys])
        return MetaRequest("delete", data, META, len(keys), _meta_codes)

    def arith(self, key: bytes, delta: int, incr: bool, noreply: bool = False) -> Request:
        what = "incr" if incr else "decr"
        mode = b"MI" if incr else b"MD"
        if noreply:
            return MetaRequest(what, b"ma %s D%d %s q\r\nmn\r\n" % (key, delta, mode), UNTIL_MN, 1, _assumed_none)
        return MetaRequest(what, b"ma %s D%d %s v\r\n" % (key, delta, mode), META, 1, _meta_arith)

    def touch(self, key: bytes, exptime: int, noreply: bool = False) -> Request:
        if noreply:
            return MetaRequest("touch", b"mg %s T%d q\r\nmn\r\n" % (key, exptime), UNTIL_MN, 1, _assumed_ok)
        return MetaRequest("touch", b"mg %s T%d\r\n" % (key, exptime), META, 1, _meta_code)

    def flush_all(self, delay: int = 0, noreply: bool = False) -> Request:
        return MetaRequest("flush_all", encode_flush_all(delay, noreply), LINE, 0 if noreply else 1, decode_ok)

    def stats(self, args: Sequence[bytes] = ()) -> Request:
        return MetaRequest("stats", b" ".join((b"stats", *args)) + b"\r\n", STATS, 1, decode_stats)

    def version(self) -> Request:
        return MetaRequest("version", b"version\r\n", LINE, 1, decode_version)
