"""Key -> server distributions of twemproxy (nutcracker): ketama, modula, random.

**ketama** (``nc_ketama.c``) -- every live server gets
``floorf(pct * 160 / 4 * nlive + 1e-10) * 4`` points on a 2**32 ring, where
``pct = weight / total_live_weight``.  twemproxy evaluates that expression in
C ``float`` (single precision) with only the ``+ 1e-10`` done in ``double``;
:func:`ketama_points` reproduces each rounding step with :mod:`struct` so the
point counts -- and therefore the ring -- are identical even where the
float result lands just below an integer.  Point group ``i`` of a server
(``i = 0 .. points/4 - 1``) is the MD5 digest of ``"<identity>-<i>"``, read
as four little-endian uint32 values.  twemproxy formats that label into an
86-byte buffer, so identities whose labels exceed 85 bytes are rejected here
(twemproxy would hash bytes past its buffer).  A key goes to the first point
whose value is >= the key's hash, wrapping to the first point.  Equal point
values (a 1-in-10**5 event for a small pool) are ordered by server then
point order, as a stable sort would.  Two consequences worth knowing: ``crc32``
(15-bit values) only ever reaches the ring's first 32768 positions, so with
ketama practically every key goes to one server; and twemproxy's 32-bit
``fnv1a_64`` (prime 0x1b3) places keys that differ only in their last bytes
close together on the ring.  Both are faithfully reproduced.

**modula** (``nc_modula.c``) -- the table lists every live server ``weight``
times, in pool order; a key goes to ``table[hash % len(table)]``.

**random** (``nc_random.c``) -- a uniformly random live server per request;
weights are ignored, as in twemproxy.

In all three the pool order is twemproxy's (identities sorted by length, then
bytes -- see :mod:`scatterhoard.routing.servers`), not the config order; the
:class:`Router` hides that and always answers with indices into the server
list it was given.  A pool with a single server never hashes.

**hash_tag** -- with a two-character tag such as ``"{}"``, only the part of
the key between the first ``tag[0]`` and the next ``tag[1]`` after it is
hashed, provided it is non-empty; otherwise the whole key is.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Final

from ..errors import CacheConnectionError, ConfigError
from .hashing import HashFunction, get_hash
from .servers import ServerSpec, twemproxy_order

__all__ = [
    "DISTRIBUTIONS",
    "KETAMA_MAX_LABEL",
    "NoLiveServersError",
    "Router",
    "build_ketama",
    "build_modula",
    "hash_tag_part",
    "ketama_points",
]

DISTRIBUTIONS: Final[tuple[str, ...]] = ("ketama", "modula", "random")
"""twemproxy's ``distribution:`` values."""

KETAMA_POINTS_PER_SERVER: Final = 160
KETAMA_MAX_LABEL: Final = 85
"""Longest ``"<identity>-<i>"`` label twemproxy's 86-byte buffer holds."""

_FLOAT: Final = struct.Struct("f")


class NoLiveServersError(CacheConnectionError):
    """Every server of the pool is ejected; twemproxy answers such requests with an error."""


def _f32(x: float) -> float:
    """Round a double to the nearest C ``float`` (as an assignment/cast does)."""
    return float(_FLOAT.unpack(_FLOAT.pack(x))[0])


def ketama_points(weight: int, total_weight: int, live_count: int) -> int:
    """Points (a multiple of 4) a server gets on twemproxy's ketama ring.

    ``(uint32_t)(floorf((float)(pct * 160 / 4 * (float)nlive + 0.0000000001)) * 4)``
    with ``pct = (float)weight / (float)total_weight``: every operation but the
    ``+ 1e-10`` is single precision.  Each step's exact double result is
    rounded to float here, which equals the float operation (products of two
    floats are exact in a double; for the quotient double rounding is
    harmless because 53 >= 2 * 24 + 2).
    """
    pct = _f32(_f32(float(weight)) / _f32(float(total_weight)))
    value = _f32(pct * KETAMA_POINTS_PER_SERVER)
    value = _f32(value / 4)
    value = _f32(value * _f32(float(live_count)))
    value = _f32(value + 0.0000000001)
    return int(math.floor(value)) * 4


def build_ketama(servers: Sequence[tuple[bytes, int]]) -> tuple[list[int], list[int]]:
    """The ketama ring of live ``(identity, weight)`` servers given in pool order.

    Returns ``(values, owners)``: the sorted point values and, for each point,
    the position in ``servers`` of the server that owns it.
    """
    total_weight = sum(weight for _, weight in servers)
    live_count = len(servers)
    points: list[tuple[int, int]] = []
    md5 = hashlib.md5
    unpack = struct.Struct("<4I").unpack
    for position, (ident, weight) in enumerate(servers):
        groups = ketama_points(weight, total_weight, live_count) // 4
        if groups and len(ident) + 1 + len(str(groups - 1)) > KETAMA_MAX_LABEL:
            raise ConfigError(
                f"server name {ident.decode(errors='replace')!r} is too long for ketama: twemproxy "
                f"truncates '<name>-<n>' labels to {KETAMA_MAX_LABEL} bytes"
            )
        for group in range(groups):
            for value in unpack(md5(b"%s-%d" % (ident, group)).digest()):
                points.append((value, position))
    points.sort(key=lambda point: point[0])  # stable: ties keep server, then point order
    return [value for value, _ in points], [position for _, position in points]


def build_modula(weights: Sequence[int]) -> list[int]:
    """The modula table for live servers' weights in pool order: positions, each ``weight`` times."""
    return [position for position, weight in enumerate(weights) for _ in range(weight)]


def hash_tag_part(key: bytes, tag: bytes) -> bytes:
    """The part of ``key`` twemproxy hashes for a two-byte ``hash_tag``.

    The bytes between the first ``tag[0]`` and the first ``tag[1]`` after it,
    if there is at least one; otherwise the whole key.
    """
    start = key.find(tag[:1])
    if start >= 0:
        end = key.find(tag[1:2], start + 1)
        if end - start > 1:
            return key[start + 1 : end]
    return key


def _as_tag(hash_tag: str | bytes | None) -> bytes | None:
    if hash_tag is None:
        return None
    tag = hash_tag.encode() if isinstance(hash_tag, str) else bytes(hash_tag)
    if not tag:
        return None
    if len(tag) != 2:
        raise ConfigError(f"hash_tag {hash_tag!r} is not a string of two characters")
    return tag


class Router:
    """Maps keys to servers exactly like a twemproxy pool with the same settings.

    ``servers`` are :class:`ServerSpec` objects or twemproxy ``servers:``
    strings (``"host:port:weight [name]"``); :meth:`index_for` answers with an
    index into that sequence, whatever order twemproxy keeps them in.
    ``hash`` and ``distribution`` take twemproxy's names; unknown ones raise
    :class:`~scatterhoard.errors.ConfigError`.

    :meth:`set_live` ejects/restores servers the way twemproxy's
    ``auto_eject_hosts`` does: the ring (or modula table) is rebuilt from the
    live servers only, so keys of an ejected server move to the others.

    Lookups are memoised per key in two bounded generations of at most
    ``memo_size // 2`` entries each (hot keys stay, cold ones age out); the
    memo is dropped whenever the live set changes.  ``random`` never memoises.
    """

    __slots__ = (
        "_cold",
        "_distribution",
        "_hash",
        "_hash_name",
        "_hot",
        "_idents",
        "_live",
        "_memo_half",
        "_only",
        "_order",
        "_owners",
        "_random",
        "_servers",
        "_table",
        "_tag",
        "_values",
    )

    def __init__(
        self,
        servers: Sequence[ServerSpec | str],
        hash: str = "fnv1a_64",
        distribution: str = "ketama",
        hash_tag: str | bytes | None = None,
        *,
        memo_size: int = 65536,
        rng: random.Random | None = None,
    ) -> None:
        specs = tuple(s if isinstance(s, ServerSpec) else ServerSpec.parse(s) for s in servers)
        if not specs:
            raise ConfigError("a pool needs at least one server")
        if distribution not in DISTRIBUTIONS:
            raise ConfigError(
                f"unknown distribution {distribution!r}; expected one of: {', '.join(DISTRIBUTIONS)}"
            )
        if memo_size < 0:
            raise ConfigError("memo_size must be >= 0")
        self._hash: HashFunction = get_hash(hash)
        self._hash_name = hash
        self._distribution = distribution
        self._tag = _as_tag(hash_tag)
        self._servers = specs
        self._order = twemproxy_order(specs)
        self._idents = [s.ident.encode() for s in specs]
        self._random = rng if rng is not None else random.Random()
        self._memo_half = 0 if distribution == "random" else memo_size // 2
        self._hot: dict[bytes, int] = {}
        self._cold: dict[bytes, int] = {}
        self._values: list[int] = []
        self._owners: list[int] = []
        self._table: list[int] = []
        self._live = frozenset(range(len(specs)))
        self._only = -1  # the index of a single live server of a one-server pool (no hashing, no memo,
        # as twemproxy does not hash for a single-server pool)
        self._rebuild()

    # -- configuration ---------------------------------------------------

    @property
    def servers(self) -> tuple[ServerSpec, ...]:
        """The servers, in the order given (the order of :meth:`index_for`'s answers)."""
        return self._servers

    @property
    def hash_name(self) -> str:
        return self._hash_name

    @property
    def distribution(self) -> str:
        return self._distribution

    @property
    def hash_tag(self) -> bytes | None:
        return self._tag

    @property
    def pool_order(self) -> list[int]:
        """Server indices in twemproxy's pool order (by identity length, then bytes)."""
        return list(self._order)

    @property
    def live(self) -> frozenset[int]:
        """Indices of the servers keys are currently routed to."""
        return self._live

    def set_live(self, indices: Iterable[int] | None) -> None:
        """Route only to these server indices (``None``: all); rebuilds when the set changes."""
        live = frozenset(range(len(self._servers))) if indices is None else frozenset(indices)
        bad = [i for i in live if not isinstance(i, int) or not 0 <= i < len(self._servers)]
        if bad:
            raise ValueError(f"no such server index: {sorted(bad, key=repr)!r}")
        if live == self._live:
            return
        self._live = live
        self._rebuild()

    def _rebuild(self) -> None:
        self._hot = {}
        self._cold = {}
        self._only = 0 if len(self._servers) == 1 and self._live else -1
        live_order = [i for i in self._order if i in self._live]
        if self._distribution == "ketama":
            values, positions = build_ketama([(self._idents[i], self._servers[i].weight) for i in live_order])
            self._values = values
            self._owners = [live_order[p] for p in positions]
        elif self._distribution == "modula":
            self._table = [live_order[p] for p in build_modula([self._servers[i].weight for i in live_order])]
        else:
            self._table = live_order

    # -- lookups ---------------------------------------------------------

    def routed_part(self, key: bytes) -> bytes:
        """The part of ``key`` that is hashed (the hash-tagged part, or the key)."""
        tag = self._tag
        return key if tag is None else hash_tag_part(key, tag)

    def hash_for(self, key: bytes) -> int:
        """The routing hash of ``key`` (after hash_tag extraction)."""
        tag = self._tag
        return self._hash(key if tag is None else hash_tag_part(key, tag))

    def _locate(self, key: bytes) -> int:
        distribution = self._distribution
        if not self._live:
            raise NoLiveServersError(f"all {len(self._servers)} servers of the pool are ejected")
        if distribution == "ketama":
            values = self._values
            if not values:
                raise NoLiveServersError("no ketama points (all live servers have too small a weight)")
            tag = self._tag
            position = bisect_left(values, self._hash(key if tag is None else hash_tag_part(key, tag)))
            return self._owners[position if position < len(values) else 0]
        table = self._table
        if distribution == "modula":
            tag = self._tag
            return table[self._hash(key if tag is None else hash_tag_part(key, tag)) % len(table)]
        return table[self._random.randrange(len(table))]

    def index_for(self, key: bytes) -> int:
        """Index (into :attr:`servers`) of the server ``key`` is routed to.

        Raises :class:`NoLiveServersError` when every server is ejected.
        """
        if self._only >= 0:
            return self._only
        index = self._hot.get(key)
        if index is not None:
            return index
        half = self._memo_half
        if not half:
            return self._locate(key)
        index = self._cold.pop(key, None)
        if index is None:
            index = self._locate(key)
        hot = self._hot
        if len(hot) >= half:
            self._cold = hot
            self._hot = hot = {}
        hot[key] = index
        return index

    def server_for(self, key: bytes) -> ServerSpec:
        """The server ``key`` is routed to."""
        return self._servers[self.index_for(key)]

    def split(self, keys: Iterable[bytes]) -> dict[int, list[bytes]]:
        """Group keys by server index (e.g. to fan out a multi-key get), keeping their order."""
        groups: dict[int, list[bytes]] = {}
        index_for = self.index_for
        for key in keys:
            groups.setdefault(index_for(key), []).append(key)
        return groups

    def memo_len(self) -> int:
        """Number of memoised keys (at most ``memo_size``)."""
        return len(self._hot) + len(self._cold)

    def __repr__(self) -> str:
        return (
            f"Router({len(self._servers)} servers, hash={self._hash_name!r}, "
            f"distribution={self._distribution!r}, hash_tag={self._tag!r}, live={sorted(self._live)})"
        )
