"""``hoard snoop`` decoding: the memcached binary protocol (:class:`BinaryDecoder`)."""

from __future__ import annotations

from ..protocol import binary as b
from .snoop_decode_base import MAX_DECODED_VALUE, DecodeError, Decoder, Reply, Request, show_key, show_value


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
