"""The RESP side of the proxy engine: reply framing, AUTH/SELECT on connect, the PING probe.

:class:`RespFramer` cuts a redis server's reply stream into whole replies
without building Python values: it walks type bytes, header lines and bulk
lengths (one ``find`` per element), so a reply is forwarded as the bytes the
server sent.  An incomplete reply is resumed where the walk stopped (the
offset and the counts of the aggregates still open are kept), so a large
``LRANGE`` or ``MGET`` reply arriving in many reads is walked once.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import TYPE_CHECKING

from ..errors import ProtocolError
from ..fifo import Fifo
from ..protocol.resp import encode_command
from .backend import LINE, Dialect, ReplyFramer, Waiter

if TYPE_CHECKING:
    from .backend import BackendConnection
    from .config import PoolConfig

log = logging.getLogger("scatterhoard.proxy")

# Type bytes.
_BLOBS = frozenset(b"$!=")  # bulk string, blob error, verbatim string: a length line, then the bytes
_AGGREGATES = frozenset(b"*~>")  # array, set, push: a count of elements
_MAP, _ATTRIBUTE = 37, 124  # % | : a count of pairs (an attribute also precedes the value it annotates)
_LINES = frozenset(b"+-:_,#(")  # one line


def error_reply(err: int) -> bytes:
    """twemproxy's reply to a request that failed on its server: ``-ERR <strerror>``."""
    return b"-ERR %s\r\n" % os.strerror(err).encode()


class RespFramer(ReplyFramer):
    """Splits RESP2/RESP3 replies; the waiter's ``kind`` plays no part."""

    __slots__ = ("scan", "open")

    def __init__(self) -> None:
        self.scan = 0  # how far into the first incomplete reply the walk got (an element's start)
        self.open: list[int] = []  # elements still expected by each aggregate open at that point

    def split(self, data: bytes, expect: Fifo[Waiter]) -> tuple[int, int, int]:
        n = len(data)
        find = data.find
        pos = 0
        count = 0
        p = self.scan
        stack = self.open
        while expect and pos < n:
            if not p:  # the commonest replies, a whole bulk string or line, need no walk
                kind = data[pos]
                if kind == 36:
                    eol = find(b"\r\n", pos)
                    if eol > 0:
                        try:
                            size = int(data[pos + 1:eol])
                        except ValueError:
                            raise ProtocolError(f"bad RESP length line {data[pos:eol][:80]!r}") from None
                        end = eol + size + 4 if size >= 0 else eol + 2
                        if end <= n:
                            expect.popleft().complete(data[pos:end])
                            count += 1
                            pos = end
                            continue
                elif kind in _LINES:
                    eol = find(b"\r\n", pos)
                    if eol > 0:
                        end = eol + 2
                        expect.popleft().complete(data[pos:end])
                        count += 1
                        pos = end
                        continue
            p += pos
            while True:  # one element per turn, until the reply at pos is whole
                if p >= n:
                    self.scan = p - pos
                    return count, pos, p - pos + 1
                eol = find(b"\r\n", p)
                if eol < 0:
                    self.scan = p - pos
                    return count, pos, n - pos + 1
                kind = data[p]
                if kind in _BLOBS:
                    try:
                        size = int(data[p + 1:eol])
                    except ValueError:
                        raise ProtocolError(f"bad RESP length line {data[p:eol][:80]!r}") from None
                    if size < 0:
                        p = eol + 2  # $-1: null bulk
                    else:
                        end = eol + size + 4
                        if end > n:
                            self.scan = p - pos
                            return count, pos, end - pos
                        p = end
                elif kind in _LINES:
                    p = eol + 2
                else:
                    try:
                        items = int(data[p + 1:eol])
                    except ValueError:
                        raise ProtocolError(f"bad RESP count line {data[p:eol][:80]!r}") from None
                    if kind == _MAP:
                        items *= 2
                    elif kind == _ATTRIBUTE:
                        items = items * 2 + 1  # the annotated value counts as one more element
                    elif kind not in _AGGREGATES:
                        raise ProtocolError(f"bad RESP type byte {data[p:p + 1]!r}")
                    p = eol + 2
                    if items > 0:
                        stack.append(items)
                        continue
                # an element is complete: close the aggregates it completes
                while stack:
                    stack[-1] -= 1
                    if stack[-1]:
                        break
                    stack.pop()
                if not stack:
                    break
            waiter = expect.popleft()
            count += 1
            waiter.complete(data[pos:p])
            pos = p
            p = 0
        self.scan = 0
        return count, pos, 0


class Handshake(Waiter):
    """The reply to an AUTH, HELLO or SELECT sent first on a new connection: as expected, or close it."""

    __slots__ = ("conn", "what", "expect")

    def __init__(self, conn: BackendConnection, what: str, expect: bytes = b"+OK\r\n") -> None:
        super().__init__(LINE)
        self.conn = conn
        self.what = what
        self.expect = expect  # what the reply starts with

    def complete(self, raw: bytes) -> None:
        if raw.startswith(self.expect):
            return
        conn = self.conn
        server = conn.server
        log.warning("server %s of pool %s refused %s: %s; closing the connection", server.name,
                    server.pool.name, self.what, raw.strip().decode("utf-8", "replace")[:200])
        server.pool.ctx.loop.call_soon(conn.shutdown, errno.ECONNREFUSED, "server_err")

    def fail(self, err: int) -> None:
        pass  # the requests queued behind it fail too, with the same error


class RedisDialect(Dialect):
    """Redis servers: RESP framing, ``AUTH`` (redis_auth) and ``SELECT`` (redis_db) on every
    new connection, ``PING`` as the health probe.

    The ``"resp3"`` variant's connections start with ``HELLO 3`` (carrying the
    AUTH): RESP3 clients are served over them, so their replies are the
    server's own RESP3 and go back untouched.
    """

    __slots__ = ("config", "auth", "db", "resp3")

    def probe_request(self) -> bytes:
        return encode_command(b"PING")

    def __init__(self, config: PoolConfig, resp3: bool = False) -> None:
        self.config = config
        self.auth = config.redis_auth
        self.db = config.redis_db
        self.resp3 = resp3

    def variant(self, name: str) -> Dialect:
        if name != "resp3":
            return super().variant(name)
        return RedisDialect(self.config, resp3=True)

    def framer(self) -> ReplyFramer:
        return RespFramer()

    def handshake(self, conn: BackendConnection) -> list[tuple[bytes, Waiter]]:
        out: list[tuple[bytes, Waiter]] = []
        if self.resp3:
            auth = (b"AUTH", b"default", self.auth) if self.auth else ()
            out.append((encode_command(b"HELLO", b"3", *auth), Handshake(conn, "HELLO 3", b"%")))
        elif self.auth:
            out.append((encode_command(b"AUTH", self.auth), Handshake(conn, "AUTH")))
        if self.db:
            out.append((encode_command(b"SELECT", self.db), Handshake(conn, f"SELECT {self.db}")))
        return out

    def probe_ok(self, raw: bytes) -> bool:
        return raw == b"+PONG\r\n"
