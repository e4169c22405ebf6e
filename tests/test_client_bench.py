"""Smoke test of the client benchmark: it runs and reports sane numbers (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT, require_binary


def test_bench_client_quick_json() -> None:
    require_binary("memcached")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_client.py"), "--quick", "--json", "--no-pin",
         "--ops", "300", "--many", "20"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    report = json.loads(out.stdout)
    medians = report["rates"]
    for name in ("scatterhoard Client (text)", "scatterhoard Client (meta)", "scatterhoard Client (binary)",
                 "scatterhoard AsyncClient (text)", "scatterhoard AsyncClient (meta)",
                 "scatterhoard AsyncClient (binary)"):
        assert all(medians[name][col] > 0 for col in ("set", "get", "get_many")), name
        if "Async" in name:
            assert medians[name]["get_concurrent"] > 0
