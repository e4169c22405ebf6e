"""The twelve key hash functions of twemproxy (nutcracker), bit for bit.

Every function takes the key as ``bytes`` and returns an unsigned 32-bit
``int``, exactly what ``hash_<name>()`` returns in twemproxy 0.5.0's
``src/hashkit`` on x86-64 Linux -- including the places where twemproxy
differs from the textbook algorithm of the same name:

``one_at_a_time``, ``fnv1_32``, ``fnv1a_32``, ``fnv1_64``, ``fnv1a_64``
    read the key through a (signed) ``char *``: a byte >= 0x80 is
    sign-extended before it is added or XORed, so ``b"\\xff"`` contributes
    ``0xffffffff``, not ``0xff``.  For ASCII keys this changes nothing.

``fnv1_64`` / ``fnv1a_64``
    despite the names they return 32 bits.  ``fnv1a_64`` even *computes* in
    32 bits: it starts from ``(uint32_t)0xcbf29ce484222325 == 0x84222325``
    and multiplies by ``(uint32_t)0x100000001b3 == 0x1b3``.  ``fnv1_64``
    computes in 64 bits and truncates at the end, which gives the same low
    32 bits as doing the FNV-1 loop in 32 bits with that offset and prime
    (the low half of a product/XOR only depends on the low halves of the
    operands), so both are implemented in 32-bit arithmetic here.

``crc32``
    libmemcached's variant: the standard CRC-32 shifted down and masked to
    15 bits, ``(crc32(key) >> 16) & 0x7fff``.  ``crc32a`` is the plain
    standard CRC-32 (what :func:`zlib.crc32` returns).

``crc16``
    a CRC-16/XMODEM table (poly 0x1021, init 0), but the running value is a
    ``uint32_t`` that is shifted left by 8 per byte and never truncated to 16
    bits.  The low 16 bits are the real CRC; bits 16..31 keep the high bytes
    of the two previous CRC values: ``hi8(crc[n-2]) << 24 | hi8(crc[n-1]) <<
    16 | crc[n]`` where ``crc[k]`` is the CRC of the first ``k`` bytes.

``hsieh``
    Paul Hsieh's SuperFastHash, but the state starts from 0 instead of the
    key length, and the third byte of a 3-byte tail is read as a signed char
    (the 1-byte tail and the 16-bit reads are unsigned).

``murmur``
    MurmurHash2 seeded with ``0xdeadbeef * len`` (32-bit), so the initial
    state is ``(0xdeadbeef * len) ^ len``.

``jenkins``
    Bob Jenkins' lookup3 ``hashlittle()`` with ``initval = 13``; an empty key
    returns the unmixed initial state ``0xdeadbeef + 13``.

``md5``
    the first four digest bytes read little-endian.

The per-byte functions are pure Python loops kept as lean as possible;
``md5``, ``crc32``, ``crc32a`` and ``crc16`` run in C (:mod:`hashlib`,
:mod:`zlib`, :mod:`binascii`).  Callers that hash the same keys again and
again should memoise (the :class:`~scatterhoard.routing.Router` does).
"""

from __future__ import annotations

import binascii
import hashlib
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Final

from ..errors import ConfigError

__all__ = [
    "HASH_FUNCTIONS",
    "HASH_NAMES",
    "HashFunction",
    "crc16",
    "crc32",
    "crc32a",
    "fnv1_32",
    "fnv1_64",
    "fnv1a_32",
    "fnv1a_64",
    "get_hash",
    "hash_key",
    "hsieh",
    "jenkins",
    "md5",
    "murmur",
    "one_at_a_time",
]

HashFunction = Callable[[bytes], int]

_M32: Final = 0xFFFFFFFF

# A byte as twemproxy sees it through a signed ``char`` converted to uint32_t.
_SIGNED: Final[tuple[int, ...]] = tuple(b | 0xFFFFFF00 if b & 0x80 else b for b in range(256))

_FNV32_INIT: Final = 0x811C9DC5
_FNV32_PRIME: Final = 0x01000193
# (uint32_t)0xcbf29ce484222325 and (uint32_t)0x100000001b3
_FNV64_INIT_LOW: Final = 0x84222325
_FNV64_PRIME_LOW: Final = 0x000001B3

_MURMUR_M: Final = 0x5BD1E995

_WORDS: Final[dict[int, struct.Struct]] = {}


def _signed(key: bytes) -> Iterable[int]:
    """The key's bytes as C ``(uint32_t)(char)`` values (sign-extended)."""
    if key.isascii():
        return key
    return map(_SIGNED.__getitem__, key)


def _le_words(data: bytes, count: int) -> tuple[int, ...]:
    """The first ``count`` little-endian uint32 words of ``data``."""
    unpacker = _WORDS.get(count)
    if unpacker is None:
        unpacker = struct.Struct(f"<{count}I")
        if count <= 128:
            _WORDS[count] = unpacker
    return unpacker.unpack_from(data)


def one_at_a_time(key: bytes) -> int:
    """Jenkins' one-at-a-time hash; bytes >= 0x80 are sign-extended."""
    h = 0
    for c in _signed(key):
        # value += val; value += value << 10  ==  (value + val) * 1025
        h = ((h + c) * 1025) & _M32
        h ^= h >> 6
    h = (h * 9) & _M32  # value += value << 3
    h ^= h >> 11
    return (h * 32769) & _M32  # value += value << 15


def md5(key: bytes) -> int:
    """MD5 of the key; the first four digest bytes as a little-endian uint32."""
    return int.from_bytes(hashlib.md5(key).digest()[:4], "little")


def _crc16_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


CRC16_XMODEM_TABLE: Final[tuple[int, ...]] = _crc16_table()
"""The CRC-16/XMODEM table twemproxy's ``nc_crc16.c`` uses (poly 0x1021)."""


def crc16(key: bytes) -> int:
    """twemproxy's crc16: CRC-16/XMODEM kept in a never-truncated uint32.

    ``crc = (crc << 8) ^ table[((crc >> 8) ^ byte) & 0xff]`` on a
    ``uint32_t``: the low 16 bits are the XMODEM CRC, the high 16 bits are the
    high bytes of the CRCs of ``key[:-2]`` and ``key[:-1]``.  Computed with
    three :func:`binascii.crc_hqx` calls (CRC-CCITT, the same CRC) in C.
    """
    n = len(key)
    if n < 2:
        return binascii.crc_hqx(key, 0)
    before_last_two = binascii.crc_hqx(key[: n - 2], 0)
    before_last = binascii.crc_hqx(key[n - 2 : n - 1], before_last_two)
    last = binascii.crc_hqx(key[n - 1 :], before_last)
    return ((before_last_two >> 8) << 24) | ((before_last >> 8) << 16) | last


def crc32(key: bytes) -> int:
    """libmemcached's 15-bit crc32: ``(crc32(key) >> 16) & 0x7fff``."""
    return (zlib.crc32(key) >> 16) & 0x7FFF


def crc32a(key: bytes) -> int:
    """The standard CRC-32 (IEEE 802.3, as :func:`zlib.crc32`)."""
    return zlib.crc32(key)


def fnv1_64(key: bytes) -> int:
    """FNV-1 64 truncated to 32 bits (== FNV-1 in 32 bits, offset 0x84222325, prime 0x1b3).

    Bytes >= 0x80 are sign-extended before the XOR.
    """
    h = _FNV64_INIT_LOW
    for c in _signed(key):
        h = ((h * _FNV64_PRIME_LOW) & _M32) ^ c
    return h


def fnv1a_64(key: bytes) -> int:
    """twemproxy's "fnv1a_64": FNV-1a done in 32 bits with offset 0x84222325, prime 0x1b3.

    Bytes >= 0x80 are sign-extended before the XOR.
    """
    h = _FNV64_INIT_LOW
    for c in _signed(key):
        h = ((h ^ c) * _FNV64_PRIME_LOW) & _M32
    return h


def fnv1_32(key: bytes) -> int:
    """FNV-1 32; bytes >= 0x80 are sign-extended before the XOR."""
    h = _FNV32_INIT
    for c in _signed(key):
        h = ((h * _FNV32_PRIME) & _M32) ^ c
    return h


def fnv1a_32(key: bytes) -> int:
    """FNV-1a 32; bytes >= 0x80 are sign-extended before the XOR."""
    h = _FNV32_INIT
    for c in _signed(key):
        h = ((h ^ c) * _FNV32_PRIME) & _M32
    return h


def hsieh(key: bytes) -> int:
    """SuperFastHash as twemproxy has it: starts from 0, signed third tail byte."""
    n = len(key)
    if n == 0:
        return 0
    h = 0
    blocks = n >> 2
    if blocks:
        halves = struct.unpack_from(f"<{blocks * 2}H", key)
        for i in range(0, blocks * 2, 2):
            h = (h + halves[i]) & _M32
            h = ((h << 16) ^ (halves[i + 1] << 11) ^ h) & _M32
            h = (h + (h >> 11)) & _M32
    rem = n & 3
    tail = blocks << 2
    if rem == 3:
        h = (h + key[tail] + (key[tail + 1] << 8)) & _M32
        h ^= (h << 16) & _M32
        h ^= (_SIGNED[key[tail + 2]] << 18) & _M32
        h = (h + (h >> 11)) & _M32
    elif rem == 2:
        h = (h + key[tail] + (key[tail + 1] << 8)) & _M32
        h ^= (h << 11) & _M32
        h = (h + (h >> 17)) & _M32
    elif rem == 1:
        h = (h + key[tail]) & _M32
        h ^= (h << 10) & _M32
        h = (h + (h >> 1)) & _M32
    h ^= (h << 3) & _M32
    h = (h + (h >> 5)) & _M32
    h ^= (h << 4) & _M32
    h = (h + (h >> 17)) & _M32
    h ^= (h << 25) & _M32
    return (h + (h >> 6)) & _M32


def murmur(key: bytes) -> int:
    """MurmurHash2 with twemproxy's seed ``0xdeadbeef * len`` (mod 2**32)."""
    n = len(key)
    m = _MURMUR_M
    h = ((0xDEADBEEF * n) ^ n) & _M32
    blocks = n >> 2
    if blocks:
        for k in _le_words(key, blocks):
            k = (k * m) & _M32
            k ^= k >> 24
            h = ((h * m) & _M32) ^ ((k * m) & _M32)
    rem = n & 3
    if rem:
        tail = blocks << 2
        if rem == 3:
            h ^= key[tail + 2] << 16
        if rem >= 2:
            h ^= key[tail + 1] << 8
        h = ((h ^ key[tail]) * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    return h ^ (h >> 15)


def _hashlittle(key: bytes, initval: int) -> int:
    """Bob Jenkins' lookup3 ``hashlittle()`` (little-endian reads, unsigned bytes)."""
    n = len(key)
    a = b = c = (0xDEADBEEF + n + initval) & _M32
    if n == 0:
        return c
    pad = -n % 12
    words = _le_words(key + b"\0" * pad if pad else key, (n + pad) >> 2)
    last = len(words) - 3
    for i in range(0, last, 3):
        a = (a + words[i]) & _M32
        b = (b + words[i + 1]) & _M32
        c = (c + words[i + 2]) & _M32
        # mix(a, b, c)
        a = ((a - c) & _M32) ^ (((c << 4) | (c >> 28)) & _M32)
        c = (c + b) & _M32
        b = ((b - a) & _M32) ^ (((a << 6) | (a >> 26)) & _M32)
        a = (a + c) & _M32
        c = ((c - b) & _M32) ^ (((b << 8) | (b >> 24)) & _M32)
        b = (b + a) & _M32
        a = ((a - c) & _M32) ^ (((c << 16) | (c >> 16)) & _M32)
        c = (c + b) & _M32
        b = ((b - a) & _M32) ^ (((a << 19) | (a >> 13)) & _M32)
        a = (a + c) & _M32
        c = ((c - b) & _M32) ^ (((b << 4) | (b >> 28)) & _M32)
        b = (b + a) & _M32
    a = (a + words[last]) & _M32
    b = (b + words[last + 1]) & _M32
    c = (c + words[last + 2]) & _M32
    # final(a, b, c)
    c = ((c ^ b) - (((b << 14) | (b >> 18)) & _M32)) & _M32
    a = ((a ^ c) - (((c << 11) | (c >> 21)) & _M32)) & _M32
    b = ((b ^ a) - (((a << 25) | (a >> 7)) & _M32)) & _M32
    c = ((c ^ b) - (((b << 16) | (b >> 16)) & _M32)) & _M32
    a = ((a ^ c) - (((c << 4) | (c >> 28)) & _M32)) & _M32
    b = ((b ^ a) - (((a << 14) | (a >> 18)) & _M32)) & _M32
    return ((c ^ b) - (((b << 24) | (b >> 8)) & _M32)) & _M32


def jenkins(key: bytes) -> int:
    """lookup3 ``hashlittle(key, len, 13)``."""
    return _hashlittle(key, 13)


HASH_FUNCTIONS: Final[dict[str, HashFunction]] = {
    "one_at_a_time": one_at_a_time,
    "md5": md5,
    "crc16": crc16,
    "crc32": crc32,
    "crc32a": crc32a,
    "fnv1_64": fnv1_64,
    "fnv1a_64": fnv1a_64,
    "fnv1_32": fnv1_32,
    "fnv1a_32": fnv1a_32,
    "hsieh": hsieh,
    "murmur": murmur,
    "jenkins": jenkins,
}
"""twemproxy's hash names (the ``hash:`` config values) in its own order."""

HASH_NAMES: Final[tuple[str, ...]] = tuple(HASH_FUNCTIONS)


def get_hash(name: str) -> HashFunction:
    """The hash function twemproxy calls ``name``; :class:`ConfigError` if unknown."""
    try:
        return HASH_FUNCTIONS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown hash {name!r}; expected one of: {', '.join(HASH_NAMES)}") from None


def hash_key(name: str, key: bytes) -> int:
    """``hash_<name>(key)`` as twemproxy computes it (an unsigned 32-bit int)."""
    return get_hash(name)(key)
