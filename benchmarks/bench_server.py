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
* ``pipelined``: ``hoard bench``'s engine (:mod:`scatterhoard.bench`), P
  processes x C connections, each connection keeping 16 requests in flight
  (a new request goes out as each reply comes back) over a 10k-key space
  preloaded before the first round. Latency is per request, from its send to
  its reply.

For every run: ops/s, p50/p99 latency, the server's CPU seconds (utime +
stime from /proc/PID/stat, whole process) and ops per server CPU-second,
which stays a fair comparison when the generator is the bottleneck. The
summary gives the median over rounds for each server and the ratio
hoard/memcached (median of the per-round ratios).

``--floor`` adds a third server to the non-pipelined load,
``benchmarks/floor_server.py``: a uvloop protocol with one dict of ready-made
get replies and none of a cache's work (no expiry, LRU, CAS, stats or error
handling). Its ratio to memcached, from the same rounds, is about the ceiling
for any server on CPython + uvloop.

    .venv/bin/python benchmarks/bench_server.py --duration 10 --rounds 3
    .venv/bin/python benchmarks/bench_server.py --quick --json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    HOST,
    LOADS,
    OURS,
    Metric,
    Process,
    add_load_options,
    can_pin,
    cpu_seconds,
    find_binary,
    fmt,
    free_port,
    memcached_argv,
    pin_prefix,
    preload_keys,
    report,
    run_load,
    settle_run_length,
    start_process,
    stat_counts,
    summarize,
    summary_table,
    write_memaslap_cfg,
)

REFERENCE = "memcached"
FLOOR = "floor"


# -- processes --------------------------------------------------------------------------------------


def hoard_argv(port: int, cpu: int | None) -> list[str]:
    return [*pin_prefix(cpu), sys.executable, "-m", "scatterhoard", "server", "-l", HOST, "-p", str(port),
            "-m", "1024", "-c", "4096"]


def floor_argv(port: int, cpu: int | None) -> list[str]:
    return [*pin_prefix(cpu), sys.executable, str(ROOT / "benchmarks" / "floor_server.py"), str(port)]


def floor_ratio(runs: list[dict[str, Any]]) -> float | None:
    """Median over rounds of floor / memcached in ops per server CPU-second (non-pipelined)."""
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        if r["load"] == "nonpipelined" and r["ops_per_cpu_s"]:
            by_round.setdefault(r["round"], {})[r["server"]] = r["ops_per_cpu_s"]
    ratios = [v[FLOOR] / v[REFERENCE] for v in by_round.values() if FLOOR in v and REFERENCE in v]
    return round(statistics.median(ratios), 4) if ratios else None


def measure(server: Process, load: str, rnd: int, args: argparse.Namespace, cfg_path: str,
            memaslap: str | None) -> dict[str, Any]:
    before = stat_counts(server.port)
    cpu0 = cpu_seconds(server.pid)
    g = run_load(load, server.port, args, cfg_path, memaslap)
    if g.generator == "memcaslap":
        extra: dict[str, Any] = {"avg_us": g.avg_us, "max_us": g.max_us, "generator": g.generator}
    else:
        extra = {"max_us": g.max_us, "errors": g.errors, "generator": g.generator,
                 "connections": g.connections, "depth": g.depth}
    ops, elapsed, client_cpu = g.ops, g.elapsed, g.client_cpu
    server_cpu = cpu_seconds(server.pid) - cpu0
    after = stat_counts(server.port)
    delta = {k: after[k] - before.get(k, 0) for k in after if k != "curr_items"}
    hits, misses = delta.get("get_hits", 0), delta.get("get_misses", 0)
    return {
        "load": load, "server": server.name, "round": rnd, "ops": ops, "elapsed_s": round(elapsed, 3),
        "ops_per_sec": round(ops / elapsed, 1) if elapsed else 0.0,
        "p50_us": round(g.p50_us, 1), "p99_us": round(g.p99_us, 1),
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_util": round(server_cpu / elapsed, 3) if elapsed else None,
        "client_cpu_util": round(client_cpu / elapsed, 3) if client_cpu is not None and elapsed else None,
        "ops_per_cpu_s": round(ops / server_cpu, 1) if server_cpu > 0 else None,
        "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        "curr_items": after.get("curr_items"),
        **extra,
    }


# -- summary and output -----------------------------------------------------------------------------


METRICS: tuple[Metric, ...] = (("ops_per_sec", "ops/s", "higher is better"),
                               ("p50_us", "p50 latency (us)", "lower is better"),
                               ("p99_us", "p99 latency (us)", "lower is better"),
                               ("ops_per_cpu_s", "ops per server CPU-s", "higher is better"))

RUN_HEADER = (f"{'load':<13}{'server':<10}{'rnd':>3} {'ops/s':>10} {'p50 us':>9} {'p99 us':>9} "
              f"{'srv cpu%':>8} {'gen cpu%':>8} {'ops/srv-cpu-s':>14} {'hit%':>6}")


def run_line(r: dict[str, Any]) -> str:
    util = r["server_cpu_util"] * 100 if r["server_cpu_util"] is not None else None
    gen = r["client_cpu_util"] * 100 if r["client_cpu_util"] is not None else None
    hit = r["hit_ratio"] * 100 if r["hit_ratio"] is not None else None
    return (f"{r['load']:<13}{r['server']:<10}{r['round']:>3} {fmt(r['ops_per_sec'], 10)} "
            f"{fmt(r['p50_us'], 9)} {fmt(r['p99_us'], 9)} {fmt(util, 8)} {fmt(gen, 8)} "
            f"{fmt(r['ops_per_cpu_s'], 14)} {fmt(hit, 6, 1)}")


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
    p.add_argument("--floor", action="store_true", help="also run benchmarks/floor_server.py (a bare uvloop "
                   "dict server) in the non-pipelined load, as the ceiling for this stack")
    add_load_options(p, set_ratio_help="share of sets (the rest are gets)",
                     overwrite_help="memcaslap -o: share of its sets that overwrite an existing key")
    args = p.parse_args(argv)
    settle_run_length(p, args)
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    return args


def check_pinning(args: argparse.Namespace, say: Any) -> None:
    if args.server_cpu is None:
        return
    if not can_pin(args.server_cpu, args.client_cpu):
        say(f"note: cannot pin to CPUs {args.server_cpu}/{args.client_cpu} "
            f"(allowed: {sorted(os.sched_getaffinity(0))}, taskset needed); running unpinned")
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
        cfg_path = write_memaslap_cfg(tmp, args)
        ours_port, ref_port = free_port(), free_port()
        with contextlib.ExitStack() as stack:
            ours = stack.enter_context(start_process(OURS, hoard_argv(ours_port, args.server_cpu), ours_port))
            ref = stack.enter_context(start_process(REFERENCE, memcached_argv(memcached, ref_port, args.server_cpu),
                                                    ref_port))
            servers = (ours, ref)
            floor = None
            if args.floor and "nonpipelined" in loads:
                floor_port = free_port()
                floor = stack.enter_context(start_process(FLOOR, floor_argv(floor_port, args.server_cpu), floor_port))
            say(f"{OURS} pid {ours.pid} port {ours.port}; {REFERENCE} pid {ref.pid} port {ref.port}; "
                + (f"{FLOOR} pid {floor.pid} port {floor.port}; " if floor else "")
                + f"servers on CPU {args.server_cpu}, generators on CPU {args.client_cpu}; "
                f"{args.rounds} round(s) x {args.duration:g}s")
            if "pipelined" in loads:
                for srv in servers:
                    preload_keys(srv.port, args)
            say(RUN_HEADER)
            for load in loads:
                for rnd in range(1, args.rounds + 1):
                    for srv in (*servers, floor) if floor and load == "nonpipelined" else servers:
                        r = measure(srv, load, rnd, args, cfg_path, memaslap)
                        runs.append(r)
                        say(run_line(r))
    summary = summarize(runs, METRICS, "server", REFERENCE)
    table = summary_table(summary, METRICS, REFERENCE)
    note = ("\nratio = median over rounds of (hoard / memcached) for the same round; "
            "nonpipelined latency is estimated from memcaslap's log2 histogram, "
            "pipelined latency is per request (hoard bench).")
    if args.floor and "nonpipelined" in loads:
        summary["floor_nonpipelined_ops_per_cpu_s_ratio"] = ratio = floor_ratio(runs)
        note += (f"\nfloor (benchmarks/floor_server.py, a bare uvloop dict server) / memcached, "
                 f"nonpipelined ops per server CPU-s: {fmt(ratio, 0, 3).strip()} (median over rounds)")
    report(args, config, runs, summary, table, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
