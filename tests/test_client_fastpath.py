"""The single-key commands' fast paths answer exactly as the plans in ClientCore do.

``Client`` runs get/set/add/replace/append/prepend/delete/incr/decr/touch
without a plan over the text protocol, decoding a reply that arrives whole
without the connection state; ``AsyncClient`` runs them without a plan over
every protocol.  Here each call is made both ways -- the public method, and
the generic plan (``client._run(client.core.<command>(...))``) -- against
real memcached servers and scripted ones, and everything must agree: the
answers or exceptions, what the server stores, the pool and the failure
counts.  Validation (keys, values, expiry) must happen before any I/O.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scatterhoard import Client
from scatterhoard.client.codec import TextConnState
from scatterhoard.client.codec_text import QUICK_CODE, QUICK_NUMBER, QUICK_VALUES, Quick
from scatterhoard.client.errors import ValueTooLargeError
from scatterhoard.client.sync import SEND_ALL_LIMIT
from scatterhoard.errors import CacheConnectionError, ClientError
from scatterhoard.protocol.text_client import Value
from tests.test_client_commands import PAST, Blocking, make_client, pool_of, quick_memcached, raw_get
from tests.test_client_failover import Backends, fake_server, keys_on, three  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(120)

IOS = ("sync", "async")


def plan(c: Any, command: str, *args: Any, **kwargs: Any) -> Any:
    """``command`` run through its generic plan, as every command was before the fast paths."""
    if isinstance(c, Blocking):
        return c.loop.run_until_complete(c.client._run(getattr(c.client.core, command)(*args, **kwargs)))
    return c._run(getattr(c.core, command)(*args, **kwargs))


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as exc:
        return type(exc).__name__, str(exc)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with quick_memcached() as p:
        yield p


# -- the same answers as the plans, against memcached ------------------------------------------------


def scenario(c: Any, call: Callable[..., Any], p: str, port: int) -> list[object]:
    """Every fast-path command, under keys prefixed ``p``; each answer is asserted and recorded."""
    out: list[object] = []

    def step(command: str, *args: Any, want: object, **kwargs: Any) -> None:
        got = outcome(lambda: call(c, command, *args, **kwargs))
        assert got == ("ok", want), f"step {len(out)} {command}{args}: {got!r}"
        out.append(got)

    big = bytes(range(256)) * (3 * SEND_ALL_LIMIT // 256)  # sent through select, read in many chunks
    tricky = b"x\r\nEND\r\nVALUE other 0 1\r\ny\r\nEND\r\n"  # reply framing inside a value
    step("get", p + "a", want=None)
    step("get", p + "a", b"dflt", want=b"dflt")
    step("set", p + "a", b"one", want=True)
    step("get", p + "a", want=b"one")
    step("add", p + "a", b"2", want=False)
    step("add", p + "b", b"2", want=True)
    step("replace", p + "a", b"three", want=True)
    step("replace", p + "missing", b"3", want=False)
    step("append", p + "a", b"4", want=True)
    step("prepend", p + "a", b"5", want=True)
    step("append", p + "missing", b"4", want=False)
    step("prepend", p + "missing", b"4", want=False)
    step("get", p + "a", want=b"5three4")
    step("touch", p + "a", 100, want=True)
    step("touch", p + "missing", 100, want=False)
    step("incr", p + "n", want=None)
    step("decr", p + "n", want=None)
    step("set", p + "n", b"10", want=True)
    step("incr", p + "n", want=11)
    step("incr", p + "n", 5, want=16)
    step("decr", p + "n", 100, want=0)
    step("set", p + "n", b"18446744073709551615", want=True)
    step("incr", p + "n", 2, want=1)  # wraps at 2**64
    out.append(outcome(lambda: call(c, "incr", p + "a", 1)))  # not a number
    assert out[-1][0] == "ClientError"
    step("delete", p + "a", want=True)
    step("delete", p + "a", want=False)
    step("get", p + "a", want=None)
    for value in (b"", tricky, big):
        step("set", p + "v", value, want=True)
        step("get", p + "v", want=value)
    # keys: str, bytes, UTF-8; unusable ones are stored under their md5 (long_keys="hash")
    step("set", "ключ " + p, "значение".encode(), want=True)
    step("get", ("ключ " + p).encode(), want="значение".encode())
    long_key = p + "L" * 300
    step("set", long_key, b"long", want=True)
    assert raw_get(port, hashlib.md5(long_key.encode()).hexdigest().encode()).endswith(b"\r\nlong\r\nEND\r\n")
    step("get", long_key, want=b"long")
    step("set", p + "ctl\x01", b"ctl", want=True)
    assert raw_get(port, hashlib.md5((p + "ctl\x01").encode()).hexdigest().encode()).endswith(b"ctl\r\nEND\r\n")
    # noreply (success is assumed), expiry
    step("set", p + "nr", b"1", noreply=True, want=True)
    step("append", p + "nr", b"2", noreply=True, want=True)
    step("delete", p + "nope", noreply=True, want=True)
    step("incr", p + "nope", noreply=True, want=None)
    step("touch", p + "nr", 100, noreply=True, want=True)
    step("get", p + "nr", want=b"12")
    step("set", p + "gone", b"x", PAST, want=True)
    step("get", p + "gone", want=None)
    step("set", p + "later", b"x", 3600, want=True)
    step("touch", p + "later", PAST, want=True)
    step("get", p + "later", want=None)
    return out


def fast(c: Any, command: str, *args: Any, **kwargs: Any) -> Any:
    return getattr(c, command)(*args, **kwargs)


@pytest.mark.parametrize("protocol", ["text", "meta", "binary"])
@pytest.mark.parametrize("io", IOS)
def test_fast_paths_answer_as_the_plans(port: int, io: str, protocol: str) -> None:
    c = make_client(io, f"127.0.0.1:{port}", protocol=protocol, on_error="raise")
    try:
        assert scenario(c, fast, f"f-{io}-{protocol}:", port) == scenario(c, plan, f"p-{io}-{protocol}:", port)
        assert pool_of(c).size == 1  # one connection did it all
    finally:
        c.close()


@pytest.mark.parametrize("io", IOS)
def test_fast_paths_serialize_and_expire_as_configured(port: int, io: str) -> None:
    c = make_client(io, f"127.0.0.1:{port}", serde="json", default_expire=PAST, on_error="raise")
    keep = make_client(io, f"127.0.0.1:{port}", serde="basic", mode="add", on_error="raise")
    try:
        for p, call in ((f"f-serde-{io}:", fast), (f"p-serde-{io}:", plan)):
            for value in ("é", 7, [1, {"two": None}]):
                assert call(c, "set", p + "x", value) is True  # default_expire: gone at once
                assert call(c, "get", p + "x") is None
                assert call(c, "set", p + "x", value, 0) is True
                assert call(c, "get", p + "x") == value
            assert raw_get(port, (p + "x").encode()).startswith(f"VALUE {p}x 32 ".encode())  # FLAG_JSON
            assert call(keep, "set", p + "s", "text") is True  # mode="add": set adds
            assert call(keep, "set", p + "s", "other") is False
            assert call(keep, "get", p + "s") == "text"
            assert raw_get(port, (p + "s").encode()).startswith(f"VALUE {p}s 16 ".encode())  # FLAG_TEXT
            with pytest.raises(TypeError):
                call(keep, "set", p + "bad", 1.5)
    finally:
        c.close()
        keep.close()


# -- validation before any I/O -------------------------------------------------------------------

KEYED: list[tuple[str, tuple[Any, ...]]] = [
    ("get", ()), ("set", (b"v",)), ("add", (b"v",)), ("replace", (b"v",)), ("append", (b"v",)),
    ("prepend", (b"v",)), ("delete", ()), ("incr", ()), ("decr", ()), ("touch", (1,)),
]


@pytest.mark.parametrize("io", IOS)
def test_fast_paths_validate_before_sending(io: str) -> None:
    # Nothing listens there: any attempt to send would count as a connection failure.
    c = make_client(io, "127.0.0.1:1", long_keys="error", on_error="raise", max_value_size=10)
    try:
        for bad_key, error in (("k" * 251, ClientError), ("a b", ClientError), ("bad\nkey", ClientError),
                               ("", ClientError), (42, TypeError)):
            for command, rest in KEYED:
                with pytest.raises(error):
                    getattr(c, command)(bad_key, *rest)
        with pytest.raises(ValueTooLargeError, match="max_value_size"):
            c.set("k", b"x" * 11)
        with pytest.raises(TypeError):
            c.set("k", "not bytes")
        for command, args in (("set", ("k", b"v", -1)), ("touch", ("k", 2**31)), ("incr", ("k", -1)),
                              ("decr", ("k", 2**64))):
            with pytest.raises(ValueError):
                getattr(c, command)(*args)
        assert pool_of(c).size == 0 and c.core.failures == [0]  # nothing was tried
    finally:
        c.close()
    miss = make_client(io, "127.0.0.1:1", max_value_size=10)
    try:
        assert miss.set("k", b"x" * 11) is False  # on_error="miss": logged, not raised
        assert pool_of(miss).size == 0 and miss.core.failures == [0]
    finally:
        miss.close()


# -- replies: split, refused, garbage -------------------------------------------------------------

CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("get", ("k",)), ("set", ("k", b"hello")), ("add", ("k", b"hello")), ("append", ("k", b"x")),
    ("delete", ("k",)), ("incr", ("k", 3)), ("decr", ("k",)), ("touch", ("k", 5)),
]
REPLIES = [
    b"VALUE k 3 5\r\nhello\r\nEND\r\n", b"END\r\n", b"STORED\r\n", b"NOT_STORED\r\n", b"DELETED\r\n",
    b"NOT_FOUND\r\n", b"TOUCHED\r\n", b"42\r\n", b"ERROR\r\n", b"CLIENT_ERROR bad data chunk\r\n",
    b"SERVER_ERROR out of memory storing object\r\n", b"SERVER_ERROR object too large for cache\r\n",
    b"HELLO THERE\r\n",
]


@pytest.mark.parametrize("split", [0, 1])
@pytest.mark.parametrize("io", IOS)
def test_scripted_replies_are_read_as_the_plans_read_them(io: str, split: int) -> None:
    """Every command meets every reply, whole or in two reads (a partial first read must not be
    taken for the reply); the fast path and the plan agree on the answer, on the connections
    kept and on the failures counted."""
    for reply in REPLIES:
        with fake_server(reply, split) as port:
            for on_error in ("raise", "miss") if not split else ("raise",):
                for command, args in CALLS:
                    results = []
                    for call in (fast, plan):
                        c = make_client(io, f"127.0.0.1:{port}", on_error=on_error, failure_limit=0,
                                        timeout=2000)
                        try:
                            results.append((outcome(lambda: call(c, command, *args)),  # noqa: B023
                                            pool_of(c).size, list(c.core.failures)))
                        finally:
                            c.close()
                    assert results[0] == results[1], (reply, split, on_error, command)
            if split and reply in (b"STORED\r\n", b"42\r\n"):  # nothing is left over for the next call
                c = make_client(io, f"127.0.0.1:{port}", on_error="raise")
                try:
                    for _ in range(3):
                        if reply == b"STORED\r\n":
                            assert c.set("k", b"v") is True
                        else:
                            assert c.incr("k") == 42
                    assert pool_of(c).size == 1
                finally:
                    c.close()


# -- failover -------------------------------------------------------------------------------------


@pytest.mark.parametrize("io", IOS)
def test_fast_paths_fail_over_and_come_back(three: Backends, io: str) -> None:  # noqa: F811 (fixture)
    c = make_client(io, three.servers, on_error="raise", failure_limit=2, retry_timeout=300, timeout=1000,
                    connect_timeout=1000)
    miss = make_client(io, three.servers, failure_limit=0, timeout=1000, connect_timeout=1000)
    try:
        victim = keys_on(three.servers, 1, 12)
        assert c.set(victim[0], b"v") is True
        three.stop(1)
        # an outage with on_error="miss": every command answers its miss, nothing raises
        assert miss.get(victim[0]) is None and miss.get(victim[0], b"d") == b"d"
        for command in ("set", "add", "replace", "append", "prepend"):
            assert getattr(miss, command)(victim[0], b"x") is False
        assert miss.delete(victim[0]) is False and miss.touch(victim[0], 5) is False
        assert miss.incr(victim[0]) is None and miss.decr(victim[0]) is None
        assert miss.core.failures[1] > 0 and miss.core.ejected == set()
        # on_error="raise": connection errors are raised and counted; two in a row eject the server
        with pytest.raises(CacheConnectionError):
            c.get(victim[0])  # its pooled connection is dead
        with pytest.raises(CacheConnectionError):
            c.set(victim[1], b"x")  # connection refused
        assert c.core.ejected == {1}
        # its keys now go to the other servers, through the fast paths too
        moved = victim[2:]
        for i, key in enumerate(moved):
            assert c.set(key, b"%d" % i) is True
            assert c.get(key) == b"%d" % i
        held = [k for port in (three.ports[0], three.ports[2]) for k in moved
                if raw_get(port, k.encode()) != b"END\r\n"]
        assert sorted(held) == sorted(moved)
        assert c.incr(moved[0], 5) == 5 and c.decr(moved[0]) == 4
        assert c.add(moved[0], b"y") is False and c.replace(moved[0], b"7") is True
        assert c.append(moved[0], b"8") is True and c.get(moved[0]) == b"78"
        assert c.touch(moved[1], 100) is True and c.delete(moved[1]) is True and c.get(moved[1]) is None
        three.start(1)
        time.sleep(max(0.0, c.core._retry_at[1] - time.monotonic()) + 0.02)
        assert c.get(victim[0]) is None  # the probe went first: back, on a fresh memcached
        assert c.core.ejected == set() and c.core.router.live == frozenset({0, 1, 2})
        assert c.set(victim[0], b"home") is True
        assert raw_get(three.ports[1], victim[0].encode()).endswith(b"home\r\nEND\r\n")
    finally:
        c.close()
        miss.close()


def test_sync_fast_path_replaces_a_dead_pooled_connection(port: int) -> None:
    """A pooled connection that broke fails once (counted, dropped); the next call connects again."""
    c = Client(f"127.0.0.1:{port}", on_error="raise", failure_limit=0)
    try:
        assert c.set("dead", b"1") is True
        pool_of(c).idle[0].sock.shutdown(2)
        with pytest.raises(CacheConnectionError):
            c.get("dead")
        assert pool_of(c).size == 0 and c.core.failures == [1]
        assert c.get("dead") == b"1" and c.core.failures == [0]
    finally:
        c.close()


# -- the quick decoders agree with the connection state ------------------------------------------


def _decoded(quick: Quick, data: bytes) -> tuple[bool, object]:
    """What the general path makes of ``data``: (request done, its result or exception type)."""
    state = TextConnState()
    request = quick.request("test", b"")
    state.submit(request)
    try:
        state.feed(data)
        return request.done, request.result()
    except Exception as exc:
        return request.done, type(exc)


@pytest.mark.parametrize("quick", [QUICK_VALUES, QUICK_CODE, QUICK_NUMBER], ids=["values", "code", "number"])
def test_quick_decoders_agree_with_the_connection_state(quick: Quick) -> None:
    corpus = REPLIES + [
        b"VALUE k 0 0\r\n\r\nEND\r\n", b"VALUE k 1 3 99\r\nEND\r\nEND\r\n", b"EXISTS\r\n", b"0\r\n",
        b"VALUE a 0 1\r\nx\r\nVALUE b 2 1\r\ny\r\nEND\r\n", b"18446744073709551615\r\n", b"\r\n",
    ]
    for data in corpus:
        parsed = quick.parse(data)
        if parsed is not None:
            assert _decoded(quick, data) == (True, parsed), data
    assert QUICK_VALUES.parse(b"VALUE k 3 5\r\nhello\r\nEND\r\n") == [Value(b"k", 3, b"hello", 0)]
    assert QUICK_VALUES.parse(b"VALUE k 1 3 99\r\nEND\r\nEND\r\n") == [Value(b"k", 1, b"END", 99)]
    assert QUICK_VALUES.parse(b"END\r\n") == []
    assert QUICK_CODE.parse(b"NOT_FOUND\r\n") == 3 and QUICK_NUMBER.parse(b"7\r\n") == 7
    # anything incomplete, unusual or refused is left to the general path
    for data in (b"S", b"\r", b"42\r", b"STORED", b"STORED\r\nSTORED\r\n", b"VALUE k 0 5\r\nhel",
                 b"VALUE k 0 2\r\nhello\r\nEND\r\n", b"VALUE k x 1\r\ny\r\nEND\r\n",
                 b"SERVER_ERROR out of memory\r\n", b"ERROR\r\n", b"\r\n"):
        assert quick.parse(data) is None, data
    assert QUICK_VALUES.parse(b"NOT_FOUND\r\n") is None and QUICK_NUMBER.parse(b"NOT_FOUND\r\n") is None
    assert QUICK_VALUES.parse(b"STORED\r\n") is None and QUICK_CODE.parse(b"42\r\n") is None


def test_a_line_reply_split_after_one_byte_is_not_taken_whole() -> None:
    state = TextConnState()
    request = QUICK_CODE.request("set", b"")
    state.submit(request)
    state.feed(b"S")
    assert not request.done
    state.feed(b"TORED\r\n")
    assert request.done and request.result() == 0 and state.idle


# -- polling for a reply before sleeping (Client's spin_us) ------------------------------------------


def test_a_server_slower_than_the_spin_turns_polling_off_for_a_while() -> None:
    """Every reply comes 20 ms late: the first get polls its 2 ms in vain, then the connection
    sleeps in recv for the next SPIN_BACKOFF replies instead of burning CPU on each; answers stay right."""
    from scatterhoard.client.sync import SPIN_BACKOFF

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while not stop.is_set():
                data = conn.recv(65536)
                if not data:
                    return
                time.sleep(0.02)
                conn.sendall(b"END\r\n" * data.count(b"\n"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with Client(f"127.0.0.1:{listener.getsockname()[1]}", spin_us=2000, on_error="raise") as c:
            assert c.get("a") is None
            (conn,) = c._pools[0].idle
            assert conn.spin_ns == 2_000_000 and conn.spin_skip == SPIN_BACKOFF
            for i in range(3):
                assert c.get("b") is None
                assert conn.spin_skip == SPIN_BACKOFF - 1 - i
        with Client("127.0.0.1:1", spin_us=0) as c:
            assert c._spin_ns == 0
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_polling_clients_answer_as_sleeping_ones(port: int) -> None:
    with Client(f"127.0.0.1:{port}", spin_us=0) as sleeper, Client(f"127.0.0.1:{port}", spin_us=5000) as poller:
        for i in range(50):
            value = b"v" * (i * 997 % 70_000)  # some replies span several reads
            assert poller.set(f"spin{i}", value)
            assert sleeper.get(f"spin{i}") == value == poller.get(f"spin{i}")
        assert poller.get_many([f"spin{i}" for i in range(50)]) == sleeper.get_many([f"spin{i}" for i in range(50)])
