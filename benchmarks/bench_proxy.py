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
* ``pipelined``: ``hoard bench``'s engine (:mod:`scatterhoard.bench`), P
  processes x C connections, 16 requests in flight per connection, over a
  preloaded 10k-key space; latency per request.

With ``--binary`` hoard proxy's clients speak the binary protocol (memcaslap
``-B``, ``hoard bench --binary``) while nutcracker, which has none, stays the
text reference: what a binary client gets from hoard against what a text
client gets from nutcracker.

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
import os
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

REFERENCE = "nutcracker"


def proxy_config(listen: int, backend: int) -> str:
    return f"bench:\n  listen: {HOST}:{listen}\n  servers:\n   - {HOST}:{backend}:1\n"


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (``hoard proxy --workers``: the workers)."""
    total = cpu_seconds(pid)
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = (child / "stat").read_text()
                if int(text[text.rindex(")") + 2:].split()[1]) == pid:
                    total += cpu_seconds(int(child.name))
    return total


def measure(proxy: Process, backend: int, load: str, rnd: int, args: argparse.Namespace, cfg_path: str,
            memaslap: str | None) -> dict[str, Any]:
    before = stat_counts(backend)
    cpu0 = tree_cpu_seconds(proxy.pid)
    binary = args.binary and proxy.name == OURS  # (nutcracker has no binary protocol: text for it)
    g = run_load(load, proxy.port, args, cfg_path, memaslap, "binary" if binary else "text")
    extra: dict[str, Any] = {"generator": g.generator, "errors": g.errors}
    if g.generator == "hoard bench":
        extra.update(depth=g.depth, connections=g.connections)
    ops, elapsed = g.ops, g.elapsed
    proxy_cpu = tree_cpu_seconds(proxy.pid) - cpu0
    after = stat_counts(backend)
    hits = after.get("get_hits", 0) - before.get("get_hits", 0)
    misses = after.get("get_misses", 0) - before.get("get_misses", 0)
    return {
        "load": load, "proxy": proxy.name, "round": rnd, "ops": ops, "elapsed_s": round(elapsed, 3),
        "ops_per_sec": round(ops / elapsed, 1) if elapsed else 0.0,
        "p50_us": round(g.p50_us, 1), "p99_us": round(g.p99_us, 1),
        "proxy_cpu_s": round(proxy_cpu, 3),
        "proxy_cpu_util": round(proxy_cpu / elapsed, 3) if elapsed else None,
        "ops_per_cpu_s": round(ops / proxy_cpu, 1) if proxy_cpu > 0 else None,
        "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        **extra,
    }


METRICS: tuple[Metric, ...] = (("ops_per_sec", "ops/s", "higher is better"),
                               ("ops_per_cpu_s", "ops per proxy CPU-s", "higher is better"),
                               ("p50_us", "p50 latency (us)", "lower is better"),
                               ("p99_us", "p99 latency (us)", "lower is better"))

RUN_HEADER = (f"{'load':<13}{'proxy':<11}{'rnd':>3} {'ops/s':>10} {'p50 us':>9} {'p99 us':>9} "
              f"{'proxy cpu%':>10} {'ops/proxy-cpu-s':>16} {'hit%':>6}")


def run_line(r: dict[str, Any]) -> str:
    util = r["proxy_cpu_util"] * 100 if r["proxy_cpu_util"] is not None else None
    hit = r["hit_ratio"] * 100 if r["hit_ratio"] is not None else None
    return (f"{r['load']:<13}{r['proxy']:<11}{r['round']:>3} {fmt(r['ops_per_sec'], 10)} "
            f"{fmt(r['p50_us'], 9)} {fmt(r['p99_us'], 9)} {fmt(util, 10)} {fmt(r['ops_per_cpu_s'], 16)} "
            f"{fmt(hit, 6, 1)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="benchmark hoard proxy against nutcracker (same memcached, "
                                            "same load, alternating)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=float, default=None, help="seconds per run (default 10; 1 with --quick)")
    p.add_argument("--rounds", type=int, default=None, help="runs per proxy per load (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="short smoke-test runs")
    p.add_argument("--only", choices=LOADS, help="run just one of the loads")
    p.add_argument("--binary", action="store_true",
                   help="hoard proxy's clients speak the binary protocol (memcaslap -B, hoard bench --binary); "
                        "nutcracker, which has none, stays the text reference")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    p.add_argument("--memcached", default=None)
    p.add_argument("--nutcracker", default=None)
    p.add_argument("--memcaslap", default=None)
    p.add_argument("--proxy-cpu", type=int, default=0, help="CPU both proxies are pinned to")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU memcached and the load generators use")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--workers", type=int, default=1,
                   help="run hoard proxy with --workers N (N > 1: hoard unpinned, over every CPU; its CPU "
                        "time includes the workers')")
    add_load_options(p)
    args = p.parse_args(argv)
    settle_run_length(p, args)
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
    loads = [args.only] if args.only else list(LOADS)
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
        cfg_path = write_memaslap_cfg(tmp, args)
        backend = free_port()
        stack.enter_context(start_process("memcached", memcached_argv(memcached, backend, args.client_cpu),
                                          backend))
        ours_port, ref_port = free_port(), free_port()
        ours_conf, ref_conf = Path(tmp, "hoard.yml"), Path(tmp, "nutcracker.yml")
        ours_conf.write_text(proxy_config(ours_port, backend))
        ref_conf.write_text(proxy_config(ref_port, backend))
        workers = ["--workers", str(args.workers)] if args.workers > 1 else []
        every_cpu = ["taskset", "-c", f"0-{(os.cpu_count() or 1) - 1}"]  # --workers: not this process's CPU
        ours = stack.enter_context(start_process(OURS, [*(every_cpu if workers else pin_prefix(args.proxy_cpu)),
                                                        sys.executable, "-m", "scatterhoard", "proxy", "-c",
                                                        str(ours_conf), "-s", str(free_port()), "-a", HOST,
                                                        "-v", "4", *workers],
                                                 ours_port))
        ref = stack.enter_context(start_process(REFERENCE, [*pin_prefix(args.proxy_cpu), nutcracker, "-c",
                                                            str(ref_conf), "-s", str(free_port()), "-a", HOST,
                                                            "-v", "4", "-o", str(Path(tmp, "nutcracker.log"))],
                                                ref_port))
        say(f"memcached on {HOST}:{backend} (CPU {args.client_cpu}); {OURS} pid {ours.pid}, {REFERENCE} pid "
            f"{ref.pid} on CPU {args.proxy_cpu}; {args.rounds} round(s) x {args.duration:g}s")
        if "pipelined" in loads:
            preload_keys(backend, args)
        say(RUN_HEADER)
        for load in loads:
            for rnd in range(1, args.rounds + 1):
                for proxy in (ours, ref):
                    r = measure(proxy, backend, load, rnd, args, cfg_path, memaslap)
                    runs.append(r)
                    say(run_line(r))
    summary = summarize(runs, METRICS, "proxy", REFERENCE)
    report(args, config, runs, summary, summary_table(summary, METRICS, REFERENCE),
           "\nratio = median over rounds of (hoard / nutcracker) in the same round; nonpipelined latency "
           "is estimated from memcaslap's log2 histogram, pipelined latency is per request (hoard bench)."
           + (" --binary: hoard's clients used the binary protocol, nutcracker's text." if args.binary else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
