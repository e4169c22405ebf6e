"""``hoard check``: passes against real memcached (the reference), hoard server and redis-server,
fails with a clear message against a server that breaks one rule, and says so in one line
when the address cannot be reached.

The full runs take a few seconds each (one shared ~3 s pause for the expiry cases), so they
are started at once and the tests only look at their results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from scatterhoard.address import Address
from scatterhoard.server.app import Server
from scatterhoard.server.stats import Settings
from scatterhoard.store import MemoryStore, Status
from scatterhoard.tools import check
from tests.support import free_port, hoard_argv, hoard_server, memcached, require_binary, running

TIMEOUT = 60.0
LINE = re.compile(r"^(\w+) (\S+)\s+\[(pass|FAIL)\](.*)$", re.M)


class NoWrapStore(MemoryStore):
    """Breaks one rule: incr does not wrap around at 2^64 (it answers 2^64 instead of 0)."""

    def arith(self, key: bytes, delta: int, incr: bool = True, initial: int | None = None,
              exptime: float = 0.0, cas: int = 0) -> tuple[Status, int, int]:
        status, value, new_cas = super().arith(key, delta, incr, initial, exptime, cas)
        if incr and status == Status.STORED and value < delta:  # it wrapped
            value += 1 << 64
        return status, value, new_cas


@contextlib.contextmanager
def broken_server() -> Iterator[int]:
    """A hoard server, in a thread of this process, over a store that breaks the wraparound rule."""
    port = free_port()
    settings = Settings(listen=[f"127.0.0.1:{port}"], port=port)
    server = Server(settings, NoWrapStore(64 * 1024 * 1024, settings.item_size_max))
    loop = asyncio.new_event_loop()
    started = threading.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(server.serve(lambda _: started.set())),
                              daemon=True)
    thread.start()
    assert started.wait(10), "the broken server did not start"
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join(10)
        loop.close()


def _outcomes(out: str) -> dict[str, tuple[str, str]]:
    """'protocol case' -> (pass|FAIL, reason) from a check run's output."""
    return {f"{m.group(1)} {m.group(2)}": (m.group(3), m.group(4).strip()) for m in LINE.finditer(out)}


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    redis = require_binary("redis-server")
    with ExitStack() as stack:
        rport = free_port()
        stack.enter_context(running([redis, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no"], port=rport))
        hoard = f"127.0.0.1:{stack.enter_context(hoard_server())}"
        targets = {
            "memcached": [f"127.0.0.1:{stack.enter_context(memcached())}"],
            "hoard": [hoard],
            "hoard --meta": [hoard, "--meta"],
            "hoard --distcache": [hoard, "--distcache"],
            "redis": [f"127.0.0.1:{rport}", "--resp"],
            "broken": [f"127.0.0.1:{stack.enter_context(broken_server())}", "--ascii"],
        }
        procs = {name: subprocess.Popen(hoard_argv("check", *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
                 for name, argv in targets.items()}
        results: dict[str, subprocess.CompletedProcess[str]] = {}
        try:
            for name, proc in procs.items():
                out, err = proc.communicate(timeout=TIMEOUT)
                results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        yield results


def _assert_all_passed(run: subprocess.CompletedProcess[str], protocols: set[str]) -> dict[str, tuple[str, str]]:
    outcomes = _outcomes(run.stdout)
    failed = {name: why for name, (verdict, why) in outcomes.items() if verdict == "FAIL"}
    assert run.returncode == 0 and not failed, run.stdout + run.stderr
    assert {name.split(" ")[0] for name in outcomes} == protocols, run.stdout
    assert run.stdout.rstrip().endswith(f"{len(outcomes)} passed, 0 failed"), run.stdout
    return outcomes


def test_passes_against_real_memcached(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    outcomes = _assert_all_passed(runs["memcached"], {"ascii", "meta", "binary"})
    for name in ("ascii key_251", "ascii exptime_boundaries", "ascii incr_wraparound", "ascii decr_floor",
                 "ascii noreply", "ascii pipelined_mixed", "ascii max_item_size", "meta quiet_mode",
                 "meta vivify", "meta opaque", "meta ms_modes", "meta ma_wraparound", "binary quiet_batch",
                 "binary cas", "ascii expiry", "meta expiry", "binary expiry"):
        assert name in outcomes


def test_passes_against_hoard_server(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    run = runs["hoard"]
    outcomes = _outcomes(run.stdout)
    failed = {name: why for name, (verdict, why) in outcomes.items() if verdict == "FAIL"}
    assert not failed, run.stdout + run.stderr
    assert {name.split(" ")[0] for name in outcomes} == {"ascii", "meta", "binary", "distcache", "resp"}, \
        run.stdout
    assert run.returncode == 0
    assert "distcache duplicate_add" in outcomes and "distcache timeouts" in outcomes


@pytest.mark.parametrize("flag", ["--meta", "--distcache"])
def test_one_protocol_by_its_flag(runs: dict[str, subprocess.CompletedProcess[str]], flag: str) -> None:
    _assert_all_passed(runs[f"hoard {flag}"], {flag[2:]})


def test_resp_passes_against_redis(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    outcomes = _assert_all_passed(runs["redis"], {"resp"})
    assert {"resp expire_ttl", "resp incr_errors", "resp expiry", "resp set_get"} <= set(outcomes)


def test_a_server_breaking_one_rule_fails_with_a_clear_message(
        runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    run = runs["broken"]
    assert run.returncode == 1, run.stdout + run.stderr
    outcomes = _outcomes(run.stdout)
    failed = {name: why for name, (verdict, why) in outcomes.items() if verdict == "FAIL"}
    assert list(failed) == ["ascii incr_wraparound"], run.stdout
    assert re.fullmatch(r"reply to b'incr hc\w+:ascii\.incr_wraparound 1': expected b'0', "
                        r"got b'18446744073709551616'", failed["ascii incr_wraparound"]), run.stdout
    assert run.stdout.rstrip().endswith(f"{len(outcomes) - 1} passed, 1 failed")


def test_unreachable_address_is_one_line_and_exit_2() -> None:
    port = free_port()
    res = subprocess.run(hoard_argv("check", f"127.0.0.1:{port}"), capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.strip().splitlines() == [f"hoard check: cannot connect to 127.0.0.1:{port}: Connection refused"]
    bad = subprocess.run(hoard_argv("check", "127.0.0.1:notaport"), capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "accepted forms" in bad.stderr


def test_list_and_only() -> None:
    out = io.StringIO()
    args = check_args("127.0.0.1:1", "--list", "--binary")
    assert check.run(args, out) == 0
    names = [ln.split()[1] for ln in out.getvalue().splitlines()]
    assert "quiet_batch" in names and all(ln.startswith("binary ") for ln in out.getvalue().splitlines())
    assert [c.full_name for c in check.select_cases(["ascii", "meta"], ["*wrap*"])] == [
        "ascii incr_wraparound", "meta ma_wraparound"]


def check_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    check.add_parser(parser.add_subparsers())
    return parser.parse_args(["check", *argv])


def test_runner_shares_one_pause_between_waiting_cases() -> None:
    """Cases that yield are suspended and resumed after a single sleep; failures do not stop the run."""
    log: list[str] = []

    def waits(name: str) -> check.CaseFunc:
        def run(ctx: check.Context) -> Iterator[float]:
            log.append(f"{name} set up")
            yield 0.3
            log.append(f"{name} checked")
        return run

    def fails(ctx: check.Context) -> None:
        check.eq("the answer", 41, 42)

    cases = [check.Case("ascii", "a", waits("a"), ""), check.Case("ascii", "bad", fails, ""),
             check.Case("meta", "b", waits("b"), "")]
    out = io.StringIO()
    runner = check.Runner(check.Settings(Address("tcp", "127.0.0.1", 1)), out)
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        time.sleep(seconds)

    runner.sleep = sleep
    passed, failed = runner.run(cases)
    assert (passed, failed) == (2, 1)
    assert len(pauses) == 1 and 0 < pauses[0] <= 0.3  # one pause, for both waiting cases
    assert log == ["a set up", "b set up", "a checked", "b checked"]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ascii a") and lines[0].endswith("[pass]")
    assert lines[1].startswith("ascii bad") and lines[1].endswith("[FAIL] the answer: expected 42, got 41")
    assert lines[-1] == "2 passed, 1 failed"
