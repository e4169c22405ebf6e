#!/usr/bin/env python3
"""Benchmark ``hoard server`` against Debian's memcached, same load, same run.

Both servers run for the whole benchmark, pinned to CPU 0 (``taskset -c 0``);
the load generators run on CPU 1. Each load is run against each server in
turn, alternating (hoard, memcached, hoard, memcached, ...) for ``--rounds``
rounds, so that noise on a shared machine hits both about equally.

Loads (90% get / 10% set, ~100-byte values):

* ``nonpipelined``: ``memcaslap`` (libmemcached-tools), 50 connections, one
  request in flight per connection, one thread. memcaslap only gets keys it
  has already set, so its gets hit; ``-o`` (overwrite proportion) bounds how
  many new keys its sets create (the key space grows by about
  (1 - overwrite) x sets). Latency percentiles are estimated from its log2
  latency histogram (interpolated inside the power-of-two bucket).
* ``pipelined``: ``benchmarks/loadgen.py``, P processes x C connections, each
  connection keeping 16 requests in flight (batch of 16, read 16 replies,
  repeat) over a 10k-key space preloaded before the first round. Latency is
  per batch (the round trip of the 16 requests).

For every run: ops/s, p50/p99 latency, the server's CPU seconds (utime +
stime from /proc/PID/stat, whole process) and ops per server CPU-second,
which stays a fair comparison when the generator is the bottleneck. The
summary gives the median over rounds for each server and the ratio
hoard/memcached (median of the per-round ratios).

    .venv/bin/python benchmarks/bench_server.py --duration 10 --rounds 3
    .venv/bin/python benchmarks/bench_server.py --quick --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import loadgen  # noqa: E402

HOST = "127.0.0.1"
OURS = "hoard"
REFERENCE = "memcached"
LOADS = ("nonpipelined", "pipelined")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes and measurements ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode} before listening: {err.strip()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces
    return (int(fields[14 - 3]) + int(fields[15 - 3])) / CLK_TCK


def pin_prefix(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def start_server(name: str, argv: list[str], port: int) -> Iterator[Server]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_for_port(port, proc)
        yield Server(name, port, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def memcached_argv(exe: str, port: int, cpu: int | None) -> list[str]:
    argv = [*pin_prefix(cpu), exe, "-l", HOST, "-p", str(port), "-U", "0", "-t", "1", "-m", "1024", "-c", "4096"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    return argv


def hoard_argv(port: int, cpu: int | None) -> list[str]:
    return [*pin_prefix(cpu), sys.executable, "-m", "scatterhoard", "server", "-l", HOST, "-p", str(port),
            "-m", "1024", "-c", "4096"]


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}")
                                       if os.path.exists(p)), None)


# -- memcaslap ------------------------------------------------------------------------------------


MEMASLAP_CFG = """\
key
16 16 1
value
{value} {value} 1
cmd
0 {set_ratio}
1 {get_ratio}
"""


def log2_percentile(hist: dict[int, int], p: float, lo: float, hi: float) -> float:
    """Percentile from memaslap's log2 histogram (bucket r holds (2^(r-1), 2^r] us)."""
    total = sum(hist.values())
    if total == 0:
        return 0.0
    target = p / 100.0 * total
    seen = 0
    for r in sorted(hist):
        n = hist[r]
        if n and seen + n >= target:
            frac = (target - seen) / n
            low = 2.0 ** (r - 1) if r > 0 else 0.0
            value = low + (2.0 ** r - low) * frac if r <= 1 else low * 2.0 ** frac  # geometric inside
            return max(lo, min(hi, value))
        seen += n
    return hi


def parse_memaslap(out: str) -> dict[str, Any]:
    """The totals and latency of a memcaslap run (``-S`` makes it print the latency stats)."""
    out = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out)
    m = re.search(r"Run time:\s*([\d.]+)s\s+Ops:\s*(\d+)\s+TPS:\s*(\d+)", out)
    if not m:
        raise RuntimeError(f"cannot parse memcaslap output:\n{out[-2000:]}")
    res: dict[str, Any] = {"elapsed": float(m.group(1)), "ops": int(m.group(2)), "tps": int(m.group(3))}
    for k in ("cmd_get", "cmd_set", "get_misses"):
        mm = re.search(rf"^{k}:\s*(\d+)", out, re.M)
        if mm:
            res[k] = int(mm.group(1))
    block = re.search(r"Total Statistics \((\d+) events\)(.*?)(?:\n\s*\n|\Z)", out, re.S)
    if block:
        body = block.group(2)
        vals = {k: float(v) for k, v in re.findall(r"^\s*(Min|Max|Avg):\s*([\d.]+)", body, re.M)}
        hist: dict[int, int] = {}
        dist = body.split("Log2 Dist:", 1)[-1]
        for row in re.finditer(r"^\s*(\d+):((?:\s+\d+)+)\s*$", dist, re.M):
            base = int(row.group(1))
            for i, n in enumerate(row.group(2).split()):
                hist[base + i] = hist.get(base + i, 0) + int(n)
        lo, hi = vals.get("Min", 0.0), vals.get("Max", 0.0)
        res["avg_us"] = vals.get("Avg", 0.0)
        res["p50_us"] = log2_percentile(hist, 50, lo, hi)
        res["p99_us"] = log2_percentile(hist, 99, lo, hi)
        res["max_us"] = hi
    return res


def run_memaslap(exe: str, port: int, args: argparse.Namespace, cfg_path: str) -> dict[str, Any]:
    secs = max(1, int(round(args.duration)))
    argv = [*pin_prefix(args.client_cpu), exe, "-s", f"{HOST}:{port}", "-c", str(args.memaslap_conns),
            "-T", "1", "-t", f"{secs}s", "-S", f"{secs}s", "-F", cfg_path, "-w", "1k",
            "-o", str(args.memaslap_overwrite)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    if proc.returncode != 0 and "Run time:" not in proc.stdout:
        raise RuntimeError(f"memcaslap failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}")
    return parse_memaslap(proc.stdout + proc.stderr)


# -- one measured run -----------------------------------------------------------------------------


def stat_counts(port: int) -> dict[str, int]:
    try:
        st = loadgen.server_stats(HOST, port)
    except OSError:
        return {}
    return {k: int(st[k]) for k in ("cmd_get", "cmd_set", "get_hits", "get_misses", "curr_items")
            if k in st and st[k].isdigit()}


def measure(server: Server, load: str, rnd: int, args: argparse.Namespace, cfg_path: str,
            memaslap: str | None) -> dict[str, Any]:
    before = stat_counts(server.port)
    cpu0 = cpu_seconds(server.pid)
    if load == "nonpipelined":
        assert memaslap is not None
        m = run_memaslap(memaslap, server.port, args, cfg_path)
        ops, elapsed = m["ops"], m["elapsed"]
        p50, p99 = m.get("p50_us", 0.0), m.get("p99_us", 0.0)
        client_cpu = None
        extra = {"avg_us": m.get("avg_us"), "max_us": m.get("max_us"), "generator": "memcaslap"}
    else:
        r = loadgen.run_load(HOST, server.port, duration=args.duration, processes=args.processes,
                             connections=args.connections, depth=args.depth, keyspace=args.keys,
                             value_size=args.value_size, get_ratio=1.0 - args.set_ratio,
                             cpus=[args.client_cpu] if args.client_cpu is not None else None)
        s = r.summary()
        ops, elapsed, p50, p99 = r.ops, r.elapsed, s["p50_us"], s["p99_us"]
        client_cpu = r.client_cpu
        extra = {"max_us": s["max_us"], "errors": r.errors, "generator": "loadgen",
                 "connections": r.connections, "depth": r.depth}
    server_cpu = cpu_seconds(server.pid) - cpu0
    after = stat_counts(server.port)
    delta = {k: after[k] - before.get(k, 0) for k in after if k != "curr_items"}
    hits, misses = delta.get("get_hits", 0), delta.get("get_misses", 0)
    return {
        "load": load, "server": server.name, "round": rnd, "ops": ops, "elapsed_s": round(elapsed, 3),
        "ops_per_sec": round(ops / elapsed, 1) if elapsed else 0.0,
        "p50_us": round(p50, 1), "p99_us": round(p99, 1),
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_util": round(server_cpu / elapsed, 3) if elapsed else None,
        "client_cpu_util": round(client_cpu / elapsed, 3) if client_cpu is not None and elapsed else None,
        "ops_per_cpu_s": round(ops / server_cpu, 1) if server_cpu > 0 else None,
        "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        "curr_items": after.get("curr_items"),
        **extra,
    }


# -- summary and output -----------------------------------------------------------------------------


METRICS = (("ops_per_sec", "ops/s", "higher is better"),
           ("p50_us", "p50 latency (us)", "lower is better"),
           ("p99_us", "p99 latency (us)", "lower is better"),
           ("ops_per_cpu_s", "ops per server CPU-s", "higher is better"))


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for load in LOADS:
        lr = [r for r in runs if r["load"] == load]
        if not lr:
            continue
        out[load] = {}
        for key, _label, _better in METRICS:
            ours = {r["round"]: r[key] for r in lr if r["server"] == OURS and r[key] is not None}
            ref = {r["round"]: r[key] for r in lr if r["server"] == REFERENCE and r[key] is not None}
            ratios = [ours[k] / ref[k] for k in ours if k in ref and ref[k]]
            out[load][key] = {
                OURS: statistics.median(ours.values()) if ours else None,
                REFERENCE: statistics.median(ref.values()) if ref else None,
                "ratio": round(statistics.median(ratios), 4) if ratios else None,
            }
    return out


def fmt(v: Any, width: int, prec: int = 0) -> str:
    if v is None:
        return "-".rjust(width)
    if isinstance(v, float | int):
        return f"{v:,.{prec}f}".rjust(width)
    return str(v).rjust(width)


RUN_HEADER = (f"{'load':<13}{'server':<10}{'rnd':>3} {'ops/s':>10} {'p50 us':>9} {'p99 us':>9} "
              f"{'srv cpu%':>8} {'gen cpu%':>8} {'ops/srv-cpu-s':>14} {'hit%':>6}")


def run_line(r: dict[str, Any]) -> str:
    util = r["server_cpu_util"] * 100 if r["server_cpu_util"] is not None else None
    gen = r["client_cpu_util"] * 100 if r["client_cpu_util"] is not None else None
    hit = r["hit_ratio"] * 100 if r["hit_ratio"] is not None else None
    return (f"{r['load']:<13}{r['server']:<10}{r['round']:>3} {fmt(r['ops_per_sec'], 10)} "
            f"{fmt(r['p50_us'], 9)} {fmt(r['p99_us'], 9)} {fmt(util, 8)} {fmt(gen, 8)} "
            f"{fmt(r['ops_per_cpu_s'], 14)} {fmt(hit, 6, 1)}")


def summary_table(summary: dict[str, Any]) -> str:
    lines = [f"{'load':<13}{'metric':<22}{OURS + ' (median)':>16}{REFERENCE + ' (median)':>20}"
             f"{'ratio ' + OURS + '/' + REFERENCE:>22}   note"]
    for load, metrics in summary.items():
        for key, label, better in METRICS:
            m = metrics[key]
            ratio = f"{m['ratio']:.3f}" if m["ratio"] is not None else "-"
            lines.append(f"{load:<13}{label:<22}{fmt(m[OURS], 16)}{fmt(m[REFERENCE], 20)}{ratio:>22}   {better}")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="benchmark hoard server against memcached (same load, alternating)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=float, default=None, help="seconds per run (default 10; 1 with --quick)")
    p.add_argument("--rounds", type=int, default=None, help="runs per server per load (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="short smoke-test runs")
    p.add_argument("--only", choices=LOADS, help="run just one of the loads")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout "
                   "(progress goes to stderr)")
    p.add_argument("--memcached", default=None, help="memcached binary (default: from PATH)")
    p.add_argument("--memcaslap", default=None, help="memcaslap binary (default: from PATH)")
    p.add_argument("--server-cpu", type=int, default=0, help="CPU both servers are pinned to")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU the load generators are pinned to")
    p.add_argument("--no-pin", action="store_true", help="do not pin anything to CPUs")
    p.add_argument("--set-ratio", type=float, default=0.1, help="share of sets (the rest are gets)")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=10_000, help="key space of the pipelined load (preloaded)")
    p.add_argument("--memaslap-conns", type=int, default=50)
    p.add_argument("--memaslap-overwrite", type=float, default=0.95,
                   help="memcaslap -o: share of its sets that overwrite an existing key")
    p.add_argument("--processes", type=int, default=2, help="pipelined generator processes")
    p.add_argument("--connections", type=int, default=16, help="connections per generator process")
    p.add_argument("--depth", type=int, default=16, help="requests in flight per connection")
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 1.0 if args.quick else 10.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.duration <= 0 or args.rounds < 1:
        p.error("--duration must be positive and --rounds at least 1")
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    return args


def check_pinning(args: argparse.Namespace, say: Any) -> None:
    if args.server_cpu is None:
        return
    allowed = os.sched_getaffinity(0)
    if shutil.which("taskset") is None or not {args.server_cpu, args.client_cpu} <= allowed \
            or args.server_cpu == args.client_cpu:
        say(f"note: cannot pin to CPUs {args.server_cpu}/{args.client_cpu} (allowed: {sorted(allowed)}, "
            "taskset needed); running unpinned")
        args.server_cpu = args.client_cpu = None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    progress = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=progress, flush=True)

    check_pinning(args, say)
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})  # this process (and memcaslap's parent) off the server CPU
    loads = [args.only] if args.only else list(LOADS)
    memcached = args.memcached or find_binary("memcached")
    memaslap = args.memcaslap or find_binary("memcaslap") or find_binary("memaslap")
    if memcached is None:
        print("bench_server: memcached is not installed (make system-deps)", file=sys.stderr)
        return 2
    if "nonpipelined" in loads and memaslap is None:
        print("bench_server: memcaslap is not installed (libmemcached-tools)", file=sys.stderr)
        return 2

    config = {k: v for k, v in vars(args).items() if k not in ("json", "memcached", "memcaslap")}
    config.update(memcached=memcached, memcaslap=memaslap, loads=loads, cpu_count=os.cpu_count(),
                  memcached_version=subprocess.run([memcached, "-V"], capture_output=True,
                                                   text=True).stdout.strip())
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hoard-bench-") as tmp:
        cfg_path = os.path.join(tmp, "memaslap.cfg")
        with open(cfg_path, "w") as f:
            f.write(MEMASLAP_CFG.format(value=args.value_size, set_ratio=args.set_ratio,
                                        get_ratio=round(1 - args.set_ratio, 6)))
        ours_port, ref_port = free_port(), free_port()
        with start_server(OURS, hoard_argv(ours_port, args.server_cpu), ours_port) as ours, \
                start_server(REFERENCE, memcached_argv(memcached, ref_port, args.server_cpu), ref_port) as ref:
            servers = (ours, ref)
            say(f"{OURS} pid {ours.pid} port {ours.port}; {REFERENCE} pid {ref.pid} port {ref.port}; "
                f"servers on CPU {args.server_cpu}, generators on CPU {args.client_cpu}; "
                f"{args.rounds} round(s) x {args.duration:g}s")
            if "pipelined" in loads:
                for srv in servers:
                    loadgen.preload(HOST, srv.port, keyspace=args.keys, value_size=args.value_size)
            say(RUN_HEADER)
            for load in loads:
                for rnd in range(1, args.rounds + 1):
                    for srv in servers:
                        r = measure(srv, load, rnd, args, cfg_path, memaslap)
                        runs.append(r)
                        say(run_line(r))
    summary = summarize(runs)
    if args.json:
        print(json.dumps({"config": config, "runs": runs, "summary": summary}, indent=2))
    else:
        print()
        print(summary_table(summary))
        print("\nratio = median over rounds of (hoard / memcached) for the same round; "
              "nonpipelined latency is estimated from memcaslap's log2 histogram, "
              "pipelined latency is per batch of --depth requests.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
