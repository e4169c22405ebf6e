"""``scatterhoard.SessionCache`` / ``AsyncSessionCache``: the distcache session API in the client package.

The same scenario runs over every protocol (text, meta, binary through the
client; distcache through the distcache client) against ``hoard server``,
and over the memcached protocols against a real memcached, sync and async,
with identical answers.  On ``hoard server`` a session written over one
protocol is read over each of the others.  A dead server gives misses, or
exceptions with ``strict=True``.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import scatterhoard
from scatterhoard import AsyncSessionCache, SessionCache
from scatterhoard.distcache import SessionCache as DistcacheSessionCache
from scatterhoard.errors import CacheConnectionError, ConfigError
from tests.support import free_port, hoard_server, recv_until
from tests.test_client_commands import quick_memcached

pytestmark = pytest.mark.timeout(120)


class Blocking:
    """An AsyncSessionCache driven from blocking code, so one scenario covers both."""

    def __init__(self, cache: AsyncSessionCache) -> None:
        self.cache = cache
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.cache, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        method: Callable[..., Coroutine[Any, Any, Any]] = attr
        return lambda *args: self.loop.run_until_complete(method(*args))

    def close(self) -> None:
        self.loop.run_until_complete(self.cache.close())
        self.loop.close()


def make(io: str, servers: Any, **options: Any) -> Any:
    if io == "sync":
        return SessionCache(servers, **options)
    return Blocking(AsyncSessionCache(servers, **options))


@pytest.fixture(scope="module")
def memcached_port() -> Iterator[int]:
    with quick_memcached() as port:
        yield port


@pytest.fixture(scope="module")
def hoard_port() -> Iterator[int]:
    with hoard_server() as port:
        yield port


def ttl(port: int, key: bytes) -> int | None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"mg " + key + b" t\r\n")
        line = recv_until(s, b"\r\n")
    return None if line.startswith(b"EN") else int(line[4:].strip())


def scenario(c: Any, tag: str) -> list[object]:
    out: list[object] = []

    def step(got: object, want: object) -> None:
        assert got == want, f"step {len(out)}: {got!r} != {want!r}"
        out.append(got)

    sid = b"sid-" + tag.encode()
    c.remove(sid)
    step(c.get(sid), None)
    step(c.have(sid), False)
    step(c.add(sid, b"state \x00\r\nEND\r\n", 300_000), True)
    step(c.add(sid, b"other", 300_000), False)  # an existing session is never overwritten
    step(c.get(sid), b"state \x00\r\nEND\r\n")
    step(c.have(sid), True)
    step(c.remove(sid), True)
    step(c.remove(sid), False)
    step(c.have(sid), False)
    step(c.add(sid + b"-gone", b"x", 0), True)  # timeout 0: over at once
    step(c.get(sid + b"-gone"), None)
    big = bytes(range(256)) * 100
    step(c.add(sid + b"-big", big, 60_000), True)
    step(c.get(sid + b"-big"), big)
    for bad in (lambda: c.add(b"", b"x", 1000), lambda: c.add(b"i" * 65, b"x", 1000),
                lambda: c.add(sid, b"", 1000), lambda: c.add(sid, b"x", 604_800_001), lambda: c.get(b"")):
        with pytest.raises(ValueError):
            bad()
    out.append("ValueErrors")
    return out


TRANSCRIPTS: list[list[object]] = []
COMBOS = [(b, io, p) for b in ("hoard", "memcached") for io in ("sync", "async")
          for p in ("text", "meta", "binary", "distcache") if not (b == "memcached" and p == "distcache")]


@pytest.mark.parametrize(("backend", "io", "protocol"), COMBOS, ids=["-".join(c) for c in COMBOS])
def test_same_answers_everywhere(request: pytest.FixtureRequest, backend: str, io: str, protocol: str) -> None:
    port = request.getfixturevalue(f"{backend}_port")
    c = make(io, f"127.0.0.1:{port}", protocol=protocol, strict=True)
    try:
        transcript = scenario(c, f"{backend}-{io}-{protocol}")
    finally:
        c.close()
    TRANSCRIPTS.append(transcript)
    assert all(t == transcript for t in TRANSCRIPTS)


def test_timeouts_reach_the_server(memcached_port: int) -> None:
    with SessionCache(f"127.0.0.1:{memcached_port}", strict=True) as c:
        assert c.add(b"ttl-1", b"x", 1500)  # rounded up to 2 s
        assert c.add(b"ttl-2", b"x", 300_000)
    left = ttl(memcached_port, b"ttl-1")
    assert left is not None and 0 <= left <= 2
    left = ttl(memcached_port, b"ttl-2")
    assert left is not None and 2 < left <= 300


@pytest.mark.parametrize("writer", ["text", "meta", "binary", "distcache"])
def test_one_store_for_every_protocol(hoard_port: int, writer: str) -> None:
    """On hoard server a session added over one protocol is read back over all the others."""
    address = f"127.0.0.1:{hoard_port}"
    sid = b"shared-" + writer.encode()
    with SessionCache(address, protocol=writer, strict=True) as w:
        w.remove(sid)
        assert w.add(sid, b"written over " + writer.encode(), 60_000)
    for reader in ("text", "meta", "binary", "distcache"):
        with SessionCache(address, protocol=reader, strict=True) as r:
            assert r.get(sid) == b"written over " + writer.encode(), reader
            assert r.have(sid) is True
    with DistcacheSessionCache(address, strict=True) as original:  # scatterhoard.distcache still works
        assert original.get(sid) == b"written over " + writer.encode()
        assert original.remove(sid) is True


def test_many_servers_route_like_the_client(memcached_port: int, hoard_port: int) -> None:
    servers = [f"127.0.0.1:{memcached_port}", f"127.0.0.1:{hoard_port}"]
    with SessionCache(servers, strict=True) as c:
        ids = [b"route-%d" % i for i in range(40)]
        for sid in ids:
            c.remove(sid)
            assert c.add(sid, sid, 60_000)
        assert c.client is not None
        router = c.client.core.router
        for sid in ids:
            port = (memcached_port, hoard_port)[router.index_for(sid)]
            assert ttl(port, sid) is not None  # on the server the router names
        assert {router.index_for(sid) for sid in ids} == {0, 1}
        assert all(c.get(sid) == sid for sid in ids)


@pytest.mark.parametrize("protocol", ["text", "distcache"])
@pytest.mark.parametrize("io", ["sync", "async"])
def test_dead_server(io: str, protocol: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    quiet = make(io, dead, protocol=protocol)
    try:
        assert quiet.add(b"s", b"x", 1000) is False
        assert quiet.get(b"s") is None and quiet.have(b"s") is False and quiet.remove(b"s") is False
    finally:
        quiet.close()
    strict = make(io, dead, protocol=protocol, strict=True)
    try:
        with pytest.raises(CacheConnectionError):
            strict.get(b"s")
    finally:
        strict.close()


def test_options() -> None:
    assert scatterhoard.SessionCache is SessionCache
    with pytest.raises(ConfigError, match="one server"):
        SessionCache(["127.0.0.1:1", "127.0.0.1:2"], protocol="distcache")
    with pytest.raises(ConfigError, match="strict"):
        SessionCache("127.0.0.1:1", on_error="raise")
    with pytest.raises(ConfigError, match="client options"):
        SessionCache("127.0.0.1:1", protocol="distcache", hash="md5")
    with pytest.raises(ConfigError, match="protocol"):
        SessionCache("127.0.0.1:1", protocol="resp")
