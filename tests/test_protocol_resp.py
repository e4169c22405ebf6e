"""The sans-IO RESP codec: round trips, RESP2 downgrades, inline commands,
limits and redis's error texts, garbage input, and a real redis-server."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scatterhoard.errors import ProtocolError
from scatterhoard.protocol.resp import (
    NULL_BULK,
    OK,
    Attributed,
    BigNumber,
    BlobError,
    Error,
    Push,
    RequestParser,
    RespParser,
    RespProtocolError,
    RespSet,
    RespValue,
    SimpleString,
    Verbatim,
    array,
    array_header,
    bulk,
    decode,
    double,
    encode,
    encode_command,
    encode_commands,
    error,
    integer,
    null_bulk,
    ok,
    simple,
    split_inline,
)
from tests.support import free_port, require_binary, running

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
LINE = st.binary(max_size=24).map(lambda b: b.replace(b"\r", b"r").replace(b"\n", b"n"))


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def same(a: object, b: object) -> bool:
    """Equal, with the same types all the way down (nan equals nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        return repr(a) == repr(b)
    if isinstance(a, list | tuple):
        assert isinstance(b, list | tuple)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return len(a) == len(b) and all(
            same(k1, k2) and same(v1, v2)
            for (k1, v1), (k2, v2) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, Attributed):
        assert isinstance(b, Attributed)
        return same(a.value, b.value) and same(a.attributes, b.attributes)
    return a == b


def split_at(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    prev = 0
    for cut in sorted(cuts):
        yield data[prev:cut]
        prev = cut
    yield data[prev:]


def feed_all(parser: RespParser | RequestParser, chunks: Iterator[bytes] | list[bytes]) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def cuts_for(data: st.DataObject, wire: bytes) -> list[int]:
    return data.draw(st.lists(st.integers(0, len(wire)), max_size=8), label="cuts")


# ---------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------

KEYS = st.one_of(st.binary(max_size=8), INT64, st.builds(SimpleString, LINE))

SCALARS2 = st.one_of(
    st.binary(max_size=40), st.builds(SimpleString, LINE), st.builds(Error, LINE), INT64, st.none())

SCALARS3 = st.one_of(
    SCALARS2,
    st.builds(BlobError, st.binary(max_size=20)),
    st.builds(BigNumber, st.integers(min_value=-(10**40), max_value=10**40)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.builds(Verbatim, st.sampled_from([b"txt", b"mkd"]), st.binary(max_size=20)),
)

VALUES2 = st.recursive(SCALARS2, lambda kids: st.lists(kids, max_size=5), max_leaves=20)


def _containers3(kids: st.SearchStrategy[RespValue]) -> st.SearchStrategy[RespValue]:
    return st.one_of(
        st.lists(kids, max_size=5),
        st.lists(kids, max_size=5).map(RespSet),
        st.lists(kids, max_size=5).map(Push),
        st.dictionaries(KEYS, kids, max_size=4),
        st.builds(Attributed, kids, st.dictionaries(KEYS, kids, max_size=2)),
    )


VALUES3 = st.recursive(SCALARS3, _containers3, max_leaves=25)


def downgrade(value: RespValue) -> RespValue:
    """What a RESP2 peer parses back from ``encode(value, resp3=False)``."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return double(value).split(b"\r\n")[1]
    if isinstance(value, dict):
        flat: list[RespValue] = []
        for key, item in value.items():
            flat += [downgrade(key), downgrade(item)]
        return flat
    if isinstance(value, list):
        return [downgrade(item) for item in value]
    if isinstance(value, Verbatim):
        return value.text
    if isinstance(value, BigNumber):
        return str(value.value).encode()
    if isinstance(value, Error):
        return Error(value.message.replace(b"\r\n", b" ").replace(b"\r", b" ").replace(b"\n", b" "))
    if isinstance(value, Attributed):
        return downgrade(value.value)
    return value


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------

@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES3, data=st.data())
def test_resp3_round_trip_any_split(value: RespValue, data: st.DataObject) -> None:
    wire = encode(value, resp3=True)
    out = feed_all(RespParser(keep_attributes=True), split_at(wire, cuts_for(data, wire)))
    assert len(out) == 1
    assert same(out[0], value), (out[0], value)


@settings(max_examples=200)
@given(value=VALUES2, data=st.data())
def test_resp2_round_trip_any_split(value: RespValue, data: st.DataObject) -> None:
    wire = encode(value)
    out = feed_all(RespParser(), split_at(wire, cuts_for(data, wire)))
    assert len(out) == 1
    assert same(out[0], value)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES3, data=st.data())
def test_resp2_downgrade_of_any_value(value: RespValue, data: st.DataObject) -> None:
    wire = encode(value, resp3=False)
    assert not any(wire.startswith(t) for t in (b"%", b"~", b">", b",", b"#", b"_", b"(", b"=", b"!", b"|"))
    out = feed_all(RespParser(), split_at(wire, cuts_for(data, wire)))
    assert len(out) == 1
    assert same(out[0], downgrade(value)), (out[0], downgrade(value))


@settings(max_examples=100)
@given(values=st.lists(VALUES3, min_size=1, max_size=6), data=st.data())
def test_pipelined_values_in_one_stream(values: list[RespValue], data: st.DataObject) -> None:
    wire = b"".join(encode(v, resp3=True) for v in values)
    out = feed_all(RespParser(keep_attributes=True), split_at(wire, cuts_for(data, wire)))
    assert same(out, values)


@settings(max_examples=200)
@given(commands=st.lists(st.lists(st.binary(max_size=30), min_size=1, max_size=6), min_size=1, max_size=5),
       data=st.data())
def test_request_round_trip_any_split(commands: list[list[bytes]], data: st.DataObject) -> None:
    wire = encode_commands(commands)
    parser = RequestParser()
    out = feed_all(parser, split_at(wire, cuts_for(data, wire)))
    assert out == commands
    assert all(type(arg) is bytes for cmd in out for arg in cmd)  # type: ignore[attr-defined]
    assert parser.buffered == 0


@given(commands=st.lists(st.lists(st.binary(max_size=10), min_size=1, max_size=4), min_size=1, max_size=4))
def test_request_one_byte_at_a_time(commands: list[list[bytes]]) -> None:
    wire = encode_commands(commands)
    out = feed_all(RequestParser(), [wire[i:i + 1] for i in range(len(wire))])
    assert out == commands


def test_attributes_are_skipped_by_default() -> None:
    wire = b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n"
    assert RespParser().feed(wire) == [[2039123, 9543892]]
    kept = RespParser(keep_attributes=True).feed(wire)
    assert kept == [Attributed([2039123, 9543892],
                               {SimpleString(b"key-popularity"): {b"a": 0.1923, b"b": 0.0012}})]
    inner = b"*3\r\n:1\r\n:2\r\n|1\r\n+ttl\r\n:3600\r\n:3\r\n"
    assert RespParser().feed(inner) == [[1, 2, 3]]
    assert RespParser(keep_attributes=True).feed(inner) == [[1, 2, Attributed(3, {SimpleString(b"ttl"): 3600})]]


def test_spec_examples_parse() -> None:
    cases: list[tuple[bytes, RespValue]] = [
        (b"$11\r\nhello world\r\n", b"hello world"),
        (b"$0\r\n\r\n", b""),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"*0\r\n", []),
        (b"_\r\n", None),
        (b"+hello world\r\n", SimpleString(b"hello world")),
        (b"-ERR this is the error description\r\n", Error(b"ERR this is the error description")),
        (b":1234\r\n", 1234),
        (b":-1234\r\n", -1234),
        (b":+5\r\n", 5),
        (b",1.23\r\n", 1.23),
        (b",10\r\n", 10.0),
        (b",1.5e3\r\n", 1500.0),
        (b",inf\r\n", math.inf),
        (b",-inf\r\n", -math.inf),
        (b"#t\r\n", True),
        (b"#f\r\n", False),
        (b"!21\r\nSYNTAX invalid syntax\r\n", BlobError(b"SYNTAX invalid syntax")),
        (b"=15\r\ntxt:Some string\r\n", Verbatim(b"txt", b"Some string")),
        (b"(3492890328409238509324850943850943825024385\r\n",
         BigNumber(3492890328409238509324850943850943825024385)),
        (b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", {SimpleString(b"first"): 1, SimpleString(b"second"): 2}),
        (b"~5\r\n+orange\r\n+apple\r\n#t\r\n:100\r\n:999\r\n",
         RespSet([SimpleString(b"orange"), SimpleString(b"apple"), True, 100, 999])),
        (b">4\r\n+pubsub\r\n+message\r\n+somechannel\r\n+this is the message\r\n",
         Push([SimpleString(b"pubsub"), SimpleString(b"message"), SimpleString(b"somechannel"),
               SimpleString(b"this is the message")])),
        (b"*2\r\n*3\r\n:1\r\n$5\r\nhello\r\n:2\r\n#f\r\n", [[1, b"hello", 2], False]),
        (b"%1\r\n*2\r\n:1\r\n:2\r\n$1\r\nx\r\n", {(1, 2): b"x"}),
    ]
    for wire, expected in cases:
        assert same(decode(wire), expected), wire
    assert math.isnan(decode(b",nan\r\n"))  # type: ignore[arg-type]
    assert math.isnan(decode(b",-nan\r\n"))  # type: ignore[arg-type]  # what redis 7.0 sends


def test_value_types_are_distinct() -> None:
    assert SimpleString(b"OK") != b"OK"
    assert Error(b"ERR x") != BlobError(b"ERR x")
    assert Push([1]) != [1] and RespSet([1]) != [1] and Push([1]) != RespSet([1])
    assert RespSet([1]) == RespSet([1])
    assert BigNumber(5) != 5
    assert {SimpleString(b"a"): 1, b"a": 2, BigNumber(1): 3, 1: 4}.__len__() == 4
    assert Error(b"WRONGTYPE Operation against a key").code == "WRONGTYPE"
    assert Push([b"message", b"ch", b"x"]).kind == b"message"


# ---------------------------------------------------------------------------
# encoders
# ---------------------------------------------------------------------------

def test_encode_command() -> None:
    assert encode_command("SET", b"k", 10, 2.5) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n10\r\n$3\r\n2.5\r\n"
    assert encode_command("GET", "\u00e9") == b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"
    assert encode_command(bytearray(b"a"), memoryview(b"bc")) == b"*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
    big = b"x" * 100_000
    assert encode_command("SET", "k", big) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n" + big + b"\r\n"
    with pytest.raises(TypeError):
        encode_command("SET", "k", True)
    with pytest.raises(TypeError):
        encode_command("SET", "k", None)  # type: ignore[arg-type]


def test_fast_helpers() -> None:
    assert ok() == OK == b"+OK\r\n"
    assert bulk(b"abc") == b"$3\r\nabc\r\n" and bulk("é") == b"$2\r\n\xc3\xa9\r\n"
    assert null_bulk() == NULL_BULK == b"$-1\r\n" and null_bulk(resp3=True) == b"_\r\n"
    assert integer(-7) == b":-7\r\n"
    assert error("ERR bad\r\nthing") == b"-ERR bad thing\r\n"
    assert simple("PONG") == b"+PONG\r\n"
    assert array([b"a", None, "b"]) == b"*3\r\n$1\r\na\r\n$-1\r\n$1\r\nb\r\n"
    assert array([]) == b"*0\r\n"
    assert array([None], resp3=True) == b"*1\r\n_\r\n"
    assert array_header(2) + bulk(b"x") + integer(1) == encode([b"x", 1])
    with pytest.raises(ValueError):
        simple(b"a\r\nb")


def test_encode_resp3_and_resp2_downgrades_bytes() -> None:
    value: RespValue = {b"a": 1.5, b"s": RespSet([b"x"]), b"t": True, b"f": False, b"n": None}
    assert encode(value, resp3=True) == (
        b"%5\r\n$1\r\na\r\n,1.5\r\n$1\r\ns\r\n~1\r\n$1\r\nx\r\n$1\r\nt\r\n#t\r\n"
        b"$1\r\nf\r\n#f\r\n$1\r\nn\r\n_\r\n")
    assert encode(value) == (
        b"*10\r\n$1\r\na\r\n$3\r\n1.5\r\n$1\r\ns\r\n*1\r\n$1\r\nx\r\n$1\r\nt\r\n:1\r\n"
        b"$1\r\nf\r\n:0\r\n$1\r\nn\r\n$-1\r\n")
    assert encode(math.inf) == b"$3\r\ninf\r\n" and encode(-math.inf, resp3=True) == b",-inf\r\n"
    assert encode(math.nan, resp3=True) == b",nan\r\n"
    assert encode(Push([b"message"]), resp3=True) == b">1\r\n$7\r\nmessage\r\n"
    assert encode(Push([b"message"])) == b"*1\r\n$7\r\nmessage\r\n"
    assert encode(Verbatim(b"txt", b"hi"), resp3=True) == b"=6\r\ntxt:hi\r\n"
    assert encode(Verbatim(b"txt", b"hi")) == b"$2\r\nhi\r\n"
    assert encode(BigNumber(10**30), resp3=True) == b"(" + b"1" + b"0" * 30 + b"\r\n"
    assert encode(BigNumber(12)) == b"$2\r\n12\r\n"
    assert encode(2**70, resp3=True) == b"(1180591620717411303424\r\n"
    assert encode(BlobError(b"ERR a\r\nb"), resp3=True) == b"!8\r\nERR a\r\nb\r\n"
    assert encode(BlobError(b"ERR a\r\nb")) == b"-ERR a b\r\n"
    assert encode(Attributed(1, {b"ttl": 5}), resp3=True) == b"|1\r\n$3\r\nttl\r\n:5\r\n:1\r\n"
    assert encode(Attributed(1, {b"ttl": 5})) == b":1\r\n"
    assert encode("é") == b"$2\r\n\xc3\xa9\r\n"
    assert encode((1, 2)) == b"*2\r\n:1\r\n:2\r\n"
    assert encode(SimpleString(b"OK")) == b"+OK\r\n"
    assert encode(Error(b"ERR x")) == b"-ERR x\r\n"
    with pytest.raises(TypeError):
        encode(object())


# ---------------------------------------------------------------------------
# inline commands
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "argv"), [
    (b"PING", [b"PING"]),
    (b"SET a b", [b"SET", b"a", b"b"]),
    (b"  set   a\tb  ", [b"set", b"a", b"b"]),
    (b'SET "a b" c', [b"SET", b"a b", b"c"]),
    (b"SET 'a b' c", [b"SET", b"a b", b"c"]),
    (b'SET k "\\x41\\n\\t\\r\\b\\a\\"\\\\\\q"', [b"SET", b"k", b'A\n\t\r\x08\x07"\\q']),
    (b"SET k 'it\\'s \\n'", [b"SET", b"k", b"it's \\n"]),
    (b'SET k ""', [b"SET", b"k", b""]),
    (b'SET ab"c d"', [b"SET", b"abc d"]),
    (b'SET "\\x4"', [b"SET", b"x4"]),
    (b"a\x0bb c", [b"a\x0bb", b"c"]),
    (b"a\x00b c", [b"a"]),
    (b"", []),
    (b"   ", []),
])
def test_split_inline(line: bytes, argv: list[bytes]) -> None:
    assert split_inline(line) == argv


@pytest.mark.parametrize("line", [b'SET "a', b"SET 'a", b'SET "a"b', b"SET 'a'b", b'SET "a\\"'])
def test_split_inline_unbalanced(line: bytes) -> None:
    with pytest.raises(ProtocolError, match="^Protocol error: unbalanced quotes in request$"):
        split_inline(line)


def test_inline_requests() -> None:
    parser = RequestParser()
    assert parser.feed(b"PING\r\nSET a b\r\n") == [[b"PING"], [b"SET", b"a", b"b"]]
    assert parser.feed(b"GET a\n\r\n\n  \r\nECHO") == [[b"GET", b"a"]]
    assert parser.feed(b' "x y"') == []
    assert parser.feed(b"\r") == []
    assert parser.feed(b"\n*1\r\n$4\r\nPING\r\nPING\r\n") == [[b"ECHO", b"x y"], [b"PING"], [b"PING"]]
    assert parser.feed(b"*0\r\n*-1\r\nQUIT\r\n") == [[b"QUIT"]]
    with pytest.raises(ProtocolError, match="unbalanced quotes"):
        RequestParser().feed(b'SET "a\r\n')


# ---------------------------------------------------------------------------
# limits and redis's error texts
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("wire", "message"), [
    (b"*x\r\n", "Protocol error: invalid multibulk length"),
    (b"*-2\r\n", "Protocol error: invalid multibulk length"),
    (b"*1.5\r\n", "Protocol error: invalid multibulk length"),
    (b"*\r\n", "Protocol error: invalid multibulk length"),
    (b"*99999999999999999999999\r\n", "Protocol error: invalid multibulk length"),
    (b"*1\r\n$x\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$-5\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$1.5\r\n", "Protocol error: invalid bulk length"),
    (b"*1\r\n$" + b"9" * 5000 + b"\r\n", "Protocol error: invalid bulk length"),
    (b"*2\r\n$3\r\nGET\r\na-key\r\n", "Protocol error: expected '$', got 'a'"),
    (b"*1\r\n+hello\r\n", "Protocol error: expected '$', got '+'"),
    (b"*1\r\n\x01", "Protocol error: expected '$', got '\\x01'"),
    (b"*1\r\n$3\r\nabcXY", "Protocol error: bulk string not followed by CRLF"),
    (b'SET "a\n', "Protocol error: unbalanced quotes in request"),
])
def test_request_errors(wire: bytes, message: str) -> None:
    parser = RequestParser()
    with pytest.raises(ProtocolError) as info:
        parser.feed(wire)
    assert str(info.value) == message
    with pytest.raises(ProtocolError):  # the parser stays failed
        parser.feed(b"PING\r\n")


def test_request_limits() -> None:
    parser = RequestParser(max_bulk=10)
    assert parser.feed(b"*1\r\n$10\r\n0123456789\r\n") == [[b"0123456789"]]
    with pytest.raises(ProtocolError, match="^Protocol error: invalid bulk length$"):
        parser.feed(b"*1\r\n$11\r\n")
    with pytest.raises(ProtocolError, match="^Protocol error: invalid multibulk length$"):
        RequestParser(max_elements=3).feed(b"*4\r\n")
    with pytest.raises(ProtocolError, match="^Protocol error: too big inline request$"):
        RequestParser(max_inline=100).feed(b"x" * 101)
    inline = RequestParser(max_inline=100)
    inline.feed(b"x" * 60)
    with pytest.raises(ProtocolError, match="^Protocol error: too big inline request$"):
        inline.feed(b"x" * 60)
    with pytest.raises(ProtocolError, match="^Protocol error: too big mbulk count string$"):
        RequestParser(max_inline=100).feed(b"*" + b"1" * 200)
    with pytest.raises(ProtocolError, match="^Protocol error: too big bulk count string$"):
        RequestParser(max_inline=100).feed(b"*1\r\n$" + b"1" * 200)
    # A default parser accepts redis's own 512 MB limit, no more.
    assert RequestParser().feed(b"*1\r\n$536870912\r\n") == []
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        RequestParser().feed(b"*1\r\n$536870913\r\n")


def test_request_error_keeps_the_commands_before_it() -> None:
    with pytest.raises(RespProtocolError) as info:
        RequestParser().feed(b"PING\r\n*1\r\n$4\r\nECHO\r\n*1\r\n:1\r\n")
    assert info.value.parsed == [[b"PING"], [b"ECHO"]]


@pytest.mark.parametrize(("wire", "message"), [
    (b"$x\r\n", "Protocol error: invalid bulk length"),
    (b"$-2\r\n", "Protocol error: invalid bulk length"),
    (b"!-1\r\n", "Protocol error: invalid bulk length"),
    (b"*-2\r\n", "Protocol error: invalid multibulk length"),
    (b"%-1\r\n", "Protocol error: invalid multibulk length"),
    (b"*a\r\n", "Protocol error: invalid multibulk length"),
    (b"?\r\n", "Protocol error, got '?' as reply type byte"),
    (b":12a\r\n", "Protocol error: invalid integer"),
    (b":" + b"1" * 5000 + b"\r\n", "Protocol error: invalid integer"),
    (b",1.2.3\r\n", "Protocol error: invalid double"),
    (b",infinity\r\n", "Protocol error: invalid double"),
    (b"#x\r\n", "Protocol error: invalid boolean"),
    (b"_x\r\n", "Protocol error: invalid null"),
    (b"(1.5\r\n", "Protocol error: invalid big number"),
    (b"=2\r\nab\r\n", "Protocol error: invalid verbatim string"),
    (b"$3\r\nabcde", "Protocol error: bulk string not followed by CRLF"),
])
def test_reply_errors(wire: bytes, message: str) -> None:
    parser = RespParser()
    with pytest.raises(ProtocolError) as info:
        parser.feed(wire)
    assert str(info.value) == message


def test_reply_limits() -> None:
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        RespParser(max_bulk=4).feed(b"$5\r\n")
    with pytest.raises(ProtocolError, match="invalid multibulk length"):
        RespParser(max_elements=2).feed(b"*3\r\n")
    assert RespParser(max_depth=3).feed(b"*1\r\n*1\r\n*1\r\n:1\r\n") == [[[[1]]]]
    with pytest.raises(ProtocolError, match="nested deeper than 3"):
        RespParser(max_depth=3).feed(b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n")
    with pytest.raises(ProtocolError, match="nested deeper"):
        RespParser().feed(b"*1\r\n" * 100_000)
    with pytest.raises(ProtocolError, match="too big line"):
        RespParser(max_bulk=10).feed(b"+" + b"x" * 20)


def test_decode_wants_exactly_one_value() -> None:
    for wire in (b"", b":1\r\n:2\r\n", b"*2\r\n:1\r\n", b"$3\r\nab"):
        with pytest.raises(ProtocolError):
            decode(wire)


# ---------------------------------------------------------------------------
# garbage: nothing but ProtocolError escapes
# ---------------------------------------------------------------------------

def _feed_garbage(parser: RespParser | RequestParser, wire: bytes, cuts: list[int]) -> None:
    try:
        for chunk in split_at(wire, cuts):
            parser.feed(chunk)
    except ProtocolError:
        pass


@settings(max_examples=500)
@given(wire=st.binary(max_size=200), data=st.data())
def test_random_bytes_only_raise_protocol_error(wire: bytes, data: st.DataObject) -> None:
    cuts = cuts_for(data, wire)
    _feed_garbage(RespParser(keep_attributes=True), wire, cuts)
    _feed_garbage(RespParser(), wire, cuts)
    _feed_garbage(RequestParser(), wire, cuts)


MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 10_000),
                     st.sampled_from(b"$*:+-_,#%~>|(=!\r\n0123456789-?x\x00"))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUES3, mutations=st.lists(MUTATION, min_size=1, max_size=4), data=st.data())
def test_mutated_values_only_raise_protocol_error(value: RespValue, mutations: list[tuple[str, int, int]],
                                                  data: st.DataObject) -> None:
    wire = bytearray(encode(value, resp3=True) + encode_command("SET", "k", "v"))
    for how, where, byte in mutations:
        at = where % (len(wire) + 1)
        if how == "insert":
            wire[at:at] = bytes([byte])
        elif at < len(wire):
            if how == "flip":
                wire[at] = byte
            else:
                del wire[at]
    mutated = bytes(wire)
    cuts = cuts_for(data, mutated)
    _feed_garbage(RespParser(keep_attributes=True), mutated, cuts)
    _feed_garbage(RequestParser(), mutated, cuts)


# ---------------------------------------------------------------------------
# big values arrive in small pieces: linear work
# ---------------------------------------------------------------------------

def test_large_bulk_in_small_chunks() -> None:
    payload = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    for parser in (RespParser(), RequestParser()):
        wire = encode_command("SET", "key", payload) if isinstance(parser, RequestParser) else bulk(payload)
        out: list[object] = []
        for i in range(0, len(wire), 4096):
            out.extend(parser.feed(wire[i:i + 4096]))
            if i + 4096 < len(wire):
                assert not out
        assert len(out) == 1
        got = out[0][2] if isinstance(parser, RequestParser) else out[0]  # type: ignore[index]
        assert got == payload
        assert parser.buffered == 0


def test_large_simple_string_and_many_elements_in_small_chunks() -> None:
    line = b"+" + b"y" * 3_000_000 + b"\r\n"
    out = feed_all(RespParser(), [line[i:i + 1000] for i in range(0, len(line), 1000)])
    assert out == [SimpleString(b"y" * 3_000_000)]
    items = [b"%d" % i for i in range(200_000)]
    wire = encode(items)
    out = feed_all(RespParser(), [wire[i:i + 4096] for i in range(0, len(wire), 4096)])
    assert out == [items]
    command = encode_command("MSET", *items)
    out = feed_all(RequestParser(), [command[i:i + 4096] for i in range(0, len(command), 4096)])
    assert out == [[b"MSET", *items]]


# ---------------------------------------------------------------------------
# a real redis-server
# ---------------------------------------------------------------------------

class _Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.parser = RespParser()

    def read(self, count: int = 1) -> list[RespValue]:
        out: list[RespValue] = []
        while len(out) < count:
            data = self.sock.recv(7)  # small reads: replies arrive split anywhere
            assert data, "redis closed the connection"
            out.extend(self.parser.feed(data))
        assert len(out) == count
        return out

    def call(self, *args: str | bytes | int | float) -> RespValue:
        self.sock.sendall(encode_command(*args))
        return self.read()[0]

    def raw_call(self, *args: str | bytes | int | float) -> bytes:
        """The reply's bytes exactly as redis wrote them."""
        self.sock.sendall(encode_command(*args))
        raw = b""
        parser = RespParser()
        done = False
        while not done:
            chunk = self.sock.recv(7)
            assert chunk, "redis closed the connection"
            raw += chunk
            done = bool(parser.feed(chunk))
        return raw

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    exe = require_binary("redis-server")
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with running(argv, port=port):
        yield port


def test_real_redis_resp2(redis_port: int) -> None:
    conn = _Conn(redis_port)
    try:
        big = bytes(range(256)) * 1000
        assert conn.call("SET", "k1", b"v\r\n1") == SimpleString(b"OK")
        assert conn.call("SET", "big", big) == SimpleString(b"OK")
        assert conn.call("GET", "k1") == b"v\r\n1"
        assert conn.call("GET", "big") == big
        assert conn.call("GET", "missing") is None
        assert conn.call("MGET", "k1", "missing", "big") == [b"v\r\n1", None, big]
        assert conn.call("DEL", "h") in (0, 1)
        assert conn.call("HSET", "h", "f1", "a", "f2", 2) == 2
        assert conn.call("HGETALL", "h") == [b"f1", b"a", b"f2", b"2"]
        assert conn.call("INCR", "n") == 1
        assert conn.call("INCRBY", "n", -10) == -9
        assert conn.call("INCRBYFLOAT", "f", 1.5) == b"1.5"
        reply = conn.call("INCR", "k1")
        assert reply == Error(b"ERR value is not an integer or out of range")
        assert isinstance(reply, Error) and reply.code == "ERR"
        reply = conn.call("NOSUCHCOMMAND", "x")
        assert isinstance(reply, Error) and reply.message.startswith(b"ERR unknown command")
        assert conn.call("BLPOP", "nolist", "0.01") is None  # *-1
        # RESP3 values written by Lua arrive downgraded on a RESP2 connection.
        assert conn.call("EVAL", "return {map={a=1}}", 0) == [b"a", 1]
        assert conn.call("EVAL", "return {double=1/0}", 0) == b"inf"
        # Pipelined: every reply in order.
        conn.sock.sendall(encode_commands([("PING",), ("ECHO", "x"), ("EXISTS", "k1", "nope")]))
        assert conn.read(3) == [SimpleString(b"PONG"), b"x", 1]
        # Inline commands, as a telnet user types them.
        conn.sock.sendall(b'SET inl "a b"\r\nGET inl\r\n')
        assert conn.read(2) == [SimpleString(b"OK"), b"a b"]
        # Downgrades we write are what redis writes for the same RESP3 values.
        for script, value in [("return {map={a=1}}", {b"a": 1}), ("return {set={a=true}}", RespSet([b"a"])),
                              ("return {big_number='123456789012345678901234567890'}",
                               BigNumber(123456789012345678901234567890)),
                              ("return {verbatim_string={format='txt', string='hi'}}", Verbatim(b"txt", b"hi")),
                              ("return {double=-1/0}", -math.inf)]:
            assert conn.raw_call("EVAL", script, 0) == encode(value), script
    finally:
        conn.close()


def test_real_redis_resp3(redis_port: int) -> None:
    conn = _Conn(redis_port)
    other = _Conn(redis_port)
    try:
        hello = conn.call("HELLO", 3)
        assert isinstance(hello, dict)
        assert hello[b"server"] == b"redis" and hello[b"proto"] == 3
        assert isinstance(hello[b"version"], bytes) and isinstance(hello[b"modules"], list)
        assert conn.call("DEL", "h3", "s3", "z3") in (0, 1, 2, 3)
        assert conn.call("HSET", "h3", "f1", "a", "f2", "b") == 2
        assert conn.call("HGETALL", "h3") == {b"f1": b"a", b"f2": b"b"}
        assert conn.call("SADD", "s3", "x", "y") == 2
        members = conn.call("SMEMBERS", "s3")
        assert isinstance(members, RespSet) and sorted(members) == [b"x", b"y"]  # type: ignore[type-var]
        assert conn.call("ZADD", "z3", "1.5", "a", "inf", "b") == 2
        assert conn.call("ZSCORE", "z3", "a") == 1.5
        assert conn.call("ZSCORE", "z3", "b") == math.inf
        assert conn.call("GET", "nope") is None  # _
        assert conn.call("EVAL", "return {double=3.5}", 0) == 3.5
        nan = conn.call("EVAL", "return {double=0/0}", 0)
        assert isinstance(nan, float) and math.isnan(nan)
        assert conn.call("EVAL", "return {big_number='-98765432109876543210'}", 0) == \
            BigNumber(-98765432109876543210)
        assert conn.call("EVAL", "return {verbatim_string={format='txt', string='a\\r\\nb'}}", 0) == \
            Verbatim(b"txt", b"a\r\nb")
        assert conn.call("EVAL", "return {set={a=true}}", 0) == RespSet([b"a"])
        assert conn.call("EVAL", "return redis.error_reply('MY code')", 0) == Error(b"MY code")
        # Pushes: SUBSCRIBE confirmations and messages published by another client.
        assert conn.call("SUBSCRIBE", "chan") == Push([b"subscribe", b"chan", 1])
        assert other.call("PUBLISH", "chan", "hi\r\nthere") == 1
        message = conn.read()[0]
        assert message == Push([b"message", b"chan", b"hi\r\nthere"])
        assert isinstance(message, Push) and message.kind == b"message"
        # A RESP3 connection may still run commands while subscribed; the push comes in between.
        conn.sock.sendall(encode_command("PING"))
        assert conn.read() == [SimpleString(b"PONG")]
    finally:
        conn.close()
        other.close()


@pytest.mark.parametrize("wire", [
    b"*1\r\n+PING\r\n",
    b"*x\r\n",
    b"*1\r\n$x\r\n",
    b"*1\r\n$-1\r\n",
    b"*1\r\n$536870913\r\n",
    b'ECHO "abc\r\n',
    b"ECHO 'a'b\r\n",
])
def test_real_redis_protocol_errors_are_ours(redis_port: int, wire: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        RequestParser().feed(wire)
    conn = _Conn(redis_port)
    try:
        conn.sock.sendall(wire)
        assert conn.read() == [Error(b"ERR " + str(info.value).encode())]
    finally:
        conn.close()


def test_real_redis_splits_inline_commands_like_us(redis_port: int) -> None:
    lines = [
        b'ECHO "a b\\x41\\n\\t\\"\\\\"',
        b"ECHO 'it\\'s \\n'",
        b'ECHO "\\x4"',
        b'ECHO a"b c"',
        b'ECHO "\\q\\r"',
        b"ECHO a\x0bb",
        b"   ECHO    plain   ",
    ]
    conn = _Conn(redis_port)
    try:
        for line in lines:
            argv = split_inline(line)
            assert len(argv) == 2 and argv[0] == b"ECHO"
            assert RequestParser().feed(line + b"\r\n") == [argv]
            conn.sock.sendall(line + b"\r\n")
            assert conn.read() == [argv[1]], line
    finally:
        conn.close()
