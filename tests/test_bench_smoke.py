"""Smoke tests of the benchmark scripts: they run on hoard bench's engine and report sane numbers
(never timings)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

from tests.support import ROOT, free_port, recv_until, require_binary, running


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


def test_floor_server_answers_what_memcaslap_sends() -> None:
    """The floor is only a fair ceiling if it does the requests' work: stored values come back."""
    port = free_port()
    with running([sys.executable, str(ROOT / "benchmarks" / "floor_server.py"), str(port)], port), \
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"set k1 5 0 3\r\nabc\r\n")
        assert recv_until(sock, b"\r\n") == b"STORED\r\n"
        sock.sendall(b"get k1\r\n")
        assert recv_until(sock, b"END\r\n") == b"VALUE k1 5 3\r\nabc\r\nEND\r\n"
        sock.sendall(b"get nope\r\n")
        assert recv_until(sock, b"END\r\n") == b"END\r\n"
        # several requests in one read, a data block split over two
        sock.sendall(b"get k1\r\nset k2 0 0 4\r\nwx")
        sock.sendall(b"yz\r\nget k2\r\n")
        want = b"VALUE k1 5 3\r\nabc\r\nEND\r\nSTORED\r\nVALUE k2 0 4\r\nwxyz\r\nEND\r\n"
        got = b""
        while len(got) < len(want):
            got += recv_until(sock, b"\r\n")
        assert got == want


def test_bench_server_floor_quick_json() -> None:
    require_binary("memcached")
    require_binary("memcaslap")
    out = run_script("bench_server.py", "--only", "nonpipelined", "--floor")
    assert {r["server"] for r in out["runs"]} == {"hoard", "memcached", "floor"}
    ratio = out["summary"]["floor_nonpipelined_ops_per_cpu_s_ratio"]
    assert isinstance(ratio, float) and ratio > 0
