"""SessionCache (blocking) and AsyncSessionCache (asyncio): API, failures, reconnects."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from scatterhoard.distcache import AsyncSessionCache, SessionCache
from scatterhoard.errors import CacheConnectionError, CacheTimeoutError
from scatterhoard.protocol import distcache as dc
from tests.support import free_port, hoard_server, recv_until


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections, reads, never answers."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        lsock.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(lsock.accept()[0])
            except TimeoutError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield int(lsock.getsockname()[1])
    stop.set()
    t.join()
    for c in conns:
        c.close()
    lsock.close()


def test_blocking_api() -> None:
    with hoard_server() as port, SessionCache(f"IP:127.0.0.1:{port}", strict=True) as cache:
        big = bytes(range(256)) * 120  # 30720 bytes: 15 frames
        assert cache.add(b"s1", big, 60_000)
        assert cache.add(b"s1", b"again", 60_000) is False
        assert cache.add_result(b"s1", b"again", 60_000) == dc.RESULT_ADD_DUPLICATE
        assert cache.get(b"s1") == big
        assert cache.have(b"s1") and not cache.have(b"s2")
        assert cache.remove(b"s1") and not cache.remove(b"s1")
        assert cache.get(b"s1") is None


def test_arguments_the_protocol_cannot_carry() -> None:
    cache = SessionCache("127.0.0.1:1")
    with pytest.raises(ValueError):
        cache.add(b"", b"x", 1000)
    with pytest.raises(ValueError):
        cache.add(b"i" * 65, b"x", 1000)
    with pytest.raises(ValueError):
        cache.add(b"id", b"", 1000)
    with pytest.raises(ValueError):
        cache.add(b"id", b"x" * 32767, 1000)
    with pytest.raises(ValueError):
        cache.add(b"id", b"x", dc.MAX_TIMEOUT_MS + 1)
    with pytest.raises(ValueError):
        cache.get(b"i" * 65)


def test_dead_cache_logs_and_misses_unless_strict(caplog: pytest.LogCaptureFixture) -> None:
    addr = f"127.0.0.1:{free_port()}"
    cache = SessionCache(addr, timeout=1)
    with caplog.at_level(logging.WARNING, logger="scatterhoard.distcache"):
        assert cache.get(b"x") is None
        assert cache.add(b"x", b"y", 1000) is False
        assert cache.have(b"x") is False and cache.remove(b"x") is False
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1  # once per outage
    with pytest.raises(CacheConnectionError):
        SessionCache(addr, strict=True).get(b"x")


def test_timeouts(silent_server: int) -> None:
    addr = f"127.0.0.1:{silent_server}"
    t0 = time.monotonic()
    assert SessionCache(addr, timeout=0.3).get(b"x") is None
    assert time.monotonic() - t0 < 2
    with pytest.raises(CacheTimeoutError):
        SessionCache(addr, strict=True).get(b"x", timeout=0.2)


def test_reconnects_after_a_server_restart() -> None:
    port = free_port()
    cache = SessionCache(f"127.0.0.1:{port}", strict=True)
    with hoard_server(port):
        assert cache.add(b"a", b"1", 60_000)
    with hoard_server(port):
        # the old connection is dead: the call retries once on a fresh one, no error
        assert cache.get(b"a") is None
        assert cache.add(b"a", b"2", 60_000) and cache.get(b"a") == b"2"
    cache.close()


def test_async_pipelines_on_one_connection() -> None:
    with hoard_server() as port:

        async def main() -> None:
            async with AsyncSessionCache(f"127.0.0.1:{port}", strict=True) as cache:
                ids = [b"async-%d" % i for i in range(300)]
                assert all(await asyncio.gather(*(cache.add(i, i * 40, 60_000) for i in ids)))
                got = await asyncio.gather(*(cache.get(i) for i in ids))
                assert got == [i * 40 for i in ids]
                assert await cache.add_result(ids[0], b"x", 1000) == dc.RESULT_ADD_DUPLICATE
                assert await cache.have(ids[1]) and await cache.remove(ids[1])
                assert not await cache.have(ids[1])
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.sendall(b"stats\r\n")
                    stats = recv_until(s, b"END\r\n")
                assert b"STAT curr_connections 2\r\n" in stats  # ours and the stats one

        asyncio.run(main())


def test_async_failures(silent_server: int) -> None:
    async def main() -> None:
        dead = AsyncSessionCache(f"127.0.0.1:{free_port()}")
        assert await dead.get(b"x") is None and await dead.add(b"x", b"y", 10) is False
        with pytest.raises(CacheConnectionError):
            await AsyncSessionCache(f"127.0.0.1:{free_port()}", strict=True).have(b"x")
        silent = AsyncSessionCache(f"127.0.0.1:{silent_server}", timeout=0.2, strict=True)
        with pytest.raises(CacheTimeoutError):
            await silent.get(b"x")
        await silent.close()

    asyncio.run(main())


def test_async_reconnects() -> None:
    port = free_port()

    async def main() -> None:
        cache = AsyncSessionCache(f"127.0.0.1:{port}", strict=True)
        with hoard_server(port):
            assert await cache.add(b"k", b"v", 60_000)
        await asyncio.sleep(0.2)  # the loop learns that the connection is gone
        with pytest.raises(CacheConnectionError):
            await cache.get(b"k")
        with hoard_server(port):
            assert await cache.get(b"k") is None  # a new connection to the new server
            assert await cache.add(b"k", b"v2", 60_000) and await cache.get(b"k") == b"v2"
        await cache.close()

    asyncio.run(main())
