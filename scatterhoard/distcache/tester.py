"""``dc_test``: a barrage of random session operations, every result checked.

It generates ``sessions`` sessions with random ids (10..63 bytes), then runs
``ops`` random ADD / GET / HAVE / REMOVE operations against an expected
model of what the cache holds, checking every result code and every GET's
data byte for byte.  New data (``datamin``..``datamax`` bytes) and a new
timeout (``timeout`` +- ``timevar`` seconds) are drawn for every ADD.

Expiry is part of the model: a session is certainly live while a reply
arrives before ``sent + timeout`` of its ADD, certainly gone once a request
leaves after ``acknowledged + timeout``; in between either answer is right.

The engine (:func:`run_test`) returns a :class:`TestReport`; :func:`report`
prints the original's verdict lines ("all tests complete" / "K tests
succeeded before the first failure") and then throughput and latency
percentiles.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from ..address import Address
from ..errors import CacheError
from ..protocol import distcache as dc
from .client import SessionCache

#: Slack for the clock differences between this process and the server.
EXPIRY_MARGIN = 0.05


@dataclass
class TestConfig:
    connect: Address
    sessions: int = 10
    datamin: int = 50
    datamax: int = 2100
    timeout: float = 60.0
    timevar: float = 5.0
    ops: int | None = None  # default 10 * sessions ** 2
    persistent: bool = False
    progress: int = 0
    seed: int | None = None
    io_timeout: float = 10.0

    @property
    def total_ops(self) -> int:
        return self.ops if self.ops is not None else 10 * self.sessions * self.sessions

    def check(self) -> None:
        """Raise ValueError for settings the protocol cannot carry."""
        if self.sessions < 1:
            raise ValueError("-sessions must be at least 1")
        if not 1 <= self.datamin <= self.datamax:
            raise ValueError("need 1 <= -datamin <= -datamax")
        room = dc.MAX_PAYLOAD - dc.ADD_HEADER_SIZE - 63
        if self.datamax > room:
            raise ValueError(f"-datamax can be at most {room} (a message carries {dc.MAX_PAYLOAD} bytes)")
        if self.timevar < 0 or self.timeout - self.timevar < 0:
            raise ValueError("need 0 <= -timevar <= -timeout")
        if (self.timeout + self.timevar) * 1000 > dc.MAX_TIMEOUT_MS:
            raise ValueError("-timeout + -timevar must stay within one week")
        if self.total_ops < 0:
            raise ValueError("-ops must be >= 0")


@dataclass
class _Entry:
    data: bytes
    sent: float
    acked: float
    ttl: float

    def state(self, sent: float, received: float) -> bool | None:
        """True certainly live, False certainly expired, None either (an op sent/received then)."""
        if received < self.sent + self.ttl - EXPIRY_MARGIN:
            return True
        if sent > self.acked + self.ttl + EXPIRY_MARGIN:
            return False
        return None


@dataclass
class TestReport:
    config: TestConfig
    succeeded: int = 0
    failure: str | None = None
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def percentile(self, p: float, ordered: list[float] | None = None) -> float:
        lat = ordered if ordered is not None else sorted(self.latencies)
        if not lat:
            return 0.0
        return lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))]


class _Progress:
    """A progress bar on a terminal, and/or ``-progress N`` lines."""

    def __init__(self, total: int, every: int, out: TextIO, err: TextIO) -> None:
        self.total = total
        self.every = every
        self.out = out
        self.err = err
        self.bar = err.isatty() and total > 0
        self.started = time.perf_counter()
        self.last_draw = 0.0

    def tick(self, done: int) -> None:
        if self.every and done % self.every == 0:
            if self.bar:
                self.err.write("\r\x1b[K")  # the line goes where the bar was; the bar is redrawn below
                self.err.flush()
                self.last_draw = 0.0
            print(f"Info, {done} operations complete", file=self.out, flush=True)
        if self.bar:
            now = time.perf_counter()
            if now - self.last_draw >= 0.1 or done == self.total:
                self.last_draw = now
                frac = done / self.total
                width = 40
                filled = int(frac * width)
                rate = done / max(now - self.started, 1e-9)
                self.err.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}% "
                               f"{done}/{self.total} {rate:,.0f} ops/s")
                self.err.flush()

    def finish(self) -> None:
        if self.bar:
            self.err.write("\n")
            self.err.flush()


def _show(sid: bytes) -> str:
    return sid.hex() if len(sid) <= 16 else sid[:16].hex() + "..."


def run_test(cfg: TestConfig, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> TestReport:
    """Run the barrage; stops at the first discrepancy."""
    cfg.check()
    rng = random.Random(cfg.seed)
    ids: list[bytes] = []
    seen: set[bytes] = set()
    while len(ids) < cfg.sessions:
        sid = rng.randbytes(rng.randint(10, 63))
        if sid not in seen:
            seen.add(sid)
            ids.append(sid)
    model: list[_Entry | None] = [None] * cfg.sessions
    total = cfg.total_ops
    report = TestReport(cfg, counts={name: 0 for name in dc.OP_NAMES.values()})
    lat = report.latencies
    progress = _Progress(total, cfg.progress, out, err)
    cache = SessionCache(cfg.connect, timeout=cfg.io_timeout, strict=True)
    ttl_lo = cfg.timeout - cfg.timevar
    ttl_span = 2 * cfg.timevar
    perf = time.perf_counter
    started = perf()
    try:
        for n in range(total):
            idx = rng.randrange(cfg.sessions)
            op = rng.randrange(4)
            sid = ids[idx]
            entry = model[idx]
            data = b""
            timeout_ms = 0
            if op == dc.OP_ADD:
                data = rng.randbytes(rng.randint(cfg.datamin, cfg.datamax))
                timeout_ms = int((ttl_lo + rng.random() * ttl_span) * 1000)
            what = f"{dc.OP_NAMES[op]} of session #{idx} (id {_show(sid)}, {len(sid)} bytes)"
            t0 = perf()
            try:
                resp = cache.execute(op, sid, data, timeout_ms)
            except CacheError as exc:
                report.failure = f"{what} failed: {exc}"
                break
            t1 = perf()
            lat.append(t1 - t0)
            if not cfg.persistent:
                cache.close()
            live = entry.state(t0, t1) if entry is not None else False
            problem = _check(op, resp, live, entry)
            if problem is not None:
                report.failure = f"{what}: {problem}"
                break
            code = resp.code
            if op == dc.OP_ADD:
                if code == dc.RESULT_OK:
                    model[idx] = _Entry(data, t0, t1, timeout_ms / 1000.0)
            elif op == dc.OP_REMOVE or code != dc.RESULT_OK:
                model[idx] = None
            report.counts[dc.OP_NAMES[op]] += 1
            report.succeeded = n + 1
            progress.tick(n + 1)
    finally:
        report.elapsed = perf() - started
        cache.close()
        progress.finish()
    return report


def _check(op: int, resp: dc.Response, live: bool | None, entry: _Entry | None) -> str | None:
    """What is wrong with ``resp`` given the model (None: it is right)."""
    code = resp.code
    name = dc.RESULT_NAMES.get(code, "UNKNOWN")
    if op == dc.OP_ADD:
        allowed = {True: (dc.RESULT_ADD_DUPLICATE,), False: (dc.RESULT_OK,),
                   None: (dc.RESULT_OK, dc.RESULT_ADD_DUPLICATE)}[live]
        if code in allowed:
            return None
        want = " or ".join(f"{dc.RESULT_NAMES[c]}({c})" for c in allowed)
        return f"expected {want}, got {name}({code})"
    if op == dc.OP_GET:
        if code == dc.RESULT_OK:
            if live is False or entry is None:
                return f"expected a miss, got {len(resp.data or b'')} bytes of data"
            if resp.data != entry.data:
                got = resp.data or b""
                at = next((i for i, (a, b) in enumerate(zip(got, entry.data, strict=False)) if a != b),
                          min(len(got), len(entry.data)))
                return (f"data mismatch: expected {len(entry.data)} bytes, got {len(got)} bytes, "
                        f"first difference at offset {at}")
            return None
        if code == dc.RESULT_NOTOK and live is not True:
            return None
        if live is True and entry is not None:
            return f"expected {len(entry.data)} bytes of data, got {name}({code})"
        return f"expected a miss, got {name}({code})"
    # REMOVE / HAVE
    allowed = {True: (dc.RESULT_OK,), False: (dc.RESULT_NOTOK,), None: (dc.RESULT_OK, dc.RESULT_NOTOK)}[live]
    if code in allowed:
        return None
    want = " or ".join(f"{dc.RESULT_NAMES[c]}({c})" for c in allowed)
    return f"expected {want}, got {name}({code})"


def _fmt_latency(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    return f"{seconds * 1e3:.2f} ms"


def report(rep: TestReport, out: TextIO = sys.stdout) -> int:
    """Print the verdict, throughput and latency percentiles; the exit status."""
    if rep.ok:
        print("all tests complete", file=out)
    else:
        print(f"FAILURE: {rep.failure}", file=out)
        print(f"{rep.succeeded} tests succeeded before the first failure", file=out)
    n = len(rep.latencies)
    if n:
        rate = n / rep.elapsed if rep.elapsed > 0 else 0.0
        mode = "persistent connection" if rep.config.persistent else "one connection per operation"
        print(f"throughput: {rate:,.0f} ops/s ({n} operations in {rep.elapsed:.2f} s, {mode})", file=out)
        ordered = sorted(rep.latencies)
        parts = [f"p{p:g} {_fmt_latency(rep.percentile(p, ordered))}" for p in (50, 90, 99, 99.9)]
        parts.append(f"max {_fmt_latency(ordered[-1])}")
        print("latency: " + ", ".join(parts), file=out)
        print("operations: " + ", ".join(f"{k} {v}" for k, v in rep.counts.items()), file=out)
    out.flush()
    return 0 if rep.ok else 1
