"""The library API of scatterhoard.tls, in-process: real sockets, Python's ssl as the client.

Each test runs an asyncio TLS server (our binding) in this process and drives
blocking clients from a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from scatterhoard.distcache import SessionCache
from scatterhoard.errors import ConfigError, HoardError, TLSError, TLSLibraryError
from scatterhoard.tls import (
    Sealer,
    SessionStore,
    TLSContext,
    TLSStats,
    start_tls_server,
)
from tests.support import free_port, hoard_argv, hoard_server, running, temp_dir
from tests.test_tls_support import client_context, make_cert, openssl, py_request
from tests.test_tls_support import echo_handler as _echo
from tests.test_tls_support import serve_contexts as _serve_all
from tests.test_tls_support import serve_in_process as _serve

V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


def test_streams_alpn_sni_and_connection_info() -> None:
    with temp_dir() as d:
        cert, key = make_cert(d, "default.test", "default")
        other_cert, other_key = make_cert(d, "other.test", "other")
        other = TLSContext(other_cert, other_key, alpn=["http/1.1"])
        ctx = TLSContext(cert, key, alpn=["h2", "http/1.1"], sni={"other.test": other})

        async def test(port: int) -> None:
            c = client_context(V13, alpn=["http/1.1", "h2"])
            r = await asyncio.to_thread(py_request, port, c, server_hostname="default.test")
            assert r.reply == b"TLSv1.3 h2 default.test 0 version\r\n"  # the server's preference wins
            assert r.alpn == "h2"
            r = await asyncio.to_thread(py_request, port, client_context(V12, alpn=["spdy/1"]),
                                        server_hostname="default.test")
            assert r.reply == b"TLSv1.2 None default.test 0 version\r\n"  # no overlap: no ALPN
            r = await asyncio.to_thread(py_request, port, client_context(V13, alpn=["h2", "http/1.1"]),
                                        server_hostname="other.test")
            assert r.reply == b"TLSv1.3 http/1.1 other.test 0 version\r\n"  # the SNI context's ALPN
            assert await asyncio.to_thread(_peer_cn, port, "other.test") == "other.test"
            assert await asyncio.to_thread(_peer_cn, port, "default.test") == "default.test"
            assert await asyncio.to_thread(_peer_cn, port, "unknown.test") == "default.test"

        try:
            _serve(ctx, test)
        finally:
            other.close()


@pytest.mark.parametrize("version", [V12, V13])
def test_openssl_checks_the_session_id_context(version: ssl.TLSVersion) -> None:
    """Same cache and same sealing key, different session id contexts: OpenSSL itself refuses
    the session (a full handshake, no error); the same context resumes."""
    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        sealer = Sealer(b"k" * 32, context=b"shared")
        store = SessionStore(f"127.0.0.1:{cache_port}", sealer)
        a = TLSContext(cert, key, session_store=store, session_id_context=b"farm-a")
        b = TLSContext(cert, key, session_store=store, session_id_context=b"farm-b")
        a2 = TLSContext(cert, key, session_store=store, session_id_context=b"farm-a")

        async def test(ports: list[int]) -> None:
            pa, pb, pa2 = ports
            c = client_context(version)
            first = await asyncio.to_thread(py_request, pa, c)
            await store.drain()
            other = await asyncio.to_thread(py_request, pb, c, first.session)
            assert not other.reused and other.reply.endswith(b"version\r\n")
            same = await asyncio.to_thread(py_request, pa2, c, first.session)
            assert same.reused
            assert store.stats.rejected == 0  # it was OpenSSL's check, not the sealing

        _serve_all([a, b, a2], test, _echo)


def test_failures_do_not_stop_the_server() -> None:
    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        store = SessionStore(f"127.0.0.1:{cache_port}", Sealer(b"s" * 32))
        ctx = TLSContext(cert, key, session_store=store)
        stats = TLSStats()

        async def test(port: int) -> None:
            c = client_context(V12)
            first = await asyncio.to_thread(py_request, port, c)
            await store.drain()
            await asyncio.to_thread(_garbage, port)
            with pytest.raises(ssl.SSLError):  # no common cipher (RSA key exchange, EC certificate)
                rsa_only = client_context(V12)
                rsa_only.set_ciphers("AES128-SHA")
                await asyncio.to_thread(py_request, port, rsa_only)
            assert (await asyncio.to_thread(py_request, port, c, first.session)).reused
            assert stats.handshakes_failed >= 2
            assert stats.handshakes_resumed == 1 and stats.handshakes_full == 1

        _serve(ctx, test, stats=stats)


@pytest.mark.parametrize("close", ["fin", "rst"])
@pytest.mark.parametrize("version", [V12, V13], ids=["tls1.2", "tls1.3"])
def test_abrupt_client_closes_keep_sessions(version: ssl.TLSVersion, close: str) -> None:
    """The client vanishes without close_notify (TCP FIN, or RST) while the server has not sent
    its own: OpenSSL's SSL_free would evict the session (remove callback -> deleted from the cache)
    unless the shutdown state is set first.  Two servers share the cache: every connection closes
    abruptly, and the session still resumes on the other one."""
    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        store = SessionStore(f"127.0.0.1:{cache_port}", Sealer(b"s" * 32))
        a, b = TLSContext(cert, key, session_store=store), TLSContext(cert, key, session_store=store)
        stats = TLSStats()
        gone = asyncio.Queue[int]()

        async def wait_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = await reader.readline()
            writer.write(b"%d %s" % (writer.get_extra_info("tls").session_reused, line))
            await writer.drain()
            try:
                await reader.read()  # no close_notify from us: wait for the client to go
            except ConnectionResetError:
                pass  # the RST case
            await gone.put(1)
            writer.close()

        async def test(ports: list[int]) -> None:
            pa, pb = ports
            c = client_context(version)
            first, reused = await asyncio.to_thread(_abrupt_request, pa, c, None, close)
            assert not reused and first is not None
            for port in (pb, pa, pb):  # each one closed abruptly too
                await asyncio.wait_for(gone.get(), 20)
                await store.drain()
                assert store.stats.removed == 0, "an abrupt close evicted the session"
                if version is V12:  # (a TLS 1.3 client's session id is not the server's)
                    with SessionCache(f"127.0.0.1:{cache_port}") as cache:
                        assert cache.have(store.key(first.id)), "the session is gone from the cache"
                _, reused = await asyncio.to_thread(_abrupt_request, port, c, first, close)
                assert reused, "the session did not resume after an abrupt close"
            await asyncio.wait_for(gone.get(), 20)
            await store.drain()
            assert store.stats.removed == 0 and stats.handshakes_failed == 0
            assert (stats.handshakes_full, stats.handshakes_resumed) == (1, 3)

        _serve_all([a, b], test, wait_eof, stats)


def test_protocol_range_is_enforced() -> None:
    """A 1.3-only server refuses a 1.2-only client, a 1.2-only server a 1.3-only client (an alert,
    never a downgrade); a client offering both gets the server's highest version, and resumes by
    session id through the cache on a 1.2-only server (whose ClientHello callback must then look
    up the legacy session id, not TLS 1.3 tickets)."""
    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        store = SessionStore(f"127.0.0.1:{cache_port}", Sealer(b"v" * 32))
        only13 = TLSContext(cert, key, min_version="1.3")
        only12 = TLSContext(cert, key, max_version="1.2", session_store=store)
        stats = TLSStats()

        async def test(ports: list[int]) -> None:
            p13, p12 = ports
            with pytest.raises(ssl.SSLError, match="(?i)version|protocol"):
                await asyncio.to_thread(py_request, p13, client_context(V12))
            with pytest.raises(ssl.SSLError, match="(?i)version|protocol"):
                await asyncio.to_thread(py_request, p12, client_context(V13))
            assert stats.handshakes_failed == 2
            assert (await asyncio.to_thread(py_request, p13, client_context(V13))).version == "TLSv1.3"
            both = client_context(V12)
            both.maximum_version = V13
            first = await asyncio.to_thread(py_request, p12, both)
            assert first.version == "TLSv1.2" and not first.reused
            await store.drain()
            again = await asyncio.to_thread(py_request, p12, both, first.session)
            assert again.version == "TLSv1.2" and again.reused and store.stats.hits == 1
            assert (await asyncio.to_thread(py_request, p13, both)).version == "TLSv1.3"
            assert stats.handshakes_failed == 2

        _serve_all([only13, only12], test, _echo, stats)


def test_plain_protocol_api_and_close_notify() -> None:
    """start_tls_server with a bare asyncio.Protocol; the client's close_notify is an EOF."""
    events: list[str] = []

    class Upper(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            events.append("made")

        def data_received(self, data: bytes) -> None:
            self.transport.write(data.upper())  # type: ignore[attr-defined]

        def eof_received(self) -> bool | None:
            events.append("eof")
            return None

        def connection_lost(self, exc: Exception | None) -> None:
            events.append("lost")

    with temp_dir() as d:
        cert, key = make_cert(d)
        ctx = TLSContext(cert, key)

        async def main() -> None:
            server = await start_tls_server(Upper, ctx, "127.0.0.1:0")
            port = server.sockets[0].getsockname()[1]
            assert await asyncio.to_thread(_upper_roundtrip, port) == b"HELLO TLS\n" * 1000
            for _ in range(100):
                if "lost" in events:
                    break
                await asyncio.sleep(0.01)
            server.close()

        try:
            asyncio.run(main())
        finally:
            ctx.close()
    assert events == ["made", "eof", "lost"]


def test_configuration_errors_are_hoard_errors() -> None:
    with temp_dir() as d:
        cert, key = make_cert(d)
        other_cert, other_key = make_cert(d, stem="other")
        with pytest.raises(TLSLibraryError, match="certificate"):
            TLSContext(str(Path(d) / "missing.pem"), key)
        with pytest.raises(TLSLibraryError, match="mismatch|does not match"):
            TLSContext(cert, other_key)
        with pytest.raises(ConfigError, match="unknown TLS version"):
            TLSContext(cert, key, min_version="2.0")
        with pytest.raises(ConfigError):
            TLSContext(cert, key, min_version="1.3", max_version="1.2")
        with pytest.raises(TLSLibraryError, match="cipher"):
            TLSContext(cert, key, ciphers="NO-SUCH-CIPHER")
        assert issubclass(TLSError, HoardError) and issubclass(TLSLibraryError, TLSError)


# -- clients ---------------------------------------------------------------------------------
def _peer_cn(port: int, name: str) -> str:
    c = client_context(V13)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
            c.wrap_socket(raw, server_hostname=name) as s:
        der = s.getpeercert(binary_form=True)
        assert der is not None
        cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(cn[0].value)


def _abrupt_request(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None,
                    close: str) -> tuple[ssl.SSLSession | None, bool]:
    """One request, then the socket closed without close_notify: FIN, or RST (SO_LINGER 0)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    try:
        s.sendall(b"version\r\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(4096)
            assert chunk, "the server closed first"
            reply += chunk
        assert reply.endswith(b" version\r\n"), reply
        if close == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return s.session, s.session_reused
    finally:
        s.close()  # Python's ssl never sends close_notify on close()


def _garbage(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 10)
        s.settimeout(20)
        while s.recv(4096):  # the server closes after its alert
            pass


def _upper_roundtrip(port: int) -> bytes:
    c = client_context(V13)
    payload = b"hello tls\n" * 1000
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        s = c.wrap_socket(raw, server_hostname="localhost")
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        s.unwrap()  # send close_notify, wait for the server's
        return got


def test_lookups_only_for_offered_sessions_and_never_blocking_the_loop() -> None:
    """No lookup for a fresh client (a TLS 1.3 client's random legacy session id is skipped);
    while one handshake waits for a hung cache, other connections are served."""
    cache_port = free_port()
    with temp_dir() as d, running(hoard_argv("server", "-p", str(cache_port)), port=cache_port) as cache:
        cert, key = make_cert(d)
        store = SessionStore(f"127.0.0.1:{cache_port}", Sealer(b"s" * 32), timeout=60.0)
        ctx = TLSContext(cert, key, session_store=store)
        stats = TLSStats()
        cache_pid = cache.pid

        async def test(port: int) -> None:
            c13, c12 = client_context(V13), client_context(V12)
            first13 = await asyncio.to_thread(py_request, port, c13)
            await asyncio.to_thread(py_request, port, c12)
            assert stats.lookups == 0 and store.stats.misses == 0 and store.stats.hits == 0
            await store.drain()
            os.kill(cache_pid, signal.SIGSTOP)
            try:
                waiting = asyncio.ensure_future(asyncio.to_thread(py_request, port, c13, first13.session))
                while stats.lookups == 0:
                    await asyncio.sleep(0.01)
                other = await asyncio.to_thread(py_request, port, c12)  # served meanwhile
                assert other.reply.endswith(b"version\r\n") and not waiting.done()
            finally:
                os.kill(cache_pid, signal.SIGCONT)
            resumed = await waiting
            assert resumed.reused and store.stats.hits == 1

        _serve(ctx, test, stats=stats)


def test_cli_checks_its_arguments() -> None:
    with temp_dir() as d:
        cert, key = make_cert(d)
        base = ["tls", "-l", "127.0.0.1:0", "--cert", cert, "--key", key, "--backend", "127.0.0.1:1"]
        r = subprocess.run(hoard_argv(*base, "--cache", "127.0.0.1:1"), capture_output=True, timeout=60)
        assert r.returncode == 2 and b"--cache needs --cache-key" in r.stderr
        assert b"hoard tls --gen-key FILE" in r.stderr and b"openssl rand -out FILE 32" in r.stderr  # what to do
        r = subprocess.run(hoard_argv("tls", "-l", "127.0.0.1:0", "--backend", "127.0.0.1:1"),
                           capture_output=True, timeout=60)
        assert r.returncode == 2 and b"needs --cert" in r.stderr
        bad = [*base[:4], str(Path(d) / "nope.pem"), *base[5:]]
        r = subprocess.run(hoard_argv(*bad), capture_output=True, timeout=60)
        assert r.returncode == 2 and b"cannot load the certificate" in r.stderr
        keyfile = Path(d) / "farm.key"
        assert subprocess.run(hoard_argv("tls", "--gen-key", str(keyfile)), timeout=60).returncode == 0
        assert len(keyfile.read_bytes()) == 32 and keyfile.stat().st_mode & 0o777 == 0o600
        r = subprocess.run(hoard_argv("tls", "--genkey", str(keyfile)), capture_output=True, timeout=60)
        assert r.returncode == 2  # never overwrites a key
        short = Path(d) / "short.key"
        short.write_bytes(b"tooshort")
        r = subprocess.run(hoard_argv(*base, "--cache", "127.0.0.1:1", "--cache-key", str(short)),
                           capture_output=True, timeout=60)
        assert r.returncode == 2 and b"at least 16" in r.stderr



def test_resumption_after_a_hello_retry_request_and_undecodable_sessions() -> None:
    """A TLS 1.3 client whose key share the server does not take gets a HelloRetryRequest and
    sends a second ClientHello: the prefetched session must still be there.  And a sealed value
    that is not a session (a writer who has the key) gives a full handshake, not a crash."""
    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        store = SessionStore(f"127.0.0.1:{cache_port}", Sealer(b"s" * 32))
        ctx = TLSContext(cert, key, session_store=store, groups="P-256")
        stats = TLSStats()

        async def test(port: int) -> None:
            sess = str(Path(d) / "s.pem")
            first = await asyncio.to_thread(_s_client_groups, port, sess, False)
            assert "New, TLSv1.3" in first
            await store.drain()
            again = await asyncio.to_thread(_s_client_groups, port, sess, True)
            assert "Reused, TLSv1.3" in again, again
            # every stored session replaced by a sealed non-session
            cache = SessionCache(f"127.0.0.1:{cache_port}")
            c12 = client_context(V12)
            first12 = await asyncio.to_thread(py_request, port, c12)
            await store.drain()
            assert first12.session is not None
            sid = first12.session.id
            assert cache.remove(store.key(sid))
            assert cache.add(store.key(sid), store.sealer.seal(b"session", store.key(sid), b"\x30\x03junk"),
                             timeout_ms=60_000)
            res = await asyncio.to_thread(py_request, port, c12, first12.session)
            assert not res.reused and res.reply.endswith(b"version\r\n")
            assert store.stats.hits >= 2 and stats.handshakes_failed == 0
            cache.close()

        _serve(ctx, test, stats=stats)


def _s_client_groups(port: int, sess: str, resume: bool) -> str:
    argv = [openssl(), "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-groups", "X25519:P-256",
            "-sess_in" if resume else "-sess_out", sess, "-msg"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello\n")
    proc.stdin.flush()
    out = []
    for line in proc.stdout:  # the echo handler answers one line, then closes
        out.append(line)
        if line.startswith(b"TLSv1.3 "):
            break
    proc.stdin.close()
    out.extend(proc.stdout.readlines())
    proc.wait(20)
    proc.stdout.close()
    text = b"".join(out).decode("utf-8", "replace")
    assert "HelloRetryRequest" in text or "hello retry" in text.lower() or text.count("ClientHello") >= 2, text
    return text
