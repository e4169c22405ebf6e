"""The engine and handler API: RecordStore semantics, errors per protocol, handlers over every
protocol, async engines, and a slow engine that must not hold up other clients.

Servers here are real ``Server`` objects listening on real sockets, run on an
event loop in a background thread (so the test can hand them engine objects),
or ``hoard server`` subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.dict_server import DictEngine
from scatterhoard.distcache import SessionCache
from scatterhoard.engines import (
    AccessDenied,
    AsyncRecordStore,
    Call,
    Forward,
    Handler,
    Item,
    MemoryStore,
    Mode,
    Store,
)
from scatterhoard.engines.sqlite import SqliteStore
from scatterhoard.engines.tiered import TieredStore
from scatterhoard.protocol import binary as b
from scatterhoard.server import Server, Settings
from tests.support import chat, free_port, hoard_argv, recv_until, temp_dir


class SlowEngine(DictEngine):
    """Sleeps in every primitive: a database on a slow disk."""

    blocking = True
    delay = 0.3

    def load(self, key: bytes) -> Item | None:
        time.sleep(self.delay)
        return super().load(key)

    def save(self, key: bytes, item: Item) -> None:
        time.sleep(self.delay)
        super().save(key, item)


class NoCasEngine(DictEngine):
    capabilities = frozenset({"arith", "touch", "flush"})


class AsyncDictEngine(AsyncRecordStore):
    """``async def`` primitives, each awaiting the loop once."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[bytes, Item] = {}
        self.loop_thread: set[str] = set()

    async def aload(self, key: bytes) -> Item | None:
        await asyncio.sleep(0)
        self.loop_thread.add(threading.current_thread().name)
        return self.items.get(key)

    async def asave(self, key: bytes, item: Item) -> None:
        await asyncio.sleep(0)
        self.items[key] = item

    async def aremove(self, key: bytes) -> bool:
        return self.items.pop(key, None) is not None

    async def aclear(self) -> None:
        self.items.clear()


class Recorder(Handler):
    """Records (protocol, command, op, key) of every call; refuses keys under ``deny:``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, bytes]] = []

    def handle(self, call: Call, forward: Forward) -> Any:
        self.calls.append((call.context.protocol, call.context.command, call.op, call.key))
        if call.key.startswith(b"deny:"):
            raise AccessDenied("no access to deny:*")
        if call.op == "store" and call.key.startswith(b"upper:"):
            call = call.with_(value=call.value.upper())
        return forward(call)


# -- servers on a background loop -------------------------------------------------------------------
@contextlib.contextmanager
def serving(*specs: tuple[Store, Sequence[Handler]], workers: int = 16) -> Iterator[list[int]]:
    """Run one Server per (engine, handlers) on one event loop in a thread; yields their ports."""
    ports = [free_port() for _ in specs]
    servers = [Server(Settings(listen=[f"127.0.0.1:{port}"], port=port), engine, handlers, workers=workers)
               for port, (engine, handlers) in zip(ports, specs, strict=True)]
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def main() -> None:
        for server in servers:
            await server.start()
        started.set()
        await asyncio.gather(*(server.run_until_stopped() for server in servers))

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert started.wait(10), "servers did not start"
    try:
        yield ports
    finally:
        for server in servers:
            loop.call_soon_threadsafe(server.stop)
        thread.join(15)
        loop.close()


def binary_call(port: int, packets: bytes, count: int) -> list[b.Packet]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(packets)
        parser = b.BinaryParser(None, magic=b.RESPONSE_MAGIC)
        got: list[b.Packet] = []
        while len(got) < count:
            data = s.recv(65536)
            assert data, f"connection closed after {len(got)} replies"
            got.extend(p for p in parser.feed(data) if isinstance(p, b.Packet))
        return got


def store_packet(opcode: int, key: bytes, value: bytes, cas: int = 0) -> bytes:
    return b.encode_request(opcode, key, struct.pack(">II", 0, 0), value, cas=cas)


# -- RecordStore answers exactly as the memory engine ---------------------------------------------------
_keys = st.sampled_from([b"a", b"b", b"n"])
_ops = st.lists(st.one_of(
    st.tuples(st.just("store"), st.sampled_from(list(Mode)), _keys, st.sampled_from([b"1", b"xy", b"18446744073709551615"]),
              st.integers(0, 3), st.sampled_from([0.0, -1.0]), st.integers(0, 6)),
    st.tuples(st.just("get"), _keys, st.booleans()),
    st.tuples(st.just("delete"), _keys, st.integers(0, 6)),
    st.tuples(st.just("arith"), _keys, st.integers(0, 2**64 - 1), st.booleans(), st.sampled_from([None, 5]),
              st.integers(0, 6)),
    st.tuples(st.just("touch"), _keys, st.sampled_from([0.0, -1.0])),
    st.tuples(st.just("flush"),),
), max_size=40)


def _apply(store: Store, ops: list[tuple[Any, ...]]) -> list[object]:
    results: list[object] = []
    for op in ops:
        name = op[0]
        if name == "store":
            _, mode, key, value, flags, exptime, cas = op
            results.append(store.store(mode, key, value, flags, exptime, cas))
        elif name == "get":
            item = store.get(op[1], bump=op[2])
            results.append(None if item is None else (item.value, item.flags, item.cas))
        elif name == "delete":
            results.append(store.delete(op[1], op[2]))
        elif name == "arith":
            _, key, delta, incr, initial, cas = op
            results.append(store.arith(key, delta, incr, initial, 0.0, cas))
        elif name == "touch":
            results.append(store.touch(op[1], op[2]))
        else:
            store.flush_all()
    return results


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_record_store_answers_like_the_memory_engine(ops: list[tuple[Any, ...]]) -> None:
    expected = _apply(MemoryStore(1 << 24), ops)
    assert _apply(DictEngine(), ops) == expected
    with temp_dir() as d:
        sqlite = SqliteStore(f"{d}/x.db", durable=False)
        try:
            assert _apply(sqlite, ops) == expected
        finally:
            sqlite.close()
        tiered = TieredStore(MemoryStore(1 << 20), SqliteStore(f"{d}/y.db"))
        try:
            assert _apply(tiered, ops) == expected
        finally:
            tiered.close()


# -- capabilities and refusals, in every protocol ---------------------------------------------------------
def test_missing_capability_gets_each_protocols_error() -> None:
    with serving((NoCasEngine(), ())) as (port,):
        assert chat(port, b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        reply = chat(port, b"cas k 0 0 1 1\r\nw\r\nget k\r\n", b"END\r\n")
        assert reply.startswith(b"SERVER_ERROR the NoCasEngine engine does not support cas\r\n"), reply
        assert reply.endswith(b"VALUE k 0 1\r\nv\r\nEND\r\n")  # the connection goes on
        assert chat(port, b"append k 0 0 1\r\nx\r\n").startswith(b"SERVER_ERROR ")
        assert chat(port, b"ms k 1 C5\r\nz\r\n").startswith(b"SERVER_ERROR ")  # meta with a cas
        replies = binary_call(port, b.encode_request(b.OP_APPEND, b"k", b"", b"x") + b.encode_request(b.OP_NOOP), 2)
        assert [(p.opcode, p.status) for p in replies] == [(b.OP_APPEND, 0x83), (b.OP_NOOP, 0)]
        assert b"does not support append" in replies[0].value
        r = redis.Redis(port=port)
        with pytest.raises(redis.ResponseError, match="does not support append"):
            r.append("k", "x")
        assert r.get("k") == b"v"
        r.close()


def test_handler_sees_every_protocol_in_one_form() -> None:
    recorder = Recorder()
    with serving((MemoryStore(), [recorder])) as (port,):
        assert chat(port, b"set upper:a 0 0 3\r\nabc\r\nget upper:a\r\n", b"END\r\n") == \
            b"STORED\r\nVALUE upper:a 0 3\r\nABC\r\nEND\r\n"
        assert chat(port, b"get deny:x\r\n") == b"CLIENT_ERROR no access to deny:*\r\n"
        assert chat(port, b"mg deny:x v\r\nmn\r\n", b"MN\r\n") == b"CLIENT_ERROR no access to deny:*\r\nMN\r\n"
        replies = binary_call(port, b.encode_request(b.OP_GETK, b"deny:x") + b.encode_request(b.OP_GETK, b"upper:a"), 2)
        assert [p.status for p in replies] == [b.STATUS_AUTH_ERROR, 0]
        assert replies[1].value == b"ABC"
        r = redis.Redis(port=port)
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.set("deny:x", "1")
        assert r.set("upper:r", "xyz") and r.get("upper:r") == b"XYZ"
        r.close()
        cache = SessionCache(f"IP:127.0.0.1:{port}")
        assert cache.add(b"deny:s", b"data", 10_000) is False
        assert cache.add(b"upper:s", b"data", 10_000) is True
        assert cache.get(b"upper:s") == b"DATA"
        cache.close()
    seen = {(proto, cmd, op) for proto, cmd, op, key in recorder.calls if key.startswith(b"deny:")}
    assert seen == {("text", "get", "get"), ("meta", "mg", "get"), ("binary", "GETK", "get"),
                    ("resp", "SET", "store"), ("distcache", "ADD", "store")}


def test_async_engine_runs_its_coroutines_on_the_loop() -> None:
    engine = AsyncDictEngine()
    with serving((engine, ())) as (port,):
        assert chat(port, b"set k 5 0 2\r\nhi\r\nincr n 1\r\nadd n 0 0 1\r\n7\r\nincr n 2\r\nget k\r\n",
                    b"END\r\n") == b"STORED\r\nNOT_FOUND\r\nSTORED\r\n9\r\nVALUE k 5 2\r\nhi\r\nEND\r\n"
    assert engine.loop_thread and not any(name.startswith("hoard-engine") for name in engine.loop_thread)


# -- a slow engine does not hold up anyone else -----------------------------------------------------------
#: The bound this test states: while the slow engine's calls (0.3 s each) keep 4 worker threads busy,
#: another client's ``version`` on the same server, and 50 get/set round trips on a memory-engine
#: server in the same process, each answer within 0.15 s -- half of one slow call. A blocked event
#: loop would make them wait at least one slow call.
BOUND = 0.15


def test_slow_engine_does_not_delay_other_clients() -> None:
    slow = SlowEngine()
    with serving((slow, ()), (MemoryStore(), ()), workers=8) as (slow_port, mem_port):
        stop = threading.Event()
        slow_replies: list[bytes] = []

        def hammer() -> None:
            with socket.create_connection(("127.0.0.1", slow_port), timeout=30) as s:
                while not stop.is_set():
                    s.sendall(b"get k\r\n")
                    slow_replies.append(recv_until(s, b"END\r\n", timeout=30))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # every hammer is inside a slow call now
        worst_version = worst_memory = 0.0
        with socket.create_connection(("127.0.0.1", slow_port), timeout=10) as v, \
                socket.create_connection(("127.0.0.1", mem_port), timeout=10) as m:
            for i in range(50):
                t0 = time.monotonic()
                v.sendall(b"version\r\n")
                assert recv_until(v, b"\r\n").startswith(b"VERSION ")
                worst_version = max(worst_version, time.monotonic() - t0)
                t0 = time.monotonic()
                m.sendall(b"set m%d 0 0 1\r\nx\r\nget m%d\r\n" % (i, i))
                assert recv_until(m, b"END\r\n") == b"STORED\r\nVALUE m%d 0 1\r\nx\r\nEND\r\n" % i
                worst_memory = max(worst_memory, time.monotonic() - t0)
        stop.set()
        for t in threads:
            t.join(10)
        assert slow_replies and all(r == b"END\r\n" for r in slow_replies)
        assert worst_version < BOUND, f"version took {worst_version:.3f}s while the engine was slow"
        assert worst_memory < BOUND, f"memory-engine requests took {worst_memory:.3f}s"


def test_blocking_engine_keeps_stats_and_pipelined_order() -> None:
    with temp_dir() as d, serving((SqliteStore(f"{d}/s.db"), ())) as (port,):
        clients = []
        for c in range(6):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"".join(b"set k%d_%d 0 0 3\r\n%03d\r\nget k%d_%d\r\n" % (c, i, i, c, i) for i in range(200)))
            clients.append(s)
        for c, s in enumerate(clients):
            want = b"".join(b"STORED\r\nVALUE k%d_%d 0 3\r\n%03d\r\nEND\r\n" % (c, i, i) for i in range(200))
            got = b""
            while len(got) < len(want):
                chunk = s.recv(65536)
                assert chunk
                got += chunk
            assert got == want
            s.close()
        stats = chat(port, b"stats\r\n", b"END\r\n").decode()
        assert "STAT cmd_set 1200\r\n" in stats and "STAT get_hits 1200\r\n" in stats
        assert "STAT curr_items 1200\r\n" in stats


def test_bad_engine_choice_is_one_line_and_nonzero_exit() -> None:
    import subprocess

    for args, message in [
        (["--engine", "nosuch"], "unknown engine 'nosuch'"),
        (["--engine", "sqlite"], "missing option path=FILE"),
        (["--engine", "sqlite", "--engine-opt", "path"], "expected NAME=VALUE"),
        (["--engine", "memory", "--engine-opt", "x=1"], "unknown option 'x'"),
        (["--engine", "nosuchmod.x:Y"], "cannot import nosuchmod.x"),
    ]:
        proc = subprocess.run(hoard_argv("server", "-p", str(free_port()), *args), capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr


def test_api_reference_in_docs_is_current() -> None:
    from scatterhoard.engines import apidoc
    from tests.support import ROOT

    text = (ROOT / "docs" / "engines.md").read_text()
    assert apidoc.MARKER in text
    assert apidoc.MARKER + text.split(apidoc.MARKER, 1)[1] == apidoc.render(), \
        "docs/engines.md is stale: python -m scatterhoard.engines.apidoc --write docs/engines.md"


def test_failing_disk_gets_server_error_and_the_connection_goes_on() -> None:
    with temp_dir() as d:
        engine = SqliteStore(f"{d}/ro.db", durable=True)
        engine.store(Mode.SET, b"k", b"old")
        engine.db.execute("PRAGMA query_only = 1")  # every write now fails inside SQLite
        with serving((engine, ())) as (port,):
            assert chat(port, b"set k 0 0 3\r\nnew\r\nget k\r\n", b"END\r\n") == \
                b"SERVER_ERROR sqlite: attempt to write a readonly database\r\nVALUE k 0 3\r\nold\r\nEND\r\n"
            replies = binary_call(port, store_packet(b.OP_SET, b"k", b"new") + b.encode_request(b.OP_GET, b"k"), 2)
            assert [p.status for p in replies] == [0x84, 0] and replies[1].value == b"old"
            r = redis.Redis(port=port)
            with pytest.raises(redis.ResponseError, match="readonly database"):
                r.set("k", "x")
            r.close()
