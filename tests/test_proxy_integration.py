"""``hoard proxy`` in front of real backends: 2 Debian memcached + 2 ``hoard server``.

Driven with pymemcache and raw sockets: every command, multi-get merge order,
noreply, a pipelined mix of 1000 requests compared byte for byte with one real
memcached, malformed requests answered by the proxy itself, the stats port.
Failures get their own backends and proxy: a SIGSTOPped backend (timeout, then
recovery), auto-ejection and return after a health probe, a killed backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymemcache.client.base import Client

from scatterhoard.routing import Router
from tests.support import (
    free_port,
    hoard_argv,
    hoard_server,
    memcached,
    recv_until,
    require_binary,
    running,
    stop_process,
    temp_dir,
    wait_for_port,
    wait_for_unix,
)

pytestmark = pytest.mark.timeout(60)


@dataclass
class Proxy:
    port: int
    stats: int
    servers: list[str]  # the servers: entries
    conf: Path
    proc: object = None
    unix: str = ""

    def router(self, **kw: object) -> Router:
        return Router(self.servers, **kw)  # type: ignore[arg-type]

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def stats_json(self) -> dict[str, object]:
        with socket.create_connection(("127.0.0.1", self.stats), timeout=5) as sock:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return json.loads(data)  # type: ignore[no-any-return]


@contextlib.contextmanager
def proxy(pools: dict[str, dict[str, object]], workdir: str, interval: int = 100) -> Iterator[dict[str, Proxy]]:
    """Run ``hoard proxy`` with these pools (listen ports are chosen here)."""
    stats = free_port()
    out: dict[str, Proxy] = {}
    lines = []
    for name, keys in pools.items():
        servers = list(keys.pop("servers"))  # type: ignore[call-overload]
        unix = str(keys.pop("unix", ""))
        port = 0 if unix else free_port()
        listen = f"{unix} 0600" if unix else f"127.0.0.1:{port}"
        lines += [f"{name}:", f"  listen: {listen}"] + [f"  {k}: {v}" for k, v in keys.items()]
        lines += ["  servers:"] + [f"   - {s}" for s in servers]
        out[name] = Proxy(port, stats, servers, Path(workdir, "proxy.yml"), unix=unix)
    conf = Path(workdir, "proxy.yml")
    conf.write_text("\n".join(lines) + "\n")
    argv = hoard_argv("proxy", "-c", str(conf), "-s", str(stats), "-a", "127.0.0.1", "-i", str(interval),
                      "-o", str(Path(workdir, "proxy.log")))
    with running(argv, port=stats) as proc:
        for p in out.values():
            p.proc = proc
            if p.unix:
                wait_for_unix(p.unix)
            else:
                wait_for_port(p.port, proc=proc)
        yield out


def ask(sock: socket.socket, request: bytes, terminator: bytes = b"\r\n", count: int = 1) -> bytes:
    sock.sendall(request)
    sock.settimeout(10)
    data = b""
    while data.count(terminator) < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return data


def ask_through_version(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request`` (ending with ``version``); read through the VERSION line."""
    sock.sendall(request)
    sock.settimeout(10)
    data = b""
    while not (b"VERSION " in data and data.endswith(b"\r\n")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def keys_on(router: Router, server: int, n: int, prefix: str) -> list[bytes]:
    out = []
    while len(out) < n:
        key = f"{prefix}{random.getrandbits(64):x}".encode()
        if router.index_for(key) == server:
            out.append(key)
    return out


# -- the shared cluster -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Proxy]]:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        ports = [stack.enter_context(memcached()) for _ in range(2)]
        ports += [stack.enter_context(hoard_server()) for _ in range(2)]
        servers = [f"127.0.0.1:{ports[0]}:1", f"127.0.0.1:{ports[1]}:1 mc-b", f"127.0.0.1:{ports[2]}:2",
                   f"127.0.0.1:{ports[3]}:1 hoard-d"]
        pools = {
            "main": {"hash": "fnv1a_64", "distribution": "ketama", "hash_tag": '"{}"', "timeout": 5000,
                     "servers": servers},
            "sock": {"unix": os.path.join(workdir, "proxy.sock"), "hash": "murmur", "distribution": "modula",
                     "server_connections": 2, "servers": servers},
        }
        yield stack.enter_context(proxy(pools, workdir))


@pytest.fixture()
def main(cluster: dict[str, Proxy]) -> Proxy:
    return cluster["main"]


def test_pymemcache_commands(main: Proxy) -> None:
    client = Client(("127.0.0.1", main.port), timeout=5, connect_timeout=5)
    tag = f"pm{random.getrandbits(32)}"
    keys = [f"{tag}:{i}" for i in range(40)]
    assert client.set_many({k: k.encode() for k in keys}, noreply=False) == []
    got = client.get_many(keys + [f"{tag}:missing"])
    assert list(got) == keys and all(got[k] == k.encode() for k in keys)
    client.set_many({f"{tag}:nr{i}": b"x" for i in range(20)})  # noreply by default
    assert len(client.get_many([f"{tag}:nr{i}" for i in range(20)])) == 20
    assert client.add(keys[0], b"no", noreply=False) is False
    assert client.replace(keys[0], b"yes", noreply=False) is True
    assert client.append(keys[0], b"!", noreply=False) is True
    assert client.prepend(keys[0], b"<", noreply=False) is True
    assert client.get(keys[0]) == b"<yes!"
    value, cas = client.gets(keys[1])
    assert value == keys[1].encode()
    assert client.cas(keys[1], b"new", cas, noreply=False) is True
    assert client.cas(keys[1], b"newer", cas, noreply=False) is False
    client.set(f"{tag}:n", b"10", noreply=False)
    assert client.incr(f"{tag}:n", 5) == 15
    assert client.decr(f"{tag}:n", 20) == 0
    assert client.incr(f"{tag}:none", 1) is None
    assert client.touch(keys[2], 100, noreply=False) is True
    assert client.delete(keys[3], noreply=False) is True
    assert client.delete(keys[3], noreply=False) is False
    assert client.get(keys[3]) is None
    assert client.version().startswith(b"0.5.0-scatterhoard")
    assert client.get_many([]) == {}
    client.close()


def test_multi_get_merged_in_request_order(main: Proxy) -> None:
    router = main.router(hash="fnv1a_64", hash_tag="{}")
    tag = random.getrandbits(32)
    keys = [b"mg:%016x" % random.getrandbits(64) for i in range(60)]  # fnv1a_64 clusters similar keys
    assert len({router.index_for(k) for k in keys}) == 4  # really spread over every server
    with main.connect() as sock:
        req = b"".join(b"set %s %d 0 %d\r\n%s\r\n" % (k, i, len(k) + 1, k + b"!") for i, k in enumerate(keys))
        assert ask(sock, req, count=len(keys)) == b"STORED\r\n" * len(keys)
        order = keys[::-1] + [b"mg-missing"] + keys[:5] + [keys[7]]  # reversed, a miss, duplicates
        reply = ask(sock, b"get " + b" ".join(order) + b"\r\n", b"END\r\n")
        expected = b"".join(b"VALUE %s %d %d\r\n%s\r\n" % (k, keys.index(k), len(k) + 1, k + b"!")
                            for k in order if k in keys) + b"END\r\n"
        assert reply == expected
        reply = ask(sock, b"gets " + b" ".join(keys[:10]) + b"\r\n", b"END\r\n")
        lines = reply.split(b"\r\n")
        assert [line.split(b" ")[1] for line in lines if line.startswith(b"VALUE")] == keys[:10]
        assert all(len(line.split(b" ")) == 5 for line in lines if line.startswith(b"VALUE"))
        reply = ask(sock, b"gat 100 " + b" ".join(keys[20:30]) + b"\r\n", b"END\r\n")
        assert reply.count(b"VALUE ") == 10 and reply.endswith(b"\r\nEND\r\n")
        assert ask(sock, b"gats 0 zz:none yy:none\r\n") == b"END\r\n"
        # keys with the same hash tag live together
        tagged = [b"{user7}:%d:%d" % (tag, i) for i in range(20)]
        assert len({router.index_for(k) for k in tagged}) == 1
    time.sleep(0.25)  # one stats aggregation (-i 100)
    stats = main.stats_json()
    assert stats["main"]["fragments"] > 0  # type: ignore[index]


def test_noreply_forwarded_without_reply(main: Proxy) -> None:
    tag = random.getrandbits(32)
    with main.connect() as sock:
        req = b"".join(b"set nr%d:%d 0 0 1 noreply\r\n%d\r\n" % (tag, i, i % 10) for i in range(100))
        req += b"".join(b"incr nr%d:%d 1 noreply\r\n" % (tag, i) for i in range(50))
        req += b"delete nr%d:99 noreply\r\ntouch nr%d:1 100 noreply\r\nflush_all 0 noreply\r\n" % (tag, tag)
        req += b"verbosity 1 noreply\r\nset nr%d:x 0 0 1\r\ny\r\n" % tag
        assert ask(sock, req) == b"STORED\r\n"  # only the one request that wanted a reply
        # flush_all noreply emptied every server before nr:x was set; nothing else came back
        assert ask(sock, b"get nr%d:1 nr%d:x\r\n" % (tag, tag), b"END\r\n") == \
            b"VALUE nr%d:x 0 1\r\ny\r\nEND\r\n" % tag
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(100)


def test_pipelined_mix_matches_one_memcached(main: Proxy) -> None:
    """1000 requests in one write through the proxy = the same bytes to a single memcached."""
    rng = random.Random(7)
    tag = b"pipe%d:" % random.getrandbits(32)
    keys = [tag + b"%d" % i for i in range(60)] + [b"{grp}" + tag + b"%d" % i for i in range(10)]
    parts = []
    for _ in range(1000):
        k = rng.choice(keys)
        op = rng.randrange(14)
        if op < 3:
            v = b"%d" % rng.randrange(1000) if rng.random() < 0.5 else b"v" * rng.randrange(0, 300)
            parts.append(b"set %s %d 0 %d\r\n%s\r\n" % (k, rng.randrange(100), len(v), v))
        elif op < 6:
            parts.append(b"get %s\r\n" % k)
        elif op == 6:
            parts.append(b"get " + b" ".join(rng.sample(keys, rng.randint(2, 12))) + b"\r\n")
        elif op == 7:
            parts.append(b"%s %s %d\r\n" % (rng.choice((b"incr", b"decr")), k, rng.randrange(50)))
        elif op == 8:
            parts.append(b"delete %s\r\n" % k)
        elif op == 9:
            parts.append(b"%s %s 0 0 2\r\nxy\r\n" % (rng.choice((b"add", b"replace", b"append", b"prepend")), k))
        elif op == 10:
            parts.append(b"touch %s 1000\r\n" % k)
        elif op == 11:
            parts.append(rng.choice((b"mg %s v f\r\n" % k, b"mg %s v q k\r\n" % k, b"mn\r\n",
                                     b"ms %s 2 T0\r\nab\r\n" % k, b"md %s q\r\n" % k)))
        elif op == 12:
            parts.append(b"gat 1000 %s %s\r\n" % (k, rng.choice(keys)))
        else:
            parts.append(rng.choice((b"bogus\r\n", b"get\r\n", b"incr %s abc\r\n" % k)))
    request = b"".join(parts)

    def run(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request + b"set %send 0 0 1\r\n!\r\nget %send\r\n" % (tag, tag))
            return recv_until(sock, b"VALUE %send 0 1\r\n!\r\nEND\r\n" % tag, timeout=20)

    with memcached() as reference:
        expected = run(reference)
    got = run(main.port)
    assert got == expected


def test_meta_commands_routed_by_key(main: Proxy) -> None:
    tag = random.getrandbits(32)
    with main.connect() as sock:
        k = b"meta%d" % tag
        assert ask(sock, b"ms %s 3 T0 F5\r\nabc\r\n" % k) == b"HD\r\n"
        assert ask(sock, b"mg %s v f k\r\n" % k, count=2) == b"VA 3 f5 k%s\r\nabc\r\n" % k
        assert ask(sock, b"ma %s N0 J13\r\n" % (k + b"n")) == b"HD\r\n"
        assert ask(sock, b"ma %s v\r\n" % (k + b"n"), count=2) == b"VA 2\r\n14\r\n"
        # quiet mode: a get miss and a stored set vanish (a delete miss does not), mn ends it, in order
        reply = ask(sock, b"mg %s v q\r\nmg none%d v q\r\nms %s 1 q\r\nz\r\nmd none%d q\r\nmn\r\n"
                    % (k, tag, k + b"x", tag), b"MN\r\n")
        assert reply == b"VA 3\r\nabc\r\nNF\r\nMN\r\n"
        assert ask(sock, b"md %s\r\nmg %s v\r\n" % (k, k), count=2) == b"HD\r\nEN\r\n"
        assert ask(sock, b"me %s\r\n" % (k + b"x")).startswith(b"ME " + k + b"x ")


def test_proxy_answers_itself(main: Proxy) -> None:
    with main.connect() as sock:
        assert ask(sock, b"version\r\n").startswith(b"VERSION 0.5.0-scatterhoard-")
        assert ask(sock, b"verbosity 1\r\n") == b"OK\r\n"
        stats = ask(sock, b"stats\r\n", b"END\r\n")
        assert b"STAT pid %d\r\n" % main.proc.pid in stats  # type: ignore[attr-defined]
        assert b"STAT pool main\r\n" in stats and b"STAT server:mc-b:requests " in stats
        assert ask(sock, b"stats items\r\n") == b"ERROR\r\n"
        assert ask(sock, b"set q 0 0 1\r\nq\r\nquit\r\nget q\r\n", count=1) == b"STORED\r\n"
        assert sock.recv(100) == b""  # closed after the replies to what came before quit


def test_flush_all_broadcast(main: Proxy) -> None:
    router = main.router(hash="fnv1a_64", hash_tag="{}")
    with main.connect() as sock:
        keys = [keys_on(router, i, 1, f"fl{random.getrandbits(32)}:")[0] for i in range(4)]
        req = b"".join(b"set %s 0 0 1\r\nx\r\n" % k for k in keys)
        assert ask(sock, req, count=4) == b"STORED\r\n" * 4
        assert ask(sock, b"flush_all\r\n") == b"OK\r\n"
        assert ask(sock, b"get " + b" ".join(keys) + b"\r\n", b"END\r\n") == b"END\r\n"


def test_malformed_requests_answered_by_the_proxy(main: Proxy) -> None:
    """Same replies as memcached itself; nothing reaches a backend; other clients unaffected."""
    # (memcached drops the replies before a get whose key is too long in the same read: get goes first)
    stream = (b"get " + b"k" * 251 + b"\r\n" + b"bogus\r\n" + b"set k 0 0 abc\r\n" + b"set k 0 0 3\r\nabcde\r\n"
              + b"incr k x\r\n" + b"touch k\r\n" + b"delete\r\n" + b"gat abc k\r\n" + b"\r\n"
              + b"cas k 0 0 1\r\n" + b"mg\r\n" + b"ms k abc\r\n" + b"mg k v v\r\n" + b"mg k 1\r\n"
              + b"ms k 2 T\r\nab\r\n" + b"ma k N\r\n" + b"md\r\n" + b"version\r\n")
    with memcached() as reference, socket.create_connection(("127.0.0.1", reference), timeout=5) as ref:
        expected = ask_through_version(ref, stream)
    before = sum(s["requests"] for name, s in main.stats_json()["main"].items()  # type: ignore[union-attr]
                 if isinstance(s, dict))
    with main.connect() as sock, main.connect() as other:
        got = ask_through_version(sock, stream)
        assert got.rsplit(b"VERSION ", 1)[0] == expected.rsplit(b"VERSION ", 1)[0]
        assert ask(other, b"set ok 0 0 1\r\n1\r\nget ok\r\n", b"END\r\n") == b"STORED\r\nVALUE ok 0 1\r\n1\r\nEND\r\n"
        # memcached does not swallow the data block of a set whose key is too long: "1" is a command
        assert ask(sock, b"set " + b"x" * 300 + b" 0 0 1\r\n1\r\n", count=2) == \
            b"CLIENT_ERROR bad command line format\r\nERROR\r\n"
        # a line that never ends: memcached's error, then the connection is closed
        sock.sendall(b"x" * 10000)
        assert recv_until(sock, b"\r\n") == b"CLIENT_ERROR line too long\r\n"
        assert sock.recv(100) == b""
    time.sleep(0.25)  # one stats aggregation (-i 100)
    after = sum(s["requests"] for name, s in main.stats_json()["main"].items()  # type: ignore[union-attr]
                if isinstance(s, dict))
    assert after - before == 2  # only the other client's set and get were forwarded


def test_unix_socket_listener(cluster: dict[str, Proxy]) -> None:
    sock_pool = cluster["sock"]
    assert stat.S_IMODE(os.stat(sock_pool.unix).st_mode) == 0o600
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(sock_pool.unix)
        keys = [b"ux%d" % i for i in range(20)]
        req = b"".join(b"set %s 0 0 1\r\n%d\r\n" % (k, i % 10) for i, k in enumerate(keys))
        assert ask(sock, req, count=20) == b"STORED\r\n" * 20
        assert ask(sock, b"get " + b" ".join(keys) + b"\r\n", b"END\r\n").count(b"VALUE ") == 20


def test_many_clients_share_few_server_connections(cluster: dict[str, Proxy]) -> None:
    """At most server_connections (1 for main, 2 for sock) per server, whatever the number of clients."""
    for name, limit in (("main", 1), ("sock", 2)):
        p = cluster[name]
        socks = []
        for _ in range(20):
            if p.unix:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(p.unix)
            else:
                s = p.connect()
            socks.append(s)
        try:
            for _round in range(3):
                for i, s in enumerate(socks):
                    s.sendall(b"".join(b"set many%d:%d 0 0 1\r\nx\r\nget many%d:%d\r\n" % (i, j, i, j)
                                       for j in range(10)))
                for s in socks:
                    assert ask(s, b"", b"END\r\n", 10).count(b"VALUE ") == 10
        finally:
            for s in socks:
                s.close()
        time.sleep(0.25)
        pool = p.stats_json()[name]
        assert isinstance(pool, dict)
        counts = [v["server_connections"] for v in pool.values() if isinstance(v, dict)]
        assert counts and all(1 <= c <= limit for c in counts), counts


def test_stats_port_json(main: Proxy) -> None:
    with main.connect() as sock:
        ask(sock, b"set st 0 0 1\r\n1\r\n")
        time.sleep(0.25)
        doc = main.stats_json()
    for key in ("service", "source", "version", "uptime", "timestamp", "total_connections", "curr_connections"):
        assert key in doc
    assert doc["service"] == "nutcracker" and list(doc)[:7] == [
        "service", "source", "version", "uptime", "timestamp", "total_connections", "curr_connections"]
    assert list(doc)[7:] == ["main", "sock"] or list(doc)[7:] == ["sock", "main"]
    pool = doc["main"]
    assert isinstance(pool, dict)
    assert list(pool)[:6] == ["client_eof", "client_err", "client_connections", "server_ejects",
                              "forward_error", "fragments"]
    assert pool["client_connections"] >= 1
    servers = [name for name in pool if isinstance(pool[name], dict)]
    assert sorted(servers) == sorted(["mc-b", "hoard-d", *(s.split(" ")[0].rsplit(":", 1)[0]
                                                            for s in main.servers[::2])])
    server = pool["mc-b"]
    assert list(server) == ["server_eof", "server_err", "server_timedout", "server_connections",
                            "server_ejected_at", "requests", "request_bytes", "responses", "response_bytes",
                            "in_queue", "in_queue_bytes", "out_queue", "out_queue_bytes"]
    assert sum(pool[s]["requests"] for s in servers) > 0
    assert sum(pool[s]["server_connections"] for s in servers) >= 1


# -- failures: each test gets its own backends and proxy ------------------------------------------


def sigstop(pid: int) -> None:
    """SIGSTOP, and wait until every thread of the process is really stopped (delivery is asynchronous)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while True:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        if states and all(state in "Tt" for state in states):
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.005)


def _mc_proc(port: int) -> contextlib.AbstractContextManager[object]:
    exe = require_binary("memcached")
    argv = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    return running(argv, port=port)


def test_stopped_backend_times_out_then_recovers() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        a, b = free_port(), free_port()
        proc_a = stack.enter_context(_mc_proc(a))
        stack.enter_context(_mc_proc(b))
        servers = [f"127.0.0.1:{a}:1", f"127.0.0.1:{b}:1"]
        p = stack.enter_context(proxy({"t": {"timeout": 300, "servers": servers}}, workdir))["t"]
        router = p.router()
        ka, kb = keys_on(router, 0, 1, "a")[0], keys_on(router, 1, 1, "b")[0]
        sock = stack.enter_context(p.connect())
        assert ask(sock, b"set %s 0 0 1\r\n1\r\nset %s 0 0 1\r\n2\r\n" % (ka, kb), count=2) == b"STORED\r\n" * 2
        sigstop(proc_a.pid)  # type: ignore[attr-defined]
        try:
            start = time.monotonic()
            reply = ask(sock, b"get %s\r\nget %s\r\n" % (ka, kb), count=2)
            elapsed = time.monotonic() - start
            assert reply == b"SERVER_ERROR Connection timed out\r\nVALUE %s 0 1\r\n2\r\nEND\r\n" % kb
            assert 0.25 <= elapsed < 2.0
            assert ask(sock, b"get %s\r\n" % kb, count=2) == b"VALUE %s 0 1\r\n2\r\nEND\r\n" % kb
        finally:
            os.kill(proc_a.pid, signal.SIGCONT)  # type: ignore[attr-defined]
        assert ask(sock, b"get %s\r\n" % ka, b"END\r\n") == b"VALUE %s 0 1\r\n1\r\nEND\r\n" % ka
        time.sleep(0.25)
        server = p.stats_json()["t"][f"127.0.0.1:{a}"]  # type: ignore[index]
        assert server["server_timedout"] >= 1 and server["server_ejected_at"] == 0


def test_ejection_and_return_after_probe() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        a, b = free_port(), free_port()
        proc_a = stack.enter_context(_mc_proc(a))
        stack.enter_context(_mc_proc(b))
        servers = [f"127.0.0.1:{a}:1", f"127.0.0.1:{b}:1"]
        pool = {"timeout": 200, "auto_eject_hosts": "true", "server_failure_limit": 2,
                "server_retry_timeout": 400, "servers": servers}
        p = stack.enter_context(proxy({"e": pool}, workdir))["e"]
        ka = keys_on(p.router(), 0, 1, "ej")[0]
        sock = stack.enter_context(p.connect())
        sigstop(proc_a.pid)  # type: ignore[attr-defined]
        try:
            for _ in range(2):  # two consecutive failures eject the server
                assert ask(sock, b"get %s\r\n" % ka) == b"SERVER_ERROR Connection timed out\r\n"
            # the key now lives on the other server
            assert ask(sock, b"set %s 0 0 1\r\nB\r\nget %s\r\n" % (ka, ka), b"END\r\n") == \
                b"STORED\r\nVALUE %s 0 1\r\nB\r\nEND\r\n" % ka
            time.sleep(0.9)  # a probe ran (and timed out): still ejected
            assert ask(sock, b"get %s\r\n" % ka, b"END\r\n") == b"VALUE %s 0 1\r\nB\r\nEND\r\n" % ka
            doc = p.stats_json()["e"]  # type: ignore[index]
            assert doc["server_ejects"] == 1 and doc[f"127.0.0.1:{a}"]["server_ejected_at"] > 0
        finally:
            os.kill(proc_a.pid, signal.SIGCONT)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the next probe succeeds: the key goes back to its server
            if ask(sock, b"get %s\r\n" % ka, b"END\r\n") == b"END\r\n":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the server did not come back")
        assert ask(sock, b"set %s 0 0 1\r\nA\r\n" % ka) == b"STORED\r\n"
        with socket.create_connection(("127.0.0.1", a), timeout=5) as direct:
            assert ask(direct, b"get %s\r\n" % ka, b"END\r\n") == b"VALUE %s 0 1\r\nA\r\nEND\r\n" % ka


def test_killed_backend_gets_errors_not_hangs() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        a, b = free_port(), free_port()
        proc_a = stack.enter_context(_mc_proc(a))
        stack.enter_context(_mc_proc(b))
        servers = [f"127.0.0.1:{a}:1", f"127.0.0.1:{b}:1"]
        p = stack.enter_context(proxy({"k": {"servers": servers}}, workdir))["k"]
        router = p.router()
        ka, kb = keys_on(router, 0, 1, "k")[0], keys_on(router, 1, 1, "k")[0]
        sock = stack.enter_context(p.connect())
        assert ask(sock, b"set %s 0 0 1\r\n1\r\nget %s\r\n" % (ka, ka), b"END\r\n").startswith(b"STORED")
        stop_process(proc_a, signal.SIGKILL)  # type: ignore[arg-type]
        start = time.monotonic()
        reply = ask(sock, b"get %s\r\nget %s %s\r\nset %s 0 0 1\r\n1\r\n" % (ka, ka, kb, kb), count=3)
        assert reply.split(b"\r\n")[:2] == [b"SERVER_ERROR Connection reset by peer"] * 2 or \
            reply.split(b"\r\n")[:2] == [b"SERVER_ERROR Connection refused"] * 2, reply
        assert reply.endswith(b"STORED\r\n")
        assert ask(sock, b"get %s\r\n" % ka) == b"SERVER_ERROR Connection refused\r\n"
        assert time.monotonic() - start < 2
        time.sleep(0.25)
        doc = p.stats_json()["k"]  # type: ignore[index]
        assert doc[f"127.0.0.1:{a}"]["server_err"] + doc[f"127.0.0.1:{a}"]["server_eof"] >= 1
        assert doc["forward_error"] >= 1


def test_killed_backend_ejected_then_restarted() -> None:
    """Connection refused counts as a failure; the restarted server returns after its probe."""
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        a, b = free_port(), free_port()
        proc_a = stack.enter_context(_mc_proc(a))
        stack.enter_context(_mc_proc(b))
        servers = [f"127.0.0.1:{a}:1", f"127.0.0.1:{b}:1"]
        pool = {"auto_eject_hosts": "true", "server_failure_limit": 1, "server_retry_timeout": 300,
                "servers": servers}
        p = stack.enter_context(proxy({"r": pool}, workdir))["r"]
        ka = keys_on(p.router(), 0, 1, "re")[0]
        sock = stack.enter_context(p.connect())
        stop_process(proc_a, signal.SIGKILL)  # type: ignore[arg-type]
        reply = ask(sock, b"get %s\r\n" % ka)
        assert reply.startswith(b"SERVER_ERROR Connection re"), reply  # refused (or reset)
        assert ask(sock, b"set %s 0 0 1\r\nB\r\n" % ka) == b"STORED\r\n"  # ejected: now on the other server
        time.sleep(0.5)  # a probe was refused: still ejected
        assert ask(sock, b"get %s\r\n" % ka, b"END\r\n") == b"VALUE %s 0 1\r\nB\r\nEND\r\n" % ka
        stack.enter_context(_mc_proc(a))
        deadline = time.monotonic() + 5
        while ask(sock, b"get %s\r\n" % ka, b"END\r\n") != b"END\r\n":  # back on the (empty) restarted server
            assert time.monotonic() < deadline, "the restarted server did not come back"
            time.sleep(0.05)
