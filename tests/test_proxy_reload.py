"""``hoard proxy`` configuration reload (SIGUSR1 / ``hoard proxy reload``) over real memcached backends.

Each test starts its own memcached backends and proxy (with a pid file), keeps
client connections open across the reload and checks, by asking the backends
directly, where keys land before and after: a changed pool routes the next
requests of its existing clients to its new servers, a request in flight
(held by a SIGSTOPped backend) is answered by the old server after the
reload, a new pool listens, a removed pool's listener closes, an unchanged
pool's clients do not notice.  Invalid configurations (bad YAML, an address in
use) are rejected with one logged line while the old configuration serves on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pymemcache.client.base import Client

from scatterhoard.protocol import binary as b
from tests.support import (
    free_port,
    hoard_argv,
    recv_until,
    require_binary,
    running,
    temp_dir,
    wait_for_port,
    wait_for_unix,
)

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def backend() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A real memcached, with its process (for SIGSTOP)."""
    exe = require_binary("memcached")
    port = free_port()
    argv = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    with running(argv, port=port) as proc:
        yield port, proc


def conf_text(pools: dict[str, tuple[str, list[int]]]) -> str:
    """name -> (listen, backend ports)."""
    out = []
    for name, (listen, ports) in pools.items():
        out += [f"{name}:", f"  listen: {listen}", "  timeout: 5000", "  servers:"]
        out += [f"   - 127.0.0.1:{p}:1" for p in ports]
    return "\n".join(out) + "\n"


class Running:
    def __init__(self, workdir: str, proc: subprocess.Popen[bytes]) -> None:
        self.dir = Path(workdir)
        self.proc = proc
        self.conf = self.dir / "proxy.yml"
        self.pid_file = self.dir / "proxy.pid"
        self.log = self.dir / "proxy.log"

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def reload(self, text: str) -> subprocess.CompletedProcess[str]:
        self.conf.write_text(text)
        return subprocess.run(hoard_argv("proxy", "reload", "-p", str(self.pid_file), "-c", str(self.conf)),
                              capture_output=True, text=True, timeout=30)

    def wait_log(self, needle: str, count: int = 1) -> None:
        wait_until(lambda: self.log_text().count(needle) >= count, f"{needle!r} x{count} in the log")


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def proxy(workdir: str, text: str, first_port: int, extra: tuple[str, ...] = ()) -> Iterator[Running]:
    conf = Path(workdir, "proxy.yml")
    conf.write_text(text)
    stats = free_port()
    argv = hoard_argv("proxy", "-c", str(conf), "-s", str(stats), "-a", "127.0.0.1", "-i", "100",
                      "-p", str(Path(workdir, "proxy.pid")), "-o", str(Path(workdir, "proxy.log")), *extra)
    with running(argv, port=first_port) as proc:
        r = Running(workdir, proc)
        wait_until(r.pid_file.exists, "the pid file")
        yield r


def holds(port: int, key: str) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"get %s\r\n" % key.encode())
        return recv_until(sock, b"END\r\n").startswith(b"VALUE ")


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def exchange(sock: socket.socket, request: bytes, terminator: bytes = b"\r\n") -> bytes:
    sock.sendall(request)
    return recv_until(sock, terminator, timeout=10)


def test_reload_adds_changes_and_removes_pools() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        (m1, _), (m2, _) = stack.enter_context(backend()), stack.enter_context(backend())
        pa, pb, pc, pd = (free_port() for _ in range(4))
        v1 = conf_text({"alpha": (f"127.0.0.1:{pa}", [m1]), "beta": (f"127.0.0.1:{pb}", [m1]),
                        "gamma": (f"127.0.0.1:{pc}", [m2])})
        r = stack.enter_context(proxy(workdir, v1, pa))
        a = Client(("127.0.0.1", pa), timeout=10, connect_timeout=5, default_noreply=False)
        c = Client(("127.0.0.1", pc), timeout=10, connect_timeout=5, default_noreply=False)
        b = stack.enter_context(socket.create_connection(("127.0.0.1", pb), timeout=10))
        assert a.set("before", b"1") and c.set("gamma1", b"g")
        assert exchange(b, b"set bkey 0 0 1\r\nb\r\n") == b"STORED\r\n"
        assert holds(m1, "before") and not holds(m2, "before")

        # alpha moves to m2, beta goes, gamma stays, delta is new (on m1)
        v2 = conf_text({"alpha": (f"127.0.0.1:{pa}", [m2]), "gamma": (f"127.0.0.1:{pc}", [m2]),
                        "delta": (f"127.0.0.1:{pd}", [m1])})
        done = r.reload(v2)
        assert done.returncode == 0, done.stderr
        r.wait_log("configuration reloaded")
        assert "changed alpha" in r.log_text() and "removed beta" in r.log_text()
        wait_for_port(pd, proc=r.proc)
        # the same alpha connection: its next request is routed by the new pool
        assert a.set("after", b"2")
        assert holds(m2, "after") and not holds(m1, "after")
        assert a.get("after") == b"2"
        # gamma's client never noticed; delta serves
        assert c.get("gamma1") == b"g" and c.set("gamma2", b"h") and holds(m2, "gamma2")
        d = Client(("127.0.0.1", pd), timeout=10, connect_timeout=5, default_noreply=False)
        assert d.set("delta1", b"d") and holds(m1, "delta1")
        # beta's listener is closed and its client disconnected
        wait_until(lambda: refused(pb), "beta's listener to close")
        b.settimeout(10)
        assert b.recv(100) == b""
        a.close()
        c.close()
        d.close()


def test_request_in_flight_finishes_on_the_old_server() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        (m1, p1), (m2, _) = stack.enter_context(backend()), stack.enter_context(backend())
        pa = free_port()
        r = stack.enter_context(proxy(workdir, conf_text({"alpha": (f"127.0.0.1:{pa}", [m1])}), pa))
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", pa), timeout=10))
        assert exchange(sock, b"set k 0 0 3\r\nold\r\n") == b"STORED\r\n"
        os.kill(p1.pid, signal.SIGSTOP)
        try:
            sock.sendall(b"get k\r\n")  # in flight on m1 while the pool moves to m2
            assert r.reload(conf_text({"alpha": (f"127.0.0.1:{pa}", [m2])})).returncode == 0
            r.wait_log("configuration reloaded")
        finally:
            os.kill(p1.pid, signal.SIGCONT)
        assert recv_until(sock, b"END\r\n", timeout=10) == b"VALUE k 0 3\r\nold\r\nEND\r\n"
        # the next request on the same connection goes to m2, which does not have k
        assert exchange(sock, b"get k\r\n", b"END\r\n") == b"END\r\n"
        assert exchange(sock, b"set k 0 0 3\r\nnew\r\n") == b"STORED\r\n"
        with socket.create_connection(("127.0.0.1", m1), timeout=5) as direct:
            assert exchange(direct, b"get k\r\n", b"END\r\n") == b"VALUE k 0 3\r\nold\r\nEND\r\n"


def test_binary_request_in_flight_finishes_on_the_old_server() -> None:
    # binary requests go over the server's binary connections (a variant of its text ones):
    # draining the old pool must wait for those too
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        (m1, p1), (m2, _) = stack.enter_context(backend()), stack.enter_context(backend())
        pa = free_port()
        r = stack.enter_context(proxy(workdir, conf_text({"alpha": (f"127.0.0.1:{pa}", [m1])}), pa))
        with socket.create_connection(("127.0.0.1", m1), timeout=5) as direct:
            assert exchange(direct, b"set k 0 0 3\r\nold\r\n") == b"STORED\r\n"
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", pa), timeout=10))
        get = b.encode_request(b.OP_GET, b"k")
        sock.sendall(get)
        first = recv_until(sock, b"old", timeout=10)  # the binary connection to m1 is open
        assert first[6:8] == b"\x00\x00" and first.endswith(b"old")
        os.kill(p1.pid, signal.SIGSTOP)
        try:
            sock.sendall(get)  # in flight on m1 while the pool moves to m2
            time.sleep(0.2)
            assert r.reload(conf_text({"alpha": (f"127.0.0.1:{pa}", [m2])})).returncode == 0
            r.wait_log("configuration reloaded")
            time.sleep(0.5)  # the old pool's drain runs meanwhile
        finally:
            os.kill(p1.pid, signal.SIGCONT)
        reply = recv_until(sock, b"old", timeout=10)
        assert reply[6:8] == b"\x00\x00" and reply.endswith(b"old")


def test_invalid_configuration_is_rejected_and_the_old_one_serves() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        m1, _ = stack.enter_context(backend())
        pa, busy_port = free_port(), free_port()
        good = conf_text({"alpha": (f"127.0.0.1:{pa}", [m1])})
        r = stack.enter_context(proxy(workdir, good, pa))
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", pa), timeout=10))
        assert exchange(sock, b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"

        # 1. the command validates first: one line, exit 1, no signal sent
        bad = good.replace("timeout: 5000", "timeout: 5000\n  colour: blue")
        done = r.reload(bad)
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and "colour" in done.stderr and "not reloading" in done.stderr
        # 2. SIGUSR1 with that file: the proxy logs one line and keeps the old configuration
        os.kill(r.proc.pid, signal.SIGUSR1)
        r.wait_log("reload rejected")
        line = next(x for x in r.log_text().splitlines() if "reload rejected" in x)
        assert "colour" in line and "proxy.yml" in line
        # 3. a listen address that cannot be bound: rejected, nothing changes
        blocker = stack.enter_context(socket.socket())
        blocker.bind(("127.0.0.1", busy_port))
        blocker.listen(1)
        text = good + conf_text({"omega": (f"127.0.0.1:{busy_port}", [m1])})
        assert r.reload(text).returncode == 0  # valid file: the proxy finds out
        r.wait_log("reload rejected", 2)
        assert "cannot listen" in r.log_text().splitlines()[-1] or "cannot listen" in r.log_text()
        assert "configuration reloaded" not in r.log_text()
        # the old configuration still serves, on the old connection and on new ones
        assert exchange(sock, b"get k\r\n", b"END\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
        c = Client(("127.0.0.1", pa), timeout=10, connect_timeout=5, default_noreply=False)
        assert c.get("k") == b"v"
        c.close()
        assert r.proc.poll() is None


def test_reload_command_errors() -> None:
    with temp_dir() as workdir:
        missing = subprocess.run(hoard_argv("proxy", "reload"), capture_output=True, text=True, timeout=30)
        assert missing.returncode == 1 and "-p" in missing.stderr and missing.stderr.count("\n") == 1
        pid_file = Path(workdir, "gone.pid")
        pid_file.write_text("999999999")
        gone = subprocess.run(hoard_argv("proxy", "reload", "-p", str(pid_file)), capture_output=True,
                              text=True, timeout=30)
        assert gone.returncode == 1 and "no process" in gone.stderr
        other = subprocess.run(hoard_argv("proxy", "restart"), capture_output=True, text=True, timeout=30)
        assert other.returncode == 1 and "unknown command 'restart'" in other.stderr


def test_reload_unix_socket_pool() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        m1, _ = stack.enter_context(backend())
        pa = free_port()
        path = os.path.join(workdir, "pool.sock")
        r = stack.enter_context(proxy(workdir, conf_text({"alpha": (f"127.0.0.1:{pa}", [m1])}), pa))
        v2 = conf_text({"alpha": (f"127.0.0.1:{pa}", [m1]), "sock": (f"{path} 0600", [m1])})
        assert r.reload(v2).returncode == 0
        r.wait_log("configuration reloaded")
        wait_for_unix(path)
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            assert exchange(s, b"set u 0 0 1\r\nx\r\n") == b"STORED\r\n"
        assert holds(m1, "u")
        assert r.reload(conf_text({"alpha": (f"127.0.0.1:{pa}", [m1])})).returncode == 0
        r.wait_log("configuration reloaded", 2)
        wait_until(lambda: not os.path.exists(path), "the unix socket to be removed")


def test_renamed_pool_keeps_its_address_and_clients() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        (m1, _), (m2, _) = stack.enter_context(backend()), stack.enter_context(backend())
        pa = free_port()
        r = stack.enter_context(proxy(workdir, conf_text({"alpha": (f"127.0.0.1:{pa}", [m1])}), pa))
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", pa), timeout=10))
        assert exchange(sock, b"set k1 0 0 1\r\n1\r\n") == b"STORED\r\n"
        assert r.reload(conf_text({"omega": (f"127.0.0.1:{pa}", [m2])})).returncode == 0
        r.wait_log("configuration reloaded")
        assert "added omega" in r.log_text() and "removed alpha" in r.log_text()
        # the same connection, now a client of omega (on m2); new connections too
        assert exchange(sock, b"set k2 0 0 1\r\n2\r\n") == b"STORED\r\n"
        assert holds(m2, "k2") and not holds(m1, "k2")
        with socket.create_connection(("127.0.0.1", pa), timeout=10) as other:
            assert exchange(other, b"get k2\r\n", b"END\r\n") == b"VALUE k2 0 1\r\n2\r\nEND\r\n"


def redis_conf(name: str, listen: str, ports: list[int], redis: bool = True) -> str:
    lines = [f"{name}:", f"  listen: {listen}", f"  redis: {'true' if redis else 'false'}", "  timeout: 5000",
             "  servers:"]
    return "\n".join(lines + [f"   - 127.0.0.1:{p}:1" for p in ports]) + "\n"


def test_reload_redis_pool_keeps_resp3_clients_and_drops_a_protocol_switch() -> None:
    import redis

    from tests.support import redis_server

    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        r1, r2 = stack.enter_context(redis_server()), stack.enter_context(redis_server())
        (m1, _) = stack.enter_context(backend())
        listen = free_port()
        r = stack.enter_context(proxy(workdir, redis_conf("cache", f"127.0.0.1:{listen}", [r1]), listen))
        client = redis.Redis(port=listen, protocol=3, socket_timeout=10)
        assert client.set("before", "1") and client.hgetall("nothing") == {}
        assert redis.Redis(port=r1).get("before") == b"1"

        # the pool moves to r2: the same RESP3 connection goes on, routed to r2, still RESP3
        assert r.reload(redis_conf("cache", f"127.0.0.1:{listen}", [r2])).returncode == 0
        r.wait_log("configuration reloaded")
        assert client.set("after", "2")
        assert redis.Redis(port=r2).get("after") == b"2" and redis.Redis(port=r1).get("after") is None
        client.hset("h", "f", "v")
        assert client.hgetall("h") == {b"f": b"v"}  # a RESP3 map, decoded as such

        # the pool becomes a memcached pool on the same address: its redis clients are disconnected
        raw = stack.enter_context(socket.create_connection(("127.0.0.1", listen), timeout=10))
        assert exchange(raw, b"*1\r\n$4\r\nPING\r\n") == b"+PONG\r\n"
        assert r.reload(redis_conf("cache", f"127.0.0.1:{listen}", [m1], redis=False)).returncode == 0
        r.wait_log("configuration reloaded", count=2)
        assert raw.recv(100) == b""
        mc = Client(("127.0.0.1", listen), timeout=10, connect_timeout=5, default_noreply=False)
        assert mc.set("mkey", b"m") and holds(m1, "mkey")
        mc.close()
        client.close()
