"""``hoard check`` cases: the memcached binary protocol (reference: memcached 1.6)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from ..protocol import binary as b
from .check import EXPIRY_WAIT, BinConn, CheckFailed, Context, case, describe_packet, eq, ok, show

P = "binary"
U64_MAX = (1 << 64) - 1
OK = b.STATUS_NO_ERROR
NOT_FOUND = b.STATUS_MESSAGES[b.STATUS_KEY_ENOENT]


def _set(c: BinConn, key: bytes, value: bytes, flags: int = 0, exptime: int = 0, *, op: int = b.OP_SET,
         cas: int = 0, status: int = OK) -> b.Packet:
    p = c.call(op, key, b.pack_store_extras(flags, exptime), value, cas=cas)
    return c.status(p, status, f"{b.OPCODE_NAMES[op]} {key.decode(errors='replace')[:60]}")


def _get(c: BinConn, key: bytes, op: int = b.OP_GET) -> b.Packet:
    return c.call(op, key)


def _value(c: BinConn, key: bytes, expected: bytes | None, flags: int = 0) -> b.Packet:
    """GET ``key``: its value and flags, or a miss when ``expected`` is None."""
    p = _get(c, key)
    what = f"GET {key.decode(errors='replace')[:60]}"
    if expected is None:
        c.status(p, b.STATUS_KEY_ENOENT, what)
        eq(f"{what}: the miss reply's value", p.value, NOT_FOUND)
        return p
    c.status(p, OK, what)
    eq(f"{what}: value", p.value, expected)
    eq(f"{what}: flags", b.unpack_get_reply_extras(p.extras) if len(p.extras) == 4 else p.extras, flags)
    ok(p.cas != 0, f"{what}: the reply carries cas 0")
    return p


def _arith(c: BinConn, key: bytes, delta: int, initial: int = 0, exptime: int = 0, *, incr: bool = True,
           status: int = OK) -> int | None:
    op = b.OP_INCREMENT if incr else b.OP_DECREMENT
    p = c.call(op, key, b.pack_arith_extras(delta, initial, exptime))
    c.status(p, status, f"{b.OPCODE_NAMES[op]} {key.decode(errors='replace')[:60]} by {delta}")
    if status != OK:
        return None
    ok(len(p.value) == 8, f"{b.OPCODE_NAMES[op]} reply value must be a u64, got {len(p.value)} bytes")
    return b.unpack_counter(p.value)


@case(P, "noop_version")
def noop_version(ctx: Context) -> None:
    """NOOP answers an empty success; VERSION a version string"""
    c = ctx.binary()
    p = c.call(b.OP_NOOP, opaque=77)
    c.status(p, OK)
    eq("NOOP reply", (p.opcode, p.opaque, p.key, p.extras, p.value), (b.OP_NOOP, 77, b"", b"", b""))
    p = c.status(c.call(b.OP_VERSION), OK)
    ok(len(p.value) > 0, "VERSION reply has an empty version")


@case(P, "set_get")
def set_get(ctx: Context) -> None:
    """SET returns a cas; GET returns flags, the value and that cas; GETK the key too"""
    c, k = ctx.binary(), ctx.key()
    p = _set(c, k, b"hello", 0xDEADBEEF)
    ok(p.cas != 0, "SET reply carries cas 0")
    eq("SET reply body", (p.key, p.extras, p.value), (b"", b"", b""))
    g = _value(c, k, b"hello", 0xDEADBEEF)
    eq("GET cas compared with SET cas", g.cas, p.cas)
    eq("GET reply key", g.key, b"")
    gk = c.status(c.call(b.OP_GETK, k), OK)
    eq("GETK reply key", gk.key, k)
    eq("GETK reply value", gk.value, b"hello")
    value = b"\r\n\x00" + bytes(range(256))
    _set(c, k, value)
    _value(c, k, value)


@case(P, "get_miss")
def get_miss(ctx: Context) -> None:
    """a GET miss is KEY_ENOENT 'Not found'; a GETK miss echoes the key with an empty value"""
    c, k = ctx.binary(), ctx.key()
    _value(c, k, None)
    p = c.status(c.call(b.OP_GETK, k), b.STATUS_KEY_ENOENT, "GETK miss")
    eq("GETK miss key", p.key, k)
    eq("GETK miss value", p.value, b"")


@case(P, "add_replace")
def add_replace(ctx: Context) -> None:
    """ADD of an existing key is KEY_EEXISTS; REPLACE of a missing one KEY_ENOENT"""
    c, k = ctx.binary(), ctx.key()
    _set(c, k, b"r", op=b.OP_REPLACE, status=b.STATUS_KEY_ENOENT)
    _set(c, k, b"first", op=b.OP_ADD)
    _set(c, k, b"second", op=b.OP_ADD, status=b.STATUS_KEY_EEXISTS)
    _value(c, k, b"first")
    _set(c, k, b"third", 9, op=b.OP_REPLACE)
    _value(c, k, b"third", 9)


@case(P, "cas")
def cas(ctx: Context) -> None:
    """SET with a stale cas is KEY_EEXISTS, with a cas on a missing key KEY_ENOENT"""
    c, k = ctx.binary(), ctx.key()
    _set(c, k, b"x", cas=12345, status=b.STATUS_KEY_ENOENT)
    first = _set(c, k, b"v1").cas
    _set(c, k, b"v2", cas=first + 1000, status=b.STATUS_KEY_EEXISTS)
    second = _set(c, k, b"v2", cas=first).cas
    ok(second != first, "the cas did not change after a cas store")
    _set(c, k, b"v3", cas=first, status=b.STATUS_KEY_EEXISTS)
    _value(c, k, b"v2")
    c.status(c.call(b.OP_DELETE, k, cas=first), b.STATUS_KEY_EEXISTS, "DELETE with a stale cas")
    c.status(c.call(b.OP_DELETE, k, cas=second), OK, "DELETE with the current cas")


@case(P, "delete")
def delete(ctx: Context) -> None:
    """DELETE a hit succeeds, a miss is KEY_ENOENT"""
    c, k = ctx.binary(), ctx.key()
    _set(c, k, b"x")
    c.status(c.call(b.OP_DELETE, k), OK, "DELETE of a stored key")
    _value(c, k, None)
    c.status(c.call(b.OP_DELETE, k), b.STATUS_KEY_ENOENT, "DELETE of a missing key")


@case(P, "append_prepend")
def append_prepend(ctx: Context) -> None:
    """APPEND/PREPEND need the key (NOT_STORED otherwise) and keep its flags"""
    c, k = ctx.binary(), ctx.key()
    c.status(c.call(b.OP_APPEND, k, value=b"x"), b.STATUS_NOT_STORED, "APPEND to a missing key")
    c.status(c.call(b.OP_PREPEND, k, value=b"x"), b.STATUS_NOT_STORED, "PREPEND to a missing key")
    _set(c, k, b"mid", 4)
    c.status(c.call(b.OP_APPEND, k, value=b">>"), OK, "APPEND")
    c.status(c.call(b.OP_PREPEND, k, value=b"<<"), OK, "PREPEND")
    _value(c, k, b"<<mid>>", 4)


@case(P, "incr_decr")
def incr_decr(ctx: Context) -> None:
    """INCR creates a missing counter with the initial value (unless exptime is 0xffffffff)"""
    c, k = ctx.binary(), ctx.key()
    _arith(c, k, 1, 0, b.INCR_NO_CREATE, status=b.STATUS_KEY_ENOENT)
    _arith(c, k, 1, 0, b.INCR_NO_CREATE, incr=False, status=b.STATUS_KEY_ENOENT)
    eq("INCR of a missing key with initial 10", _arith(c, k, 5, 10), 10)
    eq("INCR by 5", _arith(c, k, 5, 10), 15)
    eq("DECR by 3", _arith(c, k, 3, incr=False), 12)
    _value(c, k, b"12")
    eq("DECR of a missing key with initial 7", _arith(c, ctx.key("d"), 3, 7, incr=False), 7)


@case(P, "incr_wraparound")
def incr_wraparound(ctx: Context) -> None:
    """INCR wraps around at 2^64"""
    c, k = ctx.binary(), ctx.key()
    _set(c, k, b"%d" % U64_MAX)
    eq("INCR 2^64-1 by 1", _arith(c, k, 1), 0)
    eq("INCR 0 by 2^64-1 then by 2", (_arith(c, k, U64_MAX), _arith(c, k, 2)), (U64_MAX, 1))


@case(P, "decr_floor")
def decr_floor(ctx: Context) -> None:
    """DECR stops at 0"""
    c, k = ctx.binary(), ctx.key()
    _set(c, k, b"5")
    eq("DECR 5 by 10", _arith(c, k, 10, incr=False), 0)
    eq("DECR 0 by 1", _arith(c, k, 1, incr=False), 0)


@case(P, "incr_non_numeric")
def incr_non_numeric(ctx: Context) -> None:
    """INCR/DECR of a value that is not a number is DELTA_BADVAL"""
    c, k = ctx.binary(), ctx.key()
    _set(c, k, b"abc")
    _arith(c, k, 1, status=b.STATUS_DELTA_BADVAL)
    _arith(c, k, 1, incr=False, status=b.STATUS_DELTA_BADVAL)


@case(P, "touch_gat")
def touch_gat(ctx: Context) -> None:
    """TOUCH and GAT/GATK: hit and miss"""
    c, k = ctx.binary(), ctx.key()
    extras = b.pack_touch_extras(100)
    c.status(c.call(b.OP_TOUCH, k, extras), b.STATUS_KEY_ENOENT, "TOUCH of a missing key")
    c.status(c.call(b.OP_GAT, k, extras), b.STATUS_KEY_ENOENT, "GAT of a missing key")
    _set(c, k, b"v", 3)
    c.status(c.call(b.OP_TOUCH, k, extras), OK, "TOUCH")
    p = c.status(c.call(b.OP_GAT, k, extras), OK, "GAT")
    eq("GAT reply (flags, key, value)", (b.unpack_get_reply_extras(p.extras), p.key, p.value), (3, b"", b"v"))
    p = c.status(c.call(b.OP_GATK, k, extras), OK, "GATK")
    eq("GATK reply (key, value)", (p.key, p.value), (k, b"v"))


@case(P, "quiet_batch")
def quiet_batch(ctx: Context) -> None:
    """quiet commands answer only hits and errors; the NOOP that ends the batch is answered"""
    c = ctx.binary()
    a, m, n = ctx.key("a"), ctx.key("miss"), ctx.key("num")
    e8 = b.pack_store_extras(0, 0)
    batch = [
        b.encode_request(b.OP_SETQ, a, e8, b"A", opaque=1),
        b.encode_request(b.OP_GETQ, m, opaque=2),
        b.encode_request(b.OP_GETQ, a, opaque=3),
        b.encode_request(b.OP_GETKQ, a, opaque=4),
        b.encode_request(b.OP_GETKQ, m, opaque=5),
        b.encode_request(b.OP_ADDQ, a, e8, b"B", opaque=6),
        b.encode_request(b.OP_DELETEQ, m, opaque=7),
        b.encode_request(b.OP_REPLACEQ, m, e8, b"C", opaque=8),
        b.encode_request(b.OP_INCREMENTQ, n, b.pack_arith_extras(1, 5, 0), opaque=9),
        b.encode_request(b.OP_APPENDQ, a, value=b"+", opaque=10),
        b.encode_request(b.OP_NOOP, opaque=11),
    ]
    c.send(b"".join(batch))
    got = []
    while True:
        p = c.recv()
        got.append((b.OPCODE_NAMES.get(p.opcode, hex(p.opcode)), p.opaque, p.status, p.key, p.value))
        if p.opcode == b.OP_NOOP or len(got) > len(batch):
            break
    expected = [("GETQ", 3, OK, b"", b"A"), ("GETKQ", 4, OK, a, b"A"),
                ("ADDQ", 6, b.STATUS_KEY_EEXISTS, b"", b.STATUS_MESSAGES[b.STATUS_KEY_EEXISTS]),
                ("DELETEQ", 7, b.STATUS_KEY_ENOENT, b"", NOT_FOUND),
                ("REPLACEQ", 8, b.STATUS_KEY_ENOENT, b"", NOT_FOUND), ("NOOP", 11, OK, b"", b"")]
    if got != expected:
        raise CheckFailed("replies to the quiet batch (opcode, opaque, status, key, value): expected "
                          f"{expected}, got {got}")
    c.expect_silence()
    _value(c, a, b"A+")
    _value(c, n, b"5")


@case(P, "pipelined")
def pipelined(ctx: Context) -> None:
    """many commands in one write are answered in order, each with its opaque"""
    c = ctx.binary()
    k = ctx.key()
    reqs = [b.encode_request(b.OP_SET, k, b.pack_store_extras(0, 0), b"%d" % i, opaque=100 + i) for i in range(20)]
    reqs += [b.encode_request(b.OP_GET, k, opaque=200), b.encode_request(b.OP_INCREMENT, k,
                                                                          b.pack_arith_extras(1, 0, 0), opaque=201),
             b.encode_request(b.OP_VERSION, opaque=202), b.encode_request(b.OP_DELETE, k, opaque=203),
             b.encode_request(b.OP_GET, k, opaque=204)]
    c.send(b"".join(reqs))
    replies = [c.recv() for _ in reqs]
    eq("opaques of the replies", [p.opaque for p in replies], [*range(100, 120), 200, 201, 202, 203, 204])
    eq("statuses of the replies", [p.status for p in replies], [OK] * 24 + [b.STATUS_KEY_ENOENT])
    eq("GET after 20 SETs", replies[20].value, b"19")
    eq("INCR after it", b.unpack_counter(replies[21].value), 20)


@case(P, "key_250")
def key_250(ctx: Context) -> None:
    """a 250-byte key works"""
    c, k = ctx.binary(), ctx.padded_key(250)
    _set(c, k, b"v")
    _value(c, k, b"v")


@case(P, "key_251")
def key_251(ctx: Context) -> None:
    """a 251-byte key is EINVAL, then the connection is closed"""
    c, k = ctx.binary(), ctx.padded_key(251)
    p = c.call(b.OP_GET, k, opaque=9)
    c.status(p, b.STATUS_EINVAL, "GET with a 251-byte key")
    c.expect_closed()
    c2 = ctx.binary()
    c2.status(c2.call(b.OP_SET, k, b.pack_store_extras(0, 0), b"v"), b.STATUS_EINVAL, "SET with a 251-byte key")


@case(P, "max_item_size")
def max_item_size(ctx: Context) -> None:
    """a value just under the item size limit round-trips; one over it is E2BIG and the connection stays"""
    c, k = ctx.binary(), ctx.key()
    limit = ctx.item_size_max
    value = bytes(range(256)) * ((limit - 512) // 256)
    _set(c, k, value)
    p = c.status(_get(c, k), OK, "GET of the large value")
    ok(hashlib.sha256(p.value).digest() == hashlib.sha256(value).digest(),
       f"the {len(value)}-byte value came back different ({len(p.value)} bytes)")
    p = c.call(b.OP_SET, k, b.pack_store_extras(0, 0), b"y" * (limit + 1))
    c.status(p, b.STATUS_E2BIG, "SET of a value over the limit")
    eq("E2BIG message", p.value, b.STATUS_MESSAGES[b.STATUS_E2BIG])
    c.status(c.call(b.OP_NOOP), OK, "NOOP after E2BIG")
    _value(c, k, None)  # the old item is gone (memcached)


@case(P, "unknown_opcode")
def unknown_opcode(ctx: Context) -> None:
    """an unknown opcode is UNKNOWN_COMMAND and the connection stays usable"""
    c = ctx.binary()
    p = c.call(0x5F, b"", b"", b"body", opaque=3)
    c.status(p, b.STATUS_UNKNOWN_COMMAND, "opcode 0x5f")
    eq("opaque of the UNKNOWN_COMMAND reply", p.opaque, 3)
    c.status(c.call(b.OP_NOOP), OK, "NOOP after an unknown opcode")


@case(P, "exptime_boundaries")
def exptime_boundaries(ctx: Context) -> None:
    """exptime 2592000 is relative, 2592001 a unix time long past (expired at once)"""
    c = ctx.binary()
    rel, past = ctx.key("rel"), ctx.key("past")
    _set(c, rel, b"r", exptime=2592000)
    _set(c, past, b"p", exptime=2592001)
    _value(c, rel, b"r")
    _value(c, past, None)
    _set(c, past, b"again", op=b.OP_ADD)


@case(P, "expiry")
def expiry(ctx: Context) -> Iterator[float]:
    """SET exptime 1, TOUCH 1 and GAT 1 items are gone a few seconds later"""
    c = ctx.binary()
    s, t, g, long_ = ctx.key("set"), ctx.key("touch"), ctx.key("gat"), ctx.key("long")
    _set(c, s, b"1", exptime=1)
    _set(c, t, b"2")
    c.status(c.call(b.OP_TOUCH, t, b.pack_touch_extras(1)), OK, "TOUCH 1")
    _set(c, g, b"3")
    c.status(c.call(b.OP_GAT, g, b.pack_touch_extras(1)), OK, "GAT 1")
    _set(c, long_, b"4", exptime=100)
    yield EXPIRY_WAIT
    for key in (s, t, g):
        _value(c, key, None)
    _value(c, long_, b"4")


@case(P, "stat")
def stat(ctx: Context) -> None:
    """STAT answers one packet per statistic, then one with an empty key"""
    c = ctx.binary()
    c.send(b.encode_request(b.OP_STAT, opaque=5))
    names = set()
    for _ in range(1000):
        p = c.status(c.recv(), OK, "STAT")
        if p.opcode != b.OP_STAT:
            raise CheckFailed(f"reply to STAT: expected opcode STAT, got {describe_packet(p)}")
        if not p.key:
            break
        names.add(p.key)
    else:
        raise CheckFailed("STAT sent 1000 statistics without the closing empty one")
    ok(b"pid" in names and b"curr_items" in names, f"STAT lacks pid or curr_items ({len(names)} statistics)")


@case(P, "quit")
def quit_(ctx: Context) -> None:
    """QUIT answers then closes; QUITQ closes silently"""
    c = ctx.binary()
    p = c.call(b.OP_QUIT, opaque=4)
    c.status(p, OK, "QUIT")
    eq("QUIT reply opcode", p.opcode, b.OP_QUIT)
    c.expect_closed()
    c2 = ctx.binary()
    c2.send(b.encode_request(b.OP_QUITQ))
    c2.expect_closed()
    ok(not c2.buf, f"QUITQ must close without a reply, got {show(c2.buf)}")
