"""Smoke tests of the benchmark scripts: they run on hoard bench's engine and report sane numbers
(never timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.support import ROOT, require_binary


def run_script(name: str, *argv: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--quick", "--rounds", "1",
                           "--duration", "1", "--json", *argv],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_bench_server_quick_json() -> None:
    require_binary("memcached")
    require_binary("memcaslap")
    out = run_script("bench_server.py")
    assert {(r["load"], r["server"]) for r in out["runs"]} == {
        (load, server) for load in ("nonpipelined", "pipelined") for server in ("hoard", "memcached")}
    for r in out["runs"]:
        assert r["ops"] > 0, r
        assert r["ops_per_sec"] > 0, r
        if r["load"] == "pipelined":
            assert r["generator"] == "hoard bench" and r["errors"] == 0, r
            assert r["depth"] == 16 and r["connections"] == 50, r
            assert r["hit_ratio"] == 1.0, r  # the key space was preloaded through the engine
            assert r["client_cpu_util"] > 0, r
        else:
            assert r["generator"] == "memcaslap", r
    for load, metrics in out["summary"].items():
        for name in ("ops_per_sec", "ops_per_cpu_s"):
            ratio = metrics[name]["ratio"]
            assert isinstance(ratio, float) and ratio > 0, (load, name, ratio)


def test_bench_proxy_pipelined_quick_json() -> None:
    require_binary("memcached")
    require_binary("nutcracker")
    out = run_script("bench_proxy.py", "--only", "pipelined")
    assert {(r["load"], r["proxy"]) for r in out["runs"]} == {("pipelined", "hoard"), ("pipelined", "nutcracker")}
    for r in out["runs"]:
        assert r["ops"] > 0 and r["errors"] == 0 and r["generator"] == "hoard bench", r
        assert r["hit_ratio"] == 1.0, r
    ratio = out["summary"]["pipelined"]["ops_per_cpu_s"]["ratio"]
    assert isinstance(ratio, float) and ratio > 0
