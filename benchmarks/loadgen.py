"""A pipelined, multi-process load generator for the memcached text protocol.

``run_load()`` starts ``processes`` worker processes; each opens ``connections``
TCP connections and keeps ``depth`` requests in flight on every one of them:
it sends a whole batch of ``depth`` requests in one write, reads until all
``depth`` replies are in, records the batch's round-trip time (the latency of
every request in it, so latency is measured at batch granularity) and sends
the next batch right away (a closed loop).

It is written to be cheap per request so that it is not the bottleneck:

* request batches are pre-built ``bytes`` (a pool per connection, cycled);
* replies are counted, not parsed: ``bytes.count`` of ``END\\r\\n`` (one per
  ``get``, hit or miss), ``STORED\\r\\n`` (one per ``set``) and ``ERROR``
  (any error line), over each received chunk plus the few bytes carried over
  from the previous one, so a terminator split between two reads is still
  counted once;
* one ``epoll`` per process drives all its connections.

Values are ``value_size`` bytes of ``v``, keys ``<prefix><n>``: neither can
contain a terminator, so counting is exact. ``preload()`` stores every key
first so that the gets hit.

This module is importable (``hoard bench`` will drive it) and also runnable::

    python benchmarks/loadgen.py -p 11211 --duration 5 --processes 2 --connections 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import select
import socket
import sys
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

KEY_PREFIX = "bench:"

_END = b"END\r\n"
_STORED = b"STORED\r\n"
_ERROR = b"ERROR"
_CARRY = max(len(_END), len(_STORED), len(_ERROR)) - 1  # bytes kept between reads


@dataclass
class LoadResult:
    """What one load run measured (all processes and connections together)."""

    ops: int = 0                 # requests answered within the measured window
    gets: int = 0
    sets: int = 0
    errors: int = 0              # error replies (ERROR / CLIENT_ERROR / SERVER_ERROR)
    batches: int = 0
    elapsed: float = 0.0         # seconds of the measured window (the longest worker's)
    depth: int = 1
    connections: int = 0         # total, over all processes
    client_cpu: float = 0.0      # CPU seconds the generator processes used (all of them)
    latencies: array = field(default_factory=lambda: array("d"))  # seconds, one per batch

    @property
    def ops_per_sec(self) -> float:
        return self.ops / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in seconds (``p`` in 0..100), nearest rank; 0.0 without samples."""
        return percentile(sorted(self.latencies), p)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "ops": self.ops, "gets": self.gets, "sets": self.sets, "errors": self.errors,
            "batches": self.batches, "elapsed_s": round(self.elapsed, 4),
            "ops_per_sec": round(self.ops_per_sec, 1), "depth": self.depth,
            "connections": self.connections, "client_cpu_s": round(self.client_cpu, 3),
            "p50_us": round(percentile(lat, 50) * 1e6, 1), "p99_us": round(percentile(lat, 99) * 1e6, 1),
            "max_us": round((lat[-1] if lat else 0.0) * 1e6, 1),
        }


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return float(sorted_values[rank])


def key(n: int, prefix: str = KEY_PREFIX) -> bytes:
    return f"{prefix}{n}".encode()


def set_request(k: bytes, value: bytes) -> bytes:
    return b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value), value)


def build_batches(*, count: int, depth: int, keyspace: int, value_size: int, get_ratio: float,
                  seed: int, prefix: str = KEY_PREFIX) -> list[tuple[bytes, int, int]]:
    """``count`` pre-built batches: (request bytes, number of gets, number of sets)."""
    rng = random.Random(seed)
    value = b"v" * value_size
    batches = []
    for _ in range(count):
        parts = []
        gets = 0
        for _ in range(depth):
            k = key(rng.randrange(keyspace), prefix)
            if rng.random() < get_ratio:
                parts.append(b"get %s\r\n" % k)
                gets += 1
            else:
                parts.append(set_request(k, value))
        batches.append((b"".join(parts), gets, depth - gets))
    return batches


def count_replies(carry: bytes, data: bytes) -> tuple[int, int]:
    """Complete replies in ``data`` (continuing after ``carry``): (replies, of which errors)."""
    if carry:
        buf = carry + data
        c = len(carry)
        ends = buf.count(_END, max(0, c - len(_END) + 1))
        stored = buf.count(_STORED, max(0, c - len(_STORED) + 1))
        errors = buf.count(_ERROR, max(0, c - len(_ERROR) + 1))
    else:
        ends = data.count(_END)
        stored = data.count(_STORED)
        errors = data.count(_ERROR)
    return ends + stored + errors, errors


def preload(host: str, port: int, *, keyspace: int, value_size: int, prefix: str = KEY_PREFIX,
            chunk: int = 500, timeout: float = 30.0) -> None:
    """Store every key of the key space (pipelined, ``chunk`` sets per write)."""
    value = b"v" * value_size
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, keyspace, chunk):
            n = min(chunk, keyspace - start)
            sock.sendall(b"".join(set_request(key(i, prefix), value) for i in range(start, start + n)))
            got = 0
            carry = b""
            while got < n:
                data = sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("server closed the connection during preload")
                replies, errors = count_replies(carry, data)
                if errors:
                    raise RuntimeError(f"preload: the server answered a set with an error: {data[:200]!r}")
                got += replies
                carry = (carry + data)[-_CARRY:]


def server_stats(host: str, port: int, timeout: float = 5.0) -> dict[str, str]:
    """The ``stats`` of a memcached-compatible server, as strings."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    out = {}
    for line in data.decode("ascii", "replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


# -- the worker process -------------------------------------------------------------------------


@dataclass
class _WorkerConfig:
    host: str
    port: int
    connections: int
    depth: int
    duration: float
    keyspace: int
    value_size: int
    get_ratio: float
    seed: int
    prefix: str
    cpus: tuple[int, ...] | None
    pool: int = 512        # pre-built batches per connection
    timeout: float = 10.0  # a batch not answered in this long is an error


def _worker(cfg: _WorkerConfig, barrier: Any, conn: Any) -> None:
    try:
        conn.send(_work(cfg, barrier))
    except BaseException as exc:  # report instead of dying silently
        with contextlib.suppress(Exception):
            barrier.abort()
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _work(cfg: _WorkerConfig, barrier: Any) -> dict[str, Any]:
    if cfg.cpus:
        os.sched_setaffinity(0, cfg.cpus)
    n = cfg.connections
    socks = []
    for _ in range(n):
        s = socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    pools = [build_batches(count=cfg.pool, depth=cfg.depth, keyspace=cfg.keyspace,
                           value_size=cfg.value_size, get_ratio=cfg.get_ratio,
                           seed=cfg.seed * 100003 + i, prefix=cfg.prefix) for i in range(n)]
    ep = select.epoll()
    index = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        index[s.fileno()] = i
    # per-connection state, in lists indexed by connection number
    got = [0] * n
    carry = [b""] * n
    sent_at = [0.0] * n
    nxt = [0] * n            # next batch in the pool
    cur_gets = [0] * n
    cur_sets = [0] * n
    recvs = [s.recv for s in socks]
    sends = [s.sendall for s in socks]
    lat = array("d")
    lat_append = lat.append
    depth = cfg.depth
    pool_size = cfg.pool
    ops = gets = sets = errors = batches = 0
    clock = time.perf_counter

    barrier.wait(timeout=60)
    cpu_start = time.process_time()
    start = clock()
    deadline = start + cfg.duration
    for i in range(n):
        req, g, st = pools[i][0]
        nxt[i] = 1 % pool_size
        cur_gets[i] = g
        cur_sets[i] = st
        sent_at[i] = clock()
        sends[i](req)
    in_flight = n
    now = start
    poll = ep.poll
    last_progress = start
    while in_flight:
        events = poll(1.0)
        now = clock()
        if not events:
            if now - last_progress > cfg.timeout:
                raise TimeoutError(f"no reply for {cfg.timeout}s ({in_flight} batches outstanding)")
            continue
        last_progress = now
        for fd, _ev in events:
            i = index[fd]
            data = recvs[i](1 << 18)
            if not data:
                raise ConnectionError("the server closed a connection")
            c = carry[i]
            replies, errs = count_replies(c, data)
            total = got[i] + replies
            if total < depth:
                got[i] = total
                carry[i] = (c + data)[-_CARRY:] if len(data) < _CARRY else data[-_CARRY:]
                continue
            # batch complete
            got[i] = 0
            carry[i] = b""
            if now <= deadline:
                lat_append(now - sent_at[i])
                batches += 1
                ops += depth
                gets += cur_gets[i]
                sets += cur_sets[i]
                errors += errs
                k = nxt[i]
                req, g, st = pools[i][k]
                k += 1
                nxt[i] = 0 if k == pool_size else k
                cur_gets[i] = g
                cur_sets[i] = st
                sent_at[i] = now
                sends[i](req)
            else:
                in_flight -= 1  # past the deadline: drain, do not count, do not send more
    elapsed = min(now, deadline) - start
    cpu = time.process_time() - cpu_start
    ep.close()
    for s in socks:
        s.close()
    return {"ops": ops, "gets": gets, "sets": sets, "errors": errors, "batches": batches,
            "elapsed": elapsed, "cpu": cpu, "connections": n, "latencies": lat.tobytes()}


def run_load(host: str, port: int, *, duration: float = 10.0, processes: int = 2, connections: int = 16,
             depth: int = 16, keyspace: int = 10_000, value_size: int = 100, get_ratio: float = 0.9,
             cpus: Iterable[int] | None = None, prefix: str = KEY_PREFIX, seed: int = 1,
             timeout: float = 10.0) -> LoadResult:
    """Run the load for ``duration`` seconds; returns the merged counts and latency samples.

    ``processes`` worker processes with ``connections`` connections each, every
    connection keeping ``depth`` requests in flight; a ``get_ratio`` share of
    the requests are gets, the rest sets of ``value_size`` bytes, on keys drawn
    uniformly from ``keyspace`` keys (call ``preload()`` first so gets hit).
    ``cpus``: pin the worker processes to these CPUs (``os.sched_setaffinity``).
    """
    if processes < 1 or connections < 1 or depth < 1:
        raise ValueError("processes, connections and depth must be at least 1")
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    barrier = ctx.Barrier(processes + 1)
    cpu_tuple = tuple(sorted(set(cpus))) if cpus is not None else None
    workers = []
    for w in range(processes):
        cfg = _WorkerConfig(host=host, port=port, connections=connections, depth=depth, duration=duration,
                            keyspace=keyspace, value_size=value_size, get_ratio=get_ratio,
                            seed=seed * 1000 + w, prefix=prefix, cpus=cpu_tuple, timeout=timeout)
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(cfg, barrier, child_end), daemon=True)
        proc.start()
        child_end.close()
        workers.append((proc, parent_end))
    results: list[dict[str, Any]] = []
    try:
        with contextlib.suppress(Exception):  # a worker that failed to connect aborts it
            barrier.wait(timeout=60)
        for _proc, pipe in workers:
            if pipe.poll(duration + timeout + 60):
                results.append(pipe.recv())
            else:
                results.append({"error": "worker did not report"})
    finally:
        for proc, pipe in workers:
            pipe.close()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    failures = [r["error"] for r in results if "error" in r]
    if failures:
        raise RuntimeError("load generator failed: " + "; ".join(failures))
    out = LoadResult(depth=depth)
    for r in results:
        out.ops += r["ops"]
        out.gets += r["gets"]
        out.sets += r["sets"]
        out.errors += r["errors"]
        out.batches += r["batches"]
        out.connections += r["connections"]
        out.elapsed = max(out.elapsed, r["elapsed"])
        out.client_cpu += r["cpu"]
        out.latencies.frombytes(r["latencies"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="pipelined memcached text-protocol load generator")
    p.add_argument("-s", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=11211)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--connections", type=int, default=16, help="per process")
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--get-ratio", type=float, default=0.9)
    p.add_argument("--cpus", default=None, help="pin workers to these CPUs, e.g. 1 or 1,2")
    p.add_argument("--no-preload", action="store_true")
    args = p.parse_args(argv)
    if not args.no_preload:
        preload(args.host, args.port, keyspace=args.keys, value_size=args.value_size)
    cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else None
    res = run_load(args.host, args.port, duration=args.duration, processes=args.processes,
                   connections=args.connections, depth=args.depth, keyspace=args.keys,
                   value_size=args.value_size, get_ratio=args.get_ratio, cpus=cpus)
    print(json.dumps(res.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
