"""``hoard snoop`` decoding: distcache (:class:`DistcacheDecoder`)."""

from __future__ import annotations

from ..protocol import distcache as dc
from .snoop_decode_base import DecodeError, Decoder, Exchange, Reply, Request, show_key, show_value


def _messages(parser: dc.DistcacheParser, data: bytes) -> list[tuple[dc.Message, int]]:
    """The messages ``data`` completes, each with its size on the wire (its payload and frame headers)."""
    try:
        messages = parser.feed(data)
    except dc.FramingError as exc:
        raise DecodeError(exc.reason) from None
    return [(m, len(m.payload) + dc.HEADER_SIZE * max(1, -(-len(m.payload) // dc.MAX_FRAME_DATA)))
            for m in messages]


class DistcacheDecoder(Decoder):
    protocol = "distcache"

    def __init__(self, values: int = 32) -> None:
        super().__init__(values)
        self.requests_parser = dc.DistcacheParser("server")
        self.replies_parser = dc.DistcacheParser("client")

    def _requests(self, data: bytes) -> list[Request]:
        out = []
        for m, size in _messages(self.requests_parser, data):
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
        out = []
        for m, size in _messages(self.replies_parser, data):
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
