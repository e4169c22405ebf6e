"""The command table of redis pools: name -> arity, where the keys are, how the command is served.

Pure data and pure functions (no I/O), shared by the session and the tests.
Arity follows redis's ``COMMAND`` convention: ``n`` is exactly n arguments
counting the name, ``-n`` at least n.  Keys are ``args[first:last+1:step]``
(a negative ``last`` counts from the end: -1 is the last argument).

How a command is served (:attr:`Command.kind`):

* ``KEYED`` -- forwarded to the server of its key; a command with several keys
  (RENAME, SMOVE, SINTERSTORE, BITOP, PFMERGE, EVAL with numkeys > 1...) is
  forwarded when all its keys hash to one server (hash tags), refused otherwise;
* ``MGET``, ``SUM`` (DEL UNLINK TOUCH EXISTS), ``MSET`` -- split per server and
  merged: values in key order, integers summed, ``+OK`` when every part is;
* ``BROADCAST`` -- sent to every live server, replies merged (INFO, DBSIZE, FLUSHDB);
* ``SCAN`` -- the servers one after the other, behind one cursor;
* ``LOCAL`` -- answered by the proxy (PING ECHO QUIT AUTH SELECT HELLO CLIENT);
* ``ANY`` -- keyless, sent to one live server, its reply forwarded (COMMAND LOLWUT: they
  describe the server software, the same on every server; nutcracker forwards them too);
* ``UNSUPPORTED`` -- refused with the reason of its family (:data:`FAMILIES`).

Commands not in the table (a typo, or one newer than the redis 7.0 command set the table
follows, such as redis 7.4's HEXPIRE: :data:`NEWER`) are refused too, saying so.
"""

from __future__ import annotations

from typing import Final

from ..errors import HoardError

KEYED: Final = 0
MGET: Final = 1
SUM: Final = 2
MSET: Final = 3
BROADCAST: Final = 4
SCAN: Final = 5
LOCAL: Final = 6
UNSUPPORTED: Final = 7
ANY: Final = 8


class CommandError(HoardError):
    """A command the proxy answers with an error itself; ``reply`` is the RESP error line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reply = b"-%s\r\n" % message.encode()


class Command:
    """One row of the table."""

    __slots__ = ("name", "arity", "first", "last", "step", "kind", "numkeys", "option_keys", "options_from",
                 "option_skip", "reason", "single", "min_args", "max_args")

    def __init__(self, name: str, arity: int, first: int = 0, last: int = 0, step: int = 1, kind: int = KEYED,
                 numkeys: int = 0, option_keys: tuple[bytes, ...] = (), options_from: int = 0,
                 option_skip: tuple[tuple[bytes, int], ...] = (), reason: str = "") -> None:
        self.name = name
        self.arity = arity
        self.first = first
        self.last = last
        self.step = step
        self.kind = kind
        self.numkeys = numkeys  # index of a numkeys argument; the keys follow it (EVAL, ZUNIONSTORE...)
        self.option_keys = option_keys  # options whose value is a key (SORT ... STORE dst)
        self.options_from = options_from  # where the options start (arguments before are positional)
        self.option_skip = dict(option_skip)  # options followed by that many values that are not keys
        self.reason = reason
        #: exactly one key, at args[1]: the fast path
        self.single = kind == KEYED and first == last == 1 and not numkeys and not option_keys
        self.min_args = abs(arity)
        self.max_args = arity if arity >= 0 else 1 << 62

    def check_arity(self, argc: int) -> None:
        if not self.min_args <= argc <= self.max_args or (self.step == 2 and not argc % 2):
            raise CommandError(f"ERR wrong number of arguments for '{self.name}' command")

    def keys(self, args: list[bytes]) -> list[bytes]:
        """The keys of a command (arity already checked)."""
        out: list[bytes] = []
        if self.first:
            last = self.last if self.last >= 0 else len(args) + self.last
            out = args[self.first:last + 1:self.step]
        if self.numkeys:
            try:
                count = int(args[self.numkeys])
            except ValueError:
                raise CommandError("ERR numkeys should be greater than 0") from None
            start = self.numkeys + 1
            if count < 1:
                raise CommandError(f"ERR '{self.name}' needs at least one key behind a proxy "
                                   "(the key decides the server)")
            if start + count > len(args):
                raise CommandError("ERR Number of keys can't be greater than number of args")
            out = out + args[start:start + count]
        if self.option_keys:
            out = out + self._option_keys(args)
        return out

    def _option_keys(self, args: list[bytes]) -> list[bytes]:
        """The keys given as option values, walked as redis does (``sortGetKeys``, ``georadiusGetKeys``).

        Positional arguments are not options (a GEORADIUSBYMEMBER member may be called ``store``)
        and the values of other options are skipped (``SORT k GET store`` has no STORE option);
        like redis, the last STORE/STOREDIST is the one that counts.
        """
        found = -1
        i = self.options_from
        last = len(args) - 1
        while i < last:
            word = args[i].upper()
            if word in self.option_keys:
                found = i + 1
                i += 1
            else:
                i += self.option_skip.get(word, 0)
            i += 1
        return [args[found]] if found > 0 else []


# name arity first last step, one per line; every kind that routes on keys.
_KEYED = """
append 3 1 1 1;bitcount -2 1 1 1;bitfield -2 1 1 1;bitfield_ro -2 1 1 1;bitop -4 2 -1 1;bitpos -3 1 1 1
copy -3 1 2 1;decr 2 1 1 1;decrby 3 1 1 1;dump 2 1 1 1;expire -3 1 1 1;expireat -3 1 1 1
expiretime 2 1 1 1;get 2 1 1 1;getbit 3 1 1 1;getdel 2 1 1 1;getex -2 1 1 1;getrange 4 1 1 1
getset 3 1 1 1;incr 2 1 1 1;incrby 3 1 1 1;incrbyfloat 3 1 1 1;lcs -3 1 2 1;move 3 1 1 1
msetnx -3 1 -1 2;persist 2 1 1 1;pexpire -3 1 1 1;pexpireat -3 1 1 1;pexpiretime 2 1 1 1;psetex 4 1 1 1
pttl 2 1 1 1;rename 3 1 2 1;renamenx 3 1 2 1;restore -4 1 1 1;set -3 1 1 1;setbit 4 1 1 1;setex 4 1 1 1
setnx 3 1 1 1;setrange 4 1 1 1;sort_ro -2 1 1 1;strlen 2 1 1 1;substr 4 1 1 1;ttl 2 1 1 1;type 2 1 1 1
hdel -3 1 1 1;hexists 3 1 1 1;hget 3 1 1 1;hgetall 2 1 1 1;hincrby 4 1 1 1;hincrbyfloat 4 1 1 1
hkeys 2 1 1 1;hlen 2 1 1 1;hmget -3 1 1 1;hmset -4 1 1 1;hrandfield -2 1 1 1;hscan -3 1 1 1;hset -4 1 1 1
hsetnx 4 1 1 1;hstrlen 3 1 1 1;hvals 2 1 1 1
lindex 3 1 1 1;linsert 5 1 1 1;llen 2 1 1 1;lmove 5 1 2 1;lpop -2 1 1 1;lpos -3 1 1 1;lpush -3 1 1 1
lpushx -3 1 1 1;lrange 4 1 1 1;lrem 4 1 1 1;lset 4 1 1 1;ltrim 4 1 1 1;rpop -2 1 1 1;rpoplpush 3 1 2 1
rpush -3 1 1 1;rpushx -3 1 1 1
sadd -3 1 1 1;scard 2 1 1 1;sdiff -2 1 -1 1;sdiffstore -3 1 -1 1;sinter -2 1 -1 1;sinterstore -3 1 -1 1
sismember 3 1 1 1;smembers 2 1 1 1;smismember -3 1 1 1;smove 4 1 2 1;spop -2 1 1 1;srandmember -2 1 1 1
srem -3 1 1 1;sscan -3 1 1 1;sunion -2 1 -1 1;sunionstore -3 1 -1 1
zadd -4 1 1 1;zcard 2 1 1 1;zcount 4 1 1 1;zincrby 4 1 1 1;zlexcount 4 1 1 1;zmscore -3 1 1 1
zpopmax -2 1 1 1;zpopmin -2 1 1 1;zrandmember -2 1 1 1;zrange -4 1 1 1;zrangebylex -4 1 1 1
zrangebyscore -4 1 1 1;zrangestore -5 1 2 1;zrank -3 1 1 1;zrem -3 1 1 1;zremrangebylex 4 1 1 1
zremrangebyrank 4 1 1 1;zremrangebyscore 4 1 1 1;zrevrange -4 1 1 1;zrevrangebylex -4 1 1 1
zrevrangebyscore -4 1 1 1;zrevrank -3 1 1 1;zscan -3 1 1 1;zscore 3 1 1 1
pfadd -2 1 1 1;pfcount -2 1 -1 1;pfmerge -2 1 -1 1
geoadd -5 1 1 1;geodist -4 1 1 1;geohash -2 1 1 1;geopos -2 1 1 1;georadius_ro -6 1 1 1
georadiusbymember_ro -5 1 1 1;geosearch -7 1 1 1;geosearchstore -8 1 2 1
xadd -5 1 1 1;xdel -3 1 1 1;xlen 2 1 1 1;xrange -4 1 1 1;xrevrange -4 1 1 1;xtrim -4 1 1 1
"""

# name arity numkeys-index first-fixed-key: keys counted by a numkeys argument
_NUMKEYS = """
eval -3 2 0;evalsha -3 2 0;eval_ro -3 2 0;evalsha_ro -3 2 0;lmpop -4 1 0;sintercard -3 1 0;zdiff -3 1 0
zdiffstore -4 2 1;zinter -3 1 0;zintercard -3 1 0;zinterstore -4 2 1;zmpop -4 1 0;zunion -3 1 0
zunionstore -4 2 1
"""

_SPLIT = {"mget": (-2, 1, MGET), "del": (-2, 1, SUM), "unlink": (-2, 1, SUM), "touch": (-2, 1, SUM),
          "exists": (-2, 1, SUM), "mset": (-3, 2, MSET)}

_LOCAL = {"ping": -1, "echo": 2, "quit": -1, "auth": -2, "select": 2, "hello": -1, "client": -2}
_BROADCAST = {"info": -1, "dbsize": 1, "flushdb": -1}
_ANY = {"command": -1, "lolwut": -1}

# name: arity, the options whose value is a key, where options start, options whose values are
# skipped (not keys): as redis's sortGetKeys and georadiusGetKeys find them
_STORE = (b"STORE", b"STOREDIST")
_OPTION_KEYS = {"sort": (-2, _STORE[:1], 2, ((b"LIMIT", 2), (b"GET", 1), (b"BY", 1))),
                "georadius": (-6, _STORE, 6, ()), "georadiusbymember": (-5, _STORE, 5, ())}

#: Why each family of commands is refused behind a sharding proxy (also in the README).
FAMILIES: Final[dict[str, tuple[str, str]]] = {
    "keyspace": ("keys randomkey",
                 "needs every key of every server (use SCAN, which the proxy walks over the servers)"),
    "transactions": ("multi exec discard watch unwatch",
                     "a transaction needs one connection to one server; the proxy shares its server "
                     "connections between clients and spreads keys over servers"),
    "pub/sub": ("subscribe unsubscribe psubscribe punsubscribe publish pubsub ssubscribe sunsubscribe "
                "spublish",
                "a subscribed connection receives pushes; the proxy's server connections are shared"),
    "blocking": ("blpop brpop brpoplpush blmove blmpop bzpopmin bzpopmax bzmpop wait waitaof",
                 "a blocked command would stall every client sharing that server connection"),
    "streams": ("xread xreadgroup xgroup xack xclaim xautoclaim xpending xinfo xsetid",
                "consumer groups and XREAD are blocking or connection-bound"),
    "scripting": ("script function fcall fcall_ro",
                  "scripts and functions are loaded per server; use EVAL with its keys"),
    "server": ("acl bgrewriteaof bgsave cluster config debug failover flushall lastsave latency "
               "memory module monitor object psync readonly readwrite replconf replicaof role "
               "save shutdown slaveof slowlog swapdb sync time migrate reset",
               "administration and introspection belong to one server (connect to it directly); "
               "FLUSHALL would empty every database of the servers, SWAPDB and MIGRATE move data "
               "behind the proxy's back"),
}

#: Commands newer than the redis 7.0 command set the table follows, and the version that added
#: them: refused as any command missing from the table, the message says why it is missing.
NEWER: Final[dict[bytes, str]] = {
    **dict.fromkeys((b"hexpire", b"hpexpire", b"hexpireat", b"hpexpireat", b"httl", b"hpttl", b"hexpiretime",
                     b"hpexpiretime", b"hpersist"), "7.4"),
    **dict.fromkeys((b"hgetdel", b"hgetex", b"hsetex"), "8.0"),
}


def _build() -> dict[bytes, Command]:
    table: dict[bytes, Command] = {}
    for row in _KEYED.replace("\n", ";").split(";"):
        if row:
            word, *numbers = row.split()
            a, first, last, step = map(int, numbers)
            table[word.encode()] = Command(word, a, first, last, step)
    for row in _NUMKEYS.replace("\n", ";").split(";"):
        if row:
            word, *numbers = row.split()
            a, numkeys, fixed = map(int, numbers)
            table[word.encode()] = Command(word, a, fixed, fixed, numkeys=numkeys)
    for name, (arity, step, kind) in _SPLIT.items():
        table[name.encode()] = Command(name, arity, 1, -1, step, kind)
    for kind, rows in ((LOCAL, _LOCAL), (BROADCAST, _BROADCAST), (ANY, _ANY)):
        for name, arity in rows.items():
            table[name.encode()] = Command(name, arity, kind=kind)
    for name, (arity, options, start, skip) in _OPTION_KEYS.items():
        table[name.encode()] = Command(name, arity, 1, 1, option_keys=options, options_from=start,
                                       option_skip=skip)
    table[b"scan"] = Command("scan", -2, kind=SCAN)
    for family, (names, why) in FAMILIES.items():
        for name in names.split():
            table[name.encode()] = Command(name, -1, kind=UNSUPPORTED, reason=f"{family}: {why}")
    table.update({name.upper(): command for name, command in table.items()})  # clients send either case
    return table


TABLE: Final[dict[bytes, Command]] = _build()


def lookup(name: bytes) -> Command:
    """The row of a command (any case); unknown commands raise the unsupported error."""
    command = TABLE.get(name) or TABLE.get(name.lower())  # (lower and upper case are both in the table)
    if command is None:
        version = NEWER.get(name.lower())
        why = f": added in redis {version}, after the redis 7.0 commands the table follows" if version else ""
        raise CommandError(f"ERR unsupported command '{_show(name)}' (not in hoard proxy's command table{why})")
    if command.kind == UNSUPPORTED:
        raise CommandError(f"ERR unsupported command '{_show(name)}' behind a proxy ({command.reason})")
    return command


def _show(name: bytes) -> str:
    text = name[:64].decode("utf-8", "replace")
    return "".join(c if c.isprintable() and c != "'" else "?" for c in text)
