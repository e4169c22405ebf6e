"""Pack/unpack helpers for the extras (and counter values) of binary-protocol packets.

Re-exported by :mod:`scatterhoard.protocol.binary`; import them from there.
All numbers are big-endian; out-of-range values raise ValueError, wrong-size
input to the ``unpack_*`` helpers raises ProtocolError.
"""

from __future__ import annotations

import struct
from typing import Final

from scatterhoard.errors import ProtocolError

__all__ = [
    "pack_arith_extras",
    "pack_counter",
    "pack_flush_extras",
    "pack_get_reply_extras",
    "pack_store_extras",
    "pack_touch_extras",
    "pack_verbosity_extras",
    "unpack_arith_extras",
    "unpack_counter",
    "unpack_get_reply_extras",
    "unpack_store_extras",
]

_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_STORE: Final = struct.Struct(">II")
_ARITH: Final = struct.Struct(">QQI")


def _pack(s: struct.Struct, *values: int) -> bytes:
    try:
        return s.pack(*values)
    except struct.error as exc:
        raise ValueError(f"value out of range: {exc}") from None


def pack_store_extras(flags: int, exptime: int) -> bytes:
    """SET/ADD/REPLACE request extras (u32 flags, u32 exptime)."""
    return _pack(_STORE, flags, exptime)


def pack_arith_extras(delta: int, initial: int = 0, exptime: int = 0) -> bytes:
    """INCR/DECR request extras (u64 delta, u64 initial, u32 exptime).

    ``exptime`` ``INCR_NO_CREATE`` (0xffffffff) means: fail with
    KEY_ENOENT instead of creating a missing counter.
    """
    return _pack(_ARITH, delta, initial, exptime)


def pack_touch_extras(exptime: int) -> bytes:
    """TOUCH/GAT* request extras (u32 exptime)."""
    return _pack(_U32, exptime)


def pack_flush_extras(delay: int) -> bytes:
    """FLUSH request extras (u32 delay); a FLUSH may also have no extras."""
    return _pack(_U32, delay)


def pack_verbosity_extras(level: int) -> bytes:
    """VERBOSITY request extras (u32 level)."""
    return _pack(_U32, level)


def pack_get_reply_extras(flags: int) -> bytes:
    """GET*/GAT*/TOUCH success reply extras (u32 flags)."""
    return _pack(_U32, flags)


def pack_counter(value: int) -> bytes:
    """INCR/DECR success reply value (u64)."""
    return _pack(_U64, value)


def unpack_store_extras(extras: bytes) -> tuple[int, int]:
    """(flags, exptime) from SET/ADD/REPLACE extras; ProtocolError if not 8 bytes."""
    if len(extras) != 8:
        raise ProtocolError(f"store extras must be 8 bytes, got {len(extras)}")
    flags, exptime = _STORE.unpack(extras)
    return flags, exptime


def unpack_arith_extras(extras: bytes) -> tuple[int, int, int]:
    """(delta, initial, exptime) from INCR/DECR extras; ProtocolError if not 20 bytes."""
    if len(extras) != 20:
        raise ProtocolError(f"incr/decr extras must be 20 bytes, got {len(extras)}")
    delta, initial, exptime = _ARITH.unpack(extras)
    return delta, initial, exptime


def unpack_get_reply_extras(extras: bytes) -> int:
    """Flags from a GET*/GAT*/TOUCH reply; ProtocolError if not 4 bytes."""
    if len(extras) != 4:
        raise ProtocolError(f"get reply extras must be 4 bytes, got {len(extras)}")
    flags: int = _U32.unpack(extras)[0]
    return flags


def unpack_counter(value: bytes) -> int:
    """The counter from an INCR/DECR reply; ProtocolError if not 8 bytes."""
    if len(value) != 8:
        raise ProtocolError(f"incr/decr reply value must be 8 bytes, got {len(value)}")
    counter: int = _U64.unpack(value)[0]
    return counter
