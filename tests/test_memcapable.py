"""libmemcached's ``memccapable`` conformance suite against hoard server.

``memccapable`` (Debian's libmemcached-tools) runs 27 ASCII and 27 binary
protocol checks against a server.  It is run against hoard server and, as a
sanity reference for the tool and the assertions, against a real memcached.
Each run takes a few seconds (the tool sleeps in its flush/expiry checks), so
both runs are started at once and the tests only look at their results.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.support import assert_memccapable_passed, hoard_server, memcached, run_memccapable


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    with ExitStack() as stack:
        ports = {"hoard": stack.enter_context(hoard_server()), "memcached": stack.enter_context(memcached())}
        yield run_memccapable(ports, timeout=60.0)


@pytest.mark.parametrize("server", ["hoard", "memcached"])
def test_memccapable_passes(runs: dict[str, subprocess.CompletedProcess[str]], server: str) -> None:
    assert_memccapable_passed(runs[server])
