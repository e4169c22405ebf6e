"""Outages: a killed backend, ejection and revival, timeouts, garbage, pool limits.

Three real memcached backends on fixed ports; one of them is stopped and
later started again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scatterhoard import AsyncClient, Client
from scatterhoard.errors import CacheConnectionError, CacheTimeoutError, ServerError
from scatterhoard.routing import NoLiveServersError, Router
from tests.support import free_port, require_binary, stop_process, wait_for_port
from tests.test_client_commands import make_client, pool_of, quick_memcached

pytestmark = pytest.mark.timeout(120)


class Backends:
    """Three memcacheds whose processes can be killed and restarted on the same ports."""

    def __init__(self) -> None:
        self.ports = [free_port() for _ in range(3)]
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, i: int) -> None:
        argv = [require_binary("memcached"), "-l", "127.0.0.1", "-p", str(self.ports[i]), "-U", "0", "-t", "1"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]
        for attempt in range(50):
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for_port(self.ports[i], proc=proc)
            except RuntimeError:  # the port is not free again yet
                stop_process(proc, signal.SIGKILL)
                if attempt == 49:
                    raise
                time.sleep(0.1)
                continue
            self._procs[i] = proc
            return

    def stop(self, i: int) -> None:
        stop_process(self._procs.pop(i), signal.SIGKILL)

    def close(self) -> None:
        for i in list(self._procs):
            self.stop(i)

    @property
    def servers(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]


@pytest.fixture()
def three() -> Iterator[Backends]:
    backends = Backends()
    try:
        for i in range(3):
            backends.start(i)
        yield backends
    finally:
        backends.close()


def keys_on(servers: list[str], index: int, n: int = 5) -> list[str]:
    router = Router([s + ":1" for s in servers], hash="md5")
    out = [k for k in (f"key:{i}" for i in range(1000)) if router.index_for(k.encode()) == index]
    return out[:n]


@pytest.mark.parametrize("protocol", ["text", "meta", "binary"])
@pytest.mark.parametrize("io", ["sync", "async"])
def test_killed_backend_is_a_miss_then_recovers(three: Backends, io: str, protocol: str) -> None:
    c = make_client(io, three.servers, protocol=protocol, failure_limit=0, timeout=1000, connect_timeout=1000)
    try:
        victim = keys_on(three.servers, 1)
        others = keys_on(three.servers, 0) + keys_on(three.servers, 2)
        assert c.set_many({k: b"v" for k in victim + others}) == []
        three.stop(1)
        # every method answers a miss / False / None, nothing raises
        assert c.get(victim[0]) is None
        assert c.get(victim[0], b"d") == b"d"
        assert c.gets(victim[0]) == (None, None)
        assert c.get_many(victim + others) == {k: b"v" for k in others}
        assert c.set(victim[0], b"x") is False
        assert sorted(c.set_many({k: b"w" for k in victim[:2] + others[:2]})) == sorted(victim[:2])
        assert c.add(victim[1], b"x") is False
        assert c.cas(victim[1], b"x", 1) is False
        assert c.delete(victim[2]) is False
        assert c.delete_many(victim + others[:1]) is False
        assert c.incr(victim[3]) is None
        assert c.touch(victim[3], 10) is False
        assert c.gat(victim[3], 10) is None
        assert c.flush_all() is False  # flushes the others
        assert len(c.stats()) == 2 and len(c.version()) == 2
        assert c.get(others[0]) is None
        assert c.core.ejected == set()  # failure_limit=0: never ejected
        three.start(1)
        assert c.get(victim[0]) in (None, b"v")  # may still be a dead pooled connection
        assert c.set(victim[0], b"back") is True
        assert c.get(victim[0]) == b"back"
        assert len(c.version()) == 3
    finally:
        c.close()


@pytest.mark.parametrize("protocol", ["text", "meta", "binary"])
@pytest.mark.parametrize("io", ["sync", "async"])
def test_killed_backend_raises_when_asked_to(three: Backends, io: str, protocol: str) -> None:
    c = make_client(io, three.servers, protocol=protocol, on_error="raise", failure_limit=0, timeout=1000)
    try:
        victim = keys_on(three.servers, 1)
        others = keys_on(three.servers, 0)
        assert c.set(victim[0], b"v") and c.set(others[0], b"o")
        three.stop(1)
        for call in (lambda: c.get(victim[0]), lambda: c.set(victim[0], b"x"),
                     lambda: c.get_many([others[0], victim[0]]), lambda: c.incr(victim[0]),
                     lambda: c.delete_many(victim), lambda: c.stats()):
            with pytest.raises(CacheConnectionError):
                call()
        assert c.get(others[0]) == b"o"
        three.start(1)
        for _ in range(3):  # the first try may meet a connection from before the restart
            with contextlib.suppress(CacheConnectionError):
                if c.set(victim[0], b"back"):
                    break
        assert c.get(victim[0]) == b"back"
    finally:
        c.close()


@pytest.mark.parametrize("io", ["sync", "async"])
def test_ejection_rehashes_and_a_probe_brings_it_back(three: Backends, io: str) -> None:
    c = make_client(io, three.servers, on_error="raise", failure_limit=2, retry_timeout=300, timeout=1000)
    try:
        victim = keys_on(three.servers, 1, 20)
        assert c.set(victim[0], b"v")
        three.stop(1)
        for _ in range(2):
            with pytest.raises(CacheConnectionError):
                c.get(victim[0])
        assert c.core.ejected == {1}
        assert c.core.router.live == frozenset({0, 2})
        # ejected: its keys go to the other servers, nothing raises
        assert c.get(victim[0]) is None
        assert c.set_many({k: b"moved" for k in victim}) == []
        assert c.get_many(victim) == {k: b"moved" for k in victim}
        three.start(1)
        time.sleep(max(0.0, c.core._retry_at[1] - time.monotonic()) + 0.02)  # the retry time is over
        assert c.get(victim[0]) is None  # the probe succeeded: back on its own (fresh) server
        assert c.core.ejected == set()
        assert c.core.router.live == frozenset({0, 1, 2})
        assert c.set(victim[0], b"home") and c.get(victim[0]) == b"home"
    finally:
        c.close()


@pytest.mark.parametrize("io", ["sync", "async"])
def test_all_servers_ejected(io: str) -> None:
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    c = make_client(io, dead, on_error="raise", failure_limit=1, retry_timeout=60000, connect_timeout=500)
    try:
        with pytest.raises(CacheConnectionError):
            c.get_many([f"k{i}" for i in range(50)])
        assert c.core.ejected == {0, 1}
        with pytest.raises(NoLiveServersError):
            c.get("anything")
    finally:
        c.close()
    miss = make_client(io, dead, failure_limit=1, retry_timeout=60000)
    try:
        assert miss.get_many([f"k{i}" for i in range(50)]) == {}
        assert miss.get("anything") is None and miss.set("x", b"1") is False
        assert miss.stats() == {} and miss.flush_all() is False
    finally:
        miss.close()


@contextlib.contextmanager
def fake_server(reply: bytes | None, split: int = 0) -> Iterator[int]:
    """A TCP server that reads requests and answers ``reply`` to each read (None: never answers).

    ``split``: send the first ``split`` bytes of the reply on their own, then the rest 10 ms later.
    """
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conns.append(conn)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(0.1)
            threading.Thread(target=talk, args=(conn,), daemon=True).start()

    def talk(conn: socket.socket) -> None:
        while not stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if reply is not None:
                with contextlib.suppress(OSError):
                    if split:
                        conn.sendall(reply[:split])
                        time.sleep(0.01)
                    conn.sendall(reply[split:])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        for conn in conns:
            conn.close()
        listener.close()


@pytest.mark.parametrize("protocol", ["text", "meta", "binary"])
@pytest.mark.parametrize("io", ["sync", "async"])
def test_timeout(io: str, protocol: str) -> None:
    with fake_server(None) as port:
        c = make_client(io, f"127.0.0.1:{port}", protocol=protocol, on_error="raise", timeout=200,
                        failure_limit=0)
        try:
            start = time.monotonic()
            with pytest.raises(CacheTimeoutError):
                c.get("k")
            with pytest.raises(CacheTimeoutError):
                c.set_many({"a": b"1", "b": b"2"})
            assert time.monotonic() - start < 2.0
            assert pool_of(c).size == 0  # a timed-out connection is never reused
        finally:
            c.close()
        c = make_client(io, f"127.0.0.1:{port}", protocol=protocol, timeout=200)
        try:
            assert c.get("k") is None and c.set("k", b"v") is False
        finally:
            c.close()


@pytest.mark.parametrize("io", ["sync", "async"])
def test_garbage_reply_drops_the_connection(io: str) -> None:
    with fake_server(b"HELLO THERE\r\n") as port:
        c = make_client(io, f"127.0.0.1:{port}", on_error="raise", failure_limit=0)
        try:
            with pytest.raises(ServerError):
                c.get("k")
            assert pool_of(c).size == 0
        finally:
            c.close()


@pytest.fixture(scope="module")
def one_memcached() -> Iterator[int]:
    with quick_memcached() as port:
        yield port


def test_sync_pool_is_bounded_and_shared_by_threads(one_memcached: int) -> None:
    c = Client(f"127.0.0.1:{one_memcached}", max_pool_size=2, on_error="raise")
    c.set("shared", b"1")
    errors: list[BaseException] = []
    seen: list[int] = []

    def work() -> None:
        try:
            for _ in range(200):
                assert c.get("shared") == b"1"
                seen.append(pool_of(c).size)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert max(seen) <= 2
    c.close()


def test_async_pool_is_bounded_and_gets_are_concurrent(one_memcached: int) -> None:
    async def main(port: int) -> tuple[list[Any], int]:
        async with AsyncClient(f"127.0.0.1:{port}", max_pool_size=3, on_error="raise") as c:
            await c.set_many({f"k{i}": b"%d" % i for i in range(100)})
            results = await asyncio.gather(*(c.get(f"k{i}") for i in range(100)))
            return list(results), pool_of(c).size

    results, size = asyncio.run(main(one_memcached))
    assert results == [b"%d" % i for i in range(100)]
    assert size == 3


@pytest.mark.parametrize("io", ["sync", "async"])
def test_an_outage_is_logged_not_raised(io: str, caplog: pytest.LogCaptureFixture) -> None:
    server = f"127.0.0.1:{free_port()}"  # nothing listens there
    c = make_client(io, server, failure_limit=2, retry_timeout=60000)
    try:
        with caplog.at_level(logging.WARNING, logger="scatterhoard.client"):
            assert c.get("k") is None
            assert c.set("k", b"v") is False
            assert c.get("k") is None  # ejected by now: answered without trying
        messages = [r.getMessage() for r in caplog.records if r.name == "scatterhoard.client"]
        assert any(server in m and "failed" in m for m in messages), messages
        assert any(server in m and "ejected" in m for m in messages), messages
        assert c.core.ejected == {0}
    finally:
        c.close()
