"""Faults inside the TLS layer's own code: a callback that raises, a cache store or a sealer that
raises.  Each must give a full handshake (the client served), never a failed or a stuck one.

In-process servers (the library API) on real sockets, a real ``hoard server`` as the cache, Python's
ssl as the client.  The faults are injected by subclassing the public classes (a ``SessionStore``,
``Sealer`` or ``TicketKeys`` whose method raises) or by handing ``TLSContext`` an SNI table that
raises: OpenSSL then calls into Python code that fails, which is what is under test.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import pytest

from scatterhoard.tls import (
    Sealer,
    SessionStore,
    TicketKeys,
    TLSContext,
    TLSStats,
    open_backend,
)
from tests.support import hoard_server, temp_dir
from tests.test_tls_support import (
    client_context,
    make_cert,
    py_request,
    serve_contexts,
    serve_in_process,
)

V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
VERSIONS = pytest.mark.parametrize("version", [V12, V13], ids=["tls1.2", "tls1.3"])
SECRET = b"f" * 32


class Boom(RuntimeError):
    """The injected fault."""


def _served(reply: bytes) -> bool:
    return reply.endswith(b" version\r\n")


async def resumable(port: int, c: ssl.SSLContext, store: SessionStore) -> Any:
    """A first request, its session in the cache, and the control: that session resumes
    (before the test breaks something). The first request's result."""
    first = await asyncio.to_thread(py_request, port, c)
    await store.drain()
    assert (await asyncio.to_thread(py_request, port, c, first.session)).reused  # the control
    return first


@VERSIONS
def test_new_session_callback_raising(version: ssl.TLSVersion, caplog: pytest.LogCaptureFixture) -> None:
    class Store(SessionStore):
        calls = 0

        def store_later(self, session_id: bytes, der: bytes, ttl: int) -> None:
            Store.calls += 1
            raise Boom("store_later")

    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        store = Store(f"127.0.0.1:{cache_port}", Sealer(SECRET))
        stats = TLSStats()

        async def test(port: int) -> None:
            c = client_context(version)
            first = await asyncio.to_thread(py_request, port, c)
            again = await asyncio.to_thread(py_request, port, c, first.session)
            assert _served(first.reply) and _served(again.reply)
            assert not again.reused  # nothing was stored
            assert Store.calls >= 2 and store.stats.stored == 0
            assert (stats.handshakes_full, stats.handshakes_failed) == (2, 0)

        with caplog.at_level(logging.ERROR, "scatterhoard.tls"):
            serve_in_process(TLSContext(cert, key, session_store=store), test, stats=stats)
        assert "exception in the new session callback" in caplog.text


@VERSIONS
def test_get_session_callback_raising(version: ssl.TLSVersion, caplog: pytest.LogCaptureFixture) -> None:
    """A store whose fetch hands back something that is not bytes: decoding it raises inside
    OpenSSL's get callback, which then answers "no session"."""

    class Store(SessionStore):
        broken = False

        async def fetch(self, session_id: bytes) -> Any:
            der = await super().fetch(session_id)
            return der.hex() if self.broken and der is not None else der

    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        store = Store(f"127.0.0.1:{cache_port}", Sealer(SECRET))
        stats = TLSStats()

        async def test(port: int) -> None:
            c = client_context(version)
            first = await resumable(port, c, store)
            store.broken = True
            res = await asyncio.to_thread(py_request, port, c, first.session)
            assert _served(res.reply) and not res.reused
            assert stats.handshakes_failed == 0 and store.stats.hits == 2

        with caplog.at_level(logging.ERROR, "scatterhoard.tls"):
            serve_in_process(TLSContext(cert, key, session_store=store), test, stats=stats)
        assert "exception in the get session callback" in caplog.text


class ExplodingSNI(dict[str, TLSContext]):
    def get(self, key: str, default: Any = None) -> Any:
        raise Boom("sni lookup")


@VERSIONS
def test_client_hello_callback_raising(version: ssl.TLSVersion, caplog: pytest.LogCaptureFixture) -> None:
    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        other_cert, other_key = make_cert(d, "other.test", "other")
        other = TLSContext(other_cert, other_key)
        store = SessionStore(f"127.0.0.1:{cache_port}", Sealer(SECRET))
        ctx = TLSContext(cert, key, session_store=store)
        stats = TLSStats()

        async def test(port: int) -> None:
            c = client_context(version)
            first = await resumable(port, c, store)
            ctx.sni = ExplodingSNI({"other.test": other})  # the ClientHello callback now raises
            res = await asyncio.to_thread(py_request, port, c, first.session)
            assert _served(res.reply) and not res.reused
            fresh = await asyncio.to_thread(py_request, port, c)
            assert _served(fresh.reply)
            assert stats.handshakes_failed == 0

        try:
            with caplog.at_level(logging.ERROR, "scatterhoard.tls"):
                serve_in_process(ctx, test, stats=stats)
        finally:
            other.close()
        assert "exception in the client hello callback" in caplog.text


class FaultyTickets(TicketKeys):
    fail = ""  # "enc": raise when issuing a ticket, "dec": when decrypting one

    def crypt(self, key_name: Any, iv: Any, cctx: Any, hctx: Any, enc: int) -> int:
        if self.fail == ("enc" if enc else "dec"):
            raise Boom(f"ticket key callback ({self.fail})")
        return super().crypt(key_name, iv, cctx, hctx, enc)


@VERSIONS
def test_ticket_key_callback_raising(version: ssl.TLSVersion, caplog: pytest.LogCaptureFixture) -> None:
    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        tickets = FaultyTickets(open_backend(f"127.0.0.1:{cache_port}"), Sealer(SECRET))
        ctx = TLSContext(cert, key, tickets=tickets)
        stats = TLSStats()

        async def test(port: int) -> None:
            await tickets.start()
            try:
                c = client_context(version)
                tickets.fail = "enc"  # no ticket issued: the handshake itself succeeds
                no_ticket = await asyncio.to_thread(py_request, port, c)
                assert _served(no_ticket.reply) and no_ticket.session is not None
                assert not no_ticket.session.has_ticket
                tickets.fail = ""
                good = await asyncio.to_thread(py_request, port, c)
                assert good.session is not None and good.session.has_ticket
                assert (await asyncio.to_thread(py_request, port, c, good.session)).reused  # the control
                tickets.fail = "dec"  # the ticket cannot be decrypted: a full handshake
                res = await asyncio.to_thread(py_request, port, c, good.session)
                assert _served(res.reply) and not res.reused
                assert stats.handshakes_failed == 0 and stats.handshakes_full == 3
            finally:
                await tickets.close()

        with caplog.at_level(logging.ERROR, "scatterhoard.tls"):
            serve_in_process(ctx, test, stats=stats)
        assert "exception in the ticket key callback" in caplog.text


@VERSIONS
def test_a_lookup_that_raises_resumes_the_handshake_at_once(version: ssl.TLSVersion) -> None:
    """A session store whose fetch raises (ours never does; a subclass or another implementation
    may): the paused handshake goes on at once as a full one, not after the handshake timeout
    (60 s here; the client gives up after 15 s)."""

    class Store(SessionStore):
        broken = False

        async def fetch(self, session_id: bytes) -> bytes | None:
            if self.broken:
                raise Boom("fetch")
            return await super().fetch(session_id)

    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        store = Store(f"127.0.0.1:{cache_port}", Sealer(SECRET))
        stats = TLSStats()

        async def test(port: int) -> None:
            c = client_context(version)
            first = await asyncio.to_thread(py_request, port, c)
            await store.drain()
            store.broken = True
            res = await asyncio.to_thread(py_request, port, c, first.session, timeout=15.0)
            assert _served(res.reply) and not res.reused
            assert stats.lookups == 1 and stats.handshakes_failed == 0 and stats.handshakes_full == 2

        serve_in_process(TLSContext(cert, key, session_store=store), test, stats=stats, handshake_timeout=60.0)


@VERSIONS
def test_a_sealer_that_raises(version: ssl.TLSVersion) -> None:
    """Sealing or opening raising something else than SessionBlobError: a miss, a full handshake."""

    class BrokenSealer(Sealer):
        fail = ""

        def seal(self, kind: bytes, key: bytes, plaintext: bytes) -> bytes:
            if self.fail == "seal":
                raise Boom("seal")
            return super().seal(kind, key, plaintext)

        def open(self, kind: bytes, key: bytes, blob: bytes) -> bytes:
            if self.fail == "open":
                raise Boom("open")
            return super().open(kind, key, blob)

    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        sealer = BrokenSealer(SECRET)
        store = SessionStore(f"127.0.0.1:{cache_port}", sealer)
        stats = TLSStats()

        async def test(port: int) -> None:
            c = client_context(version)
            sealer.fail = "seal"
            unsealed = await asyncio.to_thread(py_request, port, c)
            await store.drain()
            assert store.stats.store_failed == 1 and store.stats.stored == 0
            res = await asyncio.to_thread(py_request, port, c, unsealed.session)
            assert _served(res.reply) and not res.reused
            sealer.fail = ""
            await store.drain()
            first = await asyncio.to_thread(py_request, port, c)
            await store.drain()
            sealer.fail = "open"
            res = await asyncio.to_thread(py_request, port, c, first.session, timeout=15.0)
            assert _served(res.reply) and not res.reused
            assert store.stats.rejected == 1 and stats.handshakes_failed == 0

        serve_in_process(TLSContext(cert, key, session_store=store), test, stats=stats, handshake_timeout=60.0)


class SlowWrites:
    """A cache backend 0.2 s away for writes (the real distcache backend behind a delay)."""

    def __init__(self, address: str, delay: float = 0.2) -> None:
        self.inner = open_backend(address)
        self.delay = delay

    async def get(self, key: bytes) -> bytes | None:
        return await self.inner.get(key)

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        await asyncio.sleep(self.delay)
        return await self.inner.add(key, value, ttl)

    async def remove(self, key: bytes) -> bool:
        return await self.inner.remove(key)

    async def close(self) -> None:
        await self.inner.close()


@VERSIONS
def test_a_new_session_is_in_the_cache_before_the_client_can_use_it(version: ssl.TLSVersion) -> None:
    """The session's write is slow (0.2 s): the server holds its last flight (TLS 1.2: its
    Finished; TLS 1.3: the ticket, and the reply behind it) until the write is acknowledged, so a
    client that goes to another server at once still resumes there.  With ``store_wait=0`` the
    client would get there first and miss."""
    with temp_dir() as d, hoard_server() as cache_port:
        cert, key = make_cert(d)
        writer = SessionStore(SlowWrites(f"127.0.0.1:{cache_port}"), Sealer(SECRET), store_wait=2.0)
        reader = SessionStore(f"127.0.0.1:{cache_port}", Sealer(SECRET))
        a = TLSContext(cert, key, session_store=writer)
        b = TLSContext(cert, key, session_store=reader)
        stats = TLSStats()

        async def test(ports: list[int]) -> None:
            pa, pb = ports
            c = client_context(version)
            for _ in range(3):
                first = await asyncio.to_thread(py_request, pa, c)
                again = await asyncio.to_thread(py_request, pb, c, first.session)
                assert _served(again.reply) and again.reused, "the client reached B before its session"
            assert writer.stats.stored == 3 and stats.handshakes_failed == 0

        serve_contexts([a, b], test, stats=stats)
