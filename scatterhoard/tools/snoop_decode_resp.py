"""``hoard snoop`` decoding: RESP (:class:`RespDecoder`)."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ProtocolError
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
from .snoop_decode_base import (
    PRINTABLE,
    DecodeError,
    Decoder,
    Reply,
    Request,
    SizedFeeder,
    show_key,
    show_value,
)

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
        self.request_feeder = SizedFeeder(self.requests_parser.feed, lambda: self.requests_parser.buffered)
        self.reply_feeder = SizedFeeder(self.replies_parser.feed, lambda: self.replies_parser.buffered)

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
                shown.append(show_key(a) if len(a) <= 64 and PRINTABLE.fullmatch(a)
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
