"""Every client method against a real memcached and against ``hoard server``.

The same scenario runs for each combination of backend (memcached, hoard),
client (``Client``, ``AsyncClient``) and protocol (text, meta, binary); every
step asserts the same expected answer, and the whole transcript of answers
must be identical across the twelve combinations.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from scatterhoard import AsyncClient, Client
from scatterhoard.client import ValueTooLargeError
from scatterhoard.errors import ClientError
from tests.support import (
    free_port,
    hoard_server,
    recv_until,
    require_binary,
    stop_process,
    wait_for_port,
    wait_for_unix,
)

pytestmark = pytest.mark.timeout(120)

PAST = 30 * 24 * 3600 + 1  # over 30 days: an absolute unix time, long gone -> expired at once


class Blocking:
    """Runs an AsyncClient's coroutines on a private loop, so one scenario drives both clients."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        method: Callable[..., Coroutine[Any, Any, Any]] = attr
        return lambda *args, **kwargs: self.loop.run_until_complete(method(*args, **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


def pool_of(c: Any, server: int = 0) -> Any:
    """The connection pool of one server (sync or async client)."""
    client = c.client if isinstance(c, Blocking) else c
    return client._pools[server]


def make_client(io: str, servers: Any, **options: Any) -> Any:
    if io == "sync":
        return Client(servers, **options)
    return Blocking(AsyncClient(servers, **options))


@contextlib.contextmanager
def quick_memcached(port: int | None = None, unix_path: str | None = None) -> Iterator[int]:
    """A real memcached (TCP or unix socket), killed with SIGKILL at the end.

    memcached takes about a second to exit on SIGTERM; these tests start many.
    """
    argv = [require_binary("memcached"), "-t", "1", "-U", "0"]
    port = port or free_port()
    argv += ["-s", unix_path] if unix_path else ["-l", "127.0.0.1", "-p", str(port)]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if unix_path:
            wait_for_unix(unix_path)
        else:
            wait_for_port(port, proc=proc)
        yield port
    finally:
        stop_process(proc, signal.SIGKILL)


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, int]]:
    with quick_memcached() as mc, hoard_server() as hoard:
        yield {"memcached": mc, "hoard": hoard}


PROTOCOLS = ("text", "meta", "binary")
COMBOS = [(b, io, p) for b in ("memcached", "hoard") for io in ("sync", "async") for p in PROTOCOLS]
IDS = ["-".join(c) for c in COMBOS]
TRANSCRIPTS: dict[str, list[object]] = {}


def raw_get(port: int, key: bytes) -> bytes:
    """What the server holds under ``key``, asked over a plain socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"get " + key + b"\r\n")
        return recv_until(s, b"END\r\n")


def scenario(c: Any) -> list[object]:
    """Every method; each answer is asserted and recorded."""
    out: list[object] = []

    def step(got: object, want: object) -> None:
        assert got == want, f"step {len(out)}: {got!r} != {want!r}"
        out.append(got)

    step(c.flush_all(), True)
    step(c.get("a"), None)
    step(c.get("a", b"dflt"), b"dflt")
    step(c.set("a", b"1"), True)
    step(c.get("a"), b"1")
    step(c.get(b"a"), b"1")
    step(c.set("empty", b""), True)
    step(c.get("empty"), b"")
    binary_value = bytes(range(256)) * 4 + b"\r\nEND\r\n"
    step(c.set("bin", binary_value), True)
    step(c.get("bin"), binary_value)
    step(c.set("ключ", "значение".encode()), True)
    step(c.get("ключ"), "значение".encode())

    # gets / cas
    value, token = c.gets("a")
    step(value, b"1")
    assert isinstance(token, int) and token > 0
    step(c.gets("missing"), (None, None))
    step(c.gets("missing", b"d"), (b"d", None))
    step(c.cas("a", b"2", token), True)
    step(c.cas("a", b"3", token), False)  # changed since
    step(c.cas("nokey", b"3", token), None)  # absent
    step(c.get("a"), b"2")

    # add / replace / append / prepend
    step(c.add("a", b"x"), False)
    step(c.add("new", b"x"), True)
    step(c.replace("nokey", b"y"), False)
    step(c.replace("new", b"y"), True)
    step(c.append("new", b"z"), True)
    step(c.prepend("new", b"w"), True)
    step(c.get("new"), b"wyz")
    step(c.append("nokey", b"z"), False)
    step(c.prepend("nokey", b"z"), False)

    # many
    step(c.set_many({f"k{i}": b"v%d" % i for i in range(50)}), [])
    step(c.set_many([("t1", b"1"), ("t2", b"2")]), [])
    got = c.get_many([f"k{i}" for i in range(60)])
    step(sorted(got.items()), sorted((f"k{i}", b"v%d" % i) for i in range(50)))
    step(c.get_many([]), {})
    step(c.get_many([b"t1", "t2", "missing"]), {b"t1": b"1", "t2": b"2"})
    step(c.delete_many(["k0", "k1", "not-there"]), True)
    step(c.get_many(["k0", "k1", "k2"]), {"k2": b"v2"})
    step(c.delete_many([]), True)

    # delete
    step(c.delete("k2"), True)
    step(c.delete("k2"), False)

    # counters
    step(c.incr("cnt"), None)
    step(c.set("cnt", b"10"), True)
    step(c.incr("cnt"), 11)
    step(c.incr("cnt", 5), 16)
    step(c.decr("cnt", 100), 0)
    step(c.decr("nocnt"), None)
    step(c.set("max", b"18446744073709551615"), True)
    step(c.incr("max", 2), 1)  # wraps at 2**64
    step(c.set("txt", b"abc"), True)
    with pytest.raises(ClientError):
        c.incr("txt", 1)
    out.append("incr-non-numeric: ClientError")

    # touch / gat / expiry
    step(c.touch("a", 100), True)
    step(c.touch("nokey", 100), False)
    step(c.gat("a", 100), b"2")
    step(c.gat("nokey", 100), None)
    step(c.gat("nokey", 100, b"d"), b"d")
    step(c.set("gone", b"x", expire=PAST), True)
    step(c.get("gone"), None)
    step(c.set("later", b"x", expire=3600), True)
    step(c.touch("later", PAST), True)
    step(c.get("later"), None)

    # noreply where the protocol allows it (the answer is assumed)
    step(c.set("nr", b"1", noreply=True), True)
    step(c.add("nr", b"2", noreply=True), True)
    step(c.append("nr", b"3", noreply=True), True)
    step(c.incr("nrc", 1, noreply=True), None)
    step(c.delete("nr-missing", noreply=True), True)  # noreply: success is assumed
    step(c.set_many({"nm1": b"1", "nm2": b"2"}, noreply=True), [])
    step(c.get_many(["nr", "nm1", "nm2"]), {"nr": b"13", "nm1": b"1", "nm2": b"2"})
    step(c.delete_many(["nm1", "nm2"], noreply=True), True)
    step(c.get_many(["nm1", "nm2"]), {})
    step(c.touch("nr", 100, noreply=True), True)
    step(c.get("nr"), b"13")

    # keys that are not valid memcached keys are stored under their md5 (long_keys="hash")
    long_key = "L" * 300
    step(c.set(long_key, b"long"), True)
    step(c.get(long_key), b"long")
    step(c.set("with space", b"sp"), True)
    step(c.get_many([long_key, "with space"]), {long_key: b"long", "with space": b"sp"})
    step(c.get(hashlib.md5(long_key.encode()).hexdigest()), b"long")

    # servers
    versions = c.version()
    step(len(versions), 1)
    assert all(isinstance(v, str) and v for v in versions.values())
    stats = next(iter(c.stats().values()))
    step("curr_items" in stats and "pid" in stats, True)
    step(c.flush_all(), True)
    step(c.get("a"), None)
    return out


@pytest.mark.parametrize(("backend", "io", "protocol"), COMBOS, ids=IDS)
def test_every_method_same_results(backends: dict[str, int], backend: str, io: str, protocol: str) -> None:
    c = make_client(io, f"127.0.0.1:{backends[backend]}", protocol=protocol, on_error="raise")
    try:
        transcript = scenario(c)
    finally:
        c.close()
    TRANSCRIPTS["-".join((backend, io, protocol))] = transcript
    for other in TRANSCRIPTS.values():
        assert other == transcript


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("io", ["sync", "async"])
@pytest.mark.parametrize("backend", ["memcached", "hoard"])
def test_serde_round_trips(backends: dict[str, int], backend: str, io: str, protocol: str) -> None:
    servers = f"127.0.0.1:{backends[backend]}"
    c = make_client(io, servers, protocol=protocol, serde="json", on_error="raise")
    raw = make_client(io, servers, protocol=protocol, on_error="raise")
    try:
        values: dict[str, Any] = {"s": "text é", "i": 42, "big": 2**70, "b": b"\x00raw", "l": [1, "two", None],
                                  "d": {"k": [1.5, True]}}
        for key, value in values.items():
            assert c.set(f"serde:{key}", value)
            assert c.get(f"serde:{key}") == value
        assert c.set_many({f"serde2:{k}": v for k, v in values.items()}) == []
        assert c.get_many([f"serde2:{k}" for k in values]) == {f"serde2:{k}": v for k, v in values.items()}
        assert raw.get("serde:s") == "text é".encode()
        assert raw.get("serde:l") == b'[1,"two",null]'
        with pytest.raises(TypeError):
            raw.set("serde:x", "str needs a serde")
    finally:
        c.close()
        raw.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("io", ["sync", "async"])
@pytest.mark.parametrize("backend", ["memcached", "hoard"])
def test_value_too_large(backends: dict[str, int], backend: str, io: str, protocol: str) -> None:
    servers = f"127.0.0.1:{backends[backend]}"
    big = b"x" * (1024 * 1024 + 1)
    # Caught before sending (max_value_size, default 1 MiB).
    c = make_client(io, servers, protocol=protocol, on_error="raise")
    try:
        with pytest.raises(ValueTooLargeError, match="max_value_size"):
            c.set("big", big)
        with pytest.raises(ValueTooLargeError):
            c.set_many({"ok": b"1", "big": big})
    finally:
        c.close()
    # Refused by the server (the client allows more): a clear error, and the one connection survives.
    c = make_client(io, servers, protocol=protocol, on_error="raise", max_pool_size=1,
                    max_value_size=4 * 1024 * 1024)
    try:
        assert c.set("small", b"s")
        conn = pool_of(c).idle[0]
        with pytest.raises(ValueTooLargeError, match="too large"):
            c.set("big", big * 2)
        assert c.get("small") == b"s"
        assert c.set("big", big * 2, noreply=True) is True  # refused silently (text) or later (binary)
        assert c.get("small") == b"s"
        with pytest.raises(ValueTooLargeError):
            c.set_many({"m1": b"1", "m2": big * 2, "m3": b"3"})
        assert c.get_many(["m1", "m2", "m3", "big"]) == {"m1": b"1", "m3": b"3"}
        assert pool_of(c).idle == [conn] and pool_of(c).size == 1
        assert c.core.ejected == set()
    finally:
        c.close()
    # on_error="miss": a logged failure, never an exception.
    c = make_client(io, servers, protocol=protocol)
    try:
        assert c.set("big", big) is False
        assert c.set_many({"ok": b"1", "big": big}) == ["big"]
        assert c.get("ok") == b"1"
    finally:
        c.close()


@pytest.mark.parametrize("io", ["sync", "async"])
def test_keys_and_kamailio_options(backends: dict[str, int], io: str) -> None:
    port = backends["memcached"]
    c = make_client(io, f"127.0.0.1:{port}", long_keys="error", on_error="raise")
    try:
        with pytest.raises(ClientError, match="250"):
            c.set("k" * 251, b"v")
        with pytest.raises(ClientError, match="space"):
            c.get("a b")
        with pytest.raises(ClientError):
            c.get_many(["ok", "bad\nkey"])
        with pytest.raises(ClientError):
            c.get("")
        with pytest.raises(TypeError):
            c.get(42)
        assert c.set("k" * 250, b"v")  # 250 bytes is fine
    finally:
        c.close()
    # long_keys="hash": stored under the md5 hex, like the kamailio module.
    c = make_client(io, f"127.0.0.1:{port}")
    try:
        assert c.set("ctrl\x01key", b"v")
        assert raw_get(port, hashlib.md5(b"ctrl\x01key").hexdigest().encode()).startswith(b"VALUE ")
    finally:
        c.close()
    # mode="add": set never overwrites; default_expire applies when no expire is given.
    c = make_client(io, f"127.0.0.1:{port}", mode="add")
    try:
        c.delete_many(["once", "twice"])
        assert c.set("once", b"1") is True
        assert c.set("once", b"2") is False
        assert c.get("once") == b"1"
        assert c.set_many({"once": b"3", "twice": b"4"}) == ["once"]
    finally:
        c.close()
    c = make_client(io, f"127.0.0.1:{port}", default_expire=PAST)
    try:
        assert c.set("short", b"1") is True
        assert c.get("short") is None
        assert c.set("short", b"1", expire=0) is True
        assert c.get("short") == b"1"
    finally:
        c.close()
