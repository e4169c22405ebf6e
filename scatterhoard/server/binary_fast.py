"""The binary protocol's hot path over the memory engine, compiled (see :mod:`scatterhoard._build`).

A binary multi-get is a run of GETKQ (or GETQ, GET, GETK) requests ended by
a NOOP: a hundred keys are a hundred packets. Through the general path each
becomes a :class:`~scatterhoard.protocol.binary.Packet` and a
:class:`~scatterhoard.protocol.binary.BinRequest` and goes through a dispatch
table (~2.3 us a key, ten times a text multi-get's key). :func:`quick_gets`
answers the leading run of such requests straight from the bytes, and stops
at the first request that is anything else (or not whole), which the general
path then reads from there: replies stay in request order, and everything it
does not take is checked exactly as before.
"""

from __future__ import annotations

import struct
import time
from typing import Final

from ..protocol import binary as b
from ..protocol.binary_consts import OP_GET, OP_GETK, OP_GETKQ, OP_GETQ, OP_NOOP, STATUS_KEY_ENOENT
from ..store.memory import MemoryStore
from .stats import ServerStats

_HIT: Final = struct.Struct(b.HEADER.format + "I")  # the response header and the flags extras of a hit
_clock: Final = time.time
_MAX_KEY: Final = 250


def quick_gets(data: bytes, memory: MemoryStore, stats: ServerStats, out: list[bytes]) -> int:
    """Answer the leading GET/GETQ/GETK/GETKQ/NOOP requests of ``data`` into ``out``
    (the quiet ones only when they hit, as memcached); the number of bytes they took."""
    pos = 0
    end = len(data)
    now = 0.0
    while end - pos >= 24 and data[pos] == 0x80:
        op = data[pos + 1]
        kl = (data[pos + 2] << 8) | data[pos + 3]
        bl = (data[pos + 8] << 24) | (data[pos + 9] << 16) | (data[pos + 10] << 8) | data[pos + 11]
        if data[pos + 4] != 0:  # extras: not a get (the general path checks it)
            break
        opaque = (data[pos + 12] << 24) | (data[pos + 13] << 16) | (data[pos + 14] << 8) | data[pos + 15]
        if op == OP_NOOP:
            if kl != 0 or bl != 0:
                break
            out.append(b.HEADER.pack(0x81, OP_NOOP, 0, 0, 0, 0, 0, opaque, 0))
            pos += 24
            continue
        if (op != OP_GETKQ and op != OP_GETQ and op != OP_GET and op != OP_GETK) or bl != kl \
                or kl == 0 or kl > _MAX_KEY or pos + 24 + kl > end:
            break
        key = data[pos + 24:pos + 24 + kl]
        pos += 24 + kl
        if now == 0.0:
            now = _clock()
        item = memory.get(key, None, True, now)
        stats.cmd_get += 1
        with_key = op in (OP_GETKQ, OP_GETK)
        if item is None:
            stats.get_misses += 1
            if op == OP_GET:
                out.append(b.encode_error(op, STATUS_KEY_ENOENT, opaque))
            elif op == OP_GETK:
                out.append(b.encode_response(op, STATUS_KEY_ENOENT, key=key, opaque=opaque))
            continue
        stats.get_hits += 1
        value = item.value
        if with_key:
            out.append(_HIT.pack(0x81, op, kl, 4, 0, 0, 4 + kl + len(value), opaque, item.cas, item.flags))
            out.append(key)
        else:
            out.append(_HIT.pack(0x81, op, 0, 4, 0, 0, 4 + len(value), opaque, item.cas, item.flags))
        out.append(value)
    return pos
