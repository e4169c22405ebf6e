"""libmemcached's ``memccapable`` conformance suite against hoard server.

``memccapable`` (Debian's libmemcached-tools) runs 27 ASCII and 27 binary
protocol checks against a server.  It is run against hoard server and, as a
sanity reference for the tool and the assertions, against a real memcached.
Each run takes a few seconds (the tool sleeps in its flush/expiry checks), so
both runs are started at once and the tests only look at their results.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.support import hoard_server, memcached, require_binary

ASCII_TESTS = 27
BINARY_TESTS = 27
TIMEOUT = 60.0


def _run_both() -> dict[str, subprocess.CompletedProcess[str]]:
    exe = require_binary("memccapable")
    with ExitStack() as stack:
        ports = {"hoard": stack.enter_context(hoard_server()), "memcached": stack.enter_context(memcached())}
        procs = {
            name: subprocess.Popen([exe, "-h", "127.0.0.1", "-p", str(port), "-t", "10"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name, port in ports.items()
        }
        results: dict[str, subprocess.CompletedProcess[str]] = {}
        try:
            for name, proc in procs.items():
                out, _ = proc.communicate(timeout=TIMEOUT)
                results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return results


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    yield _run_both()


@pytest.mark.parametrize("server", ["hoard", "memcached"])
def test_memccapable_passes(runs: dict[str, subprocess.CompletedProcess[str]], server: str) -> None:
    run = runs[server]
    out = run.stdout
    assert run.returncode == 0, out
    assert "All tests passed" in out, out
    passed = re.findall(r"^(ascii|binary) .*\[pass\]\s*$", out, flags=re.M)
    assert passed.count("ascii") == ASCII_TESTS, out
    assert passed.count("binary") == BINARY_TESTS, out
    assert len(passed) == ASCII_TESTS + BINARY_TESTS, out
    assert not re.search(r"\[(fail|skip)", out), out
