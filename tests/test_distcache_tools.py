"""The distcache tools against a real ``hoard server``: dc_test directly, through dc_client
over a unix socket and through dc_snoop; dc_server's flags; memcached interop.

``SOAK_SCALE`` scales the dc_test runs: the default (1) is the issue's -sessions 200
-ops 50000, about a minute for the six runs on two cores; ``SOAK_SCALE=0.2`` shortens them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymemcache.client.base import Client as MemcacheClient

from scatterhoard.distcache import SessionCache
from scatterhoard.protocol import binary as b
from scatterhoard.protocol import distcache as dc
from tests.support import free_port, hoard_argv, hoard_server, running, stop_process, temp_dir, wait_for_unix

SOAK_SCALE = float(os.environ.get("SOAK_SCALE", "1"))
SOAK_OPS = max(1000, int(50_000 * SOAK_SCALE))


def dc_test(addr: str, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    argv = hoard_argv("dctest", "-connect", addr, "-sessions", "200", "-ops", str(SOAK_OPS), *extra)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def assert_passed(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all tests complete" in res.stdout
    assert "throughput:" in res.stdout and "p99" in res.stdout


@contextlib.contextmanager
def dc_client(server: str, path: str, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    with running(hoard_argv("client", "-listen", f"UNIX:{path}", "-server", server, *extra),
                 unix_path=path) as proc:
        yield proc


@contextlib.contextmanager
def dc_snoop(server: str, path: str, out_path: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(hoard_argv("dcsnoop", "-listen", f"UNIX:{path}", "-server", server),
                                stdout=out, stderr=subprocess.PIPE)
        try:
            wait_for_unix(path)
            yield proc
        finally:
            stop_process(proc)
            if proc.stderr is not None:
                proc.stderr.close()


# -- the done-when runs ------------------------------------------------------------------


@pytest.mark.parametrize("persistent", [True, False], ids=["persistent", "per-op-connections"])
def test_dc_test_direct_via_client_and_snoop(persistent: bool) -> None:
    extra = ("-persistent",) if persistent else ()
    with hoard_server() as port, temp_dir() as d:
        server = f"IP:127.0.0.1:{port}"
        assert_passed(dc_test(server, *extra))
        client_sock, snoop_sock = f"{d}/dc_client.sock", f"{d}/snoop.sock"
        with dc_client(server, client_sock):
            assert_passed(dc_test(f"UNIX:{client_sock}", *extra))
            with dc_snoop(f"UNIX:{client_sock}", snoop_sock, f"{d}/snoop.out"):
                assert_passed(dc_test(f"UNIX:{snoop_sock}", *extra))
        with open(f"{d}/snoop.out") as f:
            lines = f.read().splitlines()
        requests = [ln for ln in lines if "client->server request" in ln]
        responses = [ln for ln in lines if "server->client response" in ln]
        assert len(requests) == len(responses) == SOAK_OPS
        assert any("frames=2 (2048+" in ln for ln in requests)  # multi-frame ADDs are shown frame by frame
        assert all(ln.rstrip().endswith(" ms") for ln in responses)  # timing on every response


def test_dc_test_reports_the_first_discrepancy() -> None:
    """A server holding 5 sessions cannot pass a 50-session run: the verdict names the failure."""
    port = free_port()
    with running(hoard_argv("dcserver", "-listen", f"IP:127.0.0.1:{port}", "-sessions", "5"), port=port):
        res = subprocess.run(hoard_argv("dctest", "-connect", f"127.0.0.1:{port}", "-sessions", "50",
                                        "-persistent", "-seed", "3"),
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stdout
    assert "FAILURE:" in res.stdout
    assert "tests succeeded before the first failure" in res.stdout


def test_dc_server_flags() -> None:
    """-sessions capacity, -progress, -daemon with -pidfile, -sockperms, -killable, cleanup."""
    with temp_dir() as d:
        path, pidfile = f"{d}/dc.sock", f"{d}/dc.pid"
        argv = hoard_argv("dcserver", "-listen", f"UNIX:{path}", "-sessions", "200", "-progress", "100",
                          "-daemon", "-pidfile", pidfile, "-sockperms", "600", "-killable")
        assert subprocess.run(argv, timeout=20).returncode == 0  # the parent returns at once
        wait_for_unix(path)
        pid = int(Path(pidfile).read_text())
        try:
            assert os.stat(path).st_mode & 0o777 == 0o600
            cache = SessionCache(f"UNIX:{path}", strict=True)
            for i in range(300):
                assert cache.add(b"session-%03d" % i, b"data", 100_000 + i * 10)
            live = [i for i in range(300) if cache.have(b"session-%03d" % i)]
            assert live == list(range(100, 300))  # the 100 nearest to expiry were evicted
            cache.close()
            os.kill(pid, signal.SIGUSR1)  # -killable: a clean exit
            deadline = time.monotonic() + 10
            while os.path.exists(pidfile) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not os.path.exists(pidfile) and not os.path.exists(path)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_dc_server_progress_and_not_killable_by_usr1() -> None:
    port = free_port()
    with running(hoard_argv("dcserver", "-listen", f"IP:127.0.0.1:{port}", "-progress", "10"),
                 port=port) as proc:
        cache = SessionCache(f"127.0.0.1:{port}", strict=True)
        for i in range(30):
            cache.add(b"p%d" % i, b"x", 10_000)
        cache.close()
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        assert proc.poll() is None  # without -killable SIGUSR1 is ignored
        stop_process(proc)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    assert "Info, total operations =      10, total sessions =    10" in err
    assert err.count("Info,") == 1  # at most once a second


def test_bad_addresses_get_one_line_naming_the_forms() -> None:
    res = subprocess.run(hoard_argv("dctest", "-connect", "IP:host:notaport"), capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 2
    assert "UNIX:/path" in res.stderr and "IP:host:port" in res.stderr


# -- interop with memcached clients --------------------------------------------------------


def test_distcache_add_then_memcached_get_and_back() -> None:
    with hoard_server() as port:
        cache = SessionCache(f"IP:127.0.0.1:{port}", strict=True)
        mc = MemcacheClient(("127.0.0.1", port))
        try:
            data = bytes(range(256)) * 20  # multi-frame, binary
            assert cache.add(b"ssl-session-1", data, 60_000)
            assert mc.get(b"ssl-session-1") == data
            mc.set(b"from-memcached", b"hello world", expire=60)
            assert cache.get(b"from-memcached") == b"hello world"
            assert cache.add(b"from-memcached", b"other", 1000) is False  # a live id: 101
            assert mc.delete(b"ssl-session-1", noreply=False)
            assert cache.get(b"ssl-session-1") is None
            # binary protocol get of the same key
            with socket.create_connection(("127.0.0.1", port)) as s:
                assert cache.add(b"bin-key", b"bin-data", 60_000)
                s.sendall(b.encode_request(b.OP_GET, key=b"bin-key", opaque=5))
                reply = s.recv(4096)
                assert reply[0] == b.RESPONSE_MAGIC and reply.endswith(b"bin-data")
            # millisecond timeouts are honoured for memcached readers too
            assert cache.add(b"short-lived", b"x", 200)
            assert mc.get(b"short-lived") == b"x"
            time.sleep(0.3)
            assert mc.get(b"short-lived") is None
        finally:
            cache.close()
            mc.close()


def test_dc_snoop_forwards_byte_identical_and_prints_both_directions() -> None:
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(1)
    uport = upstream.getsockname()[1]
    to_server = (dc.encode_add(41, b"sid", b"D" * 5000, 9000) + dc.encode_get(42, b"sid")
                 + b"\x00\x99 not distcache at all" * 50)
    to_client = (dc.encode_result(41, dc.OP_ADD, 0) + dc.encode_get_reply(42, b"D" * 5000)
                 + bytes(range(256)) * 4)
    with temp_dir() as d:
        path = f"{d}/snoop.sock"
        with dc_snoop(f"IP:127.0.0.1:{uport}", path, f"{d}/out"):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(path)
            for i in range(0, len(to_server), 1000):
                c.sendall(to_server[i:i + 1000])
            upstream.settimeout(5)
            got = b""
            while not got:  # skip the twin of wait_for_unix's probe connection
                s, _ = upstream.accept()
                s.settimeout(5)
                got = s.recv(65536)
            while len(got) < len(to_server):
                chunk = s.recv(65536)
                assert chunk
                got += chunk
            assert got == to_server
            s.sendall(to_client)
            back = b""
            c.settimeout(5)
            while len(back) < len(to_client):
                chunk = c.recv(65536)
                assert chunk
                back += chunk
            assert back == to_client
            c.close()
            s.close()
            time.sleep(0.2)
        out = Path(f"{d}/out").read_text()
    upstream.close()
    assert "client->server request uid=41 ADD timeout_ms=9000 id_len=3 data_len=5000 frames=3 (2048+2048+915)" \
        in out
    assert "client->server request uid=42 GET id_len=3 frames=1 bytes=17" in out
    assert "client->server not distcache any more" in out
    assert "server->client response uid=41 ADD result=OK(0) frames=1 bytes=15" in out
    assert "server->client response uid=42 GET result=OK(0) data_len=5000 frames=3" in out
