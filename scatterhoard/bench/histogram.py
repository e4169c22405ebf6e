"""A log-bucket latency histogram in the style of HdrHistogram.

Values are non-negative integers (nanoseconds in ``hoard bench``).  Values
below ``2 * SUB`` get a bucket each (exact); above that, every power-of-two
range is cut into ``SUB`` equal sub-buckets, so a recorded value is known to
within 1/``SUB`` of itself (0.8 % with 7 sub-bucket bits) whatever its
magnitude, and the histogram has a fixed, small size.  Histograms of worker
processes merge by adding their counts (:meth:`Histogram.merge`); they travel
between processes as bytes (:meth:`Histogram.to_bytes`).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator
from typing import Final

SUB_BITS: Final = 7
SUB: Final = 1 << SUB_BITS
MAX_SHIFT: Final = 40  # values up to 2^48 ns (about 3 days) are bucketed; larger ones land in the last bucket
SIZE: Final = (MAX_SHIFT + 2) * SUB


def bucket_of(value: int) -> int:
    """The bucket index of ``value`` (monotonic in ``value``)."""
    if value < 2 * SUB:
        return value if value > 0 else 0
    shift = value.bit_length() - SUB_BITS - 1
    if shift > MAX_SHIFT:
        return SIZE - 1
    return shift * SUB + (value >> shift)


def bucket_range(index: int) -> tuple[int, int]:
    """The lowest and highest value that fall in bucket ``index``."""
    if index < 2 * SUB:
        return index, index
    shift = index // SUB - 1
    m = index - shift * SUB
    return m << shift, ((m + 1) << shift) - 1


class Histogram:
    """Counts of values per log bucket, plus the exact count, sum, min and max."""

    __slots__ = ("counts", "total", "sum", "min", "max")

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * SIZE))
        self.total = 0
        self.sum = 0
        self.min = 0
        self.max = 0

    def record(self, value: int, count: int = 1) -> None:
        if value < 0:
            value = 0
        if value < 2 * SUB:
            idx = value
        else:
            shift = value.bit_length() - SUB_BITS - 1
            idx = SIZE - 1 if shift > MAX_SHIFT else shift * SUB + (value >> shift)
        self.counts[idx] += count
        if self.total == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.total += count
        self.sum += value * count

    def merge(self, other: Histogram) -> None:
        if other.total == 0:
            return
        counts = self.counts
        for i, n in enumerate(other.counts):
            if n:
                counts[i] += n
        self.min = other.min if self.total == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.total += other.total
        self.sum += other.sum

    @property
    def mean(self) -> float:
        return self.sum / self.total if self.total else 0.0

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0..100): the highest value of the bucket holding that rank,
        clamped to the exact min and max. 0 when empty."""
        if self.total == 0:
            return 0
        if p >= 100:
            return self.max
        rank = min(self.total, max(1, math.ceil(p * self.total / 100)))
        seen = 0
        for i, n in enumerate(self.counts):
            if n:
                seen += n
                if seen >= rank:
                    return max(self.min, min(self.max, bucket_range(i)[1]))
        return self.max

    def percentiles(self, ps: Iterable[float]) -> dict[float, int]:
        return {p: self.percentile(p) for p in ps}

    def buckets(self) -> Iterator[tuple[int, int]]:
        """(highest value of the bucket, count) for every non-empty bucket, ascending."""
        for i, n in enumerate(self.counts):
            if n:
                yield bucket_range(i)[1], n

    def to_bytes(self) -> bytes:
        head = array("q", [self.total, self.sum, self.min, self.max])
        return head.tobytes() + self.counts.tobytes()

    def to_sparse(self) -> list[tuple[int, int]]:
        """(bucket index, count) of the non-empty buckets: small for a short interval."""
        return [(i, n) for i, n in enumerate(self.counts) if n]

    @classmethod
    def from_sparse(cls, pairs: Iterable[tuple[int, int]]) -> Histogram:
        """The inverse of :meth:`to_sparse`, with min/max/sum known to bucket precision."""
        h = cls()
        for idx, n in pairs:
            h.counts[idx] += n
            lo, hi = bucket_range(idx)
            if h.total == 0 or lo < h.min:
                h.min = lo
            h.max = max(h.max, hi)
            h.total += n
            h.sum += n * (lo + hi) // 2
        return h

    @classmethod
    def from_bytes(cls, data: bytes) -> Histogram:
        h = cls()
        head = array("q")
        head.frombytes(data[:32])
        h.total, h.sum, h.min, h.max = head
        h.counts = array("q")
        h.counts.frombytes(data[32:])
        if len(h.counts) != SIZE:
            raise ValueError(f"histogram of {len(h.counts)} buckets, expected {SIZE}")
        return h
