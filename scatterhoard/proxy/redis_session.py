"""The client side of a redis pool: RESP commands parsed, routed by the command table, answered in order.

The same engine as memcached pools (:class:`~.session.ClientConnection`:
one :class:`~.session.Slot` per command in the client's order, backends
filling them in any order, one write per event-loop iteration); what differs
is the parser (the core :class:`~scatterhoard.protocol.resp.RequestParser`,
arrays and inline commands), the table (:mod:`.redis_commands`) and the
merges (:mod:`.redis_merge`).  Commands are forwarded re-encoded as arrays of
bulk strings, except canonical GET/SET at the start of a read, which are
forwarded as they came (:meth:`RedisSession._leading_get_set`, the counterpart
of the memcached session's ``get`` fast path); replies go back as the bytes
the server sent.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable

from ..protocol.resp import RequestParser, RespProtocolError
from ..routing import NoLiveServersError
from . import flow
from .backend import LINE, BackendServer, Waiter
from .pool import Pool
from .redis_backend import error_reply
from .redis_commands import (
    ANY,
    BROADCAST,
    KEYED,
    LOCAL,
    MGET,
    MSET,
    SCAN,
    SUM,
    TABLE,
    UNSUPPORTED,
    Command,
    CommandError,
    lookup,
)
from .redis_merge import merge_info, merge_mget, merge_ok, merge_sum, scan_reply
from .session import ClientConnection, Slot

NOAUTH = b"-NOAUTH Authentication required.\r\n"
# The fast path: "*2 GET <key>" / "*3 SET <key> <value>" up to the key's bytes; a length (no leading 0).
_FAST_HEAD = re.compile(rb"\*(?:2\r\n\$3\r\n(?:GET|get)|3\r\n\$3\r\n(?:SET|set))\r\n\$(0|[1-9][0-9]{0,9})\r\n")
_FAST_LENGTH = re.compile(rb"\$(0|[1-9][0-9]{0,9})\r\n")
PONG = b"+PONG\r\n"
OK = b"+OK\r\n"


def encode(args: list[bytes]) -> bytes:
    """A command as an array of bulk strings (one formatting for the common 2 and 3 arguments)."""
    n = len(args)
    if n == 2:
        a, b = args
        return b"*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(a), a, len(b), b)
    if n == 3:
        a, b, c = args
        return b"*3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(a), a, len(b), b, len(c), c)
    return b"*%d\r\n%b" % (n, b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args]))


class ProxyRespParser(RequestParser):
    """The core parser, plus :meth:`idle` for the GET/SET fast path."""

    __slots__ = ()

    def idle(self) -> bool:
        """True between commands: nothing buffered, no array half read."""
        return not self._chunks and self._args is None


class RedisSlot(Slot):
    """A command's place in the reply order; a failed request gets ``-ERR <strerror>``."""

    __slots__ = ()

    def fail(self, err: int) -> None:
        self.complete(error_reply(err))


class Gather(RedisSlot):
    """A command sent in several parts (split by server, or broadcast): merged when all answered."""

    __slots__ = ("parts", "left", "merge")

    def __init__(self, session: ClientConnection, nparts: int, merge: Callable[[list[bytes]], bytes]) -> None:
        super().__init__(session, LINE)
        self.parts: list[bytes] = [b""] * nparts
        self.left = nparts
        self.merge = merge

    def part(self, index: int, raw: bytes) -> None:
        self.parts[index] = raw
        self.left -= 1
        if self.left == 0:
            try:
                reply = self.merge(self.parts)
            except Exception as exc:  # a part that is not what the command answers
                reply = b"-ERR cannot merge the servers' replies: %s\r\n" % str(exc).encode()[:200]
            self.complete(reply)


class Part(Waiter):
    __slots__ = ("parent", "index")

    def __init__(self, parent: Gather, index: int) -> None:
        self.kind = LINE
        self.parent = parent
        self.index = index

    def complete(self, raw: bytes) -> None:
        self.parent.part(self.index, raw)

    def fail(self, err: int) -> None:
        self.parent.part(self.index, error_reply(err))


class ScanSlot(RedisSlot):
    """SCAN on one server: its cursor rewritten into the proxy's."""

    __slots__ = ("index", "nservers")

    def __init__(self, session: ClientConnection, index: int, nservers: int) -> None:
        super().__init__(session, LINE)
        self.index = index
        self.nservers = nservers

    def complete(self, raw: bytes) -> None:
        try:
            raw = scan_reply(raw, self.index, self.nservers)
        except ValueError:
            raw = b"-ERR unexpected SCAN reply from a server\r\n"
        super().complete(raw)


class RedisSession(ClientConnection):
    """One client connection to a redis pool's listener."""


    def __init__(self, pool: Pool) -> None:
        self.resp3 = False  # HELLO 3: served over the servers' RESP3 connections (see servers_for)
        super().__init__(pool)
        self.no_live_reply = error_reply(errno.ECONNREFUSED)
        self.parser = ProxyRespParser()
        self.authenticated = not pool.config.redis_auth
        self.name: bytes | None = None  # CLIENT SETNAME
        self._local: dict[bytes, Callable[[list[bytes]], None]] = {
            b"ping": self._ping, b"echo": self._echo, b"quit": self._quit, b"auth": self._auth,
            b"select": self._select, b"hello": self._hello, b"client": self._client,
        }

    def servers_for(self, pool: Pool) -> list[BackendServer]:
        # a RESP3 client (HELLO 3) stays on the servers' RESP3 connections, across reloads too
        return [s.variant("resp3") for s in pool.servers] if self.resp3 else pool.servers

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.ctx.current = self  # who feeds a server connection, should it be full (flow)
        try:
            parser = self.parser
            if data[:1] == b"*" and self.authenticated and parser.idle():
                data = self._leading_get_set(data)
                if not data:
                    return
            try:
                commands = parser.feed(data)
            except RespProtocolError as exc:  # redis runs what came before, answers the error, closes
                self._close_after(exc.parsed, b"-ERR %s\r\n" % str(exc).encode())
                return
            self._handle(commands)
        except Exception:
            self._internal_error()

    def _leading_get_set(self, data: bytes) -> bytes:
        """Forward the GET/SET commands at the start of a read as they are; return the rest.

        The commonest commands by far, in their canonical form (``*2 GET key``,
        ``*3 SET key value``, lengths without leading zeros: exactly the bytes
        the parser and :func:`encode` would produce) skip the parser and the
        re-encoding; consecutive ones for the same server go as one run of
        bytes.  The first other command, and all after it, go to the parser.
        """
        queue = self.queue
        servers = self.servers
        index_for = self.index_for
        head = _FAST_HEAD.match
        length = _FAST_LENGTH.match
        pos = 0
        run: BackendServer | None = None  # the server of the run being built, from run_start to pos
        run_start = 0
        slots: list[Waiter] = []
        while len(queue) < self.limit:
            m = head(data, pos)
            if m is None:
                break
            start = m.end()
            end = start + int(m[1])
            if data[end:end + 2] != b"\r\n":
                break
            key = data[start:end]
            if data[pos + 1] == 51:  # *3: SET, its value
                m = length(data, end + 2)
                if m is None:
                    break
                end = m.end() + int(m[1])
                if data[end:end + 2] != b"\r\n":
                    break
            try:
                server = servers[index_for(key)]
            except NoLiveServersError:
                if run is not None:
                    (run.active or run.pick()).send_many(data[run_start:pos], slots)
                    run, slots = None, []
                self._no_live(False)
                pos = end + 2
                continue
            if server is not run:
                if run is not None:
                    (run.active or run.pick()).send_many(data[run_start:pos], slots)
                    slots = []
                run, run_start = server, pos
            slot = RedisSlot(self, LINE)
            queue.append(slot)
            slots.append(slot)
            pos = end + 2
        if run is not None:
            (run.active or run.pick()).send_many(data[run_start:pos], slots)
        return data[pos:] if pos else data

    def _handle(self, commands: list[list[bytes]]) -> None:
        queue = self.queue
        servers = self.servers
        index_for = self.index_for
        table = TABLE
        for args in commands:
            if len(queue) >= self.limit:
                flow.hold(self, commands, args)
                return
            command = table.get(args[0])
            if command is not None and command.single and self.authenticated and \
                    command.min_args <= len(args) <= command.max_args:  # the fast path: one key, routed
                try:
                    server = servers[index_for(args[1])]
                except NoLiveServersError:
                    self._no_live(False)
                    continue
                slot = RedisSlot(self, LINE)
                queue.append(slot)
                (server.active or server.pick()).send(encode(args), slot)
                continue
            try:
                if command is None or command.kind == UNSUPPORTED:  # mixed case, unknown, refused
                    command = lookup(args[0])
                command.check_arity(len(args))
                if not self.authenticated and command.name not in ("auth", "quit", "hello"):
                    self._answer(NOAUTH)
                    continue
                kind = command.kind
                if kind == KEYED:
                    self._keyed(command, args)
                elif kind == LOCAL:
                    self._local[command.name.encode()](args)
                    if self.closing:
                        break
                    servers = self.servers  # HELLO may have switched the protocol
                elif kind == BROADCAST:
                    self._broadcast(command, args)
                elif kind == SCAN:
                    self._scan(args)
                elif kind == ANY:
                    self._any_server(args)
                else:
                    self._split(command, args)
            except CommandError as exc:
                self._answer(exc.reply)

    # -- routing -------------------------------------------------------------------------
    def _keyed(self, command: Command, args: list[bytes]) -> None:
        """A command whose keys must all live on one server."""
        keys = command.keys(args)
        try:
            owners = {self.index_for(key) for key in keys}
        except NoLiveServersError:
            self._no_live(False)
            return
        if len(owners) != 1:
            raise CommandError(f"ERR the keys of '{command.name}' are on different servers of pool "
                               f"'{self.pool.name}' (give them one hash tag to keep them together)")
        server = self.servers[owners.pop()]
        slot = RedisSlot(self, LINE)
        self.queue.append(slot)
        (server.active or server.pick()).send(encode(args), slot)

    def _split(self, command: Command, args: list[bytes]) -> None:
        """MGET, DEL/UNLINK/TOUCH/EXISTS, MSET: one part per server, merged."""
        step = command.step
        index_for = self.index_for
        try:
            owners = [index_for(args[i]) for i in range(1, len(args), step)]
        except NoLiveServersError:
            self._no_live(False)
            return
        first = owners[0]
        if all(o == first for o in owners):  # one server: forwarded as it is
            server = self.servers[first]
            slot = RedisSlot(self, LINE)
            self.queue.append(slot)
            (server.active or server.pick()).send(encode(args), slot)
            return
        groups: dict[int, list[bytes]] = {}
        part_of: dict[int, int] = {}
        name = args[0]
        for n, owner in enumerate(owners):
            group = groups.get(owner)
            if group is None:
                part_of[owner] = len(groups)
                groups[owner] = group = [name]
            i = 1 + n * step
            group += args[i:i + step]
        kind = command.kind
        merge: Callable[[list[bytes]], bytes]
        if kind == MGET:
            order = [part_of[o] for o in owners]
            merge = lambda parts: merge_mget(parts, order)  # noqa: E731
        elif kind == SUM:
            merge = merge_sum
        else:
            assert kind == MSET
            merge = merge_ok
        parent = Gather(self, len(groups), merge)
        self.queue.append(parent)
        self.pool.stats.fragments += len(groups)
        servers = self.servers
        for owner, group_args in groups.items():
            server = servers[owner]
            (server.active or server.pick()).send(encode(group_args), Part(parent, part_of[owner]))

    def _broadcast(self, command: Command, args: list[bytes]) -> None:
        """INFO, DBSIZE, FLUSHDB: every live server, merged."""
        live = sorted(self.pool.router.live)
        if not live:
            self._no_live(False)
            return
        merge: Callable[[list[bytes]], bytes]
        if command.name == "info":
            names = [self.servers[i].name for i in live]
            merge = lambda parts: merge_info(parts, names)  # noqa: E731
        elif command.name == "dbsize":
            merge = merge_sum
        else:
            merge = merge_ok
        parent = Gather(self, len(live), merge)
        self.queue.append(parent)
        data = encode(args)
        for n, index in enumerate(live):
            server = self.servers[index]
            (server.active or server.pick()).send(data, Part(parent, n))

    def _any_server(self, args: list[bytes]) -> None:
        """COMMAND, LOLWUT: keyless, about the server software; the first live server in pool order."""
        live = self.pool.router.live
        if not live:
            self._no_live(False)
            return
        server = self.servers[min(live)]
        slot = RedisSlot(self, LINE)
        self.queue.append(slot)
        (server.active or server.pick()).send(encode(args), slot)

    def _scan(self, args: list[bytes]) -> None:
        """SCAN over the servers in pool order; the cursor says which server and where in it."""
        servers = self.servers
        nservers = len(servers)
        try:
            cursor = int(args[1])
            if cursor < 0:
                raise ValueError
        except ValueError:
            raise CommandError("ERR invalid cursor") from None
        index, inner = cursor % nservers, cursor // nservers
        while servers[index].primary.ejected:  # its keys are not reachable through the proxy: skip it
            index += 1
            inner = 0
            if index == nservers:
                self._answer(b"*2\r\n$1\r\n0\r\n*0\r\n")
                return
        slot = ScanSlot(self, index, nservers)
        self.queue.append(slot)
        server = servers[index]
        (server.active or server.pick()).send(encode([args[0], b"%d" % inner, *args[2:]]), slot)

    # -- answered by the proxy -------------------------------------------------------------------
    def _ping(self, args: list[bytes]) -> None:
        if len(args) > 2:
            raise CommandError("ERR wrong number of arguments for 'ping' command")
        self._answer(PONG if len(args) == 1 else b"$%d\r\n%b\r\n" % (len(args[1]), args[1]))

    def _echo(self, args: list[bytes]) -> None:
        self._answer(b"$%d\r\n%b\r\n" % (len(args[1]), args[1]))

    def _quit(self, args: list[bytes]) -> None:
        self._answer(OK)
        self.closing = True
        self._mark()

    def _check_password(self, user: bytes | None, password: bytes) -> bytes:
        expected = self.pool.config.redis_auth  # read each time: a reload may change it
        if not expected:
            return (b"-ERR AUTH <password> called without any password configured for the default user. "
                    b"Are you sure your configuration is correct?\r\n")
        if password == expected.encode() and user in (None, b"default"):
            self.authenticated = True
            return OK
        self.authenticated = False
        return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"

    def _auth(self, args: list[bytes]) -> None:
        if len(args) > 3:
            raise CommandError("ERR syntax error")
        self._answer(self._check_password(args[1] if len(args) == 3 else None, args[-1]))

    def _select(self, args: list[bytes]) -> None:
        db = self.pool.config.redis_db
        if args[1] in (b"0", b"%d" % db):
            self._answer(OK)
        else:
            raise CommandError(f"ERR SELECT is not allowed behind the proxy: pool '{self.pool.name}' "
                               f"uses database {db} of its servers (redis_db), selected as 0 or {db}")

    def _hello(self, args: list[bytes]) -> None:
        """HELLO [2|3 [AUTH user pass] [SETNAME name]]; RESP3 clients use the servers' RESP3 connections."""
        resp3 = self.resp3
        if len(args) > 1:
            if args[1] not in (b"2", b"3"):
                self._answer(b"-NOPROTO unsupported protocol version\r\n")
                return
            resp3 = args[1] == b"3"
        i = 2
        while i < len(args):
            option = args[i].upper()
            if option == b"AUTH" and i + 2 < len(args):
                reply = self._check_password(args[i + 1], args[i + 2])
                if reply != OK:
                    self._answer(reply)
                    return
                i += 3
            elif option == b"SETNAME" and i + 1 < len(args):
                self.name = args[i + 1]
                i += 2
            else:
                raise CommandError(f"ERR Syntax error in HELLO option '{args[i].decode('utf-8', 'replace')}'")
        if not self.authenticated:
            self._answer(NOAUTH)
            return
        self.resp3 = resp3
        self.servers = self.servers_for(self.pool)
        fields: list[bytes | int] = [b"server", b"redis", b"version", b"7.0.0", b"proto", 3 if resp3 else 2,
                                     b"id", id(self) & 0xFFFFFFFF, b"mode", b"standalone", b"role", b"master"]
        body = b"".join([b":%d\r\n" % v if isinstance(v, int) else b"$%d\r\n%b\r\n" % (len(v), v)
                         for v in fields]) + b"$7\r\nmodules\r\n*0\r\n"
        self._answer((b"%7\r\n" if resp3 else b"*14\r\n") + body)

    def _client(self, args: list[bytes]) -> None:
        """CLIENT SETNAME / GETNAME / SETINFO are the connection's own; the rest is the servers'."""
        sub = args[1].upper()
        if sub == b"SETNAME" and len(args) == 3:
            self.name = args[2] or None
            self._answer(OK)
        elif sub == b"GETNAME" and len(args) == 2:
            name = self.name
            null = b"_\r\n" if self.resp3 else b"$-1\r\n"
            self._answer(null if name is None else b"$%d\r\n%b\r\n" % (len(name), name))
        elif sub == b"SETINFO" and len(args) == 4:
            self._answer(OK)
        else:
            raise CommandError(f"ERR unsupported command 'client {sub.decode('utf-8', 'replace').lower()}' "
                               "behind a proxy (the servers' connections are shared by every client)")
