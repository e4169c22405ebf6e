"""``hoard bench ADDR --compare ADDR2``: the same load against two targets, alternating, and the ratios.

Rounds alternate A, B, A, B, ... so that noise on a shared machine falls on
both about equally; the ratio of each metric is the median of the per-round
ratios A/B (each A run paired with the B run right after it).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from typing import Any

from ..address import Address
from .engine import RunConfig, run_load
from .result import LoadResult

#: (name, how to read it off a result, which way is better)
METRICS: tuple[tuple[str, Callable[[LoadResult], float], str], ...] = (
    ("ops/s", lambda r: r.ops_per_sec, "higher"),
    ("p50 us", lambda r: r.latency_us(50), "lower"),
    ("p90 us", lambda r: r.latency_us(90), "lower"),
    ("p99 us", lambda r: r.latency_us(99), "lower"),
    ("p99.9 us", lambda r: r.latency_us(99.9), "lower"),
    ("max us", lambda r: r.hist.max / 1000.0, "lower"),
)


@dataclasses.dataclass
class Comparison:
    a: str
    b: str
    runs: list[tuple[int, LoadResult, LoadResult]]

    def medians(self) -> dict[str, tuple[float, float, float | None]]:
        """metric -> (median of A, median of B, median of the per-round ratios A/B)."""
        out: dict[str, tuple[float, float, float | None]] = {}
        for name, get, _better in METRICS:
            va = [get(ra) for _, ra, _rb in self.runs]
            vb = [get(rb) for _, _ra, rb in self.runs]
            ratios = [x / y for x, y in zip(va, vb, strict=True) if y]
            out[name] = (statistics.median(va), statistics.median(vb),
                         statistics.median(ratios) if ratios else None)
        return out

    def table(self) -> str:
        wa = max(len(self.a), 12) + 2
        wb = max(len(self.b), 12) + 2
        lines = [f"{'metric':<10}{self.a:>{wa}}{self.b:>{wb}}{'ratio A/B':>11}   (medians of "
                 f"{len(self.runs)} round(s))"]
        for (name, _get, better), (ma, mb, ratio) in zip(METRICS, self.medians().values(), strict=True):
            rt = f"{ratio:.3f}" if ratio is not None else "-"
            lines.append(f"{name:<10}{ma:>{wa},.1f}{mb:>{wb},.1f}{rt:>11}   {better} is better")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b,
            "rounds": [{"round": n, "a": ra.summary(), "b": rb.summary()} for n, ra, rb in self.runs],
            "medians": {name: {"a": round(ma, 2), "b": round(mb, 2),
                               "ratio": round(r, 4) if r is not None else None}
                        for name, (ma, mb, r) in self.medians().items()},
        }


def run_compare(cfg: RunConfig, other: Address, rounds: int,
                on_run: Callable[[int, LoadResult], None] | None = None,
                progress: Callable[[float, int, int], None] | None = None) -> Comparison:
    """``rounds`` x (A then B) with the same load; ``on_run`` sees each result as it comes."""
    cfg_b = dataclasses.replace(cfg, address=other)
    runs: list[tuple[int, LoadResult, LoadResult]] = []
    for n in range(1, rounds + 1):
        ra = run_load(cfg, progress)
        if on_run:
            on_run(n, ra)
        rb = run_load(cfg_b, progress)
        if on_run:
            on_run(n, rb)
        runs.append((n, ra, rb))
    return Comparison(str(cfg.address), str(other), runs)
