"""Blocking one-request-at-a-time drivers for ``hoard bench --verify``, one per protocol.

Each driver speaks one protocol over one socket through the sans-IO codecs
and returns plain Python results (``None`` for a miss), so the model checker
in :mod:`.verify` is protocol-blind.  A reply of the wrong shape raises
:class:`Unexpected` with the reply shown, which the checker reports as a
discrepancy.  Capabilities a protocol lacks are flags on the driver class.
"""

from __future__ import annotations

from typing import NamedTuple

from ..address import Address
from ..distcache.net import connect_blocking
from ..errors import ProtocolError
from ..protocol import binary as b
from ..protocol import distcache as dc
from ..protocol.resp_encode import encode_command
from ..protocol.resp_parser import RespParser
from ..protocol.resp_types import Error as RespError
from ..protocol.resp_types import RespValue, SimpleString
from ..protocol.text_client import (
    Expect,
    LineReply,
    MetaReply,
    TextReply,
    TextReplyParser,
    ValuesReply,
    encode_arith,
    encode_delete,
    encode_get,
    encode_meta,
    encode_store,
)
from .workload import BenchError


class Unexpected(BenchError):
    """A reply that is not one of the answers the request can get."""


class Found(NamedTuple):
    value: bytes
    flags: int
    cas: int


class Driver:
    """One connection; subclasses implement the operations their protocol has."""

    name = ""
    has_flags = True
    has_cas = True
    has_decr = True
    has_counters = True
    incr_creates = False  # INCR on a missing key starts from 0 (redis) instead of missing (memcached)
    ttl_unit = 1.0  # seconds per ttl unit sent on the wire (distcache: milliseconds)

    def __init__(self, address: Address, timeout: float) -> None:
        try:
            self.sock = connect_blocking(address, timeout)
        except OSError as exc:
            raise BenchError(f"cannot connect to {address}: {exc.strerror or exc}") from None
        self.address = address
        self.last = b""  # the last request, for the report

    def close(self) -> None:
        self.sock.close()

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(1 << 18)
        except TimeoutError:
            raise Unexpected("no reply (timed out)") from None
        except OSError as exc:
            raise Unexpected(f"connection failed: {exc.strerror or exc}") from None
        if not data:
            raise Unexpected("the server closed the connection instead of replying")
        return data

    def get(self, key: bytes) -> Found | None:
        raise NotImplementedError

    def set(self, key: bytes, value: bytes, flags: int, ttl: int) -> None:
        raise NotImplementedError

    def add(self, key: bytes, value: bytes, flags: int, ttl: int) -> bool:
        raise NotImplementedError

    def delete(self, key: bytes) -> bool:
        raise NotImplementedError

    def arith(self, key: bytes, delta: int, incr: bool) -> int | None:
        raise NotImplementedError

    def cas(self, key: bytes, value: bytes, flags: int, ttl: int, token: int) -> str:
        """``stored``, ``exists`` (token mismatch) or ``not_found``."""
        raise NotImplementedError


class TextDriver(Driver):
    name = "text"

    def __init__(self, address: Address, timeout: float) -> None:
        super().__init__(address, timeout)
        self.parser = TextReplyParser()

    def call(self, request: bytes, kind: Expect) -> TextReply:
        self.last = request
        self.parser.expect(kind)
        self.sock.sendall(request)
        while True:
            try:
                replies = self.parser.feed(self._recv())
            except ProtocolError as exc:
                raise Unexpected(str(exc)) from None
            if replies:
                return replies[0]

    def line(self, request: bytes, *allowed: bytes) -> bytes:
        r = self.call(request, Expect.LINE)
        assert isinstance(r, LineReply)
        if r.line in allowed or (not allowed and r.line.isdigit()):
            return r.line
        raise Unexpected(f"reply {r.line[:100]!r}")

    def get(self, key: bytes) -> Found | None:
        r = self.call(encode_get([key], cas=True), Expect.VALUES)
        if not isinstance(r, ValuesReply) or len(r.values) > 1:
            raise Unexpected(f"reply {r.raw[:100]!r}")
        if not r.values:
            return None
        v = r.values[0]
        if v.key != key:
            raise Unexpected(f"VALUE for key {v.key!r}")
        return Found(v.value, v.flags, v.cas)

    def set(self, key: bytes, value: bytes, flags: int, ttl: int) -> None:
        self.line(encode_store(b"set", key, value, flags, ttl), b"STORED")

    def add(self, key: bytes, value: bytes, flags: int, ttl: int) -> bool:
        return self.line(encode_store(b"add", key, value, flags, ttl), b"STORED", b"NOT_STORED") == b"STORED"

    def delete(self, key: bytes) -> bool:
        return self.line(encode_delete(key), b"DELETED", b"NOT_FOUND") == b"DELETED"

    def arith(self, key: bytes, delta: int, incr: bool) -> int | None:
        r = self.call(encode_arith(key, delta, incr), Expect.LINE)
        assert isinstance(r, LineReply)
        if r.line == b"NOT_FOUND":
            return None
        if r.line.isdigit():
            return int(r.line)
        raise Unexpected(f"reply {r.line[:100]!r}")

    def cas(self, key: bytes, value: bytes, flags: int, ttl: int, token: int) -> str:
        line = self.line(encode_store(b"cas", key, value, flags, ttl, cas=token), b"STORED", b"EXISTS",
                         b"NOT_FOUND")
        return line.decode().lower()


class MetaDriver(TextDriver):
    name = "meta"

    def meta(self, request: bytes) -> MetaReply:
        r = self.call(request, Expect.META)
        if not isinstance(r, MetaReply):
            raise Unexpected(f"reply {r.raw[:100]!r}")
        return r

    @staticmethod
    def flag(r: MetaReply, letter: bytes) -> int:
        for f in r.flags:
            if f[:1] == letter:
                return int(f[1:])
        raise Unexpected(f"reply {r.raw[:100]!r} lacks the {letter.decode()} flag")

    def get(self, key: bytes) -> Found | None:
        r = self.meta(encode_meta(b"mg", key, [b"v", b"f", b"c"]))
        if r.code == b"EN":
            return None
        if r.code != b"VA" or r.value is None:
            raise Unexpected(f"reply {r.raw[:100]!r}")
        return Found(r.value, self.flag(r, b"f"), self.flag(r, b"c"))

    def _ms(self, key: bytes, value: bytes, flags: int, ttl: int, extra: list[bytes]) -> bytes:
        r = self.meta(encode_meta(b"ms", key, [b"F%d" % flags, b"T%d" % ttl, *extra], value))
        if r.code in (b"HD", b"NS", b"EX", b"NF"):
            return r.code
        raise Unexpected(f"reply {r.raw[:100]!r}")

    def set(self, key: bytes, value: bytes, flags: int, ttl: int) -> None:
        if (code := self._ms(key, value, flags, ttl, [])) != b"HD":
            raise Unexpected(f"reply {code!r} to a set")

    def add(self, key: bytes, value: bytes, flags: int, ttl: int) -> bool:
        code = self._ms(key, value, flags, ttl, [b"ME"])
        if code not in (b"HD", b"NS"):
            raise Unexpected(f"reply {code!r} to an add")
        return code == b"HD"

    def delete(self, key: bytes) -> bool:
        r = self.meta(encode_meta(b"md", key, []))
        if r.code not in (b"HD", b"NF"):
            raise Unexpected(f"reply {r.raw[:100]!r}")
        return r.code == b"HD"

    def arith(self, key: bytes, delta: int, incr: bool) -> int | None:
        r = self.meta(encode_meta(b"ma", key, [b"D%d" % delta, b"v"] + ([] if incr else [b"MD"])))
        if r.code == b"NF":
            return None
        if r.code != b"VA" or r.value is None or not r.value.isdigit():
            raise Unexpected(f"reply {r.raw[:100]!r}")
        return int(r.value)

    def cas(self, key: bytes, value: bytes, flags: int, ttl: int, token: int) -> str:
        code = self._ms(key, value, flags, ttl, [b"C%d" % token])
        return {b"HD": "stored", b"EX": "exists", b"NF": "not_found"}.get(code) or _bad(code)


def _bad(what: object) -> str:
    raise Unexpected(f"reply {what!r}")


class BinaryDriver(Driver):
    name = "binary"

    def __init__(self, address: Address, timeout: float) -> None:
        super().__init__(address, timeout)
        self.parser = b.BinaryParser(None, magic=b.RESPONSE_MAGIC)
        self.opaque = 0

    def call(self, opcode: int, key: bytes, extras: bytes = b"", value: bytes = b"", cas: int = 0) -> b.Packet:
        self.opaque += 1
        self.last = request = b.encode_request(opcode, key, extras, value, opaque=self.opaque, cas=cas)
        self.sock.sendall(request)
        while True:
            try:
                packets = self.parser.feed(self._recv())
            except ProtocolError as exc:
                raise Unexpected(str(exc)) from None
            if packets:
                p = packets[0]
                if isinstance(p, b.TooLarge) or p.opcode != opcode or p.opaque != self.opaque:
                    raise Unexpected(f"reply packet {p!r:.200}")
                return p

    def status(self, p: b.Packet, *allowed: int) -> int:
        if p.status in allowed:
            return p.status
        raise Unexpected(f"status {b.STATUS_NAMES.get(p.status, hex(p.status))} ({p.value[:80]!r})")

    def get(self, key: bytes) -> Found | None:
        p = self.call(b.OP_GET, key)
        if self.status(p, b.STATUS_NO_ERROR, b.STATUS_KEY_ENOENT):
            return None
        return Found(p.value, b.unpack_get_reply_extras(p.extras), p.cas)

    def set(self, key: bytes, value: bytes, flags: int, ttl: int) -> None:
        self.status(self.call(b.OP_SET, key, b.pack_store_extras(flags, ttl), value), b.STATUS_NO_ERROR)

    def add(self, key: bytes, value: bytes, flags: int, ttl: int) -> bool:
        p = self.call(b.OP_ADD, key, b.pack_store_extras(flags, ttl), value)
        return self.status(p, b.STATUS_NO_ERROR, b.STATUS_KEY_EEXISTS) == b.STATUS_NO_ERROR

    def delete(self, key: bytes) -> bool:
        return self.status(self.call(b.OP_DELETE, key), b.STATUS_NO_ERROR, b.STATUS_KEY_ENOENT) == 0

    def arith(self, key: bytes, delta: int, incr: bool) -> int | None:
        p = self.call(b.OP_INCREMENT if incr else b.OP_DECREMENT, key, b.pack_arith_extras(delta, 0, 0xFFFFFFFF))
        if self.status(p, b.STATUS_NO_ERROR, b.STATUS_KEY_ENOENT):
            return None
        return b.unpack_counter(p.value)

    def cas(self, key: bytes, value: bytes, flags: int, ttl: int, token: int) -> str:
        p = self.call(b.OP_SET, key, b.pack_store_extras(flags, ttl), value, cas=token)
        st = self.status(p, b.STATUS_NO_ERROR, b.STATUS_KEY_EEXISTS, b.STATUS_KEY_ENOENT)
        return {b.STATUS_NO_ERROR: "stored", b.STATUS_KEY_EEXISTS: "exists"}.get(st, "not_found")


class RespDriver(Driver):
    name = "resp"
    has_flags = False
    has_cas = False
    has_decr = True
    incr_creates = True

    def __init__(self, address: Address, timeout: float) -> None:
        super().__init__(address, timeout)
        self.parser = RespParser()

    def call(self, *args: bytes | int) -> RespValue:
        self.last = request = encode_command(*args)
        self.sock.sendall(request)
        while True:
            try:
                values = self.parser.feed(self._recv())
            except ProtocolError as exc:
                raise Unexpected(str(exc)) from None
            if values:
                if isinstance(values[0], RespError):
                    raise Unexpected(f"error reply {values[0]!r}")
                return values[0]

    def get(self, key: bytes) -> Found | None:
        v = self.call(b"GET", key)
        if v is None:
            return None
        if not isinstance(v, bytes):
            raise Unexpected(f"reply {v!r:.100}")
        return Found(v, 0, 0)

    def _set(self, key: bytes, value: bytes, ttl: int, *extra: bytes) -> RespValue:
        return self.call(b"SET", key, value, *((b"EX", ttl) if ttl else ()), *extra)

    def set(self, key: bytes, value: bytes, flags: int, ttl: int) -> None:
        if (v := self._set(key, value, ttl)) != SimpleString(b"OK"):
            raise Unexpected(f"reply {v!r:.100}")

    def add(self, key: bytes, value: bytes, flags: int, ttl: int) -> bool:
        v = self._set(key, value, ttl, b"NX")
        if v is not None and v != SimpleString(b"OK"):
            raise Unexpected(f"reply {v!r:.100}")
        return v is not None

    def delete(self, key: bytes) -> bool:
        v = self.call(b"DEL", key)
        if v not in (0, 1) or isinstance(v, bool):
            raise Unexpected(f"reply {v!r:.100}")
        return v == 1

    def arith(self, key: bytes, delta: int, incr: bool) -> int | None:
        v = self.call(b"INCRBY" if incr else b"DECRBY", key, delta)
        if not isinstance(v, int) or isinstance(v, bool):
            raise Unexpected(f"reply {v!r:.100}")
        return v


class DistcacheDriver(Driver):
    name = "distcache"
    has_flags = False
    has_cas = False
    has_decr = False
    has_counters = False
    ttl_unit = 0.001

    def __init__(self, address: Address, timeout: float) -> None:
        super().__init__(address, timeout)
        self.parser = dc.DistcacheParser("client")
        self.uid = 0

    def call(self, encoder: object, *args: object) -> dc.Response:
        self.uid = (self.uid + 1) & dc.MAX_UID
        self.last = request = encoder(self.uid, *args)  # type: ignore[operator]
        assert isinstance(request, bytes)
        self.sock.sendall(request)
        while True:
            try:
                msgs = self.parser.feed(self._recv())
                if msgs:
                    r = dc.decode_response(msgs[0])
                    if r.uid != self.uid:
                        raise Unexpected(f"reply for uid {r.uid}, expected {self.uid}")
                    return r
            except ProtocolError as exc:
                raise Unexpected(str(exc)) from None

    def get(self, key: bytes) -> Found | None:
        r = self.call(dc.encode_get, key)
        if r.code == dc.RESULT_OK and r.data is not None:
            return Found(r.data, 0, 0)
        if r.code == dc.RESULT_NOTOK:
            return None
        raise Unexpected(f"GET result {dc.RESULT_NAMES.get(r.code, r.code)}")

    def add(self, key: bytes, value: bytes, flags: int, ttl: int) -> bool:
        r = self.call(dc.encode_add, key, value, ttl or 3_600_000)
        if r.code in (dc.RESULT_OK, dc.RESULT_ADD_DUPLICATE):
            return r.code == dc.RESULT_OK
        raise Unexpected(f"ADD result {dc.RESULT_NAMES.get(r.code, r.code)}")

    def set(self, key: bytes, value: bytes, flags: int, ttl: int) -> None:
        self.delete(key)  # distcache has no overwrite: remove, then add
        if not self.add(key, value, flags, ttl):
            raise Unexpected("ADD_DUPLICATE right after the id was removed")

    def delete(self, key: bytes) -> bool:
        r = self.call(dc.encode_remove, key)
        if r.code not in (dc.RESULT_OK, dc.RESULT_NOTOK):
            raise Unexpected(f"REMOVE result {dc.RESULT_NAMES.get(r.code, r.code)}")
        return r.code == dc.RESULT_OK


DRIVERS: dict[str, type[Driver]] = {"text": TextDriver, "meta": MetaDriver, "binary": BinaryDriver,
                                    "resp": RespDriver, "distcache": DistcacheDriver}
