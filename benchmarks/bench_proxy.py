#!/usr/bin/env python3
"""Benchmark ``hoard proxy`` against Debian's nutcracker in front of the same memcached.

One memcached (``-t 1``) serves both proxies; each proxy has the same
one-pool configuration (one server, default settings).  Both proxies run for
the whole benchmark pinned to CPU 0 (``taskset -c 0``); memcached and the load
generators run on CPU 1.  Each load is run against each proxy in turn,
alternating (hoard, nutcracker, hoard, ...) for ``--rounds`` rounds, so noise
on a shared machine hits both about equally.

Loads (90% get / 10% set, 100-byte values):

* ``nonpipelined``: ``memcaslap`` (libmemcached-tools), 50 connections, one
  request in flight each, one thread;
* ``pipelined``: ``benchmarks/loadgen.py`` (when present), P processes x C
  connections, 16 requests in flight per connection, over a preloaded 10k-key
  space.

For every run: ops/s, p50/p99 latency, the proxy's CPU seconds (utime + stime
from /proc/PID/stat) and ops per proxy CPU-second -- the fair comparison when
the generator, not the proxy, is the bottleneck.  The summary gives medians
over rounds and the ratio hoard/nutcracker (median of per-round ratios).

    .venv/bin/python benchmarks/bench_proxy.py --duration 10 --rounds 3
    .venv/bin/python benchmarks/bench_proxy.py --quick --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_server import (  # noqa: E402
    MEMASLAP_CFG,
    cpu_seconds,
    find_binary,
    free_port,
    memcached_argv,
    parse_memaslap,
    pin_prefix,
    stat_counts,
    wait_for_port,
)

try:
    from benchmarks import loadgen  # noqa: E402
except ImportError:  # written by another engineer; the pipelined load needs it
    loadgen = None  # type: ignore[assignment]

HOST = "127.0.0.1"
OURS = "hoard"
REFERENCE = "nutcracker"
LOADS = ("nonpipelined", "pipelined")


@dataclass
class Proxy:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def start(name: str, argv: list[str], port: int) -> Iterator[Proxy]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_for_port(port, proc)
        yield Proxy(name, port, proc)
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


def proxy_config(listen: int, backend: int) -> str:
    return f"bench:\n  listen: {HOST}:{listen}\n  servers:\n   - {HOST}:{backend}:1\n"


def run_memaslap(exe: str, port: int, args: argparse.Namespace, cfg_path: str) -> dict[str, Any]:
    secs = max(1, int(round(args.duration)))
    argv = [*pin_prefix(args.client_cpu), exe, "-s", f"{HOST}:{port}", "-c", str(args.memaslap_conns),
            "-T", "1", "-t", f"{secs}s", "-S", f"{secs}s", "-F", cfg_path, "-w", "1k",
            "-o", str(args.memaslap_overwrite)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    if proc.returncode != 0 and "Run time:" not in proc.stdout:
        raise RuntimeError(f"memcaslap failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}")
    return parse_memaslap(proc.stdout + proc.stderr)


def measure(proxy: Proxy, backend: int, load: str, rnd: int, args: argparse.Namespace, cfg_path: str,
            memaslap: str | None) -> dict[str, Any]:
    before = stat_counts(backend)
    cpu0 = cpu_seconds(proxy.pid)
    if load == "nonpipelined":
        assert memaslap is not None
        m = run_memaslap(memaslap, proxy.port, args, cfg_path)
        ops, elapsed = m["ops"], m["elapsed"]
        p50, p99 = m.get("p50_us", 0.0), m.get("p99_us", 0.0)
        extra: dict[str, Any] = {"generator": "memcaslap", "errors": None}
    else:
        r = loadgen.run_load(HOST, proxy.port, duration=args.duration, processes=args.processes,
                             connections=args.connections, depth=args.depth, keyspace=args.keys,
                             value_size=args.value_size, get_ratio=1.0 - args.set_ratio,
                             cpus=[args.client_cpu] if args.client_cpu is not None else None)
        s = r.summary()
        ops, elapsed, p50, p99 = r.ops, r.elapsed, s["p50_us"], s["p99_us"]
        extra = {"generator": "loadgen", "errors": r.errors, "depth": r.depth, "connections": r.connections}
    proxy_cpu = cpu_seconds(proxy.pid) - cpu0
    after = stat_counts(backend)
    hits = after.get("get_hits", 0) - before.get("get_hits", 0)
    misses = after.get("get_misses", 0) - before.get("get_misses", 0)
    return {
        "load": load, "proxy": proxy.name, "round": rnd, "ops": ops, "elapsed_s": round(elapsed, 3),
        "ops_per_sec": round(ops / elapsed, 1) if elapsed else 0.0,
        "p50_us": round(p50, 1), "p99_us": round(p99, 1),
        "proxy_cpu_s": round(proxy_cpu, 3),
        "proxy_cpu_util": round(proxy_cpu / elapsed, 3) if elapsed else None,
        "ops_per_cpu_s": round(ops / proxy_cpu, 1) if proxy_cpu > 0 else None,
        "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        **extra,
    }


METRICS = (("ops_per_sec", "ops/s", "higher is better"),
           ("ops_per_cpu_s", "ops per proxy CPU-s", "higher is better"),
           ("p50_us", "p50 latency (us)", "lower is better"),
           ("p99_us", "p99 latency (us)", "lower is better"))


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for load in LOADS:
        lr = [r for r in runs if r["load"] == load]
        if not lr:
            continue
        out[load] = {}
        for key, _label, _better in METRICS:
            ours = {r["round"]: r[key] for r in lr if r["proxy"] == OURS and r[key] is not None}
            ref = {r["round"]: r[key] for r in lr if r["proxy"] == REFERENCE and r[key] is not None}
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


RUN_HEADER = (f"{'load':<13}{'proxy':<11}{'rnd':>3} {'ops/s':>10} {'p50 us':>9} {'p99 us':>9} "
              f"{'proxy cpu%':>10} {'ops/proxy-cpu-s':>16} {'hit%':>6}")


def run_line(r: dict[str, Any]) -> str:
    util = r["proxy_cpu_util"] * 100 if r["proxy_cpu_util"] is not None else None
    hit = r["hit_ratio"] * 100 if r["hit_ratio"] is not None else None
    return (f"{r['load']:<13}{r['proxy']:<11}{r['round']:>3} {fmt(r['ops_per_sec'], 10)} "
            f"{fmt(r['p50_us'], 9)} {fmt(r['p99_us'], 9)} {fmt(util, 10)} {fmt(r['ops_per_cpu_s'], 16)} "
            f"{fmt(hit, 6, 1)}")


def summary_table(summary: dict[str, Any]) -> str:
    lines = [f"{'load':<13}{'metric':<22}{OURS + ' (median)':>16}{REFERENCE + ' (median)':>21}"
             f"{'ratio ' + OURS + '/' + REFERENCE:>23}   note"]
    for load, metrics in summary.items():
        for key, label, better in METRICS:
            m = metrics[key]
            ratio = f"{m['ratio']:.3f}" if m["ratio"] is not None else "-"
            lines.append(f"{load:<13}{label:<22}{fmt(m[OURS], 16)}{fmt(m[REFERENCE], 21)}{ratio:>23}   {better}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="benchmark hoard proxy against nutcracker (same memcached, "
                                            "same load, alternating)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=float, default=None, help="seconds per run (default 10; 1 with --quick)")
    p.add_argument("--rounds", type=int, default=None, help="runs per proxy per load (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="short smoke-test runs")
    p.add_argument("--only", choices=LOADS, help="run just one of the loads")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--memcached", default=None)
    p.add_argument("--nutcracker", default=None)
    p.add_argument("--memcaslap", default=None)
    p.add_argument("--proxy-cpu", type=int, default=0, help="CPU both proxies are pinned to")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU memcached and the load generators use")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--set-ratio", type=float, default=0.1)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=10_000, help="key space of the pipelined load (preloaded)")
    p.add_argument("--memaslap-conns", type=int, default=50)
    p.add_argument("--memaslap-overwrite", type=float, default=0.95)
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
        args.proxy_cpu = args.client_cpu = None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    progress = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=progress, flush=True)

    if args.proxy_cpu is not None:
        allowed = os.sched_getaffinity(0)
        if shutil.which("taskset") is None or not {args.proxy_cpu, args.client_cpu} <= allowed \
                or args.proxy_cpu == args.client_cpu:
            say(f"note: cannot pin to CPUs {args.proxy_cpu}/{args.client_cpu}; running unpinned")
            args.proxy_cpu = args.client_cpu = None
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    loads = [args.only] if args.only else [ld for ld in LOADS if ld != "pipelined" or loadgen is not None]
    memcached = args.memcached or find_binary("memcached")
    nutcracker = args.nutcracker or find_binary("nutcracker")
    memaslap = args.memcaslap or find_binary("memcaslap") or find_binary("memaslap")
    for what, exe in (("memcached", memcached), ("nutcracker", nutcracker)):
        if exe is None:
            print(f"bench_proxy: {what} is not installed (make system-deps)", file=sys.stderr)
            return 2
    if "nonpipelined" in loads and memaslap is None:
        print("bench_proxy: memcaslap is not installed (libmemcached-tools)", file=sys.stderr)
        return 2
    assert memcached is not None and nutcracker is not None
    config = {k: v for k, v in vars(args).items() if k not in ("json",)}
    config.update(loads=loads, cpu_count=os.cpu_count())
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hoard-bench-proxy-") as tmp, contextlib.ExitStack() as stack:
        cfg_path = os.path.join(tmp, "memaslap.cfg")
        Path(cfg_path).write_text(MEMASLAP_CFG.format(value=args.value_size, set_ratio=args.set_ratio,
                                                      get_ratio=round(1 - args.set_ratio, 6)))
        backend = free_port()
        stack.enter_context(start("memcached", memcached_argv(memcached, backend, args.client_cpu), backend))
        ours_port, ref_port = free_port(), free_port()
        ours_conf, ref_conf = Path(tmp, "hoard.yml"), Path(tmp, "nutcracker.yml")
        ours_conf.write_text(proxy_config(ours_port, backend))
        ref_conf.write_text(proxy_config(ref_port, backend))
        ours = stack.enter_context(start(OURS, [*pin_prefix(args.proxy_cpu), sys.executable, "-m", "scatterhoard",
                                                "proxy", "-c", str(ours_conf), "-s", str(free_port()),
                                                "-a", HOST, "-v", "4"], ours_port))
        ref = stack.enter_context(start(REFERENCE, [*pin_prefix(args.proxy_cpu), nutcracker, "-c", str(ref_conf),
                                                    "-s", str(free_port()), "-a", HOST, "-v", "4",
                                                    "-o", str(Path(tmp, "nutcracker.log"))], ref_port))
        say(f"memcached on {HOST}:{backend} (CPU {args.client_cpu}); {OURS} pid {ours.pid}, {REFERENCE} pid "
            f"{ref.pid} on CPU {args.proxy_cpu}; {args.rounds} round(s) x {args.duration:g}s")
        if "pipelined" in loads:
            loadgen.preload(HOST, backend, keyspace=args.keys, value_size=args.value_size)
        say(RUN_HEADER)
        for load in loads:
            for rnd in range(1, args.rounds + 1):
                for proxy in (ours, ref):
                    r = measure(proxy, backend, load, rnd, args, cfg_path, memaslap)
                    runs.append(r)
                    say(run_line(r))
    summary = summarize(runs)
    if args.json:
        print(json.dumps({"config": config, "runs": runs, "summary": summary}, indent=2))
    else:
        print()
        print(summary_table(summary))
        print("\nratio = median over rounds of (hoard / nutcracker) in the same round; nonpipelined latency "
              "is estimated from memcaslap's log2 histogram, pipelined latency is per batch of --depth requests.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
