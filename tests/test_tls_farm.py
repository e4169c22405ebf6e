"""Issue #8's main test: a farm of `hoard tls` terminators sharing sessions through `hoard server`.

Every process is real: two (or three) ``hoard tls`` on free ports, a ``hoard
server`` as the session cache, another as the plaintext backend (clients send
``version`` through the tunnel and get memcached's answer back), and the
clients are ``openssl s_client`` and Python's ssl module.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from scatterhoard.distcache import SessionCache
from scatterhoard.tls import DistcacheBackend, MemcacheBackend, open_backend
from tests.support import free_port, hoard_server, recv_until, stop_process, temp_dir
from tests.test_tls_support import client_context, farm, make_key, py_request, s_client, session_ticket

VERSIONS = {"tls1_2": ssl.TLSVersion.TLSv1_2, "tls1_3": ssl.TLSVersion.TLSv1_3}


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_s_client_resumes_on_the_other_terminator(version: str) -> None:
    with temp_dir() as d, farm(d) as f:
        sess = str(Path(d) / "sess.pem")
        first = s_client(f.ports[0], version, sess_out=sess)
        assert first.new and not first.reused and first.answered, first.output
        second = s_client(f.ports[1], version, sess_in=sess)
        assert second.reused, second.output
        assert second.answered, second.output
        assert f"Protocol  : {'TLSv1.2' if version == 'tls1_2' else 'TLSv1.3'}" in second.output


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_python_ssl_resumes_across_terminators(version: str) -> None:
    ctx = client_context(VERSIONS[version])
    with temp_dir() as d, farm(d) as f:
        first = py_request(f.ports[0], ctx)
        assert first.reply.startswith(b"VERSION ") and not first.reused
        assert first.session is not None
        for i in range(4):  # bounce between the two servers with the first session
            again = py_request(f.ports[(i + 1) % 2], ctx, session=first.session)
            assert again.reused, f"resumption {i} was a full handshake"
            assert again.reply.startswith(b"VERSION ")
            assert again.version == ("TLSv1.2" if version == "tls1_2" else "TLSv1.3")


def test_without_the_cache_handshakes_are_full_and_succeed() -> None:
    ctx = client_context(ssl.TLSVersion.TLSv1_2)
    with temp_dir() as d, farm(d) as f:
        first = py_request(f.ports[0], ctx)
        assert first.session is not None
        assert py_request(f.ports[1], ctx, session=first.session).reused
        # Stop the cache: the same session now gives a full handshake, never a failure.
        stop_process(f.cache_proc)
        for port in f.ports:
            res = py_request(port, ctx, session=first.session)
            assert res.reply.startswith(b"VERSION ") and not res.reused
        s3 = s_client(f.ports[0], "tls1_3")
        assert s3.new and s3.answered, s3.output


def test_a_hung_cache_gives_full_handshakes_after_the_lookup_timeout() -> None:
    ctx = client_context(ssl.TLSVersion.TLSv1_3)
    with temp_dir() as d, farm(d) as f:
        first = py_request(f.ports[0], ctx)
        assert first.session is not None
        cache_pid = f.cache_proc.pid
        os.kill(cache_pid, signal.SIGSTOP)
        try:
            res = py_request(f.ports[1], ctx, session=first.session)
            assert res.reply.startswith(b"VERSION ") and not res.reused
        finally:
            os.kill(cache_pid, signal.SIGCONT)
        # the cache is back: sessions are shared again
        fresh = py_request(f.ports[0], ctx)
        assert py_request(f.ports[1], ctx, session=fresh.session).reused


def test_a_restarted_cache_is_used_again() -> None:
    ctx = client_context(ssl.TLSVersion.TLSv1_2)
    with temp_dir() as d, farm(d) as f:
            before = py_request(f.ports[0], ctx)
            assert py_request(f.ports[1], ctx, session=before.session).reused
            stop_process(f.cache_proc)
            assert not py_request(f.ports[1], ctx, session=before.session).reused
            with hoard_server(f.cache_port):
                after = py_request(f.ports[0], ctx)
                assert after.session is not None
                _wait_stored(f.cache_port, after.session.id)  # the write is asynchronous
                assert py_request(f.ports[1], ctx, session=after.session).reused


def test_cached_sessions_are_sealed() -> None:
    """The cache holds AES-GCM blobs: no master secret, nothing a cache writer can plant."""
    with temp_dir() as d, farm(d) as f:
        sess = str(Path(d) / "sess.pem")
        first = s_client(f.ports[0], "tls1_2", sess_out=sess)
        master = first.master_key
        assert master is not None and len(master) == 48, first.output
        session_id = _session_id(first.output)
        with SessionCache(f"127.0.0.1:{f.cache_port}") as cache:
            blob = cache.get(b"tls:s:" + session_id)
            assert blob is not None
            assert blob[0] == 1 and master not in blob and session_id not in blob
            assert b"\x30\x82" not in blob[:16]  # not a DER SEQUENCE: the session is not in clear

            # A tampered value is rejected: full handshake, no error.
            tampered = bytearray(blob)
            tampered[-1] ^= 0x01
            assert cache.remove(b"tls:s:" + session_id)
            assert cache.add(b"tls:s:" + session_id, bytes(tampered), timeout_ms=60_000)
            res = s_client(f.ports[1], "tls1_2", sess_in=sess)
            assert res.answered and not res.reused, res.output

            # The genuine blob put back resumes again (the rejection was the tampering).
            assert cache.remove(b"tls:s:" + session_id)
            assert cache.add(b"tls:s:" + session_id, blob, timeout_ms=60_000)
            assert s_client(f.ports[1], "tls1_2", sess_in=sess).reused

            # A valid blob moved under another session id does not open either.
            other = str(Path(d) / "other.pem")
            s_client(f.ports[0], "tls1_2", sess_out=other)
            other_id = _session_id(s_client(f.ports[1], "tls1_2", sess_in=other).output)
            assert cache.remove(b"tls:s:" + other_id)
            assert cache.add(b"tls:s:" + other_id, blob, timeout_ms=60_000)
            res = s_client(f.ports[1], "tls1_2", sess_in=other)
            assert res.answered and not res.reused, res.output


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_wrong_cache_key_gives_a_full_handshake(version: str) -> None:
    with temp_dir() as d, farm(d, n=1) as f:
        sess = str(Path(d) / "sess.pem")
        assert s_client(f.ports[0], version, sess_out=sess).new
        with f.terminator(cache_key=make_key(d, "other")) as stranger:
            res = s_client(stranger, version, sess_in=sess)
            assert res.answered and res.new and not res.reused, res.output
        assert s_client(f.ports[0], version, sess_in=sess).reused  # still fine at home


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_mismatched_session_id_context_gives_a_full_handshake(version: str) -> None:
    with temp_dir() as d, farm(d, n=1) as f:
        sess = str(Path(d) / "sess.pem")
        assert s_client(f.ports[0], version, sess_out=sess).new
        with f.terminator("--session-context", "another-farm") as stranger:
            res = s_client(stranger, version, sess_in=sess)
            assert res.answered and res.new and not res.reused, res.output


@pytest.mark.parametrize("scheme", ["memcache", "meta", "binary"])
def test_memcached_protocol_backends(scheme: str) -> None:
    """--cache memcache:/text:, meta: or binary: HOST:PORT stores sessions through our memcached
    client in that protocol instead of distcache's; the sessions are under hex keys."""
    ctx = client_context(ssl.TLSVersion.TLSv1_2)
    with temp_dir() as d, farm(d, n=0) as f:
        cache = f"{scheme}:127.0.0.1:{f.cache_port}"
        assert isinstance(backend := open_backend(cache), MemcacheBackend)
        assert backend.protocol == {"memcache": "text"}.get(scheme, scheme)
        with f.terminator(cache=cache) as a, f.terminator(cache=cache) as b:
            first = py_request(a, ctx)
            assert first.session is not None
            assert py_request(b, ctx, session=first.session).reused
            assert _meta_ttl(f.cache_port, b"tls:s:" + first.session.id.hex().encode()) is not None


def test_text_is_the_memcache_scheme() -> None:
    backend = open_backend("text:127.0.0.1:1,127.0.0.1:2")
    assert isinstance(backend, MemcacheBackend) and backend.protocol == "text"
    assert isinstance(open_backend("127.0.0.1:1"), DistcacheBackend)
    assert isinstance(open_backend("distcache:meta:1"), DistcacheBackend)  # a host called "meta"


@pytest.mark.parametrize("cache", ["distcache", "meta"])
@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_cache_entries_live_as_long_as_the_session(version: str, cache: str) -> None:
    """The cache entry's TTL is the session's remaining lifetime (--session-timeout 123), read back
    from the cache server over meta (`mg KEY b t`); the client is told the same lifetime."""
    with temp_dir() as d, farm(d, n=0) as f:
        spec = None if cache == "distcache" else f"meta:127.0.0.1:{f.cache_port}"
        with f.terminator("--session-timeout", "123", cache=spec) as port:
            sess = str(Path(d) / "sess.pem")
            started = time.monotonic()
            res = s_client(port, version, sess_out=sess)
            assert res.new, res.output
            # TLS 1.2: the session id; TLS 1.3: the stateful ticket, which is the server's session id
            sid = _session_id(res.output) if version == "tls1_2" else session_ticket(sess)
            assert len(sid) == 32
            key = b"tls:s:" + (sid if cache == "distcache" else sid.hex().encode())
            ttl = None
            for _ in range(500):  # the write may still be on its way
                if (ttl := _meta_ttl(f.cache_port, key)) is not None:
                    break
                time.sleep(0.01)
            elapsed = time.monotonic() - started
            assert ttl is not None, "no cache entry for the session"
            assert 123 - elapsed - 2 <= ttl <= 123, (ttl, elapsed)
            if version == "tls1_3":
                assert "lifetime hint: 123 (seconds)" in res.output, res.output
            assert s_client(port, version, sess_in=sess).reused


# -- helpers ----------------------------------------------------------------------------------
def _session_id(output: str) -> bytes:
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("Session-ID:"):
            return bytes.fromhex(line.split(":", 1)[1].strip())
    raise AssertionError(f"no Session-ID in:\n{output}")


def _meta_ttl(cache_port: int, key: bytes) -> int | None:
    """The remaining TTL of ``key`` on a hoard server (meta ``mg`` with a base64 key), None if absent."""
    with socket.create_connection(("127.0.0.1", cache_port), timeout=10) as s:
        s.sendall(b"mg %s b t\r\n" % base64.b64encode(key))
        reply = recv_until(s, b"\r\n", 10)
    if reply.startswith(b"EN"):
        return None
    assert reply.startswith(b"HD t"), reply
    return int(reply[4:].split()[0])


def _wait_stored(cache_port: int, session_id: bytes) -> None:
    """Until the terminator's background write of ``session_id`` has reached the cache."""
    with SessionCache(f"127.0.0.1:{cache_port}") as cache:
        for _ in range(500):
            if cache.have(b"tls:s:" + session_id):
                return
            time.sleep(0.01)
    raise AssertionError("the session never reached the cache")


def test_reuseport_farm_on_one_address() -> None:
    """Two `hoard tls --reuseport` on the same port: the kernel spreads connections over both,
    and every resumption succeeds whichever one answers."""
    ctx = client_context(ssl.TLSVersion.TLSv1_2)
    with temp_dir() as d, farm(d, n=0) as f:
        port = free_port()
        procs = [subprocess.Popen(f.tls_argv(port, "--reuseport", "-v"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for _ in range(2)]
        try:
            for p in procs:  # each says so once it listens
                assert p.stderr is not None
                while b"listening on" not in (line := p.stderr.readline()):
                    assert line, "hoard tls exited"
            first = py_request(port, ctx)
            assert first.session is not None
            _wait_stored(f.cache_port, first.session.id)
            results = [py_request(port, ctx, session=first.session) for _ in range(40)]
            assert all(r.reused and r.reply.startswith(b"VERSION ") for r in results)
        finally:
            logs = []
            for p in procs:
                stop_process(p)
                assert p.stderr is not None
                logs.append(p.stderr.read().decode())
                p.stderr.close()
    resumed = [int(m.group(1)) for log in logs for m in re.finditer(r"(\d+) resumed handshakes", log)]
    assert len(resumed) == 2 and sum(resumed) == 40, logs
    assert min(resumed) > 0, f"the kernel sent everything to one process: {resumed}"


def test_bulk_data_through_the_terminator_is_intact() -> None:
    """900 KB up and back down through TLS, several times over one connection (flow control)."""
    payload = os.urandom(900 * 1024)
    with temp_dir() as d, farm(d, n=1) as f, socket.create_connection(("127.0.0.1", f.ports[0]), timeout=30) as raw, \
            client_context(ssl.TLSVersion.TLSv1_3).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"set big 0 0 %d\r\n" % len(payload) + payload + b"\r\n")
        assert recv_until(s, b"\r\n", 30) == b"STORED\r\n"
        expected = b"VALUE big 0 %d\r\n" % len(payload) + payload + b"\r\nEND\r\n"
        for _ in range(3):
            s.sendall(b"get big\r\n")
            got = b""
            while len(got) < len(expected):
                chunk = s.recv(1 << 20)
                assert chunk, "connection closed mid-value"
                got += chunk
            assert got == expected
