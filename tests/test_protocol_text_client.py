"""Client-side text protocol: encoders and the reply parser, against real memcached replies."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scatterhoard.errors import ProtocolError
from scatterhoard.protocol import text_client as tc
from scatterhoard.protocol.text_client import Expect
from tests.support import hoard_server, memcached

STREAM = (b"STORED\r\nVALUE a 5 3 17\r\nabc\r\nVALUE b 0 0 18\r\n\r\nEND\r\n42\r\n"
          b"STAT pid 1\r\nSTAT version 1.6\r\nEND\r\nVA 2 f1 c9\r\nhi\r\nEN\r\nHD O1\r\n"
          b"SERVER_ERROR out of memory\r\nEND\r\n")
KINDS = [Expect.LINE, Expect.VALUES, Expect.LINE, Expect.STATS, Expect.META, Expect.META, Expect.META,
         Expect.VALUES, Expect.VALUES]


def _parse(chunks: list[bytes], keep: bool = True) -> list[tc.TextReply]:
    p = tc.TextReplyParser(keep)
    for k in KINDS:
        p.expect(k)
    out: list[tc.TextReply] = []
    for c in chunks:
        out += p.feed(c)
    assert p.pending == 0
    return out


def test_every_shape() -> None:
    r = _parse([STREAM])
    assert r[0] == tc.LineReply(b"STORED", b"STORED\r\n")
    assert isinstance(r[1], tc.ValuesReply)
    assert r[1].values == [tc.Value(b"a", 5, b"abc", 17), tc.Value(b"b", 0, b"", 18)]
    assert r[2].line == b"42"  # type: ignore[union-attr]
    assert isinstance(r[3], tc.StatsReply) and r[3].stats == [(b"pid", b"1"), (b"version", b"1.6")]
    assert r[4] == tc.MetaReply(b"VA", [b"f1", b"c9"], b"hi", b"VA 2 f1 c9\r\nhi\r\n")
    assert isinstance(r[5], tc.MetaReply) and r[5].code == b"EN"
    assert isinstance(r[6], tc.MetaReply) and r[6].flags == [b"O1"]
    assert isinstance(r[7], tc.LineReply) and r[7].is_error  # an error ends a retrieval
    assert isinstance(r[8], tc.ValuesReply) and r[8].values == []
    assert b"".join(x.raw for x in r) == STREAM


@given(st.lists(st.integers(0, len(STREAM)), max_size=10))
def test_split_anywhere(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert _parse(chunks) == _parse([STREAM])


def _counted(reply: tc.TextReply) -> tc.TextReply:
    """What a parser with keep=False makes of a reply: values all UNKEPT, no raw bytes."""
    if isinstance(reply, tc.ValuesReply):
        return tc.ValuesReply([tc.UNKEPT] * len(reply.values), b"")
    return reply._replace(raw=b"")


@given(st.lists(st.integers(0, len(STREAM)), max_size=10))
def test_counting_parser_frames_the_same_replies(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert _parse(chunks, keep=False) == [_counted(r) for r in _parse([STREAM])]


def test_unexpected_and_unsolicited_data_raise() -> None:
    p = tc.TextReplyParser()
    p.expect(Expect.VALUES)
    with pytest.raises(ProtocolError):
        p.feed(b"STORED\r\n")
    with pytest.raises(ProtocolError):
        tc.TextReplyParser().feed(b"STORED\r\n")


@given(st.binary(max_size=300), st.lists(st.sampled_from(list(Expect)), max_size=5))
def test_garbage_only_raises_protocol_error(data: bytes, kinds: list[Expect]) -> None:
    p = tc.TextReplyParser()
    for k in kinds:
        p.expect(k)
    try:
        p.feed(data)
    except ProtocolError:
        pass


@pytest.mark.parametrize("server", ["memcached", "hoard"])
def test_encoders_against_real_servers(server: str) -> None:
    start = memcached if server == "memcached" else hoard_server
    with start() as port:
        s = socket.create_connection(("127.0.0.1", port))
        reqs = [
            (tc.encode_store(b"set", b"k", b"v1", flags=3), Expect.LINE),
            (tc.encode_get([b"k", b"x"], cas=True), Expect.VALUES),
            (tc.encode_store(b"append", b"k", b"+"), Expect.LINE),
            (tc.encode_store(b"set", b"n", b"5", noreply=True), Expect.NONE),
            (tc.encode_arith(b"n", 2), Expect.LINE),
            (tc.encode_touch(b"k", 100), Expect.LINE),
            (tc.encode_get([b"k"], touch=50), Expect.VALUES),
            (tc.encode_meta(b"ms", b"m", [b"T0", b"F4"], b"meta"), Expect.META),
            (tc.encode_meta(b"mg", b"m", [b"v", b"f"]), Expect.META),
            (tc.encode_delete(b"k"), Expect.LINE),
            (b"stats\r\n", Expect.STATS),
            (tc.encode_flush_all(), Expect.LINE),
            (tc.encode_meta(b"mn", b"", []), Expect.META),
        ]
        p = tc.TextReplyParser()
        for _, kind in reqs:
            p.expect(kind)
        s.sendall(b"".join(d for d, _ in reqs))
        out: list[tc.TextReply] = []
        while p.pending:
            out += p.feed(s.recv(65536))
        s.close()
    lines = [r.line if isinstance(r, tc.LineReply) else r for r in out]
    assert lines[0] == b"STORED"
    assert isinstance(out[1], tc.ValuesReply) and [v[:3] for v in out[1].values] == [(b"k", 3, b"v1")]
    assert out[1].values[0].cas > 0
    assert lines[2] == b"STORED" and lines[3] == b"7" and lines[4] == b"TOUCHED"
    assert isinstance(out[5], tc.ValuesReply) and out[5].values[0].value == b"v1+"
    assert isinstance(out[7], tc.MetaReply) and out[7].value == b"meta" and out[7].flags == [b"f4"]
    assert lines[8] == b"DELETED" and isinstance(out[9], tc.StatsReply) and lines[10] == b"OK"
    assert isinstance(out[11], tc.MetaReply) and out[11].code == b"MN"
