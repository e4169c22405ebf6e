"""The load engine of ``hoard bench``: N worker processes, each driving many pipelined connections.

Each worker process opens its connections, pre-builds a pool of encoded
requests per connection (so the hot loop only copies bytes), waits for the
others at a barrier, then runs one ``epoll`` loop over all its connections:

* closed loop (default): every connection keeps ``depth`` requests in flight;
  as replies come back, new requests go out in one write;
* open loop (``rate``): every connection has a schedule of *intended* send
  times (the target rate spread over all connections); a request is sent when
  its time has come and the connection has fewer than ``depth`` in flight.
  Latency is measured from the intended time, so a server that stalls is
  charged for every request it delayed (no coordinated omission).

Replies are parsed by the protocol codecs (:mod:`.codecs`), which count hits,
misses and errors per operation; each completed operation's latency goes into
a per-interval :class:`~.histogram.Histogram`, merged into the run's total.
Requests still in flight when the duration is over are waited for and counted,
so the counts equal what the server saw.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..address import Address
from ..distcache.net import connect_blocking
from ..errors import ProtocolError
from .codecs import Codec, Meta, make_codec
from .drive import Flow
from .histogram import Histogram
from .result import LoadResult
from .workload import INCR, OPS, SET, BenchError, LoadSpec, Op, OpSource, key_bytes

POOL_BYTES = 48 * 1024 * 1024  # pre-built requests, all connections of all processes together
POOL_MAX = 4096
READ_SIZE = 1 << 16


@dataclass
class RunConfig:
    """How hard and how long to push: everything of a load but its shape (:class:`LoadSpec`)."""

    address: Address
    spec: LoadSpec = field(default_factory=LoadSpec)
    processes: int = 1
    connections: int = 4  # per process
    depth: int = 1
    duration: float | None = 10.0
    requests: int | None = None  # total, over all processes and connections
    rate: float | None = None  # open loop: total ops/s
    timeout: float = 10.0
    cpus: tuple[int, ...] | None = None
    interval: float = 1.0

    def validate(self) -> None:
        self.spec.validate()
        if self.processes < 1 or self.connections < 1 or self.depth < 1:
            raise BenchError("--procs, --connections and --depth must be at least 1")
        if self.duration is None and self.requests is None:
            raise BenchError("give --duration or --requests")
        if self.duration is not None and self.duration <= 0:
            raise BenchError("--duration must be positive")
        if self.requests is not None and self.requests < self.processes * self.connections:
            raise BenchError("--requests must be at least --procs x --connections")
        if self.rate is not None and self.rate <= 0:
            raise BenchError("--rate must be positive")
        if self.address.kind == "fd":
            raise BenchError("cannot bench an inherited descriptor")


def split(total: int, parts: int, index: int) -> int:
    """Share ``index`` of ``total`` cut into ``parts`` nearly equal shares."""
    return total // parts + (1 if index < total % parts else 0)


class _Conn:
    __slots__ = ("sock", "fd", "flow", "times", "out", "budget", "next_at", "writing")

    def __init__(self, sock: socket.socket, codec: Codec, pool: list[tuple[bytes, Meta]], budget: int | None,
                 next_at: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.flow = Flow(codec, pool)  # the per-request work, compiled
        self.times = self.flow.times  # intended send time of every request in flight, ns
        self.out = bytearray()  # bytes the socket did not take yet
        self.budget = budget  # requests left to send (None: until the deadline)
        self.next_at = next_at  # open loop: intended time of the next request
        self.writing = False


def _pool_size(cfg: RunConfig) -> int:
    spec = cfg.spec
    total_w = sum(w for _, w in spec.mix)
    set_share = sum(w for k, w in spec.mix if k == SET) / total_w
    per_req = 64 + set_share * (spec.value_min + spec.value_max) / 2 + 32 * spec.mget_width
    n = int(POOL_BYTES / (cfg.processes * cfg.connections) / per_req)
    return max(16, min(POOL_MAX, n))


def _open(cfg: RunConfig) -> socket.socket:
    try:
        sock = connect_blocking(cfg.address, cfg.timeout)
    except OSError as exc:
        raise BenchError(f"cannot connect to {cfg.address}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _work(cfg: RunConfig, index: int, barrier: Any, progress: Any) -> dict[str, Any]:
    if cfg.cpus:
        try:
            os.sched_setaffinity(0, cfg.cpus)
        except OSError as exc:
            raise BenchError(f"--cpus {','.join(map(str, cfg.cpus))}: cannot pin to these CPUs "
                             f"({exc.strerror or exc}; this machine has {os.cpu_count()})") from None
    spec = cfg.spec
    src = OpSource(spec, spec.seed * 1_000_003 + index)
    n_conn = cfg.connections
    my_requests = split(cfg.requests, cfg.processes, index) if cfg.requests is not None else None
    pool_n = _pool_size(cfg)
    # Each connection cycles through pool_n pre-built requests. When the key space is bigger than
    # all of them together, a request is rebuilt (new key, new value) right after it is sent, so the
    # keys keep following the distribution over the whole key space; that costs ~2 us per request.
    refill = spec.keyspace > pool_n * n_conn * cfg.processes
    rate_step = 0
    if cfg.rate:
        rate_step = int(1e9 * cfg.processes * n_conn / cfg.rate)  # ns between requests on one connection
    conns: list[_Conn] = []
    for i in range(n_conn):
        codec = make_codec(spec.protocol, spec.expire)
        pool = [codec.encode(src.next(), seq) for seq in range(pool_n)]
        budget = split(my_requests, n_conn, i) if my_requests is not None else None
        conns.append(_Conn(_open(cfg), codec, pool, budget, 0))
    ep = select.epoll()
    by_fd = {}
    for c in conns:
        ep.register(c.fd, select.EPOLLIN)
        by_fd[c.fd] = c
    counts = [[0, 0, 0, 0] for _ in OPS]
    clock = time.perf_counter_ns
    depth = cfg.depth
    interval_ns = int(cfg.interval * 1e9)
    timeout_ns = int(cfg.timeout * 1e9)

    barrier.wait(timeout=60)
    cpu0 = time.process_time()
    start = clock()
    deadline = start + int(cfg.duration * 1e9) if cfg.duration is not None else None
    for i, c in enumerate(conns):  # stagger the open-loop schedules over one step
        c.next_at = start + (rate_step * (index * n_conn + i)) // (cfg.processes * n_conn)
    cur = Histogram()
    total = Histogram()
    timeline: list[tuple[int, int, list[tuple[int, int]]]] = []
    next_roll = start + interval_ns
    cur_ops = ops = errors = 0  # errors: error replies up to the last interval
    last_reply = last_progress = start
    in_flight = 0
    sending = True

    def send(c: _Conn, now: int) -> int:
        """Top ``c`` up to ``depth`` requests in flight (open loop: those whose time has come)."""
        n = depth - len(c.times)
        if c.budget is not None:
            n = min(n, c.budget)
        if n <= 0:
            return 0
        times = c.times
        if rate_step:
            k = 0
            while k < n and c.next_at <= now and (deadline is None or c.next_at < deadline):
                times.append(c.next_at)
                c.next_at += rate_step
                k += 1
            n = k
            if n == 0:
                return 0
        else:
            times.extend([now] * n)
        if c.budget is not None:
            c.budget -= n
        flow = c.flow
        first = flow.next
        write(c, flow.batch(n))
        if refill:
            rebuild(flow, first, n)
        return n

    def rebuild(flow: Flow, first: int, n: int) -> None:
        """Replace the ``n`` pool entries from ``first`` (just sent) with fresh draws."""
        requests, metas, encode = flow.requests, flow.metas, flow.codec.encode
        size = len(requests)
        for k in range(first, first + n):
            j = k % size
            requests[j], metas[j] = encode(src.next(), j)

    def write(c: _Conn, data: bytes) -> None:
        if c.out:
            c.out += data
            return
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise BenchError(f"sending to {cfg.address} failed: {exc.strerror or exc}") from None
        if sent < len(data):
            c.out += memoryview(data)[sent:]
            if not c.writing:
                c.writing = True
                ep.modify(c.fd, select.EPOLLIN | select.EPOLLOUT)

    def flush(c: _Conn) -> None:
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            return
        except OSError as exc:
            raise BenchError(f"sending to {cfg.address} failed: {exc.strerror or exc}") from None
        del c.out[:sent]
        if not c.out:
            c.writing = False
            ep.modify(c.fd, select.EPOLLIN)

    now = start
    for c in conns:
        in_flight += send(c, now)
    while True:
        if sending and (deadline is not None and now >= deadline
                        or all(c.budget == 0 for c in conns)):
            sending = False
        if not sending and in_flight == 0:
            break
        if rate_step and sending:
            due = [c.next_at for c in conns if len(c.times) < depth and c.budget != 0]
            wake = min(due) if due else now + 1_000_000_000
            wait = (wake - now) / 1e9
            # epoll sleeps in whole milliseconds: closer than that to the next due request, spin
            wait = 0.0 if wait < 0.0011 else min(1.0, wait - 0.001)
        else:
            wait = 1.0
        events = ep.poll(wait)
        now = clock()
        for fd, ev in events:
            c = by_fd[fd]
            if ev & select.EPOLLOUT:
                flush(c)
            if not ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                continue
            try:
                data = c.sock.recv(READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise BenchError(f"reading from {cfg.address} failed: {exc.strerror or exc}") from None
            if not data:
                raise BenchError(f"{cfg.address} closed a connection with {len(c.times)} requests in flight "
                                 f"(after {ops:,} replies)")
            try:
                n = c.flow.settle(data, now, cur, counts)
            except (ProtocolError, IndexError) as exc:
                raise BenchError(f"unexpected reply from {cfg.address} ({spec.protocol}): {exc}") from None
            if n:
                in_flight -= n
                cur_ops += n
                last_reply = now
                if sending and not rate_step:
                    in_flight += send(c, now)
        if rate_step and sending:
            for c in conns:
                in_flight += send(c, now)
        if events:
            last_progress = now
        elif in_flight and now - last_progress > timeout_ns:
            raise BenchError(f"no reply from {cfg.address} for {cfg.timeout:g} s "
                             f"({in_flight} requests in flight)")
        while now >= next_roll:
            seen = sum(c.flow.errors for c in conns)  # the flows count error replies
            timeline.append((cur_ops, seen - errors, cur.to_sparse()))
            total.merge(cur)
            ops += cur_ops
            errors = seen
            cur, cur_ops = Histogram(), 0
            next_roll += interval_ns
        progress[2 * index] = ops + cur_ops
        progress[2 * index + 1] = errors  # as of the last interval
    if cur_ops or not timeline:
        timeline.append((cur_ops, sum(c.flow.errors for c in conns) - errors, cur.to_sparse()))
    total.merge(cur)
    ops += cur_ops
    cpu = time.process_time() - cpu0
    ep.close()
    for c in conns:
        c.sock.close()
    return {"ops": ops, "elapsed": (last_reply - start) / 1e9, "cpu": cpu, "connections": n_conn,
            "by_op": {OPS[k]: counts[k] for k in range(len(OPS)) if counts[k][0]},
            "hist": total.to_bytes(), "timeline": timeline}


def _worker(cfg: RunConfig, index: int, barrier: Any, progress: Any, pipe: Any) -> None:
    try:
        pipe.send(_work(cfg, index, barrier, progress))
    except BaseException as exc:  # report instead of dying silently
        with contextlib.suppress(Exception):
            barrier.abort()
        msg = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            pipe.send({"error": msg})
    finally:
        pipe.close()


ProgressFn = Callable[[float, int, int], None]


def run_load(cfg: RunConfig, on_progress: ProgressFn | None = None, progress_every: float = 0.5) -> LoadResult:
    """Run one load with ``cfg.processes`` worker processes; the merged result.

    ``on_progress(seconds, ops, errors)`` is called about every ``progress_every`` seconds while it runs.
    Raises :class:`BenchError` with one clear line when a worker fails.
    """
    cfg.validate()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(cfg.processes + 1)
    progress = ctx.Array("q", 2 * cfg.processes, lock=False)
    workers = []
    for w in range(cfg.processes):
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(cfg, w, barrier, progress, child_end), daemon=True)
        proc.start()
        child_end.close()
        workers.append((proc, parent_end))
    reports: list[dict[str, Any]] = []
    try:
        with contextlib.suppress(Exception):  # a worker that failed to start aborts the barrier
            barrier.wait(timeout=120)
        started = time.monotonic()
        limit = (cfg.duration or 0) + cfg.timeout + 60
        for _proc, pipe in workers:
            while not pipe.poll(progress_every if on_progress else 1.0):
                if on_progress is not None:
                    on_progress(time.monotonic() - started, sum(progress[0::2]), sum(progress[1::2]))
                if cfg.duration is not None and time.monotonic() - started > limit:
                    break
            reports.append(pipe.recv() if pipe.poll(0) else {"error": "a worker process did not report"})
    except EOFError:
        reports.append({"error": "a worker process died"})
    finally:
        for proc, pipe in workers:
            pipe.close()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    failures = list(dict.fromkeys(r["error"] for r in reports if "error" in r))
    if failures:
        raise BenchError("; ".join(failures))
    res = LoadResult(target=str(cfg.address), protocol=cfg.spec.protocol, depth=cfg.depth,
                     processes=cfg.processes, rate=cfg.rate, interval=cfg.interval)
    for r in reports:
        res.add_worker(r)
    return res


def preload(address: Address, spec: LoadSpec, timeout: float = 30.0, chunk: int = 200) -> int:
    """Store every key of the key space (and zero every counter when the mix has incr), pipelined.

    Returns the number of values stored. Raises :class:`BenchError` on an error reply.
    """
    spec.validate()
    src = OpSource(spec, spec.seed)
    ops: list[Op] = [Op(SET, (key_bytes(spec.key_prefix, n),), src.value()) for n in range(spec.keyspace)]
    if INCR in dict(spec.mix) and spec.protocol != "distcache":
        ops += [Op(SET, (key_bytes(spec.key_prefix, n, counter=True),), b"0") for n in range(spec.keyspace)]
    codec = make_codec(spec.protocol, spec.expire)
    try:
        sock = connect_blocking(address, timeout)
    except OSError as exc:
        raise BenchError(f"cannot connect to {address}: {exc.strerror or exc}") from None
    with sock:
        for at in range(0, len(ops), chunk):
            batch = [codec.encode(op, at + i) for i, op in enumerate(ops[at:at + chunk])]
            for _data, meta in batch:
                codec.sent(meta)
            sock.sendall(b"".join(data for data, _ in batch))
            got = 0
            while got < len(batch):
                data = sock.recv(READ_SIZE)
                if not data:
                    raise BenchError(f"{address} closed the connection during the preload")
                for _kind, _h, _m, e in codec.feed(data):
                    if e:
                        raise BenchError(f"{address} answered a preload set with an error")
                    got += 1
    return len(ops)


def cpus_arg(text: str | None) -> tuple[int, ...] | None:
    """``1`` or ``0,2-3`` -> the CPU numbers."""
    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        try:
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise BenchError(f"--cpus: bad CPU list {text!r} (e.g. 1 or 0,2-3)") from None
    return tuple(sorted(set(out)))


__all__: Sequence[str] = ("RunConfig", "cpus_arg", "preload", "run_load", "split")
