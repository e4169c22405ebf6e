"""Binary clients of ``hoard proxy`` when servers fail, and across a reload: each test gets its own
memcached backends and proxy.

A server that does not answer in time (SIGSTOP) gives its requests status
0x0085 (Busy, value "Connection timed out"), quiet ones included; a failed
connection or a pool with no live server gives 0x0086 (Temporary failure,
value the strerror); both count towards ejection like text clients'
failures, and the requests to other servers are answered in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

import pytest

from scatterhoard.protocol import binary as b
from tests.support import free_port, stop_process, temp_dir
from tests.test_proxy_binary import Bin, binary, brief, req, store
from tests.test_proxy_integration import _mc_proc, ask, keys_on, proxy, sigstop
from tests.test_proxy_reload import backend, conf_text, holds
from tests.test_proxy_reload import proxy as reloadable_proxy

pytestmark = pytest.mark.timeout(60)

TIMED_OUT = b"Connection timed out"
GONE = (b"Connection refused", b"Connection reset by peer")


def test_stopped_backend_gives_busy_then_recovers() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        a, bb = free_port(), free_port()
        proc_a = stack.enter_context(_mc_proc(a))
        stack.enter_context(_mc_proc(bb))
        servers = [f"127.0.0.1:{a}:1", f"127.0.0.1:{bb}:1"]
        p = stack.enter_context(proxy({"t": {"timeout": 300, "servers": servers}}, workdir))["t"]
        router = p.router()
        ka, ka2 = keys_on(router, 0, 2, "a")
        kb = keys_on(router, 1, 1, "b")[0]
        c = stack.enter_context(binary(p.port))
        assert c.call(store(b.OP_SETQ, ka, b"1"), store(b.OP_SETQ, kb, b"2")) == []
        sigstop(proc_a.pid)  # type: ignore[attr-defined]
        try:
            # (nothing that would change ka: the stopped server may still run what it was sent)
            c.send(req(b.OP_GET, ka, opaque=1), req(b.OP_GETKQ, ka, opaque=2), req(b.OP_GETKQ, kb, opaque=3),
                   store(b.OP_SETQ, ka2, b"x", 0, 4), req(b.OP_FLUSH, b"", b.pack_flush_extras(3600), opaque=5),
                   req(b.OP_NOOP, opaque=6), req(b.OP_GET, kb, opaque=7))
            got = c.through(7)
            # every request to the stopped server: Busy, with its own opcode and opaque, in order
            assert [brief(r) for r in got] == [
                (b.OP_GET, b.STATUS_EBUSY, b"", TIMED_OUT, 1), (b.OP_GETKQ, b.STATUS_EBUSY, b"", TIMED_OUT, 2),
                (b.OP_GETKQ, 0, kb, b"2", 3), (b.OP_SETQ, b.STATUS_EBUSY, b"", TIMED_OUT, 4),
                (b.OP_FLUSH, b.STATUS_EBUSY, b"", TIMED_OUT, 5), (b.OP_NOOP, 0, b"", b"", 6),
                (b.OP_GET, 0, b"", b"2", 7)]
        finally:
            os.kill(proc_a.pid, signal.SIGCONT)  # type: ignore[attr-defined]
        # the server answers again: a new connection, the value it had
        assert [brief(r) for r in c.call(req(b.OP_GET, ka, opaque=8))] == [(b.OP_GET, 0, b"", b"1", 8)]
        time.sleep(0.25)
        doc = p.stats_json()["t"]
        assert isinstance(doc, dict)
        server = doc[f"127.0.0.1:{a}"]
        assert server["server_timedout"] >= 1 and server["server_ejected_at"] == 0


def test_killed_backend_error_then_ejection_then_return() -> None:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        a, bb = free_port(), free_port()
        proc_a = stack.enter_context(_mc_proc(a))
        stack.enter_context(_mc_proc(bb))
        servers = [f"127.0.0.1:{a}:1", f"127.0.0.1:{bb}:1"]
        pool = {"auto_eject_hosts": "true", "server_failure_limit": 1, "server_retry_timeout": 300,
                "servers": servers}
        p = stack.enter_context(proxy({"r": pool}, workdir))["r"]
        ka = keys_on(p.router(), 0, 1, "re")[0]
        c = stack.enter_context(binary(p.port))
        # (killed before the proxy connected to it: an open connection's EOF would eject it already)
        stop_process(proc_a, signal.SIGKILL)  # type: ignore[arg-type]
        (got,) = c.call(req(b.OP_GETQ, ka, opaque=2))  # a quiet request's error is sent
        assert (got.opcode, got.status, got.opaque) == (b.OP_GETQ, b.STATUS_ETMPFAIL, 2)
        assert got.value in GONE
        # ejected after one failure: the key now lives on the other server
        assert c.call(store(b.OP_SETQ, ka, b"B")) == []
        assert [brief(r) for r in c.call(req(b.OP_GET, ka, opaque=3))] == [(b.OP_GET, 0, b"", b"B", 3)]
        with socket.create_connection(("127.0.0.1", bb), timeout=5) as direct:
            assert ask(direct, b"get %s\r\n" % ka, b"END\r\n") == b"VALUE %s 0 1\r\nB\r\nEND\r\n" % ka
        time.sleep(0.25)
        doc = p.stats_json()["r"]
        assert isinstance(doc, dict)
        assert doc["server_ejects"] == 1 and doc[f"127.0.0.1:{a}"]["server_ejected_at"] > 0
        # restarted: back after a successful probe (empty, so the key is a miss there)
        stack.enter_context(_mc_proc(a))
        deadline = time.monotonic() + 10
        while [brief(r) for r in c.call(req(b.OP_GETQ, ka, opaque=4))]:
            assert time.monotonic() < deadline, "the restarted server did not come back"
            time.sleep(0.05)
        assert c.call(store(b.OP_SETQ, ka, b"C")) == []
        with socket.create_connection(("127.0.0.1", a), timeout=5) as direct:
            assert ask(direct, b"get %s\r\n" % ka, b"END\r\n") == b"VALUE %s 0 1\r\nC\r\nEND\r\n" % ka


def test_no_live_server() -> None:
    """Every server killed and ejected: Temporary failure, "Connection refused", from the proxy."""
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        a, bb = free_port(), free_port()
        procs = [stack.enter_context(_mc_proc(a)), stack.enter_context(_mc_proc(bb))]
        servers = [f"127.0.0.1:{a}:1", f"127.0.0.1:{bb}:1"]
        pool = {"auto_eject_hosts": "true", "server_failure_limit": 1, "server_retry_timeout": 60000,
                "servers": servers}
        p = stack.enter_context(proxy({"n": pool}, workdir))["n"]
        keys = [keys_on(p.router(), i, 1, "nl")[0] for i in range(2)]
        for proc in procs:
            stop_process(proc, signal.SIGKILL)  # type: ignore[arg-type]
        c: Bin = stack.enter_context(binary(p.port))
        for key in keys:  # the first failure of each server ejects it
            (got,) = c.call(req(b.OP_GET, key, opaque=1))
            assert got.status == b.STATUS_ETMPFAIL and got.value in GONE
        got = c.call(req(b.OP_GET, keys[0], opaque=2), req(b.OP_DELETEQ, keys[1], opaque=3),
                     req(b.OP_FLUSHQ, opaque=4), req(b.OP_VERSION, opaque=5))
        refused = b"Connection refused"
        assert [brief(r) for r in got[:3]] == [(b.OP_GET, b.STATUS_ETMPFAIL, b"", refused, 2),
                                              (b.OP_DELETEQ, b.STATUS_ETMPFAIL, b"", refused, 3),
                                              (b.OP_FLUSHQ, b.STATUS_ETMPFAIL, b"", refused, 4)]
        assert (got[3].opcode, got[3].status, got[3].opaque) == (b.OP_VERSION, 0, 5)  # the proxy still answers
        time.sleep(0.25)
        doc = p.stats_json()["n"]
        assert isinstance(doc, dict)
        assert doc["server_ejects"] == 2 and doc["forward_error"] >= 3


def test_reload_moves_binary_clients_to_the_new_servers() -> None:
    """The same binary connection, after SIGUSR1/``hoard proxy reload``: routed to the pool's new servers."""
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        (m1, _), (m2, _) = stack.enter_context(backend()), stack.enter_context(backend())
        port = free_port()
        r = stack.enter_context(reloadable_proxy(workdir, conf_text({"bin": (f"127.0.0.1:{port}", [m1])}), port))
        c = stack.enter_context(binary(port))
        assert c.call(store(b.OP_SETQ, b"k1", b"1")) == [] and holds(m1, "k1")
        assert r.reload(conf_text({"bin": (f"127.0.0.1:{port}", [m2])})).returncode == 0
        r.wait_log("configuration reloaded")
        assert c.call(store(b.OP_SETQ, b"k2", b"2")) == []
        assert holds(m2, "k2") and not holds(m1, "k2")
        assert [brief(p) for p in c.call(req(b.OP_GETK, b"k1", opaque=1), req(b.OP_GET, b"k2", opaque=2))] == \
            [(b.OP_GETK, 1, b"k1", b"", 1), (b.OP_GET, 0, b"", b"2", 2)]
