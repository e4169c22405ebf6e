"""``hoard check`` cases: memcached meta commands mg ms md ma mn me (reference: memcached 1.6)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

from .check import EXPIRY_WAIT, Block, Context, case, eq, ok

P = "meta"
U64_MAX = (1 << 64) - 1
HD = b"HD"


def _ms(key: bytes, value: bytes, *flags: bytes) -> bytes:
    tail = b"".join(b" " + f for f in flags)
    return b"ms %s %d%s\r\n%s\r\n" % (key, len(value), tail, value)


def _cas_of(ctx: Context, key: bytes) -> int:
    m = ctx.text().call(b"mg %s c\r\n" % key, re.compile(rb"HD c(\d+)"))
    return int(m[0].group(1))


@case(P, "mn")
def mn(ctx: Context) -> None:
    """mn answers MN"""
    ctx.text().call(b"mn\r\n", b"MN")


@case(P, "ms_mg")
def ms_mg(ctx: Context) -> None:
    """ms stores (HD); mg answers HD, VA with the value, or EN on a miss; classic get sees it"""
    c, k = ctx.text(), ctx.key()
    c.call(b"mg %s v\r\n" % k, b"EN")
    c.call(b"mg %s\r\n" % k, b"EN")
    c.call(_ms(k, b"hello"), HD)
    c.call(b"mg %s\r\n" % k, HD)
    c.call(b"mg %s v\r\n" % k, b"VA 5", Block(b"hello"))
    c.call(b"get %s\r\n" % k, b"VALUE %s 0 5" % k, Block(b"hello"), b"END")
    c.call(_ms(k, b"\r\n\x00" + bytes(range(256))), HD)
    c.call(b"mg %s v\r\n" % k, b"VA 259", Block(b"\r\n\x00" + bytes(range(256))))


@case(P, "mg_flags")
def mg_flags(ctx: Context) -> None:
    """mg return flags f c t k s O come back in request order; c is the gets cas"""
    c, k = ctx.text(), ctx.key()
    c.call(_ms(k, b"hi", b"T100", b"F5"), HD)
    m = c.call(b"mg %s v f t s k c O123\r\n" % k,
               re.compile(rb"VA 2 f5 t(\d+) s2 k" + re.escape(k) + rb" c(\d+) O123"), Block(b"hi"))
    ttl = int(m[0].group(1))
    ok(90 <= ttl <= 100, f"mg t after ms T100: expected about 100, got {ttl}")
    unique = c.gets(k)
    assert unique is not None
    eq("mg c compared with the cas of gets", int(m[0].group(2)), unique[2])
    c.call(b"mg %s s v\r\n" % k, b"VA 2 s2", Block(b"hi"))
    c.call(b"mg %s k O9 s\r\n" % k, b"HD k%s O9 s2" % k)
    c.call(_ms(k, b"x", b"T0"), HD)
    c.call(b"mg %s t f\r\n" % k, b"HD t-1 f0")


@case(P, "mg_touch_hit")
def mg_touch_hit(ctx: Context) -> None:
    """mg T updates the TTL; h says whether the item was fetched before, l the seconds since"""
    c, k = ctx.text(), ctx.key()
    c.call(_ms(k, b"v"), HD)
    c.call(b"mg %s h\r\n" % k, b"HD h0")
    c.call(b"mg %s h l\r\n" % k, b"HD h1 l0")
    m = c.call(b"mg %s T300 t\r\n" % k, re.compile(rb"HD t(\d+)"))
    ok(290 <= int(m[0].group(1)) <= 300, f"mg T300 t: expected a TTL of about 300, got {m[0].group(1)!r}")


@case(P, "quiet_mode")
def quiet_mode(ctx: Context) -> None:
    """q hides mg misses and ms/md/ma successes; failures still come; mn ends the batch"""
    c = ctx.text()
    hit, miss = ctx.key("hit"), ctx.key("miss")
    c.call(_ms(hit, b"h"), HD)
    c.send(b"mg %s v q\r\n" % miss + b"mg %s v q k\r\n" % hit + _ms(ctx.key("new"), b"n", b"q")
           + _ms(hit, b"X", b"q", b"ME") + b"md %s q\r\n" % miss + b"md %s q\r\n" % ctx.key("new")
           + b"ma %s q\r\n" % miss + b"mn\r\n")
    c.expect(b"VA 1 k%s" % hit, Block(b"h"), b"NS", b"NF", b"NF", b"MN")
    c.call(b"mg %s v\r\n" % ctx.key("new"), b"EN")


@case(P, "opaque")
def opaque(ctx: Context) -> None:
    """O (and k) are echoed by every command, misses included; an O over 32 bytes is refused"""
    c, k = ctx.text(), ctx.key()
    c.call(b"mg %s v O12 k\r\n" % k, b"EN O12 k%s" % k)
    c.call(b"mg %s s Oab\r\n" % k, b"EN Oab")
    c.call(b"md %s O7 k\r\n" % k, b"NF O7 k%s" % k)
    c.call(_ms(k, b"1", b"O8"), b"HD O8")
    c.call(b"ma %s O9\r\n" % k, b"HD O9")
    c.call(b"mg %s v Oabc\r\n" % k, b"VA 1 Oabc", Block(b"2"))
    c.call(b"mg %s v O%s\r\n" % (k, b"1" * 33), b"CLIENT_ERROR opaque token too long")
    c.call(b"mn\r\n", b"MN")


@case(P, "base64_key")
def base64_key(ctx: Context) -> None:
    """b: the key is base64; k returns it encoded, with b"""
    c, raw = ctx.text(), ctx.key("\x01 spaced")
    enc = base64.b64encode(raw)
    c.call(_ms(enc, b"hi", b"b"), HD)
    c.call(b"mg %s b k v\r\n" % enc, b"VA 2 k%s b" % enc, Block(b"hi"))
    c.call(b"md %s b\r\n" % enc, HD)
    c.call(b"mg %s b v\r\n" % enc, b"EN")
    c.call(b"mg %s b v\r\n" % b"!!notbase64", b"CLIENT_ERROR error decoding key")


@case(P, "vivify")
def vivify(ctx: Context) -> None:
    """mg N vivifies a miss: the first client gets W (win), the next Z, until a set"""
    c, k = ctx.text(), ctx.key()
    c.call(b"mg %s N30 v c t\r\n" % k, re.compile(rb"VA 0 c\d+ t30 W"), Block(b""))
    c.call(b"mg %s N30 v t\r\n" % k, re.compile(rb"VA 0 t(30|29) Z"), Block(b""))
    c.call(_ms(k, b"x"), HD)
    c.call(b"mg %s N30 v\r\n" % k, b"VA 1", Block(b"x"))


@case(P, "invalidate")
def invalidate(ctx: Context) -> None:
    """md I marks stale: mg sees X and one client W; a new ms clears it"""
    c, k = ctx.text(), ctx.key()
    c.call(_ms(k, b"hi"), HD)
    c.call(b"md %s I T30\r\n" % k, HD)
    m = c.call(b"mg %s v c\r\n" % k, re.compile(rb"VA 2 c(\d+) X W"), Block(b"hi"))
    c.call(b"mg %s v c\r\n" % k, re.compile(rb"VA 2 c%s Z X" % m[0].group(1)), Block(b"hi"))
    c.call(_ms(k, b"ok"), HD)
    c.call(b"mg %s v\r\n" % k, b"VA 2", Block(b"ok"))


@case(P, "ms_modes")
def ms_modes(ctx: Context) -> None:
    """ms M: E add, R replace, A append, P prepend, S set; anything else is refused"""
    c, k = ctx.text(), ctx.key()
    c.call(_ms(k, b"a", b"MR"), b"NS")
    c.call(_ms(k, b"a", b"MA"), b"NS")
    c.call(_ms(k, b"a", b"ME"), HD)
    c.call(_ms(k, b"b", b"ME"), b"NS")
    c.call(_ms(k, b"b", b"MA"), HD)
    c.call(_ms(k, b"c", b"MP"), HD)
    c.call(b"mg %s v\r\n" % k, b"VA 3", Block(b"cab"))
    c.call(_ms(k, b"r", b"MR"), HD)
    c.call(_ms(k, b"s", b"MS"), HD)
    c.call(_ms(k, b"d", b"MX"), b"CLIENT_ERROR invalid mode for ms M token")
    c.call(b"mg %s v\r\n" % k, b"VA 1", Block(b"s"))


@case(P, "ms_cas")
def ms_cas(ctx: Context) -> None:
    """ms C: a stale cas is EX, a missing key NF, the current cas stores and returns the new one"""
    c, k = ctx.text(), ctx.key()
    c.call(_ms(k, b"e", b"C1"), b"NF")
    c.call(_ms(k, b"v"), HD)
    unique = _cas_of(ctx, k)
    c.call(_ms(k, b"e", b"C%d" % (unique + 1000)), b"EX")
    m = c.call(_ms(k, b"w", b"C%d" % unique, b"c"), re.compile(rb"HD c(\d+)"))
    ok(int(m[0].group(1)) != unique, "ms C: the cas did not change")
    c.call(b"mg %s v\r\n" % k, b"VA 1", Block(b"w"))


@case(P, "ms_flags_ttl")
def ms_flags_ttl(ctx: Context) -> None:
    """ms F and T set client flags and TTL, visible to classic commands; I/invalid tokens refused"""
    c, k = ctx.text(), ctx.key()
    c.call(_ms(k, b"v", b"F77", b"T200"), HD)
    c.call(b"get %s\r\n" % k, b"VALUE %s 77 1" % k, Block(b"v"), b"END")
    c.call(_ms(k, b"v", b"Fx"), b"CLIENT_ERROR bad command line format")
    c.call(b"ms %s notanumber\r\n" % k, b"CLIENT_ERROR bad command line format")
    c.call(b"mn\r\n", b"MN")


@case(P, "ms_too_large")
def ms_too_large(ctx: Context) -> None:
    """ms over the item size limit: SERVER_ERROR, data swallowed, connection in sync"""
    c, k = ctx.text(), ctx.key()
    c.call(_ms(k, b"z" * (ctx.item_size_max + 1)), b"SERVER_ERROR object too large for cache")
    c.call(b"mn\r\n", b"MN")
    c.call(b"mg %s\r\n" % k, b"EN")


@case(P, "md")
def md(ctx: Context) -> None:
    """md: HD on a hit, NF on a miss, EX for a stale C"""
    c, k = ctx.text(), ctx.key()
    c.call(b"md %s\r\n" % k, b"NF")
    c.call(_ms(k, b"v"), HD)
    unique = _cas_of(ctx, k)
    c.call(b"md %s C%d\r\n" % (k, unique + 1), b"EX")
    c.call(b"md %s C%d\r\n" % (k, unique), HD)
    c.call(b"mg %s\r\n" % k, b"EN")


@case(P, "ma")
def ma(ctx: Context) -> None:
    """ma: NF on a miss; N vivifies with J; D delta; MD decrements to a floor of 0"""
    c, k = ctx.text(), ctx.key()
    c.call(b"ma %s\r\n" % k, b"NF")
    c.call(b"ma %s N0 J13 v\r\n" % k, b"VA 2", Block(b"13"))
    c.call(b"ma %s v\r\n" % k, b"VA 2", Block(b"14"))
    c.call(b"ma %s\r\n" % k, HD)
    c.call(b"ma %s D10 MD v\r\n" % k, b"VA 1", Block(b"5"))
    c.call(b"ma %s D100 MD v\r\n" % k, b"VA 1", Block(b"0"))
    c.call(b"ma %s D7 MI v\r\n" % k, b"VA 1", Block(b"7"))


@case(P, "ma_wraparound")
def ma_wraparound(ctx: Context) -> None:
    """ma wraps around at 2^64"""
    c, k = ctx.text(), ctx.key()
    c.call(_ms(k, b"%d" % U64_MAX), HD)
    c.call(b"ma %s v\r\n" % k, b"VA 1", Block(b"0"))


@case(P, "ma_flags")
def ma_flags(ctx: Context) -> None:
    """ma returns t c O k; a non-number is refused; a vivified counter gets N's TTL"""
    c, k = ctx.text(), ctx.key()
    m = c.call(b"ma %s N0 J5 t v c O1 k\r\n" % k, re.compile(rb"VA 1 t-1 c(\d+) O1 k" + re.escape(k)), Block(b"5"))
    ok(int(m[0].group(1)) > 0, "ma c returned a zero cas")
    n = ctx.key("ttl")
    m = c.call(b"ma %s N100 J1 t\r\n" % n, re.compile(rb"HD t(\d+)"))
    ok(90 <= int(m[0].group(1)) <= 100, f"ma N100 t: expected a TTL of about 100, got {m[0].group(1)!r}")
    s = ctx.key("str")
    c.call(_ms(s, b"x"), HD)
    c.call(b"ma %s\r\n" % s, b"CLIENT_ERROR cannot increment or decrement non-numeric value")


@case(P, "meta_key_251")
def meta_key_251(ctx: Context) -> None:
    """meta commands take 250-byte keys and refuse 251-byte ones"""
    c = ctx.text()
    k250, k251 = ctx.padded_key(250), ctx.padded_key(251)
    c.call(_ms(k250, b"v"), HD)
    c.call(b"mg %s v\r\n" % k250, b"VA 1", Block(b"v"))
    bad = b"CLIENT_ERROR bad command line format"
    c.call(b"mg %s v\r\n" % k251, bad)
    c.call(b"md %s\r\n" % k251, bad)
    c.call(b"ma %s\r\n" % k251, bad)
    # a refused ms does not swallow its data block: the block is read as a command line
    c.call(_ms(k251, b"v"), bad, b"ERROR")
    c.call(b"mn\r\n", b"MN")


@case(P, "me")
def me(ctx: Context) -> None:
    """me dumps an item's metadata (EN on a miss)"""
    c, k = ctx.text(), ctx.key()
    c.call(b"me %s\r\n" % k, b"EN")
    c.call(_ms(k, b"v"), HD)
    c.call(b"me %s\r\n" % k,
           re.compile(rb"ME " + re.escape(k) + rb" exp=-1 la=\d+ cas=\d+ fetch=(yes|no) cls=\d+ size=\d+"))


@case(P, "pipelined_batch")
def pipelined_batch(ctx: Context) -> None:
    """a pipelined mix of meta and classic commands is answered in order"""
    c = ctx.text()
    a, b = ctx.key("a"), ctx.key("b")
    c.send(_ms(a, b"1", b"T0") + b"mg %s v q\r\n" % b + b"ma %s v\r\n" % a + b"get %s\r\n" % a
           + _ms(b, b"bb", b"F3", b"q") + b"mg %s v f k\r\n" % b + b"md %s q\r\n" % a + b"mg %s v\r\n" % a
           + b"version\r\n" + b"mn\r\n")
    c.expect(HD, b"VA 1", Block(b"2"), b"VALUE %s 0 1" % a, Block(b"2"), b"END", b"VA 2 f3 k%s" % b,
             Block(b"bb"), b"EN", re.compile(rb"VERSION \S.*"), b"MN")


@case(P, "expiry")
def expiry(ctx: Context) -> Iterator[float]:
    """ms T1, mg T1 and ma N1 items are gone a few seconds later"""
    c = ctx.text()
    s, t, n = ctx.key("ms"), ctx.key("mgT"), ctx.key("ma")
    c.call(_ms(s, b"1", b"T1"), HD)
    c.call(_ms(t, b"2"), HD)
    c.call(b"mg %s T1\r\n" % t, HD)
    c.call(b"ma %s N1 J1\r\n" % n, HD)
    yield EXPIRY_WAIT
    for key in (s, t, n):
        c.call(b"mg %s v\r\n" % key, b"EN")
