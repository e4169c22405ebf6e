"""Smoke test of benchmarks/bench_tls.py: it runs and every handshake is what it claims (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT


def test_bench_tls_quick_json() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_tls.py"), "--quick", "--json",
                           "--threads", "2"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [row["version"] for row in out["handshakes"]] == ["TLS 1.2", "TLS 1.3"]
    for row in out["handshakes"]:
        for kind in ("full", "resumed"):
            assert row[kind]["count"] > 0, row
            assert row[kind]["unexpected"] == 0, row  # full ones were full, resumed ones resumed
    assert out["forwarding"]["hoard tls"]["mb_s"] > 0
