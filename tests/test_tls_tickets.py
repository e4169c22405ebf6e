"""Shared session-ticket keys (`hoard tls --tickets`): stateless resumption across the farm."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest

from scatterhoard.address import parse_address
from scatterhoard.distcache import SessionCache
from scatterhoard.tls import Sealer, Terminator, TicketKeys, TLSContext, load_key_file, open_backend
from scatterhoard.tls.tickets import TicketKey
from tests.support import free_port, hoard_server, temp_dir
from tests.test_tls_support import (
    client_context,
    farm,
    make_cert,
    make_key,
    py_request,
    s_client,
    session_ticket,
    ticket_in,
)

ROTATE = 2
TICKETS = ("--tickets", "--ticket-rotate", str(ROTATE), "--session-timeout", "10")


def _ring_key(epoch: int) -> bytes:
    return b"tls:k:" + epoch.to_bytes(8, "big", signed=True)


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_tickets_resume_on_the_other_terminator(version: str) -> None:
    with temp_dir() as d, farm(d, extra=TICKETS) as f:
        sess = str(Path(d) / "sess.pem")
        first = s_client(f.ports[0], version, sess_out=sess)
        assert first.new and first.answered, first.output
        assert "TLS session ticket" in first.output  # a stateless ticket, not a cached session
        second = s_client(f.ports[1], version, sess_in=sess)
        assert second.reused and second.answered, second.output


def test_the_key_ring_is_sealed_and_old_keys_still_decrypt() -> None:
    ctx = client_context(ssl.TLSVersion.TLSv1_3)
    with temp_dir() as d, farm(d, extra=TICKETS) as f:
        first = py_request(f.ports[0], ctx)
        issued = int(time.time() // ROTATE)
        with SessionCache(f"127.0.0.1:{f.cache_port}") as cache:
            blob = cache.get(_ring_key(issued)) or cache.get(_ring_key(issued - 1))
            assert blob is not None and blob[0] == 1 and len(blob) == 1 + 12 + 80 + 16
        while int(time.time() // ROTATE) <= issued:  # wait for the next rotation
            time.sleep(0.1)
        res = py_request(f.ports[1], ctx, session=first.session)
        assert res.reused and res.reply.startswith(b"VERSION ")


def test_a_foreign_key_ring_gives_full_handshakes() -> None:
    with temp_dir() as d, farm(d, n=1, extra=TICKETS) as f:
        sess = str(Path(d) / "sess.pem")
        assert s_client(f.ports[0], "tls1_3", sess_out=sess).new
        with f.terminator(*TICKETS, cache_key=make_key(d, "other")) as stranger:
            res = s_client(stranger, "tls1_3", sess_in=sess)
            assert res.answered and res.new and not res.reused, res.output
        assert s_client(f.ports[0], "tls1_3", sess_in=sess).reused


def test_tickets_keep_working_without_the_cache() -> None:
    ctx = client_context(ssl.TLSVersion.TLSv1_2)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: the terminator makes local keys
    with temp_dir() as d, farm(d, n=0) as f, f.terminator(*TICKETS, cache=dead) as port:
        first = py_request(port, ctx)
        assert first.reply.startswith(b"VERSION ") and not first.reused
        assert py_request(port, ctx, session=first.session).reused


def _ring_names(cache_port: int, cache_key: str, epochs: set[int]) -> dict[int, bytes]:
    """The key name of each epoch's shared ticket key, opened from the cache like a server does."""
    sealer = Sealer(load_key_file(cache_key), context=b"scatterhoard")
    names = {}
    with SessionCache(f"127.0.0.1:{cache_port}") as cache:
        for e in epochs:
            blob = cache.get(_ring_key(e))
            if blob is not None:
                names[e] = TicketKey.parse(e, sealer.open(b"ticketkey", _ring_key(e), blob)).name
    return names


def _issue(port: int, version: str, sess: str | None = None, sess_in: str | None = None,
           ) -> tuple[bytes, set[int], bool]:
    """One s_client connection: (the key name of the last ticket it received, the epochs it ran
    in, whether it resumed ``sess_in``).  The key name is the ticket's first 16 bytes."""
    before = int(time.time() // ROTATE)
    res = s_client(port, version, sess_out=sess, sess_in=sess_in)
    after = int(time.time() // ROTATE)
    assert res.answered, res.output
    return ticket_in(res.output)[:16], set(range(before, after + 1)), res.reused


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_after_a_rotation_new_tickets_use_the_new_key_and_old_ones_still_resume(version: str) -> None:
    with temp_dir() as d, farm(d, extra=TICKETS) as f:
        old = str(Path(d) / "old.pem")
        old_name, old_epochs, _ = _issue(f.ports[0], version, old)
        assert session_ticket(old)[:16] == old_name  # what the client saved, what it will offer
        names = _ring_names(f.cache_port, f.cache_key, old_epochs)
        assert old_name in names.values(), "the ticket is not under the shared key of its epoch"
        while int(time.time() // ROTATE) <= max(old_epochs):  # the next rotation
            time.sleep(0.1)
        new_name, new_epochs, _ = _issue(f.ports[1], version)
        assert new_name != old_name
        assert new_name in _ring_names(f.cache_port, f.cache_key, new_epochs).values()
        # the old ticket still resumes (on the other terminator), and comes back renewed
        renewed_name, renewed_epochs, reused = _issue(f.ports[1], version, sess_in=old)
        assert reused
        assert renewed_name != old_name
        assert renewed_name in _ring_names(f.cache_port, f.cache_key, renewed_epochs).values()


class HeldRing:
    """The cache backend of a ticket key ring whose reads wait until ``released`` is set."""

    def __init__(self, address: str, released: asyncio.Event) -> None:
        self.inner = open_backend(address)
        self.released = released

    async def get(self, key: bytes) -> bytes | None:
        await self.released.wait()
        return await self.inner.get(key)

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        return await self.inner.add(key, value, ttl)

    async def remove(self, key: bytes) -> bool:
        return await self.inner.remove(key)

    async def close(self) -> None:
        await self.inner.close()


def test_the_key_ring_is_loaded_before_the_first_connection() -> None:
    """A terminator starting while the cache is slow: it accepts no connection before it has the
    shared ring (the client waits in the listen backlog), so its first ticket is under the shared
    key and resumes on another terminator, not under a key made locally in the meantime."""
    ctx12 = client_context(ssl.TLSVersion.TLSv1_2)
    with temp_dir() as d, hoard_server() as cache_port, hoard_server() as backend_port:
        cert, key = make_cert(d)
        cache, backend = f"127.0.0.1:{cache_port}", parse_address(f"127.0.0.1:{backend_port}")
        here = [parse_address("127.0.0.1:0")]

        async def main() -> None:
            released = asyncio.Event()
            a_ctx = TLSContext(cert, key, tickets=TicketKeys(HeldRing(cache, released), Sealer(b"r" * 32)))
            b_ctx = TLSContext(cert, key, tickets=TicketKeys(open_backend(cache), Sealer(b"r" * 32)))
            a, b = Terminator(a_ctx, here, backend), Terminator(b_ctx, here, backend)
            try:
                await b.start()  # the ring is in the cache
                starting = asyncio.ensure_future(a.start())
                port_a, port_b = (t.sockets[0].getsockname()[1] for t in (a, b))
                first = asyncio.ensure_future(asyncio.to_thread(py_request, port_a, ctx12))
                await asyncio.sleep(0.5)  # a's ring is still loading: the client must wait
                assert a.stats.connections == 0 and not first.done()
                released.set()
                await starting
                got = await first
                assert got.reply.startswith(b"VERSION ") and got.session is not None
                resumed = await asyncio.to_thread(py_request, port_b, ctx12, got.session)
                assert resumed.reused, "a's first ticket was not under the shared key"
            finally:
                released.set()
                for t in (a, b):
                    await t.close()
                a_ctx.close()
                b_ctx.close()

        asyncio.run(main())
