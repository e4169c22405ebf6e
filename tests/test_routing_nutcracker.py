"""The routing module against the real thing: Debian's nutcracker (twemproxy 0.5.0).

Four real memcached backends (plus a unix-socket one) sit behind one
nutcracker process that serves many pools -- every hash x {ketama, modula}
with unequal weights and mixed host spellings, the same with node names,
hash tags, random, a unix socket server and auto-ejected servers.  Keys are
written through nutcracker (pipelined ``set``s, every ``STORED`` checked),
then every backend is asked directly (pipelined multi-key ``get``s) which
keys it holds, and our :class:`~scatterhoard.routing.Router` must name the
same backend for every single key.

Keys are random printable ASCII with bytes >= 0x80 mixed into a third of
them (twemproxy sign-extends those in several hashes) and lengths from 1 to
~100 bytes so every tail case of the block hashes is hit.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scatterhoard import ports
from scatterhoard.routing import HASH_NAMES, Router
from tests.support import memcached, require_binary, running, temp_dir, wait_for_port

pytestmark = pytest.mark.timeout(240)

Backend = int | str  # a memcached TCP port, or a unix socket path

KEYS_WEIGHTED = 2000
KEYS_NAMED = 1000
KEYS_OTHER = 1000

# One spelling per backend: twemproxy hashes the host as written, and sorts
# servers by name length first, so differently long names exercise the order.
HOSTS = ("127.0.0.1", "127.1", "127.0.1", "127.000.0.1")
WEIGHTS = (1, 2, 3, 5)
# Names whose length order differs from their byte order (modula follows the former).
NAMES = ("zeta", "al", "beta-longer-name", "mc3")
NAMED_WEIGHTS = (3, 1, 2, 1)


@dataclass
class Pool:
    """One nutcracker pool: its config and, at run time, its keys and where they went."""

    name: str
    hash: str
    distribution: str
    # (backend slot, twemproxy server template with {port}/{path})
    servers: list[tuple[int, str]]
    nkeys: int
    hash_tag: str | None = None
    eject: bool = False  # backend slot 4 is dead: nutcracker must auto-eject it
    unix: bool = False
    listen: int = 0
    entries: list[str] = field(default_factory=list)
    backends: list[Backend] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)


def _pools() -> list[Pool]:
    pools: list[Pool] = []
    for dist in ("ketama", "modula"):
        for name in HASH_NAMES:
            pools.append(Pool(
                f"w_{name}_{dist}", name, dist,
                [(i, f"{HOSTS[i]}:{{port}}:{WEIGHTS[i]}") for i in range(4)], KEYS_WEIGHTED))
            pools.append(Pool(
                f"n_{name}_{dist}", name, dist,
                [(i, f"127.0.0.1:{{port}}:{NAMED_WEIGHTS[i]} {NAMES[i]}") for i in range(4)], KEYS_NAMED))
        for name in ("fnv1a_64", "murmur", "crc16", "hsieh", "jenkins", "md5"):
            pools.append(Pool(
                f"t_{name}_{dist}", name, dist,
                [(i, "127.0.0.1:{port}:1") for i in range(3)], KEYS_OTHER, hash_tag="{}"))
        pools.append(Pool(
            f"x_fnv1a_64_{dist}", "fnv1a_64", dist,
            [(0, "127.0.0.1:{port}:1"), (4, "127.0.0.1:{port}:2"), (2, "127.0.0.1:{port}:1"),
             (3, "127.0.0.1:{port}:3")], KEYS_OTHER, eject=True))
        pools.append(Pool(
            f"u_md5_{dist}", "md5", dist,
            [(0, "127.0.0.1:{port}:1"), (5, "{path}:2"), (1, "127.0.0.1:{port}:1")], KEYS_OTHER, unix=True))
    # 29/60 of 3 servers: float32 math gives 228 points where double math would give 232
    pools.append(Pool(
        "f_md5_ketama", "md5", "ketama",
        [(0, "127.0.0.1:{port}:29"), (1, "127.0.0.1:{port}:30"), (2, "127.0.0.1:{port}:1")], 3000))
    pools.append(Pool(
        "r_random", "fnv1a_64", "random",
        [(i, f"127.0.0.1:{{port}}:{WEIGHTS[i]}") for i in range(4)], KEYS_OTHER))
    return pools


POOLS = _pools()
EXACT_POOLS = [p.name for p in POOLS if p.distribution != "random"]


# -- wire helpers ---------------------------------------------------------------------------------


def _connect(backend: Backend) -> socket.socket:
    if isinstance(backend, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(backend)
    else:
        sock = socket.create_connection(("127.0.0.1", backend))
    sock.settimeout(20)
    return sock


def _exchange(sock: socket.socket, request: bytes, done: bytes, count: int) -> bytes:
    """Send ``request`` and read until ``done`` terminated ``count`` replies (counted per line)."""
    sock.sendall(request)
    data = bytearray()
    seen = 0
    while seen < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError(f"connection closed after {seen}/{count} replies: {bytes(data[-200:])!r}")
        start = max(0, len(data) - len(done) + 1)
        data += chunk
        seen += bytes(data[start:]).count(done)
    return bytes(data)


def _set_through(port: int, keys: list[bytes], batch: int = 500) -> None:
    with _connect(port) as sock:
        for i in range(0, len(keys), batch):
            part = keys[i : i + batch]
            request = b"".join(b"set %s 0 0 1\r\nv\r\n" % key for key in part)
            reply = _exchange(sock, request, b"\r\n", len(part))
            assert reply == b"STORED\r\n" * len(part), reply[:300]


def _held_by(backend: Backend, keys: list[bytes], per_get: int = 100, per_batch: int = 20) -> set[bytes]:
    """The subset of ``keys`` the backend holds (pipelined multi-key gets)."""
    held: set[bytes] = set()
    gets = [keys[i : i + per_get] for i in range(0, len(keys), per_get)]
    with _connect(backend) as sock:
        for i in range(0, len(gets), per_batch):
            part = gets[i : i + per_batch]
            request = b"".join(b"get " + b" ".join(group) + b"\r\n" for group in part)
            reply = _exchange(sock, request, b"END\r\n", len(part))
            lines = reply.split(b"\r\n")
            assert lines.count(b"END") == len(part)
            held.update(line.split(b" ")[1] for line in lines if line.startswith(b"VALUE "))
    return held


def _keys(pool: Pool, used: set[bytes]) -> list[bytes]:
    rng = random.Random(pool.name)
    printable = bytes(range(0x21, 0x7F))
    if pool.hash_tag:
        printable = printable.replace(b"{", b"").replace(b"}", b"")
    high = bytes(range(0x80, 0x100))
    keys: list[bytes] = []
    while len(keys) < pool.nkeys:
        length = rng.choice((rng.randint(1, 16), rng.randint(1, 40), rng.randint(30, 100)))
        alphabet = printable + high if rng.random() < 0.33 else printable
        key = bytes(rng.choice(alphabet) for _ in range(length))
        if pool.hash_tag:
            key = _tagged(rng, key)
        if key not in used:
            used.add(key)
            keys.append(key)
    return keys


def _tagged(rng: random.Random, body: bytes) -> bytes:
    """Hash-tag shapes: {tag}rest, rest{tag}, {} (empty: whole key), {{x}, }{x}, a{b (unclosed), none."""
    tag = b"user%d" % rng.randint(0, 40)  # few tags: many keys must share a server
    shape = rng.randrange(8)
    if shape == 0:
        return b"{" + tag + b"}" + body
    if shape == 1:
        return body + b"{" + tag + b"}"
    if shape == 2:
        return body[:3] + b"{" + tag + b"}" + body[3:] + b"{other}"
    if shape == 3:
        return b"{}" + body + b"}"
    if shape == 4:
        return b"{{" + tag + b"}" + body
    if shape == 5:
        return b"}" + body + b"{" + tag + b"}"
    if shape == 6:
        return body + b"{" + tag
    return body


# -- the one nutcracker with every pool -----------------------------------------------------------


@contextlib.contextmanager
def _memcached_unix(path: str) -> Iterator[str]:
    exe = require_binary("memcached")
    argv = [exe, "-s", path, "-t", "1"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    with running(argv, unix_path=path):
        yield path


def _pool_yaml(pool: Pool) -> str:
    lines = [
        f"{pool.name}:",
        f"  listen: 127.0.0.1:{pool.listen}",
        f"  hash: {pool.hash}",
        f"  distribution: {pool.distribution}",
        "  timeout: 5000",
    ]
    if pool.hash_tag:
        lines.append(f'  hash_tag: "{pool.hash_tag}"')
    if pool.eject:
        lines += ["  auto_eject_hosts: true", "  server_retry_timeout: 600000", "  server_failure_limit: 1"]
    lines.append("  servers:")
    lines += [f"    - {entry}" for entry in pool.entries]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _nutcracker(pools: list[Pool], workdir: str) -> Iterator[None]:
    """One nutcracker serving ``pools`` (their listen ports are chosen here); retried on a port race."""
    exe = require_binary("nutcracker")
    conf = Path(workdir, "nutcracker.yml")
    log = Path(workdir, "nutcracker.log")
    failure = ""
    for _attempt in range(3):
        *listens, stats = ports.free_ports(len(pools) + 1)
        for pool, listen in zip(pools, listens, strict=True):
            pool.listen = listen
        conf.write_text("".join(_pool_yaml(p) for p in pools))
        argv = [exe, "-c", str(conf), "-s", str(stats), "-a", "127.0.0.1", "-o", str(log)]
        stack = contextlib.ExitStack()
        try:
            proc = stack.enter_context(running(argv, port=pools[0].listen))
            for pool in pools[1:]:
                wait_for_port(pool.listen, proc=proc)
            if proc.poll() is not None:
                raise RuntimeError(f"nutcracker exited with {proc.returncode}")
        except RuntimeError as exc:
            stack.close()
            failure = f"{exc}\nnutcracker log:\n" + (log.read_text(errors="replace")[-3000:] if log.exists() else "")
            continue
        with stack:
            yield
        return
    raise RuntimeError(failure)


def _eject_dead_server(pool: Pool) -> None:
    """Send gets until one is routed to the dead server (SERVER_ERROR): nutcracker then ejects it.

    The probe keys are random: twemproxy's 32-bit "fnv1a_64" (prime 0x1b3) puts keys that only
    differ in their last bytes next to each other on the ring, so ``probe-1``, ``probe-2``... could
    all miss the dead server.
    """
    rng = random.Random(pool.name)
    with _connect(pool.listen) as sock:
        for _ in range(400):
            sock.sendall(b"get probe-%x\r\n" % rng.getrandbits(64))
            reply = sock.recv(4096)
            while not reply.endswith(b"\r\n"):
                reply += sock.recv(4096)
            if reply.startswith(b"SERVER_ERROR"):
                return
            assert reply == b"END\r\n", reply
    raise AssertionError("no probe key reached the dead server")


@pytest.fixture(scope="module")
def placement() -> Iterator[dict[str, dict[bytes, set[Backend]]]]:
    """Run everything once: pool name -> key -> the backends that hold it."""
    require_binary("nutcracker")
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        ports: list[Backend] = [stack.enter_context(memcached()) for _ in range(4)]
        # slot 4: bound (so no one else gets the port) but not listening: connections are refused
        dead_sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        dead_sock.bind(("127.0.0.1", 0))
        dead = int(dead_sock.getsockname()[1])
        unix = stack.enter_context(_memcached_unix(os.path.join(workdir, "mc.sock")))
        slots: list[Backend] = [*ports, dead, unix]
        used: set[bytes] = set()
        for pool in POOLS:
            pool.backends = [slots[slot] for slot, _ in pool.servers]
            pool.entries = [template.format(port=slots[slot], path=slots[slot]) for slot, template in pool.servers]
            pool.keys = _keys(pool, used)
        stack.enter_context(_nutcracker(POOLS, workdir))
        for pool in POOLS:
            if pool.eject:
                _eject_dead_server(pool)
            _set_through(pool.listen, pool.keys)
        result: dict[str, dict[bytes, set[Backend]]] = {p.name: {k: set() for k in p.keys} for p in POOLS}
        for backend in [*ports, unix]:
            pools = [p for p in POOLS if backend in p.backends]
            for pool in pools:
                for key in _held_by(backend, pool.keys):
                    result[pool.name][key].add(backend)
        yield result


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pool(name: str) -> Pool:
    return next(p for p in POOLS if p.name == name)


@pytest.mark.parametrize("name", EXACT_POOLS)
def test_router_predicts_nutcracker(name: str, placement: dict[str, dict[bytes, set[Backend]]]) -> None:
    pool = _pool(name)
    router = Router(pool.entries, hash=pool.hash, distribution=pool.distribution, hash_tag=pool.hash_tag)
    if pool.eject:
        router.set_live(i for i, (slot, _) in enumerate(pool.servers) if slot != 4)
    observed = placement[name]
    wrong = []
    for key in pool.keys:
        holders = observed[key]
        expected = pool.backends[router.index_for(key)]
        if holders != {expected}:
            wrong.append((key, sorted(map(str, holders)), expected))
    assert not wrong, f"{len(wrong)}/{len(pool.keys)} keys misrouted, e.g. {wrong[:5]}"
    # every live backend got keys, so the comparison is not vacuous -- except that crc32 hashes
    # are 15-bit: on the 32-bit ketama ring they all fall before the first point(s) of one server
    used = {b for holders in observed.values() for b in holders}
    if pool.hash == "crc32" and pool.distribution == "ketama":
        assert len(used) == 1
    else:
        assert used == {pool.backends[i] for i in router.live}


def test_random_spreads_over_all_servers(placement: dict[str, dict[bytes, set[Backend]]]) -> None:
    pool = _pool("r_random")
    observed = placement["r_random"]
    assert all(len(holders) == 1 for holders in observed.values())
    counts = {b: sum(1 for h in observed.values() if b in h) for b in pool.backends}
    assert all(count > pool.nkeys // 10 for count in counts.values()), counts
    router = Router(pool.entries, distribution="random", rng=random.Random(1))
    assert {router.index_for(key) for key in pool.keys} == {0, 1, 2, 3}


def test_port_11211_is_left_out_of_the_name() -> None:
    """Without a node name, a server on port 11211 is hashed as just its host (libmemcached rule)."""
    with contextlib.ExitStack() as stack:
        if not _port_is_free(11211):
            pytest.skip("port 11211 is busy")
        default = stack.enter_context(memcached(11211))
        workdir = stack.enter_context(temp_dir())
        others = [stack.enter_context(memcached()) for _ in range(2)]
        pool = Pool("d_ketama", "md5", "ketama", [], KEYS_OTHER)
        pool.backends = [default, *others]
        pool.entries = ["127.0.0.1:11211:1", f"127.0.0.1:{others[0]}:1", f"127.1:{others[1]}:1"]
        pool.keys = _keys(pool, set())
        stack.enter_context(_nutcracker([pool], workdir))
        _set_through(pool.listen, pool.keys)
        holders = {b: _held_by(b, pool.keys) for b in pool.backends}
        router = Router(pool.entries, hash="md5")
        for key in pool.keys:
            expected = pool.backends[router.index_for(key)]
            assert [b for b in pool.backends if key in holders[b]] == [expected], key


def test_nutcracker_is_0_5_0() -> None:
    """The quirks above were read from twemproxy 0.5.0; make a version change visible."""
    exe = require_binary("nutcracker")
    out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=10)
    assert "0.5.0" in out.stdout + out.stderr
