"""``hoard proxy --workers 2`` over real memcached backends.

The worker that serves a connection is identified by asking it ``stats``
(the proxy answers with its own pid).  Checked: connections are spread over
both workers (SO_REUSEPORT), the stats port's counters are the sum over the
workers and equal the requests sent, a killed worker is replaced by a new
process that serves, SIGUSR1 (``hoard proxy reload``) reaches every worker,
an invalid file is rejected by the parent, a unix-socket listener is shared,
SIGTERM stops the parent and every worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, hoard_argv, memcached, recv_until, running, temp_dir, wait_for_port
from tests.test_proxy_reload import wait_until

pytestmark = pytest.mark.timeout(90)


class Workers:
    def __init__(self, proc: subprocess.Popen[bytes], workdir: str, port: int, stats: int, unix: str) -> None:
        self.proc = proc
        self.dir = Path(workdir)
        self.port = port
        self.stats = stats
        self.unix = unix

    def children(self) -> set[int]:
        out = set()
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        out.add(int(pid))
        return out

    def stats_json(self) -> dict[str, object]:
        with socket.create_connection(("127.0.0.1", self.stats), timeout=5) as sock:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return json.loads(data)  # type: ignore[no-any-return]

    def log_text(self) -> str:
        path = self.dir / "proxy.log"
        return path.read_text() if path.exists() else ""


def worker_pid(sock: socket.socket) -> int:
    sock.sendall(b"stats\r\n")
    for line in recv_until(sock, b"END\r\n").split(b"\r\n"):
        if line.startswith(b"STAT pid "):
            return int(line.split()[2])
    raise AssertionError("no pid in the stats reply")


def pids_serving(port: int, n: int = 40) -> set[int]:
    pids = set()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            pids.add(worker_pid(sock))
    return pids


@contextlib.contextmanager
def workers_proxy(nworkers: int = 2) -> Iterator[Workers]:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        backends = [stack.enter_context(memcached()) for _ in range(2)]
        port, stats = free_port(), free_port()
        unix = os.path.join(workdir, "pool.sock")
        conf = Path(workdir, "proxy.yml")
        servers = "".join(f"   - 127.0.0.1:{p}:1\n" for p in backends)
        conf.write_text(f"alpha:\n  listen: 127.0.0.1:{port}\n  timeout: 5000\n  servers:\n{servers}"
                        f"sock:\n  listen: {unix} 0600\n  servers:\n{servers}")
        argv = hoard_argv("proxy", "-c", str(conf), "-s", str(stats), "-a", "127.0.0.1", "-i", "100",
                          "-p", str(Path(workdir, "proxy.pid")), "-o", str(Path(workdir, "proxy.log")),
                          "--workers", str(nworkers))
        proc = stack.enter_context(running(argv, port=stats))
        w = Workers(proc, workdir, port, stats, unix)
        wait_for_port(port, proc=proc)
        wait_until(lambda: len(w.children()) == nworkers and w.log_text().count("serving 2 pool(s)") >= nworkers,
                   "every worker to serve")
        yield w


def server_requests(doc: dict[str, object], pool: str = "alpha") -> int:
    metrics = doc[pool]
    assert isinstance(metrics, dict)
    return sum(v["requests"] for v in metrics.values() if isinstance(v, dict))


def test_traffic_spread_and_stats_summed() -> None:
    with workers_proxy() as w:
        conns = [socket.create_connection(("127.0.0.1", w.port), timeout=10) for _ in range(40)]
        try:
            pids = {worker_pid(c) for c in conns}
            assert pids == w.children(), (pids, w.children())  # both workers serve, nothing else does
            sent = 0
            for i, c in enumerate(conns):
                c.sendall(b"".join(b"set k%d-%d 0 0 2\r\nxy\r\nget k%d-%d\r\n" % (i, j, i, j) for j in range(10)))
                reply = recv_until(c, b"END\r\n" * 0 + b"\r\n", timeout=10)
                while reply.count(b"END\r\n") < 10:
                    reply += c.recv(65536)
                assert reply == b"STORED\r\nVALUE k%d-%d 0 2\r\nxy\r\nEND\r\n" % (i, 0) + b"".join(
                    b"STORED\r\nVALUE k%d-%d 0 2\r\nxy\r\nEND\r\n" % (i, j) for j in range(1, 10))
                sent += 20
            wait_until(lambda: server_requests(w.stats_json()) >= sent, "the summed stats to count every request")
            doc = w.stats_json()
            assert server_requests(doc) == sent
            alpha = doc["alpha"]
            assert isinstance(alpha, dict)
            assert alpha["client_connections"] == 40
            responses = sum(v["responses"] for v in alpha.values() if isinstance(v, dict))
            assert responses == sent
        finally:
            for c in conns:
                c.close()


def test_killed_worker_is_restarted() -> None:
    with workers_proxy() as w:
        before = w.children()
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in w.children() and len(w.children()) == 2, "a new worker")
        replacement = w.children() - before
        assert len(replacement) == 1
        wait_until(lambda: "worker 0 started" in w.log_text() and w.log_text().count("serving 2 pool(s)") >= 3,
                   "the new worker to serve")
        assert pids_serving(w.port) == w.children()
        assert w.proc.poll() is None


def test_reload_reaches_every_worker_and_sigterm_stops_all() -> None:
    with workers_proxy() as w:
        pid_file = w.dir / "proxy.pid"
        conf = w.dir / "proxy.yml"
        new_port = free_port()
        text = conf.read_text()
        servers = text[text.index("  servers:\n"):text.index("sock:")]
        conf.write_text(text + f"beta:\n  listen: 127.0.0.1:{new_port}\n{servers}")
        done = subprocess.run(hoard_argv("proxy", "reload", "-p", str(pid_file)), capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: w.log_text().count("configuration reloaded") == 2, "both workers to reload")
        assert pids_serving(new_port) == w.children()
        # the unix listener, inherited by both workers, serves
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(w.unix)
            assert worker_pid(s) in w.children()
        # an invalid file: the parent rejects it with one line and the workers are not told
        conf.write_text(conf.read_text() + "  colour: blue\n")
        os.kill(w.proc.pid, signal.SIGUSR1)
        wait_until(lambda: "reload rejected" in w.log_text(), "the rejection")
        assert w.log_text().count("reload rejected") == 1 and w.log_text().count("configuration reloaded") == 2
        assert pids_serving(new_port, 4) <= w.children()
        # a worker restarted now gets the configuration last accepted (with beta), not the file
        victim = max(w.children())
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in w.children() and len(w.children()) == 2, "a new worker")
        wait_until(lambda: w.log_text().count("serving 3 pool(s)") >= 1, "the new worker to serve 3 pools")
        assert pids_serving(new_port) == w.children()
        children = w.children()
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(20) == 0
        wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children), "the workers to exit")
        assert not os.path.exists(w.unix)


def test_bad_workers_value() -> None:
    for value in ("0", "two"):
        done = subprocess.run(hoard_argv("proxy", "--workers", value, "-c", "/nonexistent.yml"), capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 1
        assert done.stderr.splitlines()[0] == "hoard proxy: option --workers requires a number of at least 1"
