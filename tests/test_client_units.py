"""The client's pure parts: serializers, server strings and YAML pools, key rules, options, codec states."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import pytest

from scatterhoard.client import Client, get_serde, parse_server, parse_servers
from scatterhoard.client.codec import (
    EXISTS,
    NOT_FOUND,
    NOT_STORED,
    OK,
    BinaryCodec,
    BinaryConnState,
    MetaCodec,
    MetaConnState,
    Request,
    TextCodec,
    TextConnState,
)
from scatterhoard.client.config import load_yaml_pool
from scatterhoard.client.core import ClientCore
from scatterhoard.client.errors import ValueTooLargeError
from scatterhoard.client.serde import FLAG_INTEGER, FLAG_JSON, FLAG_PICKLE, FLAG_TEXT
from scatterhoard.errors import ClientError, ConfigError, ProtocolError, ServerError
from scatterhoard.protocol import binary as bp
from scatterhoard.routing import Router, ServerSpec
from tests.support import require_module

# -- serde -----------------------------------------------------------------------------------------


def test_raw_serde_is_bytes_only() -> None:
    raw = get_serde(None)
    assert raw.serialize(b"k", b"v") == (b"v", 0)
    assert raw.serialize(b"k", bytearray(b"v")) == (b"v", 0)
    assert raw.serialize(b"k", memoryview(b"v")) == (b"v", 0)
    assert raw.deserialize(b"k", b"5", FLAG_INTEGER) == b"5"  # raw never interprets
    for value in ("s", 1, None, [1]):
        with pytest.raises(TypeError, match="serde="):
            raw.serialize(b"k", value)


@pytest.mark.parametrize("name", ["basic", "json", "pickle"])
def test_named_serdes_record_the_type_in_flags(name: str) -> None:
    serde = get_serde(name)
    assert serde.serialize(b"k", "é") == ("é".encode(), FLAG_TEXT)
    assert serde.serialize(b"k", 12) == (b"12", FLAG_INTEGER)
    assert serde.serialize(b"k", b"b") == (b"b", 0)
    for value in ("é", 12, -(2**80), b"b"):
        assert serde.deserialize(b"k", *serde.serialize(b"k", value)) == value
    assert serde.deserialize(b"k", b"x", 1 << 12) == b"x"  # unknown flags: the stored bytes


def test_json_and_pickle_and_refusals() -> None:
    js = get_serde("json")
    assert js.serialize(b"k", {"a": [1, None]}) == (b'{"a":[1,null]}', FLAG_JSON)
    assert js.serialize(b"k", True) == (b"true", FLAG_JSON)
    assert js.deserialize(b"k", b'{"a":[1,null]}', FLAG_JSON) == {"a": [1, None]}
    with pytest.raises(TypeError):
        js.serialize(b"k", object())
    pk = get_serde("pickle")
    data, flags = pk.serialize(b"k", {1, 2})
    assert flags == FLAG_PICKLE and pickle.loads(data) == {1, 2}
    assert pk.deserialize(b"k", data, flags) == {1, 2}
    assert js.deserialize(b"k", data, FLAG_PICKLE) == data  # json never unpickles
    with pytest.raises(TypeError):
        get_serde("basic").serialize(b"k", 1.5)
    with pytest.raises(ValueError):
        get_serde("yaml")


def test_pymemcache_reads_our_flags() -> None:
    pymemcache_serde = require_module("pymemcache.serde")
    ours = get_serde("pickle")
    theirs = pymemcache_serde.pickle_serde
    for value in ("text", 7, {"a": 1}, b"raw"):
        assert theirs.deserialize(b"k", *ours.serialize(b"k", value)) == value
        assert ours.deserialize(b"k", *theirs.serialize(b"k", value)) == value


# -- servers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ident", "weight", "address"), [
    ("127.0.0.1:11211", "127.0.0.1", 1, "127.0.0.1:11211"),
    ("127.0.0.1", "127.0.0.1", 1, "127.0.0.1:11211"),
    ("10.0.0.1:11212:3", "10.0.0.1:11212", 3, "10.0.0.1:11212"),
    ("10.0.0.1:11212:3 cache-a", "cache-a", 3, "10.0.0.1:11212"),
    ("cache.local:11300 node", "node", 1, "cache.local:11300"),
    ("unix:/tmp/mc.sock", "/tmp/mc.sock:", 1, "unix:/tmp/mc.sock"),
    ("/tmp/mc.sock:2 sock", "sock", 2, "unix:/tmp/mc.sock"),
    ("UNIX:/tmp/mc.sock", "/tmp/mc.sock:", 1, "unix:/tmp/mc.sock"),
    ("IP:10.0.0.2:11311", "10.0.0.2:11311", 1, "10.0.0.2:11311"),
    ("IPv4:10.0.0.2:11311:4", "10.0.0.2:11311", 4, "10.0.0.2:11311"),
    ("[::1]:11311:2", "::1:11311", 2, "[::1]:11311"),
])
def test_server_forms(text: str, ident: str, weight: int, address: str) -> None:
    server = parse_server(text)
    assert server.spec.ident == ident
    assert server.spec.weight == weight
    assert server.label == address


def test_server_identities_match_twemproxy_spelling() -> None:
    for text in ("127.0.0.1:11211:1", "127.1:22122:2 x", "/run/mc.sock:1", "host:0011212:1"):
        assert parse_server(text).spec == ServerSpec.parse(text)


def test_server_lists_and_errors() -> None:
    assert [s.label for s in parse_servers("a:1, b:2,unix:/s")] == ["a:1", "b:2", "unix:/s"]
    assert len(parse_servers(["a:1", ServerSpec("b", 2)])) == 2
    for bad in ("", "a:1:0", "a:1:x", "a:notaport", "unix:relative", "a:1:2:3:4", "[::1", "FD:3"):
        with pytest.raises(ConfigError):
            parse_servers(bad)
    with pytest.raises(ConfigError):
        parse_servers(["a:1", "a:1"])


def test_yaml_pool(tmp_path: Path) -> None:
    conf = tmp_path / "nc.yml"
    conf.write_text(
        "alpha:\n  listen: 127.0.0.1:22121\n  hash: murmur\n  distribution: modula\n  hash_tag: \"{}\"\n"
        "  timeout: 400\n  auto_eject_hosts: true\n  server_failure_limit: 3\n  server_retry_timeout: 2000\n"
        "  servers:\n   - 127.0.0.1:11211:1\n   - 127.0.0.1:11212:2 two\n   - /tmp/mc.sock:1\n"
        "beta:\n  servers:\n   - 127.0.0.1:11211:1\n"
        "red:\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n")
    pool = load_yaml_pool(conf, "alpha")
    assert [s.spec.ident for s in pool.servers] == ["127.0.0.1", "two", "/tmp/mc.sock:"]
    core = ClientCore(str(conf), pool="alpha")
    assert (core.router.hash_name, core.router.distribution, core.router.hash_tag) == ("murmur", "modula", b"{}")
    assert (core.timeout, core.failure_limit, core.retry_timeout) == (0.4, 3, 2.0)
    beta = ClientCore(str(conf), pool="beta")  # nutcracker's defaults, and no ejection without auto_eject_hosts
    assert (beta.router.hash_name, beta.router.distribution, beta.failure_limit) == ("fnv1a_64", "ketama", 0)
    assert ClientCore(str(conf), pool="beta", hash="md5", failure_limit=5).router.hash_name == "md5"
    with pytest.raises(ConfigError, match="pool="):
        ClientCore(str(conf))
    with pytest.raises(ConfigError, match="redis"):
        ClientCore(str(conf), pool="red")
    with pytest.raises(ConfigError, match="no pool"):
        ClientCore(str(conf), pool="nope")
    with pytest.raises(ConfigError):
        ClientCore("127.0.0.1:11211", pool="alpha")


# -- options and keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "match"), [
    ({"protocol": "resp"}, "unknown protocol"),
    ({"on_error": "ignore"}, "on_error"),
    ({"long_keys": "truncate"}, "long_keys"),
    ({"mode": "replace"}, "mode"),
    ({"timeout": 0}, "timeout"),
    ({"connect_timeout": -1}, "connect_timeout"),
    ({"max_pool_size": 0}, "max_pool_size"),
    ({"failure_limit": -1}, "failure_limit"),
    ({"hash": "sha1"}, "sha1"),
    ({"distribution": "rendezvous"}, "distribution"),
    ({"spin_us": -1}, "spin_us"),
    ({"spin_us": 20_000}, "spin_us"),
    ({"spin_us": "50"}, "spin_us"),
])
def test_bad_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Client("127.0.0.1:1", **options)


def test_default_routing_is_ketama_md5_like_the_router() -> None:
    servers = ["10.0.0.1:11211:1", "10.0.0.2:11211:2", "10.0.0.3:11300:1 c"]
    core = ClientCore(servers)
    router = Router(servers, hash="md5", distribution="ketama")
    for i in range(500):
        key = b"k%d" % i
        assert core.router.index_for(key) == router.index_for(key)


def test_key_rules() -> None:
    core = ClientCore("127.0.0.1:1")
    assert core._key("plain") == b"plain"
    assert core._key("ключ") == "ключ".encode()
    assert core._key(b"\xff\xfe") == b"\xff\xfe"  # bytes >= 0x80 are fine in memcached keys
    assert core._key("k" * 250) == b"k" * 250
    for bad in ("k" * 251, "a b", "tab\t", "nl\n", "del\x7f", "nul\x00"):
        assert core._key(bad) == hashlib.md5(bad.encode()).hexdigest().encode()
    strict = ClientCore("127.0.0.1:1", long_keys="error")
    for bad in ("k" * 251, "a b", ""):
        with pytest.raises(ClientError):
            strict._key(bad)
    with pytest.raises(TypeError):
        core._key(1)  # type: ignore[arg-type]
    with pytest.raises(ValueTooLargeError):
        ClientCore("127.0.0.1:1", max_value_size=10)._value(b"k", b"x" * 11)
    for bad_expire in (-1, 2**31, 1.5, True):
        with pytest.raises(ValueError):
            core._exptime(bad_expire)  # type: ignore[arg-type]
    for bad_delta in (-1, 2**64):
        with pytest.raises(ValueError):
            core._delta(bad_delta)


@pytest.mark.parametrize("protocol", ["text", "meta", "binary"])
def test_bad_numbers_through_the_api_say_which(protocol: str) -> None:
    """The command core is compiled: its signatures take the application's numbers as ``object``,
    so a float or a string is a ValueError naming the parameter, not a TypeError from the call."""
    import asyncio

    from scatterhoard import AsyncClient

    client = Client("127.0.0.1:1", protocol=protocol, on_error="raise")
    calls: list[tuple[str, Any]] = [
        ("expire", lambda c: c.set("k", b"v", expire=1.5)),
        ("expire", lambda c: c.add("k", b"v", expire="10")),
        ("expire", lambda c: c.touch("k", 2.5)),
        ("expire", lambda c: c.gat("k", -1)),
        ("delta", lambda c: c.incr("k", 1.0)),
        ("delta", lambda c: c.decr("k", "1")),
        ("expire", lambda c: c.set_many({"k": b"v"}, expire=0.5)),
        ("cas", lambda c: c.cas("k", b"v", 1.0)),
    ]
    for name, call in calls:
        with pytest.raises(ValueError, match=name):
            call(client)

    async def run_async() -> None:
        aclient = AsyncClient("127.0.0.1:1", protocol=protocol, on_error="raise")
        for name, call in calls:
            with pytest.raises(ValueError, match=name):
                await call(aclient)

    asyncio.run(run_async())


# -- codec states, fed one byte at a time ----------------------------------------------------------


def feed_bytewise(state: TextConnState | BinaryConnState | MetaConnState, data: bytes) -> None:
    for i in range(len(data)):
        state.feed(data[i:i + 1])


def test_text_requests_and_state() -> None:
    codec = TextCodec()
    state = TextConnState()
    get = codec.retrieve([b"a", b"b"])
    store = codec.store_many("set", [(b"x", b"1", 0), (b"y", b"2", 5)], 0)
    arith = codec.arith(b"n", 3, True)
    assert state.submit(get) == b"get a b\r\n"
    assert state.submit(store) == b"set x 0 0 1\r\n1\r\nset y 5 0 1\r\n2\r\n"
    assert state.submit(arith) == b"incr n 3\r\n"
    feed_bytewise(state, b"VALUE a 3 2\r\nhi\r\nEND\r\nSTORED\r\nNOT_STORED\r\n")
    assert get.done and store.done and not arith.done
    state.feed(b"42\r\n")
    assert arith.done and state.idle
    assert [(v.key, v.flags, v.value) for v in get.result()] == [(b"a", 3, b"hi")]  # type: ignore[attr-defined]
    assert store.result() == [OK, NOT_STORED]
    assert arith.result() == 42
    noreply = codec.store("set", b"k", b"v", 0, 0, noreply=True)
    assert state.submit(noreply).endswith(b" noreply\r\nv\r\n") and noreply.done and noreply.result() == OK


def test_text_errors() -> None:
    codec = TextCodec()
    state = TextConnState()
    reqs = [codec.store("set", b"k", b"v", 0, 0), codec.store("cas", b"k", b"v", 0, 0, cas=9),
            codec.retrieve([b"k"]), codec.arith(b"k", 1, False)]
    for r in reqs:
        state.submit(r)
    state.feed(b"SERVER_ERROR object too large for cache\r\nEXISTS\r\nSERVER_ERROR out of memory\r\n"
               b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
    with pytest.raises(ValueTooLargeError):
        reqs[0].result()
    assert reqs[1].result() == EXISTS
    with pytest.raises(ServerError):
        reqs[2].result()
    with pytest.raises(ClientError):
        reqs[3].result()
    big = codec.retrieve([b"k%d" % i for i in range(600)])
    assert big.data.count(b"get ") == 3  # type: ignore[attr-defined]


def test_meta_requests_and_state() -> None:
    codec = MetaCodec()
    state = MetaConnState()
    get = codec.retrieve([b"a", b"b", b"c"], cas=True)
    store = codec.store_many("add", [(b"x", b"1", 0), (b"y", b"2", 5)], 30)
    arith = codec.arith(b"n", 3, False)
    quiet = codec.store("append", b"k", b"v", 9, 9, noreply=True)
    stats = codec.stats([])
    assert state.submit(get) == b"mg a v f c\r\nmg b v f c\r\nmg c v f c\r\n"
    assert state.submit(store) == b"ms x 1 F0 T30 ME\r\n1\r\nms y 1 F5 T30 ME\r\n2\r\n"
    assert state.submit(arith) == b"ma n D3 MD v\r\n"
    assert state.submit(quiet) == b"ms k 1 MA q\r\nv\r\nmn\r\n"  # append keeps flags and TTL
    assert state.submit(stats) == b"stats\r\n"
    # a value holding reply-like bytes, split at every byte
    feed_bytewise(state, b"VA 8 f3 c11\r\nEN\r\nMN\r\n\r\nEN\r\nVA 0 f0 c12\r\n\r\nHD\r\nNS\r\n")
    assert get.done and store.done and not arith.done
    state.feed(b"VA 2\r\n42\r\nNS\r\nMN\r\nSTAT pid 7\r\nSTAT ver sion x\r\nEND\r\n")
    assert arith.done and quiet.done and stats.done and state.idle
    values = get.result()
    assert [(v.key, v.flags, v.value, v.cas) for v in values] == [  # type: ignore[attr-defined]
        (b"a", 3, b"EN\r\nMN\r\n", 11), (b"c", 0, b"", 12)]
    assert store.result() == [OK, NOT_STORED]
    assert arith.result() == 42
    assert quiet.result() == OK  # noreply: assumed, whatever the quiet failure said
    assert stats.result() == {"pid": "7", "ver": "sion x"}
    with pytest.raises(ProtocolError):
        state.feed(b"HD\r\n")  # nothing in flight


def test_meta_errors() -> None:
    codec = MetaCodec()
    state = MetaConnState()
    reqs = [codec.store("set", b"k", b"v", 0, 0), codec.store("cas", b"k", b"v", 0, 0, cas=9),
            codec.retrieve([b"k"]), codec.arith(b"k", 1, True), codec.arith(b"k", 1, True),
            codec.touch(b"k", 5), codec.delete(b"k"), codec.retrieve([b"k"], touch=5)]
    for r in reqs:
        state.submit(r)
    assert reqs[-1].data == b"mg k v f T5\r\n"  # type: ignore[attr-defined]
    state.feed(b"SERVER_ERROR object too large for cache\r\nEX\r\nSERVER_ERROR out of memory\r\n"
               b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\nNF\r\nEN\r\nNF\r\nXX\r\n")
    with pytest.raises(ValueTooLargeError):
        reqs[0].result()
    assert reqs[1].result() == EXISTS
    with pytest.raises(ServerError):
        reqs[2].result()
    with pytest.raises(ClientError):
        reqs[3].result()
    assert reqs[4].result() is None
    assert reqs[5].result() == NOT_FOUND and reqs[6].result() == NOT_FOUND
    with pytest.raises(ServerError):
        reqs[7].result()
    bad = MetaConnState()
    bad.submit(codec.retrieve([b"k"]))
    with pytest.raises(ProtocolError):
        bad.feed(b"VA x\r\n")


def _reply(opcode: int, opaque: int, status: int = 0, key: bytes = b"", extras: bytes = b"",
           value: bytes = b"", cas: int = 0) -> bytes:
    return bp.encode_response(opcode, status, key, extras, value, opaque, cas)


def test_binary_requests_and_state() -> None:
    codec = BinaryCodec()
    state = BinaryConnState()
    get = codec.retrieve([b"a", b"b", b"c"])
    data = state.submit(get)
    packets = bp.BinaryParser(None, magic=bp.REQUEST_MAGIC).feed(data)
    assert [p.opcode for p in packets] == [bp.OP_GETKQ] * 3 + [bp.OP_NOOP]
    base = packets[0].opaque
    assert [p.opaque for p in packets] == [base, base + 1, base + 2, base + 3]
    flags = bp.pack_get_reply_extras(7)
    feed_bytewise(state, _reply(bp.OP_GETKQ, base + 1, key=b"b", extras=flags, value=b"vb", cas=5)
                  + _reply(bp.OP_NOOP, base + 3))
    assert get.done and state.idle
    assert [(v.key, v.flags, v.value, v.cas) for v in get.result()] == [(b"b", 7, b"vb", 5)]  # type: ignore[attr-defined]

    # a quiet set sent with noreply is not waited for; its late error is dropped
    fire = codec.store("set", b"k", b"v", 0, 0, noreply=True)
    fire_opaque = bp.BinaryParser(None).feed(state.submit(fire))[0].opaque
    assert fire.done
    many = codec.store_many("add", [(b"x", b"1", 0), (b"y", b"2", 0)], 0)
    many_base = bp.BinaryParser(None).feed(state.submit(many))[0].opaque
    state.feed(_reply(bp.OP_SETQ, fire_opaque, bp.STATUS_E2BIG, value=b"Too large.")
               + _reply(bp.OP_ADDQ, many_base + 1, bp.STATUS_KEY_EEXISTS, value=b"Data exists for key.")
               + _reply(bp.OP_NOOP, many_base + 2))
    assert many.done and many.result() == [OK, EXISTS]

    single = codec.retrieve([b"only"])
    opaque = bp.BinaryParser(None).feed(state.submit(single))[0].opaque
    state.feed(_reply(bp.OP_GET, opaque, extras=flags, value=b"v", cas=3))
    assert [(v.key, v.value) for v in single.result()] == [(b"only", b"v")]  # type: ignore[attr-defined]

    stats = codec.stats([])
    opaque = bp.BinaryParser(None).feed(state.submit(stats))[0].opaque
    feed_bytewise(state, _reply(bp.OP_STAT, opaque, key=b"pid", value=b"1")
                  + _reply(bp.OP_STAT, opaque, key=b"uptime", value=b"2") + _reply(bp.OP_STAT, opaque))
    assert stats.result() == {"pid": "1", "uptime": "2"}

    arith = codec.arith(b"n", 1, True)
    opaque = bp.BinaryParser(None).feed(state.submit(arith))[0].opaque
    state.feed(_reply(bp.OP_INCREMENT, opaque, bp.STATUS_DELTA_BADVAL, value=b"Non-numeric"))
    with pytest.raises(ClientError):
        arith.result()
    missing = codec.delete(b"gone")
    opaque = bp.BinaryParser(None).feed(state.submit(missing))[0].opaque
    state.feed(_reply(bp.OP_DELETE, opaque, bp.STATUS_KEY_ENOENT, value=b"Not found"))
    assert missing.result() == NOT_FOUND


def test_request_results_are_protocol_neutral() -> None:
    """The same command answered the same way decodes to the same result in both protocols."""
    text, binary = TextCodec(), BinaryCodec()

    def answer(req: Request, state: TextConnState | BinaryConnState, reply: bytes | None) -> object:
        data = state.submit(req)
        if reply is None:  # binary: answer each request packet with a success echo
            reply = b"".join(_reply(p.opcode, p.opaque) for p in bp.BinaryParser(None).feed(data))
        state.feed(reply)
        return req.result()

    assert answer(text.touch(b"k", 5), TextConnState(), b"TOUCHED\r\n") == \
        answer(binary.touch(b"k", 5), BinaryConnState(), None) == OK
    assert answer(text.flush_all(), TextConnState(), b"OK\r\n") == \
        answer(binary.flush_all(), BinaryConnState(), None) == OK
