"""``hoard bench --verify``: passes against real memcached (text, meta, binary), redis (RESP) and hoard server
(all five protocols), and stops with a clear report at the first wrong reply of a server that corrupts
one stored value.

The passing runs each end with a wait of a few seconds for their expiring keys to be gone, so they are
started at once and the tests only look at their results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from scatterhoard.server.app import Server
from scatterhoard.server.stats import Settings
from scatterhoard.store import Item, MemoryStore
from scatterhoard.store.item import Mode, Status
from tests.support import free_port, hoard_argv, hoard_server, memcached, require_binary, running

TIMEOUT = 120.0
CORRUPT_AT = 40  # the 40th value read gets one byte flipped


class CorruptingStore(MemoryStore):
    """The ``CORRUPT_AT``-th value read (of 2 bytes or more, not a counter) has its middle byte flipped,
    in the store, as a memory error would: that read and every later one see the wrong byte."""

    def __init__(self) -> None:
        super().__init__(64 * 1024 * 1024)
        self.reads = 0
        self.corrupted: tuple[bytes, int] | None = None

    def get(self, key: bytes, touch: float | None = None, bump: bool = True) -> Item | None:
        item = super().get(key, touch, bump)
        if item is not None and len(item.value) >= 2 and not item.value.isdigit():
            self.reads += 1
            if self.reads == CORRUPT_AT:
                i = len(item.value) // 2
                item.value = item.value[:i] + bytes([item.value[i] ^ 0x20]) + item.value[i + 1:]
                self.corrupted = (key, i)
        return item


class FaultyStore(MemoryStore):
    """A store that breaks one rule from its ``at``-th chance on: ``cas`` refuses a compare-and-swap
    whose token is right, ``counter`` answers incr/decr one off, ``expiry`` keeps expiring sets
    forever. ``broken`` records the keys it broke (a later write may hide one break, not all)."""

    def __init__(self, fault: str, at: int = 5) -> None:
        super().__init__(64 * 1024 * 1024)
        self.fault = fault
        self.chances = at
        self.broken: set[bytes] = set()

    def _now(self) -> bool:
        self.chances -= 1
        return self.chances <= 0

    def store(self, mode: Mode, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0,
              cas: int = 0, invalidate: bool = False) -> tuple[Status, int]:
        if self.fault == "cas" and cas:  # text cas; meta and binary sets that carry a token
            old = super().get(key, None, False)
            if old is not None and old.cas == cas and self._now():
                self.broken.add(key)
                return Status.EXISTS, 0
        if self.fault == "expiry" and exptime > 0 and self._now():
            self.broken.add(key)
            exptime = 0.0
        return super().store(mode, key, value, flags, exptime, cas, invalidate)

    def arith(self, key: bytes, delta: int, incr: bool = True, initial: int | None = None,
              exptime: float = 0.0, cas: int = 0) -> tuple[Status, int, int]:
        status, value, new_cas = super().arith(key, delta, incr, initial, exptime, cas)
        if self.fault == "counter" and status == Status.STORED and self._now():
            self.broken.add(key)
            value += 1
            super().store(Mode.SET, key, b"%d" % value)
        return status, value, new_cas


@contextlib.contextmanager
def corrupting_server(store: MemoryStore | None = None) -> Iterator[tuple[int, MemoryStore]]:
    """A hoard server, in a thread of this process, over a store that breaks a rule
    (by default: corrupts one value)."""
    port = free_port()
    settings = Settings(listen=[f"127.0.0.1:{port}"], port=port)
    store = store if store is not None else CorruptingStore()
    server = Server(settings, store)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(server.serve(lambda _: started.set())),
                              daemon=True)
    thread.start()
    assert started.wait(10), "the corrupting server did not start"
    try:
        yield port, store
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join(10)
        loop.close()


def verify_argv(port: int, protocol: str, *extra: str) -> list[str]:
    return hoard_argv("bench", f"127.0.0.1:{port}", f"--{protocol}", "--verify", "-n", "1500", "-c", "3",
                      "--keys", "20", "-q", *extra)


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    redis = require_binary("redis-server")
    with ExitStack() as stack:
        rport = free_port()
        stack.enter_context(running([redis, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no"], port=rport))
        mc = stack.enter_context(memcached())
        hs = stack.enter_context(hoard_server())
        targets = {f"memcached {p}": verify_argv(mc, p) for p in ("text", "meta", "binary")}
        targets["redis resp"] = verify_argv(rport, "resp", "--json")
        targets.update({f"hoard {p}": verify_argv(hs, p) for p in ("text", "meta", "binary", "resp", "distcache")})
        procs = {name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, argv in targets.items()}
        results: dict[str, subprocess.CompletedProcess[str]] = {}
        try:
            for name, proc in procs.items():
                out, err = proc.communicate(timeout=TIMEOUT)
                results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        yield results


@pytest.mark.parametrize("target", ["memcached text", "memcached meta", "memcached binary", "hoard text",
                                    "hoard meta", "hoard binary", "hoard resp", "hoard distcache"])
def test_verify_passes_against_correct_servers(runs: dict[str, subprocess.CompletedProcess[str]],
                                               target: str) -> None:
    run = runs[target]
    assert run.returncode == 0, run.stdout + run.stderr
    first, ops, checked = run.stdout.strip().splitlines()
    assert re.fullmatch(r"verify 127\.0\.0\.1:\d+ \(\w+\): 1,500 operations, all replies as the model predicted "
                        r"\(seed \d+\)", first), first
    names = {part.split()[0] for part in ops.strip().split(", ")}
    expected = {"get", "set", "add", "delete"}
    if target.split()[1] in ("text", "meta", "binary"):
        expected |= {"cas", "incr", "decr"}
    assert expected <= names, ops
    m = re.search(r"([\d,]+) values compared byte for byte", checked)
    assert m and int(m.group(1).replace(",", "")) > 100, checked
    m = re.search(r"([\d,]+) expiries checked", checked)
    assert m and int(m.group(1).replace(",", "")) > 0, checked


def test_verify_json_against_redis(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    run = runs["redis resp"]
    assert run.returncode == 0, run.stdout + run.stderr
    out = json.loads(run.stdout)
    assert out["verify"] == "ok" and out["ops"] == 1500
    assert {"incr", "decr", "get", "set"} <= set(out["by_op"]) and "cas" not in out["by_op"]
    assert out["values_checked"] > 100 and out["bytes_checked"] > out["values_checked"]


@pytest.mark.parametrize("protocol", ["text", "meta", "binary", "resp", "distcache"])
def test_verify_stops_at_the_corrupted_value(protocol: str) -> None:
    with corrupting_server() as (port, store):
        run = subprocess.run(verify_argv(port, protocol, "--seed", "11", "-n", "5000"),
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert isinstance(store, CorruptingStore) and store.corrupted is not None
    key, offset = store.corrupted
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(rf"DISCREPANCY at operation #\d+ after [\d,]+ correct ones \({protocol}, connection \d, "
                        r"seed 11\)", lines[0]), lines
    assert lines[1] == f"  operation: get {key.decode()}", lines
    assert lines[2].startswith("  request:   b'")
    assert lines[3].startswith("  expected:  ")
    assert re.match(rf"  got:       \d+ B \(sha256 \w+, starts \w+(\.\.\.)?\); first difference at byte {offset} "
                    r"of \d+: expected 0x[0-9a-f]{2}, got 0x[0-9a-f]{2}", lines[4]), lines
    assert lines[5] == f"  history of {key.decode()} (latest last):"
    size = re.match(r"  expected:  (\d+) B", lines[3])
    assert size, lines
    # the history shows the write that stored the expected value
    assert any(re.search(rf"#\d+ (set|add|cas|expiring_set) {size.group(1)} B", ln) for ln in lines[6:]), lines


@pytest.mark.parametrize(("fault", "protocol", "what"), [
    ("cas", "text", r"cas \S+ with the current token \d+"),
    ("cas", "meta", r"cas \S+ with the current token \d+"),
    ("cas", "binary", r"cas \S+ with the current token \d+"),
    ("counter", "text", r"(incr|decr) \S+ \d+"),
    ("counter", "meta", r"(incr|decr) \S+ \d+"),
    ("counter", "binary", r"(incr|decr) \S+ \d+"),
    ("expiry", "text", r"get \S+"),
    ("expiry", "distcache", r"get \S+"),
])
def test_verify_catches_each_kind_of_broken_rule(fault: str, protocol: str, what: str) -> None:
    """A CAS refused with the right token, a counter one off, an expired item still served:
    each stops the run at the operation that shows it, naming the key the store broke."""
    with corrupting_server(FaultyStore(fault)) as (port, store):
        run = subprocess.run(verify_argv(port, protocol, "--seed", "5", "-n", "3000", "-c", "1"),
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert isinstance(store, FaultyStore) and store.broken, "the fault never got its chance"
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("DISCREPANCY at operation #"), lines
    assert re.fullmatch(rf"  operation: {what}", lines[1]), lines
    assert lines[1].split()[2].encode() in store.broken, (store.broken, lines)
