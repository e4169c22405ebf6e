"""Multi-server routing: the client puts every key where the Router and nutcracker do.

Three real memcached backends.  Keys are written through the client (sync and
async, ``set`` and pipelined ``set_many``); then every backend is asked
directly which keys it holds, and each key must be on exactly the backend an
independently built :class:`~scatterhoard.routing.Router` names for the same
server list (the Router itself is verified against nutcracker in
``test_routing_nutcracker``).  Then a real nutcracker with a YAML config
serves the same backends: keys written through nutcracker are all found by a
client built from that YAML file, and keys the client writes are all found
through nutcracker.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from scatterhoard import Client
from scatterhoard.protocol.text_client import Expect, TextReplyParser, ValuesReply
from scatterhoard.routing import Router
from tests.support import free_port, require_binary, running, temp_dir
from tests.test_client_commands import make_client, quick_memcached

pytestmark = pytest.mark.timeout(120)

NKEYS = 400


@pytest.fixture(scope="module")
def backends() -> Iterator[list[int | str]]:
    """Two TCP memcacheds and one on a unix socket."""
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        tcp = [stack.enter_context(quick_memcached()) for _ in range(2)]
        unix = os.path.join(workdir, "mc.sock")
        stack.enter_context(quick_memcached(unix_path=unix))
        yield [*tcp, unix]


def _connect(backend: int | str) -> socket.socket:
    if isinstance(backend, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(backend)
        return s
    return socket.create_connection(("127.0.0.1", backend), timeout=5)


def held_keys(backend: int | str, keys: list[bytes]) -> set[bytes]:
    """The keys among ``keys`` that ``backend`` holds (pipelined multi-gets on a plain socket)."""
    parser = TextReplyParser()
    chunks = [keys[i:i + 100] for i in range(0, len(keys), 100)]
    found: set[bytes] = set()
    with _connect(backend) as s:
        for _ in chunks:
            parser.expect(Expect.VALUES)
        s.sendall(b"".join(b"get " + b" ".join(chunk) + b"\r\n" for chunk in chunks))
        replies: list[object] = []
        while len(replies) < len(chunks):
            data = s.recv(65536)
            assert data, "backend closed the connection"
            replies += parser.feed(data)
    for reply in replies:
        assert isinstance(reply, ValuesReply)
        found.update(v.key for v in reply.values)
    return found


def flush(backends: list[int | str]) -> None:
    for backend in backends:
        with _connect(backend) as s:
            s.sendall(b"flush_all\r\n")
            assert s.recv(100) == b"OK\r\n"


def server_list(backends: list[int | str], weights: tuple[int, ...], names: tuple[str, ...] | None) -> list[str]:
    out = []
    for i, backend in enumerate(backends):
        address = f"unix:{backend}" if isinstance(backend, str) else f"127.0.0.1:{backend}"
        out.append(f"{address}:{weights[i]}" + (f" {names[i]}" if names else ""))
    return out


CONFIGS = {
    "default-ketama-md5": dict(weights=(1, 2, 3), names=None, options={}),
    "named-fnv1a_64-hashtag": dict(weights=(3, 1, 2), names=("cache-a", "b", "cache-c"),
                                   options=dict(hash="fnv1a_64", hash_tag="{}")),
    "modula-murmur": dict(weights=(2, 1, 1), names=None, options=dict(hash="murmur", distribution="modula")),
    "ketama-crc32a": dict(weights=(1, 1, 1), names=("x", "yy", "zzz"), options=dict(hash="crc32a")),
}


@pytest.mark.parametrize("io", ["sync", "async"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_keys_land_where_the_router_says(backends: list[int | str], config: str, io: str) -> None:
    conf = CONFIGS[config]
    servers = server_list(backends, conf["weights"], conf["names"])  # type: ignore[arg-type]
    options: dict[str, str] = conf["options"]  # type: ignore[assignment]
    flush(backends)
    # The Router the client should agree with, built from twemproxy's own spelling of the servers.
    twemproxy_spelling = [s.replace("unix:", "") for s in servers]
    router = Router(twemproxy_spelling, hash=options.get("hash", "md5"),
                    distribution=options.get("distribution", "ketama"), hash_tag=options.get("hash_tag"))
    keys = [b"user:%d" % i for i in range(NKEYS // 2)]
    keys += [b"{tag%d}:item:%d" % (i % 7, i) for i in range(NKEYS // 4)]
    keys += [f"ключ-{i}".encode() for i in range(NKEYS // 4)]
    c = make_client(io, servers, on_error="raise", **options)
    try:
        half = len(keys) // 2
        for key in keys[:half]:
            assert c.set(key, key) is True
        assert c.set_many({key: key for key in keys[half:]}) == []
        assert c.get_many(keys) == {key: key for key in keys}
        assert len(c.version()) == 3
    finally:
        c.close()
    holders: dict[bytes, list[int]] = {key: [] for key in keys}
    for index, backend in enumerate(backends):
        for key in held_keys(backend, keys):
            holders[key].append(index)
    wrong = {key: (where, router.index_for(key)) for key, where in holders.items()
             if where != [router.index_for(key)]}
    assert not wrong, f"{len(wrong)} keys misplaced, e.g. {list(wrong.items())[:5]}"
    used = {where[0] for where in holders.values()}
    if config in ("default-ketama-md5", "modula-murmur"):
        assert used == {0, 1, 2}  # (crc32 and twemproxy's fnv1a_64 cluster keys: see the routing docs)
    if "hash_tag" in options:
        for i in range(7):
            tagged = {router.index_for(key) for key in keys if key.startswith(b"{tag%d}" % i)}
            assert len(tagged) == 1


# -- nutcracker ------------------------------------------------------------------------------------

POOLS = {
    # no hash/distribution: nutcracker's defaults (fnv1a_64, ketama) must be the client's too
    "alpha": ["  timeout: 2000"],
    "beta": ["  hash: md5", "  distribution: ketama", '  hash_tag: "{}"'],
    "gamma": ["  hash: hsieh", "  distribution: modula"],
}


@pytest.fixture(scope="module")
def nutcracker(backends: list[int | str]) -> Iterator[tuple[str, dict[str, int]]]:
    exe = require_binary("nutcracker")
    tcp = [b for b in backends if isinstance(b, int)]
    unix = [b for b in backends if isinstance(b, str)]
    with temp_dir() as workdir:
        conf = Path(workdir, "nutcracker.yml")
        listens = {name: free_port() for name in POOLS}
        text = []
        for name, lines in POOLS.items():
            text += [f"{name}:", f"  listen: 127.0.0.1:{listens[name]}", *lines, "  servers:"]
            text += [f"    - 127.0.0.1:{tcp[0]}:2 first", f"    - 127.0.0.1:{tcp[1]}:1", f"    - {unix[0]}:1 sock"]
        conf.write_text("\n".join(text) + "\n")
        argv = [exe, "-c", str(conf), "-s", str(free_port()), "-a", "127.0.0.1", "-o", str(Path(workdir, "nc.log"))]
        with running(argv, port=listens["alpha"]):
            yield str(conf), listens


@pytest.mark.parametrize("pool", list(POOLS))
def test_same_keys_as_nutcracker(backends: list[int | str], nutcracker: tuple[str, dict[str, int]],
                                 pool: str) -> None:
    conf, listens = nutcracker
    flush(backends)
    via_proxy = Client(f"127.0.0.1:{listens[pool]}", on_error="raise")  # one server: no hashing
    direct = Client(conf, pool=pool, on_error="raise")
    try:
        assert direct.core.router.hash_name == {"alpha": "fnv1a_64", "beta": "md5", "gamma": "hsieh"}[pool]
        assert direct.core.timeout == (2.0 if pool == "alpha" else 5.0)
        written_by_proxy = [b"np:%s:%d" % (pool.encode(), i) for i in range(NKEYS)]
        assert via_proxy.set_many({key: b"v" + key for key in written_by_proxy}) == []
        assert direct.get_many(written_by_proxy) == {key: b"v" + key for key in written_by_proxy}
        written_by_client = [b"{t%d}:nc:%s:%d" % (i % 5, pool.encode(), i) for i in range(NKEYS)]
        assert direct.set_many({key: b"w" + key for key in written_by_client}) == []
        assert via_proxy.get_many(written_by_client) == {key: b"w" + key for key in written_by_client}
    finally:
        via_proxy.close()
        direct.close()


@pytest.mark.parametrize("protocol", ["text", "meta", "binary"])
@pytest.mark.parametrize("io", ["sync", "async"])
def test_big_batches(backends: list[int | str], io: str, protocol: str) -> None:
    """Batches far over the socket buffers, to one server and to all three, both ways."""
    servers = server_list(backends, (1, 1, 1), None)
    items = {b"big:%d" % i: bytes([i % 251]) * 3000 for i in range(1500)}  # ~4.5 MB
    for targets in (servers[:1], servers):
        c = make_client(io, targets, protocol=protocol, on_error="raise")
        try:
            assert c.set_many(items) == []
            assert c.get_many(items) == items
            assert c.delete_many(items) is True
            assert c.get_many(items) == {}
        finally:
            c.close()
