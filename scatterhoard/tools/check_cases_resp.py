"""``hoard check`` cases: RESP, the redis protocol (reference: redis 7), a smaller set:
strings, counters, expiry."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from ..protocol.resp import Error, RespValue, SimpleString
from .check import EXPIRY_WAIT, CheckFailed, Context, case, eq, fmt, ok

P = "resp"
OK = SimpleString(b"OK")
I64_MAX = (1 << 63) - 1


def _error(what: str, got: RespValue, starts: bytes = b"ERR") -> Error:
    if not isinstance(got, Error):
        raise CheckFailed(f"{what}: expected an error, got {fmt(got)}")
    ok(got.message.startswith(starts), f"{what}: expected an error starting {starts!r}, got {got.message!r}")
    return got


@case(P, "ping")
def ping(ctx: Context) -> None:
    """PING answers +PONG, PING msg echoes msg; an inline PING works too"""
    c = ctx.resp()
    eq("PING", c.cmd("PING"), SimpleString(b"PONG"))
    eq("PING hello", c.cmd("PING", "hello"), b"hello")
    c.send(b"PING\r\n")
    eq("inline PING", c.recv(), SimpleString(b"PONG"))


@case(P, "set_get")
def set_get(ctx: Context) -> None:
    """SET answers +OK; GET the value, or a null for a missing key; values are binary safe"""
    c, k = ctx.resp(), ctx.key()
    eq("GET of a missing key", c.cmd("GET", k), None)
    eq("SET", c.cmd("SET", k, "hello"), OK)
    eq("GET", c.cmd("GET", k), b"hello")
    value = b"\r\n\x00$-1\r\n" + bytes(range(256))
    eq("SET of a binary value", c.cmd("SET", k, value), OK)
    eq("GET of a binary value", c.cmd("GET", k), value)
    eq("SET of an empty value", c.cmd("SET", k, b""), OK)
    eq("GET of an empty value", c.cmd("GET", k), b"")


@case(P, "set_nx_xx")
def set_nx_xx(ctx: Context) -> None:
    """SET NX only creates, SET XX only replaces (a null when they do not)"""
    c, k = ctx.resp(), ctx.key()
    eq("SET XX of a missing key", c.cmd("SET", k, "x", "XX"), None)
    eq("SET NX of a missing key", c.cmd("SET", k, "first", "NX"), OK)
    eq("SET NX of an existing key", c.cmd("SET", k, "second", "NX"), None)
    eq("SET XX of an existing key", c.cmd("SET", k, "third", "XX"), OK)
    eq("GET", c.cmd("GET", k), b"third")


@case(P, "del_exists")
def del_exists(ctx: Context) -> None:
    """DEL and EXISTS count the keys that exist"""
    c = ctx.resp()
    a, b, m = ctx.key("a"), ctx.key("b"), ctx.key("m")
    c.cmd("SET", a, "1")
    c.cmd("SET", b, "2")
    eq("EXISTS a b missing a", c.cmd("EXISTS", a, b, m, a), 3)
    eq("DEL a missing b", c.cmd("DEL", a, m, b), 2)
    eq("DEL a again", c.cmd("DEL", a), 0)
    eq("EXISTS a", c.cmd("EXISTS", a), 0)


@case(P, "mset_mget")
def mset_mget(ctx: Context) -> None:
    """MSET sets many keys; MGET answers them in order, null for misses"""
    c = ctx.resp()
    a, b, m = ctx.key("a"), ctx.key("b"), ctx.key("m")
    eq("MSET", c.cmd("MSET", a, "1", b, "2"), OK)
    eq("MGET a missing b", c.cmd("MGET", a, m, b), [b"1", None, b"2"])


@case(P, "incr")
def incr(ctx: Context) -> None:
    """INCR/INCRBY/DECR/DECRBY: a missing key counts from 0, results are integers"""
    c, k = ctx.resp(), ctx.key()
    eq("INCR of a missing key", c.cmd("INCR", k), 1)
    eq("INCRBY 10", c.cmd("INCRBY", k, 10), 11)
    eq("DECR", c.cmd("DECR", k), 10)
    eq("DECRBY 15", c.cmd("DECRBY", k, 15), -5)
    eq("GET", c.cmd("GET", k), b"-5")
    eq("DECR of a missing key", c.cmd("DECR", ctx.key("d")), -1)


@case(P, "incr_errors")
def incr_errors(ctx: Context) -> None:
    """INCR of a non-integer is an error; so is overflowing a signed 64-bit integer"""
    c, k = ctx.resp(), ctx.key()
    c.cmd("SET", k, "abc")
    _error("INCR of 'abc'", c.cmd("INCR", k))
    c.cmd("SET", k, str(I64_MAX))
    _error("INCR of 2^63-1", c.cmd("INCR", k))
    eq("GET after the failed INCR", c.cmd("GET", k), str(I64_MAX).encode())
    _error("INCRBY of a non-integer delta", c.cmd("INCRBY", k, "x"))


@case(P, "expire_ttl")
def expire_ttl(ctx: Context) -> None:
    """TTL is -2 for a missing key, -1 without expiry; EXPIRE/PEXPIRE set it, PERSIST clears it"""
    c, k = ctx.resp(), ctx.key()
    eq("TTL of a missing key", c.cmd("TTL", k), -2)
    eq("EXPIRE of a missing key", c.cmd("EXPIRE", k, 100), 0)
    c.cmd("SET", k, "v")
    eq("TTL without expiry", c.cmd("TTL", k), -1)
    eq("EXPIRE 100", c.cmd("EXPIRE", k, 100), 1)
    ttl = c.cmd("TTL", k)
    ok(isinstance(ttl, int) and 95 <= ttl <= 100, f"TTL after EXPIRE 100: expected about 100, got {fmt(ttl)}")
    eq("PEXPIRE 50000", c.cmd("PEXPIRE", k, 50000), 1)
    pttl = c.cmd("PTTL", k)
    ok(isinstance(pttl, int) and 45000 <= pttl <= 50000,
       f"PTTL after PEXPIRE 50000: expected about 50000, got {fmt(pttl)}")
    eq("PERSIST", c.cmd("PERSIST", k), 1)
    eq("TTL after PERSIST", c.cmd("TTL", k), -1)
    eq("SET overwrites the TTL: EXPIRE", c.cmd("EXPIRE", k, 100), 1)
    c.cmd("SET", k, "w")
    eq("TTL after a plain SET", c.cmd("TTL", k), -1)


@case(P, "set_ex_px")
def set_ex_px(ctx: Context) -> None:
    """SET EX/PX set a TTL; a zero or negative one is an error"""
    c, k = ctx.resp(), ctx.key()
    eq("SET EX 100", c.cmd("SET", k, "v", "EX", 100), OK)
    ttl = c.cmd("TTL", k)
    ok(isinstance(ttl, int) and 95 <= ttl <= 100, f"TTL after SET EX 100: expected about 100, got {fmt(ttl)}")
    eq("SET PX 100000", c.cmd("SET", k, "v", "PX", 100000), OK)
    pttl = c.cmd("PTTL", k)
    ok(isinstance(pttl, int) and 95000 <= pttl <= 100000,
       f"PTTL after SET PX 100000: expected about 100000, got {fmt(pttl)}")
    _error("SET EX 0", c.cmd("SET", k, "v", "EX", 0))
    _error("SET EX -1", c.cmd("SET", k, "v", "EX", -1))


@case(P, "expire_negative")
def expire_negative(ctx: Context) -> None:
    """EXPIRE with a negative or zero TTL deletes the key at once"""
    c, k = ctx.resp(), ctx.key()
    c.cmd("SET", k, "v")
    eq("EXPIRE -1", c.cmd("EXPIRE", k, -1), 1)
    eq("GET after EXPIRE -1", c.cmd("GET", k), None)
    eq("TTL after EXPIRE -1", c.cmd("TTL", k), -2)


@case(P, "expiry")
def expiry(ctx: Context) -> Iterator[float]:
    """SET EX 1, SET PX 1000 and EXPIRE 1 keys are gone a few seconds later"""
    c = ctx.resp()
    ex, px, exp, long_ = ctx.key("ex"), ctx.key("px"), ctx.key("expire"), ctx.key("long")
    c.cmd("SET", ex, "1", "EX", 1)
    c.cmd("SET", px, "2", "PX", 1000)
    c.cmd("SET", exp, "3")
    eq("EXPIRE 1", c.cmd("EXPIRE", exp, 1), 1)
    c.cmd("SET", long_, "4", "EX", 100)
    yield EXPIRY_WAIT
    eq("MGET of the expired keys and a live one", c.cmd("MGET", ex, px, exp, long_), [None, None, None, b"4"])
    eq("EXISTS of the expired keys", c.cmd("EXISTS", ex, px, exp), 0)
    eq("TTL of an expired key", c.cmd("TTL", ex), -2)


@case(P, "large_value")
def large_value(ctx: Context) -> None:
    """a value just under the item size limit (--max-item-size) round-trips byte for byte"""
    c, k = ctx.resp(), ctx.key()
    value = bytes(range(256)) * ((ctx.item_size_max - 512) // 256)
    eq(f"SET of {len(value)} bytes", c.cmd("SET", k, value), OK)
    got = c.cmd("GET", k)
    ok(isinstance(got, bytes) and hashlib.sha256(got).digest() == hashlib.sha256(value).digest(),
       f"GET of the {len(value)}-byte value: it came back different "
       f"({len(got) if isinstance(got, bytes) else fmt(got)})")
    eq("DEL", c.cmd("DEL", k), 1)


@case(P, "pipelined")
def pipelined(ctx: Context) -> None:
    """many commands in one write are answered in order"""
    c, k = ctx.resp(), ctx.key()
    replies = c.pipeline([("SET", k, "1"), ("GET", k), ("INCR", k), ("INCRBY", k, 40), ("GET", k),
                          ("EXISTS", k), ("DEL", k), ("GET", k), ("PING",)])
    eq("pipelined replies", replies, [OK, b"1", 2, 42, b"42", 1, 1, None, SimpleString(b"PONG")])


@case(P, "errors")
def errors(ctx: Context) -> None:
    """unknown commands and wrong arities are errors and the connection stays usable"""
    c = ctx.resp()
    _error("an unknown command", c.cmd("NOSUCHCOMMAND", "x"))
    _error("GET without a key", c.cmd("GET"))
    _error("SET with one argument", c.cmd("SET", ctx.key()))
    eq("PING after the errors", c.cmd("PING"), SimpleString(b"PONG"))
