"""-m is a hard budget: 2 GB of values into -m 64 keeps RSS bounded and counts evictions.

The bound stated in the README: RSS <= 40 MB + 1.6 x the -m budget (the
interpreter is ~25 MB; the rest is allocator fragmentation under churn).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess

from tests.support import free_port, hoard_argv, recv_until, stop_process, wait_for_port

BUDGET_MB = 64
BOUND_MB = 40 + 1.6 * BUDGET_MB


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _stats(sock: socket.socket) -> dict[bytes, bytes]:
    sock.sendall(b"stats\r\n")
    raw = recv_until(sock, b"END\r\n", timeout=120)
    return {parts[1]: parts[2] for parts in (line.split(b" ") for line in raw.split(b"\r\n"))
            if len(parts) == 3 and parts[0] == b"STAT"}


def test_two_gigabytes_into_64_megabytes() -> None:
    port = free_port()
    proc = subprocess.Popen(hoard_argv("server", "-l", "127.0.0.1", "-p", str(port), "-m", str(BUDGET_MB)))
    try:
        wait_for_port(port, proc=proc)
        sock = socket.create_connection(("127.0.0.1", port))
        rnd = random.Random(7)
        peak = 0.0
        sent = 0
        i = 0
        # phase 1: 2 GB of large values (1 KB .. 200 KB)
        while sent < 2 * 1024**3:
            size = rnd.randint(1000, 200_000)
            value = os.urandom(16) * (size // 16)
            sock.sendall(b"set big%d 0 0 %d noreply\r\n%s\r\n" % (i, len(value), value))
            sent += len(value)
            i += 1
            if i % 1000 == 0:
                peak = max(peak, _rss_mb(proc.pid))
        st = _stats(sock)
        assert int(st[b"evictions"]) > 10_000
        assert int(st[b"bytes"]) <= BUDGET_MB * 1024 * 1024
        # phase 2: many small items (the per-item overhead is accounted too), half with a TTL
        batch = []
        for j in range(400_000):
            batch.append(b"set small%d 0 %d 100 noreply\r\n%s\r\n" % (j, (j % 2) * 1000, b"v" * 100))
            if len(batch) == 2000:
                sock.sendall(b"".join(batch))
                batch = []
                if j % 50_000 < 2000:
                    peak = max(peak, _rss_mb(proc.pid))
        st = _stats(sock)
        peak = max(peak, _rss_mb(proc.pid))
        assert int(st[b"bytes"]) <= BUDGET_MB * 1024 * 1024
        assert int(st[b"evictions"]) > 100_000
        assert 0 < int(st[b"curr_items"]) < 400_000
        assert peak < BOUND_MB, f"peak RSS {peak:.0f} MB over the stated bound {BOUND_MB:.0f} MB"
        # the newest items survived eviction
        sock.sendall(b"get small399999\r\n")
        assert recv_until(sock, b"END\r\n").startswith(b"VALUE small399999 0 100\r\n")
        sock.close()
    finally:
        stop_process(proc)


def test_expired_items_are_swept_without_access() -> None:
    port = free_port()
    proc = subprocess.Popen(hoard_argv("server", "-l", "127.0.0.1", "-p", str(port)))
    try:
        wait_for_port(port, proc=proc)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"".join(b"set e%d 0 1 10 noreply\r\n0123456789\r\n" % i for i in range(20_000)))
        sock.sendall(b"set keep 0 0 1\r\nk\r\n")
        assert recv_until(sock, b"STORED\r\n").endswith(b"STORED\r\n")
        assert int(_stats(sock)[b"curr_items"]) == 20_001
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = _stats(sock)
            if int(st[b"curr_items"]) == 1:
                break
            time.sleep(0.25)
        assert int(st[b"curr_items"]) == 1
        assert int(st[b"reclaimed"]) >= 20_000
        assert int(st[b"expired_unfetched"]) >= 20_000
        sock.close()
    finally:
        stop_process(proc)
