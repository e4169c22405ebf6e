"""``hoard snoop`` decoding: memcached text and meta commands (:class:`TextDecoder`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ProtocolError
from ..protocol import text as t
from .snoop_decode_base import (
    MAX_DECODED_VALUE,
    DecodeError,
    Decoder,
    Reply,
    Request,
    SizedFeeder,
    show_key,
    show_value,
)

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
        self.feeder = SizedFeeder(self.parser.feed, lambda: self.parser.buffered)

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
