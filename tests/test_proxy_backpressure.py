"""Backpressure in ``hoard proxy``: a slow client or a stalled server cannot make it grow without bound.

Real memcached backends.  (1) A client pipelines 2500 gets of a 100 KB value
(250 MB of replies) and reads nothing: the proxy stops reading from it, so
its resident memory stays far below what buffering every reply would take,
while another client is served; when the client finally reads, every reply
arrives, in order.  (2) A backend is SIGSTOPped while a client pipelines
200 MB of 200 KB sets to it: the proxy stops reading that client once the
server connection's write buffer is full; another pool is served meanwhile;
after SIGCONT every set is answered.

Memory is read from /proc/PID/status (VmRSS) once the proxy is idle (its
counters stop moving), never compared with a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, hoard_argv, recv_until, require_binary, running, temp_dir, wait_for_port

pytestmark = pytest.mark.timeout(120)

MB = 1024 * 1024
#: What the proxy may grow by at most in these tests (the unbounded behaviour is 250 MB and 200 MB).
BOUND = 120 * MB


@contextlib.contextmanager
def backend() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    exe = require_binary("memcached")
    port = free_port()
    argv = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1", "-m", "64"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    with running(argv, port=port) as proc:
        yield port, proc


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def stats(port: int) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)  # type: ignore[no-any-return]


def counters(port: int) -> tuple[int, ...]:
    """Every pool's servers' requests and responses: the proxy is idle when these stop moving."""
    doc = stats(port)
    out: list[int] = []
    for pool in doc.values():
        if isinstance(pool, dict):
            for server in pool.values():
                if isinstance(server, dict):
                    out += [server["requests"], server["responses"]]
    return tuple(out)


def settle(stats_port: int, extra: object = None) -> None:
    """Wait until the proxy's counters (and ``extra()``) read the same 4 times in a row."""
    seen: list[object] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen.append((counters(stats_port), extra() if callable(extra) else None))
        if len(seen) >= 4 and all(s == seen[-1] for s in seen[-4:]):
            return
        time.sleep(0.25)
    raise AssertionError("the proxy never settled")


@contextlib.contextmanager
def proxy(pools: dict[str, tuple[int, int]]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """name -> (listen port, backend port); yields (process, stats port)."""
    with temp_dir() as workdir:
        conf = Path(workdir, "proxy.yml")
        conf.write_text("".join(f"{name}:\n  listen: 127.0.0.1:{listen}\n  servers:\n   - 127.0.0.1:{port}:1\n"
                                for name, (listen, port) in pools.items()))
        stats_port = free_port()
        argv = hoard_argv("proxy", "-c", str(conf), "-s", str(stats_port), "-a", "127.0.0.1", "-i", "50",
                          "-o", str(Path(workdir, "proxy.log")))
        with running(argv, port=stats_port) as proc:
            for listen, _ in pools.values():
                wait_for_port(listen, proc=proc)
            yield proc, stats_port


def exchange(port: int, request: bytes, terminator: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return recv_until(sock, terminator, timeout=10)


def test_client_that_does_not_read_is_paused() -> None:
    value = os.urandom(50 * 1024).hex().encode()  # 100 KB
    count = 2500
    with contextlib.ExitStack() as stack:
        port, _ = stack.enter_context(backend())
        listen = free_port()
        proc, stats_port = stack.enter_context(proxy({"alpha": (listen, port)}))
        store = b"set big 0 0 %d\r\n%s\r\n" % (len(value), value)
        assert exchange(listen, store + b"get big\r\n", b"END\r\n").startswith(b"STORED\r\nVALUE big")
        settle(stats_port)
        before = rss(proc.pid)

        slow = stack.enter_context(socket.socket())
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        slow.connect(("127.0.0.1", listen))
        slow.sendall(b"get big\r\n" * count)  # 22 KB of requests, 250 MB of replies, never read (yet)
        settle(stats_port)
        grown = rss(proc.pid) - before
        answered = counters(stats_port)[1] - 2
        assert grown < BOUND, f"the proxy grew by {grown // MB} MB for a client that does not read"
        assert answered < count, "every request was forwarded although the client reads nothing"
        # another client is served meanwhile
        assert exchange(listen, b"set small 0 0 2\r\nok\r\nget small\r\n", b"END\r\n") == \
            b"STORED\r\nVALUE small 0 2\r\nok\r\nEND\r\n"
        # the slow client reads at last: every reply, whole and in order
        expected = b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (len(value), value)
        slow.settimeout(30)
        got = 0
        tail = b""
        while got < count:
            chunk = slow.recv(1 << 20)
            assert chunk, f"closed after {got} replies"
            tail += chunk
            whole = len(tail) // len(expected)
            assert tail[:whole * len(expected)] == expected * whole
            got += whole
            tail = tail[whole * len(expected):]
        assert got == count and tail == b""


def test_stalled_server_pauses_the_clients_feeding_it() -> None:
    value = b"v" * (200 * 1024)
    count = 1000  # 200 MB of sets
    with contextlib.ExitStack() as stack:
        (slow_port, slow_proc), (fast_port, _) = stack.enter_context(backend()), stack.enter_context(backend())
        slow_listen, fast_listen = free_port(), free_port()
        proc, stats_port = stack.enter_context(proxy({"slow": (slow_listen, slow_port),
                                                      "fast": (fast_listen, fast_port)}))
        assert exchange(slow_listen, b"set warm 0 0 1\r\nw\r\n", b"\r\n") == b"STORED\r\n"
        settle(stats_port)
        before = rss(proc.pid)

        feeder = stack.enter_context(socket.create_connection(("127.0.0.1", slow_listen), timeout=60))
        feeder.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sent = [0]
        errors: list[BaseException] = []

        def feed() -> None:
            try:
                for i in range(count):
                    feeder.sendall(b"set k%d 0 0 %d\r\n%s\r\n" % (i, len(value), value))
                    sent[0] += 1
            except BaseException as exc:  # reported by the test
                errors.append(exc)

        os.kill(slow_proc.pid, signal.SIGSTOP)
        thread = threading.Thread(target=feed, daemon=True)
        try:
            thread.start()
            settle(stats_port, lambda: sent[0])
            grown = rss(proc.pid) - before
            assert grown < BOUND, f"the proxy grew by {grown // MB} MB in front of a stalled server"
            assert sent[0] < count, "the proxy read every request although the server reads nothing"
            # another pool is served meanwhile
            assert exchange(fast_listen, b"set f 0 0 1\r\nx\r\nget f\r\n", b"END\r\n") == \
                b"STORED\r\nVALUE f 0 1\r\nx\r\nEND\r\n"
        finally:
            os.kill(slow_proc.pid, signal.SIGCONT)
        thread.join(60)
        assert not thread.is_alive() and not errors, errors
        assert recv_until(feeder, b"STORED\r\n" * count, timeout=60) == b"STORED\r\n" * count
