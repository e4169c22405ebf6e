"""``hoard bench --verify``: a model-checked correctness run, in the spirit of distcache's dc_test.

Random operations (set, add, get, delete, cas, incr/decr, sets that expire)
over a small key space go to the target one at a time; each connection owns
its own keys, so the order the server applies them in is known and an exact
model predicts every reply.  Values are compared byte for byte, with their
flags and CAS behaviour; counters wrap at 2^64 and floor at 0 as memcached's
do; expiry is checked with a margin around each deadline (the server's clock
is coarse), and at the end the run waits until every expiring key must be
gone and checks it is.  The first reply that differs stops the run with a
report of what was sent, what was expected, what came back and the key's
recent history.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from ..address import Address
from .verify_drivers import DRIVERS, Driver, Found, Unexpected
from .workload import BenchError

EXPIRE_TTL = 2  # seconds, for the sets that expire
MARGIN = 1.5  # seconds either side of a deadline where both answers are accepted
U64 = 1 << 64


class Discrepancy(BenchError):
    """The target answered differently from the model."""


@dataclass
class Entry:
    value: bytes
    flags: int
    deadline: float | None  # monotonic time the item expires at, None: never


@dataclass
class VerifyConfig:
    address: Address
    protocol: str = "text"
    connections: int = 4
    requests: int | None = None
    duration: float | None = 10.0
    keyspace: int = 50  # per connection
    value_min: int = 1
    value_max: int = 4096
    seed: int | None = None
    timeout: float = 5.0


@dataclass
class VerifyResult:
    ops: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    values_checked: int = 0
    bytes_checked: int = 0
    expiries_checked: int = 0
    elapsed: float = 0.0
    seed: int = 0

    def summary(self) -> dict[str, object]:
        return {"verify": "ok", "ops": self.ops, "by_op": dict(sorted(self.by_op.items())),
                "values_checked": self.values_checked, "bytes_checked": self.bytes_checked,
                "expiries_checked": self.expiries_checked, "elapsed_s": round(self.elapsed, 3), "seed": self.seed}


def show_value(v: bytes) -> str:
    head = v[:24].hex()
    return f"{len(v)} B (sha256 {hashlib.sha256(v).hexdigest()[:16]}, starts {head}{'...' if len(v) > 24 else ''})"


def value_diff(expected: bytes, got: bytes) -> str:
    if len(expected) != len(got):
        return f"length differs: expected {len(expected)} B, got {len(got)} B"
    i = next(i for i in range(len(got)) if got[i] != expected[i])
    return (f"first difference at byte {i} of {len(got)}: expected 0x{expected[i]:02x}, got 0x{got[i]:02x} "
            f"(expected ...{expected[max(0, i - 8):i + 8].hex()}..., got ...{got[max(0, i - 8):i + 8].hex()}...)")


class Verifier:
    """Drives the operations and keeps the model; :meth:`run` returns the result or raises Discrepancy."""

    def __init__(self, cfg: VerifyConfig) -> None:
        if cfg.protocol not in DRIVERS:
            raise BenchError(f"--verify: unknown protocol {cfg.protocol!r}")
        self.cfg = cfg
        self.seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(4), "big")
        self.rng = random.Random(self.seed)
        self.run_id = f"hbv{self.seed % 100000:05d}{os.getpid() % 1000:03d}"
        self.drivers: list[Driver] = []
        self.model: list[dict[bytes, Entry]] = []
        self.counters: list[dict[bytes, int]] = []
        self.history: dict[bytes, deque[str]] = {}
        self.result = VerifyResult(seed=self.seed)
        self.cls = DRIVERS[cfg.protocol]
        lo = max(cfg.value_min, 2) if cfg.protocol == "distcache" else cfg.value_min  # 0x01 alone reads as a miss
        self.sizes = (lo, max(lo, cfg.value_max))
        ops: list[tuple[str, int]] = [("get", 35), ("set", 20), ("add", 6), ("delete", 8), ("expiring_set", 4)]
        if self.cls.has_cas:
            ops.append(("cas", 10))
        if self.cls.has_counters:
            ops += [("incr", 10), ("decr", 5 if self.cls.has_decr else 0)]
        self.ops = [(n, w) for n, w in ops if w]

    # -- bookkeeping ------------------------------------------------------------------------------

    def key(self, conn: int, n: int, counter: bool = False) -> bytes:
        return f"{self.run_id}:{conn}:{'n' if counter else 'k'}{n}".encode()

    def note(self, key: bytes, text: str) -> None:
        h = self.history.setdefault(key, deque(maxlen=6))
        h.append(f"#{self.result.ops + 1} {text}")

    def fail(self, conn: int, what: str, expected: str, got: str, key: bytes) -> Discrepancy:
        d = self.drivers[conn]
        req = d.last[:160]
        lines = [f"DISCREPANCY at operation #{self.result.ops + 1} after {self.result.ops:,} correct ones "
                 f"({self.cfg.protocol}, connection {conn}, seed {self.seed})",
                 f"  operation: {what}",
                 f"  request:   {req!r}{' ...' if len(d.last) > 160 else ''}",
                 f"  expected:  {expected}",
                 f"  got:       {got}"]
        past = list(self.history.get(key, ()))
        if past:
            lines.append(f"  history of {key.decode(errors='replace')} (latest last):")
            lines += [f"    {h}" for h in past]
        return Discrepancy("\n".join(lines))

    def value(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(*self.sizes))

    def state(self, e: Entry | None, now: float) -> str:
        """live / absent / unsure (within MARGIN of its deadline)."""
        if e is None:
            return "absent"
        if e.deadline is None or now < e.deadline - MARGIN:
            return "live"
        return "absent" if now > e.deadline + MARGIN else "unsure"

    # -- one operation ----------------------------------------------------------------------------

    def check_get(self, conn: int, key: bytes, got: Found | None, now: float) -> None:
        model = self.model[conn]
        e = model.get(key)
        st = self.state(e, now)
        name = key.decode(errors="replace")
        if got is None:
            if st == "live":
                assert e is not None
                raise self.fail(conn, f"get {name}", f"a hit, {show_value(e.value)}", "a miss", key)
            model.pop(key, None)
            self.note(key, "get -> miss")
            return
        if st == "absent":
            raise self.fail(conn, f"get {name}", "a miss" + (" (the item has expired)" if e else ""),
                            f"a hit, {show_value(got.value)}", key)
        assert e is not None
        if got.value != e.value:
            raise self.fail(conn, f"get {name}", show_value(e.value), f"{show_value(got.value)}; "
                            f"{value_diff(e.value, got.value)}", key)
        if self.cls.has_flags and got.flags != e.flags:
            raise self.fail(conn, f"get {name}", f"flags {e.flags}", f"flags {got.flags}", key)
        self.result.values_checked += 1
        self.result.bytes_checked += len(got.value)
        self.note(key, f"get -> hit {len(got.value)} B")

    def step(self, conn: int) -> None:
        rng = self.rng
        d = self.drivers[conn]
        model = self.model[conn]
        op = rng.choices([n for n, _ in self.ops], [w for _, w in self.ops])[0]
        now = time.monotonic()
        if op in ("incr", "decr"):
            self.arith(conn, op == "incr")
            return
        key = self.key(conn, rng.randrange(self.cfg.keyspace))
        name = key.decode(errors="replace")
        if self.state(model.get(key), now) == "unsure" and op != "set":
            op = "get"  # it may or may not have expired: only a get can tell without guessing
        self.result.by_op[op] = self.result.by_op.get(op, 0) + 1
        flags = rng.randrange(1 << 16) if self.cls.has_flags else 0
        if op == "get":
            self.check_get(conn, key, d.get(key), now)
        elif op in ("set", "expiring_set"):
            value = self.value()
            ttl = EXPIRE_TTL if op == "expiring_set" else 0
            wire_ttl = int(ttl / d.ttl_unit)
            self.note(key, f"{op} {len(value)} B flags {flags}")
            d.set(key, value, flags, wire_ttl)
            model[key] = Entry(value, flags, time.monotonic() + ttl if ttl else None)
        elif op == "add":
            value = self.value()
            exists = self.state(model.get(key), now) == "live"
            self.note(key, f"add {len(value)} B")
            if d.add(key, value, flags, 0) != (not exists):
                raise self.fail(conn, f"add {name}", "NOT_STORED (it exists)" if exists else "STORED",
                                "STORED" if exists else "NOT_STORED", key)
            if not exists:
                model[key] = Entry(value, flags, None)
        elif op == "delete":
            exists = self.state(model.get(key), now) == "live"
            self.note(key, "delete")
            if d.delete(key) != exists:
                raise self.fail(conn, f"delete {name}", "DELETED" if exists else "NOT_FOUND",
                                "NOT_FOUND" if exists else "DELETED", key)
            model.pop(key, None)
        else:
            self.cas(conn, key, flags, now)

    def cas(self, conn: int, key: bytes, flags: int, now: float) -> None:
        d, model = self.drivers[conn], self.model[conn]
        name = key.decode(errors="replace")
        found = d.get(key)
        self.check_get(conn, key, found, now)
        value = self.value()
        if found is None:
            self.note(key, "cas on a missing key")
            res = d.cas(key, value, flags, 0, 12345)
            if res != "not_found":
                raise self.fail(conn, f"cas {name} (missing key)", "NOT_FOUND", res.upper(), key)
            return
        wrong = self.rng.random() < 0.3
        token = found.cas + 1 if wrong else found.cas
        self.note(key, f"cas {len(value)} B with the {'wrong' if wrong else 'right'} token")
        res = d.cas(key, value, flags, 0, token)
        expected = "exists" if wrong else "stored"
        if res != expected:
            raise self.fail(conn, f"cas {name} with the {'wrong' if wrong else 'current'} token {token}",
                            expected.upper(), res.upper(), key)
        if not wrong:
            model[key] = Entry(value, flags, None)

    def arith(self, conn: int, incr: bool) -> None:
        rng, d, counters = self.rng, self.drivers[conn], self.counters[conn]
        key = self.key(conn, rng.randrange(max(1, self.cfg.keyspace // 5)), counter=True)
        name = key.decode(errors="replace")
        op = "incr" if incr else "decr"
        self.result.by_op[op] = self.result.by_op.get(op, 0) + 1
        if key not in counters and not d.incr_creates and rng.random() < 0.8:
            near_wrap = rng.random() < 0.3
            start = U64 - rng.randint(1, 50) if near_wrap else rng.randrange(1000)
            self.note(key, f"set counter {start}")
            d.set(key, b"%d" % start, 0, 0)
            counters[key] = start
        delta = rng.randint(1, 100)
        current = counters.get(key)
        if current is None and d.incr_creates:
            current = 0
        if current is None:
            expected = None
        elif d.incr_creates:  # redis: signed 64-bit, no wrap, no floor (values stay far from the limits)
            expected = current + delta if incr else current - delta
        elif incr:
            expected = (current + delta) % U64
        else:
            expected = max(0, current - delta)
        self.note(key, f"{op} {delta}")
        got = d.arith(key, delta, incr)
        if got != expected:
            raise self.fail(conn, f"{op} {name} {delta}", "NOT_FOUND" if expected is None else str(expected),
                            "NOT_FOUND" if got is None else str(got), key)
        if expected is not None:
            counters[key] = expected

    # -- the run ----------------------------------------------------------------------------------

    def run(self, on_progress: Callable[[float, int], None] | None = None) -> VerifyResult:
        cfg = self.cfg
        self.drivers = [self.cls(cfg.address, cfg.timeout) for _ in range(cfg.connections)]
        self.model = [{} for _ in self.drivers]
        self.counters = [{} for _ in self.drivers]
        started = time.monotonic()
        last_progress = started
        try:
            while True:
                now = time.monotonic()
                if cfg.requests is not None and self.result.ops >= cfg.requests:
                    break
                if cfg.requests is None and cfg.duration is not None and now - started >= cfg.duration:
                    break
                conn = self.result.ops % len(self.drivers)
                try:
                    self.step(conn)
                except Unexpected as exc:
                    raise self.fail(conn, "(reply did not parse)", "a well-formed reply", str(exc),
                                    b"") from None
                self.result.ops += 1
                if on_progress is not None and now - last_progress >= 0.5:
                    on_progress(now - started, self.result.ops)
                    last_progress = now
            self.final_expiry_check()
        finally:
            for d in self.drivers:
                d.close()
        self.result.elapsed = time.monotonic() - started
        return self.result

    def final_expiry_check(self) -> None:
        """Wait until every expiring key must be gone (at most EXPIRE_TTL + MARGIN s) and check it is."""
        pending = [(conn, key, e) for conn, m in enumerate(self.model) for key, e in m.items()
                   if e.deadline is not None]
        if not pending:
            return
        last = max(e.deadline for _, _, e in pending if e.deadline is not None) + MARGIN + 0.05
        time.sleep(max(0.0, last - time.monotonic()))
        for conn, key, _e in pending:
            self.check_get(conn, key, self.drivers[conn].get(key), time.monotonic())
            self.result.expiries_checked += 1


def run_verify(cfg: VerifyConfig, out: TextIO, on_progress: Callable[[float, int], None] | None = None
               ) -> VerifyResult:
    """Run the verification; raises :class:`Discrepancy` (its message is the report) on the first wrong reply."""
    return Verifier(cfg).run(on_progress)


def verify_report(r: VerifyResult, protocol: str, target: str) -> str:
    ops = ", ".join(f"{k} {v:,}" for k, v in sorted(r.by_op.items()))
    return (f"verify {target} ({protocol}): {r.ops:,} operations, all replies as the model predicted "
            f"(seed {r.seed})\n  {ops}\n  {r.values_checked:,} values compared byte for byte "
            f"({r.bytes_checked:,} bytes), {r.expiries_checked} expiries checked, {r.elapsed:.2f} s")
