"""The RESP face of ``hoard server`` against a real redis-server, through redis-py.

Every scenario is a list of redis-py calls; it runs against Debian's
redis-server and against ``hoard server`` (started on free ports), with the
sync and the asyncio client, in RESP2 and in RESP3, and the results must be
identical: values, replies, and errors (exception type and message).
Expiry times are compared as "within a window of the expected value".
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from pymemcache.client.base import Client as MemcacheClient
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from scatterhoard.protocol.resp import encode_commands
from tests.support import free_port, hoard_server, recv_until, require_binary, running

Norm = Callable[[Any], Any]
Step = tuple[str, tuple[Any, ...], dict[str, Any], Norm | None]


# -- servers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    exe = require_binary("redis-server")
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with running(argv, port=port):
        yield port


@pytest.fixture(scope="module")
def hoard_port() -> Iterator[int]:
    with hoard_server() as port:
        yield port


# -- scenario steps --------------------------------------------------------------------------
def S(method: str, *args: Any, norm: Norm | None = None, **kwargs: Any) -> Step:
    """A redis-py method call."""
    return (method, args, kwargs, norm)


def X(*args: Any, norm: Norm | None = None) -> Step:
    """A raw command through ``execute_command``."""
    return ("execute_command", args, {}, norm)


def near(expected: int, slack: int) -> Norm:
    """``("near", expected)`` for a value within ``slack`` of ``expected`` (time passes)."""
    def norm(value: Any) -> Any:
        if isinstance(value, int) and abs(value - expected) <= slack:
            return ("near", expected)
        return value
    return norm


def kind(value: Any) -> Any:
    return type(value).__name__


def command_shape(value: Any) -> Any:
    """COMMAND INFO without the parts this server leaves empty (tips, key specs, docs)."""
    return {name: (info["arity"], sorted(info["flags"]), info["first_key_pos"], info["last_key_pos"],
                   info["step_count"], sorted(info["acl_categories"])) for name, info in value.items()}


def hello_shape(value: Any) -> Any:
    """HELLO's map without the fields that differ by nature (client id, version)."""
    if isinstance(value, list):  # RESP2: flat
        value = dict(zip(value[::2], value[1::2], strict=True))
    return {key: val for key, val in value.items() if key not in (b"id", b"version")}


def run_sync(port: int, protocol: int, steps: list[Step]) -> list[Any]:
    client = redis.Redis(port=port, protocol=protocol, socket_timeout=10, retry=Retry(NoBackoff(), 0))
    try:
        results = []
        for method, args, kwargs, norm in steps:
            try:
                value = getattr(client, method)(*args, **kwargs)
            except redis.RedisError as exc:
                results.append((type(exc).__name__, str(exc)))
                continue
            results.append(norm(value) if norm is not None else value)
        return results
    finally:
        client.close()


def run_async(port: int, protocol: int, steps: list[Step]) -> list[Any]:
    async def main() -> list[Any]:
        client = redis.asyncio.Redis(port=port, protocol=protocol, socket_timeout=10,
                                     retry=AsyncRetry(NoBackoff(), 0))
        try:
            results = []
            for method, args, kwargs, norm in steps:
                try:
                    value = await getattr(client, method)(*args, **kwargs)
                except redis.RedisError as exc:
                    results.append((type(exc).__name__, str(exc)))
                    continue
                results.append(norm(value) if norm is not None else value)
            return results
        finally:
            await client.aclose()
    return asyncio.run(main())


# -- the scenarios ---------------------------------------------------------------------------
I64_MAX = 2**63 - 1


def sc_get_set(p: str) -> list[Step]:
    return [
        S("set", p + "a", "1"), S("get", p + "a"), S("get", p + "missing"),
        S("set", p + "a", b"\x00\xff\r\nbinary"), S("get", p + "a"),
        S("set", p + "empty", ""), S("get", p + "empty"), S("strlen", p + "empty"),
        X("SET", p + "a"), X("GET"), X("GET", p + "a", "b"), X("get", p + "a"),
    ]


def sc_set_options(p: str) -> list[Step]:
    k, now = p + "k", int(time.time())
    return [
        S("set", k, "v", nx=True), S("set", k, "w", nx=True), S("get", k),
        S("set", p + "nokey", "v", xx=True), S("get", p + "nokey"), S("set", k, "x", xx=True),
        S("set", k, "y", get=True), S("set", p + "new", "y", get=True),
        S("set", k, "z", nx=True, get=True), S("set", p + "new2", "z", xx=True, get=True),
        S("set", k, "v", ex=100), S("ttl", k, norm=near(100, 2)),
        S("set", k, "v2", keepttl=True), S("ttl", k, norm=near(100, 2)), S("get", k),
        S("set", k, "v3"), S("ttl", k),
        S("set", k, "v", px=100_000), S("pttl", k, norm=near(100_000, 2000)),
        S("set", k, "v", exat=now + 200), S("ttl", k, norm=near(200, 3)),
        S("set", k, "v", pxat=(now + 300) * 1000), S("pttl", k, norm=near(300_000, 3000)),
        X("SET", k, "v", "EX", "10", "EX", "20"), S("ttl", k, norm=near(20, 2)),
        X("SET", k, "v", "NX", "XX"), X("SET", k, "v", "EX"), X("SET", k, "v", "EX", "10", "PX", "100"),
        X("SET", k, "v", "FOO"), X("SET", k, "v", "KEEPTTL", "EX", "10"), X("SET", k, "v", "PERSIST"),
        X("SET", k, "v", "EX", "0"), X("SET", k, "v", "EX", "-1"), X("SET", k, "v", "PX", "abc"),
        X("SET", k, "v", "EX", "9223372036854776"), X("SET", k, "v", "PX", str(I64_MAX)),
        X("SET", k, "v", "EXAT", "1"), S("get", k), S("exists", k),
        X("set", k, "lower", "nx"), X("SET", k, "v", "xX", "gEt"), S("get", k),
    ]


def sc_setnx_setex(p: str) -> list[Step]:
    k = p + "k"
    return [
        S("setnx", k, "1"), S("setnx", k, "2"), S("get", k),
        X("SETEX", k, "100", "v"), S("ttl", k, norm=near(100, 2)), S("get", k),
        X("SETEX", k, "0", "v"), X("SETEX", k, "abc", "v"), X("SETEX", k, "10"),
        X("PSETEX", k, "100000", "w"), S("pttl", k, norm=near(100_000, 2000)),
        X("PSETEX", k, "-5", "v"), S("get", k),
    ]


def sc_getset_getdel(p: str) -> list[Step]:
    k = p + "k"
    return [
        S("getset", k, "1"), S("getset", k, "2"), S("set", k, "3", ex=100), S("getset", k, "4"),
        S("ttl", k), S("getdel", k), S("getdel", k), S("exists", k), X("GETDEL", k, "x"),
    ]


def sc_getex(p: str) -> list[Step]:
    k, now = p + "k", int(time.time())
    return [
        S("getex", p + "missing"), X("GETEX", p + "missing", "EX", "0"),
        S("set", k, "v"), S("getex", k), S("ttl", k),
        S("getex", k, ex=100), S("ttl", k, norm=near(100, 2)),
        S("getex", k, persist=True), S("ttl", k),
        S("getex", k, px=50_000), S("pttl", k, norm=near(50_000, 2000)),
        S("getex", k, exat=now + 500), S("ttl", k, norm=near(500, 3)),
        X("GETEX", k, "EX", "0"), X("GETEX", k, "PERSIST", "EX", "10"), X("GETEX", k, "NX"),
        X("GETEX", k, "KEEPTTL"), X("GETEX", k, "EX"),
        S("getex", k, exat=1), S("get", k), S("exists", k),
    ]


def sc_multi_key(p: str) -> list[Step]:
    a, b, c, d = (p + x for x in "abcd")
    return [
        S("mset", {a: "1", b: "2"}), S("mget", [a, b, c]), S("mget", c),
        X("MSET", a), X("MSET", a, "1", b), X("MSETNX", a, "1", b),
        S("msetnx", {a: "x", c: "3"}), S("mget", [a, c]), S("msetnx", {c: "3", d: "4"}), S("mget", [c, d]),
        X("MSET", a, "1", a, "2"), S("get", a), X("MGET"),
        S("set", b, "t", ex=100), S("mset", {b: "u"}), S("ttl", b),
    ]


def sc_keyspace(p: str) -> list[Step]:
    a, b = p + "a", p + "b"
    return [
        S("set", a, "1"), S("set", b, "22"),
        S("exists", a, a, b, p + "none"), S("touch", a, p + "none", b), S("type", a), S("type", p + "none"),
        S("strlen", b), S("strlen", p + "none"), S("delete", a, a, p + "none"), S("exists", a),
        S("unlink", b, p + "none"), S("exists", b), X("DEL"), X("EXISTS"), X("TYPE", a, b), X("STRLEN"),
    ]


def sc_expire(p: str) -> list[Step]:
    k, now = p + "k", int(time.time())
    return [
        S("expire", k, 100), S("set", k, "v"), S("expire", k, 100), S("ttl", k, norm=near(100, 2)),
        S("pexpire", k, 200_000), S("pttl", k, norm=near(200_000, 2000)),
        S("expireat", k, now + 300), S("ttl", k, norm=near(300, 3)),
        S("pexpireat", k, (now + 400) * 1000), S("ttl", k, norm=near(400, 3)),
        S("expire", k, 50, nx=True), S("expire", k, 50, xx=True), S("ttl", k, norm=near(50, 2)),
        S("expire", k, 10, gt=True), S("expire", k, 60, gt=True), S("expire", k, 70, lt=True),
        S("expire", k, 30, lt=True), S("ttl", k, norm=near(30, 2)),
        S("persist", k), S("expire", k, 10, xx=True), S("expire", k, 10, gt=True),
        S("expire", k, 10, lt=True), S("ttl", k, norm=near(10, 2)), S("persist", k),
        S("expire", k, 10, nx=True), S("ttl", k, norm=near(10, 2)),
        X("EXPIRE", k, "10", "NX", "XX"), X("EXPIRE", k, "10", "GT", "LT"), X("EXPIRE", k, "10", "FOO"),
        X("EXPIRE", k, "abc"), X("EXPIRE", k, "abc", "FOO"), X("EXPIRE", k, "9223372036854776"),
        X("PEXPIRE", k, str(I64_MAX)), X("EXPIREAT", k, str(I64_MAX)), X("PEXPIREAT", k, str(I64_MAX)),
        X("EXPIRE", k), S("expiretime", k, norm=near(now + 10, 12)),
        S("pexpiretime", k, norm=near((now + 10) * 1000, 12_000)),
        S("expire", k, -1), S("exists", k), S("set", k, "v"), S("pexpireat", k, 1000), S("get", k),
        S("set", k, "v"), S("expireat", k, now - 10, gt=True), S("get", k),
    ]


def sc_ttl(p: str) -> list[Step]:
    k = p + "k"
    return [
        S("ttl", k), S("pttl", k), S("persist", k), S("expiretime", k), S("set", k, "v"),
        S("ttl", k), S("pttl", k), S("persist", k), S("expiretime", k), S("pexpiretime", k),
        S("expire", k, 100), S("persist", k), S("ttl", k), X("TTL"), X("PERSIST", k, k),
    ]


def sc_counters(p: str) -> list[Step]:
    k, s, t = p + "k", p + "s", p + "t"
    return [
        S("incr", k), S("incrby", k, 10), S("decr", k), S("decrby", k, 5), S("incrby", k, -20),
        S("get", k), X("INCRBY", k, "abc"), X("INCRBY", k, "1.5"), X("DECRBY", k, " 1"),
        S("set", s, "abc"), S("incr", s), S("decr", s),
        S("set", s, " 1"), S("incr", s), S("set", s, "01"), S("incr", s), S("set", s, "+1"),
        S("incr", s), S("set", s, "-0"), S("incr", s), S("set", s, "1.0"), S("incr", s),
        S("set", s, str(I64_MAX)), S("incr", s), S("incrby", s, -1), S("decrby", s, -1),
        S("set", s, str(-I64_MAX - 1)), S("decr", s), S("incr", s), S("incrby", s, I64_MAX),
        X("DECRBY", s, str(-I64_MAX - 1)), X("INCRBY", s, str(I64_MAX + 1)), S("get", s),
        S("set", t, "5", ex=100), S("incr", t), S("ttl", t, norm=near(100, 2)), S("get", t),
        X("INCR"), X("INCRBY", k), X("DECR", k, "1"),
    ]


def sc_incrbyfloat(p: str) -> list[Step]:
    k, v = p + "k", p + "v"

    def add(key: str, increment: str) -> list[Step]:  # the stored text is compared, not a float
        return [X("INCRBYFLOAT", key, increment), S("get", key)]

    return [
        S("incrbyfloat", k, 10.5), S("incrbyfloat", k, 0.1), S("get", k),
        *add(k, "1e10"), *add(k, "-1e10"), *add(k, "3.0e3"), *add(k, "5e-3"), *add(k, "0x10"),
        *add(k, "-3010.6050000000004"), *add(k, "1.000000000000000000001"), *add(k, "-1e-20"),
        *add(k, "inf"), *add(k, "nan"), *add(k, "abc"), *add(k, " 1"), *add(k, "1e"), *add(k, "1e-5000"),
        *add(k, "1e5000"), *add(k, ".5"), *add(k, "5."), *add(k, "+2"), *add(k, "1E2"), *add(k, "0x1p-2"),
        S("set", v, "1e308"), *add(v, "1e308"), S("set", v, "x"), *add(v, "1"),
        S("set", v, "3", ex=100), *add(v, "-3"), S("ttl", v, norm=near(100, 2)),
        *add(v, "0.000003814697265625"), *add(v, "-0.1"), *add(v, "-0.000000000000000001"),
        S("set", v, "1.5e4000"), *add(v, "1"), S("set", v, "123456789012345678901234567890"), *add(v, "0.3"),
        X("INCRBYFLOAT", v), X("INCRBYFLOAT", v, "1", "2"),
    ]


def sc_append(p: str) -> list[Step]:
    k = p + "k"
    return [
        S("append", k, "ab"), S("append", k, "cde"), S("get", k), S("strlen", k),
        S("expire", k, 100), S("append", k, "f"), S("ttl", k, norm=near(100, 2)), S("get", k),
        X("APPEND", k),
    ]


def sc_connection(p: str) -> list[Step]:
    return [
        S("ping"), X("PING", "hello"), X("PING", "a", "b"), S("echo", "x"), X("ECHO"),
        X("SELECT", "0"), X("SELECT", "16"), X("SELECT", "-1"), X("SELECT", "x"),
        X("SELECT", "99999999999"), X("SELECT"), X("DBSIZE", "x"),
    ]


def sc_unknown(p: str) -> list[Step]:
    long = "x" * 100
    return [
        X("FOO"), X("FOO", "a", "b"), X("foo", "a b", "c"), X("NOSUCH", long, long, long),
        X("CLIENT"), X("CLIENT", "FOO", "bar"), X("client", "nosuch"),
        X("CLIENT", "SETNAME"), X("CLIENT", "GETNAME", "x"), X("COMMAND", "NOSUCH"), X("COMMAND", "COUNT", "x"),
        X("TTL"), X("GET", "a", "b", "c"), X("SET", "a"), X("HELLO", "x"), X("HELLO", "4"),
        X("HELLO", "2", "FOO"), X("HELLO", "2", "SETNAME"),
    ]


def sc_client(p: str) -> list[Step]:
    return [
        S("client_getname"), S("client_setname", "worker-1"), S("client_getname"),
        X("CLIENT", "SETNAME", "a b"), X("CLIENT", "SETNAME", "a\nb"), S("client_getname"),
        X("CLIENT", "SETNAME", ""), S("client_getname"), S("client_id", norm=kind),
        S("client_info", norm=lambda info: (info["db"], info["multi"], info["cmd"], info["name"])),
    ]


def sc_flush(p: str) -> list[Step]:
    return [
        S("flushall"), S("dbsize"), S("set", p + "a", "1"), S("set", p + "b", "1"), S("set", p + "c", "1"),
        S("dbsize"), S("info", "keyspace"), S("flushdb", asynchronous=True), S("dbsize"),
        S("info", "keyspace"), X("FLUSHALL", "FOO"), X("FLUSHDB", "SYNC"), X("FLUSHALL", "ASYNC", "x"),
        X("flushall", "sync"), S("dbsize"),
    ]


def sc_hello_auth(p: str) -> list[Step]:
    return [
        X("HELLO", norm=hello_shape), X("HELLO", "2", norm=hello_shape),
        X("HELLO", "2", "AUTH", "default", "anything", norm=hello_shape),
        X("HELLO", "2", "AUTH", "someone", "secret"), X("HELLO", "2", "AUTH", "default"),
        X("HELLO", "2", "SETNAME", "named", norm=hello_shape), S("client_getname"),
        X("AUTH", "secret"), X("AUTH", "default", "x"), X("AUTH", "someone", "x"), X("AUTH", "a", "b", "c"),
    ]


def sc_command(p: str) -> list[Step]:
    return [
        S("command_count", norm=kind), S("command_getkeys", "MSET", "a", "b", "c", "d"),
        S("command_getkeys", "GET", "k"), X("COMMAND", "GETKEYS", "GET"),
        X("COMMAND", "GETKEYS", "NOSUCH", "a"), X("COMMAND", "GETKEYS", "PING", "x"),
        X("COMMAND", "GETKEYS", "GET", "a", "b"), X("COMMAND", "DOCS", "nosuch"),
        S("command_list", pattern="getd*", norm=sorted), S("command_list", pattern="pexpire*", norm=sorted),
        X("COMMAND", "LIST", "FOO"),
        X("COMMAND", "INFO", "get", "set", "mget", "ttl", "mset", "del", "incr", "expire", norm=command_shape),
        X("COMMAND", norm=kind),
    ]


def sc_transactions(p: str) -> list[Step]:
    k = p + "k"
    return [
        X("EXEC"), X("DISCARD"), X("UNWATCH"), X("WATCH"), X("MULTI", "x"), X("EXEC", "x"),
        S("set", k, "1"), X("WATCH", k, k), X("UNWATCH"), S("get", k),
    ]


SCENARIOS: dict[str, Callable[[str], list[Step]]] = {
    name[3:]: fn for name, fn in globals().items() if name.startswith("sc_") and callable(fn)
}


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("mode", ["sync", "asyncio"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_as_redis(scenario: str, mode: str, protocol: int, redis_port: int, hoard_port: int) -> None:
    prefix = f"{scenario}:{mode}:{protocol}:"
    steps = SCENARIOS[scenario](prefix)
    run = run_sync if mode == "sync" else run_async
    expected = run(redis_port, protocol, steps)
    got = run(hoard_port, protocol, SCENARIOS[scenario](prefix))
    for (method, args, _, _), want, have in zip(steps, expected, got, strict=True):
        assert have == want, f"{method}{args}: hoard {have!r} != redis {want!r}"


# -- transactions and pipelines ----------------------------------------------------------------
def _pipeline_scenario(r: redis.Redis, p: str) -> list[Any]:
    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        key = f"{p}{i % 37}"
        op = i % 5
        if op == 0:
            pipe.set(key, i)
        elif op == 1:
            pipe.incr(key)
        elif op == 2:
            pipe.get(key)
        elif op == 3:
            pipe.append(key, "x")
        else:
            pipe.expire(key, 100)
    return pipe.execute(raise_on_error=False)


@pytest.mark.parametrize("protocol", [2, 3])
def test_pipeline_of_1000(protocol: int, redis_port: int, hoard_port: int) -> None:
    def run(port: int) -> list[Any]:
        with redis.Redis(port=port, protocol=protocol) as r:
            results = _pipeline_scenario(r, f"pipe{protocol}:")
            return [(type(x).__name__, str(x)) if isinstance(x, Exception) else x for x in results]
    want, got = run(redis_port), run(hoard_port)
    assert len(got) == 1000
    assert got == want


@pytest.mark.parametrize("protocol", [2, 3])
def test_transactions(protocol: int, redis_port: int, hoard_port: int) -> None:
    def run(port: int) -> list[Any]:
        out: list[Any] = []
        with redis.Redis(port=port, protocol=protocol) as r, redis.Redis(port=port, protocol=protocol) as other:
            k = f"tx{protocol}:k"
            r.delete(k)
            pipe = r.pipeline(transaction=True)
            pipe.set(k, "1").incr(k).get(k).ttl(k).incrbyfloat(k, 0.5)
            out.append(pipe.execute())
            pipe = r.pipeline(transaction=True)
            pipe.set(k, "x").incr(k).get(k)
            out.append(pipe.execute(raise_on_error=False)[1].args)
            pipe = r.pipeline(transaction=True)
            pipe.set(k, "2").execute_command("NOSUCH", "x")
            try:
                pipe.execute()
            except redis.RedisError as exc:
                out.append((type(exc).__name__, str(exc)))
            out.append(r.get(k))
            with r.pipeline() as watched:  # WATCH: a change by another client aborts EXEC
                watched.watch(k)
                other.set(k, "changed")
                watched.multi()
                watched.set(k, "mine")
                try:
                    watched.execute()
                except redis.WatchError as exc:
                    out.append(("WatchError", str(exc)))
            out.append(r.get(k))
            with r.pipeline() as watched:  # and no change lets it through
                watched.watch(k)
                watched.multi()
                watched.set(k, "mine")
                out.append(watched.execute())
            out.append(r.get(k))
        return out
    assert run(hoard_port) == run(redis_port)


# -- RESP3 specifics ---------------------------------------------------------------------------
def test_resp3_types(redis_port: int, hoard_port: int) -> None:
    def run(port: int) -> list[Any]:
        with redis.Redis(port=port, protocol=3) as r:
            r.delete("r3:a")
            hello = r.execute_command("HELLO", "3")
            return [
                hello_shape(hello), r.get("r3:a"), r.set("r3:a", "1", nx=True), r.set("r3:a", "1", nx=True),
                r.mget(["r3:a", "r3:b"]), r.execute_command("COMMAND", "DOCS", "nosuch"),
                r.execute_command("CLIENT", "GETNAME"), r.info("server")["redis_mode"],
                r.client_info()["resp"], r.getex("r3:none"), r.set("r3:a", "2", get=True),
                r.execute_command("HELLO", "2") and r.client_info()["resp"],
            ]
    assert run(hoard_port) == run(redis_port)


def test_raw_resp3_wire_format(hoard_port: int) -> None:
    with socket.create_connection(("127.0.0.1", hoard_port)) as sock:
        sock.sendall(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n")
        hello = recv_until(sock, b"modules\r\n*0\r\n")
        assert hello.startswith(b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
        sock.sendall(b"*2\r\n$3\r\nGET\r\n$8\r\nr3:nokey\r\n*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n"
                     b"*2\r\n$4\r\nECHO\r\n$3\r\nend\r\n")
        data = recv_until(sock, b"$3\r\nend\r\n")
        assert data.startswith(b"_\r\n=") and b"\r\ntxt:# Keyspace\r\n" in data


def _wire(port: int, *commands: list[str], resp3: bool = False) -> bytes:
    """The raw bytes a server answers to ``commands`` (after ``HELLO 3`` when ``resp3``)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        if resp3:
            sock.sendall(encode_commands([["HELLO", "3"]]))
            recv_until(sock, b"modules\r\n*0\r\n")
        sock.sendall(encode_commands([*commands, ["ECHO", "wire-end"]]))
        return recv_until(sock, b"$8\r\nwire-end\r\n")


@pytest.mark.parametrize("resp3", [False, True])
def test_wire_bytes_same_as_redis(resp3: bool, redis_port: int, hoard_port: int) -> None:
    p = f"wire{int(resp3)}:"
    commands = [
        ["DEL", p + "a", p + "n", p + "w"], ["GET", p + "a"], ["SET", p + "a", "1"],
        ["SET", p + "a", "2", "NX"], ["SET", p + "a", "3", "GET"], ["SET", p + "b", "3", "XX", "GET"],
        ["MGET", p + "a", p + "b"], ["GETEX", p + "b"], ["GETDEL", p + "b"], ["TTL", p + "a"],
        ["EXISTS", p + "a"], ["TYPE", p + "a"], ["TYPE", p + "b"], ["STRLEN", p + "a"], ["PING"],
        ["PING", "x"], ["ECHO", ""], ["INCRBYFLOAT", p + "n", "1.5"], ["INCR", p + "a"],
        ["CLIENT", "GETNAME"], ["CLIENT", "SETNAME", "wire"], ["CLIENT", "GETNAME"],
        ["COMMAND", "DOCS", "nosuch"], ["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"],
        ["COMMAND", "LIST", "FILTERBY", "PATTERN", "getdel"], ["COMMAND", "INFO", "nosuch"],
        ["SETNX", p + "a", "x"], ["MSETNX", p + "a", "1"], ["APPEND", p + "a", "xy"], ["SELECT", "0"],
        ["WATCH", p + "w"], ["SET", p + "w", "1"], ["MULTI"], ["PING"], ["EXEC"],
        ["MULTI"], ["SET", p + "a", "x"], ["INCR", p + "a"], ["GET", p + "nokey"], ["EXEC"],
        ["MULTI"], ["NOSUCH"], ["PING"], ["EXEC"], ["MULTI"], ["MULTI"], ["WATCH", "x"], ["DISCARD"],
        ["EXEC", "x"], ["SET", p + "e", "1", "EX", "100"], ["WATCH", p + "e"], ["EXPIRE", p + "e", "200"],
        ["MULTI"], ["PING"], ["EXEC"], ["WATCH", p + "e"], ["PERSIST", p + "e"], ["MULTI"], ["EXEC"],
        ["DEL", p + "a", p + "e", p + "n", p + "w"], ["RESET"], ["GET", p + "a"], ["CLIENT", "GETNAME"],
    ]
    assert _wire(hoard_port, *commands, resp3=resp3) == _wire(redis_port, *commands, resp3=resp3)


# -- protocol errors, pipelining on the wire, QUIT ---------------------------------------------
GARBAGE = [
    b"*abc\r\n",
    b"*1\r\nfoo\r\n",
    b"*1\r\n$abc\r\n",
    b"*1\r\n$4\r\nPING\r\n*x\r\n",
    b"*1\r\n$-5\r\n",
    b"*3000000000\r\n",
]


def _exchange(port: int, payload: bytes) -> tuple[bytes, bool]:
    """Send ``payload``; everything the server answers and whether it closed the connection."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)
        sock.settimeout(2.0)
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return data, True
                data += chunk
        except TimeoutError:
            return data, False


@pytest.mark.parametrize("payload", GARBAGE)
def test_garbage_closes_only_that_connection(payload: bytes, redis_port: int, hoard_port: int) -> None:
    with socket.create_connection(("127.0.0.1", hoard_port)) as bystander:
        bystander.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert recv_until(bystander, b"\r\n") == b"+PONG\r\n"
        got = _exchange(hoard_port, payload)
        assert got == _exchange(redis_port, payload)
        assert got[1], "the connection must be closed"
        assert got[0].endswith(b"\r\n") and b"-ERR Protocol error: " in got[0]
        bystander.sendall(b"*2\r\n$4\r\nECHO\r\n$5\r\nstill\r\n")
        assert recv_until(bystander, b"still\r\n") == b"$5\r\nstill\r\n"
    with redis.Redis(port=hoard_port) as r:
        assert r.ping()


def test_quit_reset_and_inline(redis_port: int, hoard_port: int) -> None:
    payloads = [
        b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n",
        b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*1\r\n$5\r\nRESET\r\n*2\r\n$3\r\nGET\r\n$6\r\nnokey!\r\nQUIT\r\n",
        b"*1\r\n$4\r\nPING\r\nECHO \"a b\"\r\nQUIT\r\n",
    ]
    for payload in payloads:
        want = _exchange(redis_port, payload)
        got = _exchange(hoard_port, payload)
        if payload.startswith(b"*2\r\n$5\r\nHELLO"):  # the HELLO map holds the client id and version
            want, got = (want[0][want[0].index(b"+RESET"):], want[1]), (got[0][got[0].index(b"+RESET"):], got[1])
        assert got == want


def test_pipelined_replies_in_one_read(hoard_port: int) -> None:
    payload = b"".join(b"*2\r\n$4\r\nECHO\r\n$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(500))
    with socket.create_connection(("127.0.0.1", hoard_port)) as sock:
        sock.sendall(payload)
        data = recv_until(sock, b"$3\r\n499\r\n")
    assert data == b"".join(b"$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(500))


def test_value_larger_than_an_item(hoard_port: int) -> None:
    with redis.Redis(port=hoard_port, protocol=2) as r:
        r.set("big:a", "x")
        with pytest.raises(redis.ResponseError, match="string exceeds maximum allowed size"):
            r.set("big:a", b"x" * (1024 * 1024 - 10))
        assert r.get("big:a") is None  # like memcached: a failed set leaves no stale value
        # a bulk beyond the item size is a protocol error (like redis's proto-max-bulk-len)
        with pytest.raises((redis.ConnectionError, redis.ResponseError)):
            r.set("big:b", b"x" * (2 * 1024 * 1024))
        assert r.ping()


# -- hoard only: SELECT, INFO, stats, cross-protocol ---------------------------------------------
def test_not_in_the_subset(hoard_port: int) -> None:
    with redis.Redis(port=hoard_port, protocol=2) as r:
        for command in (("KEYS", "*"), ("HSET", "h", "f", "v"), ("LPUSH", "l", "x"), ("SUBSCRIBE", "c")):
            with pytest.raises(redis.ResponseError, match=f"^unknown command '{command[0]}', with args beginning"):
                r.execute_command(*command)


def test_select_only_db_zero(hoard_port: int) -> None:
    with redis.Redis(port=hoard_port, protocol=2) as r:
        assert r.execute_command("SELECT", "0")
        with pytest.raises(redis.ResponseError, match="^DB index is out of range$"):
            r.execute_command("SELECT", "1")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        redis.Redis(port=hoard_port, db=3).ping()


def test_info_sections(redis_port: int, hoard_port: int) -> None:
    for protocol in (2, 3):
        for port in (redis_port, hoard_port):
            with redis.Redis(port=port, protocol=protocol) as r:
                info = r.info()
                for field in ("redis_version", "redis_mode", "process_id", "tcp_port", "uptime_in_seconds",
                              "connected_clients", "used_memory", "used_memory_human", "maxmemory",
                              "total_connections_received", "total_commands_processed", "keyspace_hits",
                              "keyspace_misses", "expired_keys", "evicted_keys", "role", "loading"):
                    assert field in info, (port, field)
                assert info["tcp_port"] == port and info["redis_mode"] == "standalone"
                assert set(r.info("clients")) >= {"connected_clients", "blocked_clients", "maxclients"}
                assert r.info("nosuchsection") == {}


def test_stats_counted_as_memcached(hoard_port: int) -> None:
    mc = MemcacheClient(("127.0.0.1", hoard_port), default_noreply=False)
    try:
        before = mc.stats()
        with redis.Redis(port=hoard_port, protocol=2) as r:
            r.set("st:a", "1")
            r.mget(["st:a", "st:b"])
            r.get("st:b")
            r.delete("st:a", "st:b")
            r.incr("st:n")
            r.flushall()
            hits = r.info("stats")["keyspace_hits"]
        after = mc.stats()
        delta = {key: after[key] - before[key] for key in (b"cmd_get", b"get_hits", b"get_misses", b"cmd_set",
                                                           b"delete_hits", b"delete_misses", b"cmd_flush",
                                                           b"incr_misses")}
        assert delta == {b"cmd_get": 3, b"get_hits": 1, b"get_misses": 2, b"cmd_set": 1, b"delete_hits": 1,
                         b"delete_misses": 1, b"cmd_flush": 1, b"incr_misses": 1}
        assert hits == after[b"get_hits"]
    finally:
        mc.close()


def test_cross_protocol(hoard_port: int) -> None:
    mc = MemcacheClient(("127.0.0.1", hoard_port), default_noreply=False)
    try:
        with redis.Redis(port=hoard_port, protocol=3) as r:
            r.set("x:from-redis", b"value \x00 bytes")
            assert mc.get(b"x:from-redis") == b"value \x00 bytes"
            assert mc.gets(b"x:from-redis")[0] == b"value \x00 bytes"
            mc.set(b"x:from-mc", b"memcached value")
            assert r.get("x:from-mc") == b"memcached value"
            mc.set(b"x:ttl", b"1", expire=100)
            assert 98 <= r.ttl("x:ttl") <= 100
            r.expire("x:from-mc", 50)
            mc.touch(b"x:from-mc", 0)
            assert r.ttl("x:from-mc") == -1
            r.incr("x:counter")
            assert mc.get(b"x:counter") == b"1"
            assert mc.incr(b"x:counter", 5) == 6
            assert r.incrby("x:counter", 10) == 16
            r.append("x:from-mc", "!")
            assert mc.get(b"x:from-mc") == b"memcached value!"
            mc.delete(b"x:from-redis")
            assert r.exists("x:from-redis") == 0
            r.set("x:gone", "1", px=1)
            time.sleep(0.01)
            assert mc.get(b"x:gone") is None
            r.mset({"x:m1": "a", "x:m2": "b"})
            assert mc.get_many([b"x:m1", b"x:m2"]) == {b"x:m1": b"a", b"x:m2": b"b"}
    finally:
        mc.close()
