"""The pure parts of redis pools: reply framing, the command table, the merges, the SCAN cursor.

The framer is fed reply streams built with the protocol core's encoder (every
RESP2 and RESP3 type, nested), cut at every byte and in random pieces, and
must hand each waiter exactly the bytes of its reply.
"""

from __future__ import annotations

import random

import pytest

from scatterhoard.errors import HoardError, ProtocolError
from scatterhoard.fifo import Fifo
from scatterhoard.protocol.resp import (
    Attributed,
    BigNumber,
    BlobError,
    Error,
    Push,
    RespSet,
    SimpleString,
    Verbatim,
)
from scatterhoard.protocol.resp import encode as encode_value
from scatterhoard.proxy.backend import CONNECTED, LINE, BackendConnection, Context, Waiter
from scatterhoard.proxy.config import parse_config
from scatterhoard.proxy.pool import Pool
from scatterhoard.proxy.redis_backend import RespFramer
from scatterhoard.proxy.redis_commands import ANY, TABLE, UNSUPPORTED, CommandError, lookup
from scatterhoard.proxy.redis_merge import merge_info, merge_mget, merge_ok, merge_sum, scan_reply
from scatterhoard.proxy.redis_session import ProxyRespParser, RedisSession, encode
from tests.test_proxy_units import FakeLoop, FakeTransport

VALUES: list[object] = [
    SimpleString(b"OK"), Error(b"ERR bad"), 42, -7, b"", b"bulk\r\nwith crlf", None, b"x" * 70_000,
    [b"a", None, 1, [b"nested", [SimpleString(b"deep"), []]]], [], {b"k": b"v", b"n": [1, 2]},
    RespSet([b"m1", b"m2"]), 3.25, True, False, BigNumber(10**30), Verbatim(b"txt", b"some text"),
    BlobError(b"SYNTAX blob\r\nerror"), Push([b"message", b"ch", b"data"]),
    Attributed(b"annotated", {b"ttl": 5}), [Attributed(7, {b"a": [1]}), b"after"],
]


def fifo_of(*waiters: Waiter) -> Fifo[Waiter]:
    fifo: Fifo[Waiter] = Fifo()
    fifo.extend(waiters)
    return fifo


class Got(Waiter):
    __slots__ = ("out",)

    def __init__(self, out: list[bytes]) -> None:
        super().__init__(LINE)
        self.out = out

    def complete(self, raw: bytes) -> None:
        self.out.append(raw)


def run_framer(replies: list[bytes], cuts: list[int]) -> list[bytes]:
    """Feed the concatenated replies in pieces (as BackendConnection does: buffer until ``need``)."""
    framer = RespFramer()
    out: list[bytes] = []
    expect = fifo_of(*(Got(out) for _ in replies))
    stream = b"".join(replies)
    buf = b""
    need = 0
    start = 0
    for cut in [*cuts, len(stream)]:
        buf += stream[start:cut]
        start = cut
        if not buf or len(buf) < need:
            continue
        _count, pos, need = framer.split(buf, expect)
        buf = buf[pos:]
    assert not buf and not expect
    return out


@pytest.mark.parametrize("resp3", [False, True])
def test_framer_cut_everywhere(resp3: bool) -> None:
    replies = [encode_value(v, resp3=resp3) for v in VALUES if not (isinstance(v, bytes) and len(v) > 1000)]
    stream_len = sum(map(len, replies))
    for cut in range(1, stream_len):
        assert run_framer(replies, [cut]) == replies, cut


def test_framer_random_pieces() -> None:
    rng = random.Random(5)
    for _ in range(200):
        values = [rng.choice(VALUES) for _ in range(rng.randint(1, 12))]
        replies = [encode_value(v, resp3=rng.random() < 0.5) for v in values]
        total = sum(map(len, replies))
        cuts = sorted(rng.sample(range(1, total), min(total - 1, rng.randint(0, 20))))
        assert run_framer(replies, cuts) == replies


def test_framer_rejects_garbage() -> None:
    for bad in (b"?what\r\n", b"$abc\r\n", b"*x\r\n"):
        with pytest.raises(ProtocolError):
            RespFramer().split(bad, fifo_of(Got([])))


def test_command_table() -> None:
    assert isinstance(CommandError("x"), HoardError)
    get, mset, evalsha = lookup(b"get"), lookup(b"MSET"), lookup(b"EvalSha")
    assert get is TABLE[b"GET"] and get.single and get.keys([b"get", b"k"]) == [b"k"]
    assert mset.keys([b"mset", b"a", b"1", b"b", b"2"]) == [b"a", b"b"]
    with pytest.raises(CommandError, match="wrong number of arguments for 'mset'"):
        mset.check_arity(4)
    assert evalsha.keys([b"evalsha", b"sha", b"2", b"k1", b"k2", b"arg"]) == [b"k1", b"k2"]
    assert lookup(b"zinterstore").keys([b"zinterstore", b"d", b"2", b"a", b"b", b"WEIGHTS", b"1", b"2"]) == \
        [b"d", b"a", b"b"]
    assert lookup(b"sort").keys([b"sort", b"k", b"BY", b"w_*", b"STORE", b"dst"]) == [b"k", b"dst"]
    assert lookup(b"georadius").keys([b"georadius", b"g", b"1", b"2", b"3", b"km", b"STOREDIST", b"d"]) == \
        [b"g", b"d"]
    # option keys are found as redis finds them: not among positional arguments, not as another
    # option's value, the last STORE counts, a STORE without a value is no key
    sort, radius, by_member = lookup(b"sort"), lookup(b"georadius"), lookup(b"georadiusbymember")
    assert sort.keys([b"sort", b"k", b"GET", b"store", b"BY", b"STORE", b"LIMIT", b"store", b"1"]) == [b"k"]
    assert sort.keys([b"sort", b"k", b"store", b"a", b"ALPHA", b"store", b"b"]) == [b"k", b"b"]
    assert sort.keys([b"sort", b"store", b"DESC", b"STORE"]) == [b"store"]
    assert by_member.keys([b"georadiusbymember", b"g", b"store", b"100", b"km"]) == [b"g"]
    assert by_member.keys([b"georadiusbymember", b"g", b"m", b"100", b"km", b"store", b"d"]) == [b"g", b"d"]
    assert radius.keys([b"georadius", b"g", b"1", b"2", b"store", b"km", b"ASC"]) == [b"g"]
    assert radius.keys([b"GEORADIUS", b"g", b"1", b"2", b"3", b"km", b"COUNT", b"5", b"StoreDist", b"d"]) == \
        [b"g", b"d"]
    for name in (b"command", b"LOLWUT"):  # keyless, to any live server; no longer refused
        assert lookup(name).kind == ANY and lookup(name).keys([name, b"x"]) == []
    with pytest.raises(CommandError, match="at least one key"):
        lookup(b"eval").keys([b"eval", b"return 1", b"0"])
    with pytest.raises(CommandError, match="greater than number of args"):
        lookup(b"eval").keys([b"eval", b"return 1", b"3", b"k"])
    for name, family in ((b"keys", "keyspace"), (b"multi", "transactions"), (b"subscribe", "pub/sub"),
                         (b"blpop", "blocking"), (b"flushall", "server")):
        with pytest.raises(CommandError, match=f"unsupported command '{name.decode()}' behind a proxy \\({family}"):
            lookup(name)
    with pytest.raises(CommandError) as exc:
        lookup(b"nosuch'\r\n")
    assert exc.value.reply == b"-ERR unsupported command 'nosuch???' (not in hoard proxy's command table)\r\n"
    for name, version in ((b"HEXPIRE", "7.4"), (b"httl", "7.4"), (b"HGetDel", "8.0"), (b"hsetex", "8.0")):
        with pytest.raises(CommandError) as exc:  # newer than the redis 7.0 commands the table follows
            lookup(name)
        assert exc.value.reply == (f"-ERR unsupported command '{name.decode()}' (not in hoard proxy's command table: "
                                   f"added in redis {version}, after the redis 7.0 commands the table follows)\r\n"
                                   ).encode()
    assert all(command.reason for command in TABLE.values() if command.kind == UNSUPPORTED)


def test_merges() -> None:
    # MGET: key i is in part owners[i]; RESP2 and RESP3 nulls pass through untouched
    parts = [b"*2\r\n$1\r\na\r\n$-1\r\n", b"*3\r\n_\r\n$2\r\nbb\r\n$1\r\nc\r\n"]
    assert merge_mget(parts, [1, 0, 1, 0, 1]) == b"*5\r\n_\r\n$1\r\na\r\n$2\r\nbb\r\n$-1\r\n$1\r\nc\r\n"
    assert merge_mget([parts[0], b"-ERR Connection refused\r\n"], [0, 1, 0]) == b"-ERR Connection refused\r\n"
    assert merge_sum([b":2\r\n", b":0\r\n", b":5\r\n"]) == b":7\r\n"
    assert merge_sum([b":2\r\n", b"-ERR Connection timed out\r\n"]) == b"-ERR Connection timed out\r\n"
    assert merge_sum([b":2\r\n", b"+OK\r\n"]).startswith(b"-ERR unexpected reply")
    assert merge_ok([b"+OK\r\n", b"+OK\r\n"]) == b"+OK\r\n"
    assert merge_ok([b"+OK\r\n", b"-OOM no\r\n"]) == b"-OOM no\r\n"
    one = b"# Server\r\nredis_version:7.0.15\r\nprocess_id:11\r\n\r\n# Clients\r\nconnected_clients:3\r\n\r\n" \
          b"# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=100\r\n"
    two = b"# Server\r\nredis_version:7.0.15\r\nprocess_id:22\r\n\r\n# Clients\r\nconnected_clients:4\r\n\r\n" \
          b"# Keyspace\r\ndb0:keys=5,expires=0,avg_ttl=300\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n"
    merged = merge_info([b"$%d\r\n%b\r\n" % (len(one), one), b"=%d\r\ntxt:%b\r\n" % (len(two) + 4, two)],
                        ["a", "b"])
    text = merged.split(b"\r\n", 1)[1]
    assert merged.startswith(b"$%d\r\n" % (len(text) - 2))
    for line in (b"servers:2", b"redis_version:7.0.15", b"process_id:11", b"connected_clients:7",
                 b"db0:keys=15,expires=2,avg_ttl=200", b"db3:keys=1,expires=0,avg_ttl=0"):
        assert line + b"\r\n" in text


def test_scan_cursor() -> None:
    reply = b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\nk\r\n"
    assert scan_reply(reply, 1, 3) == b"*2\r\n$2\r\n52\r\n*1\r\n$1\r\nk\r\n"  # 17 * 3 + 1
    assert 52 % 3 == 1 and 52 // 3 == 17  # and the session decodes it back
    done = b"*2\r\n$1\r\n0\r\n*0\r\n"
    assert scan_reply(done, 0, 3) == b"*2\r\n$1\r\n1\r\n*0\r\n"  # on to server 1, from its start
    assert scan_reply(done, 2, 3) == b"*2\r\n$1\r\n0\r\n*0\r\n"  # the last server: finished
    assert scan_reply(b"-ERR x\r\n", 0, 3) == b"-ERR x\r\n"


# -- the session's GET/SET fast path forwards what the parser path would --------------------------

class NeverIdle(ProxyRespParser):
    """A parser that never lets the session take its fast path."""

    __slots__ = ()

    def idle(self) -> bool:
        return False


class RedisRig:
    """A redis pool of ``nservers`` fake connected backends and one client session."""

    def __init__(self, nservers: int, fast: bool) -> None:
        servers = "".join(f"   - 127.0.0.1:{1000 + i}:1\n" for i in range(nservers))
        cfg = parse_config(f"p:\n  listen: 127.0.0.1:1\n  redis: true\n  servers:\n{servers}")
        self.loop = FakeLoop()
        self.pool = Pool(cfg.pools[0], Context(self.loop, 0.0))  # type: ignore[arg-type]
        self.conns = []
        for server in self.pool.servers:
            conn = BackendConnection(server, None)
            conn.state = CONNECTED
            conn.transport = FakeTransport()  # type: ignore[assignment]
            server.conns.append(conn)
            self.conns.append(conn)
        self.session = RedisSession(self.pool)
        self.session.connection_made(FakeTransport())  # type: ignore[arg-type]
        if not fast:
            self.session.parser = NeverIdle()

    def send(self, data: bytes) -> None:
        self.session.data_received(data)
        self.loop.run()

    def sent(self) -> list[bytes]:
        return [b"".join(c.transport.written) for c in self.conns]  # type: ignore[union-attr]


def test_get_set_fast_path_forwards_what_the_parser_would() -> None:
    rng = random.Random(9)
    shapes = [
        lambda k: encode([b"GET", k]), lambda k: encode([b"get", k]), lambda k: encode([b"SET", k, k + b"!"]),
        lambda k: encode([b"set", b"", k]), lambda k: encode([b"SET", k, b"v", b"EX", b"10"]),
        lambda k: encode([b"MGET", k, b"other"]), lambda k: b"GET %b\r\n" % k, lambda k: encode([b"Get", k]),
        lambda k: b"*2\r\n$3\r\nGET\r\n$03\r\nabc\r\n",  # a leading zero: left to the parser
        lambda k: encode([b"SET", k, b"x" * rng.choice((0, 5, 20000))]),
    ]
    for _ in range(300):
        stream = b"".join(rng.choice(shapes)(b"k%d" % rng.randrange(50)) for _ in range(rng.randint(1, 12)))
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 3))))
        got = []
        for fast in (True, False):
            rig = RedisRig(3, fast)
            start = 0
            for cut in [*cuts, len(stream)]:
                rig.send(stream[start:cut])
                start = cut
            got.append((rig.sent(), len(rig.session.queue)))
        assert got[0] == got[1], stream
        assert sum(map(len, got[0][0])) > 0
