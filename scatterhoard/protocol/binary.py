"""Sans-IO codec for the memcached *binary* protocol.

Nothing here touches a socket: bytes go in (:meth:`BinaryParser.feed`), typed
:class:`Packet` / :class:`TooLarge` items come out, and the ``encode_*`` and
``pack_*`` helpers turn requests and replies back into bytes.  The constants
(opcodes, statuses, tables) live in :mod:`scatterhoard.protocol.binary_consts`
and are re-exported here.

Wire format
-----------
Every packet is a 24-byte big-endian header followed by ``bodylen`` bytes of
body laid out as ``extras, key, value``::

    u8  magic        0x80 request, 0x81 response
    u8  opcode
    u16 keylen
    u8  extlen
    u8  datatype     0 (raw bytes); ignored by memcached
    u16 vbucket      request: reserved, ignored by memcached / response: status
    u32 bodylen      extlen + keylen + len(value)
    u32 opaque       echoed back in the response
    u64 cas

Server rules (checked against memcached 1.6.18 and its ``proto_bin.c``)
----------------------------------------------------------------------
* Bad magic: the connection is closed without a reply.
  ``keylen + extlen > bodylen``: ``UNKNOWN_COMMAND`` ("Unknown command") then
  close.  :class:`BinaryParser` raises :class:`BinaryFramingError` for both;
  its ``status`` says which reply to send first (``None``: none).
* ``keylen > 250``, or extras/key/value lengths that do not fit the opcode
  (see :func:`decode_request`): ``EINVAL`` ("Invalid arguments"), then the
  connection is closed.
* An unknown opcode: ``UNKNOWN_COMMAND``, the body is skipped, the connection
  stays open.  memcached 1.6 gives this answer to VERBOSITY, and to the SASL
  opcodes when started without ``-S``.
* Replies echo the request's opcode (the quiet one for a quiet request) and
  opaque.  Error replies carry cas 0, no extras, no key and the
  :data:`STATUS_MESSAGES` text as value -- except a GETK/GATK miss, which
  echoes the key and has an empty value.
* Quiet commands (:data:`QUIET_BASE`) suppress success replies and get misses;
  errors are always sent.  QUITQ closes without a reply.
* A too-large SET/ADD/REPLACE/APPEND/PREPEND gets ``E2BIG`` ("Too large."),
  its value is skipped and the connection stays open (a SET also drops the
  old item).  :class:`BinaryParser` reports such packets as :class:`TooLarge`
  without buffering their value; :func:`decode_too_large` picks the reply.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from scatterhoard.errors import ProtocolError
from scatterhoard.protocol import binary_consts as _c
from scatterhoard.protocol.binary_consts import *  # noqa: F403  (re-exported API)
from scatterhoard.protocol.binary_extras import (
    pack_arith_extras,
    pack_counter,
    pack_flush_extras,
    pack_get_reply_extras,
    pack_store_extras,
    pack_touch_extras,
    pack_verbosity_extras,
    unpack_arith_extras,
    unpack_counter,
    unpack_get_reply_extras,
    unpack_store_extras,
)

__all__ = [
    *_c.__all__,
    "HEADER",
    "BinInvalid",
    "BinRequest",
    "BinaryFramingError",
    "BinaryParser",
    "Buffer",
    "Packet",
    "TooLarge",
    "check_request",
    "decode_request",
    "decode_too_large",
    "encode_error",
    "encode_packet",
    "encode_request",
    "encode_response",
    "get_at",
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

#: The 24-byte header: magic, opcode, keylen, extlen, datatype,
#: status_or_vbucket, bodylen, opaque, cas.
HEADER: Final = struct.Struct(">BBHBBHIIQ")
assert HEADER.size == _c.HEADER_SIZE

Buffer = bytes | bytearray | memoryview

_U32: Final = struct.Struct(">I")
_STORE: Final = struct.Struct(">II")
_ARITH: Final = struct.Struct(">QQI")


# --------------------------------------------------------------------------
# Typed objects
# --------------------------------------------------------------------------


class Packet(NamedTuple):
    """One complete packet, request or response, exactly as on the wire."""

    magic: int
    opcode: int
    key: bytes
    extras: bytes
    value: bytes
    #: vbucket (reserved) in a request, status in a response.
    status_or_vbucket: int
    opaque: int
    cas: int
    datatype: int = 0

    @property
    def is_request(self) -> bool:
        return self.magic == _c.REQUEST_MAGIC

    @property
    def is_response(self) -> bool:
        return self.magic == _c.RESPONSE_MAGIC

    @property
    def status(self) -> int:
        return self.status_or_vbucket

    @property
    def vbucket(self) -> int:
        return self.status_or_vbucket


class TooLarge(NamedTuple):
    """A packet whose body exceeds the parser's ``max_body``.

    Reported once its header, extras and key have arrived; its value is then
    discarded as it arrives (never buffered).  ``body_length`` is the
    announced total body length.
    """

    magic: int
    opcode: int
    key: bytes
    extras: bytes
    status_or_vbucket: int
    opaque: int
    cas: int
    body_length: int
    datatype: int = 0


class BinaryFramingError(ProtocolError):
    """The byte stream is not valid binary protocol: close the connection.

    ``status`` is the reply memcached sends before closing (``None``: close
    silently, as for a bad magic byte); ``opcode``/``opaque`` come from the
    offending header when it could be read.  ``packets`` holds the items the
    same :meth:`BinaryParser.feed` call decoded before the bad bytes: answer
    those first, then close.
    """

    def __init__(self, reason: str, *, status: int | None = None, opcode: int = 0,
                 opaque: int = 0) -> None:
        super().__init__(reason)
        self.status = status
        self.opcode = opcode
        self.opaque = opaque
        self.packets: list[Packet | TooLarge] = []


class BinRequest(NamedTuple):
    """A request that passed :func:`decode_request`'s validation.

    ``opcode`` is the opcode as received (echo it in replies), ``command`` its
    non-quiet base.  ``exptime`` is the expiration of SET/ADD/REPLACE,
    INCR/DECR, TOUCH/GAT* and the delay of FLUSH (0 when absent).
    """

    opcode: int
    command: int
    quiet: bool
    key: bytes
    value: bytes
    opaque: int
    cas: int
    flags: int = 0
    exptime: int = 0
    delta: int = 0
    initial: int = 0
    verbosity: int = 0

    @property
    def returns_key(self) -> bool:
        return self.opcode in _c.KEY_RETURNING

    @property
    def autocreate(self) -> bool:
        """INCR/DECR: create a missing counter with ``initial``."""
        return self.exptime != _c.INCR_NO_CREATE


class BinInvalid(NamedTuple):
    """A request to refuse: reply ``status`` / ``message`` and close if ``close``."""

    opcode: int
    opaque: int
    status: int
    message: bytes
    close: bool

    def encode(self) -> bytes:
        """The error reply memcached sends for this request."""
        return encode_response(self.opcode, self.status, value=self.message, opaque=self.opaque)


# --------------------------------------------------------------------------
# Incremental parser
# --------------------------------------------------------------------------

_tuple_new = tuple.__new__
_MAGICS_ANY: Final = frozenset((_c.REQUEST_MAGIC, _c.RESPONSE_MAGIC))


class BinaryParser:
    """Incremental parser for a stream of binary-protocol packets.

    ``feed(data)`` returns every packet completed by ``data``, in stream order.
    ``magic`` restricts the accepted magic byte (a server passes
    :data:`REQUEST_MAGIC`, a client :data:`RESPONSE_MAGIC`; ``None`` accepts
    both).  A packet whose body is longer than ``max_body`` (``None``: no
    limit) comes out as a :class:`TooLarge` and its value is skipped without
    being buffered, so memory stays bounded by ``max_body`` plus one header,
    extras and key.

    Complete packets are cut straight out of the fed chunk (one
    ``struct.unpack_from`` per header, offsets, no per-byte work); only an
    incomplete packet at the end of a chunk is kept, in a bytearray that is
    topped up by the next feeds until that one packet is complete.
    """

    __slots__ = ("_buf", "_error", "_magics", "_skip", "max_body")

    def __init__(self, max_body: int | None = _c.DEFAULT_MAX_BODY, *, magic: int | None = None) -> None:
        if max_body is not None and max_body < 0:
            raise ValueError("max_body must be >= 0")
        self.max_body = max_body
        self._magics: frozenset[int] = _MAGICS_ANY if magic is None else frozenset((magic,))
        self._buf = bytearray()
        self._skip = 0
        self._error: BinaryFramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a packet."""
        return len(self._buf)

    @property
    def skipping(self) -> int:
        """Bytes of a too-large value still to be discarded."""
        return self._skip

    def feed(self, data: Buffer) -> list[Packet | TooLarge]:
        """Add received bytes; return the packets (and TooLarge events) they complete.

        Raises :class:`BinaryFramingError` on a bad magic byte or inconsistent
        lengths; the parser then stays broken (every later call raises too).
        """
        if self._error is not None:
            raise BinaryFramingError(f"stream already broken: {self._error}", opcode=self._error.opcode,
                                     opaque=self._error.opaque)
        if type(data) is not bytes:
            data = bytes(data)
        out: list[Packet | TooLarge] = []
        try:
            pos = self._resume(data, out)
            if pos >= 0:
                pos = self._parse(data, pos, out)
                if pos < len(data):
                    self._buf += data[pos:] if pos else data
        except BinaryFramingError as exc:
            self._buf.clear()
            self._skip = 0
            self._error = exc
            exc.packets = out
            raise
        return out

    def _resume(self, data: bytes, out: list[Packet | TooLarge]) -> int:
        """Finish what the previous feeds left (a skip or a partial packet).

        Returns the offset in ``data`` where in-place parsing continues, or -1
        when ``data`` was used up.
        """
        start = 0
        buf = self._buf
        if buf:
            n = len(buf)
            if n < 24:
                start = 24 - n
                buf += data[:start]
                if len(buf) < 24:
                    return -1
            total = self._wanted(buf)
            take = total - len(buf)
            if take > 0:
                buf += data[start:start + take]
                start += take
                if len(buf) < total:
                    return -1
            packet = bytes(buf)
            buf.clear()
            self._parse(packet, 0, out)
        skip = self._skip
        if skip:
            left = len(data) - start
            if left <= skip:
                self._skip = skip - left
                return -1
            self._skip = 0
            start += skip
        return start

    def _wanted(self, buf: bytearray) -> int:
        """Bytes of the buffered packet's header to read before it can be parsed."""
        magic, opcode, kl, el, _, _, bl, opaque, _ = HEADER.unpack_from(buf, 0)
        self._validate(magic, opcode, kl, el, bl, opaque)
        wanted: int = 24 + el + kl if self.max_body is not None and bl > self.max_body else 24 + bl
        return wanted

    def _validate(self, magic: int, opcode: int, kl: int, el: int, bl: int, opaque: int) -> None:
        if magic not in self._magics:
            raise BinaryFramingError(f"bad magic byte 0x{magic:02x}", opcode=opcode, opaque=opaque)
        if kl + el > bl:
            raise BinaryFramingError(f"key length {kl} + extras length {el} > body length {bl}",
                                     status=_c.STATUS_UNKNOWN_COMMAND, opcode=opcode, opaque=opaque)

    def _parse(self, data: bytes, pos: int, out: list[Packet | TooLarge]) -> int:
        """Parse the complete packets of ``data[pos:]``; return the offset consumed."""
        unpack = HEADER.unpack_from
        append = out.append
        magics = self._magics
        max_body = 0xFFFFFFFF if self.max_body is None else self.max_body
        end = len(data)
        while end - pos >= 24:
            magic, opcode, kl, el, dt, st, bl, opaque, cas = unpack(data, pos)
            if magic not in magics or kl + el > bl:
                self._validate(magic, opcode, kl, el, bl, opaque)
            s = pos + 24
            if bl > max_body:
                ke = s + el
                ve = ke + kl
                if ve > end:
                    break
                append(TooLarge(magic, opcode, data[ke:ve], data[s:ke], st, opaque, cas, bl, dt))
                rest = bl - el - kl
                if end - ve >= rest:
                    pos = ve + rest
                    continue
                self._skip = rest - (end - ve)
                return end
            pe = s + bl
            if pe > end:
                break
            if bl:
                ke = s + el
                ve = ke + kl
                append(_tuple_new(Packet, (magic, opcode, data[ke:ve], data[s:ke], data[ve:pe],
                                           st, opaque, cas, dt)))
            else:
                append(_tuple_new(Packet, (magic, opcode, b"", b"", b"", st, opaque, cas, dt)))
            pos = pe
        return pos


# --------------------------------------------------------------------------
# Request validation (server side)
# --------------------------------------------------------------------------

# Rule kinds, per base (non-quiet) opcode; memcached's dispatch_bin_command.
_R_EMPTY: Final = 0      # VERSION NOOP QUIT SASL_LIST_MECHS: no extras, key, value
_R_FLUSH: Final = 1      # no key, no value, extras 0 or 4
_R_STORE: Final = 2      # SET ADD REPLACE: extras 8, key
_R_KEY: Final = 3        # GET GETK DELETE: key only
_R_ARITH: Final = 4      # INCR DECR: extras 20, key, no value
_R_CONCAT: Final = 5     # APPEND PREPEND: no extras, key
_R_STAT: Final = 6       # no extras (value ignored)
_R_SASL: Final = 7       # SASL_AUTH SASL_STEP: no extras, key
_R_TOUCH: Final = 8      # TOUCH GAT GATK: extras 4, key (value ignored)
_R_VERBOSITY: Final = 9  # extras 4 only

_RULES: Final[dict[int, int]] = {
    _c.OP_VERSION: _R_EMPTY, _c.OP_NOOP: _R_EMPTY, _c.OP_QUIT: _R_EMPTY,
    _c.OP_SASL_LIST_MECHS: _R_EMPTY, _c.OP_FLUSH: _R_FLUSH,
    _c.OP_SET: _R_STORE, _c.OP_ADD: _R_STORE, _c.OP_REPLACE: _R_STORE,
    _c.OP_GET: _R_KEY, _c.OP_GETK: _R_KEY, _c.OP_DELETE: _R_KEY,
    _c.OP_INCREMENT: _R_ARITH, _c.OP_DECREMENT: _R_ARITH,
    _c.OP_APPEND: _R_CONCAT, _c.OP_PREPEND: _R_CONCAT, _c.OP_STAT: _R_STAT,
    _c.OP_SASL_AUTH: _R_SASL, _c.OP_SASL_STEP: _R_SASL,
    _c.OP_TOUCH: _R_TOUCH, _c.OP_GAT: _R_TOUCH, _c.OP_GATK: _R_TOUCH,
    _c.OP_VERBOSITY: _R_VERBOSITY,
}
# Opcode -> (base opcode, quiet, rule) for every opcode decode_request knows.
_DISPATCH: Final[dict[int, tuple[int, bool, int]]] = {
    op: (_c.QUIET_BASE.get(op, op), op in _c.QUIET_BASE, _RULES[_c.QUIET_BASE.get(op, op)])
    for op in _c.OPCODE_NAMES
}

_PLAIN_RULES: Final = frozenset((_R_KEY, _R_EMPTY, _R_CONCAT, _R_SASL, _R_STAT))  # no extras
_GETS: Final = frozenset((_c.OP_GET, _c.OP_GETK))
_EINVAL_MSG: Final = _c.STATUS_MESSAGES[_c.STATUS_EINVAL]
_UNKNOWN_MSG: Final = _c.STATUS_MESSAGES[_c.STATUS_UNKNOWN_COMMAND]


def _lengths_ok(rule: int, kl: int, el: int, bl: int) -> bool:
    if rule == _R_KEY:
        return el == 0 and kl > 0 and bl == kl
    if rule == _R_STORE:
        return el == 8 and kl > 0
    if rule == _R_EMPTY:
        return bl == 0
    if rule == _R_ARITH:
        return el == 20 and kl > 0 and bl == kl + 20
    if rule in (_R_CONCAT, _R_SASL):
        return el == 0 and kl > 0
    if rule == _R_TOUCH:
        return el == 4 and kl > 0
    if rule == _R_FLUSH:
        return kl == 0 and bl == el and (el == 0 or el == 4)
    if rule == _R_STAT:
        return el == 0
    return kl == 0 and el == 4 and bl == 4  # _R_VERBOSITY


def _reject(opcode: int, opaque: int, kl: int, max_key: int) -> BinInvalid:
    """The refusal of a request that failed a check, by memcached's check order."""
    if kl > max_key:
        return BinInvalid(opcode, opaque, _c.STATUS_EINVAL, _EINVAL_MSG, True)
    if opcode not in _DISPATCH:
        return BinInvalid(opcode, opaque, _c.STATUS_UNKNOWN_COMMAND, _UNKNOWN_MSG, False)
    return BinInvalid(opcode, opaque, _c.STATUS_EINVAL, _EINVAL_MSG, True)


def decode_request(p: Packet, max_key: int = _c.MAX_KEY_LENGTH) -> BinRequest | BinInvalid:
    """Validate a request packet and decode its extras per opcode.

    The rules are memcached 1.6's (``dispatch_bin_command``); "key" means a
    non-empty key, anything not listed must be empty:

    ========================== ==============================================
    GET GETQ GETK GETKQ DELETE key
    SET ADD REPLACE (+Q)       8 bytes extras (flags, exptime), key, any value
    INCR DECR (+Q)             20 bytes extras (delta, initial, exptime), key
    APPEND PREPEND (+Q)        key, any value
    TOUCH GAT GATQ GATK GATKQ  4 bytes extras (exptime), key; value ignored
    FLUSH FLUSHQ               extras empty or 4 bytes (delay)
    STAT                       optional key; value ignored
    NOOP VERSION QUIT QUITQ    nothing
    SASL_LIST_MECHS            nothing
    SASL_AUTH SASL_STEP        key (mechanism), any value
    VERBOSITY                  4 bytes extras (level) -- memcached 1.6 itself
                               answers UNKNOWN_COMMAND to it
    ========================== ==============================================

    A key longer than ``max_key`` (250) or a mismatch gives
    ``BinInvalid(status=EINVAL, close=True)``; an unknown opcode gives
    ``BinInvalid(status=UNKNOWN_COMMAND, close=False)``.  Raises
    :class:`BinaryFramingError` for a packet that is not a request.
    """
    magic, opcode, key, extras, value, _, opaque, cas, _ = p
    if magic != _c.REQUEST_MAGIC:
        raise BinaryFramingError(f"bad request magic byte 0x{magic:02x}", opcode=opcode, opaque=opaque)
    invalid = check_request(p, max_key)
    if invalid is not None:
        return invalid
    command, quiet, rule = _DISPATCH[opcode]
    if rule in _PLAIN_RULES:
        return _tuple_new(BinRequest, (opcode, command, quiet, key, value, opaque, cas, 0, 0, 0, 0, 0))
    if rule == _R_STORE:
        flags, exptime = _STORE.unpack(extras)
        return _tuple_new(BinRequest, (opcode, command, quiet, key, value, opaque, cas, flags, exptime, 0, 0, 0))
    if rule == _R_ARITH:
        delta, initial, exptime = _ARITH.unpack(extras)
        return _tuple_new(BinRequest, (opcode, command, quiet, key, b"", opaque, cas, 0, exptime, delta, initial, 0))
    if rule == _R_VERBOSITY:
        return _tuple_new(BinRequest, (opcode, command, quiet, key, b"", opaque, cas, 0, 0, 0, 0,
                                       _U32.unpack(extras)[0]))
    exptime = _U32.unpack(extras)[0] if extras else 0  # TOUCH GAT GATK FLUSH (+Q)
    return _tuple_new(BinRequest, (opcode, command, quiet, key, b"", opaque, cas, 0, exptime, 0, 0, 0))


def check_request(p: Packet, max_key: int = _c.MAX_KEY_LENGTH) -> BinInvalid | None:
    """:func:`decode_request`'s checks alone, for a proxy: the refusal, or None (magic: the parser's)."""
    _, opcode, key, extras, value, _, opaque, _, _ = p
    kl = len(key)
    el = len(extras)
    entry = _DISPATCH.get(opcode)
    if entry is None or kl > max_key or not _lengths_ok(entry[2], kl, el, el + kl + len(value)):
        return _reject(opcode, opaque, kl, max_key)
    return None


def get_at(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(end, opcode, opaque) of the GET or GETK request at ``data[pos:]`` if it is whole and valid
    (a key of 1..250 bytes, nothing else): a proxy's shortcut past the parser, for the commonest request.
    """
    if len(data) - pos >= 24:
        magic, opcode, kl, el, _, _, bl, opaque, _ = HEADER.unpack_from(data, pos)
        end = pos + 24 + bl
        if magic == 0x80 and opcode in _GETS and bl == kl and not el and 0 < kl <= 250 and end <= len(data):
            return end, opcode, opaque
    return None


def decode_too_large(t: TooLarge, max_key: int = _c.MAX_KEY_LENGTH) -> BinInvalid:
    """The reply to a request the parser reported as :class:`TooLarge`.

    A request that is otherwise valid and carries a value (SET/ADD/REPLACE,
    APPEND/PREPEND, SASL_AUTH/STEP, quiet or not) gets ``E2BIG`` and the
    connection stays open; an unknown opcode gets ``UNKNOWN_COMMAND`` (also
    kept open); anything else is ``EINVAL`` + close, as a request with a
    value where none belongs would be.  Note that a too-large SET should also
    delete the key's old item (memcached does).
    """
    kl = len(t.key)
    el = len(t.extras)
    entry = _DISPATCH.get(t.opcode)
    if entry is None or kl > max_key or not _lengths_ok(entry[2], kl, el, t.body_length):
        return _reject(t.opcode, t.opaque, kl, max_key)
    if entry[0] in _c.VALUE_OPCODES:
        return BinInvalid(t.opcode, t.opaque, _c.STATUS_E2BIG, _c.STATUS_MESSAGES[_c.STATUS_E2BIG], False)
    return BinInvalid(t.opcode, t.opaque, _c.STATUS_EINVAL, _EINVAL_MSG, True)


# --------------------------------------------------------------------------
# Serializers
# --------------------------------------------------------------------------


def _encode(magic: int, opcode: int, key: Buffer, extras: Buffer, value: Buffer, st: int,
            opaque: int, cas: int, datatype: int) -> bytes:
    kl = len(key)
    el = len(extras)
    if kl > 0xFFFF:
        raise ValueError(f"key too long for the binary protocol: {kl} bytes")
    if el > 0xFF:
        raise ValueError(f"extras too long for the binary protocol: {el} bytes")
    try:
        header = HEADER.pack(magic, opcode, kl, el, datatype, st, el + kl + len(value), opaque, cas)
    except struct.error as exc:
        raise ValueError(f"field out of range: {exc}") from None
    if not value:
        if not el:
            return header + key if kl else header
        return b"".join((header, extras, key))
    return b"".join((header, extras, key, value))


def encode_request(opcode: int, key: Buffer = b"", extras: Buffer = b"", value: Buffer = b"",
                   opaque: int = 0, cas: int = 0, vbucket: int = 0, datatype: int = 0) -> bytes:
    """One request packet.  Raises ValueError for out-of-range fields."""
    return _encode(_c.REQUEST_MAGIC, opcode, key, extras, value, vbucket, opaque, cas, datatype)


def encode_response(opcode: int, status: int = 0, key: Buffer = b"", extras: Buffer = b"",
                    value: Buffer = b"", opaque: int = 0, cas: int = 0, datatype: int = 0) -> bytes:
    """One response packet.  Raises ValueError for out-of-range fields."""
    return _encode(_c.RESPONSE_MAGIC, opcode, key, extras, value, status, opaque, cas, datatype)


def encode_error(opcode: int, status: int, opaque: int = 0, message: bytes | None = None) -> bytes:
    """An error reply as memcached sends it: no extras/key, cas 0, the status text."""
    if message is None:
        message = _c.status_message(status)
    return _encode(_c.RESPONSE_MAGIC, opcode, b"", b"", message, status, opaque, 0, 0)


def encode_packet(p: Packet) -> bytes:
    """The wire form of a :class:`Packet` (inverse of the parser)."""
    return _encode(p.magic, p.opcode, p.key, p.extras, p.value, p.status_or_vbucket, p.opaque, p.cas,
                   p.datatype)
