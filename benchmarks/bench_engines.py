"""Engines side by side: get and set ops/s of ``hoard server`` over memory, sqlite and tiered.

One run starts a server per engine (one at a time, on the same core when
``taskset`` is there) and drives each with the same load: ``--conns``
connections, ``--depth`` memcached text requests in flight on each
(pipelined), 100-byte values over ``--keys`` keys, first a set phase, then a
get phase (every get a hit). Rounds alternate the engines; the table shows
medians and the ratio to the memory engine.

    .venv/bin/python benchmarks/bench_engines.py                 # ~25 s, one round
    .venv/bin/python benchmarks/bench_engines.py --duration 5 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from scatterhoard import ports

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def _free_port() -> int:
    return ports.free_port(HOST)


@contextlib.contextmanager
def server(engine_args: list[str], cpu: str | None) -> Iterator[int]:
    port = _free_port()
    argv = [sys.executable, "-m", "scatterhoard", "server", "-l", HOST, "-p", str(port), *engine_args]
    if cpu is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", cpu, *argv]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"server {engine_args} did not start: {err.strip()}") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _conn_load(port: int, op: str, keys: int, depth: int, stop_at: float, conn_id: int) -> int:
    reader, writer = await asyncio.open_connection(HOST, port)
    value = b"x" * 100
    done = 0
    i = conn_id * 7919
    reply_end = b"STORED\r\n" if op == "set" else b"END\r\n"
    try:
        while time.monotonic() < stop_at:
            batch = []
            for _ in range(depth):
                key = b"key:%d" % (i % keys)
                i += 1
                batch.append(b"set %s 0 0 100\r\n%s\r\n" % (key, value) if op == "set" else b"get %s\r\n" % key)
            writer.write(b"".join(batch))
            seen = 0
            while seen < depth:
                line = await reader.readuntil(reply_end)
                seen += line.count(reply_end)
            done += depth
    finally:
        writer.close()
    return done


async def _load(port: int, op: str, keys: int, conns: int, depth: int, duration: float) -> float:
    stop_at = time.monotonic() + duration
    t0 = time.monotonic()
    counts = await asyncio.gather(*(_conn_load(port, op, keys, depth, stop_at, c) for c in range(conns)))
    return sum(counts) / (time.monotonic() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=2.0, help="seconds per phase (default 2)")
    p.add_argument("--rounds", type=int, default=1, help="rounds over all engines (default 1)")
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--depth", type=int, default=8, help="requests in flight per connection (default 8)")
    p.add_argument("--keys", type=int, default=10000)
    p.add_argument("--cpu", default="0", help="core the server is pinned to (taskset), '' for none")
    args = p.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hoard-bench-") as d:
        engines = {
            "memory": [],
            "sqlite": ["--engine", "sqlite", "--engine-opt", f"path={d}/s.db"],
            "sqlite --durable": ["--engine", "sqlite", "--engine-opt", f"path={d}/d.db", "--durable"],
            "tiered (memory+sqlite)": ["--engine", "tiered", "--engine-opt", f"path={d}/t.db"],
        }
        for rnd in range(args.rounds):
            for name, engine_args in engines.items():
                with server(engine_args, args.cpu or None) as port:
                    set_rate = asyncio.run(_load(port, "set", args.keys, args.conns, args.depth, args.duration))
                    with socket.create_connection((HOST, port)) as s:  # make every key a hit
                        s.sendall(b"".join(b"set key:%d 0 0 100 noreply\r\n%s\r\n" % (i, b"x" * 100)
                                           for i in range(args.keys)) + b"mn\r\n")
                        buf = b""
                        while not buf.endswith(b"MN\r\n"):
                            buf += s.recv(65536)
                    get_rate = asyncio.run(_load(port, "get", args.keys, args.conns, args.depth, args.duration))
                r = results.setdefault(name, {"set": [], "get": []})
                r["set"].append(set_rate)
                r["get"].append(get_rate)
                print(f"round {rnd + 1} {name:24} set {set_rate:10,.0f}/s  get {get_rate:10,.0f}/s", flush=True)
    base = {op: statistics.median(results["memory"][op]) for op in ("set", "get")}
    print(f"\n{'engine':24} {'set ops/s':>12} {'vs memory':>10} {'get ops/s':>12} {'vs memory':>10}")
    for name, r in results.items():
        s, g = statistics.median(r["set"]), statistics.median(r["get"])
        print(f"{name:24} {s:12,.0f} {s / base['set']:9.2f}x {g:12,.0f} {g / base['get']:9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
