"""The twemproxy hash functions and the pure parts of the router.

Published test vectors where they exist (FNV, one-at-a-time, lookup3,
CRC check values, MD5), and for everything else a second, deliberately
literal model of the C code in this file -- byte by byte, with C's signed
``char`` and ``uint32_t`` wrap-around spelled out -- that hypothesis
compares against the optimised implementations.  The real end-to-end check
against nutcracker is ``test_routing_nutcracker.py``.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterhoard.errors import ConfigError
from scatterhoard.routing import (
    DISTRIBUTIONS,
    HASH_FUNCTIONS,
    HASH_NAMES,
    NoLiveServersError,
    Router,
    ServerSpec,
    build_ketama,
    build_modula,
    get_hash,
    hash_key,
    hash_tag_part,
    hashing,
    ketama_points,
    twemproxy_order,
)
from scatterhoard.routing.hashing import _hashlittle

M32 = 0xFFFFFFFF


# -- a literal model of twemproxy's C ---------------------------------------------------------------


def u32(x: int) -> int:
    return x & M32


def schar(b: int) -> int:
    """``(uint32_t)(char)b`` on x86: the byte as a signed char, sign-extended to 32 bits."""
    return u32(b - 256 if b >= 128 else b)


def ref_one_at_a_time(key: bytes) -> int:
    value = 0
    for b in key:
        value = u32(value + schar(b))
        value = u32(value + (value << 10))
        value ^= value >> 6
    value = u32(value + (value << 3))
    value ^= value >> 11
    return u32(value + (value << 15))


def ref_fnv(key: bytes, init: int, prime: int, xor_first: bool, bits: int) -> int:
    mask = (1 << bits) - 1
    h = init & mask
    for b in key:
        val = schar(b) if bits == 32 else (b - 256 if b >= 128 else b) & mask  # (uint64_t)key[x]
        if xor_first:
            h = ((h ^ val) * prime) & mask
        else:
            h = ((h * prime) & mask) ^ val
    return h & M32


def ref_crc16_table() -> list[int]:
    table = []
    for n in range(256):
        crc = 0
        c = n << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if (crc ^ c) & 0x8000 else crc << 1
            c <<= 1
        table.append(crc & 0xFFFF)
    return table


CRC16_TABLE = ref_crc16_table()


def ref_crc16(key: bytes) -> int:
    crc = 0  # a uint32_t, never truncated to 16 bits
    for b in key:
        crc = u32(crc << 8) ^ CRC16_TABLE[((crc >> 8) ^ schar(b)) & 0xFF]
    return crc


def ref_crc32_bitwise(key: bytes) -> int:
    crc = M32
    for b in key:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ M32


def ref_hsieh(key: bytes) -> int:
    def get16(i: int) -> int:
        return key[i] | (key[i + 1] << 8)

    if not key:
        return 0
    h = 0
    rem = len(key) & 3
    p = 0
    for _ in range(len(key) >> 2):
        h = u32(h + get16(p))
        tmp = u32(get16(p + 2) << 11) ^ h
        h = u32(h << 16) ^ tmp
        p += 4
        h = u32(h + (h >> 11))
    if rem == 3:
        h = u32(h + get16(p))
        h ^= u32(h << 16)
        h ^= u32(schar(key[p + 2]) << 18)
        h = u32(h + (h >> 11))
    elif rem == 2:
        h = u32(h + get16(p))
        h ^= u32(h << 11)
        h = u32(h + (h >> 17))
    elif rem == 1:
        h = u32(h + key[p])  # (unsigned char)
        h ^= u32(h << 10)
        h = u32(h + (h >> 1))
    h ^= u32(h << 3)
    h = u32(h + (h >> 5))
    h ^= u32(h << 4)
    h = u32(h + (h >> 17))
    h ^= u32(h << 25)
    return u32(h + (h >> 6))


def ref_murmur(key: bytes) -> int:
    m = 0x5BD1E995
    length = len(key)
    h = u32(0xDEADBEEF * length) ^ length
    p = 0
    while length >= 4:
        k = int.from_bytes(key[p : p + 4], "little")
        k = u32(k * m)
        k ^= k >> 24
        k = u32(k * m)
        h = u32(h * m)
        h ^= k
        p += 4
        length -= 4
    if length >= 3:
        h ^= key[p + 2] << 16
    if length >= 2:
        h ^= key[p + 1] << 8
    if length >= 1:
        h ^= key[p]
        h = u32(h * m)
    h ^= h >> 13
    h = u32(h * m)
    return h ^ (h >> 15)


def rot(x: int, k: int) -> int:
    return u32((x << k) | (x >> (32 - k)))


def ref_hashlittle(key: bytes, initval: int) -> int:
    """lookup3's byte-at-a-time path (the one for unaligned keys)."""
    length = len(key)
    a = b = c = u32(0xDEADBEEF + length + initval)
    k = 0
    while length > 12:
        a = u32(a + key[k] + (key[k + 1] << 8) + (key[k + 2] << 16) + (key[k + 3] << 24))
        b = u32(b + key[k + 4] + (key[k + 5] << 8) + (key[k + 6] << 16) + (key[k + 7] << 24))
        c = u32(c + key[k + 8] + (key[k + 9] << 8) + (key[k + 10] << 16) + (key[k + 11] << 24))
        a = u32(a - c) ^ rot(c, 4); c = u32(c + b)  # noqa: E702
        b = u32(b - a) ^ rot(a, 6); a = u32(a + c)  # noqa: E702
        c = u32(c - b) ^ rot(b, 8); b = u32(b + a)  # noqa: E702
        a = u32(a - c) ^ rot(c, 16); c = u32(c + b)  # noqa: E702
        b = u32(b - a) ^ rot(a, 19); a = u32(a + c)  # noqa: E702
        c = u32(c - b) ^ rot(b, 4); b = u32(b + a)  # noqa: E702
        length -= 12
        k += 12
    if length == 0:
        return c
    tail = key[k:] + bytes(12 - length)
    a = u32(a + int.from_bytes(tail[0:4], "little"))
    b = u32(b + int.from_bytes(tail[4:8], "little"))
    c = u32(c + int.from_bytes(tail[8:12], "little"))
    c ^= b; c = u32(c - rot(b, 14))  # noqa: E702
    a ^= c; a = u32(a - rot(c, 11))  # noqa: E702
    b ^= a; b = u32(b - rot(a, 25))  # noqa: E702
    c ^= b; c = u32(c - rot(b, 16))  # noqa: E702
    a ^= c; a = u32(a - rot(c, 4))  # noqa: E702
    b ^= a; b = u32(b - rot(a, 14))  # noqa: E702
    c ^= b; c = u32(c - rot(b, 24))  # noqa: E702
    return c


REFERENCE: dict[str, Callable[[bytes], int]] = {
    "one_at_a_time": ref_one_at_a_time,
    "md5": lambda k: int.from_bytes(hashlib.md5(k).digest()[:4], "little"),
    "crc16": ref_crc16,
    "crc32": lambda k: (ref_crc32_bitwise(k) >> 16) & 0x7FFF,
    "crc32a": ref_crc32_bitwise,
    "fnv1_64": lambda k: ref_fnv(k, 0xCBF29CE484222325, 0x100000001B3, False, 64),
    "fnv1a_64": lambda k: ref_fnv(k, 0x84222325, 0x1B3, True, 32),
    "fnv1_32": lambda k: ref_fnv(k, 0x811C9DC5, 0x01000193, False, 32),
    "fnv1a_32": lambda k: ref_fnv(k, 0x811C9DC5, 0x01000193, True, 32),
    "hsieh": ref_hsieh,
    "murmur": ref_murmur,
    "jenkins": lambda k: ref_hashlittle(k, 13),
}


# -- hash functions ---------------------------------------------------------------------------------


def test_all_twelve_names_in_twemproxy_order() -> None:
    assert HASH_NAMES == (
        "one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64",
        "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins",
    )
    assert set(REFERENCE) == set(HASH_FUNCTIONS)


@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        # FNV test vectors (isthe.com/chongo/tech/comp/fnv); the *_64 ones are the low 32 bits
        ("fnv1_32", b"a", 0x050C5D7E),
        ("fnv1a_32", b"a", 0xE40C292C),
        ("fnv1_32", b"foobar", 0x31F0B262),
        ("fnv1a_32", b"foobar", 0xBF9CF968),
        ("fnv1_64", b"a", 0x8601B7BE),  # FNV-1 64 = 0xaf63bd4c8601b7be
        ("fnv1a_64", b"a", 0x8601EC8C),  # FNV-1a 64 = 0xaf63dc4c8601ec8c
        ("fnv1_64", b"foobar", 0xA4DDA9C2),  # 0x340d8765a4dda9c2
        ("fnv1a_64", b"foobar", 0xF73967E8),  # 0x85944171f73967e8
        ("fnv1_32", b"", 0x811C9DC5),
        ("fnv1a_64", b"", 0x84222325),
        # Jenkins one-at-a-time (Wikipedia)
        ("one_at_a_time", b"a", 0xCA2E9442),
        ("one_at_a_time", b"The quick brown fox jumps over the lazy dog", 0x519E91F5),
        ("one_at_a_time", b"", 0),
        # CRC check values for "123456789": CRC-32 0xcbf43926, CRC-16/XMODEM 0x31c3
        ("crc32a", b"123456789", 0xCBF43926),
        ("crc32", b"123456789", 0x4BF4),  # (0xcbf43926 >> 16) & 0x7fff
        ("crc16", b"1", 0x2672),  # one byte: nothing shifted out yet
        ("md5", b"", 0xD98C1DD4),  # d41d8cd9...
        ("md5", b"a", 0xB975C10C),  # 0cc175b9...
        ("hsieh", b"", 0),
        ("murmur", b"", 0),
        ("jenkins", b"", 0xDEADBEEF + 13),
    ],
)
def test_known_vectors(name: str, key: bytes, expected: int) -> None:
    assert hash_key(name, key) == expected
    assert REFERENCE[name](key) == expected


def test_crc16_keeps_the_shifted_out_bytes() -> None:
    """twemproxy's crc16 is XMODEM in a uint32 that is never truncated."""
    value = hash_key("crc16", b"123456789")
    assert value & 0xFFFF == 0x31C3
    assert value >> 16 == ((hashing.crc16(b"1234567") & 0xFF00) | (hashing.crc16(b"12345678") & 0xFF00) >> 8)
    assert value == ref_crc16(b"123456789") == 0x869031C3


def test_lookup3_published_vectors() -> None:
    """lookup3.c's driver5 values for hashlittle()."""
    assert _hashlittle(b"", 0) == 0xDEADBEEF
    assert _hashlittle(b"", 0xDEADBEEF) == 0xBD5B7DDE
    assert _hashlittle(b"Four score and seven years ago", 0) == 0x17770551
    assert _hashlittle(b"Four score and seven years ago", 1) == 0xCD628161


@pytest.mark.parametrize("name", HASH_NAMES)
@given(key=st.binary(max_size=80))
@settings(max_examples=300, deadline=None)
def test_matches_the_c_model(name: str, key: bytes) -> None:
    value = hash_key(name, key)
    assert 0 <= value <= M32
    assert value == REFERENCE[name](key)
    assert value == get_hash(name)(bytes(key))  # deterministic


@given(key=st.binary(min_size=1, max_size=40))
def test_crc_fast_paths_match_zlib(key: bytes) -> None:
    assert hash_key("crc32a", key) == zlib.crc32(key)
    assert hash_key("crc32", key) == (zlib.crc32(key) >> 16) & 0x7FFF
    assert hash_key("crc32", key) <= 0x7FFF


SIGN_EXTENDING = ("one_at_a_time", "fnv1_64", "fnv1a_64", "fnv1_32", "fnv1a_32")


@pytest.mark.parametrize("name", SIGN_EXTENDING)
def test_high_bytes_are_sign_extended(name: str) -> None:
    fn = get_hash(name)
    for b in (0x80, 0xC3, 0xFF):
        key = bytes([b])
        assert fn(key) == REFERENCE[name](key)
    # explicit: one XOR with 0xffffff80 (not 0x80)
    if name == "fnv1a_32":
        assert fn(b"\x80") == ((0x811C9DC5 ^ 0xFFFFFF80) * 0x01000193) & M32
        assert fn(b"\x80") != ((0x811C9DC5 ^ 0x80) * 0x01000193) & M32
    if name == "fnv1a_64":
        assert fn(b"\xff") == ((0x84222325 ^ 0xFFFFFFFF) * 0x1B3) & M32
    if name == "one_at_a_time":
        unsigned = ref_one_at_a_time(b"a")  # 0x61 is the same either way
        assert fn(b"a") == unsigned
        assert fn(b"\xe9") != ref_one_at_a_time_unsigned(b"\xe9")


def ref_one_at_a_time_unsigned(key: bytes) -> int:
    """The textbook one-at-a-time (unsigned bytes), to show twemproxy's differs."""
    value = 0
    for b in key:
        value = u32(value + b)
        value = u32(value + (value << 10))
        value ^= value >> 6
    value = u32(value + (value << 3))
    value ^= value >> 11
    return u32(value + (value << 15))


@pytest.mark.parametrize("name", SIGN_EXTENDING)
@given(key=st.binary(min_size=1, max_size=40))
def test_sign_extension_only_matters_for_high_bytes(name: str, key: bytes) -> None:
    fn = get_hash(name)
    ascii_key = bytes(b & 0x7F for b in key)
    assert fn(ascii_key) == REFERENCE[name](ascii_key)
    assert fn(key) == REFERENCE[name](key)


def test_hsieh_tail_signedness() -> None:
    """Only the third byte of a 3-byte tail is a signed char; 16-bit reads and a 1-byte tail are unsigned."""
    assert hashing.hsieh(b"ab\xff") == ref_hsieh(b"ab\xff")
    h = 0
    h = u32(h + (ord("a") | ord("b") << 8))
    h ^= u32(h << 16)
    h ^= u32(0xFFFFFFFF << 18)  # (uint32_t)(char)0xff << 18
    h = u32(h + (h >> 11))
    for op in ("^<<3", "+>>5", "^<<4", "+>>17", "^<<25", "+>>6"):
        shift = int(op[3:])
        h = (h ^ u32(h << shift)) if op[0] == "^" else u32(h + (h >> shift))
    assert hashing.hsieh(b"ab\xff") == h
    # a 1-byte tail is read as unsigned char
    assert hashing.hsieh(b"\xff") == ref_hsieh(b"\xff")


def test_murmur_seed_depends_on_length() -> None:
    assert hashing.murmur(b"\0") != hashing.murmur(b"\0\0")
    assert ref_murmur(b"abcd") == hashing.murmur(b"abcd")


@pytest.mark.parametrize("bad", ["fnv1a", "FNV1A_64", "", "sha1"])
def test_unknown_hash_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        get_hash(bad)
    with pytest.raises(ConfigError):
        Router(["127.0.0.1:11211:1"], hash=bad)


# -- servers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec", "ident"),
    [
        ("127.0.0.1:11211:1", ServerSpec("127.0.0.1", 11211, 1), "127.0.0.1"),
        ("127.0.0.1:22122:3", ServerSpec("127.0.0.1", 22122, 3), "127.0.0.1:22122"),
        ("cache.local:11212:2 alpha", ServerSpec("cache.local", 11212, 2, "alpha"), "alpha"),
        ("10.0.0.1:11211:1 server1", ServerSpec("10.0.0.1", 11211, 1, "server1"), "server1"),
        ("/tmp/mc.sock:2", ServerSpec("/tmp/mc.sock", 0, 2), "/tmp/mc.sock:"),
        ("/tmp/mc.sock:1 sock", ServerSpec("/tmp/mc.sock", 0, 1, "sock"), "sock"),
        ("127.0.0.1:011212:1", ServerSpec("127.0.0.1", 11212, 1, "127.0.0.1:011212"), "127.0.0.1:011212"),
        ("127.0.0.1:011211:1", ServerSpec("127.0.0.1", 11211, 1), "127.0.0.1"),
    ],
)
def test_server_parse_and_identity(text: str, spec: ServerSpec, ident: str) -> None:
    parsed = ServerSpec.parse(text)
    assert parsed == spec
    assert parsed.ident == ident
    assert ServerSpec.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "bad", ["127.0.0.1:11211", "127.0.0.1:11211:0", "127.0.0.1:x:1", "127.0.0.1:70000:1", ":11211:1",
            "127.0.0.1:11211:1 ", "", "127.0.0.1:11211:-1"],
)
def test_bad_server_strings(bad: str) -> None:
    with pytest.raises(ConfigError):
        ServerSpec.parse(bad)


def test_server_spec_validation() -> None:
    with pytest.raises(ConfigError):
        ServerSpec("h", 11211, 0)
    with pytest.raises(ConfigError):
        ServerSpec("h", 0)
    with pytest.raises(ConfigError):
        ServerSpec("/sock", 11211)
    with pytest.raises(ConfigError):
        ServerSpec("h", name="")


def test_pool_order_is_length_then_bytes() -> None:
    servers = [ServerSpec("h", 1, name=n) for n in ("zeta", "al", "beta-longer-name", "mc3", "ab")]
    order = twemproxy_order(servers)
    assert [servers[i].ident for i in order] == ["ab", "al", "mc3", "zeta", "beta-longer-name"]
    assert Router(servers).pool_order == order


def test_duplicate_identities_are_rejected() -> None:
    with pytest.raises(ConfigError):
        Router(["127.0.0.1:11211:1", "127.0.0.1:11211:2"])
    with pytest.raises(ConfigError):
        Router(["127.0.0.1:1:1 a", "127.0.0.2:2:1 a"])
    Router(["127.0.0.1:11211:1 a", "127.0.0.1:11211:1 b"])  # names make them distinct


# -- ketama / modula --------------------------------------------------------------------------------


def test_ketama_points_float32_arithmetic() -> None:
    # equal weights: exactly 160 per server
    assert [ketama_points(1, 3, 3)] * 3 == [160, 160, 160]
    assert ketama_points(1, 4, 4) == 160
    # 29/60 of 3 servers: 0.48333332f * 160 / 4 * 3 = 57.999996f -> 57 groups; double math gives 58
    assert ketama_points(29, 60, 3) == 228
    assert ketama_points(1, 25, 5) == 28
    assert sum(ketama_points(w, 11, 4) for w in (1, 2, 3, 5)) <= 640


def test_ketama_ring_shape() -> None:
    entries = [(b"a", 1), (b"bb", 2), (b"ccc", 3)]
    values, owners = build_ketama(entries)
    expected_points = [ketama_points(w, 6, 3) for _, w in entries]
    assert len(values) == sum(expected_points)
    assert values == sorted(values)
    assert [owners.count(i) for i in range(3)] == expected_points
    # the first four points of server "a" are md5("a-0") read as little-endian uint32s
    digest = hashlib.md5(b"a-0").digest()
    for j in range(4):
        assert int.from_bytes(digest[4 * j : 4 * j + 4], "little") in values


def test_ketama_name_length_limit() -> None:
    with pytest.raises(ConfigError):
        Router([f"127.0.0.1:11211:1 {'n' * 84}", "127.0.0.1:11212:1"])
    Router([f"127.0.0.1:11211:1 {'n' * 80}", "127.0.0.1:11212:1"])
    Router([f"127.0.0.1:11211:1 {'n' * 84}", "127.0.0.1:11212:1"], distribution="modula")


def test_ketama_dispatch_is_first_point_at_or_after_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(HASH_FUNCTIONS, "md5", lambda key: int(key))
    servers = ["127.0.0.1:1:1", "127.0.0.1:2:1", "127.0.0.1:3:1"]
    router = Router(servers, hash="md5", memo_size=0)
    order = router.pool_order
    values, owners = build_ketama([(router.servers[i].ident.encode(), 1) for i in order])
    for p in (0, 1, len(values) // 2, len(values) - 1):
        assert router.index_for(b"%d" % values[p]) == order[owners[p]]
        if p + 1 < len(values) and values[p + 1] > values[p]:
            assert router.index_for(b"%d" % (values[p] + 1)) == order[owners[p + 1]]
    assert router.index_for(b"0") == order[owners[0]]
    assert router.index_for(b"%d" % (values[-1] + 1)) == order[owners[0]]  # wraps
    assert router.index_for(b"%d" % M32) == order[owners[0]]


def test_modula_walks_pool_order_weight_times(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(HASH_FUNCTIONS, "crc32a", lambda key: int(key))
    # pool order: "b" (len 1), "zz", "aaa"
    router = Router(["h:1:2 aaa", "h:2:1 zz", "h:3:3 b"], hash="crc32a", distribution="modula", memo_size=0)
    table = [2, 2, 2, 1, 0, 0]
    assert build_modula([3, 1, 2]) == [0, 0, 0, 1, 2, 2]
    assert [router.index_for(b"%d" % h) for h in range(12)] == table * 2
    router.set_live([0, 2])
    assert [router.index_for(b"%d" % h) for h in range(5)] == [2, 2, 2, 0, 0]


# -- router -----------------------------------------------------------------------------------------


def test_unknown_distribution_and_bad_tag() -> None:
    with pytest.raises(ConfigError):
        Router(["h:1:1"], distribution="consistent")
    with pytest.raises(ConfigError):
        Router(["h:1:1"], hash_tag="{")
    with pytest.raises(ConfigError):
        Router(["h:1:1"], hash_tag="{{}")
    with pytest.raises(ConfigError):
        Router([])
    assert DISTRIBUTIONS == ("ketama", "modula", "random")


@pytest.mark.parametrize(
    ("key", "part"),
    [
        (b"{user1}:name", b"user1"),
        (b"x{user1}y{z}", b"user1"),
        (b"{}abc", b"{}abc"),  # empty tag: the whole key
        (b"abc{", b"abc{"),
        (b"ab}c{d", b"ab}c{d"),  # no '}' after the '{'
        (b"}a{b}", b"b"),
        (b"{{a}", b"{a"),
        (b"plain", b"plain"),
    ],
)
def test_hash_tag_part(key: bytes, part: bytes) -> None:
    assert hash_tag_part(key, b"{}") == part
    router = Router(["h:1:1", "h:2:1", "h:3:1"], hash_tag="{}")
    assert router.routed_part(key) == part
    assert router.hash_for(key) == hash_key("fnv1a_64", part)


def test_hash_tag_keeps_tagged_keys_together() -> None:
    for distribution in ("ketama", "modula"):
        router = Router(["h:1:1", "h:2:1", "h:3:1", "h:4:1"], distribution=distribution, hash_tag="{}")
        assert len({router.index_for(b"{user42}:%d" % i) for i in range(200)}) == 1


@pytest.mark.parametrize("distribution", ["ketama", "modula"])
def test_set_live_reroutes_only_to_live_servers(distribution: str) -> None:
    servers = [ServerSpec(f"10.0.0.{i}", 11211, w) for i, w in enumerate((1, 2, 3, 4), 1)]
    router = Router(servers, hash="murmur", distribution=distribution)
    keys = [b"key:%d" % i for i in range(3000)]
    before = [router.index_for(k) for k in keys]
    assert set(before) == {0, 1, 2, 3}
    router.set_live([0, 2, 3])
    assert router.live == frozenset({0, 2, 3})
    after = [router.index_for(k) for k in keys]
    assert set(after) == {0, 2, 3}
    if distribution == "ketama":  # consistent hashing: most surviving keys stay put
        kept = sum(1 for b, a in zip(before, after, strict=True) if b == a and b != 1)
        assert kept > 0.8 * sum(1 for b in before if b != 1)
    router.set_live(None)
    assert [router.index_for(k) for k in keys] == before
    router.set_live([])
    with pytest.raises(NoLiveServersError):
        router.index_for(b"x")
    with pytest.raises(ValueError):
        router.set_live([4])


def test_single_server_pool_never_hashes() -> None:
    router = Router(["127.0.0.1:11211:1"], hash="crc32")
    assert {router.index_for(b"k%d" % i) for i in range(50)} == {0}


def test_memo_is_bounded_and_dropped_on_live_change() -> None:
    router = Router(["h:1:1", "h:2:1", "h:3:1"], memo_size=100)
    fresh = Router(["h:1:1", "h:2:1", "h:3:1"], memo_size=0)
    for i in range(1000):
        key = b"k%d" % i
        assert router.index_for(key) == fresh.index_for(key)
        router.index_for(b"hot")
        assert router.memo_len() <= 100
    assert router.memo_len() > 0
    router.set_live([0, 1])
    assert router.memo_len() == 0
    fresh.set_live([0, 1])
    assert all(router.index_for(b"k%d" % i) == fresh.index_for(b"k%d" % i) for i in range(300))


def test_random_uses_live_servers_only() -> None:
    router = Router(["h:1:1", "h:2:5", "h:3:1"], distribution="random", rng=random.Random(7))
    assert {router.index_for(b"same") for _ in range(300)} == {0, 1, 2}
    router.set_live([0, 2])
    assert {router.index_for(b"same") for _ in range(300)} == {0, 2}
    assert router.memo_len() == 0


def test_split_and_server_for() -> None:
    router = Router(["h:1:1", "h:2:1", "h:3:1"], hash="md5")
    keys = [b"k%d" % i for i in range(100)]
    groups = router.split(keys)
    assert sorted(k for g in groups.values() for k in g) == sorted(keys)
    for index, group in groups.items():
        assert all(router.server_for(k) is router.servers[index] for k in group)
    assert "md5" in repr(router)
