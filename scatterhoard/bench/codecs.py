"""Per-protocol request encoding and reply accounting for ``hoard bench``, over the sans-IO core.

A codec turns an :class:`~.workload.Op` into request bytes plus a small
``meta`` tuple (:meth:`Codec.encode`, done once when the worker pre-builds its
pool of requests), is told when a request goes out (:meth:`Codec.sent`) and is
fed the bytes that come back (:meth:`Codec.feed`), which it parses with the
protocol's own parser from :mod:`scatterhoard.protocol` and returns one
``(kind, hits, misses, errors)`` outcome per completed operation, in request
order.  Hits are found keys (gets), stored values (sets), existing counters
(incr) and deleted keys; misses are the opposite; errors are error replies.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from ..protocol import binary as b
from ..protocol import distcache as dc
from ..protocol.resp_encode import encode_command
from ..protocol.resp_parser import RespParser
from ..protocol.resp_types import Error as RespError
from ..protocol.resp_types import SimpleString
from ..protocol.text_client import (
    Expect,
    LineReply,
    MetaReply,
    TextReplyParser,
    ValuesReply,
    encode_arith,
    encode_delete,
    encode_get,
    encode_meta,
    encode_store,
)
from .workload import DELETE, GET, INCR, MGET, SET, Op

Outcome = tuple[int, int, int, int]  # kind, hits, misses, errors
Meta = tuple[Any, ...]

DISTCACHE_DEFAULT_TIMEOUT_MS: Final = 3_600_000


class Codec:
    """Base class: subclasses implement ``encode``, ``sent`` and ``feed``."""

    name = ""

    def __init__(self, expire: int = 0) -> None:
        self.expire = expire

    def encode(self, op: Op, seq: int) -> tuple[bytes, Meta]:
        raise NotImplementedError

    def sent(self, meta: Meta) -> None:
        raise NotImplementedError

    def feed(self, data: bytes) -> list[Outcome]:
        raise NotImplementedError


def _line_outcome(kind: int, nkeys: int, reply: object) -> tuple[int, int, int]:
    """(hits, misses, errors) of one text or meta reply."""
    if isinstance(reply, ValuesReply):
        found = len(reply.values)
        return found, max(0, nkeys - found), 0
    if isinstance(reply, MetaReply):
        if reply.code in (b"VA", b"HD"):
            return 1, 0, 0
        if reply.code in (b"EN", b"NF", b"NS", b"EX"):
            return 0, 1, 0
        return 0, 0, 1
    assert isinstance(reply, LineReply)
    line = reply.line
    if reply.is_error:
        return 0, 0, 1
    if kind == SET:
        return (1, 0, 0) if line == b"STORED" else (0, 1, 0)
    if kind == INCR:
        return (1, 0, 0) if line.isdigit() else (0, 1, 0) if line == b"NOT_FOUND" else (0, 0, 1)
    if kind == DELETE:
        return (1, 0, 0) if line == b"DELETED" else (0, 1, 0) if line == b"NOT_FOUND" else (0, 0, 1)
    return 0, 0, 1


class _Op:
    """A text or meta operation in flight: its replies still due and what they said so far."""

    __slots__ = ("kind", "nkeys", "due", "hits", "misses", "errors")

    def __init__(self, kind: int, nkeys: int, due: int) -> None:
        self.kind = kind
        self.nkeys = nkeys
        self.due = due
        self.hits = 0
        self.misses = 0
        self.errors = 0


class TextCodec(Codec):
    """memcached text protocol (``meta=False``) or meta commands (``meta=True``)."""

    def __init__(self, expire: int = 0, meta: bool = False) -> None:
        super().__init__(expire)
        self.meta = meta
        self.name = "meta" if meta else "text"
        self.parser = TextReplyParser(keep=False)  # counts only: no value objects, no raw copies
        self.pending: deque[_Op] = deque()

    def encode(self, op: Op, seq: int) -> tuple[bytes, Meta]:
        kind, keys = op.kind, op.keys
        if not self.meta:
            if kind in (GET, MGET):
                return encode_get(list(keys)), (kind, len(keys), (Expect.VALUES,))
            if kind == SET:
                return encode_store(b"set", keys[0], op.value, 0, self.expire), (kind, 1, (Expect.LINE,))
            if kind == INCR:
                return encode_arith(keys[0], 1), (kind, 1, (Expect.LINE,))
            return encode_delete(keys[0]), (kind, 1, (Expect.LINE,))
        if kind in (GET, MGET):
            data = b"".join(encode_meta(b"mg", k, [b"v"]) for k in keys)
            return data, (kind, len(keys), (Expect.META,) * len(keys))
        if kind == SET:
            flags = [b"T%d" % self.expire] if self.expire else []
            return encode_meta(b"ms", keys[0], flags, op.value), (kind, 1, (Expect.META,))
        if kind == INCR:
            return encode_meta(b"ma", keys[0], []), (kind, 1, (Expect.META,))
        return encode_meta(b"md", keys[0], []), (kind, 1, (Expect.META,))

    def sent(self, meta: Meta) -> None:
        kind, nkeys, expects = meta
        for e in expects:
            self.parser.expect(e)
        self.pending.append(_Op(kind, nkeys, len(expects)))

    def feed(self, data: bytes) -> list[Outcome]:
        out: list[Outcome] = []
        pending = self.pending
        meta = self.meta
        for reply in self.parser.feed(data):
            op = pending[0]
            kind = op.kind
            h, m, e = _line_outcome(kind, 1 if meta else op.nkeys, reply)
            if op.due == 1:  # the common case: its only (or last) reply
                pending.popleft()
                out.append((kind, op.hits + h, op.misses + m, op.errors + e))
                continue
            op.hits += h
            op.misses += m
            op.errors += e
            op.due -= 1
        return out


_NO_CREATE: Final = 0xFFFFFFFF  # binary incr exptime: do not create a missing counter (like text incr)


class BinaryCodec(Codec):
    """memcached binary protocol; a multi-get is GETKQ per key then a NOOP."""

    name = "binary"

    def __init__(self, expire: int = 0) -> None:
        super().__init__(expire)
        self.parser = b.BinaryParser(None, magic=b.RESPONSE_MAGIC)
        self.pending: deque[list[int]] = deque()  # [kind, nkeys, hits, errors]

    def encode(self, op: Op, seq: int) -> tuple[bytes, Meta]:
        kind, keys = op.kind, op.keys
        opaque = seq & 0xFFFFFFFF
        if kind == GET:
            data = b.encode_request(b.OP_GET, keys[0], opaque=opaque)
        elif kind == MGET:
            data = b"".join(b.encode_request(b.OP_GETKQ, k, opaque=opaque) for k in keys)
            data += b.encode_request(b.OP_NOOP, opaque=opaque)
        elif kind == SET:
            data = b.encode_request(b.OP_SET, keys[0], b.pack_store_extras(0, self.expire), op.value,
                                    opaque=opaque)
        elif kind == INCR:
            data = b.encode_request(b.OP_INCREMENT, keys[0], b.pack_arith_extras(1, 0, _NO_CREATE), opaque=opaque)
        else:
            data = b.encode_request(b.OP_DELETE, keys[0], opaque=opaque)
        return data, (kind, len(keys))

    def sent(self, meta: Meta) -> None:
        self.pending.append([meta[0], meta[1], 0, 0])

    def feed(self, data: bytes) -> list[Outcome]:
        out: list[Outcome] = []
        pending = self.pending
        for p in self.parser.feed(data):
            if isinstance(p, b.TooLarge):  # cannot happen without a max_body; keep the stream in step
                continue
            op = pending[0]
            status = p.status_or_vbucket
            if p.opcode == b.OP_GETKQ:
                if status == b.STATUS_NO_ERROR:
                    op[2] += 1
                elif status != b.STATUS_KEY_ENOENT:
                    op[3] += 1
                continue
            pending.popleft()
            kind = op[0]
            if kind == MGET:
                out.append((kind, op[2], op[1] - op[2], op[3] + (status != b.STATUS_NO_ERROR)))
            elif status == b.STATUS_NO_ERROR:
                out.append((kind, 1, 0, 0))
            elif status in (b.STATUS_KEY_ENOENT, b.STATUS_KEY_EEXISTS, b.STATUS_NOT_STORED):
                out.append((kind, 0, 1, 0))
            else:
                out.append((kind, 0, 0, 1))
        return out


class RespCodec(Codec):
    """RESP (redis): GET, SET [EX], MGET, INCR, DEL."""

    name = "resp"

    def __init__(self, expire: int = 0) -> None:
        super().__init__(expire)
        self.parser = RespParser()
        self.pending: deque[tuple[int, int]] = deque()

    def encode(self, op: Op, seq: int) -> tuple[bytes, Meta]:
        kind, keys = op.kind, op.keys
        if kind == GET:
            data = encode_command(b"GET", keys[0])
        elif kind == MGET:
            data = encode_command(b"MGET", *keys)
        elif kind == SET:
            if self.expire:
                data = encode_command(b"SET", keys[0], op.value, b"EX", self.expire)
            else:
                data = encode_command(b"SET", keys[0], op.value)
        elif kind == INCR:
            data = encode_command(b"INCR", keys[0])
        else:
            data = encode_command(b"DEL", keys[0])
        return data, (kind, len(keys))

    def sent(self, meta: Meta) -> None:
        self.pending.append((meta[0], meta[1]))

    def feed(self, data: bytes) -> list[Outcome]:
        out: list[Outcome] = []
        pending = self.pending
        for v in self.parser.feed(data):
            kind, nkeys = pending.popleft()
            if isinstance(v, RespError):
                out.append((kind, 0, 0, 1))
            elif kind == MGET and isinstance(v, list):
                found = sum(1 for x in v if x is not None)
                out.append((kind, found, nkeys - found, 0))
            elif kind == GET:
                out.append((kind, 1, 0, 0) if isinstance(v, bytes) else (kind, 0, 1, 0))
            elif kind == SET:
                out.append((kind, 1, 0, 0) if isinstance(v, SimpleString) else (kind, 0, 1, 0))
            elif kind == INCR:
                out.append((kind, 1, 0, 0) if isinstance(v, int) else (kind, 0, 0, 1))
            else:
                out.append((kind, 1, 0, 0) if v == 1 else (kind, 0, 1, 0))
        return out


class DistcacheCodec(Codec):
    """distcache: GET, ADD (a set; an existing id is a miss, ADD_DUPLICATE), REMOVE."""

    name = "distcache"

    def __init__(self, expire: int = 0) -> None:
        super().__init__(expire)
        self.parser = dc.DistcacheParser("client")
        self.pending: deque[int] = deque()
        self.timeout_ms = expire * 1000 if expire else DISTCACHE_DEFAULT_TIMEOUT_MS

    def encode(self, op: Op, seq: int) -> tuple[bytes, Meta]:
        uid = seq & dc.MAX_UID
        if op.kind == GET:
            return dc.encode_get(uid, op.keys[0]), (GET,)
        if op.kind == SET:
            return dc.encode_add(uid, op.keys[0], op.value, self.timeout_ms), (SET,)
        return dc.encode_remove(uid, op.keys[0]), (DELETE,)

    def sent(self, meta: Meta) -> None:
        self.pending.append(meta[0])

    def feed(self, data: bytes) -> list[Outcome]:
        out: list[Outcome] = []
        for msg in self.parser.feed(data):
            kind = self.pending.popleft()
            code = dc.decode_response(msg).code
            if code == dc.RESULT_OK:
                out.append((kind, 1, 0, 0))
            elif code == dc.RESULT_NOTOK or (kind == SET and code == dc.RESULT_ADD_DUPLICATE):
                out.append((kind, 0, 1, 0))
            else:
                out.append((kind, 0, 0, 1))
        return out


def make_codec(protocol: str, expire: int = 0) -> Codec:
    if protocol == "text":
        return TextCodec(expire)
    if protocol == "meta":
        return TextCodec(expire, meta=True)
    if protocol == "binary":
        return BinaryCodec(expire)
    if protocol == "resp":
        return RespCodec(expire)
    return DistcacheCodec(expire)
