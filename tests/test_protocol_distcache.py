"""Tests for the sans-IO distcache codec (scatterhoard.protocol.distcache)."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scatterhoard.errors import ProtocolError
from scatterhoard.protocol import distcache as dc
from scatterhoard.protocol.distcache import (
    AddRequest,
    DistcacheParser,
    FramingError,
    GetRequest,
    HaveRequest,
    Message,
    RemoveRequest,
    Response,
)

HDR = struct.Struct(">IBIBBBH")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def frame(data: bytes = b"", *, level: int = 0x00110000, resp: int = 0, uid: int = 1, op_class: int = 0,
          op: int = dc.OP_GET, complete: int = 1, dlen: int | None = None) -> bytes:
    """One raw frame with every header field under the test's control."""
    return HDR.pack(level, resp, uid, op_class, op, complete, len(data) if dlen is None else dlen) + data


def add_payload(timeout: int, id_len: int, sid: bytes, data: bytes) -> bytes:
    return struct.pack(">II", timeout, id_len) + sid + data


def split_feed(parser: DistcacheParser, stream: bytes, cuts: list[int]) -> list[Message]:
    out: list[Message] = []
    prev = 0
    for cut in sorted(cuts) + [len(stream)]:
        out.extend(parser.feed(stream[prev:cut]))
        prev = cut
    return out


def frames_of(wire: bytes) -> list[tuple[int, int, int, int, int, int, int]]:
    """Walk an encoded message and return every frame header."""
    headers = []
    pos = 0
    while pos < len(wire):
        h = HDR.unpack_from(wire, pos)
        headers.append(h)
        pos += 14 + h[6]
    assert pos == len(wire)
    return headers


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def test_header_layout() -> None:
    wire = dc.encode_get(0x01020304, b"sid")
    assert wire == bytes.fromhex("00110000" "00" "01020304" "00" "01" "01" "0003") + b"sid"
    assert dc.HEADER_SIZE == 14


def test_empty_payload_is_one_final_frame() -> None:
    wire = dc.encode_message(False, 9, dc.OP_HAVE, b"")
    assert wire == HDR.pack(0x00110000, 0, 9, 0, dc.OP_HAVE, 1, 0)


@pytest.mark.parametrize(
    ("size", "lens"),
    [
        (1, [1]),
        (2047, [2047]),
        (2048, [2048]),
        (2049, [2048, 1]),
        (4096, [2048, 2048]),
        (4097, [2048, 2048, 1]),
        (30721, [2048] * 15 + [1]),
        (32767, [2048] * 15 + [2047]),
        (32768, [2048] * 16),
    ],
)
def test_frame_split_boundaries(size: int, lens: list[int]) -> None:
    payload = random.Random(size).randbytes(size)
    wire = dc.encode_message(True, 77, dc.OP_GET, payload)
    headers = frames_of(wire)
    assert [h[6] for h in headers] == lens
    assert [h[5] for h in headers] == [0] * (len(lens) - 1) + [1]
    assert all(h[0] == 0x00110000 and h[1] == 1 and h[2] == 77 and h[3] == 0 and h[4] == 1 for h in headers)
    parser = DistcacheParser("client")
    assert parser.feed(wire) == [Message(True, 77, dc.OP_GET, payload)]
    assert parser.buffered == 0 and not parser.in_message


def test_encode_rejects_oversized_payload() -> None:
    with pytest.raises(ValueError, match="32769"):
        dc.encode_message(False, 1, dc.OP_GET, bytes(32769))
    with pytest.raises(ValueError):
        dc.encode_get_reply(1, bytes(32769))
    # ADD: 8 header bytes + id + data must fit in 32768.
    dc.encode_add(1, b"i" * 8, bytes(32768 - 16), 1000)
    with pytest.raises(ValueError):
        dc.encode_add(1, b"i" * 8, bytes(32768 - 15), 1000)


@pytest.mark.parametrize(
    "call",
    [
        lambda: dc.encode_message(False, -1, dc.OP_GET, b"x"),
        lambda: dc.encode_message(False, 2**32, dc.OP_GET, b"x"),
        lambda: dc.encode_message(False, 1, 4, b"x"),
        lambda: dc.encode_message(False, 1, -1, b"x"),
        lambda: dc.encode_add(1, b"id", b"d", -1),
        lambda: dc.encode_add(1, b"id", b"d", 2**32),
        lambda: dc.encode_result(1, dc.OP_ADD, 256),
        lambda: dc.encode_result(1, dc.OP_ADD, -1),
        lambda: dc.encode_get_reply(1, b""),
    ],
)
def test_encode_argument_errors(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_encode_helpers() -> None:
    assert dc.encode_add(5, b"sid", b"DATA", 300) == frame(
        add_payload(300, 3, b"sid", b"DATA"), uid=5, op=dc.OP_ADD
    )
    assert dc.encode_get(5, b"sid") == frame(b"sid", uid=5, op=dc.OP_GET)
    assert dc.encode_remove(5, b"sid") == frame(b"sid", uid=5, op=dc.OP_REMOVE)
    assert dc.encode_have(5, b"sid") == frame(b"sid", uid=5, op=dc.OP_HAVE)
    assert dc.encode_result(5, dc.OP_ADD, 101) == frame(b"\x65", uid=5, op=dc.OP_ADD, resp=1)
    assert dc.encode_get_reply(5, None) == frame(b"\x01", uid=5, op=dc.OP_GET, resp=1)
    assert dc.encode_get_reply(5, b"sess") == frame(b"sess", uid=5, op=dc.OP_GET, resp=1)
    # Any buffer type is accepted, including non-byte memoryviews.
    assert dc.encode_get(5, bytearray(b"sid")) == dc.encode_get(5, memoryview(b"sid"))
    big = bytes(range(256)) * 20
    assert dc.encode_get_reply(5, memoryview(big).cast("H")) == dc.encode_get_reply(5, big)


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------

payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, seed: random.Random(seed).randbytes(n),
              st.integers(0, dc.MAX_PAYLOAD), st.integers(0, 2**32)),
    st.sampled_from([b"", bytes(2048), bytes(2049), bytes(4096), bytes(32767), bytes(32768)]),
)
messages = st.builds(
    lambda uid, op, payload: (uid, op, payload),
    st.integers(0, dc.MAX_UID), st.sampled_from([0, 1, 2, 3]), payloads,
)


@SETTINGS
@given(st.booleans(), st.lists(messages, min_size=1, max_size=6), st.data())
def test_roundtrip_random_splits(is_response: bool, msgs: list[tuple[int, int, bytes]],
                                 data: st.DataObject) -> None:
    stream = b"".join(dc.encode_message(is_response, uid, op, p) for uid, op, p in msgs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    parser = DistcacheParser("client" if is_response else "server")
    got = split_feed(parser, stream, cuts)
    assert got == [Message(is_response, uid, op, p) for uid, op, p in msgs]
    assert parser.buffered == 0 and not parser.in_message


def test_byte_at_a_time_pipeline() -> None:
    msgs = [(i, i % 4, bytes([i]) * (i * 700)) for i in range(12)]
    stream = b"".join(dc.encode_message(False, u, o, p) for u, o, p in msgs)
    parser = DistcacheParser()
    got: list[Message] = []
    for i in range(len(stream)):
        got.extend(parser.feed(stream[i:i + 1]))
        if i + 1 < len(stream):
            assert parser.in_message or got
    assert got == [Message(False, u, o, p) for u, o, p in msgs]


def test_feed_accepts_buffer_types() -> None:
    wire = dc.encode_get(3, b"x" * 5000) * 2
    for chunk in (bytearray(wire), memoryview(wire), memoryview(bytearray(wire))):
        assert len(DistcacheParser().feed(chunk)) == 2
    # A caller reusing its receive buffer must not corrupt what the parser kept.
    parser = DistcacheParser()
    rx = bytearray(wire[:3000])
    assert parser.feed(rx) == []
    rx[:] = b"\xff" * len(rx)
    assert parser.feed(wire[3000:]) == [Message(False, 3, dc.OP_GET, b"x" * 5000)] * 2


def test_proto_level_low_bits_ignored() -> None:
    parser = DistcacheParser()
    assert parser.feed(frame(b"a", level=0x0011ABCD)) == [Message(False, 1, dc.OP_GET, b"a")]


def test_partial_state_reporting() -> None:
    wire = dc.encode_get(1, bytes(5000))
    parser = DistcacheParser()
    assert parser.feed(wire[:2100]) == []
    assert parser.in_message
    assert parser.buffered == 2048 + (2100 - 14 - 2048 - 14) + 14
    assert parser.feed(wire[2100:]) == [Message(False, 1, dc.OP_GET, bytes(5000))]
    assert parser.buffered == 0


# --------------------------------------------------------------------------
# Framing violations
# --------------------------------------------------------------------------

FULL = bytes(2048)

VIOLATIONS: dict[str, tuple[str, bytes, str]] = {
    "proto_level": ("server", frame(b"x", level=0x00120000), "proto_level"),
    "proto_level_zero": ("server", frame(b"x", level=0), "proto_level"),
    "is_response_2": ("server", frame(b"x", resp=2), "is_response"),
    "is_response_255_client": ("client", frame(b"x", resp=255), "is_response"),
    "response_to_server": ("server", frame(b"x", resp=1), "response"),
    "request_to_client": ("client", frame(b"x", resp=0), "request"),
    "op_class": ("server", frame(b"x", op_class=1), "op_class"),
    "operation_4": ("server", frame(b"x", op=4), "operation"),
    "operation_255": ("client", frame(b"x", op=255, resp=1), "operation"),
    "data_len_2049": ("server", frame(bytes(2049)), "2049"),
    "data_len_65535": ("server", frame(dlen=65535), "65535"),
    "short_non_final": ("server", frame(b"x", complete=0) + frame(b"y"), "non-final"),
    "empty_non_final": ("server", frame(b"", complete=0), "non-final"),
    "complete_2": ("server", frame(b"x", complete=2), "complete"),
    "uid_change": ("server", frame(FULL, complete=0, uid=1) + frame(b"y", uid=2), "interleaved"),
    "op_change": ("server", frame(FULL, complete=0, op=1) + frame(b"y", op=2), "interleaved"),
    "over_32768": ("server", frame(FULL, complete=0) * 16 + frame(b"y"), "32768"),
    "17_frames_empty_last": ("server", frame(FULL, complete=0) * 16 + frame(b""), "32768"),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_framing_violation(name: str) -> None:
    side, stream, needle = VIOLATIONS[name]
    parser = DistcacheParser(side)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError) as info:
        parser.feed(stream)
    msg = str(info.value)
    assert needle in msg
    assert "\n" not in msg
    assert parser.failed
    with pytest.raises(ProtocolError, match="already failed"):
        parser.feed(dc.encode_get(1, b"ok"))


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_framing_violation_byte_by_byte(name: str) -> None:
    side, stream, _ = VIOLATIONS[name]
    parser = DistcacheParser(side)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        for i in range(len(stream)):
            assert parser.feed(stream[i:i + 1]) == []


def test_header_errors_detected_before_payload() -> None:
    # A bad header is refused as soon as its 14 bytes are in, without waiting for data_len bytes.
    parser = DistcacheParser()
    with pytest.raises(FramingError, match="65535"):
        parser.feed(frame(dlen=65535))
    parser = DistcacheParser()
    parser.feed(frame(FULL, complete=0) * 15)
    with pytest.raises(FramingError, match="32768"):
        parser.feed(frame(dlen=2048, complete=0))


def test_sixteen_frames_is_the_limit() -> None:
    ok = frame(FULL, complete=0) * 15 + frame(FULL)
    assert DistcacheParser().feed(ok) == [Message(False, 1, dc.OP_GET, bytes(32768))]


def test_violation_keeps_earlier_messages_and_offset() -> None:
    good = dc.encode_get(1, b"a") + dc.encode_have(2, b"b")
    parser = DistcacheParser()
    with pytest.raises(FramingError) as info:
        parser.feed(good + frame(b"x", op_class=3))
    assert info.value.messages == [Message(False, 1, dc.OP_GET, b"a"), Message(False, 2, dc.OP_HAVE, b"b")]
    assert f"offset {len(good)}" in str(info.value)


def test_parser_side_argument() -> None:
    assert DistcacheParser().side == "server"
    with pytest.raises(ValueError):
        DistcacheParser("proxy")  # type: ignore[arg-type]


@SETTINGS
@given(st.sampled_from(["server", "client"]), st.binary(max_size=3000), st.data())
def test_garbage_only_raises_protocol_error(side: str, junk: bytes, data: st.DataObject) -> None:
    parser = DistcacheParser(side)  # type: ignore[arg-type]
    cuts = data.draw(st.lists(st.integers(0, len(junk)), max_size=5))
    try:
        msgs = split_feed(parser, junk, cuts)
    except ProtocolError:
        return
    for m in msgs:
        dc.describe(m)


@SETTINGS
@given(st.booleans(), st.lists(messages, min_size=1, max_size=3), st.data())
def test_corrupted_streams_only_raise_protocol_error(is_response: bool, msgs: list[tuple[int, int, bytes]],
                                                     data: st.DataObject) -> None:
    stream = bytearray(b"".join(dc.encode_message(is_response, u, o, p) for u, o, p in msgs))
    for _ in range(data.draw(st.integers(1, 4))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    parser = DistcacheParser("client" if is_response else "server")
    try:
        got = split_feed(parser, bytes(stream), data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    except ProtocolError:
        return
    for m in got:
        dc.describe(m)
        try:
            dc.decode_response(m) if m.is_response else dc.decode_request(m)
        except ProtocolError:
            pass


# --------------------------------------------------------------------------
# ADD validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", dc.RESULT_ADD_CORRUPT),
        (bytes(7), dc.RESULT_ADD_CORRUPT),
        (bytes(8), dc.RESULT_ADD_CORRUPT),  # id_len 0 >= 0 remaining: corrupt, not 103
        (add_payload(1, 3, b"sid", b""), dc.RESULT_ADD_CORRUPT),  # empty data is 100, not 104
        (add_payload(1, 4, b"sid", b"d"), dc.RESULT_ADD_CORRUPT),
        (add_payload(1, 0xFFFFFFFF, b"sid", b"d"), dc.RESULT_ADD_CORRUPT),
        (add_payload(0xFFFFFFFF, 3, b"sid", b""), dc.RESULT_ADD_CORRUPT),  # 100 before 102
        (add_payload(604_800_001, 3, b"sid", b"d"), dc.RESULT_ADD_TIMEOUT),
        (add_payload(0xFFFFFFFF, 0, b"", b"d"), dc.RESULT_ADD_TIMEOUT),  # 102 before 103
        (add_payload(0xFFFFFFFF, 0, b"", bytes(40000)), dc.RESULT_ADD_TIMEOUT),  # 102 before 104
        (add_payload(1, 0, b"", b"d"), dc.RESULT_ADD_ID_LEN),
        (add_payload(1, 65, b"i" * 65, b"d"), dc.RESULT_ADD_ID_LEN),
        (add_payload(1, 65, b"i" * 65, bytes(40000)), dc.RESULT_ADD_ID_LEN),  # 103 before 104
        (add_payload(1, 3, b"sid", bytes(32769)), dc.RESULT_ADD_DATA_LEN),  # only reachable off-wire
    ],
)
def test_check_add_codes(payload: bytes, code: int) -> None:
    assert dc.check_add(payload) == code


def test_check_add_accepts_limits() -> None:
    assert dc.check_add(add_payload(604_800_000, 64, b"i" * 64, b"d")) == AddRequest(
        0, 604_800_000, b"i" * 64, b"d"
    )
    assert dc.check_add(add_payload(0, 1, b"i", bytes(32768))) == AddRequest(0, 0, b"i", bytes(32768))
    assert dc.check_add(bytearray(add_payload(5, 1, b"i", b"dd"))) == AddRequest(0, 5, b"i", b"dd")


def test_largest_wire_add() -> None:
    wire = dc.encode_add(4, b"i" * 64, bytes(32768 - 8 - 64), 1)
    (msg,) = DistcacheParser().feed(wire)
    assert dc.decode_request(msg) == AddRequest(4, 1, b"i" * 64, bytes(32768 - 8 - 64))


@SETTINGS
@given(st.binary(max_size=200))
def test_check_add_total(payload: bytes) -> None:
    res = dc.check_add(payload)
    assert isinstance(res, AddRequest) or res in (100, 102, 103, 104)
    if isinstance(res, AddRequest):
        assert add_payload(res.timeout_ms, len(res.session_id), res.session_id, res.data) == payload


# --------------------------------------------------------------------------
# Typed decoding
# --------------------------------------------------------------------------


def test_decode_request() -> None:
    msgs = DistcacheParser().feed(
        dc.encode_add(1, b"sid", b"data", 5000) + dc.encode_get(2, b"sid") + dc.encode_remove(3, b"sid")
        + dc.encode_have(4, b"sid") + dc.encode_add(5, b"", b"data", 5000)
    )
    assert [dc.decode_request(m) for m in msgs] == [
        AddRequest(1, 5000, b"sid", b"data"),
        GetRequest(2, b"sid"),
        RemoveRequest(3, b"sid"),
        HaveRequest(4, b"sid"),
        dc.RESULT_ADD_ID_LEN,
    ]
    with pytest.raises(ValueError):
        dc.decode_request(Message(True, 1, dc.OP_GET, b""))
    with pytest.raises(ValueError):
        dc.decode_request(Message(False, 1, 9, b""))


def test_decode_response() -> None:
    msgs = DistcacheParser("client").feed(
        dc.encode_result(1, dc.OP_ADD, dc.RESULT_ADD_DUPLICATE)
        + dc.encode_get_reply(2, b"session")
        + dc.encode_get_reply(3, None)
        + dc.encode_result(4, dc.OP_GET, dc.RESULT_DISCONNECTED)
        + dc.encode_result(5, dc.OP_REMOVE, dc.RESULT_OK)
        + dc.encode_result(6, dc.OP_HAVE, dc.RESULT_NOTOK)
        + dc.encode_get_reply(7, bytes(20000))
    )
    assert [dc.decode_response(m) for m in msgs] == [
        Response(1, dc.OP_ADD, 101, None),
        Response(2, dc.OP_GET, 0, b"session"),
        Response(3, dc.OP_GET, 1, None),
        Response(4, dc.OP_GET, 2, None),
        Response(5, dc.OP_REMOVE, 0, None),
        Response(6, dc.OP_HAVE, 1, None),
        Response(7, dc.OP_GET, 0, bytes(20000)),
    ]


@pytest.mark.parametrize(
    "msg",
    [Message(True, 1, dc.OP_GET, b""), Message(True, 1, dc.OP_HAVE, b""),
     Message(True, 1, dc.OP_ADD, b"\x00\x00")],
)
def test_decode_response_malformed(msg: Message) -> None:
    with pytest.raises(ProtocolError):
        dc.decode_response(msg)


def test_decode_response_wrong_direction() -> None:
    with pytest.raises(ValueError):
        dc.decode_response(Message(False, 1, dc.OP_GET, b"x"))


# --------------------------------------------------------------------------
# describe()
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "text"),
    [
        (Message(False, 7, dc.OP_ADD, add_payload(300, 3, b"sid", b"data")),
         "request uid=7 ADD timeout_ms=300 id_len=3 data_len=4"),
        (Message(False, 7, dc.OP_ADD, b"\x00"), "request uid=7 ADD payload_len=1 invalid=ADD_CORRUPT(100)"),
        (Message(False, 7, dc.OP_ADD, add_payload(300, 0, b"", b"data")),
         "request uid=7 ADD timeout_ms=300 id_len=0 data_len=4 invalid=ADD_ID_LEN(103)"),
        (Message(False, 8, dc.OP_GET, b"sid"), "request uid=8 GET id_len=3"),
        (Message(False, 8, dc.OP_REMOVE, b"sid"), "request uid=8 REMOVE id_len=3"),
        (Message(False, 8, dc.OP_HAVE, b""), "request uid=8 HAVE id_len=0"),
        (Message(True, 9, dc.OP_ADD, b"\x65"), "response uid=9 ADD result=ADD_DUPLICATE(101)"),
        (Message(True, 9, dc.OP_HAVE, b"\x00"), "response uid=9 HAVE result=OK(0)"),
        (Message(True, 9, dc.OP_REMOVE, b"\x07"), "response uid=9 REMOVE result=UNKNOWN(7)"),
        (Message(True, 9, dc.OP_REMOVE, b""), "response uid=9 REMOVE payload_len=0 malformed"),
        (Message(True, 9, dc.OP_GET, b"\x01"), "response uid=9 GET result=NOTOK(1)"),
        (Message(True, 9, dc.OP_GET, b"\x02"), "response uid=9 GET result=DISCONNECTED(2)"),
        (Message(True, 9, dc.OP_GET, b"sess"), "response uid=9 GET result=OK(0) data_len=4"),
        (Message(True, 9, dc.OP_GET, b""), "response uid=9 GET payload_len=0 malformed"),
        (Message(True, 9, 42, b"\x00"), "response uid=9 op42 result=OK(0)"),
    ],
)
def test_describe(msg: Message, text: str) -> None:
    assert dc.describe(msg) == text
