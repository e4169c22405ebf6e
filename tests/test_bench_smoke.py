"""Smoke test of the server benchmark: it runs and reports sane numbers (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks import loadgen
from tests.support import ROOT, hoard_server, require_binary


def test_loadgen_counts_against_hoard() -> None:
    with hoard_server() as port:
        loadgen.preload("127.0.0.1", port, keyspace=500, value_size=100)
        res = loadgen.run_load("127.0.0.1", port, duration=0.5, processes=2, connections=2, depth=16,
                               keyspace=500, value_size=100, get_ratio=0.9)
    assert res.ops > 0
    assert res.ops == res.batches * 16 == res.gets + res.sets
    assert res.errors == 0
    assert len(res.latencies) == res.batches
    assert res.percentile(50) > 0


def test_count_replies_across_split_reads() -> None:
    stream = b"VALUE bench:1 0 3\r\nvvv\r\nEND\r\nSTORED\r\nEND\r\nSERVER_ERROR out of memory\r\n" * 3
    for size in (1, 2, 3, 5, 7, 11):
        carry = b""
        total = errors = 0
        for i in range(0, len(stream), size):
            chunk = stream[i:i + size]
            n, e = loadgen.count_replies(carry, chunk)
            total += n
            errors += e
            carry = (carry + chunk)[-loadgen._CARRY:]
        assert (total, errors) == (12, 3)


def test_bench_server_quick_json() -> None:
    require_binary("memcached")
    require_binary("memcaslap")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_server.py"), "--quick",
                           "--rounds", "1", "--duration", "1", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {(r["load"], r["server"]) for r in out["runs"]} == {
        (load, server) for load in ("nonpipelined", "pipelined") for server in ("hoard", "memcached")}
    for r in out["runs"]:
        assert r["ops"] > 0, r
        assert r["ops_per_sec"] > 0, r
    for load, metrics in out["summary"].items():
        for name in ("ops_per_sec", "ops_per_cpu_s"):
            ratio = metrics[name]["ratio"]
            assert isinstance(ratio, float) and ratio > 0, (load, name, ratio)
