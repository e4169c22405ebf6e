"""The binary memcached side of the proxy engine: reply framing and the VERSION probe.

Binary clients of a memcached pool are served over the servers' own binary
connections: the ``"binary"`` variant of each server (see
:meth:`~.backend.BackendServer.variant`), which shares its counters, failure
count, ejection and ``server_connections`` limit logic with the text/meta
connections.  The session (:mod:`.binary_session`) sends exactly one request
per waiter and gets exactly one reply packet for it (quiet requests are sent
as their non-quiet base), so framing is cutting packets: a 24-byte header
and ``bodylen`` bytes, nothing parsed but the magic byte and that length.
"""

from __future__ import annotations

import struct
from typing import Final

from ..errors import ProtocolError
from ..fifo import Fifo
from ..protocol.binary import OP_VERSION, RESPONSE_MAGIC, encode_request
from .backend import Dialect, ReplyFramer, Waiter

_BODY_LENGTH: Final = struct.Struct(">I")  # at offset 8 of the header


class BinaryFramer(ReplyFramer):
    """One reply packet per waiter, as the server sent it."""

    __slots__ = ()

    def split(self, data: bytes, expect: Fifo[Waiter]) -> tuple[int, int, int]:
        n = len(data)
        pos = 0
        count = 0
        body_length = _BODY_LENGTH.unpack_from
        while expect:
            if n - pos < 24:
                return count, pos, 24
            if data[pos] != RESPONSE_MAGIC:
                raise ProtocolError(f"bad response magic byte 0x{data[pos]:02x}")
            end = pos + 24 + body_length(data, pos + 8)[0]
            if end > n:
                return count, pos, end - pos
            expect.popleft().complete(data[pos:end])
            count += 1
            pos = end
        return count, pos, 0


class BinaryDialect(Dialect):
    """Memcached's binary protocol (the ``"binary"`` variant of a memcached pool's servers)."""

    __slots__ = ()

    def probe_request(self) -> bytes:
        return encode_request(OP_VERSION)

    def framer(self) -> ReplyFramer:
        return BinaryFramer()

    def probe_ok(self, raw: bytes) -> bool:
        return raw[:2] == b"\x81\x0b" and raw[6:8] == b"\0\0"
