"""Smoke test of benchmarks/bench_engines.py: it runs on hoard bench's engine against every engine and
reports sane numbers (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT

ENGINES = ["memory", "sqlite", "sqlite --durable", "tiered (memory+sqlite)"]


def test_bench_engines_quick_json() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_engines.py"), "--quick", "--duration",
                           "0.5", "--keys", "300", "--json"], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["config"]["generator"] == "hoard bench"
    assert [(r["engine"], r["op"]) for r in out["runs"]] == [(e, op) for e in ENGINES for op in ("set", "get")]
    for r in out["runs"]:
        assert r["ops"] > 0 and r["ops_per_sec"] > 0 and r["errors"] == 0, r
        if r["op"] == "get":
            assert r["hit_ratio"] == 1.0, r  # preloaded through the engine: every get a hit
    assert list(out["summary"]) == ENGINES
    for name, ops in out["summary"].items():
        for op in ("set", "get"):
            ratio = ops[op]["ratio"]
            assert isinstance(ratio, float) and ratio > 0, (name, op, ratio)
            if name == "memory":
                assert ratio == 1.0
