"""``hoard proxy`` puts every key on the server Debian's nutcracker puts it on.

Four real memcached backends; one configuration with a pool per hash function
and distribution (12 x {ketama, modula}), each pool with unequal weights,
node names on some servers and a ``{}`` hash tag.  The same keys are written
through nutcracker, every backend is asked which keys it holds, the backends
are flushed, the keys are written through ``hoard proxy`` (same configuration,
other listen ports) and the backends asked again: the two placements must be
identical, key for key.  Each pool has its own key set (the pools share the
backends).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scatterhoard import ports
from scatterhoard.routing import HASH_NAMES
from tests.support import hoard_argv, memcached, require_binary, running, temp_dir, wait_for_port

pytestmark = pytest.mark.timeout(120)

KEYS_PER_POOL = 250
DISTRIBUTIONS = ("ketama", "modula")
# (backend slot, server entry template): weights 1-3, node names of different lengths on two
SERVERS = ((0, "127.0.0.1:{port}:1"), (1, "127.0.0.1:{port}:2 beta-node"), (2, "127.0.0.1:{port}:3"),
           (3, "127.0.0.1:{port}:1 zz"))
POOL_SPECS = [(f"m_{h}_{d}", h, d) for d in DISTRIBUTIONS for h in HASH_NAMES]
POOLS = [name for name, _, _ in POOL_SPECS]


def _config(backends: list[int], listens: list[int]) -> str:
    out = []
    for (name, hash_name, dist), listen in zip(POOL_SPECS, listens, strict=True):
        out += [f"{name}:", f"  listen: 127.0.0.1:{listen}", f"  hash: {hash_name}", f"  distribution: {dist}",
                '  hash_tag: "{}"', "  timeout: 5000", "  servers:"]
        out += [f"   - {tpl.format(port=backends[slot])}" for slot, tpl in SERVERS]
    return "\n".join(out) + "\n"


def _keys(pool: str) -> list[bytes]:
    rng = random.Random(pool)
    alphabet = bytes(c for c in range(0x21, 0x7F) if c not in b"{}")
    keys = set()
    while len(keys) < KEYS_PER_POOL:
        body = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        shape = rng.randrange(4)
        if shape == 0:
            body = b"{u%d}" % rng.randrange(30) + body
        elif shape == 1:
            body = body + b"{u%d}" % rng.randrange(30)
        keys.add(pool.encode() + b":" + body)
    return sorted(keys)


def _exchange(sock: socket.socket, request: bytes, terminator: bytes, count: int) -> bytes:
    sock.sendall(request)
    data = b""
    while data.count(terminator) < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError(f"closed after {data[-200:]!r}")
        data += chunk
    return data


def _write(port: int, keys: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        reply = _exchange(sock, b"".join(b"set %s 0 0 1\r\nv\r\n" % k for k in keys), b"\r\n", len(keys))
        assert reply == b"STORED\r\n" * len(keys), reply[:300]


def _placement(backends: list[int], keys: dict[str, list[bytes]]) -> dict[bytes, int]:
    """key -> the backend slot that holds it (each key must be on exactly one)."""
    everything = [k for ks in keys.values() for k in ks]
    where: dict[bytes, int] = {}
    for slot, port in enumerate(backends):
        groups = [everything[i:i + 200] for i in range(0, len(everything), 200)]
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            request = b"".join(b"get " + b" ".join(g) + b"\r\n" for g in groups)
            reply = _exchange(sock, request, b"END\r\n", len(groups))
        for line in reply.split(b"\r\n"):
            if line.startswith(b"VALUE "):
                key = line.split(b" ")[1]
                assert key not in where, f"{key!r} is on two backends"
                where[key] = slot
    missing = [k for k in everything if k not in where]
    assert not missing, f"{len(missing)} keys were stored nowhere, e.g. {missing[:3]}"
    return where


def _flush(backends: list[int]) -> None:
    for port in backends:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert _exchange(sock, b"flush_all\r\n", b"\r\n", 1) == b"OK\r\n"


def _start(exe: list[str], conf_text: str, listens: list[int], stats: int, workdir: str, tag: str,
           stack: contextlib.ExitStack) -> None:
    path = Path(workdir, f"{tag}.yml")
    path.write_text(conf_text)
    argv = [*exe, "-c", str(path), "-s", str(stats), "-a", "127.0.0.1", "-o", str(Path(workdir, f"{tag}.log"))]
    proc = stack.enter_context(running(argv, port=listens[0]))
    for port in listens[1:]:
        wait_for_port(port, proc=proc)


Placements = tuple[dict[bytes, int], dict[bytes, int], dict[str, list[bytes]]]


def nutcracker_and_hoard(stack: contextlib.ExitStack, backends: list[int],
                         config: Callable[[list[int], list[int]], str],
                         write: Callable[[int, list[bytes]], None],
                         placement: Callable[[list[int], dict[str, list[bytes]]], dict[bytes, int]],
                         flush: Callable[[list[int]], None]) -> Placements:
    """Write every pool's keys through nutcracker, then through hoard proxy, on the same config
    and backends; returns (nutcracker's placement, ours, the keys). The protocol is in the callables."""
    nutcracker = require_binary("nutcracker")
    workdir = stack.enter_context(temp_dir())
    keys = {pool: _keys(pool) for pool in POOLS}
    result = []
    for tag, exe in (("nutcracker", [nutcracker]), ("hoard", hoard_argv("proxy"))):
        *listens, stats = ports.free_ports(len(POOLS) + 1)
        with contextlib.ExitStack() as proxy_stack:
            _start(exe, config(backends, listens), listens, stats, workdir, tag, proxy_stack)
            for pool, listen in zip(POOLS, listens, strict=True):
                write(listen, keys[pool])
        result.append(placement(backends, keys))
        flush(backends)
    return result[0], result[1], keys


@pytest.fixture(scope="module")
def placements() -> Iterator[Placements]:
    with contextlib.ExitStack() as stack:
        backends = [stack.enter_context(memcached()) for _ in range(4)]
        yield nutcracker_and_hoard(stack, backends, _config, _write, _placement, _flush)


def assert_same_as_nutcracker(pool: str, placements: Placements) -> None:
    theirs, ours, keys = placements
    wrong = [(k, theirs[k], ours[k]) for k in keys[pool] if theirs[k] != ours[k]]
    assert not wrong, f"{len(wrong)}/{len(keys[pool])} keys on another server than nutcracker's: {wrong[:5]}"
    used = {theirs[k] for k in keys[pool]}
    if pool != "m_crc32_ketama":  # 15-bit hashes all land before one server's first ketama point
        assert len(used) >= 3, used


@pytest.mark.parametrize("pool", POOLS)
def test_same_servers_as_nutcracker(pool: str, placements: Placements) -> None:
    assert_same_as_nutcracker(pool, placements)


# -- the random distribution; unix-socket servers and listeners ------------------------------------


@contextlib.contextmanager
def _unix_memcached(path: str) -> Iterator[str]:
    exe = require_binary("memcached")
    argv = [exe, "-s", path, "-a", "0700", "-U", "0", "-t", "1"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    with running(argv, unix_path=path):
        yield path


def _connect(addr: int | str) -> socket.socket:
    if isinstance(addr, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(20)
        sock.connect(addr)
        return sock
    return socket.create_connection(("127.0.0.1", addr), timeout=20)


def _holders(backends: list[int | str], keys: list[bytes]) -> dict[bytes, list[int]]:
    """key -> the backend slots that hold it."""
    where: dict[bytes, list[int]] = {k: [] for k in keys}
    groups = [keys[i:i + 200] for i in range(0, len(keys), 200)]
    for slot, addr in enumerate(backends):
        with _connect(addr) as sock:
            reply = _exchange(sock, b"".join(b"get " + b" ".join(g) + b"\r\n" for g in groups), b"END\r\n",
                              len(groups))
        for line in reply.split(b"\r\n"):
            if line.startswith(b"VALUE "):
                where[line.split(b" ")[1]].append(slot)
    return where


def _write_via(addr: int | str, keys: list[bytes]) -> None:
    with _connect(addr) as sock:
        reply = _exchange(sock, b"".join(b"set %s 0 0 1\r\nv\r\n" % k for k in keys), b"\r\n", len(keys))
        assert reply == b"STORED\r\n" * len(keys), reply[:300]


def test_random_distribution_spreads_keys_over_every_server() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        backends: list[int | str] = [stack.enter_context(memcached()) for _ in range(4)]
        listen, stats = ports.free_ports(2)
        conf = (f"rnd:\n  listen: 127.0.0.1:{listen}\n  hash: md5\n  distribution: random\n  servers:\n"
                + "".join(f"   - 127.0.0.1:{p}:1\n" for p in backends))
        _start(hoard_argv("proxy"), conf, [listen], stats, workdir, "random", stack)
        keys = [b"rnd:%d" % i for i in range(400)]
        _write_via(listen, keys)
        where = _holders(backends, keys)
        assert all(len(slots) == 1 for slots in where.values()), "a key stored on no server or on two"
        per_server = [sum(1 for slots in where.values() if slots == [i]) for i in range(4)]
        assert all(n >= 40 for n in per_server), per_server  # 100 expected each; 40 is 6+ sigma away


def test_unix_socket_servers_and_listener_same_as_nutcracker() -> None:
    nutcracker = require_binary("nutcracker")
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        socks = [stack.enter_context(_unix_memcached(os.path.join(workdir, f"mc{i}.sock"))) for i in range(2)]
        backends: list[int | str] = [*socks, stack.enter_context(memcached())]
        servers = [f"{socks[0]}:1", f"{socks[1]}:2 unix-b", f"127.0.0.1:{backends[2]}:1"]
        keys = [b"ux:%d" % i for i in range(300)]
        placements = []
        for tag, exe in (("nutcracker", [nutcracker]), ("hoard", hoard_argv("proxy"))):
            listen = os.path.join(workdir, f"{tag}.sock")
            stats = ports.free_port()
            conf = Path(workdir, f"{tag}-unix.yml")
            conf.write_text(f"ux:\n  listen: {listen} 0600\n  hash: md5\n  distribution: ketama\n"
                            "  servers:\n" + "".join(f"   - {s}\n" for s in servers))
            argv = [*exe, "-c", str(conf), "-s", str(stats), "-a", "127.0.0.1", "-o",
                    str(Path(workdir, f"{tag}-unix.log"))]
            with running(argv, unix_path=listen):
                if tag == "hoard":
                    assert oct(os.stat(listen).st_mode & 0o777) == "0o600"
                _write_via(listen, keys)
            where = _holders(backends, keys)
            assert all(len(slots) == 1 for slots in where.values()), "a key stored on no server or on two"
            placements.append({k: slots[0] for k, slots in where.items()})
            _flush_all(backends)
        theirs, ours = placements
        assert ours == theirs
        assert set(ours.values()) == {0, 1, 2}


def _flush_all(backends: list[int | str]) -> None:
    for addr in backends:
        with _connect(addr) as sock:
            assert _exchange(sock, b"flush_all\r\n", b"\r\n", 1) == b"OK\r\n"
