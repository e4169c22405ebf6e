"""What a ``hoard bench`` load is made of: its options, the operation mix, keys and values.

Everything here is pure (no sockets): :class:`LoadSpec` holds the load's shape,
:func:`parse_mix` / :func:`parse_size_range` read the command-line forms,
:class:`KeyChooser` draws key numbers (uniform or zipf) and :class:`OpSource`
turns them into :class:`Op` items that a protocol codec encodes.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field
from typing import NamedTuple

from ..errors import HoardError

PROTOCOLS = ("text", "meta", "binary", "resp", "distcache")
OPS = ("get", "set", "mget", "incr", "delete")
GET, SET, MGET, INCR, DELETE = range(5)

#: operations each protocol can express
SUPPORTED: dict[str, frozenset[str]] = {
    "text": frozenset(OPS), "meta": frozenset(OPS), "binary": frozenset(OPS), "resp": frozenset(OPS),
    "distcache": frozenset({"get", "set", "delete"}),
}
#: the largest value each protocol carries (distcache's session data limit)
MAX_VALUE = {"distcache": 32768}
MAX_KEY = {"distcache": 64}


class BenchError(HoardError):
    """A bench run that cannot start or cannot go on (bad options, unreachable target, broken stream)."""


class Op(NamedTuple):
    kind: int  # GET SET MGET INCR DELETE
    keys: tuple[bytes, ...]
    value: bytes  # for SET, else b""


@dataclass
class LoadSpec:
    """The shape of a load; the same for every worker process (each varies its seed)."""

    protocol: str = "text"
    mix: tuple[tuple[int, int], ...] = ((GET, 90), (SET, 10))
    keyspace: int = 10_000
    key_prefix: str = "hb:"
    distribution: str = "uniform"
    zipf_s: float = 0.99
    value_min: int = 100
    value_max: int = 100
    mget_width: int = 10
    expire: int = 0  # seconds, 0: never
    seed: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise BenchError(f"unknown protocol {self.protocol!r} (one of {', '.join(PROTOCOLS)})")
        for kind, _w in self.mix:
            if OPS[kind] not in SUPPORTED[self.protocol]:
                raise BenchError(f"the {self.protocol} protocol has no {OPS[kind]} operation "
                                 f"(it has: {', '.join(o for o in OPS if o in SUPPORTED[self.protocol])})")
        if self.keyspace < 1:
            raise BenchError("--keys must be at least 1")
        if not 0 <= self.value_min <= self.value_max:
            raise BenchError("--value-size: need 0 <= MIN <= MAX")
        limit = MAX_VALUE.get(self.protocol)
        if limit is not None and self.value_max > limit:
            raise BenchError(f"--value-size: {self.protocol} values are at most {limit} bytes")
        if self.mget_width < 1:
            raise BenchError("--mget-width must be at least 1")
        if self.distribution not in ("uniform", "zipf"):
            raise BenchError("--distribution is uniform or zipf")
        if self.distribution == "zipf" and self.zipf_s <= 0:
            raise BenchError("--zipf-s must be positive")
        if self.expire < 0:
            raise BenchError("--expire must be >= 0")
        if any(c <= " " or c == "\x7f" for c in self.key_prefix):
            raise BenchError("--key-prefix: no spaces or control characters (the text protocols split on them)")
        longest = len(key_bytes(self.key_prefix, self.keyspace - 1, counter=INCR in dict(self.mix)))
        if longest > MAX_KEY.get(self.protocol, 250):
            raise BenchError(f"keys of {longest} bytes are too long for {self.protocol}")


def parse_mix(text: str) -> tuple[tuple[int, int], ...]:
    """``get:90,set:10`` -> ((GET, 90), (SET, 10)); weights are relative, any positive integers."""
    out: dict[int, int] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition(":")
        name = name.strip().lower()
        if name not in OPS:
            raise BenchError(f"--mix: unknown operation {name!r} (one of {', '.join(OPS)})")
        try:
            w = int(weight) if sep else 1
        except ValueError:
            raise BenchError(f"--mix: bad weight {weight!r} for {name} (an integer)") from None
        if w < 0:
            raise BenchError(f"--mix: negative weight for {name}")
        out[OPS.index(name)] = out.get(OPS.index(name), 0) + w
    mix = tuple((k, w) for k, w in out.items() if w > 0)
    if not mix:
        raise BenchError("--mix: no operation with a positive weight")
    return mix


def format_mix(mix: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{OPS[k]}:{w}" for k, w in mix)


def parse_size_range(text: str) -> tuple[int, int]:
    """``100`` -> (100, 100); ``10-4096`` -> (10, 4096); ``k``/``m`` suffixes allowed."""
    def one(t: str) -> int:
        t = t.strip().lower()
        mult = 1
        if t.endswith("k"):
            mult, t = 1024, t[:-1]
        elif t.endswith("m"):
            mult, t = 1024 * 1024, t[:-1]
        try:
            return int(t) * mult
        except ValueError:
            raise BenchError(f"--value-size: bad size {text!r} (N or MIN-MAX, e.g. 100 or 10-64k)") from None

    lo, sep, hi = text.partition("-")
    a = one(lo)
    b = one(hi) if sep else a
    if a > b:
        raise BenchError(f"--value-size: {text!r}: MIN is larger than MAX")
    return a, b


def key_bytes(prefix: str, n: int, counter: bool = False) -> bytes:
    """The key of number ``n``; counters (incr) live in their own names, so sets never make them non-numeric."""
    return f"{prefix}{'n:' if counter else ''}{n}".encode()


class KeyChooser:
    """Draws key numbers in ``range(keyspace)``: uniform, or zipf with exponent ``s``.

    Zipf ranks are scattered over the key space by a fixed permutation (a
    multiplicative step coprime with it), so the hot keys are not all neighbours.
    """

    def __init__(self, keyspace: int, distribution: str, s: float, rng: random.Random) -> None:
        self.keyspace = keyspace
        self.rng = rng
        self.cdf: list[float] | None = None
        if distribution == "zipf":
            weights = (1.0 / (k ** s) for k in range(1, keyspace + 1))
            self.cdf = list(itertools.accumulate(weights))
            step = 2654435761 % keyspace or 1
            while _gcd(step, keyspace) != 1:
                step += 1
            self.step = step

    def next(self) -> int:
        if self.cdf is None:
            return self.rng.randrange(self.keyspace)
        rank = bisect.bisect_left(self.cdf, self.rng.random() * self.cdf[-1])
        return (min(rank, self.keyspace - 1) * self.step) % self.keyspace


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


class OpSource:
    """An endless, seeded stream of operations following a :class:`LoadSpec`."""

    def __init__(self, spec: LoadSpec, seed: int) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.keys = KeyChooser(spec.keyspace, spec.distribution, spec.zipf_s, self.rng)
        self.kinds = [k for k, _ in spec.mix]
        self.cum = list(itertools.accumulate(w for _, w in spec.mix))
        self.blob = random.Random(seed ^ 0x5EED).randbytes(max(spec.value_max, 1) + 4096)

    def value(self) -> bytes:
        lo, hi = self.spec.value_min, self.spec.value_max
        n = lo if lo == hi else self.rng.randint(lo, hi)
        start = self.rng.randrange(4096)
        return self.blob[start:start + n]

    def next(self) -> Op:
        spec = self.spec
        kind = self.kinds[bisect.bisect_right(self.cum, self.rng.randrange(self.cum[-1]))]
        prefix = spec.key_prefix
        if kind == MGET:
            keys = tuple(key_bytes(prefix, self.keys.next()) for _ in range(spec.mget_width))
            return Op(kind, keys, b"")
        key = key_bytes(prefix, self.keys.next(), counter=kind == INCR)
        return Op(kind, (key,), self.value() if kind == SET else b"")
