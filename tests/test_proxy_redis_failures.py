"""``hoard proxy`` redis pools when servers fail: each test gets its own backends and proxy.

A server refusing the proxy's AUTH; a killed backend (plain commands, and every split command
with one fragment on the dead server: the whole command is an error, the live fragments did
run, the connection answers what follows in order); a SIGSTOPped backend (a GET, and a split
MGET whose fragment times out while later commands wait their turn); ejection, the keyless
commands moving to a live server, and return after a PING probe.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import free_port, redis_server, require_binary, running, stop_process, temp_dir
from tests.test_proxy_integration import Proxy, proxy, sigstop
from tests.test_proxy_redis import client, keys_on

pytestmark = pytest.mark.timeout(90)


@contextlib.contextmanager
def _redis_proc(port: int, extra: tuple[str, ...] = ()) -> Iterator[Any]:
    exe = require_binary("redis-server")
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra]
    with running(argv, port=port) as proc:
        yield proc


def test_backend_refusing_the_proxys_auth() -> None:
    """A wrong redis_auth: the server refuses the proxy's AUTH; clients get errors, the proxy stays up."""
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        port = stack.enter_context(redis_server(extra=("--requirepass", "sekrit")))
        pool = {"redis": "true", "redis_auth": "wrong", "servers": [f"127.0.0.1:{port}:1"]}
        p = stack.enter_context(proxy({"w": pool}, workdir))["w"]
        with client(p.port, password="wrong") as r:
            for _ in range(3):
                with pytest.raises(redis.RedisError):
                    r.set("k", "v")
            assert r.ping() is True
        time.sleep(0.25)
        assert p.stats_json()["w"][f"127.0.0.1:{port}"]["server_err"] >= 1  # type: ignore[index]
        assert "refused AUTH" in (Path(workdir) / "proxy.log").read_text()


@contextlib.contextmanager
def _pair(pool: dict[str, object]) -> Iterator[tuple[Proxy, Any, int, int]]:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        a, b = free_port(), free_port()
        proc_a = stack.enter_context(_redis_proc(a))
        stack.enter_context(_redis_proc(b))
        pool = {"redis": "true", **pool, "servers": [f"127.0.0.1:{a}:1", f"127.0.0.1:{b}:1"]}
        p = stack.enter_context(proxy({"f": pool}, workdir))["f"]
        try:
            yield p, proc_a, a, b
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc_a.send_signal(signal.SIGCONT)


def test_killed_backend_gives_errors_and_the_connection_stays_usable() -> None:
    with _pair({"timeout": 2000}) as (p, proc_a, a, _b):
        router = p.router()
        ka, kb = keys_on(router, 0, 1, "k")[0], keys_on(router, 1, 1, "k")[0]
        with client(p.port) as r:
            assert r.mset({ka: 1, kb: 2}) is True
            stop_process(proc_a, signal.SIGKILL)
            with pytest.raises(redis.ResponseError, match="Connection re"):  # reset or refused
                r.get(ka)
            with pytest.raises(redis.ResponseError, match="Connection refused"):
                r.mget([ka, kb])  # one failing fragment fails the whole command
            assert r.get(kb) == b"2"  # the other server, on the same client connection
            with pytest.raises(redis.ResponseError, match="Connection refused"):
                r.delete(ka, kb)  # (the part on the live server did run: a split is not atomic)
            assert r.get(kb) is None
        time.sleep(0.25)
        doc = p.stats_json()["f"]  # type: ignore[index]
        assert doc[f"127.0.0.1:{a}"]["server_err"] + doc[f"127.0.0.1:{a}"]["server_eof"] >= 1
        assert doc["forward_error"] >= 1


def test_every_split_command_with_a_killed_fragment() -> None:
    """MSET, EXISTS, TOUCH, DEL, MGET split over a dead server and a live one, pipelined: each is an error
    as a whole (the parts on the live server did run: a split is not atomic), and the commands between
    and after them are answered, in order, on the same client connection."""
    with _pair({"timeout": 2000}) as (p, proc_a, a, _b):
        router = p.router()
        ka, ka2 = keys_on(router, 0, 2, "kf")
        kb, kb2 = keys_on(router, 1, 2, "kf")
        with client(p.port) as r:
            assert r.mset({ka: "a", kb: "b"}) is True
            stop_process(proc_a, signal.SIGKILL)
            pipe = r.pipeline(transaction=False)
            pipe.mset({ka2: "x", kb2: "y"}).get(kb2).exists(ka, kb, kb2).get(kb).touch(ka, kb, kb2)
            pipe.mget([kb, kb2]).delete(kb2, ka, kb).mget([kb, ka, kb2]).exists(kb, kb2).set(kb, "again").get(kb)
            got = pipe.execute(raise_on_error=False)
            failed = [i for i, reply in enumerate(got) if isinstance(reply, redis.ResponseError)]
            assert failed == [0, 2, 4, 6, 7], got
            assert all("Connection re" in str(got[i]) for i in failed), got  # refused (or reset: the first)
            assert [got[i] for i in (1, 3, 5, 8, 9, 10)] == [b"y", b"b", [b"b", b"y"], 0, True, b"again"]
            with pytest.raises(redis.ResponseError, match="Connection refused"):
                r.mset({ka: 1, kb: 2})  # and one at a time, each its own round trip
            with pytest.raises(redis.ResponseError, match="Connection refused"):
                r.exists(kb, ka)
            with pytest.raises(redis.ResponseError, match="Connection refused"):
                r.touch(ka, kb)
            assert r.get(kb) == b"2" and r.exists(kb, kb2) == 1 and r.touch(kb) == 1
        time.sleep(0.25)
        doc = p.stats_json()["f"]  # type: ignore[index]
        assert doc["forward_error"] >= 8 and doc["fragments"] >= 16
        assert doc[f"127.0.0.1:{a}"]["server_err"] + doc[f"127.0.0.1:{a}"]["server_eof"] >= 1


def test_split_mget_whose_fragment_times_out() -> None:
    """An MGET over a SIGSTOPped server and a live one: the fragment times out and the whole MGET is
    ``-ERR Connection timed out``; the commands pipelined after it, answered by the live server long
    before, wait their turn and come back in order; the connection stays usable throughout."""
    with _pair({"timeout": 300}) as (p, proc_a, a, _b):
        router = p.router()
        ka = keys_on(router, 0, 1, "mt")[0]
        kb, kb2 = keys_on(router, 1, 2, "mt")
        with client(p.port) as r:
            assert r.mset({ka: "a", kb: "b", kb2: "c"}) is True
            sigstop(proc_a.pid)
            try:
                pipe = r.pipeline(transaction=False)
                pipe.get(kb).mget([kb, ka, kb2]).get(kb2).mget([kb2, kb]).set(kb, "B").mget([ka, kb]).get(kb)
                start = time.monotonic()
                got = pipe.execute(raise_on_error=False)
                assert time.monotonic() - start >= 0.25  # (held behind the timeout)
                assert isinstance(got[1], redis.ResponseError) and str(got[1]) == "Connection timed out"
                assert isinstance(got[5], redis.ResponseError) and str(got[5]) == "Connection timed out"
                assert [got[i] for i in (0, 2, 3, 4, 6)] == [b"b", b"c", [b"c", b"b"], True, b"B"]
                with pytest.raises(redis.ResponseError, match="Connection timed out"):
                    r.mget([kb2, ka])  # one at a time too
                assert r.mget([kb, kb2]) == [b"B", b"c"] and r.get(kb) == b"B"
            finally:
                proc_a.send_signal(signal.SIGCONT)
            # the resumed server's late replies went to the closed connection: a new one, in step
            assert r.mget([ka, kb, kb2]) == [b"a", b"B", b"c"] and r.get(ka) == b"a"
        time.sleep(0.25)
        server = p.stats_json()["f"][f"127.0.0.1:{a}"]  # type: ignore[index]
        assert server["server_timedout"] >= 2 and server["server_ejected_at"] == 0


def test_stopped_backend_times_out_then_recovers() -> None:
    with _pair({"timeout": 300}) as (p, proc_a, _a, _b):
        router = p.router()
        ka, kb = keys_on(router, 0, 1, "t")[0], keys_on(router, 1, 1, "t")[0]
        with client(p.port) as r:
            assert r.mset({ka: 1, kb: 2}) is True
            sigstop(proc_a.pid)
            try:
                pipe = r.pipeline(transaction=False)
                pipe.get(ka).get(kb)
                first, second = pipe.execute(raise_on_error=False)
                assert isinstance(first, redis.ResponseError) and "Connection timed out" in str(first)
                assert second == b"2"
            finally:
                proc_a.send_signal(signal.SIGCONT)
            assert r.get(ka) == b"1"  # a new connection to the resumed server
        time.sleep(0.25)
        server = p.stats_json()["f"][f"127.0.0.1:{_a}"]  # type: ignore[index]
        assert server["server_timedout"] >= 1 and server["server_ejected_at"] == 0


def test_ejection_and_return_after_ping_probe() -> None:
    pool = {"timeout": 200, "auto_eject_hosts": "true", "server_failure_limit": 2, "server_retry_timeout": 400}
    with _pair(pool) as (p, proc_a, a, _b):
        ka = keys_on(p.router(), 0, 1, "ej")[0]
        with client(p.port) as r:
            sigstop(proc_a.pid)
            try:
                for _ in range(2):  # two consecutive failures eject the server
                    with pytest.raises(redis.ResponseError, match="Connection timed out"):
                        r.get(ka)
                assert r.set(ka, "B") is True and r.get(ka) == b"B"  # now on the other server
                time.sleep(0.9)  # a probe ran and timed out: still ejected
                assert r.get(ka) == b"B"
                doc = p.stats_json()["f"]  # type: ignore[index]
                assert doc["server_ejects"] == 1 and doc[f"127.0.0.1:{a}"]["server_ejected_at"] > 0
                assert r.dbsize() == 1  # broadcast to the live server only
                assert r.execute_command("LOLWUT").startswith(b"Redis ver.")  # keyless: the first live server
            finally:
                proc_a.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 5
            while r.get(ka) is not None:  # back on its (empty) server after a PING probe
                assert time.monotonic() < deadline, "the server did not come back"
                time.sleep(0.05)
            assert r.set(ka, "A") is True
        with client(a) as direct:
            assert direct.get(ka) == b"A"


