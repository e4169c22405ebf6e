"""The proxy's sans-network parts: reply splitting at every byte boundary, merging, ordering.

A client session and a backend connection are wired to fake transports, so
what a client sends, what reaches the backend, and what the client gets back
can be checked exactly, with replies cut anywhere.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from scatterhoard.protocol.text import TextRequestParser
from scatterhoard.proxy.backend import CONNECTED, BackendConnection, Context
from scatterhoard.proxy.config import parse_config, parse_listen
from scatterhoard.proxy.pool import Pool
from scatterhoard.proxy.session import ClientSession, split_values


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FakeLoop:
    def __init__(self) -> None:
        self.soon: list[Any] = []

    def call_soon(self, cb: Any, *args: Any) -> None:
        self.soon.append((cb, args))

    def time(self) -> float:
        return 0.0

    def call_at(self, when: float, cb: Any, *args: Any) -> None:
        return None

    def run(self) -> None:
        while self.soon:
            cb, args = self.soon.pop(0)
            cb(*args)


class Rig:
    """A pool of ``nservers`` backends, each with one connected fake connection."""

    def __init__(self, nservers: int = 1, extra: str = "") -> None:
        servers = "".join(f"   - 127.0.0.1:{1000 + i}:1\n" for i in range(nservers))
        cfg = parse_config(f"p:\n  listen: 127.0.0.1:1\n{extra}  servers:\n{servers}")
        self.loop = FakeLoop()
        self.ctx = Context(self.loop, 0.0)  # type: ignore[arg-type]
        self.pool = Pool(cfg.pools[0], self.ctx)
        self.conns = []
        for server in self.pool.servers:
            conn = BackendConnection(server, None)
            conn.state = CONNECTED
            conn.transport = FakeTransport()  # type: ignore[assignment]
            server.conns.append(conn)
            self.conns.append(conn)
        self.session = ClientSession(self.pool)
        self.client = FakeTransport()
        self.session.connection_made(self.client)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        self.session.data_received(data)
        self.loop.run()

    def sent(self, i: int = 0) -> bytes:
        return b"".join(self.conns[i].transport.written)  # type: ignore[union-attr]

    def reply(self, data: bytes, i: int = 0, cut: int | None = None) -> None:
        conn = self.conns[i]
        if cut is None:
            conn.data_received(data)
        else:
            conn.data_received(data[:cut])
            self.loop.run()
            conn.data_received(data[cut:])
        self.loop.run()

    def got(self) -> bytes:
        return b"".join(self.client.written)


REPLIES = [
    (b"get a\r\n", b"END\r\n"),
    (b"get a\r\n", b"VALUE a 5 3\r\nEND\r\nEND\r\n"),  # a value that looks like the end
    (b"gets a b\r\n", b"VALUE a 0 2 77\r\nxy\r\nVALUE b 1 0 78\r\n\r\nEND\r\n"),
    (b"gat 10 a\r\n", b"VALUE a 0 1\r\n\n\r\nEND\r\n"),
    (b"get a\r\n", b"SERVER_ERROR out of memory\r\n"),
    (b"set a 0 0 1\r\nx\r\n", b"STORED\r\n"),
    (b"incr a 1\r\n", b"18446744073709551615\r\n"),
    (b"mg a v\r\n", b"VA 4\r\nEN\r\n\r\n"),
    (b"mg a v k\r\n", b"EN\r\n"),
    (b"mg a v q\r\n", b"MN\r\n"),  # quiet miss: the backend only answers the proxy's mn
    (b"mg a v q\r\n", b"VA 1\r\nz\r\nMN\r\n"),
    (b"ms a 1 q\r\nz\r\n", b"CLIENT_ERROR bad data chunk\r\nMN\r\n"),
]


def test_replies_split_at_every_byte() -> None:
    requests = b"".join(r for r, _ in REPLIES)
    replies = b"".join(r for _, r in REPLIES)
    expected = b"".join(r.replace(b"MN\r\n", b"") for _, r in REPLIES)
    for cut in range(len(replies) + 1):
        rig = Rig()
        rig.send(requests)
        assert rig.sent().count(b"mn\r\n") == 3  # one after every quiet request
        rig.reply(replies, cut=cut)
        assert rig.got() == expected, cut
        assert not rig.conns[0].expect and not rig.conns[0].buf


def test_replies_one_byte_at_a_time() -> None:
    rig = Rig()
    rig.send(b"".join(r for r, _ in REPLIES))
    for byte in b"".join(r for _, r in REPLIES):
        rig.reply(bytes([byte]))
    assert rig.got() == b"".join(r.replace(b"MN\r\n", b"") for _, r in REPLIES)


def test_large_value_in_many_reads_is_not_copied_quadratically() -> None:
    rig = Rig()
    rig.send(b"get big\r\n")
    value = random.Random(1).randbytes(200_000)
    reply = b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (len(value), value)
    for i in range(0, len(reply), 1000):
        rig.reply(reply[i:i + 1000])
    assert rig.got() == reply


def test_protocol_error_resets_the_connection() -> None:
    rig = Rig()
    rig.send(b"get a\r\nget b\r\n")
    rig.reply(b"VALUE a 0 x\r\n")
    assert rig.got() == b"SERVER_ERROR Connection reset by peer\r\n" * 2
    assert rig.conns[0].state != CONNECTED
    rig2 = Rig()
    rig2.send(b"get a\r\n")
    rig2.reply(b"END\r\nSTORED\r\n")  # a reply nobody asked for
    assert rig2.got() == b"END\r\n" and rig2.conns[0].state != CONNECTED


def test_replies_in_request_order_across_servers() -> None:
    rig = Rig(3)
    router = rig.pool.router
    rng = random.Random(5)
    keys = [b"k%x" % rng.getrandbits(64) for i in range(40)]  # fnv1a_64 clusters similar keys
    owners = [router.index_for(k) for k in keys]
    assert len(set(owners)) == 3
    rig.send(b"".join(b"get %s\r\n" % k for k in keys))
    for i in (2, 0, 1):  # servers answer in any order
        mine = [k for k, o in zip(keys, owners, strict=True) if o == i]
        assert rig.sent(i) == b"".join(b"get %s\r\n" % k for k in mine)
        rig.reply(b"".join(b"VALUE %s 0 1\r\n%d\r\nEND\r\n" % (k, i) for k in mine), i)
    assert rig.got() == b"".join(b"VALUE %s 0 1\r\n%d\r\nEND\r\n" % (k, o) for k, o in zip(keys, owners, strict=True))


def test_multi_get_split_and_merged_in_key_order() -> None:
    rig = Rig(3)
    router = rig.pool.router
    rng = random.Random(6)
    keys = [b"m%x" % rng.getrandbits(64) for i in range(30)]
    owners = [router.index_for(k) for k in keys]
    request = keys + [keys[3], b"missing"]
    rig.send(b"gets " + b" ".join(request) + b"\r\n")
    for i in range(3):
        line = rig.sent(i)
        assert line.startswith(b"gets ") and line.endswith(b"\r\n") and line.count(b"\r\n") == 1
        asked = line[5:-2].split(b" ")
        held = [k for k in asked if k != b"missing"]
        rig.reply(b"".join(b"VALUE %s 0 1 %d\r\n%d\r\n" % (k, i, i) for k in held) + b"END\r\n", i)
    expected = b"".join(b"VALUE %s 0 1 %d\r\n%d\r\n" % (k, owners[keys.index(k)], owners[keys.index(k)])
                        for k in request if k != b"missing") + b"END\r\n"
    assert rig.got() == expected
    assert rig.pool.stats.fragments == 3


def test_multi_get_with_a_failed_fragment() -> None:
    rig = Rig(2)
    rng = random.Random(7)
    keys = [b"f%x" % rng.getrandbits(64) for i in range(20)]
    rig.send(b"get " + b" ".join(keys) + b"\r\nversion\r\n")
    rig.reply(b"END\r\n", 0)
    rig.conns[1].connection_lost(ConnectionResetError(104, "reset"))
    rig.loop.run()
    assert rig.got().startswith(b"SERVER_ERROR Connection reset by peer\r\nVERSION ")


def test_split_values() -> None:
    raw = b"VALUE a 0 2\r\nxy\r\nVALUE b 1 5 9\r\nEND\r\n\r\nEND\r\n"
    assert split_values(raw) == [(b"a", b"VALUE a 0 2\r\nxy\r\n"), (b"b", b"VALUE b 1 5 9\r\nEND\r\n\r\n")]


def test_noreply_and_proxy_answers_keep_their_place() -> None:
    rig = Rig()
    rig.send(b"get a\r\nset b 0 0 1 noreply\r\nx\r\nversion\r\nbogus\r\nmn\r\nverbosity 1\r\nget c\r\n")
    assert rig.sent() == b"get a\r\nset b 0 0 1 noreply\r\nx\r\nget c\r\n"
    assert rig.got() == b""  # everything waits behind the first get
    rig.reply(b"END\r\n", cut=2)
    assert rig.got().startswith(b"END\r\nVERSION 0.5.0-scatterhoard-")
    assert rig.got().endswith(b"\r\nERROR\r\nMN\r\nOK\r\n")
    rig.reply(b"END\r\n")
    assert rig.got().endswith(b"OK\r\nEND\r\n")


def test_quit_closes_after_the_replies_before_it() -> None:
    rig = Rig()
    rig.send(b"get a\r\nquit\r\nget b\r\n")
    assert rig.sent() == b"get a\r\n" and not rig.client.closed
    rig.reply(b"END\r\n")
    assert rig.got() == b"END\r\n" and rig.client.closed


def test_fast_path_is_the_parser_path() -> None:
    """A single "get <key>" read takes a shortcut; what reaches the backend must not change."""
    rng = random.Random(3)
    for _ in range(300):
        key = bytes(rng.choice(b"ab \r\n\x00\xff{}") for _ in range(rng.randint(0, 6)))
        if rng.random() < 0.05:
            key = b"k" * rng.choice((250, 251))
        data = rng.choice((b"get ", b"get  ", b"gets ")) + key + rng.choice((b"\r\n", b"\n", b"", b" \r\n"))
        fast, slow = Rig(), Rig()
        fast.send(data)
        slow.session.idle = False  # force the parser
        slow.send(data)
        assert fast.sent() == slow.sent() and fast.got() == slow.got(), data
        assert len(fast.session.queue) == len(slow.session.queue), data


def test_fast_path_pipelined_reads_are_the_parser_path() -> None:
    rng = random.Random(4)
    lines = [b"get a\r\n", b"get {t}x\r\n", b"get  a\r\n", b"get a b\r\n", b"get \r\n", b"get a\n",
             b"set a 0 0 1\r\nx\r\n", b"get " + b"k" * 250 + b"\r\n", b"get " + b"k" * 251 + b"\r\n",
             b"bogus\r\n", b"get a\rb\r\n", b"mg a v\r\n", b"gets a\r\n", b"get a"]
    for _ in range(300):
        data = b"".join(rng.choice(lines) for _ in range(rng.randint(1, 6)))
        if not data.startswith(b"get "):
            data = b"get z\r\n" + data
        fast, slow = Rig(3), Rig(3)
        fast.send(data)
        slow.session.idle = False  # force the parser
        slow.send(data)
        for i in range(3):
            assert fast.sent(i) == slow.sent(i), data
        assert fast.got() == slow.got() and len(fast.session.queue) == len(slow.session.queue), data
        assert fast.session.parser.buffered == slow.session.parser.buffered, data


def test_parser_idle() -> None:
    parser = TextRequestParser(1024)
    assert parser.idle()
    parser.feed(b"set a 0 0 5\r\n")
    assert not parser.idle()
    parser.feed(b"12345\r\n")
    assert parser.idle()
    parser.feed(b"get a")
    assert not parser.idle()
    parser.feed(b"\r\nset a 0 0 2000\r\n")
    assert not parser.idle()  # swallowing a too large block


@pytest.mark.parametrize(("text", "perm"), [("/s 0600", 0o600), ("/s 0999", 0), ("/s 77x", 0o77), ("/s", None)])
def test_listen_permissions_as_strtol(text: str, perm: int | None) -> None:
    assert parse_listen(text).perm == perm
