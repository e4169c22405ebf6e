"""Three memcached backends, four ways to spread keys over them, one placement.

For each pool of one twemproxy YAML file, the same keys are written (after a
flush) through our client built from that YAML file, through Debian's
``nutcracker`` and through ``hoard proxy`` running that file; after each
round every backend is asked which keys it holds.  The three placements must
be identical.  Then pylibmc (libmemcached) with ``ketama_weighted`` writes
keys over weighted servers and our client, with its defaults (ketama + md5),
must have put every key on the same backend.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scatterhoard import AsyncClient, Client
from tests.support import (
    free_port,
    hoard_argv,
    require_binary,
    require_module,
    running,
    temp_dir,
    wait_for_port,
)
from tests.test_client_commands import make_client, quick_memcached
from tests.test_client_routing import flush, held_keys

pytestmark = pytest.mark.timeout(180)

NKEYS = 300

POOLS: dict[str, list[str]] = {
    "default": [],  # nutcracker's defaults: fnv1a_64 + ketama
    "md5": ["  hash: md5", "  distribution: ketama"],
    "tagged": ["  hash: murmur", '  hash_tag: "{}"'],
    "modula": ["  hash: fnv1a_32", "  distribution: modula"],
    "jenkins": ["  hash: jenkins", "  distribution: ketama"],
}


@pytest.fixture(scope="module")
def three() -> Iterator[list[int]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(quick_memcached()) for _ in range(3)]


def keys_for(pool: str) -> list[bytes]:
    keys = [b"%s:user:%d" % (pool.encode(), i) for i in range(NKEYS // 2)]
    keys += [b"{grp%d}:%s:%d" % (i % 9, pool.encode(), i) for i in range(NKEYS // 4)]
    keys += [f"{pool}:ключ:{i}".encode() for i in range(NKEYS // 4)]
    return keys


def placement(backends: list[int], keys: list[bytes]) -> dict[bytes, int]:
    """Which backend holds each key; every key on exactly one."""
    where: dict[bytes, int] = {}
    for index, port in enumerate(backends):
        for key in held_keys(port, keys):
            assert key not in where, f"{key!r} is on two backends"
            where[key] = index
    missing = [k for k in keys if k not in where]
    assert not missing, f"{len(missing)} keys stored nowhere, e.g. {missing[:3]}"
    return where


def write_yaml(path: Path, backends: list[int], listens: dict[str, int]) -> None:
    text: list[str] = []
    for name, lines in POOLS.items():
        text += [f"{name}:", f"  listen: 127.0.0.1:{listens[name]}", *lines, "  servers:",
                 f"    - 127.0.0.1:{backends[0]}:3 alpha", f"    - 127.0.0.1:{backends[1]}:1",
                 f"    - 127.0.0.1:{backends[2]}:2 gamma"]
    path.write_text("\n".join(text) + "\n")


@pytest.fixture(scope="module")
def placements(three: list[int]) -> Iterator[dict[str, dict[str, dict[bytes, int]]]]:
    """pool -> {"client-sync", "client-async", "nutcracker", "hoard proxy"} -> key -> backend."""
    nutcracker = require_binary("nutcracker")
    out: dict[str, dict[str, dict[bytes, int]]] = {pool: {} for pool in POOLS}
    with temp_dir() as workdir:
        for tag, exe in (("nutcracker", [nutcracker]), ("hoard proxy", hoard_argv("proxy"))):
            listens = {pool: free_port() for pool in POOLS}
            conf = Path(workdir, f"{tag.replace(' ', '-')}.yml")
            write_yaml(conf, three, listens)
            argv = [*exe, "-c", str(conf), "-s", str(free_port()), "-a", "127.0.0.1",
                    "-o", str(Path(workdir, f"{tag.replace(' ', '-')}.log"))]
            with running(argv, port=listens["default"]) as proc:
                for pool, port in listens.items():
                    wait_for_port(port, proc=proc)
                    flush(three)
                    keys = keys_for(pool)
                    via = Client(f"127.0.0.1:{port}", on_error="raise")  # one server: no hashing
                    try:
                        assert via.set_many({key: key for key in keys}) == []
                    finally:
                        via.close()
                    out[pool][tag] = placement(three, keys)
            if tag == "nutcracker":  # the same YAML file drives the client
                for pool in POOLS:
                    for io in ("sync", "async"):
                        flush(three)
                        keys = keys_for(pool)
                        c = make_client(io, str(conf), pool=pool, on_error="raise")
                        try:
                            half = len(keys) // 2
                            for key in keys[:half]:
                                assert c.set(key, key) is True
                            assert c.set_many({key: key for key in keys[half:]}) == []
                        finally:
                            c.close()
                        out[pool][f"client-{io}"] = placement(three, keys)
    flush(three)
    yield out


@pytest.mark.parametrize("pool", list(POOLS))
def test_client_nutcracker_and_hoard_proxy_place_keys_alike(
        placements: dict[str, dict[str, dict[bytes, int]]], pool: str) -> None:
    got = placements[pool]
    assert set(got) == {"client-sync", "client-async", "nutcracker", "hoard proxy"}
    reference = got["nutcracker"]
    for tag, where in got.items():
        wrong = [(k, reference[k], where[k]) for k in reference if where[k] != reference[k]]
        assert not wrong, f"{tag}: {len(wrong)} keys elsewhere than nutcracker's, e.g. {wrong[:5]}"
    if pool in ("md5", "modula", "jenkins"):
        assert set(reference.values()) == {0, 1, 2}
    if pool == "tagged":
        for i in range(9):
            assert len({reference[k] for k in reference if k.startswith(b"{grp%d}" % i)}) == 1


# -- pylibmc (libmemcached) ------------------------------------------------------------------------


def _pylibmc() -> Any:
    return require_module("pylibmc")


@pytest.mark.parametrize("weights", [(1, 1, 1), (1, 2, 3), (5, 1, 2)])
def test_default_distribution_equals_pylibmc_ketama_weighted(three: list[int], weights: tuple[int, ...]) -> None:
    pylibmc = _pylibmc()
    servers = [f"127.0.0.1:{port}:{weight}" for port, weight in zip(three, weights, strict=True)]
    keys = [b"plm:%d:%d" % (sum(weights), i) for i in range(NKEYS)] + [f"плм:{i}".encode() for i in range(50)]
    flush(three)
    theirs = pylibmc.Client(servers, binary=False, behaviors={"ketama_weighted": True})
    try:
        for key in keys:
            assert theirs.set(key, b"p" + key)
    finally:
        theirs.disconnect_all()
    by_pylibmc = placement(three, keys)
    assert set(by_pylibmc.values()) == {0, 1, 2}
    # our client, defaults only, finds every key pylibmc wrote ...
    ours = Client(servers, on_error="raise")
    try:
        assert ours.get_many(keys) == {key: b"p" + key for key in keys}
        # ... and writes each one to the backend pylibmc chose
        flush(three)
        assert ours.set_many({key: key for key in keys}) == []
    finally:
        ours.close()
    by_client = placement(three, keys)
    wrong = [(k, by_pylibmc[k], by_client[k]) for k in keys if by_pylibmc[k] != by_client[k]]
    assert not wrong, f"{len(wrong)}/{len(keys)} keys elsewhere than pylibmc's, e.g. {wrong[:5]}"


def test_async_client_reads_what_pylibmc_wrote(three: list[int]) -> None:
    pylibmc = _pylibmc()
    servers = [f"127.0.0.1:{port}:{w}" for port, w in zip(three, (2, 1, 1), strict=True)]
    keys = [b"apl:%d" % i for i in range(NKEYS)]
    flush(three)
    theirs = pylibmc.Client(servers, behaviors={"ketama_weighted": True})
    try:
        assert theirs.set_multi({key: b"x" + key for key in keys}) == []
    finally:
        theirs.disconnect_all()

    async def read() -> dict[Any, Any]:
        async with AsyncClient(servers, on_error="raise") as c:
            return await c.get_many(keys)

    assert asyncio.run(read()) == {key: b"x" + key for key in keys}
