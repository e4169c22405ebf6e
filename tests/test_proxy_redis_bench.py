"""Smoke test of ``benchmarks/bench_proxy_redis.py``: it runs and reports sane numbers (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.support import ROOT, require_binary

pytestmark = pytest.mark.timeout(180)


def test_bench_proxy_redis_quick_json() -> None:
    for name in ("redis-server", "redis-benchmark", "nutcracker"):
        require_binary(name)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_proxy_redis.py"), "--quick",
                           "--requests-pipelined", "4000", "--requests-nonpipelined", "2000", "--json"],
                          capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    assert {(r["load"], r["proxy"]) for r in out["runs"]} == {
        (load, proxy) for load in ("nonpipelined", "pipelined") for proxy in ("hoard", "nutcracker")}
    for r in out["runs"]:
        assert r["ops"] == 2 * (400 if r["load"] == "pipelined" else 200), r  # --quick: a tenth of -n
        assert r["ops_per_sec"] > 0 and r["set_rps"] > 0 and r["get_rps"] > 0, r
        assert r["depth"] == (16 if r["load"] == "pipelined" else 1), r
    for metrics in out["summary"].values():
        assert metrics["ops_per_sec"]["ratio"] > 0
