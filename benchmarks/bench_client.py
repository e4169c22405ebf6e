#!/usr/bin/env python3
"""Benchmark scatterhoard's clients against pymemcache (sync) and aiomcache (async), same server, one run.

One server (Debian's memcached by default, or ``hoard server``) is started
on a free port, pinned to CPU 0 when there are two CPUs; the clients run in
this process, pinned to CPU 1, all connected at once.  Each client does:

* ``set``: ``--ops`` sequential sets of ``--value-size`` bytes (waiting for
  each reply: pymemcache is asked for ``noreply=False``),
* ``get``: ``--ops`` sequential gets of those keys (all hits),
* ``get_many``: ``--many`` sequential multi-gets of 100 keys (all hits),
* for the asyncio clients, ``get xN``: ``--ops`` gets from ``--concurrency``
  tasks at once over a pool of that many connections.

Each phase is cut into ``--rounds`` slices and the clients take turns slice
by slice (rotating who goes first), so that load from anything else on the
machine falls on all of them alike.  The table shows ops/s (calls/s for
get_many) over all slices, and the ratios ours / theirs.

    .venv/bin/python benchmarks/bench_client.py
    .venv/bin/python benchmarks/bench_client.py --server hoard --rounds 5
    .venv/bin/python benchmarks/bench_client.py --quick --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import HOST, free_port, wait_for_port  # noqa: E402
from scatterhoard import AsyncClient, Client  # noqa: E402

MANY = 100  # keys per get_many
PROTOCOLS = ("text", "meta", "binary")


# -- the server -----------------------------------------------------------------------------------


@contextlib.contextmanager
def server(kind: str, pin: bool) -> Iterator[int]:
    port = free_port()
    if kind == "memcached":
        exe = shutil.which("memcached") or "/usr/bin/memcached"
        argv = [exe, "-l", HOST, "-p", str(port), "-U", "0", "-t", "1", "-m", "256"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]
    else:
        argv = [sys.executable, "-m", "scatterhoard", "server", "-l", HOST, "-p", str(port), "-m", "256"]
    if pin and shutil.which("taskset"):
        argv = ["taskset", "-c", "0", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the clients ----------------------------------------------------------------------------------


Result = dict[str, float]


class Runner:
    """One client under test: sync callables, or coroutine functions run on the shared event loop."""

    def __init__(self, name: str, is_async: bool, set_: Callable[..., Any], get: Callable[..., Any],
                 get_many: Callable[..., Any], close: Callable[[], Any], hits: Callable[[Any], int]) -> None:
        self.name = name
        self.is_async = is_async
        self.set = set_
        self.get = get
        self.get_many = get_many
        self.close = close
        self.hits = hits


def ours_sync(protocol: str, port: int, args: argparse.Namespace, spin_us: int | None = None) -> Runner:
    options = {} if spin_us is None else {"spin_us": spin_us}
    c = Client(f"{HOST}:{port}", protocol=protocol, on_error="raise", **options)
    label = protocol if spin_us is None else f"{protocol}, spin_us={spin_us}"
    return Runner(f"scatterhoard Client ({label})", False, c.set, c.get, c.get_many, c.close, len)


def pymemcache_sync(port: int, args: argparse.Namespace) -> Runner:
    from pymemcache.client.base import Client as PymemcacheClient  # type: ignore[import-untyped]

    c = PymemcacheClient((HOST, port), no_delay=True, default_noreply=False)
    return Runner("pymemcache Client", False, lambda k, v: c.set(k, v, noreply=False), c.get, c.get_many,
                  c.close, len)


def ours_async(protocol: str, port: int, args: argparse.Namespace) -> Runner:
    c = AsyncClient(f"{HOST}:{port}", protocol=protocol, on_error="raise", max_pool_size=args.concurrency)
    return Runner(f"scatterhoard AsyncClient ({protocol})", True, c.set, c.get, c.get_many, c.close, len)


def aiomcache_async(port: int, args: argparse.Namespace) -> Runner:
    import aiomcache

    c = aiomcache.Client(HOST, port, pool_size=args.concurrency)

    async def get_many(batch: list[bytes]) -> Any:
        return await c.multi_get(*batch)

    return Runner("aiomcache Client", True, c.set, c.get, get_many, c.close,
                  lambda values: sum(v is not None for v in values))


def runners(port: int, args: argparse.Namespace) -> tuple[list[Runner], list[str]]:
    notes: list[str] = []
    out = [ours_sync(protocol, port, args) for protocol in PROTOCOLS]
    out.append(ours_sync("text", port, args, spin_us=0))  # without polling: sleeps in recv as pymemcache does
    try:
        out.append(pymemcache_sync(port, args))
    except ImportError:
        notes.append("pymemcache is not installed: .venv/bin/pip install pymemcache")
    out += [ours_async(protocol, port, args) for protocol in PROTOCOLS]
    try:
        out.append(aiomcache_async(port, args))
    except ImportError:
        notes.append("aiomcache is not installed: .venv/bin/pip install aiomcache")
    return out, notes


# -- the measured blocks ---------------------------------------------------------------------------


def sync_block(r: Runner, phase: str, items: list[Any], value: bytes) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds)."""
    c0 = time.thread_time()
    t0 = time.perf_counter()
    if phase == "set":
        for key in items:
            r.set(key, value)
    elif phase == "get":
        for key in items:
            r.get(key)
    else:
        for batch in items:
            r.get_many(batch)
    return time.perf_counter() - t0, time.thread_time() - c0


async def async_block(r: Runner, phase: str, items: list[Any], value: bytes, concurrency: int) -> float:
    t0 = time.perf_counter()
    if phase == "set":
        for key in items:
            await r.set(key, value)
    elif phase == "get":
        for key in items:
            await r.get(key)
    elif phase == "get_many":
        for batch in items:
            await r.get_many(batch)
    else:
        async def worker(part: list[bytes]) -> None:
            for key in part:
                await r.get(key)

        await asyncio.gather(*(worker(items[i::concurrency]) for i in range(concurrency)))
    return time.perf_counter() - t0


def measure(port: int, args: argparse.Namespace,
            loop: asyncio.AbstractEventLoop) -> tuple[dict[str, Result], list[str]]:
    """Every phase is cut into ``--rounds`` slices; the clients take turns slice by slice."""
    value = b"v" * args.value_size
    keys = [b"bench:%d" % i for i in range(args.ops)]
    batches = [keys[(i * MANY) % (len(keys) - MANY):][:MANY] for i in range(args.many)]
    all_runners, notes = runners(port, args)
    seconds: dict[str, dict[str, float]] = {r.name: {} for r in all_runners}
    cpu: dict[str, dict[str, float]] = {r.name: {} for r in all_runners if not r.is_async}
    counts = {"set": len(keys), "get": len(keys), "get_many": len(batches), "get_concurrent": len(keys)}
    try:
        for phase in ("set", "get", "get_many", "get_concurrent"):
            items: list[Any] = batches if phase == "get_many" else keys
            slices = [items[i::args.rounds] for i in range(args.rounds)]
            for n, part in enumerate(slices):
                order = all_runners[n % len(all_runners):] + all_runners[:n % len(all_runners)]
                for r in order:
                    if phase == "get_concurrent" and not r.is_async:
                        continue
                    if r.is_async:
                        dt = loop.run_until_complete(async_block(r, phase, part, value, args.concurrency))
                    else:
                        dt, used = sync_block(r, phase, part, value)
                        cpu[r.name][phase] = cpu[r.name].get(phase, 0.0) + used
                    seconds[r.name][phase] = seconds[r.name].get(phase, 0.0) + dt
        for r in all_runners:  # everything was a hit
            got = loop.run_until_complete(r.get_many(batches[0])) if r.is_async else r.get_many(batches[0])
            assert r.hits(got) == MANY, f"{r.name}: get_many missed keys"
    finally:
        for r in all_runners:
            closing = r.close()
            if asyncio.iscoroutine(closing):
                loop.run_until_complete(closing)
    rates = {name: {phase: counts[phase] / dt for phase, dt in phases.items()} for name, phases in seconds.items()}
    for name, phases in cpu.items():  # client CPU per call, us (sync clients: the calling thread)
        rates[name].update({f"cpu_us_{phase}": 1e6 * used / counts[phase] for phase, used in phases.items()})
    return rates, notes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="scatterhoard clients vs pymemcache and aiomcache",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--server", choices=("memcached", "hoard"), default="memcached")
    p.add_argument("--ops", type=int, default=None, help="sets and gets per client per round (default 20000)")
    p.add_argument("--many", type=int, default=None, help="get_many calls per client per round (default 2000)")
    p.add_argument("--rounds", type=int, default=None,
                   help="slices per phase the clients take turns on (default 10)")
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=16, help="tasks (and pooled connections) for 'get xN'")
    p.add_argument("--uvloop", action="store_true", help="run the asyncio clients on uvloop")
    p.add_argument("--no-pin", action="store_true", help="do not pin the server and the clients to CPUs")
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    args.ops = args.ops or (500 if args.quick else 20_000)
    args.many = args.many or (50 if args.quick else 2_000)
    args.rounds = args.rounds or (2 if args.quick else 10)
    if args.ops <= MANY:
        p.error(f"--ops must be more than {MANY}")
    return args


COLUMNS = (("set", "set ops/s"), ("get", "get ops/s"), ("get_many", "get_many(100)/s"),
           ("get_concurrent", "get xN ops/s"))
PAIRS = tuple((f"scatterhoard Client ({p})", "pymemcache Client") for p in PROTOCOLS) + (
    ("scatterhoard Client (text, spin_us=0)", "pymemcache Client"),) + tuple(
    (f"scatterhoard AsyncClient ({p})", "aiomcache Client") for p in PROTOCOLS)


def table(medians: dict[str, Result], concurrency: int) -> str:
    header = ["client".ljust(34)] + [title.replace("xN", f"x{concurrency}").rjust(16) for _, title in COLUMNS]
    lines = ["".join(header)]
    for name, result in medians.items():
        cells = [f"{result[col]:16,.0f}" if col in result else " " * 15 + "-" for col, _ in COLUMNS]
        lines.append(name.ljust(34) + "".join(cells))
    lines.append("")
    for ours, theirs in PAIRS:
        if ours in medians and theirs in medians:
            cells = []
            for col, _ in COLUMNS:
                if col in medians[ours] and col in medians[theirs]:
                    cells.append(f"{medians[ours][col] / medians[theirs][col]:15.2f}x")
                else:
                    cells.append(" " * 15 + "-")
            label = f"{ours.replace('scatterhoard ', '')} / {theirs.split()[0]}"
            lines.append(label.ljust(34) + "".join(cells))
    lines += ["", "client CPU per call, us (the calling thread; sync clients)".ljust(34)]
    for name, result in medians.items():
        if "cpu_us_get" in result:
            cells = [f"{result[f'cpu_us_{col}']:16,.1f}" if f"cpu_us_{col}" in result else " " * 15 + "-"
                     for col, _ in COLUMNS]
            lines.append(name.ljust(34) + "".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    if pin:
        os.sched_setaffinity(0, {1})
    if args.uvloop:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        with server(args.server, pin) as port:
            rates, notes = measure(port, args, loop)
    finally:
        loop.close()
    if args.json:
        print(json.dumps({"server": args.server, "ops": args.ops, "many": args.many, "rounds": args.rounds,
                          "value_size": args.value_size, "concurrency": args.concurrency, "uvloop": args.uvloop,
                          "rates": rates, "notes": notes}, indent=2))
    else:
        print(f"server: {args.server}; per client: {args.ops} sets, {args.ops} gets, {args.many} get_many of "
              f"{MANY} keys, {args.value_size}-byte values; clients take turns in {args.rounds} slices per "
              f"phase; {'uvloop' if args.uvloop else 'asyncio'} event loop; pinned: {pin}")
        print(table(rates, args.concurrency))
        for note in notes:
            print("note:", note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
