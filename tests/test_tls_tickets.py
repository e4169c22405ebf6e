"""Shared session-ticket keys (`hoard tls --tickets`): stateless resumption across the farm."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest

from scatterhoard.distcache import SessionCache
from tests.support import free_port, temp_dir
from tests.test_tls_support import client_context, farm, make_key, py_request, s_client

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
