"""The RESP face of ``hoard server``: redis clients on the memcached port (no I/O here).

A connection whose first byte is ``*`` gets a :class:`RespSession`. It runs
the key-value subset of redis that maps onto the store (strings with
expiries, counters, the keyspace commands, MULTI/EXEC/WATCH, and the
connection commands clients send: HELLO, AUTH, CLIENT, COMMAND, INFO ...),
with redis 7.0's replies and error texts, RESP2 or RESP3 after ``HELLO 3``.
The store is the one memcached clients use: values are stored with flags 0.

Replies to one read are joined into one write. A protocol error is answered
with ``-ERR Protocol error: ...`` after the replies of the commands before
it, then the connection is closed, as redis does.

Where it differs from redis, on purpose:

* one database (``SELECT 0`` only) and strings only (every other data type's
  commands are unknown commands);
* the store's item size is the largest value and, like redis's
  ``proto-max-bulk-len``, the largest bulk string a client may send; a value
  that does not fit gets ``-ERR string exceeds maximum allowed size``, and,
  like memcached, a SET that fails removes the old value;
* WATCH compares cas values: a key created and deleted again between WATCH
  and EXEC goes unnoticed;
* INFO's figures come from the store and the memcached counters
  (``expires`` in the keyspace line is always 0); CLIENT INFO has no
  addresses; COMMAND DOCS is empty and COMMAND INFO has no key specs.
"""

from __future__ import annotations

import itertools
import time
from typing import ClassVar, cast

from ..protocol.resp import NULL, NULL_BULK, QUEUED, RequestParser, RespProtocolError, error
from ..store import Store
from . import resp_admin as a
from . import resp_keys as k
from .resp_common import Command, Handler, Reply, cstr, err
from .stats import ServerStats, Settings

_ids = itertools.count(1)
_CRLF_TO_SPACES = bytes.maketrans(b"\r\n", b"  ")


class RespSession:
    """One client connection speaking RESP2/RESP3 to the store."""

    commands: ClassVar[dict[bytes, Command]]

    def __init__(self, store: Store, stats: ServerStats, settings: Settings) -> None:
        self.store = store
        self.stats = stats
        self.settings = settings
        self.parser = RequestParser(max_bulk=store.max_item_size)
        self.closing = False
        self.resp3 = False
        self.null = NULL_BULK
        self.id = next(_ids)
        self.name: bytes | None = None
        self.lib_name = b""
        self.lib_ver = b""
        self.created = self.last_active = time.monotonic()
        self.last_command = "NULL"
        self.multi: list[tuple[Command, list[bytes]]] | None = None
        self.multi_failed = False
        self.watched: dict[bytes, int] = {}  # key -> cas when watched (0: no key)

    def set_protocol(self, version: int) -> None:
        self.resp3 = version == 3
        self.null = NULL if self.resp3 else NULL_BULK

    # -- the session interface -------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        failure: str | None = None
        try:
            commands = self.parser.feed(data)
        except RespProtocolError as exc:
            commands = cast(list[list[bytes]], exc.parsed)
            failure = str(exc)
        if failure is None and len(commands) == 1:
            return self.execute(commands[0])
        out: list[bytes] = []
        for argv in commands:
            out.append(self.execute(argv))
            if self.closing:
                return b"".join(out)
        if failure is not None:
            self.stats.protocol_errors += 1
            self.stats.resp_errors += 1
            out.append(error("ERR " + failure))
            self.closing = True
        return b"".join(out)

    def execute(self, argv: list[bytes]) -> bytes:
        """Run one command (or queue it inside MULTI); returns its encoded reply."""
        self.last_active = time.monotonic()
        cmd = self.commands.get(argv[0].lower())
        if cmd is None:
            return self._reject(None, _unknown_command(argv))
        if cmd.subcommands is not None and len(argv) > 1:
            sub = cmd.subcommands.get(argv[1].lower())
            if sub is None:
                return self._reject(None, b"unknown subcommand '%b'. Try %b HELP."
                                    % (cstr(argv[1])[:128], cstr(argv[0]).upper()))
            cmd = sub
        arity = cmd.arity
        if (arity > 0 and len(argv) != arity) or len(argv) < -arity:
            return self._reject(cmd, b"wrong number of arguments for '%b' command" % cmd.name.encode())
        self.stats.resp_commands += 1
        self.last_command = cmd.name
        if self.multi is not None and cmd.queued:
            self.multi.append((cmd, argv))
            return QUEUED
        return self._run(cmd, argv)

    def _run(self, cmd: Command, argv: list[bytes]) -> bytes:
        try:
            return cmd.handler(self, argv)
        except Reply as reply:
            self.stats.resp_errors += 1
            return reply.reply

    def _reject(self, cmd: Command | None, message: bytes) -> bytes:
        """A command refused before it runs; inside MULTI this dooms the transaction,
        and a refused EXEC discards it (redis's ``execCommandAbort``)."""
        self.stats.resp_errors += 1
        message = message.translate(_CRLF_TO_SPACES)
        if cmd is not None and cmd.handler is cmd_exec:
            self.discard()
            return error(b"EXECABORT Transaction discarded because of: " + message)
        if self.multi is not None:
            self.multi_failed = True
        return error(b"ERR " + message)

    # -- transactions ------------------------------------------------------------------
    def watch_changed(self) -> bool:
        get = self.store.get
        for key, cas in self.watched.items():
            item = get(key, bump=False)
            if (0 if item is None else item.cas) != cas:
                return True
        return False

    def discard(self) -> None:
        self.multi = None
        self.multi_failed = False
        self.watched = {}


def _unknown_command(argv: list[bytes]) -> bytes:
    """redis's text, arguments quoted and cut to 128 bytes in all."""
    args = b""
    for arg in argv[1:]:
        if len(args) >= 128:
            break
        args += b"'%b' " % cstr(arg)[:128 - len(args)]
    return b"unknown command '%b', with args beginning with: %b" % (cstr(argv[0])[:128], args)


def cmd_multi(s: RespSession, argv: list[bytes]) -> bytes:
    if s.multi is not None:
        raise err("MULTI calls can not be nested")
    s.multi = []
    return b"+OK\r\n"


def cmd_exec(s: RespSession, argv: list[bytes]) -> bytes:
    queued = s.multi
    if queued is None:
        raise err("EXEC without MULTI")
    failed = s.multi_failed
    changed = not failed and s.watch_changed()
    s.discard()
    if failed:
        raise Reply(error("EXECABORT Transaction discarded because of previous errors."))
    if changed:
        return NULL if s.resp3 else b"*-1\r\n"
    replies = [s._run(cmd, args) for cmd, args in queued]
    return b"*%d\r\n%b" % (len(replies), b"".join(replies))


def cmd_discard(s: RespSession, argv: list[bytes]) -> bytes:
    if s.multi is None:
        raise err("DISCARD without MULTI")
    s.discard()
    return b"+OK\r\n"


def cmd_watch(s: RespSession, argv: list[bytes]) -> bytes:
    if s.multi is not None:
        raise err("WATCH inside MULTI is not allowed")
    for key in argv[1:]:
        if key not in s.watched:
            item = s.store.get(key, bump=False)
            s.watched[key] = 0 if item is None else item.cas
    return b"+OK\r\n"


def cmd_unwatch(s: RespSession, argv: list[bytes]) -> bytes:
    s.watched = {}
    return b"+OK\r\n"


def cmd_reset(s: RespSession, argv: list[bytes]) -> bytes:
    s.discard()
    s.set_protocol(2)
    s.name = None
    return b"+RESET\r\n"


# -- the command table ---------------------------------------------------------------------
_READ = ("@read", "@string", "@fast")
_WRITE_FAST = ("@write", "@string", "@fast")
_WRITE_SLOW = ("@write", "@string", "@slow")
_KEY_READ = ("@keyspace", "@read", "@fast")
_KEY_WRITE = ("@keyspace", "@write", "@fast")
_CONN = ("@fast", "@connection")
_TX = ("@fast", "@transaction")
_ONE = (1, 1, 1)
_ALL = (1, -1, 1)


def _c(name: str, arity: int, handler: Handler, flags: str, keys: tuple[int, int, int] = (0, 0, 0),
       categories: tuple[str, ...] = (), queued: bool = True) -> Command:
    return Command(name, arity, handler, tuple(flags.split()), keys, categories, None, queued)


def _container(name: str, arity: int, handler: Handler, flags: str, categories: tuple[str, ...],
               subs: list[Command]) -> Command:
    cmd = _c(name, arity, handler, flags, categories=categories)
    cmd.subcommands = {sub.name.split("|")[1].encode(): sub for sub in subs}
    return cmd


_TABLE = [
    _c("get", 2, k.cmd_get, "readonly fast", _ONE, _READ),
    _c("set", -3, k.cmd_set, "write denyoom", _ONE, _WRITE_SLOW),
    _c("setnx", 3, k.cmd_setnx, "write denyoom fast", _ONE, _WRITE_FAST),
    _c("setex", 4, k.cmd_setex, "write denyoom", _ONE, _WRITE_SLOW),
    _c("psetex", 4, k.cmd_psetex, "write denyoom", _ONE, _WRITE_SLOW),
    _c("getset", 3, k.cmd_getset, "write denyoom fast", _ONE, _WRITE_FAST),
    _c("getdel", 2, k.cmd_getdel, "write fast", _ONE, _WRITE_FAST),
    _c("getex", -2, k.cmd_getex, "write fast", _ONE, _WRITE_FAST),
    _c("mget", -2, k.cmd_mget, "readonly fast", _ALL, _READ),
    _c("mset", -3, k.cmd_mset, "write denyoom", (1, -1, 2), _WRITE_SLOW),
    _c("msetnx", -3, k.cmd_msetnx, "write denyoom", (1, -1, 2), _WRITE_SLOW),
    _c("del", -2, k.cmd_del, "write", _ALL, ("@keyspace", "@write", "@slow")),
    _c("unlink", -2, k.cmd_del, "write fast", _ALL, _KEY_WRITE),
    _c("exists", -2, k.cmd_exists, "readonly fast", _ALL, _KEY_READ),
    _c("touch", -2, k.cmd_touch, "readonly fast", _ALL, _KEY_READ),
    _c("type", 2, k.cmd_type, "readonly fast", _ONE, _KEY_READ),
    _c("strlen", 2, k.cmd_strlen, "readonly fast", _ONE, _READ),
    _c("expire", -3, k.cmd_expire, "write fast", _ONE, _KEY_WRITE),
    _c("pexpire", -3, k.cmd_pexpire, "write fast", _ONE, _KEY_WRITE),
    _c("expireat", -3, k.cmd_expireat, "write fast", _ONE, _KEY_WRITE),
    _c("pexpireat", -3, k.cmd_pexpireat, "write fast", _ONE, _KEY_WRITE),
    _c("ttl", 2, k.cmd_ttl, "readonly fast", _ONE, _KEY_READ),
    _c("pttl", 2, k.cmd_pttl, "readonly fast", _ONE, _KEY_READ),
    _c("expiretime", 2, k.cmd_expiretime, "readonly fast", _ONE, _KEY_READ),
    _c("pexpiretime", 2, k.cmd_pexpiretime, "readonly fast", _ONE, _KEY_READ),
    _c("persist", 2, k.cmd_persist, "write fast", _ONE, _KEY_WRITE),
    _c("incr", 2, k.cmd_incr, "write denyoom fast", _ONE, _WRITE_FAST),
    _c("decr", 2, k.cmd_decr, "write denyoom fast", _ONE, _WRITE_FAST),
    _c("incrby", 3, k.cmd_incrby, "write denyoom fast", _ONE, _WRITE_FAST),
    _c("decrby", 3, k.cmd_decrby, "write denyoom fast", _ONE, _WRITE_FAST),
    _c("incrbyfloat", 3, k.cmd_incrbyfloat, "write denyoom fast", _ONE, _WRITE_FAST),
    _c("append", 3, k.cmd_append, "write denyoom fast", _ONE, _WRITE_FAST),
    _c("ping", -1, a.cmd_ping, "fast sentinel", categories=_CONN),
    _c("echo", 2, a.cmd_echo, "fast", categories=_CONN),
    _c("select", 2, a.cmd_select, "loading stale fast", categories=_CONN),
    _c("dbsize", 1, a.cmd_dbsize, "readonly fast", categories=_KEY_READ),
    _c("flushdb", -1, a.cmd_flushall, "write", categories=("@keyspace", "@write", "@slow", "@dangerous")),
    _c("flushall", -1, a.cmd_flushall, "write", categories=("@keyspace", "@write", "@slow", "@dangerous")),
    _c("info", -1, a.cmd_info, "loading stale sentinel", categories=("@slow", "@dangerous")),
    _c("hello", -1, a.cmd_hello, "noscript loading stale fast no_auth sentinel allow_busy",
       categories=_CONN),
    _c("auth", -2, a.cmd_auth, "noscript loading stale fast no_auth sentinel allow_busy", categories=_CONN),
    _c("quit", -1, a.cmd_quit, "allow_busy noscript loading stale fast no_auth", categories=_CONN,
       queued=False),
    _c("reset", 1, cmd_reset, "noscript loading stale fast no_auth allow_busy", categories=_CONN,
       queued=False),
    _c("multi", 1, cmd_multi, "noscript loading stale fast allow_busy", categories=_TX, queued=False),
    _c("exec", 1, cmd_exec, "noscript loading stale skip_slowlog", categories=("@slow", "@transaction"),
       queued=False),
    _c("discard", 1, cmd_discard, "noscript loading stale fast allow_busy", categories=_TX, queued=False),
    _c("watch", -2, cmd_watch, "noscript loading stale fast allow_busy", _ALL, _TX, queued=False),
    _c("unwatch", 1, cmd_unwatch, "noscript loading stale fast allow_busy", categories=_TX),
    _container("client", -2, a.cmd_client_help, "sentinel", ("@slow",), [
        _c("client|setname", 3, a.cmd_client_setname, "noscript loading stale", categories=_CONN),
        _c("client|getname", 2, a.cmd_client_getname, "noscript loading stale", categories=_CONN),
        _c("client|id", 2, a.cmd_client_id, "noscript loading stale", categories=_CONN),
        _c("client|info", 2, a.cmd_client_info, "noscript loading stale", categories=_CONN),
        _c("client|setinfo", 4, a.cmd_client_setinfo, "noscript loading stale", categories=_CONN),
        _c("client|help", 2, a.cmd_client_help, "loading stale", categories=_CONN),
    ]),
    _container("command", -1, a.cmd_command, "loading stale sentinel", ("@slow", "@connection"), [
        _c("command|count", 2, a.cmd_command_count, "loading stale", categories=("@slow", "@connection")),
        _c("command|docs", -2, a.cmd_command_docs, "loading stale", categories=("@slow", "@connection")),
        _c("command|info", -2, a.cmd_command_info, "loading stale", categories=("@slow", "@connection")),
        _c("command|list", -2, a.cmd_command_list, "loading stale", categories=("@slow", "@connection")),
        _c("command|getkeys", -4, a.cmd_command_getkeys, "loading stale",
           categories=("@slow", "@connection")),
        _c("command|help", 2, a.cmd_command_help, "loading stale", categories=("@slow", "@connection")),
    ]),
]

RespSession.commands = {cmd.name.encode(): cmd for cmd in _TABLE}
