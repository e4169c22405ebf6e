"""Smoke test of benchmarks/bench_tls.py: it runs and every handshake is what it claims (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT, require_binary


def test_bench_tls_quick_json() -> None:
    require_binary("stunnel4")  # the comparison row; scripts/install-system-deps.sh installs it
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_tls.py"), "--quick", "--json",
                           "--threads", "2"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    rows = [(row["key"], row["version"]) for row in out["handshakes"]]
    assert rows == [(k, v) for k in ("RSA-2048", "ECDSA P-256") for v in ("TLS 1.2", "TLS 1.3")]
    for row in out["handshakes"]:
        for kind in ("full", "resumed"):
            assert row[kind]["count"] > 0, row
            assert row[kind]["unexpected"] == 0, row  # full ones were full, resumed ones resumed
            assert row[kind]["per_cpu_s"] > 0, row
    assert [(row["key"], row["version"]) for row in out["floor"]] == rows  # OpenSSL alone, in memory
    for row in out["floor"]:
        for kind in ("full", "resumed"):
            assert row[kind]["count"] > 0 and row[kind]["unexpected"] == 0, row
            assert row[kind]["cpu_ms"] > 0, row
    assert out["forwarding"]["key"] == "RSA-2048"
    for name in ("hoard tls", "stunnel4"):
        assert out["forwarding"][name]["mb_s"] > 0 and out["forwarding"][name]["mb_per_cpu_s"] > 0, name
