#!/usr/bin/env python3
"""Engines side by side: get and set ops/s of ``hoard server`` over memory, sqlite and tiered.

One run starts a server per engine (one at a time, pinned to ``--server-cpu``
when ``taskset`` can) and drives each with the same load from ``hoard
bench``'s engine (:mod:`scatterhoard.bench`, pinned to ``--client-cpu``):
``--connections`` connections, each keeping ``--depth`` memcached text
requests in flight (a new one goes out as each reply comes back), 100-byte
values over ``--keys`` keys; first a set phase, then the key space is
preloaded (so every get hits) and a get phase runs. Rounds alternate the
engines; the table shows medians and the ratio to the memory engine (median of
the per-round ratios). Each run also records the server's CPU seconds.

    .venv/bin/python benchmarks/bench_engines.py                  # ~30 s, one round
    .venv/bin/python benchmarks/bench_engines.py --duration 5 --rounds 3
    .venv/bin/python benchmarks/bench_engines.py --quick --json   # the smoke test's run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import HOST, can_pin, cpu_seconds, free_port, pin_prefix, start_process  # noqa: E402
from scatterhoard.address import Address  # noqa: E402
from scatterhoard.bench import LoadSpec, RunConfig, preload, run_load  # noqa: E402
from scatterhoard.bench.workload import GET, SET  # noqa: E402

BASE = "memory"
OPS = ("set", "get")


def engines(directory: str) -> dict[str, list[str]]:
    """Engine name in the table -> its ``hoard server`` arguments (databases in ``directory``)."""
    return {
        BASE: [],
        "sqlite": ["--engine", "sqlite", "--engine-opt", f"path={directory}/s.db"],
        "sqlite --durable": ["--engine", "sqlite", "--engine-opt", f"path={directory}/d.db", "--durable"],
        "tiered (memory+sqlite)": ["--engine", "tiered", "--engine-opt", f"path={directory}/t.db"],
    }


def spec(args: argparse.Namespace, op: str) -> LoadSpec:
    return LoadSpec(protocol="text", mix=((SET if op == "set" else GET, 1),), keyspace=args.keys,
                    key_prefix="bench:", value_min=args.value_size, value_max=args.value_size)


def measure(port: int, pid: int, args: argparse.Namespace, op: str) -> dict[str, Any]:
    """One phase (``op``: set or get) against the server on ``port``."""
    cfg = RunConfig(Address("tcp", HOST, port), spec(args, op), processes=1, connections=args.connections,
                    depth=args.depth, duration=args.duration,
                    cpus=(args.client_cpu,) if args.client_cpu is not None else None)
    cpu0 = cpu_seconds(pid)
    r = run_load(cfg)
    server_cpu = cpu_seconds(pid) - cpu0
    return {"op": op, "ops": r.ops, "elapsed_s": round(r.elapsed, 3), "ops_per_sec": round(r.ops_per_sec, 1),
            "errors": r.errors, "hits": r.hits, "misses": r.misses,
            "hit_ratio": round(r.hits / (r.hits + r.misses), 4) if op == "get" and r.hits + r.misses else None,
            "p50_us": round(r.latency_us(50), 1), "p99_us": round(r.latency_us(99), 1),
            "server_cpu_s": round(server_cpu, 3),
            "ops_per_cpu_s": round(r.ops / server_cpu, 1) if server_cpu > 0 else None}


def run_engine(name: str, engine_args: list[str], rnd: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    port = free_port()
    argv = [*pin_prefix(args.server_cpu), sys.executable, "-m", "scatterhoard", "server", "-l", HOST,
            "-p", str(port), *engine_args]
    with start_process(name, argv, port) as server:
        runs = [measure(port, server.pid, args, "set")]
        preload(Address("tcp", HOST, port), spec(args, "set"))  # every get a hit
        runs.append(measure(port, server.pid, args, "get"))
    return [{"engine": name, "round": rnd, **r} for r in runs]


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per engine and op: the median ops/s over rounds and the median per-round ratio to memory."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    base = {(r["round"], r["op"]): r["ops_per_sec"] for r in runs if r["engine"] == BASE}
    for name in dict.fromkeys(r["engine"] for r in runs):
        out[name] = {}
        for op in OPS:
            mine = [r for r in runs if r["engine"] == name and r["op"] == op]
            ratios = [r["ops_per_sec"] / base[(r["round"], op)] for r in mine if base.get((r["round"], op))]
            out[name][op] = {"ops_per_sec": statistics.median(r["ops_per_sec"] for r in mine),
                             "ratio": round(statistics.median(ratios), 4) if ratios else None}
    return out


def table(summary: dict[str, dict[str, dict[str, float | None]]]) -> str:
    lines = [f"{'engine':24} {'set ops/s':>12} {'vs memory':>10} {'get ops/s':>12} {'vs memory':>10}"]
    for name, ops in summary.items():
        cells = []
        for op in OPS:
            rate, ratio = ops[op]["ops_per_sec"], ops[op]["ratio"]
            cells.append(f"{rate or 0:12,.0f} " + (f"{ratio:9.2f}x" if ratio is not None else f"{'-':>10}"))
        lines.append(f"{name:24} " + " ".join(cells))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=None, help="seconds per phase (default 2; 1 with --quick)")
    p.add_argument("--rounds", type=int, default=None, help="rounds over all engines (default 1)")
    p.add_argument("--quick", action="store_true", help="a short smoke-test run (and 1000 keys)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (progress goes to stderr)")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--depth", type=int, default=8, help="requests in flight per connection (default 8)")
    p.add_argument("--keys", type=int, default=None, help="key space (default 10000; 1000 with --quick)")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--server-cpu", type=int, default=0, help="CPU the servers are pinned to")
    p.add_argument("--client-cpu", type=int, default=1, help="CPU the load generator is pinned to")
    p.add_argument("--no-pin", action="store_true", help="do not pin anything to CPUs")
    args = p.parse_args(argv)
    args.duration = args.duration if args.duration is not None else (1.0 if args.quick else 2.0)
    args.rounds = args.rounds if args.rounds is not None else 1
    args.keys = args.keys if args.keys is not None else (1000 if args.quick else 10_000)
    if args.duration <= 0 or args.rounds < 1 or args.keys < 1:
        p.error("--duration must be positive, --rounds and --keys at least 1")
    if args.no_pin or not can_pin(args.server_cpu, args.client_cpu):
        args.server_cpu = args.client_cpu = None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    progress = sys.stderr if args.json else sys.stdout
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hoard-bench-") as d:
        for rnd in range(1, args.rounds + 1):
            for name, engine_args in engines(d).items():
                got = run_engine(name, engine_args, rnd, args)
                runs += got
                rates = "  ".join(f"{r['op']} {r['ops_per_sec']:10,.0f}/s" for r in got)
                print(f"round {rnd} {name:24} {rates}", file=progress, flush=True)
    summary = summarize(runs)
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        config.update(cpu_count=os.cpu_count(), generator="hoard bench")
        print(json.dumps({"config": config, "runs": runs, "summary": summary}, indent=2))
    else:
        print()
        print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
