#!/usr/bin/env python3
"""Benchmark ``hoard proxy`` redis pools against Debian's nutcracker in front of the same redis-server.

One redis-server serves both proxies; each proxy has the same one-pool
configuration (``redis: true``, one server).  Both proxies are pinned to CPU 0
(``taskset -c 0``) for the whole run; redis-server and ``redis-benchmark`` run
on CPU 1.  Each load runs against each proxy in turn, alternating (hoard,
nutcracker, hoard, ...) for ``--rounds`` rounds, so noise on a shared machine
hits both about equally.

Loads: ``redis-benchmark -c 50 -t set,get -d 100 -r 100000`` with ``-P 16``
(``pipelined``) and ``-P 1`` (``nonpipelined``); ``-n`` is fixed per load, so
a run lasts about ``-n / rate`` seconds.

For every run: ops/s (SET and GET requests / wall time of the run), the
p50/p99 latency redis-benchmark reports (the mean of its SET and GET
figures), the proxy's CPU seconds (utime + stime from /proc/PID/stat) and ops
per proxy CPU-second -- the fair comparison when the generator, not the
proxy, is the bottleneck.  The summary gives medians over rounds and the
ratio hoard/nutcracker (median of per-round ratios).

    .venv/bin/python benchmarks/bench_proxy_redis.py                 # 2 rounds, ~25 s
    .venv/bin/python benchmarks/bench_proxy_redis.py --quick --json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    HOST,
    OURS,
    Metric,
    Process,
    can_pin,
    cpu_seconds,
    find_binary,
    fmt,
    free_port,
    pin_prefix,
    report,
    start_process,
    summarize,
    summary_table,
)

REFERENCE = "nutcracker"
DEPTH = {"pipelined": 16, "nonpipelined": 1}


def proxy_config(listen: int, backend: int) -> str:
    return f"bench:\n  listen: {HOST}:{listen}\n  redis: true\n  servers:\n   - {HOST}:{backend}:1\n"


def run_benchmark(exe: str, port: int, load: str, args: argparse.Namespace) -> dict[str, Any]:
    """One redis-benchmark run: requests, wall time, latency percentiles (ms, mean of SET and GET)."""
    requests = args.requests_pipelined if load == "pipelined" else args.requests_nonpipelined
    argv = [*pin_prefix(args.client_cpu), exe, "-h", HOST, "-p", str(port), "-c", str(args.clients),
            "-n", str(requests), "-P", str(DEPTH[load]), "-t", "set,get", "-d", str(args.value_size),
            "-r", "100000", "--csv"]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    rows = [r for r in csv.DictReader(io.StringIO(proc.stdout)) if r.get("test") in ("SET", "GET")]
    if proc.returncode != 0 or len(rows) != 2:
        raise RuntimeError(f"redis-benchmark failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}")
    return {"ops": 2 * requests, "elapsed": elapsed,
            "rps": {r["test"]: float(r["rps"]) for r in rows},
            "p50_us": sum(float(r["p50_latency_ms"]) for r in rows) / 2 * 1000,
            "p99_us": sum(float(r["p99_latency_ms"]) for r in rows) / 2 * 1000}


def measure(proxy: Process, exe: str, load: str, rnd: int, args: argparse.Namespace) -> dict[str, Any]:
    cpu0 = cpu_seconds(proxy.pid)
    b = run_benchmark(exe, proxy.port, load, args)
    proxy_cpu = cpu_seconds(proxy.pid) - cpu0
    ops, elapsed = b["ops"], b["elapsed"]
    return {
        "load": load, "proxy": proxy.name, "round": rnd, "depth": DEPTH[load], "ops": ops,
        "elapsed_s": round(elapsed, 3), "ops_per_sec": round(ops / elapsed, 1),
        "set_rps": b["rps"]["SET"], "get_rps": b["rps"]["GET"],
        "p50_us": round(b["p50_us"], 1), "p99_us": round(b["p99_us"], 1),
        "proxy_cpu_s": round(proxy_cpu, 3), "proxy_cpu_util": round(proxy_cpu / elapsed, 3),
        "ops_per_cpu_s": round(ops / proxy_cpu, 1) if proxy_cpu > 0 else None,
    }


METRICS: tuple[Metric, ...] = (("ops_per_sec", "ops/s", "higher is better"),
                               ("ops_per_cpu_s", "ops per proxy CPU-s", "higher is better"),
                               ("p50_us", "p50 latency (us)", "lower is better"),
                               ("p99_us", "p99 latency (us)", "lower is better"))

RUN_HEADER = (f"{'load':<13}{'proxy':<11}{'rnd':>3} {'ops/s':>10} {'p50 us':>9} {'p99 us':>9} "
              f"{'proxy cpu%':>10} {'ops/proxy-cpu-s':>16}")


def run_line(r: dict[str, Any]) -> str:
    return (f"{r['load']:<13}{r['proxy']:<11}{r['round']:>3} {fmt(r['ops_per_sec'], 10)} "
            f"{fmt(r['p50_us'], 9)} {fmt(r['p99_us'], 9)} {fmt(r['proxy_cpu_util'] * 100, 10)} "
            f"{fmt(r['ops_per_cpu_s'], 16)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="benchmark hoard proxy redis pools against nutcracker (same "
                                            "redis-server, redis-benchmark, alternating)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=None, help="runs per proxy per load (default 2; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="short smoke-test runs (a tenth of the requests)")
    p.add_argument("--only", choices=tuple(DEPTH), help="run just one of the loads")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--requests-pipelined", type=int, default=200_000, help="-n of the -P 16 runs")
    p.add_argument("--requests-nonpipelined", type=int, default=40_000, help="-n of the -P 1 runs")
    p.add_argument("--clients", type=int, default=50, help="redis-benchmark -c")
    p.add_argument("--value-size", type=int, default=100, help="redis-benchmark -d")
    p.add_argument("--redis-server", default=None)
    p.add_argument("--redis-benchmark", default=None)
    p.add_argument("--nutcracker", default=None)
    p.add_argument("--proxy-cpu", type=int, default=0, help="CPU both proxies are pinned to")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU redis-server and redis-benchmark use")
    p.add_argument("--no-pin", action="store_true")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    if args.quick:
        args.requests_pipelined //= 10
        args.requests_nonpipelined //= 10
    if args.rounds < 1 or args.requests_pipelined < 1 or args.requests_nonpipelined < 1:
        p.error("--rounds and the request counts must be at least 1")
    if args.no_pin:
        args.proxy_cpu = args.client_cpu = None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    progress = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=progress, flush=True)

    if args.proxy_cpu is not None and not can_pin(args.proxy_cpu, args.client_cpu):
        say(f"note: cannot pin to CPUs {args.proxy_cpu}/{args.client_cpu}; running unpinned")
        args.proxy_cpu = args.client_cpu = None
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    loads = [args.only] if args.only else list(DEPTH)
    server = args.redis_server or find_binary("redis-server")
    bench = args.redis_benchmark or find_binary("redis-benchmark")
    nutcracker = args.nutcracker or find_binary("nutcracker")
    for what, exe in (("redis-server", server), ("redis-benchmark", bench), ("nutcracker", nutcracker)):
        if exe is None:
            print(f"bench_proxy_redis: {what} is not installed (make system-deps)", file=sys.stderr)
            return 2
    assert server is not None and bench is not None and nutcracker is not None
    config = {k: v for k, v in vars(args).items() if k not in ("json",)}
    config.update(loads=loads, cpu_count=os.cpu_count())
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hoard-bench-proxy-redis-") as tmp, contextlib.ExitStack() as stack:
        backend = free_port()
        stack.enter_context(start_process("redis-server", [
            *pin_prefix(args.client_cpu), server, "--port", str(backend), "--bind", HOST, "--save", "",
            "--appendonly", "no"], backend))
        ours_port, ref_port = free_port(), free_port()
        ours_conf, ref_conf = Path(tmp, "hoard.yml"), Path(tmp, "nutcracker.yml")
        ours_conf.write_text(proxy_config(ours_port, backend))
        ref_conf.write_text(proxy_config(ref_port, backend))
        ours = stack.enter_context(start_process(OURS, [*pin_prefix(args.proxy_cpu), sys.executable, "-m",
                                                        "scatterhoard", "proxy", "-c", str(ours_conf),
                                                        "-s", str(free_port()), "-a", HOST, "-v", "4"],
                                                 ours_port))
        ref = stack.enter_context(start_process(REFERENCE, [*pin_prefix(args.proxy_cpu), nutcracker, "-c",
                                                            str(ref_conf), "-s", str(free_port()), "-a", HOST,
                                                            "-v", "4", "-o", str(Path(tmp, "nutcracker.log"))],
                                                ref_port))
        say(f"redis-server on {HOST}:{backend} (CPU {args.client_cpu}); {OURS} pid {ours.pid}, {REFERENCE} pid "
            f"{ref.pid} on CPU {args.proxy_cpu}; {args.rounds} round(s)")
        say(RUN_HEADER)
        for load in loads:
            for rnd in range(1, args.rounds + 1):
                for proxy in (ours, ref):
                    r = measure(proxy, bench, load, rnd, args)
                    runs.append(r)
                    say(run_line(r))
    summary = summarize(runs, METRICS, "proxy", REFERENCE)
    report(args, config, runs, summary, summary_table(summary, METRICS, REFERENCE),
           "\nratio = median over rounds of (hoard / nutcracker) in the same round; pipelined = redis-benchmark "
           "-P 16, nonpipelined = -P 1 (50 connections, SET and GET, 100-byte values); latency is "
           "redis-benchmark's, the mean of its SET and GET percentiles.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
