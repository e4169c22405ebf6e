"""The sqlite and tiered engines through ``hoard server``: memccapable, restarts, expiry, the size
cap, and what survives ``kill -9`` with and without ``--durable``.

The durability test writes ``HOARD_DURABLE_KEYS`` keys (default 3000 so that CI stays within a
few seconds with an fsync per write; the issue's figure is 100000: ``HOARD_DURABLE_KEYS=100000``)
and kills the server with SIGKILL when a random number of them has been acknowledged.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from pymemcache.client.base import Client

from tests.support import (
    assert_memccapable_passed,
    chat,
    free_port,
    hoard_argv,
    hoard_server,
    recv_until,
    require_binary,
    run_memccapable,
    running,
    temp_dir,
)

DURABLE_KEYS = int(os.environ.get("HOARD_DURABLE_KEYS", "3000"))
#: The README's bound without --durable: a write acknowledged this long before a kill -9 is on disk
#: (commit_ms=100 here; the engine commits at most 1.25 x commit_ms after a write, plus the commit).
NON_DURABLE_BOUND = 1.0


def sqlite_args(path: str, *extra: str) -> list[str]:
    return ["--engine", "sqlite", "--engine-opt", f"path={path}", *extra]


# -- memccapable 54/54 and hoard check ---------------------------------------------------------------
@pytest.fixture(scope="module")
def capable_runs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    require_binary("memccapable")
    with temp_dir() as d, ExitStack() as stack:
        yield run_memccapable({
            "sqlite": stack.enter_context(hoard_server(extra=sqlite_args(f"{d}/a.db"))),
            "tiered": stack.enter_context(hoard_server(extra=["--engine", "tiered", "--engine-opt",
                                                              f"path={d}/b.db", "--engine-opt", "front_mb=4"])),
        })


@pytest.mark.parametrize("engine", ["sqlite", "tiered"])
def test_memccapable_passes(capable_runs: dict[str, subprocess.CompletedProcess[str]], engine: str) -> None:
    assert_memccapable_passed(capable_runs[engine])


@pytest.mark.parametrize("engine", ["sqlite", "tiered"])
def test_hoard_check_passes_on_every_protocol(engine: str) -> None:
    with temp_dir() as d:
        args = ["--engine", engine, "--engine-opt", f"path={d}/h.db"]
        with hoard_server(extra=args) as port:
            for proto in ("ascii", "meta", "binary", "resp", "distcache"):
                run = subprocess.run(hoard_argv("check", f"127.0.0.1:{port}", f"--{proto}"), capture_output=True,
                                     text=True, timeout=120)
                assert run.returncode == 0 and " 0 failed" in run.stdout, run.stdout + run.stderr


# -- persistence --------------------------------------------------------------------------------------
def test_items_and_cas_survive_a_restart() -> None:
    with temp_dir() as d:
        db = f"{d}/p.db"
        port = free_port()
        with hoard_server(port, sqlite_args(db)):
            reply = chat(port, b"set a 7 0 3\r\none\r\nset gone 0 1 1\r\nx\r\nset later 0 3600 5\r\nhello\r\n"
                               b"gets a\r\n", b"END\r\n")
            cas_a = int(reply.split(b"VALUE a 7 3 ")[1].split(b"\r\n")[0])
            reply = chat(port, b"set b 0 0 1\r\n1\r\ngets b\r\n", b"END\r\n")
            cas_b = int(reply.split(b"VALUE b 0 1 ")[1].split(b"\r\n")[0])
        time.sleep(1.1)  # "gone" expires meanwhile
        with hoard_server(port, sqlite_args(db)):
            assert chat(port, b"gets a\r\n", b"END\r\n") == b"VALUE a 7 3 %d\r\none\r\nEND\r\n" % cas_a
            assert chat(port, b"get gone later\r\n", b"END\r\n") == b"VALUE later 0 5\r\nhello\r\nEND\r\n"
            reply = chat(port, b"set c 0 0 1\r\n2\r\ngets c\r\n", b"END\r\n")
            assert int(reply.split(b"VALUE c 0 1 ")[1].split(b"\r\n")[0]) > cas_b  # the counter survived
            assert chat(port, b"cas a 0 0 3 %d\r\ntwo\r\n" % cas_a) == b"STORED\r\n"
            stats = chat(port, b"stats\r\n", b"END\r\n")
            assert b"STAT curr_items 4\r\n" in stats  # a b c later (gone is reclaimed)


def test_counters_stay_exact_across_worker_threads_and_stats_reset() -> None:
    """A blocking engine runs sessions in worker threads on private copies of the counters, merged
    back after each job; ``stats reset`` inside a job resets the server's counters, keeps
    curr_connections, and the job's later increments still count."""
    def stat(text: bytes, name: str) -> int:
        return int(re.search(rb"STAT %s (\d+)\r\n" % name.encode(), text).group(1))  # type: ignore[union-attr]

    with temp_dir() as d:
        port = free_port()
        with hoard_server(port, sqlite_args(f"{d}/c.db")), socket.create_connection(("127.0.0.1", port)) as other:
            other.sendall(b"set k 0 0 1\r\nv\r\n")
            assert recv_until(other, b"\r\n") == b"STORED\r\n"
            assert chat(port, b"set a 0 0 1\r\n1\r\nget a\r\nget nope\r\n", b"END\r\nEND\r\n").startswith(b"STORED")
            before = chat(port, b"stats\r\n", b"END\r\n")
            assert stat(before, "cmd_set") == 2 and stat(before, "get_hits") == 1 and stat(before, "get_misses") == 1
            # one read, so one job: the reset and the commands after it run on the same private copy
            after = chat(port, b"stats reset\r\nset b 0 0 1\r\n2\r\nget b\r\n", b"VALUE b 0 1\r\n2\r\nEND\r\n")
            assert after == b"RESET\r\nSTORED\r\nVALUE b 0 1\r\n2\r\nEND\r\n"
            final = chat(port, b"stats\r\n", b"END\r\n")
            assert stat(final, "cmd_set") == 1 and stat(final, "get_hits") == 1 and stat(final, "get_misses") == 0
            assert stat(final, "curr_connections") == 2  # this one and ``other``: never reset


def test_size_cap_evicts_oldest() -> None:
    with temp_dir() as d:
        port = free_port()
        with hoard_server(port, sqlite_args(f"{d}/c.db", "--engine-opt", "max_mb=1")):
            value = b"v" * 10_000
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"".join(b"set k%03d 0 0 10000 noreply\r\n%s\r\n" % (i, value) for i in range(300)))
                s.sendall(b"stats\r\n")
                stats = recv_until(s, b"END\r\n", timeout=30).decode()
            got = dict(re.findall(r"STAT (\w+) (\S+)", stats))
            assert int(got["bytes"]) <= 1024 * 1024 and int(got["limit_maxbytes"]) == 1024 * 1024
            assert int(got["evictions"]) > 0 and int(got["curr_items"]) + int(got["evictions"]) == 300
            assert chat(port, b"get k299 k000\r\n", b"END\r\n").startswith(b"VALUE k299 0 10000\r\n")
            assert chat(port, b"get k000\r\n") == b"END\r\n"


# -- kill -9 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("durable", [True, False], ids=["durable", "group-commit"])
def test_acknowledged_writes_survive_kill_9(durable: bool) -> None:
    with temp_dir() as d:
        db = f"{d}/k.db"
        port = free_port()
        extra = sqlite_args(db, "--durable") if durable else sqlite_args(db, "--engine-opt", "commit_ms=100")
        acked: dict[int, float] = {}
        target = random.randint(DURABLE_KEYS // 10, DURABLE_KEYS * 9 // 10)
        with running(hoard_argv("server", "-l", "127.0.0.1", "-p", str(port), *extra), port=port) as proc:
            client = Client(("127.0.0.1", port), connect_timeout=5, timeout=5)
            killed_at = 0.0
            try:
                for i in range(DURABLE_KEYS):
                    if i == target:  # a random moment: the server dies under load, between two writes
                        threading.Thread(target=os.kill, args=(proc.pid, signal.SIGKILL)).start()
                        killed_at = time.monotonic()
                    assert client.set(f"key{i}", f"value-{i}".encode(), noreply=False)
                    acked[i] = time.monotonic()
            except Exception:  # the server is gone
                pass
            client.close()
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL
        assert killed_at and len(acked) >= target
        with hoard_server(port, sqlite_args(db)):
            client = Client(("127.0.0.1", port), connect_timeout=5, timeout=30)
            found: dict[str, bytes] = {}
            keys = [f"key{i}" for i in acked]
            for start in range(0, len(keys), 500):
                found.update(client.get_many(keys[start:start + 500]))
            client.close()
        missing = [i for i in acked if found.get(f"key{i}") != f"value-{i}".encode()]
        if durable:
            assert not missing, f"{len(missing)} acknowledged writes lost, first {missing[:5]}"
        else:
            old = [i for i in missing if acked[i] < killed_at - NON_DURABLE_BOUND]
            assert not old, f"writes acknowledged over {NON_DURABLE_BOUND}s before the kill were lost: {old[:5]}"
        wrong = [k for k, v in found.items() if v != f"value-{k[3:]}".encode()]
        assert not wrong
