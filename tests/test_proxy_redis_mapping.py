"""A redis pool of ``hoard proxy`` puts every key on the server Debian's nutcracker puts it on.

The method of ``test_proxy_mapping.py`` with ``redis: true`` pools over four
real redis-server backends: one pool per hash function and distribution
(12 x {ketama, modula}) with unequal weights, node names and a ``{}`` hash
tag; the same keys are SET through nutcracker, every backend is asked which
keys it holds (``KEYS *`` on the backend itself), the backends are flushed,
the keys are SET through ``hoard proxy`` and the backends asked again.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from tests.support import redis_server
from tests.test_proxy_mapping import (
    POOL_SPECS,
    POOLS,
    SERVERS,
    Placements,
    assert_same_as_nutcracker,
    nutcracker_and_hoard,
)

pytestmark = pytest.mark.timeout(120)


def _config(backends: list[int], listens: list[int]) -> str:
    out = []
    for (name, hash_name, dist), listen in zip(POOL_SPECS, listens, strict=True):
        out += [f"{name}:", f"  listen: 127.0.0.1:{listen}", "  redis: true", f"  hash: {hash_name}",
                f"  distribution: {dist}", '  hash_tag: "{}"', "  timeout: 5000", "  servers:"]
        out += [f"   - {tpl.format(port=backends[slot])}" for slot, tpl in SERVERS]
    return "\n".join(out) + "\n"


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _exchange(port: int, request: bytes, replies: int) -> bytes:
    """Send a pipeline of commands whose replies are single lines; read them all."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        data = b""
        while data.count(b"\r\n") < replies:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"closed after {data[-200:]!r}")
            data += chunk
    return data


def _write(port: int, keys: list[bytes]) -> None:
    reply = _exchange(port, b"".join(_command(b"SET", k, b"v") for k in keys), len(keys))
    assert reply == b"+OK\r\n" * len(keys), reply[:300]


def _held(port: int) -> list[bytes]:
    """Every key a backend holds (KEYS * straight to it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(_command(b"KEYS", b"*"))
        data = b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
            count = int(data[1:data.index(b"\r\n")])
            items = data.split(b"\r\n")[1:-1]
            if len(items) == 2 * count:
                return items[1::2]


def _placement(backends: list[int], keys: dict[str, list[bytes]]) -> dict[bytes, int]:
    where: dict[bytes, int] = {}
    for slot, port in enumerate(backends):
        for key in _held(port):
            assert key not in where, f"{key!r} is on two backends"
            where[key] = slot
    everything = [k for ks in keys.values() for k in ks]
    missing = [k for k in everything if k not in where]
    assert not missing, f"{len(missing)} keys were stored nowhere, e.g. {missing[:3]}"
    return where


def _flush(backends: list[int]) -> None:
    for port in backends:
        assert _exchange(port, _command(b"FLUSHALL"), 1) == b"+OK\r\n"


@pytest.fixture(scope="module")
def placements() -> Iterator[Placements]:
    with contextlib.ExitStack() as stack:
        backends = [stack.enter_context(redis_server()) for _ in range(4)]
        yield nutcracker_and_hoard(stack, backends, _config, _write, _placement, _flush)


@pytest.mark.parametrize("pool", POOLS)
def test_same_servers_as_nutcracker(pool: str, placements: Placements) -> None:
    assert_same_as_nutcracker(pool, placements)
