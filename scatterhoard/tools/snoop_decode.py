"""Sans-IO decoding for ``hoard snoop``: both directions of one connection, paired.

A :class:`Decoder` is fed what the client sent and what the server sent (as
copies: the snoop forwards the real bytes before decoding) and returns
:class:`Exchange` items, a request with its reply, as they complete:

* :class:`TextDecoder` -- memcached text and meta commands: requests through
  :class:`~scatterhoard.protocol.text.TextRequestParser`, replies cut by a
  self-describing framer (text replies carry no request id, and meta ``q``
  mode leaves some requests unanswered, so replies are framed without
  expectations and then paired);
* :class:`BinaryDecoder` -- memcached binary, through
  :class:`~scatterhoard.protocol.binary.BinaryParser`, paired by opcode and
  opaque (quiet requests may go unanswered);
* :class:`RespDecoder` -- RESP, through
  :class:`~scatterhoard.protocol.resp.RequestParser` and
  :class:`~scatterhoard.protocol.resp.RespParser`;
* :class:`DistcacheDecoder` -- distcache, through
  :class:`~scatterhoard.protocol.distcache.DistcacheParser`, paired by uid.

Bytes a codec refuses raise :class:`DecodeError`; the caller then stops
decoding that connection (and goes on forwarding it).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import ProtocolError
from ..protocol import binary as b
from ..protocol import distcache as dc
from ..protocol import text as t
from ..protocol.resp import (
    BigNumber,
    Error,
    Push,
    RequestParser,
    RespParser,
    RespSet,
    RespValue,
    SimpleString,
    Verbatim,
)
from ..protocol.resp_types import Attributed

#: Largest value the text decoder buffers to show; bigger ones are skipped, not decoded.
MAX_DECODED_VALUE = 64 * 1024 * 1024


class DecodeError(Exception):
    """The bytes are not (or no longer) the protocol: stop decoding this connection."""


@dataclass
class Request:
    command: str  # as shown and filtered: "get", "mg", "SETQ", "HGET", "ADD"
    keys: list[bytes]
    text: str  # one-line summary, values cut
    size: int  # bytes on the wire
    at: float = 0.0  # monotonic time of arrival of its last byte
    wall: float = 0.0  # the same, as a unix time
    expects_reply: bool = True  # False: noreply, quit, QUITQ
    quiet: bool = False  # a reply may or may not come (meta q, binary quiet opcodes)
    aliases: tuple[str, ...] = ()  # other names the --command filter matches (GETQ: GET)
    tag: object = None  # what pairs it with its reply (opaque, uid, O token...)


@dataclass
class Reply:
    text: str
    size: int
    status: str  # a short word for machines: STORED, HIT, MISS, HD, OK, ERROR...
    at: float = 0.0
    tag: object = None
    push: bool = False  # RESP3 out-of-band data: answers no request


@dataclass
class Exchange:
    request: Request | None
    reply: Reply | None
    note: str = ""  # why one side is missing: "noreply", "quiet", "unsolicited", "closed"...

    @property
    def latency(self) -> float | None:
        if self.request is None or self.reply is None:
            return None
        return max(0.0, self.reply.at - self.request.at)


# -- formatting helpers ---------------------------------------------------------------------------

_PRINTABLE = re.compile(rb"[\x21-\x7e]*")


def show_key(key: bytes) -> str:
    """A key as text: itself when printable ASCII, else its bytes repr."""
    if _PRINTABLE.fullmatch(key):
        return key.decode("ascii")
    return repr(key)


def show_value(value: bytes, limit: int) -> str:
    """A value cut at ``limit`` bytes (``limit`` 0: only its size)."""
    if limit <= 0:
        return f"{len(value)}B"
    text = repr(bytes(value[:limit]))[1:]
    if len(value) > limit:
        text += f"...(+{len(value) - limit}B)"
    return text


class Decoder:
    """Pairs requests and replies of one connection; subclasses decode one protocol."""

    protocol = "?"

    def __init__(self, values: int = 32) -> None:
        self.values = values
        self.pending: deque[Request] = deque()

    # The caller's interface.
    def client(self, data: bytes, at: float, wall: float) -> list[Exchange]:
        out: list[Exchange] = []
        for req in self._requests(data):
            req.at, req.wall = at, wall
            self.pending.append(req)  # noreply ones too: printed in order, once those before are done
            out.extend(self._drain())
        return out

    def server(self, data: bytes, at: float) -> list[Exchange]:
        out: list[Exchange] = []
        for rep in self._replies(data):
            rep.at = at
            out.extend(self._pair(rep))
        return out

    def close(self) -> list[Exchange]:
        """The requests still waiting when the connection ended."""
        out = [Exchange(r, None, "noreply" if not r.expects_reply else "quiet" if r.quiet else "closed")
               for r in self.pending]
        self.pending.clear()
        return out

    # What subclasses provide.
    def _requests(self, data: bytes) -> list[Request]:
        raise NotImplementedError

    def _replies(self, data: bytes) -> list[Reply]:
        raise NotImplementedError

    def _score(self, req: Request, rep: Reply) -> int:
        """How well ``rep`` fits ``req``: 0 it cannot be its reply, 1 it can, 2 it carries its tag."""
        return 1

    def _drain(self) -> list[Exchange]:
        """The requests at the head of the queue that get no reply."""
        out = []
        while self.pending and not self.pending[0].expects_reply:
            out.append(Exchange(self.pending.popleft(), None, "noreply"))
        return out

    def _pair(self, rep: Reply) -> list[Exchange]:
        """Pair ``rep`` with the request it answers.

        Replies come in request order, but quiet requests may get none.  The
        reply goes to the first request whose tag it carries (meta O/k,
        binary opcode and opaque); else to the first request that must be
        answered (not quiet) if it fits, else to the first quiet one it fits.
        The quiet requests skipped on the way got no reply.
        """
        if rep.push:
            return [Exchange(None, rep, "push")]
        found = quiet_fit = -1
        for i, req in enumerate(self.pending):
            if not req.expects_reply:
                continue
            score = self._score(req, rep)
            if score == 2:
                found = i
                break
            if req.quiet:
                if score and quiet_fit < 0:
                    quiet_fit = i
                continue
            found = i if score or quiet_fit < 0 else quiet_fit
            break
        else:
            found = quiet_fit
        if found < 0:
            return [Exchange(None, rep, "unsolicited")]
        out = []
        for _ in range(found):  # quiet requests the server did not answer (and noreply ones)
            skipped = self.pending.popleft()
            out.append(Exchange(skipped, None, "quiet" if skipped.expects_reply else "noreply"))
        out.append(Exchange(self.pending.popleft(), rep))
        out.extend(self._drain())
        return out


class _SizedFeeder:
    """Feeds a line-based parser so that every item's wire size (and first bytes) are known.

    The data is cut after each newline: every item of these protocols ends
    with a newline, so at most one item completes per piece, and its size is
    what the parser consumed since the previous item.
    """

    HEAD = 200

    def __init__(self, feed: Callable[[bytes], Sequence[object]], buffered: Callable[[], int]) -> None:
        self._feed = feed
        self._buffered = buffered
        self.fed = 0
        self.consumed = 0
        self.head = bytearray()  # the first bytes of the item being received

    def feed(self, data: bytes) -> list[tuple[object, int, bytes]]:
        out: list[tuple[object, int, bytes]] = []
        start = 0
        end = len(data)
        while start < end:
            nl = data.find(b"\n", start)
            stop = end if nl < 0 else nl + 1
            piece = data[start:stop]
            if len(self.head) < self.HEAD:
                self.head += piece[:self.HEAD - len(self.head)]
            items = self._feed(piece)
            self.fed += stop - start
            if items:
                consumed = self.fed - self._buffered()
                size = consumed - self.consumed
                self.consumed = consumed
                head = bytes(self.head)
                out.extend((item, size if i == 0 else 0, head) for i, item in enumerate(items))
                self.head.clear()
            start = stop
        return out


# -- memcached text and meta ----------------------------------------------------------------------

_STORE_REPLIES = ("STORED", "NOT_STORED", "EXISTS", "NOT_FOUND")
#: The reply statuses each command can get (errors aside).
_REPLIES: dict[str, tuple[str, ...]] = {
    "get": ("HIT", "MISS"), "gets": ("HIT", "MISS"), "gat": ("HIT", "MISS"), "gats": ("HIT", "MISS"),
    "set": _STORE_REPLIES, "add": _STORE_REPLIES, "replace": _STORE_REPLIES, "append": _STORE_REPLIES,
    "prepend": _STORE_REPLIES, "cas": _STORE_REPLIES, "incr": ("NUMBER", "NOT_FOUND"),
    "decr": ("NUMBER", "NOT_FOUND"), "delete": ("DELETED", "NOT_FOUND"), "touch": ("TOUCHED", "NOT_FOUND"),
    "version": ("VERSION",), "flush_all": ("OK",), "verbosity": ("OK",), "stats": ("STATS", "MISS", "RESET", "OK"),
    "mg": ("VA", "HD", "EN"), "ms": ("HD", "NS", "EX", "NF"), "md": ("HD", "NF", "EX"),
    "ma": ("VA", "HD", "NF", "NS", "EX"), "mn": ("MN",), "me": ("ME", "EN"), "invalid": (),
}
#: The replies a quiet meta command still gets (its others are suppressed).
_QUIET_REPLIES: dict[str, tuple[str, ...]] = {"mg": ("VA", "HD"), "ms": ("NS", "EX", "NF"), "md": ("NF", "EX"),
                                              "ma": ("NF", "NS", "EX")}
_META_CODES = {b"HD", b"EN", b"NF", b"NS", b"EX", b"MN", b"ME", b"VA"}


@dataclass
class _TextReply:
    kind: str  # "line", "values", "stats", "meta"
    line: bytes  # the (first or only) line; for values the END or error line
    values: list[tuple[bytes, int, bytes, int]] = field(default_factory=list)  # key, flags, data, cas
    meta_value: bytes | None = None
    size: int = 0
    count: int = 0  # stats: lines before END


class TextReplyFramer:
    """Cuts a server's memcached text-protocol stream into replies without knowing the requests.

    Every text reply can be told from its first line: ``VALUE``/``END``
    (retrievals), ``STAT``/``ITEM``/``PREFIX`` ... ``END`` (stats dumps), the
    two-letter meta codes (``VA`` carries a data block), anything else is a
    one-line reply (``STORED``, a number, ``ERROR``...).
    """

    def __init__(self, max_line: int = 65536) -> None:
        self.buf = bytearray()
        self.pos = 0  # where the next line starts
        self.start = 0  # where the reply being assembled starts
        self.values: list[tuple[bytes, int, bytes, int]] = []
        self.mode = ""  # "" between replies, "values" or "stats" inside a multi-line reply
        self.stats = 0
        self.max_line = max_line

    def feed(self, data: bytes) -> list[_TextReply]:
        buf = self.buf
        buf += data
        out: list[_TextReply] = []
        pos = self.pos
        while True:
            eol = buf.find(b"\n", pos)
            if eol < 0:
                if len(buf) - pos > self.max_line:
                    raise DecodeError(f"no line end in {len(buf) - pos} bytes of reply")
                break
            line = bytes(buf[pos:eol - 1] if eol > pos and buf[eol - 1] == 13 else buf[pos:eol])
            nxt = eol + 1
            head = line.split(b" ", 1)[0]
            if head == b"VALUE" or head == b"VA":
                parts = line.split(b" ")
                try:
                    size = int(parts[3] if head == b"VALUE" else parts[1])
                    flags = int(parts[2]) if head == b"VALUE" else 0
                    cas = int(parts[4]) if head == b"VALUE" and len(parts) > 4 else 0
                except (IndexError, ValueError):
                    raise DecodeError(f"bad {head.decode()} line {line[:80]!r}") from None
                if size < 0:
                    raise DecodeError(f"bad {head.decode()} line {line[:80]!r}")
                if len(buf) < nxt + size + 2:
                    break  # wait for the whole block (from this line again)
                data_block = bytes(buf[nxt:nxt + size])
                if buf[nxt + size:nxt + size + 2] != b"\r\n":
                    raise DecodeError(f"data block of {head.decode()} not followed by CRLF")
                nxt += size + 2
                if head == b"VALUE":
                    self.mode = "values"
                    self.values.append((parts[1], flags, data_block, cas))
                    pos = nxt
                    continue
                out.append(_TextReply("meta", line, meta_value=data_block, size=nxt - self.start))
            elif head in (b"STAT", b"ITEM", b"PREFIX") and self.mode != "values":
                self.mode = "stats"
                self.stats += 1
                pos = nxt
                continue
            elif line == b"END":
                if self.mode == "stats":
                    out.append(_TextReply("stats", line, size=nxt - self.start, count=self.stats))
                else:
                    out.append(_TextReply("values", line, values=self.values, size=nxt - self.start))
            elif head in _META_CODES and self.mode == "":
                out.append(_TextReply("meta", line, size=nxt - self.start))
            else:
                out.append(_TextReply("line", line, size=nxt - self.start))
            self.mode = ""
            self.values = []
            self.stats = 0
            pos = self.start = nxt
        if self.start:
            del buf[:self.start]
            pos -= self.start
            self.start = 0
        self.pos = pos
        return out


class TextDecoder(Decoder):
    protocol = "text"

    def __init__(self, values: int = 32) -> None:
        super().__init__(values)
        self.parser = t.TextRequestParser(max_item_size=MAX_DECODED_VALUE)
        self.framer = TextReplyFramer()
        self.feeder = _SizedFeeder(self.parser.feed, lambda: self.parser.buffered)

    def _requests(self, data: bytes) -> list[Request]:
        try:
            items = self.feeder.feed(data)
        except ProtocolError as exc:
            raise DecodeError(str(exc)) from None
        return [self._request(cmd, size, head) for cmd, size, head in items]  # type: ignore[arg-type]

    def _request(self, cmd: t.TextCommand, size: int, head: bytes = b"") -> Request:
        v = self.values
        if isinstance(cmd, t.Get):
            name = ("gats" if cmd.with_cas else "gat") if cmd.exptime is not None else (
                "gets" if cmd.with_cas else "get")
            touch = f" {cmd.exptime}" if cmd.exptime is not None else ""
            return Request(name, list(cmd.keys), f"{name}{touch} " + " ".join(show_key(k) for k in cmd.keys), size)
        if isinstance(cmd, t.StoreCmd):
            name = cmd.command.decode()
            cas = f" cas={cmd.cas}" if name == "cas" else ""
            nr = " noreply" if cmd.noreply else ""
            text = (f"{name} {show_key(cmd.key)} flags={cmd.flags} exptime={cmd.exptime}{cas} "
                    f"{len(cmd.value)}B {show_value(cmd.value, v) if v else ''}".rstrip() + nr)
            return Request(name, [cmd.key], text, size, expects_reply=not cmd.noreply)
        if isinstance(cmd, t.Meta):
            name = cmd.command.decode()
            flags = " ".join(f + tok.decode("latin-1") for f, tok in cmd.flags)
            text = f"{name} {show_key(cmd.raw_key)}" if name != "mn" else "mn"
            if cmd.value is not None:
                text += f" {len(cmd.value)}B"
            if flags:
                text += " " + flags
            if cmd.value is not None and v:
                text += " " + show_value(cmd.value, v)
            fl = dict(cmd.flags)
            quiet = "q" in fl
            tag = (fl.get("O"), cmd.raw_key if "k" in fl else None)
            return Request(name, [cmd.key] if name != "mn" else [], text, size, quiet=quiet, tag=tag)
        if isinstance(cmd, t.Delete):
            return Request("delete", [cmd.key], f"delete {show_key(cmd.key)}" + (" noreply" if cmd.noreply else ""),
                           size, expects_reply=not cmd.noreply)
        if isinstance(cmd, t.Arith):
            name = "incr" if cmd.incr else "decr"
            return Request(name, [cmd.key], f"{name} {show_key(cmd.key)} {cmd.delta}"
                           + (" noreply" if cmd.noreply else ""), size, expects_reply=not cmd.noreply)
        if isinstance(cmd, t.Touch):
            return Request("touch", [cmd.key], f"touch {show_key(cmd.key)} {cmd.exptime}"
                           + (" noreply" if cmd.noreply else ""), size, expects_reply=not cmd.noreply)
        if isinstance(cmd, t.FlushAll):
            return Request("flush_all", [], f"flush_all {cmd.delay}" + (" noreply" if cmd.noreply else ""), size,
                           expects_reply=not cmd.noreply)
        if isinstance(cmd, t.Version):
            return Request("version", [], "version", size)
        if isinstance(cmd, t.Verbosity):
            return Request("verbosity", [], f"verbosity {cmd.level}", size, expects_reply=not cmd.noreply)
        if isinstance(cmd, t.Quit):
            return Request("quit", [], "quit", size, expects_reply=False)
        if isinstance(cmd, t.Stats):
            return Request("stats", [], " ".join(["stats", *(a.decode("latin-1") for a in cmd.args)]), size)
        if isinstance(cmd, t.TooLarge):
            name = cmd.command.decode()
            return Request(name, [cmd.key], f"{name} {show_key(cmd.key)} (value over {MAX_DECODED_VALUE}B, "
                           "not decoded)", size, expects_reply=not cmd.noreply)
        # ErrorReply: a line the server refuses too
        line = head.split(b"\n", 1)[0].rstrip(b"\r")
        return Request("invalid", [], f"{show_value(line, 80)} (invalid: {cmd.message.decode('latin-1')})", size)

    def _replies(self, data: bytes) -> list[Reply]:
        return [self._reply(r) for r in self.framer.feed(data)]

    def _reply(self, r: _TextReply) -> Reply:
        v = self.values
        if r.kind == "values":
            if not r.values:
                return Reply("END (miss)", r.size, "MISS")
            shown = []
            for key, flags, data, cas in r.values:
                c = f" cas={cas}" if cas else ""
                shown.append(f"VALUE {show_key(key)} flags={flags}{c} {len(data)}B"
                             + (f" {show_value(data, v)}" if v else ""))
            return Reply(", ".join(shown) + " END", r.size, "HIT")
        if r.kind == "stats":
            return Reply(f"{r.count} STAT lines END", r.size, "STATS")
        line = r.line.decode("latin-1")
        if r.kind == "meta":
            text = line
            if r.meta_value is not None and v:
                text += " " + show_value(r.meta_value, v)
            return Reply(text, r.size, line[:2], tag=r.line)
        status = line.split(" ", 1)[0] if not line.isdigit() else "NUMBER"
        return Reply(line, r.size, status, tag=r.line)

    def _score(self, req: Request, rep: Reply) -> int:
        line = rep.tag if isinstance(rep.tag, bytes) else b""
        if line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR", b"ERROR")):
            return 1  # any request can be refused
        shapes = (_QUIET_REPLIES if req.quiet else _REPLIES).get(req.command)
        if shapes is None or rep.status not in shapes:
            return 0
        if req.command[:1] != "m":
            return 1
        # meta: O and k come back exactly when asked for, with the request's token and key
        opaque: bytes | None = None
        key: bytes | None = None
        if isinstance(req.tag, tuple):
            opaque, key = req.tag
        tokens = {tok[:1]: tok[1:] for tok in line.split(b" ")[2 if rep.status == "VA" else 1:] if tok}
        if tokens.get(b"O") != opaque or tokens.get(b"k") != key:
            return 0
        return 2 if opaque is not None or key is not None else 1


# -- memcached binary ----------------------------------------------------------------------------


def _op_name(opcode: int) -> str:
    return b.OPCODE_NAMES.get(opcode, f"0x{opcode:02x}")


class BinaryDecoder(Decoder):
    protocol = "binary"

    def __init__(self, values: int = 32) -> None:
        super().__init__(values)
        self.requests_parser = b.BinaryParser(MAX_DECODED_VALUE, magic=b.REQUEST_MAGIC)
        self.replies_parser = b.BinaryParser(MAX_DECODED_VALUE, magic=b.RESPONSE_MAGIC)
        self._stats: int | None = None  # STAT reply packets counted so far
        self._stats_size = 0

    def _requests(self, data: bytes) -> list[Request]:
        try:
            packets = self.requests_parser.feed(data)
        except b.BinaryFramingError as exc:
            raise DecodeError(str(exc)) from None
        return [self._request(p) for p in packets]

    def _request(self, p: b.Packet | b.TooLarge) -> Request:
        name = _op_name(p.opcode)
        base = _op_name(b.base_opcode(p.opcode))
        quiet = b.is_quiet(p.opcode)
        key = p.key
        parts = [name]
        if key:
            parts.append(show_key(key))
        extras = p.extras
        if isinstance(p, b.TooLarge):
            parts.append(f"{p.body_length - len(key) - len(extras)}B (not decoded)")
            size = b.HEADER_SIZE + p.body_length
        else:
            size = b.HEADER_SIZE + len(extras) + len(key) + len(p.value)
            if len(extras) == 8 and base in ("SET", "ADD", "REPLACE"):
                flags, exptime = b.unpack_store_extras(extras)
                parts.append(f"flags={flags} exptime={exptime}")
            elif len(extras) == 20 and base in ("INCREMENT", "DECREMENT"):
                delta, initial, exptime = b.unpack_arith_extras(extras)
                parts.append(f"delta={delta} initial={initial} exptime=0x{exptime:x}")
            elif len(extras) == 4 and base in ("TOUCH", "GAT", "GATK", "FLUSH", "VERBOSITY"):
                parts.append(f"exptime={int.from_bytes(extras, 'big')}")
            if p.value or base in ("SET", "ADD", "REPLACE", "APPEND", "PREPEND"):
                parts.append(f"{len(p.value)}B" + (f" {show_value(p.value, self.values)}" if self.values else ""))
        if p.cas:
            parts.append(f"cas={p.cas}")
        parts.append(f"opaque={p.opaque}")
        return Request(name, [key] if key else [], " ".join(parts), size,
                       expects_reply=p.opcode != b.OP_QUITQ, quiet=quiet, aliases=(base,),
                       tag=(p.opcode, p.opaque))

    def _replies(self, data: bytes) -> list[Reply]:
        try:
            packets = self.replies_parser.feed(data)
        except b.BinaryFramingError as exc:
            raise DecodeError(str(exc)) from None
        out: list[Reply] = []
        for p in packets:
            if isinstance(p, b.TooLarge):
                size = b.HEADER_SIZE + p.body_length
                st = p.status_or_vbucket
                out.append(Reply(f"{b.STATUS_NAMES.get(st, hex(st))} "
                                 f"{p.body_length}B (not decoded)", size, "OK", tag=(p.opcode, p.opaque)))
                continue
            size = b.HEADER_SIZE + len(p.extras) + len(p.key) + len(p.value)
            if p.opcode == b.OP_STAT and p.status == b.STATUS_NO_ERROR:
                if p.key:  # one statistic: wait for the empty one that ends them
                    self._stats = (self._stats or 0) + 1
                    self._stats_size += size
                    continue
                n, total = self._stats or 0, self._stats_size + size
                self._stats, self._stats_size = None, 0
                out.append(Reply(f"NO_ERROR {n} statistics", total, "NO_ERROR", tag=(p.opcode, p.opaque)))
                continue
            out.append(Reply(self._reply_text(p), size, b.STATUS_NAMES.get(p.status, f"0x{p.status:02x}"),
                             tag=(p.opcode, p.opaque)))
        return out

    def _reply_text(self, p: b.Packet) -> str:
        status = b.STATUS_NAMES.get(p.status, f"0x{p.status:02x}")
        parts = [status]
        if p.status != b.STATUS_NO_ERROR:
            if p.key:
                parts.append(show_key(p.key))
            if p.value:
                parts.append(repr(p.value[:80])[1:])
            return " ".join(parts)
        base = b.base_opcode(p.opcode)
        if p.key:
            parts.append(show_key(p.key))
        if base in (b.OP_INCREMENT, b.OP_DECREMENT) and len(p.value) == 8:
            parts.append(str(b.unpack_counter(p.value)))
        elif len(p.extras) == 4 and base in (b.OP_GET, b.OP_GETK, b.OP_GAT, b.OP_GATK, b.OP_TOUCH):
            parts.append(f"flags={b.unpack_get_reply_extras(p.extras)}")
        if p.value and base not in (b.OP_INCREMENT, b.OP_DECREMENT):
            parts.append(f"{len(p.value)}B" + (f" {show_value(p.value, self.values)}" if self.values else ""))
        if p.cas:
            parts.append(f"cas={p.cas}")
        return " ".join(parts)

    def _score(self, req: Request, rep: Reply) -> int:
        return 2 if req.tag == rep.tag else 0


# -- RESP -----------------------------------------------------------------------------------------

_NO_KEY = {"PING", "ECHO", "INFO", "HELLO", "AUTH", "SELECT", "QUIT", "COMMAND", "CLIENT", "CONFIG", "DBSIZE",
           "FLUSHDB", "FLUSHALL", "MULTI", "EXEC", "DISCARD", "TIME", "SCAN", "KEYS", "SUBSCRIBE", "PUBLISH",
           "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "MONITOR", "SAVE", "BGSAVE", "LASTSAVE", "SHUTDOWN",
           "SCRIPT", "EVAL", "EVALSHA", "SLOWLOG", "MEMORY", "LATENCY", "RESET", "READONLY", "READWRITE",
           "CLUSTER", "SWAPDB", "WAIT", "ROLE", "DEBUG", "OBJECT", "ACL", "FUNCTION", "FCALL"}
_ALL_KEYS = {"MGET", "DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH", "SINTER", "SUNION", "SDIFF", "PFCOUNT"}
_PAIR_KEYS = {"MSET", "MSETNX"}


def resp_keys(args: list[bytes]) -> list[bytes]:
    name = args[0].upper().decode("latin-1")
    if name in _NO_KEY or len(args) < 2:
        return []
    if name in _ALL_KEYS:
        return args[1:]
    if name in _PAIR_KEYS:
        return args[1::2]
    return args[1:2]


def resp_text(value: RespValue, limit: int, depth: int = 0) -> str:
    """A RESP value the way redis-cli shows it, cut for one line."""
    if isinstance(value, Attributed):
        return resp_text(value.value, limit, depth)
    if value is None:
        return "(nil)"
    if isinstance(value, bool):
        return "(true)" if value else "(false)"
    if isinstance(value, bytes):
        return show_value(value, limit) if limit else f"{len(value)}B"
    if isinstance(value, int):
        return f"(integer) {value}"
    if isinstance(value, float):
        return f"(double) {value}"
    if isinstance(value, SimpleString):
        return "+" + value.value.decode("latin-1")
    if isinstance(value, Error):
        return "-" + value.message[:200].decode("latin-1")
    if isinstance(value, BigNumber):
        return f"(big number) {int(value)}"
    if isinstance(value, Verbatim):
        return show_value(value.text, limit) if limit else f"{len(value.text)}B"
    if isinstance(value, dict):
        items: Iterable[RespValue] = [x for kv in value.items() for x in kv]
        kind = "map"
    else:
        items = list(value)
        kind = "push" if isinstance(value, Push) else "set" if isinstance(value, RespSet) else "array"
    items = list(items)
    if depth >= 2:
        return f"({kind} of {len(items)})"
    shown = [resp_text(x, limit, depth + 1) for x in items[:8]]
    more = f", ...{len(items) - 8} more" if len(items) > 8 else ""
    return f"{kind}[{len(items)}]: " + ", ".join(shown) + more if items else f"(empty {kind})"


def _status(value: RespValue) -> str:
    if isinstance(value, Error):
        return value.code or "ERR"
    if value is None:
        return "NIL"
    if isinstance(value, SimpleString):
        return value.value.decode("latin-1")[:20]
    return "OK"


class RespDecoder(Decoder):
    protocol = "resp"

    def __init__(self, values: int = 32) -> None:
        super().__init__(values)
        self.requests_parser = RequestParser()
        self.replies_parser = RespParser()
        self.request_feeder = _SizedFeeder(self.requests_parser.feed, lambda: self.requests_parser.buffered)
        self.reply_feeder = _SizedFeeder(self.replies_parser.feed, lambda: self.replies_parser.buffered)

    def _requests(self, data: bytes) -> list[Request]:
        try:
            items = self.request_feeder.feed(data)
        except ProtocolError as exc:
            raise DecodeError(str(exc)) from None
        out = []
        for args, size, _ in items:
            assert isinstance(args, list)
            name = bytes(args[0]).upper().decode("latin-1")
            shown = [name]
            for i, a in enumerate(args[1:], 1):
                if i > 8:
                    shown.append(f"...{len(args) - i} more")
                    break
                shown.append(show_key(a) if len(a) <= 64 and _PRINTABLE.fullmatch(a)
                             else show_value(a, self.values))
            out.append(Request(name, resp_keys(args), " ".join(shown), size))
        return out

    def _replies(self, data: bytes) -> list[Reply]:
        try:
            items = self.reply_feeder.feed(data)
        except ProtocolError as exc:
            raise DecodeError(str(exc)) from None
        out = []
        for value, size, _ in items:
            out.append(Reply(resp_text(value, self.values), size, _status(value),  # type: ignore[arg-type]
                             push=isinstance(value, Push)))
        return out


# -- distcache ------------------------------------------------------------------------------------


def _frames(payload_len: int) -> int:
    return max(1, -(-payload_len // dc.MAX_FRAME_DATA))


class DistcacheDecoder(Decoder):
    protocol = "distcache"

    def __init__(self, values: int = 32) -> None:
        super().__init__(values)
        self.requests_parser = dc.DistcacheParser("server")
        self.replies_parser = dc.DistcacheParser("client")

    def _requests(self, data: bytes) -> list[Request]:
        try:
            messages = self.requests_parser.feed(data)
        except dc.FramingError as exc:
            raise DecodeError(exc.reason) from None
        out = []
        for m in messages:
            size = len(m.payload) + dc.HEADER_SIZE * _frames(len(m.payload))
            name = dc.OP_NAMES.get(m.op, f"op{m.op}")
            sid = m.payload
            text = dc.describe(m).removeprefix("request ")
            if m.op == dc.OP_ADD:
                add = dc.check_add(m.payload)
                sid = add.session_id if isinstance(add, dc.AddRequest) else b""
                if isinstance(add, dc.AddRequest):
                    text += f" id={show_key(sid)}" + (f" {show_value(add.data, self.values)}" if self.values else "")
            else:
                text += f" id={show_key(sid)}"
            out.append(Request(name, [sid] if sid else [], text, size, tag=m.uid))
        return out

    def _replies(self, data: bytes) -> list[Reply]:
        try:
            messages = self.replies_parser.feed(data)
        except dc.FramingError as exc:
            raise DecodeError(exc.reason) from None
        out = []
        for m in messages:
            size = len(m.payload) + dc.HEADER_SIZE * _frames(len(m.payload))
            text = dc.describe(m).removeprefix("response ")
            status = "OK"
            if m.op == dc.OP_GET and not (len(m.payload) == 1 and m.payload[0] in (1, 2)):
                if self.values and m.payload:
                    text += " " + show_value(m.payload, self.values)
            elif len(m.payload) == 1:
                status = dc.RESULT_NAMES.get(m.payload[0], str(m.payload[0]))
            out.append(Reply(text, size, status, tag=m.uid))
        return out

    def _pair(self, rep: Reply) -> list[Exchange]:
        for i, req in enumerate(self.pending):
            if req.tag == rep.tag:
                del self.pending[i]
                return [Exchange(req, rep)]
        return [Exchange(None, rep, "unsolicited")]


def decoder_for(first_byte: int, values: int = 32) -> Decoder:
    """The decoder of a connection whose client sent ``first_byte`` first (as hoard server picks)."""
    if first_byte == b.REQUEST_MAGIC:
        return BinaryDecoder(values)
    if first_byte == 0x00:
        return DistcacheDecoder(values)
    if first_byte == 0x2A:  # '*'
        return RespDecoder(values)
    return TextDecoder(values)
