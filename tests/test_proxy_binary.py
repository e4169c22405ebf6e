"""Binary memcached clients through ``hoard proxy``: 2 Debian memcached + 2 ``hoard server`` backends.

pymemcache speaks text only, so the clients are raw sockets with the core
codec (:mod:`scatterhoard.protocol.binary`) and ``scatterhoard.Client(...,
protocol="binary")``.  The strongest check is differential: every case of
``tests/test_binary_vs_memcached.py`` (every opcode, quiet batches, CAS,
counters, too-large values, malformed packets...) gives the same replies
through the proxy as from one real memcached, and so does a pipelined mix of
1000 random requests.  Then what only a proxy has: GETKQ batches over keys on
every server ended by NOOP, opaques echoed whatever answers, the key ->
server mapping of text clients, what the proxy answers itself (STAT about
the proxy, VERSION, VERBOSITY, SASL, QUIT), malformed packets never
forwarded, a value over the proxy's item limit, the server-connection limit.
Failures (timeouts, killed servers, ejection) are in
``test_proxy_binary_failures.py``.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from collections.abc import Iterator

import pytest
from pymemcache.client.base import Client as TextClient

import scatterhoard
from scatterhoard.protocol import binary as b
from scatterhoard.proxy.session import MAX_ITEM_SIZE
from scatterhoard.proxy.stats import VERSION as PROXY_VERSION
from tests.support import hoard_server, memcached, temp_dir
from tests.test_binary_vs_memcached import CASES, Conn, Reply, s
from tests.test_proxy_integration import Proxy, ask, keys_on, proxy

pytestmark = pytest.mark.timeout(120)

MARK = 0xFEEDF00D  # (the opaque of the NOOP ending each Conn step)
VERSION = PROXY_VERSION.encode()


class AnyCas(Conn):
    """A :class:`Conn` that compares only whether a reply carries a CAS.

    Through the proxy, items live on four servers whose CAS counters are
    independent: two items may get the same CAS, which would break the
    per-connection naming of CAS values.
    """

    def _normalize(self, p: b.Packet) -> Reply:
        reply = super()._normalize(p)
        assert isinstance(reply, tuple)
        return (*reply[:6], "<cas>" if p.cas else 0, *reply[7:])


class Bin:
    """A raw binary-protocol client connection."""

    def __init__(self, port: int | str) -> None:
        if isinstance(port, str):  # a unix socket
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(port)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = b.BinaryParser(None, magic=b.RESPONSE_MAGIC)
        self.ready: list[b.Packet] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, *packets: bytes) -> None:
        self.sock.sendall(b"".join(packets))

    def read(self, n: int) -> list[b.Packet]:
        while len(self.ready) < n:
            chunk = self.sock.recv(1 << 20)
            assert chunk, f"closed after {len(self.ready)} of {n} replies: {self.ready}"
            self.ready += [p for p in self.parser.feed(chunk) if isinstance(p, b.Packet)]
        out, self.ready = self.ready[:n], self.ready[n:]
        return out

    def through(self, opaque: int) -> list[b.Packet]:
        """Every reply up to and including the one with ``opaque``."""
        out: list[b.Packet] = []
        while not out or out[-1].opaque != opaque:
            out += self.read(1)
        return out

    def call(self, *packets: bytes) -> list[b.Packet]:
        """Send ``packets`` and a NOOP; the replies before the NOOP's."""
        self.send(*packets, b.encode_request(b.OP_NOOP, opaque=MARK))
        replies = self.through(MARK)
        assert replies[-1].opcode == b.OP_NOOP
        return replies[:-1]

    def closed(self) -> bool:
        """True when the proxy closed the connection (after what was read so far)."""
        try:
            return not self.ready and self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


@contextlib.contextmanager
def binary(port: int) -> Iterator[Bin]:
    conn = Bin(port)
    try:
        yield conn
    finally:
        conn.close()


def req(opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"", opaque: int = 0,
        cas: int = 0) -> bytes:
    return b.encode_request(opcode, key, extras, value, opaque=opaque, cas=cas)


def store(opcode: int, key: bytes, value: bytes, flags: int = 0, opaque: int = 0, cas: int = 0) -> bytes:
    return req(opcode, key, b.pack_store_extras(flags, 0), value, opaque, cas)


def brief(p: b.Packet) -> tuple[int, int, bytes, bytes, int]:
    return (p.opcode, p.status, p.key, p.value, p.opaque)


def holdings(ports: list[int], keys: list[bytes]) -> list[set[bytes]]:
    """Which of ``keys`` each backend holds (asked directly, in text)."""
    out = []
    for port in ports:
        held: set[bytes] = set()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for i in range(0, len(keys), 50):
                reply = ask(sock, b"get " + b" ".join(keys[i:i + 50]) + b"\r\n", b"END\r\n")
                held |= {line.split(b" ")[1] for line in reply.split(b"\r\n") if line.startswith(b"VALUE ")}
        out.append(held)
    return out


# -- the shared cluster -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[dict[str, Proxy], list[int]]]:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        ports = [stack.enter_context(memcached()) for _ in range(2)]
        ports += [stack.enter_context(hoard_server()) for _ in range(2)]
        servers = [f"127.0.0.1:{ports[0]}:1", f"127.0.0.1:{ports[1]}:1 mc-b", f"127.0.0.1:{ports[2]}:2",
                   f"127.0.0.1:{ports[3]}:1 hoard-d"]
        pools = {
            "main": {"hash": "fnv1a_64", "distribution": "ketama", "hash_tag": '"{}"', "timeout": 5000,
                     "servers": servers},
            "few": {"unix": os.path.join(workdir, "few.sock"), "hash": "murmur", "distribution": "modula",
                    "server_connections": 2, "servers": servers},
        }
        yield stack.enter_context(proxy(pools, workdir)), ports


@pytest.fixture()
def main(cluster: tuple[dict[str, Proxy], list[int]]) -> Proxy:
    return cluster[0]["main"]


@pytest.fixture()
def backends(cluster: tuple[dict[str, Proxy], list[int]]) -> list[int]:
    return cluster[1]


@pytest.fixture(scope="module")
def reference() -> Iterator[int]:
    with memcached() as port:
        yield port


# -- the same replies as one memcached ------------------------------------------------------------

# STAT is answered by the proxy about itself (tested below); everything else must be memcached's.
DIFFERENTIAL = sorted(name for name in CASES if name != "stat_groups")


@pytest.mark.parametrize("name", DIFFERENTIAL)
def test_same_replies_as_memcached(main: Proxy, reference: int, name: str) -> None:
    ref, ours = AnyCas(reference), AnyCas(main.port)
    try:
        for conn in (ref, ours):  # FLUSH through the proxy: every server of the pool
            assert conn.step(s(req(b.OP_FLUSH))) == [("0x8", 0, b"", b"", b"", "0x0", 0, 0)]
        for i, step in enumerate(CASES[name]):
            assert ours.step(step) == ref.step(step), f"step {i}"
    finally:
        ref.close()
        ours.close()


def _mix(rng: random.Random, keys: list[bytes], n: int) -> list[bytes]:
    """``n`` random requests over ``keys`` (opaque = position), no FLUSH/STAT/VERSION/QUIT."""
    out = []
    for i in range(n):
        k = rng.choice(keys)
        op = rng.randrange(12)
        if op < 3:
            value = b"%d" % rng.randrange(1000) if rng.random() < 0.5 else b"v" * rng.randrange(300)
            out.append(store(rng.choice((b.OP_SET, b.OP_SETQ, b.OP_ADD, b.OP_ADDQ, b.OP_REPLACE, b.OP_REPLACEQ)),
                             k, value, rng.randrange(100), i))
        elif op < 6:
            out.append(req(rng.choice((b.OP_GET, b.OP_GETK, b.OP_GETQ, b.OP_GETKQ)), k, opaque=i))
        elif op == 6:
            out.append(req(rng.choice((b.OP_APPEND, b.OP_APPENDQ, b.OP_PREPEND, b.OP_PREPENDQ)), k,
                           value=b"xy", opaque=i))
        elif op == 7:
            op = rng.choice((b.OP_INCREMENT, b.OP_INCREMENTQ, b.OP_DECREMENT, b.OP_DECREMENTQ))
            exptime = rng.choice((0, b.INCR_NO_CREATE))
            out.append(req(op, k, b.pack_arith_extras(rng.randrange(50), rng.randrange(50), exptime), opaque=i))
        elif op == 8:
            out.append(req(rng.choice((b.OP_DELETE, b.OP_DELETEQ)), k, opaque=i))
        elif op == 9:
            out.append(req(rng.choice((b.OP_TOUCH, b.OP_GAT, b.OP_GATQ, b.OP_GATK, b.OP_GATKQ)), k,
                           b.pack_touch_extras(1000), opaque=i))
        else:
            out.append(req(b.OP_NOOP, opaque=i))
    return out


def test_pipelined_mix_same_as_one_memcached(main: Proxy, reference: int) -> None:
    """1000 requests in one write, on keys of every server: the replies of one memcached, in order."""
    rng = random.Random(11)
    tag = b"mix%d:" % random.getrandbits(32)
    keys = [tag + b"%016x" % rng.getrandbits(64) for _ in range(50)]  # (fnv1a_64 clusters similar keys)
    keys += [b"{grp}" + tag + b"%d" % i for i in range(10)]
    router = main.router(hash="fnv1a_64", hash_tag="{}")
    assert len({router.index_for(k) for k in keys}) == 4
    step = s(*_mix(rng, keys, 1000))
    ref, ours = AnyCas(reference), AnyCas(main.port)
    try:
        expected = ref.step(step)
        got = ours.step(step)
    finally:
        ref.close()
        ours.close()
    assert len(got) > 500  # (most requests answer)
    assert got == expected


# -- what only a proxy does -------------------------------------------------------------------


def test_getkq_batch_over_every_server_ended_by_noop(main: Proxy) -> None:
    router = main.router(hash="fnv1a_64", hash_tag="{}")
    keys = [b"gk:%016x" % random.getrandbits(64) for _ in range(400)]
    assert len({router.index_for(k) for k in keys}) == 4
    hits = keys[::3]
    with binary(main.port) as c:
        assert c.call(*(store(b.OP_SETQ, k, k[::-1], i) for i, k in enumerate(hits))) == []
        # twice in one write: the second batch's replies come after the first NOOP's
        batch = [req(b.OP_GETKQ, k, opaque=i) for i, k in enumerate(keys)]
        c.send(*batch, req(b.OP_NOOP, opaque=10_000), *batch, req(b.OP_NOOP, opaque=10_001))
        for end in (10_000, 10_001):
            replies = c.through(end)
            assert replies[-1].opcode == b.OP_NOOP and replies[-1].opaque == end
            got = replies[:-1]
            assert [(p.opcode, p.status, p.key, p.value) for p in got] == \
                [(b.OP_GETKQ, 0, k, k[::-1]) for k in hits]  # every hit once, in request order
            assert [p.opaque for p in got] == [keys.index(k) for k in hits]
            assert [p.extras for p in got] == [b.pack_get_reply_extras(i) for i in range(len(hits))]  # flags


def test_opaque_echoed_whoever_answers(main: Proxy) -> None:
    rng = random.Random(5)
    opaques = [0, 0xFFFFFFFF, *(rng.getrandbits(32) for _ in range(12))]
    key = b"op%d" % random.getrandbits(32)
    packets = [
        store(b.OP_SET, key, b"v", 0, opaques[0]),  # a server
        req(b.OP_GET, key, opaque=opaques[1]),
        req(b.OP_GETQ, key + b"-none", opaque=opaques[2]),  # no reply
        req(b.OP_DELETEQ, key + b"-none", opaque=opaques[3]),  # a quiet error
        req(b.OP_NOOP, opaque=opaques[4]),  # the proxy
        req(b.OP_VERSION, opaque=opaques[5]),
        req(0x55, opaque=opaques[6]),  # unknown: the proxy
        req(b.OP_SASL_LIST_MECHS, opaque=opaques[7]),
        req(b.OP_FLUSHQ, opaque=opaques[8]),  # broadcast, quiet
        req(b.OP_GETK, key, opaque=opaques[9]),  # flushed: a miss
        req(b.OP_STAT, b"items", opaque=opaques[10]),
        req(b.OP_INCREMENT, key, b.pack_arith_extras(1, 0, b.INCR_NO_CREATE), opaque=opaques[11]),
        req(b.OP_NOOP, opaque=opaques[12]),
    ]
    with binary(main.port) as c:
        c.send(*packets)
        got = c.through(opaques[12])
    assert [p.opaque for p in got] == [o for i, o in enumerate(opaques[:13]) if i not in (2, 8)]
    assert [p.status for p in got] == [0, 0, 1, 0, 0, 0x81, 0x81, 1, 1, 1, 0]


def test_key_mapping_same_as_text_clients(main: Proxy, backends: list[int]) -> None:
    """Keys written by binary clients land where text clients' do (asked of every backend)."""
    keys = [b"map:%016x" % random.getrandbits(64) for _ in range(300)] + [b"{t}%d" % i for i in range(20)]
    router = main.router(hash="fnv1a_64", hash_tag="{}")
    expected = [{k for k in keys if router.index_for(k) == i} for i in range(4)]
    assert all(expected)
    with binary(main.port) as c:
        assert c.call(*(store(b.OP_SETQ, k, b"b") for k in keys)) == []
    by_binary = holdings(backends, keys)
    with binary(main.port) as c:
        assert c.call(*(req(b.OP_DELETEQ, k) for k in keys)) == []
    assert holdings(backends, keys) == [set()] * 4
    text = TextClient(("127.0.0.1", main.port), timeout=10, connect_timeout=10)
    try:
        assert text.set_many({k.decode(): b"t" for k in keys}, noreply=False) == []
    finally:
        text.close()
    by_text = holdings(backends, keys)
    assert by_binary == by_text == expected


def _client_ops(c: scatterhoard.Client, tag: str) -> list[object]:
    keys = [f"{tag}:{i}" for i in range(60)]
    out: list[object] = [
        c.set_many({k: k.encode() for k in keys}),
        c.get_many([*keys, f"{tag}:none"]),
        c.set(keys[0], b"x"), c.get(keys[0]), c.add(keys[0], b"no"), c.add(f"{tag}:new", b"yes"),
        c.replace(keys[1], b"r"), c.replace(f"{tag}:none", b"r"), c.append(keys[1], b"!"),
        c.prepend(keys[1], b"<"), c.get(keys[1]), c.gets(keys[2])[0],
        c.set(f"{tag}:n", b"10"), c.incr(f"{tag}:n", 5), c.decr(f"{tag}:n", 20), c.incr(f"{tag}:none", 1),
        c.touch(keys[3], 100), c.touch(f"{tag}:none", 100), c.gat(keys[4], 100),
        c.delete(keys[5]), c.delete(keys[5]), c.delete_many(keys[6:30]), c.get_many(keys[:32]),
    ]
    value, cas = c.gets(keys[31])
    assert cas is not None
    out += [c.cas(keys[31], b"new", cas), c.cas(keys[31], b"newer", cas), c.get(keys[31])]
    c.set_many({f"{tag}:nr{i}": b"q" for i in range(30)}, noreply=True)
    out.append(c.get_many([f"{tag}:nr{i}" for i in range(30)]))
    return out


def test_scatterhoard_binary_client_through_the_proxy(main: Proxy, reference: int) -> None:
    """Our own client, binary protocol, pointed at the proxy: the results it gets from one memcached."""
    tag = f"cl{random.getrandbits(32)}"
    results = []
    for port in (main.port, reference):
        with scatterhoard.Client(f"127.0.0.1:{port}", protocol="binary", on_error="raise") as c:
            results.append(_client_ops(c, tag))
    assert results[0] == results[1]
    with scatterhoard.Client(f"127.0.0.1:{main.port}", protocol="binary", on_error="raise") as c:
        (version,) = c.version().values()
        assert version.startswith("0.5.0-scatterhoard")
        (stats,) = c.stats().values()
        assert stats["pool"] == "main" and int(stats["client_connections"]) >= 1


def test_every_opcode(main: Proxy, backends: list[int]) -> None:
    """Each opcode once, with what it must answer; the opcodes not forwarded are the proxy's own."""
    router = main.router(hash="fnv1a_64", hash_tag="{}")
    tag = f"ev{random.getrandbits(32)}:"
    k = [keys_on(router, i, 1, tag)[0] for i in range(4)]  # a key on each server
    seen: set[int] = set()

    def check(c: Bin, packets: list[bytes], expected: list[tuple[int, int, bytes, bytes, int]]) -> list[b.Packet]:
        seen.update(p[1] for p in packets)
        got = c.call(*packets)
        assert [brief(p) for p in got] == expected
        return got

    arith = b.pack_arith_extras
    touch = b.pack_touch_extras(1000)
    with binary(main.port) as c:
        got = check(c, [store(b.OP_SET, k[0], b"v0", 7, 1), store(b.OP_SETQ, k[1], b"v1", 0, 2)],
                    [(b.OP_SET, 0, b"", b"", 1)])
        assert got[0].cas != 0
        got = check(c, [req(b.OP_GET, k[0], opaque=3), req(b.OP_GETK, k[1], opaque=4),
                        req(b.OP_GETQ, k[0], opaque=5), req(b.OP_GETKQ, k[1], opaque=6),
                        req(b.OP_GETQ, k[2], opaque=7), req(b.OP_GETKQ, k[3], opaque=8)],
                    [(b.OP_GET, 0, b"", b"v0", 3), (b.OP_GETK, 0, k[1], b"v1", 4), (b.OP_GETQ, 0, b"", b"v0", 5),
                     (b.OP_GETKQ, 0, k[1], b"v1", 6)])
        assert got[0].extras == b.pack_get_reply_extras(7)
        check(c, [store(b.OP_ADD, k[0], b"a", 0, 9), store(b.OP_ADDQ, k[0], b"a", 0, 10),
                  store(b.OP_ADDQ, k[2], b"v2", 0, 11), store(b.OP_ADD, k[3], b"v3", 0, 12)],
              [(b.OP_ADD, 2, b"", b"Data exists for key.", 9), (b.OP_ADDQ, 2, b"", b"Data exists for key.", 10),
               (b.OP_ADD, 0, b"", b"", 12)])
        check(c, [store(b.OP_REPLACE, k[2], b"r2", 0, 13), store(b.OP_REPLACEQ, k[2], b"v2", 0, 14),
                  store(b.OP_REPLACEQ, tag.encode() + b"none", b"x", 0, 15)],
              [(b.OP_REPLACE, 0, b"", b"", 13), (b.OP_REPLACEQ, 1, b"", b"Not found", 15)])
        check(c, [req(b.OP_APPEND, k[2], value=b">", opaque=16), req(b.OP_PREPEND, k[2], value=b"<", opaque=17),
                  req(b.OP_APPENDQ, k[2], value=b")", opaque=18), req(b.OP_PREPENDQ, k[2], value=b"(", opaque=19),
                  req(b.OP_GET, k[2], opaque=20)],
              [(b.OP_APPEND, 0, b"", b"", 16), (b.OP_PREPEND, 0, b"", b"", 17), (b.OP_GET, 0, b"", b"(<v2>)", 20)])
        counter = tag.encode() + b"n"
        check(c, [req(b.OP_INCREMENT, counter, arith(1, 10), opaque=21), req(b.OP_INCREMENTQ, counter, arith(5)),
                  req(b.OP_DECREMENT, counter, arith(2), opaque=22), req(b.OP_DECREMENTQ, counter, arith(100)),
                  req(b.OP_INCREMENTQ, k[0], arith(1), opaque=23), req(b.OP_INCREMENT, counter, arith(0), opaque=24)],
              [(b.OP_INCREMENT, 0, b"", b.pack_counter(10), 21), (b.OP_DECREMENT, 0, b"", b.pack_counter(13), 22),
               (b.OP_INCREMENTQ, 6, b"", b"Non-numeric server-side value for incr or decr", 23),
               (b.OP_INCREMENT, 0, b"", b.pack_counter(0), 24)])
        check(c, [req(b.OP_TOUCH, k[0], touch, opaque=25), req(b.OP_GAT, k[0], touch, opaque=26),
                  req(b.OP_GATK, k[1], touch, opaque=27), req(b.OP_GATQ, k[0], touch, opaque=28),
                  req(b.OP_GATKQ, counter + b"x", touch, opaque=29), req(b.OP_GATKQ, k[1], touch, opaque=30)],
              [(b.OP_TOUCH, 0, b"", b"", 25), (b.OP_GAT, 0, b"", b"v0", 26), (b.OP_GATK, 0, k[1], b"v1", 27),
               (b.OP_GATQ, 0, b"", b"v0", 28), (b.OP_GATKQ, 0, k[1], b"v1", 30)])
        check(c, [req(b.OP_DELETE, k[0], opaque=31), req(b.OP_DELETE, k[0], opaque=32),
                  req(b.OP_DELETEQ, k[1], opaque=33), req(b.OP_DELETEQ, k[1], opaque=34)],
              [(b.OP_DELETE, 0, b"", b"", 31), (b.OP_DELETE, 1, b"", b"Not found", 32),
               (b.OP_DELETEQ, 1, b"", b"Not found", 34)])
        # answered by the proxy
        got = check(c, [req(b.OP_NOOP, opaque=35), req(b.OP_VERSION, opaque=36),
                        req(b.OP_VERBOSITY, extras=b.pack_verbosity_extras(1), opaque=37)],
                    [(b.OP_NOOP, 0, b"", b"", 35), (b.OP_VERSION, 0, b"", VERSION, 36), (b.OP_VERBOSITY, 0, b"", b"", 37)])
        unknown = b"Unknown command"
        check(c, [req(b.OP_SASL_LIST_MECHS, opaque=38), req(b.OP_SASL_AUTH, b"PLAIN", value=b"\0u\0p", opaque=39),
                  req(b.OP_SASL_STEP, b"PLAIN", value=b"x", opaque=40)],
              [(b.OP_SASL_LIST_MECHS, 0x81, b"", unknown, 38), (b.OP_SASL_AUTH, 0x81, b"", unknown, 39),
               (b.OP_SASL_STEP, 0x81, b"", unknown, 40)])
        seen.add(b.OP_STAT)
        c.send(req(b.OP_STAT, opaque=41))
        rows = c.through(41)
        while rows[-1].key:  # the rows end with an empty key
            rows += c.through(41)
        stats = {p.key: p.value for p in rows[:-1]}
        assert all((p.opcode, p.status, p.opaque) == (b.OP_STAT, 0, 41) for p in rows)
        assert stats[b"pool"] == b"main" and stats[b"version"] == VERSION and int(stats[b"client_connections"]) >= 1
        assert b"server:mc-b:requests" in stats and b"server:hoard-d:live" in stats
        check(c, [req(b.OP_STAT, b"items", opaque=42)], [(b.OP_STAT, 1, b"", b"Not found", 42)])
        # FLUSH goes to every server
        assert check(c, [store(b.OP_SETQ, key, b"f") for key in k], []) == []
        check(c, [req(b.OP_FLUSH, opaque=43)], [(b.OP_FLUSH, 0, b"", b"", 43)])
        assert holdings(backends, k) == [set()] * 4
        check(c, [store(b.OP_SETQ, key, b"f") for key in k] + [req(b.OP_FLUSHQ, opaque=44)], [])
        assert holdings(backends, k) == [set()] * 4
    with binary(main.port) as c:  # QUIT: its reply after the ones before it, then closed
        seen.add(b.OP_QUIT)
        c.send(store(b.OP_SET, k[0], b"q", 0, 45), req(b.OP_GETQ, k[0], opaque=46), req(b.OP_QUIT, opaque=47),
               req(b.OP_GET, k[0], opaque=48))
        assert [brief(p) for p in c.read(3)] == [(b.OP_SET, 0, b"", b"", 45), (b.OP_GETQ, 0, b"", b"q", 46),
                                                 (b.OP_QUIT, 0, b"", b"", 47)]
        assert c.closed()
    with binary(main.port) as c:  # QUITQ: closed without a reply
        seen.add(b.OP_QUITQ)
        c.send(req(b.OP_GETQ, k[0], opaque=49), req(b.OP_QUITQ, opaque=50), req(b.OP_GET, k[0], opaque=51))
        assert [brief(p) for p in c.read(1)] == [(b.OP_GETQ, 0, b"", b"q", 49)]
        assert c.closed()
    assert seen == set(b.OPCODE_NAMES)


def _requests(main: Proxy) -> int:
    """Requests the proxy sent to the pool's servers, as of the next stats aggregation (-i 100)."""
    time.sleep(0.25)
    pool = main.stats_json()["main"]
    assert isinstance(pool, dict)
    return sum(s["requests"] for s in pool.values() if isinstance(s, dict))


def test_malformed_packets_answered_by_the_proxy(main: Proxy) -> None:
    """memcached's answers, from the proxy: nothing reaches a server, other clients go on."""
    header = b.HEADER.pack
    before = _requests(main)
    with binary(main.port) as c:  # an unknown opcode (its body skipped): answered, the connection goes on
        assert [brief(p) for p in c.call(req(0x42, b"key", b"ex", b"value" * 100, opaque=1), req(0xEE, opaque=2))] \
            == [(0x42, 0x81, b"", b"Unknown command", 1), (0xEE, 0x81, b"", b"Unknown command", 2)]
    cases = [  # (bytes, the reply before the connection is closed: (opcode, status, opaque) or None)
        (req(b.OP_GET, b"k" * 251, opaque=3), (b.OP_GET, 4, 3)),  # key too long: EINVAL
        (store(b.OP_SETQ, b"k" * 251, b"v", 0, 4), (b.OP_SETQ, 4, 4)),
        (req(b.OP_GET, b"k", b"extr", opaque=5), (b.OP_GET, 4, 5)),  # extras where none belong
        (req(b.OP_SET, b"k", b"1234", b"v", opaque=6), (b.OP_SET, 4, 6)),  # extras of the wrong size
        (req(b.OP_INCREMENT, b"k", b.pack_arith_extras(1), b"v", opaque=7), (b.OP_INCREMENT, 4, 7)),
        (req(b.OP_NOOP, b"k", opaque=8), (b.OP_NOOP, 4, 8)),
        (req(b.OP_FLUSH, b"k", opaque=9), (b.OP_FLUSH, 4, 9)),
        (header(0x80, b.OP_GET, 10, 0, 0, 0, 5, 10, 0) + b"k" * 10, (b.OP_GET, 0x81, 10)),  # key > body
        (header(0x90, b.OP_GET, 1, 0, 0, 0, 1, 11, 0) + b"k", None),  # bad magic: closed, no reply
        (header(0x81, b.OP_GET, 1, 0, 0, 0, 1, 12, 0) + b"k", None),  # a response's magic
    ]
    with binary(main.port) as other:
        for data, expected in cases:
            with binary(main.port) as c:
                # the requests before it are answered first; those after it never run
                c.send(req(b.OP_NOOP, opaque=100), data, store(b.OP_SET, b"after", b"x", 0, 101))
                got = c.read(1 + (expected is not None))
                assert brief(got[0]) == (b.OP_NOOP, 0, b"", b"", 100)
                if expected is not None:
                    assert (got[1].opcode, got[1].status, got[1].opaque) == expected
                    assert got[1].value == (b"Invalid arguments" if expected[1] == 4 else b"Unknown command")
                assert c.closed()
            assert [brief(p) for p in other.call(req(b.OP_VERSION, opaque=1))] == [(b.OP_VERSION, 0, b"", VERSION, 1)]
    assert _requests(main) == before  # nothing was forwarded (not even the SETs after the bad packets)


def test_value_over_the_proxys_item_limit(main: Proxy) -> None:
    """E2BIG from the proxy as soon as the header, extras and key are in; the value is skipped, not buffered."""
    size = MAX_ITEM_SIZE + 1
    key = b"huge%d" % random.getrandbits(32)
    with binary(main.port) as c:
        head = b.HEADER.pack(0x80, b.OP_SETQ, len(key), 8, 0, 0, 8 + len(key) + size, 7, 0)
        c.send(head, b.pack_store_extras(0, 0), key)
        (reply,) = c.read(1)  # before a byte of the value was sent
        assert brief(reply) == (b.OP_SETQ, 3, b"", b"Too large.", 7)
        chunk = b"z" * (1 << 20)
        for _ in range(size >> 20):
            c.sock.sendall(chunk)
        c.send(b"z" * (size & ((1 << 20) - 1)))
        assert [brief(p) for p in c.call(req(b.OP_GETK, key, opaque=8))] == [(b.OP_GETK, 1, key, b"", 8)]


def test_binary_clients_share_few_server_connections(cluster: tuple[dict[str, Proxy], list[int]]) -> None:
    """At most server_connections (2 in pool "few", on a unix socket) per server, for 20 binary clients."""
    p = cluster[0]["few"]
    conns = [Bin(p.unix) for _ in range(20)]
    try:
        for _round in range(3):
            for i, c in enumerate(conns):
                c.send(*(store(b.OP_SETQ, b"few%d:%d" % (i, j), b"x") for j in range(10)),
                       *(req(b.OP_GETKQ, b"few%d:%d" % (i, j), opaque=j) for j in range(10)),
                       req(b.OP_NOOP, opaque=MARK))
            for c in conns:
                assert len(c.through(MARK)) == 11
    finally:
        for c in conns:
            c.close()
    time.sleep(0.25)
    pool = p.stats_json()["few"]
    assert isinstance(pool, dict)
    counts = [v["server_connections"] for v in pool.values() if isinstance(v, dict)]
    assert len(counts) == 4 and all(1 <= n <= 2 for n in counts), counts
