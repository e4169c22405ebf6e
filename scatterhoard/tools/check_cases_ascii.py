"""``hoard check`` cases: the classic memcached text protocol (reference: memcached 1.6)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator

from .check import EXPIRY_WAIT, Block, CheckFailed, Context, case, eq, ok

P = "ascii"
U64_MAX = (1 << 64) - 1
NUM = re.compile(rb"\d+")


def _set(key: bytes, value: bytes, flags: int = 0, exptime: int = 0, cmd: bytes = b"set",
         noreply: bool = False) -> bytes:
    tail = b" noreply" if noreply else b""
    return b"%s %s %d %d %d%s\r\n%s\r\n" % (cmd, key, flags, exptime, len(value), tail, value)


def _value(key: bytes, value: bytes, flags: int = 0) -> tuple[bytes, Block]:
    return b"VALUE %s %d %d" % (key, flags, len(value)), Block(value)


@case(P, "version")
def version(ctx: Context) -> None:
    """version answers VERSION <text>"""
    ctx.text().call(b"version\r\n", re.compile(rb"VERSION \S.*"))


@case(P, "set_get")
def set_get(ctx: Context) -> None:
    """set stores, get returns flags, length and the value"""
    c, k = ctx.text(), ctx.key()
    c.call(_set(k, b"hello", 5), b"STORED")
    c.call(b"get %s\r\n" % k, *_value(k, b"hello", 5), b"END")


@case(P, "get_miss")
def get_miss(ctx: Context) -> None:
    """get of a missing key answers END alone"""
    ctx.text().call(b"get %s\r\n" % ctx.key(), b"END")


@case(P, "multi_get")
def multi_get(ctx: Context) -> None:
    """get of many keys: hits in request order (repeats included), misses left out"""
    c = ctx.text()
    a, b, m = ctx.key("a"), ctx.key("b"), ctx.key("missing")
    c.call(_set(a, b"1"), b"STORED")
    c.call(_set(b, b"22", 7), b"STORED")
    c.call(b"get %s %s %s %s\r\n" % (b, m, a, b), *_value(b, b"22", 7), *_value(a, b"1"), *_value(b, b"22", 7),
           b"END")
    many = [ctx.key(f"none{i}") for i in range(100)]
    c.call(b"get " + b" ".join(many) + b"\r\n", b"END")


@case(P, "flags_32bit")
def flags_32bit(ctx: Context) -> None:
    """client flags keep all 32 bits (4294967295)"""
    c, k = ctx.text(), ctx.key()
    c.call(_set(k, b"x", 4294967295), b"STORED")
    c.call(b"get %s\r\n" % k, *_value(k, b"x", 4294967295), b"END")


@case(P, "binary_value")
def binary_value(ctx: Context) -> None:
    """values are binary safe: CRLF, NUL and every byte value survive"""
    c, k = ctx.text(), ctx.key()
    value = b"\r\n" + bytes(range(256)) + b"\r\nEND\r\n"
    c.call(_set(k, value), b"STORED")
    c.call(b"get %s\r\n" % k, *_value(k, value), b"END")
    c.call(_set(k, b""), b"STORED")
    c.call(b"get %s\r\n" % k, *_value(k, b""), b"END")


@case(P, "add")
def add(ctx: Context) -> None:
    """add stores a new key only; an existing one answers NOT_STORED and keeps its value"""
    c, k = ctx.text(), ctx.key()
    c.call(_set(k, b"first", cmd=b"add"), b"STORED")
    c.call(_set(k, b"second", cmd=b"add"), b"NOT_STORED")
    c.call(b"get %s\r\n" % k, *_value(k, b"first"), b"END")


@case(P, "replace")
def replace(ctx: Context) -> None:
    """replace needs an existing key (NOT_STORED otherwise)"""
    c, k = ctx.text(), ctx.key()
    c.call(_set(k, b"x", cmd=b"replace"), b"NOT_STORED")
    c.call(b"get %s\r\n" % k, b"END")
    c.call(_set(k, b"old"), b"STORED")
    c.call(_set(k, b"new", 3, cmd=b"replace"), b"STORED")
    c.call(b"get %s\r\n" % k, *_value(k, b"new", 3), b"END")


@case(P, "append_prepend")
def append_prepend(ctx: Context) -> None:
    """append/prepend need the key, keep its flags, and a miss is NOT_STORED"""
    c, k = ctx.text(), ctx.key()
    c.call(_set(k, b"x", cmd=b"append"), b"NOT_STORED")
    c.call(_set(k, b"x", cmd=b"prepend"), b"NOT_STORED")
    c.call(_set(k, b"mid", 9), b"STORED")
    c.call(_set(k, b">>", 1, cmd=b"append"), b"STORED")
    c.call(_set(k, b"<<", 2, cmd=b"prepend"), b"STORED")
    c.call(b"get %s\r\n" % k, *_value(k, b"<<mid>>", 9), b"END")


@case(P, "cas")
def cas(ctx: Context) -> None:
    """gets returns a cas unique; cas with it stores, a stale one is EXISTS, a missing key NOT_FOUND"""
    c, k = ctx.text(), ctx.key()
    c.call(b"cas %s 0 0 1 1\r\nx\r\n" % k, b"NOT_FOUND")
    c.call(_set(k, b"v1"), b"STORED")
    got = c.gets(k)
    ok(got is not None, "gets after set: expected a value, got a miss")
    assert got is not None
    unique = got[2]
    c.call(b"cas %s 0 0 2 %d\r\nv2\r\n" % (k, unique + 1000), b"EXISTS")
    c.call(b"cas %s 3 0 2 %d\r\nv2\r\n" % (k, unique), b"STORED")
    again = c.gets(k)
    ok(again is not None and again[:2] == (3, b"v2"), f"gets after cas: expected flags 3 value b'v2', got {again}")
    assert again is not None
    ok(again[2] != unique, f"the cas unique did not change after a cas store ({unique})")
    c.call(b"cas %s 0 0 2 %d\r\nv3\r\n" % (k, unique), b"EXISTS")
    c.call(_set(k, b"!", cmd=b"append"), b"STORED")
    after_append = c.gets(k)
    ok(after_append is not None and after_append[2] != again[2], "the cas unique did not change after append")


@case(P, "delete")
def delete(ctx: Context) -> None:
    """delete: DELETED, then NOT_FOUND; the old time argument only as 0"""
    c, k = ctx.text(), ctx.key()
    c.call(_set(k, b"x"), b"STORED")
    c.call(b"delete %s\r\n" % k, b"DELETED")
    c.call(b"get %s\r\n" % k, b"END")
    c.call(b"delete %s\r\n" % k, b"NOT_FOUND")
    c.call(b"delete %s 0\r\n" % k, b"NOT_FOUND")
    c.call(b"delete %s 10\r\n" % k, b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]")


@case(P, "incr_decr")
def incr_decr(ctx: Context) -> None:
    """incr/decr answer the new value and store it; a missing key is NOT_FOUND"""
    c, k = ctx.text(), ctx.key()
    c.call(b"incr %s 1\r\n" % k, b"NOT_FOUND")
    c.call(b"decr %s 1\r\n" % k, b"NOT_FOUND")
    c.call(_set(k, b"10", 4), b"STORED")
    c.call(b"incr %s 5\r\n" % k, b"15")
    c.call(b"decr %s 3\r\n" % k, b"12")
    c.call(b"incr %s 0\r\n" % k, b"12")
    c.call(b"get %s\r\n" % k, *_value(k, b"12", 4), b"END")
    c.call(_set(k, b"99"), b"STORED")
    c.call(b"incr %s 1\r\n" % k, b"100")
    c.call(b"get %s\r\n" % k, *_value(k, b"100"), b"END")


@case(P, "incr_wraparound")
def incr_wraparound(ctx: Context) -> None:
    """incr wraps around at 2^64"""
    c, k = ctx.text(), ctx.key()
    c.call(_set(k, b"%d" % U64_MAX), b"STORED")
    c.call(b"incr %s 1\r\n" % k, b"0")
    c.call(_set(k, b"2"), b"STORED")
    c.call(b"incr %s %d\r\n" % (k, U64_MAX), b"1")


@case(P, "decr_floor")
def decr_floor(ctx: Context) -> None:
    """decr stops at 0 (no wraparound), and a shrunk number is space-padded in place"""
    c, k = ctx.text(), ctx.key()
    c.call(_set(k, b"5"), b"STORED")
    c.call(b"decr %s 10\r\n" % k, b"0")
    c.call(b"decr %s 1\r\n" % k, b"0")
    c.call(_set(k, b"100"), b"STORED")
    c.call(b"decr %s 91\r\n" % k, b"9")
    c.call(b"get %s\r\n" % k, *_value(k, b"9  "), b"END")
    c.call(b"incr %s 1\r\n" % k, b"10")


@case(P, "incr_errors")
def incr_errors(ctx: Context) -> None:
    """incr of a non-number, or by a bad/too large delta, is a CLIENT_ERROR"""
    c, k = ctx.text(), ctx.key()
    c.call(_set(k, b"abc"), b"STORED")
    c.call(b"incr %s 1\r\n" % k, b"CLIENT_ERROR cannot increment or decrement non-numeric value")
    c.call(b"decr %s 1\r\n" % k, b"CLIENT_ERROR cannot increment or decrement non-numeric value")
    c.call(_set(k, b"1"), b"STORED")
    c.call(b"incr %s abc\r\n" % k, b"CLIENT_ERROR invalid numeric delta argument")
    c.call(b"incr %s -1\r\n" % k, b"CLIENT_ERROR invalid numeric delta argument")
    c.call(b"incr %s %d\r\n" % (k, U64_MAX + 1), b"CLIENT_ERROR invalid numeric delta argument")
    c.call(b"get %s\r\n" % k, *_value(k, b"1"), b"END")


@case(P, "key_250")
def key_250(ctx: Context) -> None:
    """a 250-byte key is accepted by every command"""
    c, k = ctx.text(), ctx.padded_key(250)
    c.call(_set(k, b"v"), b"STORED")
    c.call(b"get %s\r\n" % k, *_value(k, b"v"), b"END")
    c.call(b"touch %s 0\r\n" % k, b"TOUCHED")
    c.call(_set(k, b"1"), b"STORED")
    c.call(b"incr %s 1\r\n" % k, b"2")
    c.call(b"delete %s\r\n" % k, b"DELETED")


@case(P, "key_251")
def key_251(ctx: Context) -> None:
    """a 251-byte key is refused (CLIENT_ERROR bad command line format) and nothing is stored"""
    c, k = ctx.text(), ctx.padded_key(251)
    bad = b"CLIENT_ERROR bad command line format"
    c.call(b"get %s\r\n" % k, bad)
    c.call(b"gets %s\r\n" % k, bad)
    c.call(b"delete %s\r\n" % k, bad)
    c.call(b"incr %s 1\r\n" % k, bad)
    c.call(b"touch %s 0\r\n" % k, bad)
    # the refused set's data line is then read as a command of its own
    c.call(b"set %s 0 0 1\r\nv\r\n" % k, bad, b"ERROR")
    c.call(b"get %s\r\n" % k[:250], b"END")


@case(P, "exptime_negative")
def exptime_negative(ctx: Context) -> None:
    """a negative exptime stores an already expired item"""
    c, k = ctx.text(), ctx.key()
    c.call(_set(k, b"x", exptime=-1), b"STORED")
    c.call(b"get %s\r\n" % k, b"END")
    c.call(_set(k, b"y"), b"STORED")
    c.call(b"touch %s -1\r\n" % k, b"TOUCHED")
    c.call(b"get %s\r\n" % k, b"END")


@case(P, "exptime_boundaries")
def exptime_boundaries(ctx: Context) -> None:
    """exptime 2592000 (30 days) is relative; 2592001 is a unix time, long past: expired at once"""
    c = ctx.text()
    rel, past, future = ctx.key("rel"), ctx.key("past"), ctx.key("future")
    c.call(_set(rel, b"r", exptime=2592000), b"STORED")
    c.call(_set(past, b"p", exptime=2592001), b"STORED")
    c.call(_set(future, b"f", exptime=int(time.time()) + 3600), b"STORED")
    c.call(b"get %s %s %s\r\n" % (rel, past, future), *_value(rel, b"r"), *_value(future, b"f"), b"END")
    c.call(_set(past, b"again", cmd=b"add"), b"STORED")  # the expired item does not block an add


@case(P, "expiry")
def expiry(ctx: Context) -> Iterator[float]:
    """items expire: exptime 1, touch 1 and gat 1 are gone a few seconds later, exptime 100 is not"""
    c = ctx.text()
    short, touched, gat, long_ = ctx.key("short"), ctx.key("touched"), ctx.key("gat"), ctx.key("long")
    c.call(_set(short, b"s", exptime=1), b"STORED")
    c.call(_set(touched, b"t"), b"STORED")
    c.call(b"touch %s 1\r\n" % touched, b"TOUCHED")
    c.call(_set(gat, b"g"), b"STORED")
    c.call(b"gat 1 %s\r\n" % gat, *_value(gat, b"g"), b"END")
    c.call(_set(long_, b"l", exptime=100), b"STORED")
    yield EXPIRY_WAIT
    c.call(b"get %s %s %s %s\r\n" % (short, touched, gat, long_), *_value(long_, b"l"), b"END")
    c.call(_set(short, b"new", cmd=b"add"), b"STORED")


@case(P, "touch_gat")
def touch_gat(ctx: Context) -> None:
    """touch: TOUCHED / NOT_FOUND; gat and gats return the item (gats with its cas)"""
    c, k = ctx.text(), ctx.key()
    c.call(b"touch %s 10\r\n" % k, b"NOT_FOUND")
    c.call(b"gat 10 %s\r\n" % k, b"END")
    c.call(_set(k, b"v", 6), b"STORED")
    c.call(b"touch %s 100\r\n" % k, b"TOUCHED")
    c.call(b"gat 100 %s\r\n" % k, *_value(k, b"v", 6), b"END")
    got = c.gets(k)
    assert got is not None
    c.call(b"gats 100 %s\r\n" % k, b"VALUE %s 6 1 %d" % (k, got[2]), Block(b"v"), b"END")


@case(P, "noreply")
def noreply(ctx: Context) -> None:
    """noreply silences every storage, delete, incr/decr and touch reply"""
    c, k = ctx.text(), ctx.key()
    n = ctx.key("num")
    c.send(_set(k, b"a", noreply=True) + _set(k, b"b", cmd=b"add", noreply=True)
           + _set(k, b"c", cmd=b"replace", noreply=True) + _set(k, b"d", cmd=b"append", noreply=True)
           + _set(k, b"0", cmd=b"prepend", noreply=True) + b"touch %s 100 noreply\r\n" % k
           + _set(n, b"5", noreply=True) + b"incr %s 10 noreply\r\n" % n + b"decr %s 3 noreply\r\n" % n
           + b"delete %s noreply\r\n" % ctx.key("nothing") + b"get %s %s\r\n" % (k, n))
    c.expect(*_value(k, b"0cd"), *_value(n, b"12"), b"END")
    got = c.gets(k)
    assert got is not None
    c.send(b"cas %s 1 0 1 %d noreply\r\nz\r\n" % (k, got[2]) + b"cas %s 1 0 1 %d noreply\r\ny\r\n" % (k, got[2])
           + b"delete %s noreply\r\n" % n + b"get %s %s\r\n" % (k, n))
    c.expect(*_value(k, b"z", 1), b"END")
    c.expect_silence()


@case(P, "pipelined_mixed")
def pipelined_mixed(ctx: Context) -> None:
    """many mixed commands in one write are answered in order"""
    c = ctx.text()
    a, b, m = ctx.key("a"), ctx.key("b"), ctx.key("m")
    c.send(_set(a, b"1") + b"get %s\r\n" % a + b"incr %s 41\r\n" % a + _set(b, b"x" * 3000, 2, cmd=b"add")
           + b"get %s %s %s\r\n" % (m, a, b) + b"delete %s\r\n" % m + b"touch %s 100\r\n" % a
           + b"version\r\n" + b"decr %s 2\r\n" % a + b"delete %s\r\n" % b + b"gets %s\r\n" % m
           + _set(a, b"z", cmd=b"replace") + b"get %s\r\n" % a)
    c.expect(b"STORED", *_value(a, b"1"), b"END", b"42", b"STORED", *_value(a, b"42"), *_value(b, b"x" * 3000, 2),
             b"END", b"NOT_FOUND", b"TOUCHED", re.compile(rb"VERSION \S.*"), b"40", b"DELETED", b"END",
             b"STORED", *_value(a, b"z"), b"END")


@case(P, "max_item_size")
def max_item_size(ctx: Context) -> None:
    """a value just under the item size limit round-trips; one over it is refused and drops the old item"""
    c, k = ctx.text(), ctx.key()
    limit = ctx.item_size_max
    value = bytes(range(256)) * ((limit - 512) // 256)
    c.call(_set(k, value), b"STORED")
    c.send(b"get %s\r\n" % k)
    header = c.read_line()
    eq("reply to the get of the large value", header, b"VALUE %s 0 %d" % (k, len(value)))
    data = c.read_exact(len(value) + 2, "the large value")
    ok(hashlib.sha256(data[:-2]).digest() == hashlib.sha256(value).digest(),
       f"the {len(value)}-byte value came back different")
    c.expect(b"END")
    c.call(_set(k, b"y" * (limit + 1)), b"SERVER_ERROR object too large for cache")
    c.call(b"get %s\r\n" % k, b"END")  # a failed set removes the old item (memcached)
    c.call(b"version\r\n", re.compile(rb"VERSION \S.*"))  # and the connection is in sync


@case(P, "bad_data_chunk")
def bad_data_chunk(ctx: Context) -> None:
    """a data block longer than announced is a bad data chunk; nothing is stored"""
    c, k = ctx.text(), ctx.key()
    c.call(b"set %s 0 0 3\r\nabcd\r\n" % k, b"CLIENT_ERROR bad data chunk", b"ERROR")
    c.call(b"get %s\r\n" % k, b"END")


@case(P, "bad_command_lines")
def bad_command_lines(ctx: Context) -> None:
    """unknown commands and empty lines are ERROR, malformed storage lines CLIENT_ERROR"""
    c, k = ctx.text(), ctx.key()
    c.call(b"bogus_command\r\n", b"ERROR")
    c.call(b"\r\n", b"ERROR")
    c.call(b"get\r\n", b"ERROR")
    c.call(b"set %s 0 0 notanumber\r\n" % k, b"CLIENT_ERROR bad command line format")
    c.call(b"set %s 0\r\n" % k, b"ERROR")
    c.call(b"version\r\n", re.compile(rb"VERSION \S.*"))


@case(P, "stats")
def stats(ctx: Context) -> None:
    """stats answers STAT lines (pid, uptime, curr_items, cmd_get...) then END"""
    c = ctx.text()
    c.send(b"stats\r\n")
    names: set[bytes] = set()
    while True:
        line = c.read_line()
        if line == b"END":
            break
        m = re.fullmatch(rb"STAT (\S+) (.*)", line)
        if m is None:
            raise CheckFailed(f"reply to 'stats': expected 'STAT <name> <value>' or 'END', got {line!r}")
        names.add(m.group(1))
    missing = [n.decode() for n in (b"pid", b"uptime", b"time", b"version", b"curr_items", b"total_items",
                                    b"cmd_get", b"cmd_set", b"get_hits", b"get_misses", b"curr_connections")
               if n not in names]
    ok(not missing, f"stats lacks {', '.join(missing)}")


@case(P, "verbosity_quit")
def verbosity_quit(ctx: Context) -> None:
    """verbosity answers OK; quit closes the connection"""
    c = ctx.text()
    c.call(b"verbosity 0\r\n", b"OK")
    c.send(b"quit\r\n")
    c.expect_closed()
