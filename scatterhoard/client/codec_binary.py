"""The memcached binary protocol for the client: :class:`BinaryCodec` requests and :class:`BinaryConnState`.

Batches and noreply use the quiet opcodes, closed by a NOOP when an answer is awaited.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from ..errors import CacheError
from ..protocol import binary as bp
from ..protocol.text_client import Value
from .errors import binary_status_error
from .request import EXISTS, NOT_FOUND, NOT_STORED, OK, Decode, Request

__all__ = ["BinaryCodec", "BinaryConnState", "BinaryRequest"]

_tuple_new = tuple.__new__
_HEADER = bp.HEADER


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


