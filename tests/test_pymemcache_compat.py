"""pymemcache (Client and HashClient) gets the same results from hoard server as from memcached."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheClientError, MemcacheIllegalInputError, MemcacheServerError

from tests.support import hoard_server, memcached

Scenario = Callable[[Any], list[object]]


def _capture(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except (MemcacheClientError, MemcacheServerError, MemcacheIllegalInputError) as exc:
        return type(exc).__name__


def basic(c: Any) -> list[object]:
    r: list[object] = []
    r.append(c.set("a", b"1"))
    r.append(c.get("a"))
    r.append(c.get("missing"))
    r.append(c.set_many({"x": b"1", "y": b"22", "z": b"333"}))
    r.append(sorted(c.get_many(["x", "y", "z", "nope"]).items()))
    r.append(c.add("a", b"2", noreply=False))
    r.append(c.add("new", b"2", noreply=False))
    r.append(c.replace("nokey", b"2", noreply=False))
    r.append(c.replace("a", b"3", noreply=False))
    r.append(c.append("a", b"app", noreply=False))
    r.append(c.prepend("a", b"pre", noreply=False))
    r.append(c.append("nokey", b"x", noreply=False))
    r.append(c.get("a"))
    r.append(c.delete("a", noreply=False))
    r.append(c.delete("a", noreply=False))
    r.append(c.delete_many(["x", "y", "nope"], noreply=False))
    r.append(c.get_many(["x", "y", "z"]))
    return r


def counters(c: Any) -> list[object]:
    r: list[object] = []
    r.append(c.incr("cnt", 1))
    r.append(c.set("cnt", b"10"))
    r.append(c.incr("cnt", 5))
    r.append(c.decr("cnt", 100))
    r.append(c.incr("cnt", 2**64 - 1))
    r.append(c.set("big", b"18446744073709551615"))
    r.append(c.incr("big", 2))
    r.append(c.set("txt", b"abc"))
    r.append(_capture(lambda: c.incr("txt", 1)))
    r.append(c.set("pad", b"100"))
    r.append(c.decr("pad", 91))
    r.append(c.get("pad"))
    return r


def cas_and_touch(c: Any) -> list[object]:
    r: list[object] = []
    r.append(c.set("k", b"v1"))
    value, token = c.gets("k")
    r.append(value)
    r.append(c.cas("k", b"v2", token, noreply=False))
    r.append(c.cas("k", b"v3", token, noreply=False))
    r.append(c.cas("nokey", b"v", b"1", noreply=False))
    r.append(c.gets("nokey"))
    r.append(c.touch("k", 100, noreply=False))
    r.append(c.touch("nokey", 100, noreply=False))
    r.append(c.gat("k", 100) if hasattr(c, "gat") else None)
    r.append(c.get("k"))
    return r


def expiry(c: Any) -> list[object]:
    r: list[object] = []
    r.append(c.set("e1", b"x", expire=1))
    r.append(c.set("e2", b"x", expire=100))
    r.append(c.set("e3", b"x", expire=-1))
    r.append(c.get("e1"))
    r.append(c.get("e3"))
    time.sleep(2.2)
    r.append(c.get("e1"))
    r.append(c.get("e2"))
    return r


def sizes_and_flush(c: Any) -> list[object]:
    r: list[object] = []
    r.append(c.set("k" * 250, b"long key"))
    r.append(c.get("k" * 250))
    r.append(_capture(lambda: c.set("k" * 251, b"x")))
    big = b"b" * (1024 * 1024 - 512)
    r.append(c.set("bigv", big))
    r.append(c.get("bigv") == big)
    r.append(_capture(lambda: c.set("toobig", b"t" * (1024 * 1024 + 10), noreply=False)))
    r.append(c.get("toobig"))
    r.append(c.set("f", b"x"))
    r.append(c.flush_all(noreply=False))
    r.append(c.get("f"))
    r.append(isinstance(c.version(), bytes) if hasattr(c, "version") and not isinstance(c, HashClient) else None)
    return r


def stats_shape(c: Any) -> list[object]:
    if isinstance(c, HashClient):
        return []
    s = c.stats()
    keys = [b"curr_items", b"total_items", b"bytes", b"evictions", b"cmd_get", b"cmd_set", b"get_hits",
            b"get_misses", b"curr_connections", b"limit_maxbytes", b"uptime", b"pid"]
    return [k for k in keys if k not in s]


SCENARIOS: dict[str, Scenario] = {
    "basic": basic, "counters": counters, "cas_and_touch": cas_and_touch, "expiry": expiry,
    "sizes_and_flush": sizes_and_flush, "stats_shape": stats_shape,
}


@contextlib.contextmanager
def _servers(kind: str, n: int) -> Iterator[list[int]]:
    start = memcached if kind == "memcached" else hoard_server
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(start()) for _ in range(n)]


def _client(kind: str, ports: list[int], hashed: bool) -> Any:
    if hashed:
        return HashClient([("127.0.0.1", p) for p in ports], use_pooling=False, timeout=5, connect_timeout=5)
    return Client(("127.0.0.1", ports[0]), timeout=5, connect_timeout=5)


@pytest.fixture(scope="module")
def deployments() -> Iterator[dict[str, list[int]]]:
    with _servers("memcached", 2) as ref, _servers("hoard", 2) as ours:
        yield {"memcached": ref, "hoard": ours}


@pytest.mark.parametrize("hashed", [False, True], ids=["Client", "HashClient"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_results(deployments: dict[str, list[int]], name: str, hashed: bool) -> None:
    results = {}
    for kind, ports in deployments.items():
        client = _client(kind, ports, hashed)
        client.flush_all()
        results[kind] = SCENARIOS[name](client)
        client.close()
    assert results["hoard"] == results["memcached"]
    if name == "stats_shape":
        assert results["hoard"] == []
