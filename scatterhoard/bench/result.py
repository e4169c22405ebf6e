"""What a ``hoard bench`` run measured: counts per operation, the merged latency histogram, a timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .histogram import Histogram
from .workload import OPS

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass
class Interval:
    """One second (``--interval``) of the run, all workers together."""

    start: float  # seconds since the start of the run
    ops: int = 0
    errors: int = 0
    hist: Histogram = field(default_factory=Histogram)


@dataclass
class LoadResult:
    """The merged outcome of every worker process of one load run."""

    target: str = ""
    protocol: str = ""
    ops: int = 0
    hits: int = 0
    misses: int = 0
    errors: int = 0
    #: per operation name: [requests, hits, misses, errors]
    by_op: dict[str, list[int]] = field(default_factory=dict)
    elapsed: float = 0.0  # seconds, the longest worker's (first send to last reply)
    client_cpu: float = 0.0  # CPU seconds the worker processes used
    connections: int = 0
    depth: int = 1
    processes: int = 1
    rate: float | None = None  # the open-loop target rate, ops/s
    hist: Histogram = field(default_factory=Histogram)  # latency, nanoseconds
    timeline: list[Interval] = field(default_factory=list)
    interval: float = 1.0

    @property
    def ops_per_sec(self) -> float:
        return self.ops / self.elapsed if self.elapsed > 0 else 0.0

    def latency_us(self, p: float) -> float:
        return self.hist.percentile(p) / 1000.0

    @property
    def get_keys(self) -> int:
        """Keys asked for by get and mget requests (what memcached counts in ``cmd_get``)."""
        g = self.by_op.get("get", [0, 0, 0, 0])
        m = self.by_op.get("mget", [0, 0, 0, 0])
        return g[0] + m[1] + m[2]

    def add_worker(self, w: dict[str, Any]) -> None:
        """Fold one worker's report (see ``engine._work``) into this result."""
        self.ops += w["ops"]
        self.elapsed = max(self.elapsed, w["elapsed"])
        self.client_cpu += w["cpu"]
        self.connections += w["connections"]
        for name, counts in w["by_op"].items():
            mine = self.by_op.setdefault(name, [0, 0, 0, 0])
            for i in range(4):
                mine[i] += counts[i]
        self.hist.merge(Histogram.from_bytes(w["hist"]))
        for i, (ops, errors, hist) in enumerate(w["timeline"]):
            while len(self.timeline) <= i:
                self.timeline.append(Interval(len(self.timeline) * self.interval))
            iv = self.timeline[i]
            iv.ops += ops
            iv.errors += errors
            iv.hist.merge(Histogram.from_sparse(hist))
        self.hits = sum(c[1] for c in self.by_op.values())
        self.misses = sum(c[2] for c in self.by_op.values())
        self.errors = sum(c[3] for c in self.by_op.values())

    def summary(self) -> dict[str, Any]:
        """The JSON form (``--json``); latencies in microseconds."""
        h = self.hist
        lat = {f"p{p:g}": round(h.percentile(p) / 1000.0, 1) for p in PERCENTILES}
        lat.update(min=round(h.min / 1000.0, 1), max=round(h.max / 1000.0, 1), mean=round(h.mean / 1000.0, 1))
        return {
            "target": self.target, "protocol": self.protocol,
            "ops": self.ops, "ops_per_sec": round(self.ops_per_sec, 1), "elapsed_s": round(self.elapsed, 4),
            "hits": self.hits, "misses": self.misses, "errors": self.errors, "get_keys": self.get_keys,
            "by_op": {name: dict(zip(("requests", "hits", "misses", "errors"), c, strict=True))
                      for name, c in sorted(self.by_op.items(), key=lambda kv: OPS.index(kv[0]))},
            "latency_us": lat,
            "processes": self.processes, "connections": self.connections, "depth": self.depth,
            "rate": self.rate, "client_cpu_s": round(self.client_cpu, 3),
            "timeline": [{"t": round(iv.start, 3), "ops": iv.ops, "errors": iv.errors,
                          "p50_us": round(iv.hist.percentile(50) / 1000.0, 1),
                          "p99_us": round(iv.hist.percentile(99) / 1000.0, 1)} for iv in self.timeline],
        }

    def report(self) -> str:
        """The human form: throughput, counts and the latency percentiles."""
        lines = [f"{self.target} ({self.protocol}): {self.ops:,} ops in {self.elapsed:.2f} s = "
                 f"{self.ops_per_sec:,.0f} ops/s  ({self.processes} proc x "
                 f"{self.connections // max(1, self.processes)} conn x depth {self.depth}"
                 + (f", open loop at {self.rate:,.0f}/s" if self.rate else "") + ")",
                 f"  hits {self.hits:,}  misses {self.misses:,}  errors {self.errors:,}"
                 f"  generator CPU {self.client_cpu:.2f} s"]
        for name, c in sorted(self.by_op.items(), key=lambda kv: OPS.index(kv[0])):
            lines.append(f"  {name:<7}{c[0]:>12,} requests  {c[1]:>12,} hits  {c[2]:>10,} misses  "
                         f"{c[3]:>8,} errors")
        h = self.hist
        lines.append("  latency (us): " + "  ".join(f"p{p:g} {h.percentile(p) / 1000.0:,.1f}" for p in PERCENTILES)
                     + f"  max {h.max / 1000.0:,.1f}  mean {h.mean / 1000.0:,.1f}")
        return "\n".join(lines)
