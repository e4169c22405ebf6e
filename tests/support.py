"""Helpers for tests that start real servers (ours and the reference ones).

Every server is started on a free port by the test that needs it and stopped
when the test ends, always (context managers / fixtures).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from scatterhoard import ports

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses now, outside the kernel's ephemeral range."""
    return ports.free_port()


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def wait_for_unix(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on unix:{path} after {timeout}s")


#: ``make test`` (and CI) set this: a missing tool or test extra fails its tests instead of
#: skipping them, so a run that lacked something cannot pass quietly.
REQUIRE_ALL = bool(os.environ.get("HOARD_REQUIRE_ALL") or os.environ.get("CI"))


def require_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        if REQUIRE_ALL:
            pytest.fail(f"{name} is not installed (make test installs it: scripts/install-system-deps.sh)")
        pytest.skip(f"{name} not installed")
    return path


def require_module(name: str) -> Any:
    """Import ``name`` (a package of the ``test`` extra); skip without it, fail under ``make test``."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if REQUIRE_ALL:
            pytest.fail(f"{name} is not importable (make test installs the test extra: pip install -e '.[test]')")
        pytest.skip(f"{name} not installed (pip install -e '.[test]')")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)  # a test may have SIGSTOPped it
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def running(argv: Sequence[str], port: int | None = None, unix_path: str | None = None,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process, wait until it listens, yield it, stop it."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    try:
        if port is not None:
            wait_for_port(port, proc=proc)
        if unix_path is not None:
            wait_for_unix(unix_path)
        yield proc
    finally:
        stop_process(proc)
        if proc.stderr is not None:
            proc.stderr.close()


@contextlib.contextmanager
def memcached(port: int | None = None, extra: Sequence[str] = ()) -> Iterator[int]:
    """A real Debian memcached on a free port (single thread)."""
    exe = require_binary("memcached")
    port = port or free_port()
    argv = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    with running([*argv, *extra], port=port):
        yield port


@contextlib.contextmanager
def redis_server(port: int | None = None, extra: Sequence[str] = ()) -> Iterator[int]:
    """A real Debian redis-server on a free port (no persistence)."""
    exe = require_binary("redis-server")
    port = port or free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with running([*argv, *extra], port=port):
        yield port


def hoard_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "scatterhoard", *args]


@contextlib.contextmanager
def hoard_server(port: int | None = None, extra: Sequence[str] = ()) -> Iterator[int]:
    """Our ``hoard server`` on a free port."""
    port = port or free_port()
    with running(hoard_argv("server", "-l", "127.0.0.1", "-p", str(port), *extra), port=port):
        yield port


@contextlib.contextmanager
def temp_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="hoard-test-") as d:
        yield d


def recv_until(sock: socket.socket, terminator: bytes, timeout: float = 5.0) -> bytes:
    """Read from a blocking socket until the data ends with ``terminator``."""
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(terminator):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def chat(port: int, request: bytes, terminator: bytes = b"\r\n", timeout: float = 10.0) -> bytes:
    """Send ``request`` on a new connection to 127.0.0.1:``port``; the reply up to ``terminator``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        return recv_until(s, terminator, timeout=timeout)


def run_memccapable(ports: dict[str, int], timeout: float = 120.0) -> dict[str, subprocess.CompletedProcess[str]]:
    """libmemcached's ``memccapable`` against every named port at once; its output per name."""
    exe = require_binary("memccapable")
    procs = {name: subprocess.Popen([exe, "-h", "127.0.0.1", "-p", str(port), "-t", "10"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, port in ports.items()}
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    try:
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=timeout)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def assert_memccapable_passed(run: subprocess.CompletedProcess[str]) -> None:
    """All 54 checks (27 ascii, 27 binary) passed, none failed or skipped."""
    import re

    out = run.stdout
    assert run.returncode == 0 and "All tests passed" in out, out
    passed = re.findall(r"^(ascii|binary) .*\[pass\]\s*$", out, flags=re.M)
    assert passed.count("ascii") == 27 and passed.count("binary") == 27, out
    assert not re.search(r"\[(fail|skip)", out), out
