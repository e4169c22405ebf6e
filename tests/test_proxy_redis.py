"""``hoard proxy`` redis pools in front of real redis-server backends, driven with redis-py.

Every supported command family runs through the proxy and against one plain
redis-server (the reference) and must give the same results; multi-key
commands are split over the servers and merged; hash tags keep keys together;
a pipeline of 1000 commands; the proxy's own commands (PING, AUTH, SELECT,
INFO, DBSIZE, SCAN...); the keyless COMMAND and LOLWUT forwarded to a server, as
Debian's nutcracker does; unsupported commands are refused with a reason and the
connection stays usable.  Failures (killed, SIGSTOPped and ejected servers) are in
``test_proxy_redis_failures.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from scatterhoard.proxy.redis_commands import KEYED, MGET, MSET, SUM, TABLE
from scatterhoard.routing import Router
from tests.support import free_port, redis_server, require_binary, running, temp_dir
from tests.test_proxy_integration import Proxy, proxy

pytestmark = pytest.mark.timeout(90)


def client(port: int, **kw: Any) -> redis.Redis:
    kw.setdefault("protocol", 2)  # redis-py 8 defaults to RESP3; tests that want RESP3 (HELLO 3) pass protocol=3
    return redis.Redis(port=port, socket_timeout=10, retry=Retry(NoBackoff(), 0), **kw)


def keys_on(router: Router, server: int, n: int, prefix: str) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        key = f"{prefix}{random.getrandbits(64):x}"
        if router.index_for(key.encode()) == server:
            out.append(key)
    return out


# -- the shared cluster -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(temp_dir())
        ports = [stack.enter_context(redis_server()) for _ in range(3)]
        secured = [stack.enter_context(redis_server(extra=("--requirepass", "sekrit"))) for _ in range(2)]
        reference = stack.enter_context(redis_server())
        servers = [f"127.0.0.1:{ports[0]}:1", f"127.0.0.1:{ports[1]}:1 rb", f"127.0.0.1:{ports[2]}:2"]
        pools = {
            "main": {"redis": "true", "hash": "fnv1a_64", "distribution": "ketama", "hash_tag": '"{}"',
                     "timeout": 5000, "servers": servers},
            "auth": {"redis": "true", "redis_auth": "sekrit", "redis_db": 3, "hash_tag": '"{}"',
                     "servers": [f"127.0.0.1:{p}:1" for p in secured]},
        }
        proxies = stack.enter_context(proxy(pools, workdir))
        yield {"main": proxies["main"], "auth": proxies["auth"], "backends": ports, "secured": secured,
               "reference": reference}


@pytest.fixture()
def main(cluster: dict[str, Any]) -> Proxy:
    p = cluster["main"]
    assert isinstance(p, Proxy)
    return p


def router_of(p: Proxy) -> Router:
    return p.router(hash="fnv1a_64", hash_tag="{}")


SCRIPT = "return redis.call('get', KEYS[1])"


def _families(r: redis.Redis, t: str) -> list[Any]:
    """One call or more of every supported family; keys with the prefix ``t`` (a hash tag where keys meet)."""
    out: list[Any] = []
    add = out.append
    # strings
    add(r.set(f"{t}s", "v1")), add(r.get(f"{t}s")), add(r.append(f"{t}s", "23")), add(r.strlen(f"{t}s"))
    add(r.getrange(f"{t}s", 0, 1)), add(r.setrange(f"{t}s", 1, "X")), add(r.getset(f"{t}s", "new"))
    add(r.set(f"{t}s2", "a", nx=True)), add(r.set(f"{t}s2", "b", nx=True)), add(r.setnx(f"{t}s2", "c"))
    add(r.setex(f"{t}ex", 100, "e")), add(r.psetex(f"{t}pex", 100000, "p")), add(r.getdel(f"{t}s2"))
    add(r.getex(f"{t}ex", persist=True)), add(r.incr(f"{t}n")), add(r.incrby(f"{t}n", 10)), add(r.decr(f"{t}n"))
    add(r.decrby(f"{t}n", 3)), add(r.incrbyfloat(f"{t}f", 1.5)), add(r.setbit(f"{t}bits", 7, 1))
    add(r.getbit(f"{t}bits", 7)), add(r.bitcount(f"{t}bits")), add(r.bitpos(f"{t}bits", 1))
    add(r.execute_command("SUBSTR", f"{t}s", 0, 1))
    # keys
    add(r.expire(f"{t}s", 1000)), add(r.ttl(f"{t}s")), add(0 < r.pttl(f"{t}s") <= 1_000_000)
    add(r.persist(f"{t}s")), add(r.ttl(f"{t}s")), add(r.pexpire(f"{t}s", 100000)), add(r.expireat(f"{t}s", 4102444800))
    add(r.pexpireat(f"{t}s", 4102444800000)), add(r.expiretime(f"{t}s")), add(r.type(f"{t}s"))
    add(r.exists(f"{t}s")), add(r.touch(f"{t}s")), add(r.dump(f"{t}none"))
    dump = r.dump(f"{t}s")
    add(r.restore(f"{t}restored", 0, dump)), add(r.get(f"{t}restored"))
    add(r.set("{" + t + "}src", "x")), add(r.copy("{" + t + "}src", "{" + t + "}copy")), add(r.rename("{" + t + "}copy", "{" + t + "}renamed"))
    add(r.renamenx("{" + t + "}renamed", "{" + t + "}renamed2")), add(r.get("{" + t + "}renamed2"))
    add(r.move(f"{t}restored", 5)), add(r.get(f"{t}restored"))
    # hashes
    h = f"{t}h"
    add(r.hset(h, mapping={"a": 1, "b": 2})), add(r.hget(h, "a")), add(r.hmget(h, ["a", "b", "z"]))
    add(r.hgetall(h)), add(r.hkeys(h)), add(r.hvals(h)), add(r.hlen(h)), add(r.hexists(h, "a"))
    add(r.hincrby(h, "a", 5)), add(r.hincrbyfloat(h, "c", 0.5)), add(r.hsetnx(h, "a", 0)), add(r.hstrlen(h, "b"))
    add(r.hdel(h, "b")), add(r.hmset(h, {"d": 4})), add(sorted(r.hscan(h)[1].items()))
    add(r.hrandfield(h) in (b"a", b"c", b"d"))
    # lists
    lk = "{" + t + "}l"
    add(r.rpush(lk, 1, 2, 3)), add(r.lpush(lk, 0)), add(r.lrange(lk, 0, -1)), add(r.llen(lk)), add(r.lindex(lk, 1))
    add(r.linsert(lk, "BEFORE", 2, "x")), add(r.lset(lk, 0, "zero")), add(r.lrem(lk, 1, "x")), add(r.lpos(lk, 3))
    add(r.lpushx(lk, "L")), add(r.rpushx(lk, "R")), add(r.lpop(lk)), add(r.rpop(lk)), add(r.ltrim(lk, 0, 1))
    add(r.rpoplpush(lk, "{" + t + "}l2")), add(r.lmove("{" + t + "}l2", lk, "LEFT", "RIGHT"))
    add(r.lrange(lk, 0, -1))
    # sets
    sk, sk2 = "{" + t + "}set", "{" + t + "}set2"
    add(r.sadd(sk, "a", "b", "c")), add(r.sadd(sk2, "b", "c", "d")), add(sorted(r.smembers(sk))), add(r.scard(sk))
    add(r.sismember(sk, "a")), add(r.smismember(sk, ["a", "z"])), add(sorted(r.sinter(sk, sk2)))
    add(sorted(r.sunion(sk, sk2))), add(sorted(r.sdiff(sk, sk2))), add(r.sinterstore("{" + t + "}si", [sk, sk2]))
    add(r.sunionstore("{" + t + "}su", [sk, sk2])), add(r.sdiffstore("{" + t + "}sd", [sk, sk2]))
    add(r.smove(sk, sk2, "a")), add(r.srem(sk2, "d")), add(r.spop("{" + t + "}sd")), add(r.srandmember(sk) in (b"b", b"c"))
    add(r.sintercard(2, [sk, sk2])), add(sorted(r.sscan(sk2)[1]))
    # sorted sets
    z, z2 = "{" + t + "}z", "{" + t + "}z2"
    add(r.zadd(z, {"a": 1, "b": 2, "c": 3})), add(r.zadd(z2, {"b": 10, "d": 4})), add(r.zcard(z))
    add(r.zcount(z, 1, 2)), add(r.zincrby(z, 5, "a")), add(r.zrange(z, 0, -1, withscores=True))
    add(r.zrangebyscore(z, 2, 10)), add(r.zrevrange(z, 0, 1)), add(r.zrevrangebyscore(z, 10, 0)), add(r.zrank(z, "c"))
    add(r.zrevrank(z, "c")), add(r.zscore(z, "a")), add(r.zmscore(z, ["a", "x"])), add(r.zlexcount(z, "-", "+"))
    add(r.zrangebylex(z, "-", "+")), add(r.zrevrangebylex(z, "+", "-")), add(r.zunionstore("{" + t + "}zu", [z, z2]))
    add(r.zinterstore("{" + t + "}zi", [z, z2])), add(r.zdiffstore("{" + t + "}zd", [z, z2])), add(r.zunion([z, z2]))
    add(r.zinter([z, z2])), add(r.zdiff([z, z2])), add(r.zrangestore("{" + t + "}zr", z, 0, 1))
    add(r.zpopmin("{" + t + "}zu")), add(r.zpopmax("{" + t + "}zu")), add(r.zrem(z, "b"))
    add(r.zremrangebyrank(z2, 0, 0)), add(r.zremrangebyscore(z, 0, 3)), add(r.zremrangebylex(z2, "-", "+"))
    add(r.zrandmember(z) in (b"a",)), add(sorted(r.zscan(z)[1]))
    # HyperLogLog
    add(r.pfadd("{" + t + "}hll", "a", "b", "c")), add(r.pfadd("{" + t + "}hll2", "c", "d"))
    add(r.pfcount("{" + t + "}hll")), add(r.pfcount("{" + t + "}hll", "{" + t + "}hll2"))
    add(r.pfmerge("{" + t + "}hllm", "{" + t + "}hll", "{" + t + "}hll2")), add(r.pfcount("{" + t + "}hllm"))
    # geo
    g = f"{t}geo"
    add(r.geoadd(g, [13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania"]))
    add(round(r.geodist(g, "Palermo", "Catania", unit="km") or 0, 3)), add(r.geohash(g, "Palermo"))
    add([tuple(round(c, 4) for c in p) for p in r.geopos(g, "Palermo") if p])
    add(r.georadius(g, 15, 37, 200, unit="km")), add(r.georadiusbymember(g, "Palermo", 100, unit="km"))
    add(r.geosearch(g, longitude=15, latitude=37, radius=200, unit="km"))
    # scripting (SCRIPT LOAD is refused by the proxy: the test loads SCRIPT on every server itself)
    add(r.eval("return redis.call('incrby', KEYS[1], ARGV[1])", 1, f"{t}n", 7))
    add(r.eval("return {KEYS[1], KEYS[2]}", 2, "{" + t + "}a", "{" + t + "}b"))
    add(r.evalsha(hashlib.sha1(SCRIPT.encode()).hexdigest(), 1, f"{t}n"))
    # streams (single key)
    sx = f"{t}stream"
    add(r.xadd(sx, {"f": "v"}, id="1-1")), add(r.xadd(sx, {"f": "w"}, id="1-2")), add(r.xlen(sx))
    add(r.xrange(sx)), add(r.xrevrange(sx, count=1)), add(r.xdel(sx, "1-1")), add(r.xtrim(sx, maxlen=0))
    # sort (BY/GET patterns are resolved on the key's server)
    add(r.rpush("{" + t + "}sort", 3, 1, 2)), add(r.sort("{" + t + "}sort"))
    add(r.sort("{" + t + "}sort", store="{" + t + "}sorted")), add(r.lrange("{" + t + "}sorted", 0, -1))
    _rarer_rows(r, t, add)
    # deletes
    add(r.delete(f"{t}s", f"{t}n", f"{t}none")), add(r.unlink(h, lk))
    return out


def _rarer_rows(r: redis.Redis, t: str, add: Any) -> None:
    """The rows of the table the families above leave out: several keys (one hash tag), numkeys, options."""
    k = "{" + t + "}"
    # bits and strings
    add(r.bitfield(f"{k}bf").set("u8", 0, 200).incrby("u8", 0, 100).get("u8", 8).execute())
    add(r.bitfield_ro(f"{k}bf", "u8", 0, items=[("u4", 4)])), add(r.set(f"{k}b1", "ab")), add(r.set(f"{k}b2", "AB"))
    add(r.bitop("OR", f"{k}bor", f"{k}b1", f"{k}b2")), add(r.bitop("NOT", f"{k}bnot", f"{k}b1"))
    add(r.mget([f"{k}bor", f"{k}bnot"])), add(r.set(f"{k}lcs1", "ohmytext")), add(r.set(f"{k}lcs2", "mynewtext"))
    add(r.lcs(f"{k}lcs1", f"{k}lcs2")), add(r.lcs(f"{k}lcs1", f"{k}lcs2", len=True))
    add(r.lcs(f"{k}lcs1", f"{k}lcs2", idx=True, minmatchlen=2, withmatchlen=True))
    add(r.execute_command("INCR", f"{k}cnt")), add(r.execute_command("DECR", f"{k}cnt"))  # (redis-py: INCRBY)
    add(r.msetnx({f"{k}nx1": 1, f"{k}nx2": 2})), add(r.msetnx({f"{k}nx2": 3, f"{k}nx3": 3}))
    add(r.pexpireat(f"{k}nx1", 4102444800123)), add(r.pexpiretime(f"{k}nx1"))
    # SORT_RO (BY/GET patterns on the key's server), SORT STORE with an option value called "store"
    add(r.rpush(f"{k}so", 3, 1, 2)), add(r.mset({f"{k}w_1": 30, f"{k}w_2": 20, f"{k}w_3": 10, f"{k}o_1": "one"}))
    add(r.execute_command("SORT_RO", f"{k}so")), add(r.sort_ro(f"{k}so", by=f"{k}w_*", get=["#", f"{k}o_*"]))
    add(r.execute_command("SORT_RO", f"{k}so", "BY", f"{k}w_*", "GET", "#", "GET", f"{k}o_*", "DESC"))
    add(r.sort(f"{k}so", by="store", get=["#"], store=f"{k}sorted2")), add(r.lrange(f"{k}sorted2", 0, -1))
    # read-only scripts (SCRIPT is loaded on every server by the test)
    add(r.eval_ro(SCRIPT, 1, f"{k}b1")), add(r.evalsha_ro(hashlib.sha1(SCRIPT.encode()).hexdigest(), 1, f"{k}b2"))
    add(r.eval_ro("return {KEYS[1], KEYS[2], ARGV[1]}", 2, f"{k}x", f"{k}y", "arg"))
    # LMPOP ZMPOP ZINTERCARD: numkeys, then the keys
    add(r.rpush(f"{k}mp", "a", "b", "c")), add(r.lmpop(2, f"{k}mpnone", f"{k}mp", direction="LEFT", count=2))
    add(r.lmpop(1, f"{k}mp", direction="RIGHT")), add(r.lmpop(1, f"{k}mp", direction="RIGHT"))
    add(r.zadd(f"{k}zm1", {"a": 1, "b": 2, "c": 3})), add(r.zadd(f"{k}zm2", {"b": 5, "c": 6, "d": 7}))
    add(r.zintercard(2, [f"{k}zm1", f"{k}zm2"])), add(r.zintercard(2, [f"{k}zm1", f"{k}zm2"], limit=1))
    add(r.zmpop(2, [f"{k}zmnone", f"{k}zm1"], min=True, count=2)), add(r.zmpop(1, [f"{k}zm2"], max=True))
    # geo: the _RO variants, GEOSEARCHSTORE, GEORADIUS[BYMEMBER] ... STORE/STOREDIST (and a member "store")
    g = f"{k}geo"
    add(r.geoadd(g, [13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania", 14.2, 37.8, "store"]))
    add(r.execute_command("GEORADIUS_RO", g, 15, 37, 200, "km", "ASC"))
    add(r.execute_command("GEORADIUSBYMEMBER_RO", g, "Palermo", 200, "km", "WITHDIST", "ASC"))
    add(r.geosearchstore(f"{k}gss", g, longitude=15, latitude=37, radius=200, unit="km"))
    add(r.geosearchstore(f"{k}gssd", g, member="Palermo", radius=300, unit="km", storedist=True))
    add(r.zrange(f"{k}gss", 0, -1)), add([(m, round(d, 3)) for m, d in r.zrange(f"{k}gssd", 0, -1, withscores=True)])
    add(r.georadius(g, 15, 37, 200, unit="km", store=f"{k}gr")), add(r.zrange(f"{k}gr", 0, -1))
    add(r.georadius(g, 15, 37, 200, unit="km", store_dist=f"{k}grd")), add(r.zcard(f"{k}grd"))
    add(r.georadiusbymember(g, "store", 300, unit="km", store=f"{k}grm", sort="ASC")), add(r.zrange(f"{k}grm", 0, -1))
    add(r.georadiusbymember(g, "store", 100, unit="km", sort="ASC"))


@pytest.mark.parametrize("protocol", [2, 3])
def test_every_family_same_as_redis(protocol: int, main: Proxy, cluster: dict[str, Any]) -> None:
    for port in [cluster["reference"], *cluster["backends"]]:  # EVALSHA needs the script on its key's server
        with client(port) as direct:
            direct.script_load(SCRIPT)
            direct.config_resetstat()
    prefix = f"fam{protocol}:"
    with client(cluster["reference"], protocol=protocol) as ref:
        expected = _families(ref, prefix)
    with client(main.port, protocol=protocol) as r:
        got = _families(r, prefix)
    assert len(got) == len(expected)
    for i, (have, want) in enumerate(zip(got, expected, strict=True)):
        assert have == want, f"step {i}: proxy {have!r} != redis {want!r}"
    ran: set[str] = set()  # every routed row of the table reached a server through the proxy
    for port in cluster["backends"]:
        with client(port) as direct:
            ran |= {name.removeprefix("cmdstat_").partition("|")[0] for name in direct.info("commandstats")}
    routed = {c.name for c in TABLE.values() if c.kind in (KEYED, MGET, SUM, MSET)}
    assert not routed - ran, f"rows never run end to end: {sorted(routed - ran)}"


def test_keys_spread_over_servers_and_hash_tags_keep_them_together(main: Proxy, cluster: dict[str, Any]) -> None:
    router = router_of(main)
    tag = random.getrandbits(32)
    keys = [f"spread:{random.getrandbits(64):016x}" for _ in range(60)]  # fnv1a_64 clusters similar keys
    tagged = [f"{{grp{tag}}}:{i}" for i in range(20)]
    with client(main.port) as r:
        for k in keys + tagged:
            r.set(k, k)
    where = {}
    for index, port in enumerate(cluster["backends"]):
        with client(port) as direct:
            for k in keys + tagged:
                if direct.get(k) is not None:
                    assert k not in where, f"{k} is on two servers"
                    where[k] = index
    assert len(where) == 80
    assert all(where[k] == router.index_for(k.encode()) for k in where)  # the router's placement
    assert len({where[k] for k in keys}) == 3 and len({where[k] for k in tagged}) == 1


@pytest.mark.parametrize("protocol", [2, 3])
def test_multi_key_commands_split_and_merged(protocol: int, main: Proxy) -> None:
    router = router_of(main)
    tag = random.getrandbits(32)
    per_server = [keys_on(router, i, 4, f"mk{tag}:") for i in range(3)]
    keys = [k for group in zip(*per_server, strict=True) for k in group]  # interleaved over the servers
    with client(main.port, protocol=protocol) as r:
        assert r.mset({k: f"v:{k}" for k in keys}) is True
        order = keys[::-1] + ["mk-missing"] + keys[:3] + [keys[5]]  # reversed, a miss, duplicates
        assert r.mget(order) == [None if k == "mk-missing" else f"v:{k}".encode() for k in order]
        assert r.exists(*keys, "mk-missing", keys[0]) == len(keys) + 1
        assert r.touch(*keys[:5], "mk-missing") == 5
        assert r.delete(*keys[:6], "mk-missing") == 6
        assert r.unlink(*keys[6:9], keys[0]) == 3
        assert r.mget(keys) == [None] * 9 + [f"v:{k}".encode() for k in keys[9:]]
        assert r.dbsize() >= len(keys) - 9
        # MSETNX, RENAME, SINTERSTORE... need their keys on one server: refused across servers
        a, b = per_server[0][0], per_server[1][0]
        with pytest.raises(redis.ResponseError, match="different servers"):
            r.rename(a, b)
        with pytest.raises(redis.ResponseError, match="different servers"):
            r.msetnx({a: 1, b: 2})
        with pytest.raises(redis.ResponseError, match="different servers"):
            r.eval("return 1", 2, a, b)
        assert r.ping() is True  # the connection is still usable
        t = f"{{tag{tag}}}"
        assert r.msetnx({f"{t}x": 1, f"{t}y": 2}) is True
        assert r.mget([f"{t}x", f"{t}y"]) == [b"1", b"2"]
        assert r.rename(f"{t}x", f"{t}z") is True and r.get(f"{t}z") == b"1"
        with pytest.raises(redis.ResponseError, match="at least one key"):
            r.eval("return 1", 0)
    time.sleep(0.25)
    assert main.stats_json()["main"]["fragments"] > 0  # type: ignore[index]


@pytest.mark.parametrize("protocol", [2, 3])
def test_pipeline_of_1000_commands_same_as_redis(protocol: int, main: Proxy, cluster: dict[str, Any]) -> None:
    rng = random.Random(11)
    tag = f"pipe{random.getrandbits(32)}p{protocol}:"
    keys = [f"{tag}{i}" for i in range(50)]
    ops: list[tuple[str, tuple[Any, ...]]] = []
    for _ in range(1000):
        k = rng.choice(keys)
        op = rng.randrange(10)
        if op < 3:
            ops.append(("set", (k, "x" * rng.randrange(0, 200))))
        elif op < 5:
            ops.append(("get", (k,)))
        elif op == 5:
            ops.append(("mget", (rng.sample(keys, rng.randint(2, 10)),)))
        elif op == 6:
            ops.append(("delete", tuple(rng.sample(keys, rng.randint(1, 4)))))
        elif op == 7:
            ops.append(("rpush", (k + ":l", rng.randrange(100))))
        elif op == 8:
            ops.append(("incr", (k + ":n",)))
        else:
            ops.append(("mset", ({rng.choice(keys): rng.randrange(9) for _ in range(3)},)))

    def run(port: int) -> list[Any]:
        with client(port, protocol=protocol) as r:
            pipe = r.pipeline(transaction=False)
            for name, args in ops:
                getattr(pipe, name)(*args)
            return [repr(x) for x in pipe.execute(raise_on_error=False)]

    assert run(main.port) == run(cluster["reference"])


@pytest.mark.parametrize("protocol", [2, 3])
def test_proxy_answers_itself(protocol: int, main: Proxy) -> None:
    with client(main.port, client_name="pyclient", protocol=protocol) as r:
        assert r.ping() is True and r.echo("hi") == b"hi"
        assert r.client_getname() == "pyclient" or r.client_getname() == b"pyclient"
        assert r.execute_command("SELECT", 0) is True
        with pytest.raises(redis.ResponseError, match="SELECT is not allowed"):
            r.execute_command("SELECT", 4)
        for command in (("KEYS", "*"), ("MULTI",), ("SUBSCRIBE", "ch"), ("BLPOP", "l", 0), ("CONFIG", "GET", "x"),
                        ("FLUSHALL",), ("SCRIPT", "LOAD", "return 1"), ("CLIENT", "LIST")):
            with pytest.raises(redis.ResponseError, match=r"unsupported command '[A-Za-z ]+' behind a proxy \(\w"):
                r.execute_command(*command)
        with pytest.raises(redis.ResponseError, match=r"^unsupported command 'NOSUCH' \(not in hoard proxy's command "
                                                      r"table\)$"):
            r.execute_command("NOSUCH")
        with pytest.raises(redis.ResponseError, match=r"'HEXPIRE' \(not in hoard proxy's command table: added in "
                                                      r"redis 7\.4, after the redis 7\.0 commands"):
            r.execute_command("HEXPIRE", "h", 10, "FIELDS", 1, "f")  # redis 7.4's, refused by the proxy itself
        with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get'"):
            r.execute_command("GET")
        with pytest.raises(redis.RedisError, match="called without any password"):
            r.execute_command("AUTH", "x")
        assert r.set("still", "usable") is True
    with socket.create_connection(("127.0.0.1", main.port), timeout=5) as sock:
        sock.sendall(b"PING\r\nPING msg\r\nSET q 1\r\nQUIT\r\nGET q\r\n")  # inline commands too
        data = b""
        while chunk := sock.recv(1000):
            data += chunk
        assert data == b"+PONG\r\n$3\r\nmsg\r\n+OK\r\n+OK\r\n"  # closed after QUIT


@contextlib.contextmanager
def _nutcracker(servers: list[str], workdir: str) -> Iterator[int]:
    """Debian's nutcracker in front of the same servers as the ``main`` pool (same routing)."""
    port, stats = free_port(), free_port()
    conf = Path(workdir, "nutcracker.yml")
    conf.write_text("\n".join(["p:", f"  listen: 127.0.0.1:{port}", "  redis: true", "  hash: fnv1a_64",
                               "  distribution: ketama", '  hash_tag: "{}"', "  timeout: 5000", "  servers:",
                               *[f"   - {s}" for s in servers]]) + "\n")
    argv = [require_binary("nutcracker"), "-c", str(conf), "-s", str(stats), "-a", "127.0.0.1",
            "-o", str(Path(workdir, "nutcracker.log"))]
    with running(argv, port=port):
        yield port


def test_keyless_command_and_lolwut_forwarded_as_nutcracker_does(main: Proxy, cluster: dict[str, Any]) -> None:
    """COMMAND and LOLWUT describe the server software (the same on every server): both proxies send
    them to one server and return its reply.  nutcracker 0.5.0 closes the connection on COMMAND with
    arguments (COUNT, INFO, DOCS...); hoard proxy forwards those too: compared with redis itself."""
    with temp_dir() as workdir, _nutcracker(main.servers, workdir) as nutcracker:
        got = {}
        for name, port in (("proxy", main.port), ("nutcracker", nutcracker), ("redis", cluster["reference"])):
            # no CLIENT SETINFO on connect (nutcracker closes the connection on CLIENT); COMMAND's
            # order differs between servers: redis-py makes it a dict
            with client(port, driver_info=None) as r:
                commands = {name: {**info, "subcommands": sorted(map(repr, info["subcommands"]))}
                            for name, info in r.command().items()}  # (subcommands too)
                got[name] = (commands, r.execute_command("LOLWUT"), r.execute_command("lolwut", "VERSION", 5, 9, 1, 1))
        assert got["proxy"] == got["nutcracker"] == got["redis"]
        assert len(got["proxy"][0]) > 200 and got["proxy"][1].startswith(b"Redis ver. 7.")
    requests = [("COMMAND", "COUNT"), ("COMMAND", "INFO", "get", "mset", "nosuch"), ("COMMAND", "DOCS", "lolwut"),
                ("command", "GETKEYS", "MSET", "a", "1", "b", "2"), ("LOLWUT", "VERSION", "5", "9", "1", "1")]
    for protocol in (2, 3):
        with client(main.port, protocol=protocol) as r, client(cluster["reference"], protocol=protocol) as ref:
            for c in (r, ref):
                c.response_callbacks.clear()  # the replies as parsed, not reshaped per command by redis-py
            for request in requests:
                assert r.execute_command(*request) == ref.execute_command(*request), request
            assert sorted(r.execute_command("COMMAND", "LIST")) == sorted(ref.execute_command("COMMAND", "LIST"))
            with pytest.raises(redis.ResponseError, match="unknown subcommand") as mine:
                r.execute_command("COMMAND", "NOSUCH")
            with pytest.raises(redis.ResponseError) as theirs:
                ref.execute_command("COMMAND", "NOSUCH")
            assert str(mine.value) == str(theirs.value)
            assert r.execute_command("PING") == b"PONG"  # (the callbacks are gone: the bare reply)


def test_info_dbsize_scan_over_every_server(main: Proxy, cluster: dict[str, Any]) -> None:
    with client(main.port) as r:
        assert r.flushdb() is True
        keys = {f"scan:{i}" for i in range(300)}
        r.mset({k: 1 for k in keys})
        r.set("other", 1)
        assert r.dbsize() == 301
        info = r.info()
        assert info["servers"] == 3 and info["db0"]["keys"] == 301
        assert info["redis_version"] and info["connected_clients"] >= 3
        assert r.info("keyspace")["db0"]["keys"] == 301
        assert set(r.scan_iter(match="scan:*", count=50)) == {k.encode() for k in keys}
        everything = []
        cursor = 0
        while True:
            cursor, batch = r.scan(cursor, count=1000)
            everything += batch
            if cursor == 0:
                break
        assert sorted(everything) == sorted([k.encode() for k in keys] + [b"other"])  # each key once
        with pytest.raises(redis.ResponseError, match="invalid cursor"):
            r.scan("abc")  # type: ignore[arg-type]
        # each server holds what the pool's routing sends it (this pool's fnv1a_64 spreads these
        # keys unevenly: some port numbers leave a server with none, as nutcracker would)
        router = router_of(main)
        expected = [0] * len(cluster["backends"])
        for key in [*keys, "other"]:
            expected[router.index_for(key.encode())] += 1
        for index, port in enumerate(cluster["backends"]):
            with client(port) as direct:
                assert direct.dbsize() == expected[index]
        assert r.flushdb() is True and r.dbsize() == 0


def test_auth_and_redis_db(cluster: dict[str, Any]) -> None:
    p = cluster["auth"]
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sock:
        sock.sendall(b"GET k\r\nAUTH wrong\r\nPING\r\nAUTH sekrit\r\nSET authed yes\r\nQUIT\r\n")
        data = b""
        while chunk := sock.recv(1000):
            data += chunk
        assert data == (b"-NOAUTH Authentication required.\r\n"
                        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
                        b"-NOAUTH Authentication required.\r\n+OK\r\n+OK\r\n+OK\r\n")
    with client(p.port, password="sekrit") as r:
        assert r.get("authed") == b"yes"
        keys = [f"db3:{i}" for i in range(20)]
        r.mset({k: k for k in keys})
        assert r.mget(keys) == [k.encode() for k in keys]
    with client(p.port, username="default", password="sekrit") as r:
        assert r.get("authed") == b"yes"
    with client(p.port, password="sekrit", protocol=3) as r:  # HELLO 3 AUTH default sekrit
        assert r.get("authed") == b"yes" and r.hgetall("nothing") == {}
    with client(p.port, password="nope") as r, pytest.raises(redis.AuthenticationError):
        r.get("authed")
    found = 0
    for port in cluster["secured"]:  # the proxy authenticated and selected database 3 on its servers
        with client(port, password="sekrit", db=3) as direct:
            found += len(direct.keys("db3:*"))
        with client(port, password="sekrit") as direct:
            assert direct.keys("db3:*") == []
    assert found == 20


def test_protocol_error_answered_then_closed(main: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", main.port), timeout=5) as sock, client(main.port) as other:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$x\r\n")
        data = b""
        while chunk := sock.recv(1000):
            data += chunk
        assert data == b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"  # as redis: then closed
        assert other.set("unaffected", 1) is True


def test_nothing_after_quit_is_answered(main: Proxy) -> None:
    # redis stops reading a client's input at QUIT: the malformed request after it gets no -ERR
    with socket.create_connection(("127.0.0.1", main.port), timeout=5) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n*2\r\n$3\r\nGET\r\n$x\r\n")
        data = b""
        while chunk := sock.recv(1000):
            data += chunk
        assert data == b"+PONG\r\n+OK\r\n"


def test_garbage_from_clients_never_hurts_others(main: Proxy) -> None:
    rng = random.Random(3)
    valid = [b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n",
             b"*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", b"PING\r\n", b"SCAN 0 COUNT 5\r\n",
             b"*3\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n0\r\n", b"INFO\r\n", b"*1\r\n$6\r\nDBSIZE\r\n"]
    with client(main.port) as other:
        for _ in range(40):
            blob = bytearray(b"".join(rng.choice(valid) for _ in range(rng.randint(1, 6))))
            for _ in range(rng.randint(1, 6)):  # mutate a few bytes
                blob[rng.randrange(len(blob))] = rng.randrange(256)
            with socket.create_connection(("127.0.0.1", main.port), timeout=5) as sock:
                sock.sendall(bytes(blob))
                sock.shutdown(socket.SHUT_WR)
                with contextlib.suppress(OSError):
                    while sock.recv(65536):
                        pass
            assert other.set("garbage:probe", 1) is True and other.get("garbage:probe") == b"1"
    assert "internal error" not in (main.conf.parent / "proxy.log").read_text()  # only protocol errors


def test_asyncio_clients_concurrently(main: Proxy) -> None:
    async def one(r: redis.asyncio.Redis, i: int) -> bytes | None:
        await r.set(f"aio:{i}", i)
        return await r.get(f"aio:{i}")  # type: ignore[no-any-return]

    async def run() -> list[Any]:
        pool = redis.asyncio.BlockingConnectionPool(port=main.port, socket_timeout=10, protocol=2, max_connections=20)
        r = redis.asyncio.Redis(connection_pool=pool)
        try:
            return await asyncio.gather(*(one(r, i) for i in range(200)))
        finally:
            await r.aclose()

    assert asyncio.run(run()) == [b"%d" % i for i in range(200)]
