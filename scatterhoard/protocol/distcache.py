"""Sans-IO codec for the distcache (SSL session cache) wire protocol.

Nothing here touches a socket: bytes go in, :class:`Message` objects come out,
and the ``encode_*`` helpers turn requests and replies back into bytes.

Wire format
-----------
A message is one or more *frames*.  Every frame is a 14-byte big-endian header
followed by ``data_len`` payload bytes::

    u32 proto_level   0x00110000 (only the high 16 bits are compared)
    u8  is_response   0 request, 1 response
    u32 request_uid   chosen by the requester, echoed in the response
    u8  op_class      always 0
    u8  operation     0 ADD, 1 GET, 2 REMOVE, 3 HAVE
    u8  complete      1 on the last frame of the message, else 0
    u16 data_len      0..2048; every non-final frame carries exactly 2048

A message payload is at most 32768 bytes, i.e. at most 16 frames.  A payload
that is a multiple of 2048 bytes is sent as exactly ``len // 2048`` frames
(no empty trailing frame); an empty payload is one frame with ``data_len`` 0.

Payloads
--------
* ADD request: ``u32 timeout_ms, u32 id_len, session id, session data``;
  the reply is one result byte (see :func:`check_add`).
* GET / REMOVE / HAVE request: the session id.
* GET reply: the session data, or the single byte ``0x01`` on a miss
  (``0x02`` when a local proxy lost its upstream).  A stored value that is
  exactly the byte ``0x01`` or ``0x02`` is therefore indistinguishable from a
  miss / disconnect: that ambiguity is in the protocol itself.
* REMOVE / HAVE reply: ``0x00`` found/removed, ``0x01`` not found.

Requests on one connection are answered in order and may be pipelined.

Any framing violation means the peer is broken and the connection must be
closed: :class:`DistcacheParser` raises :class:`FramingError` (a
:class:`~scatterhoard.errors.ProtocolError`) with a one-line reason.
"""

from __future__ import annotations

import struct
from typing import Final, Literal, NamedTuple

from scatterhoard.errors import ProtocolError

__all__ = [
    "ADD_HEADER_SIZE",
    "HEADER_SIZE",
    "MAX_DATA_LEN",
    "MAX_FRAMES",
    "MAX_FRAME_DATA",
    "MAX_ID_LEN",
    "MAX_PAYLOAD",
    "MAX_TIMEOUT_MS",
    "MAX_UID",
    "OP_ADD",
    "OP_GET",
    "OP_HAVE",
    "OP_NAMES",
    "OP_REMOVE",
    "PROTO_LEVEL",
    "PROTO_LEVEL_MASK",
    "RESULT_ADD_CORRUPT",
    "RESULT_ADD_DATA_LEN",
    "RESULT_ADD_DUPLICATE",
    "RESULT_ADD_ID_LEN",
    "RESULT_ADD_TIMEOUT",
    "RESULT_DISCONNECTED",
    "RESULT_NAMES",
    "RESULT_NOTOK",
    "RESULT_OK",
    "AddRequest",
    "DistcacheParser",
    "FramingError",
    "GetRequest",
    "HaveRequest",
    "Message",
    "RemoveRequest",
    "Request",
    "Response",
    "check_add",
    "decode_request",
    "decode_response",
    "describe",
    "encode_add",
    "encode_get",
    "encode_get_reply",
    "encode_have",
    "encode_message",
    "encode_remove",
    "encode_result",
]

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

PROTO_LEVEL: Final = 0x00110000
PROTO_LEVEL_MASK: Final = 0xFFFF0000
HEADER_SIZE: Final = 14
MAX_FRAME_DATA: Final = 2048
MAX_PAYLOAD: Final = 32768
MAX_FRAMES: Final = MAX_PAYLOAD // MAX_FRAME_DATA  # 16
MAX_UID: Final = 0xFFFFFFFF

OP_ADD: Final = 0
OP_GET: Final = 1
OP_REMOVE: Final = 2
OP_HAVE: Final = 3
OP_NAMES: Final[dict[int, str]] = {OP_ADD: "ADD", OP_GET: "GET", OP_REMOVE: "REMOVE", OP_HAVE: "HAVE"}

RESULT_OK: Final = 0
RESULT_NOTOK: Final = 1
RESULT_DISCONNECTED: Final = 2
RESULT_ADD_CORRUPT: Final = 100
RESULT_ADD_DUPLICATE: Final = 101
RESULT_ADD_TIMEOUT: Final = 102
RESULT_ADD_ID_LEN: Final = 103
RESULT_ADD_DATA_LEN: Final = 104
RESULT_NAMES: Final[dict[int, str]] = {
    RESULT_OK: "OK",
    RESULT_NOTOK: "NOTOK",
    RESULT_DISCONNECTED: "DISCONNECTED",
    RESULT_ADD_CORRUPT: "ADD_CORRUPT",
    RESULT_ADD_DUPLICATE: "ADD_DUPLICATE",
    RESULT_ADD_TIMEOUT: "ADD_TIMEOUT",
    RESULT_ADD_ID_LEN: "ADD_ID_LEN",
    RESULT_ADD_DATA_LEN: "ADD_DATA_LEN",
}

MAX_TIMEOUT_MS: Final = 604_800_000  # one week
MAX_ID_LEN: Final = 64
MAX_DATA_LEN: Final = 32768
ADD_HEADER_SIZE: Final = 8

_HEADER = struct.Struct(">IBIBBBH")
_ADD_HEADER = struct.Struct(">II")
assert _HEADER.size == HEADER_SIZE

_PROTO_HIGH: Final = PROTO_LEVEL & PROTO_LEVEL_MASK
_RESULT_BYTES: Final = tuple(bytes((i,)) for i in range(256))

Buffer = bytes | bytearray | memoryview

# --------------------------------------------------------------------------
# Typed objects
# --------------------------------------------------------------------------


class Message(NamedTuple):
    """One complete (reassembled) message, request or response."""

    is_response: bool
    uid: int
    op: int
    payload: bytes


class AddRequest(NamedTuple):
    uid: int
    timeout_ms: int
    session_id: bytes
    data: bytes


class GetRequest(NamedTuple):
    uid: int
    session_id: bytes


class RemoveRequest(NamedTuple):
    uid: int
    session_id: bytes


class HaveRequest(NamedTuple):
    uid: int
    session_id: bytes


Request = AddRequest | GetRequest | RemoveRequest | HaveRequest


class Response(NamedTuple):
    """A decoded reply.

    ``code`` is the result byte (``RESULT_*``).  For a GET hit ``code`` is
    :data:`RESULT_OK` and ``data`` holds the session; in every other case
    ``data`` is ``None``.
    """

    uid: int
    op: int
    code: int
    data: bytes | None


class FramingError(ProtocolError):
    """The byte stream broke the distcache framing rules; close the connection.

    ``messages`` holds the complete messages decoded by the same
    :meth:`DistcacheParser.feed` call before the violation (in order), so a
    server may still answer them and a snooper may still print them.
    """

    def __init__(self, reason: str, messages: list[Message] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.messages: list[Message] = messages if messages is not None else []


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def _flat(buf: Buffer) -> Buffer:
    """``buf`` itself, or a byte view of a memoryview whose items are not bytes."""
    if isinstance(buf, memoryview) and (buf.format != "B" or buf.ndim != 1):
        return buf.cast("B")
    return buf


def _check_uid(uid: int) -> None:
    if not 0 <= uid <= MAX_UID:
        raise ValueError(f"distcache: request uid {uid} is not a u32")


def encode_message(is_response: bool, uid: int, op: int, payload: Buffer) -> bytes:
    """Frame one message; payloads over 2048 bytes are split into 2048-byte frames.

    Raises :class:`ValueError` for a uid that is not a u32, an unknown
    operation, or a payload over :data:`MAX_PAYLOAD` bytes.
    """
    _check_uid(uid)
    if op not in OP_NAMES:
        raise ValueError(f"distcache: unknown operation {op!r}")
    payload = _flat(payload)
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"distcache: payload of {n} bytes exceeds the {MAX_PAYLOAD}-byte message limit")
    resp = 1 if is_response else 0
    if n <= MAX_FRAME_DATA:
        return _HEADER.pack(PROTO_LEVEL, resp, uid, 0, op, 1, n) + payload
    view = memoryview(payload)
    parts: list[Buffer] = []
    mid = _HEADER.pack(PROTO_LEVEL, resp, uid, 0, op, 0, MAX_FRAME_DATA)
    last_start = ((n - 1) // MAX_FRAME_DATA) * MAX_FRAME_DATA
    for start in range(0, last_start, MAX_FRAME_DATA):
        parts.append(mid)
        parts.append(view[start:start + MAX_FRAME_DATA])
    parts.append(_HEADER.pack(PROTO_LEVEL, resp, uid, 0, op, 1, n - last_start))
    parts.append(view[last_start:])
    return b"".join(parts)


def encode_add(uid: int, session_id: Buffer, data: Buffer, timeout_ms: int) -> bytes:
    """An ADD request.

    Only what cannot be put on the wire is refused (:class:`ValueError`):
    a timeout that is not a u32 or a payload over 32768 bytes.  Values the
    server rejects (empty or >64-byte id, empty data, timeout over a week)
    are encoded as given so that servers can be tested against them.
    """
    if not 0 <= timeout_ms <= 0xFFFFFFFF:
        raise ValueError(f"distcache: timeout {timeout_ms} ms is not a u32")
    session_id = _flat(session_id)
    payload = b"".join((_ADD_HEADER.pack(timeout_ms, len(session_id)), session_id, data))
    return encode_message(False, uid, OP_ADD, payload)


def encode_get(uid: int, session_id: Buffer) -> bytes:
    return encode_message(False, uid, OP_GET, session_id)


def encode_remove(uid: int, session_id: Buffer) -> bytes:
    return encode_message(False, uid, OP_REMOVE, session_id)


def encode_have(uid: int, session_id: Buffer) -> bytes:
    return encode_message(False, uid, OP_HAVE, session_id)


def encode_result(uid: int, op: int, code: int) -> bytes:
    """A one-byte result reply (ADD/REMOVE/HAVE, or a GET miss/disconnect)."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"distcache: result code {code} is not a byte")
    return encode_message(True, uid, op, _RESULT_BYTES[code])


def encode_get_reply(uid: int, data: Buffer | None) -> bytes:
    """A GET reply: the session data, or the miss byte when ``data`` is None."""
    if data is None:
        return encode_message(True, uid, OP_GET, _RESULT_BYTES[RESULT_NOTOK])
    if memoryview(data).nbytes == 0:
        raise ValueError("distcache: a GET hit cannot carry empty session data")
    return encode_message(True, uid, OP_GET, data)


# --------------------------------------------------------------------------
# Decoding payloads
# --------------------------------------------------------------------------


def check_add(payload: Buffer) -> AddRequest | int:
    """Validate an ADD request payload the way a distcache server does.

    Returns the decoded request (with ``uid`` 0; see :func:`decode_request`)
    or the result code to send back, checking in this order:

    * 100 :data:`RESULT_ADD_CORRUPT` -- fewer than 8 bytes, or
      ``id_len >= len(payload) - 8``: the id must leave room for at least one
      byte of data, so *empty data* is reported as 100, not 104.
    * (101 :data:`RESULT_ADD_DUPLICATE` is decided by the store, not here.)
    * 102 :data:`RESULT_ADD_TIMEOUT` -- timeout over 604800000 ms.
    * 103 :data:`RESULT_ADD_ID_LEN` -- id length 0 or over 64.
    * 104 :data:`RESULT_ADD_DATA_LEN` -- data length 0 or over 32768.  Given
      the checks above and the 32768-byte message limit, this can not trigger
      for a payload that came off the wire; it is kept as a safety net for
      payloads built by other means.
    """
    payload = _flat(payload)
    n = len(payload)
    if n < ADD_HEADER_SIZE:
        return RESULT_ADD_CORRUPT
    timeout_ms, id_len = _ADD_HEADER.unpack_from(payload, 0)
    if id_len >= n - ADD_HEADER_SIZE:
        return RESULT_ADD_CORRUPT
    if timeout_ms > MAX_TIMEOUT_MS:
        return RESULT_ADD_TIMEOUT
    if id_len == 0 or id_len > MAX_ID_LEN:
        return RESULT_ADD_ID_LEN
    data_len = n - ADD_HEADER_SIZE - id_len
    if data_len == 0 or data_len > MAX_DATA_LEN:
        return RESULT_ADD_DATA_LEN
    id_end = ADD_HEADER_SIZE + id_len
    return AddRequest(0, timeout_ms, bytes(payload[ADD_HEADER_SIZE:id_end]), bytes(payload[id_end:]))


def decode_request(message: Message) -> Request | int:
    """Turn a request message into its typed form.

    For ADD, an ``int`` is returned instead when the payload fails
    :func:`check_add`: the result code the server must reply with.
    GET/REMOVE/HAVE ids are passed through unchecked.
    """
    if message.is_response:
        raise ValueError("distcache: decode_request() given a response")
    op = message.op
    if op == OP_GET:
        return GetRequest(message.uid, message.payload)
    if op == OP_ADD:
        res = check_add(message.payload)
        if isinstance(res, int):
            return res
        return res._replace(uid=message.uid)
    if op == OP_REMOVE:
        return RemoveRequest(message.uid, message.payload)
    if op == OP_HAVE:
        return HaveRequest(message.uid, message.payload)
    raise ValueError(f"distcache: unknown operation {op!r}")


def decode_response(message: Message) -> Response:
    """Turn a response message into a :class:`Response`.

    Raises :class:`ProtocolError` for a reply whose payload cannot be a reply
    to its operation (a result reply that is not exactly one byte, an empty
    GET reply).
    """
    if not message.is_response:
        raise ValueError("distcache: decode_response() given a request")
    op = message.op
    payload = message.payload
    n = len(payload)
    if op == OP_GET:
        if n == 0:
            raise ProtocolError(f"distcache: empty GET reply (uid {message.uid})")
        if n == 1 and payload[0] in (RESULT_NOTOK, RESULT_DISCONNECTED):
            return Response(message.uid, op, payload[0], None)
        return Response(message.uid, op, RESULT_OK, payload)
    if op not in OP_NAMES:
        raise ValueError(f"distcache: unknown operation {op!r}")
    if n != 1:
        raise ProtocolError(
            f"distcache: {OP_NAMES[op]} reply must be 1 result byte, got {n} bytes (uid {message.uid})"
        )
    return Response(message.uid, op, payload[0], None)


# --------------------------------------------------------------------------
# Incremental parser
# --------------------------------------------------------------------------


class DistcacheParser:
    """Incremental frame parser / message reassembler for one direction.

    ``side="server"`` parses what a server receives (requests), ``"client"``
    what a client receives (responses).  :meth:`feed` accepts chunks split
    anywhere and returns every message completed by them, in order.

    A framing violation raises :class:`FramingError`; the parser then stays
    failed and every later :meth:`feed` raises again.
    """

    __slots__ = (
        "_buf", "_consumed", "_error", "_expect", "_frames", "_is_response", "_op", "_parts", "_side",
        "_total", "_uid",
    )

    def __init__(self, side: Literal["server", "client"] = "server") -> None:
        if side not in ("server", "client"):
            raise ValueError(f"distcache: side must be 'server' or 'client', not {side!r}")
        self._side = side
        self._expect = 0 if side == "server" else 1
        self._is_response = side == "client"
        self._buf = bytearray()
        self._consumed = 0  # stream offset of _buf[0]
        self._error: str | None = None
        # Reassembly state of a message whose non-final frames have arrived.
        self._parts: list[bytes] = []
        self._total = 0
        self._frames = 0
        self._uid = 0
        self._op = 0

    @property
    def side(self) -> str:
        return self._side

    @property
    def buffered(self) -> int:
        """Bytes held back: unparsed input plus the payload of a partial message."""
        return len(self._buf) + self._total

    @property
    def in_message(self) -> bool:
        """True while some, but not all, bytes of a message have arrived."""
        return bool(self._buf) or self._frames > 0

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, data: Buffer) -> list[Message]:
        """Consume ``data`` and return the messages it completes."""
        if self._error is not None:
            raise FramingError(f"distcache: parser already failed: {self._error}")
        buf = self._buf
        src: Buffer
        if buf:
            buf += data
            src = buf
        else:
            src = data
        out: list[Message] = []
        mv = memoryview(src)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        end = len(mv)
        pos = 0
        unpack = _HEADER.unpack_from
        try:
            while end - pos >= HEADER_SIZE:
                level, resp, uid, op_class, op, complete, dlen = unpack(mv, pos)
                if (
                    (level & PROTO_LEVEL_MASK) != _PROTO_HIGH
                    or resp != self._expect
                    or op_class
                    or op > OP_HAVE
                    or complete > 1
                    or dlen > MAX_FRAME_DATA
                    or (not complete and dlen != MAX_FRAME_DATA)
                    or (self._frames and (uid != self._uid or op != self._op))
                    or (not complete and self._frames + 1 >= MAX_FRAMES)
                ):
                    reason = self._why(level, resp, uid, op_class, op, complete, dlen)
                    self._error = f"{reason} at stream offset {self._consumed + pos}"
                    raise FramingError(f"distcache: {self._error}", out)
                start = pos + HEADER_SIZE
                stop = start + dlen
                if stop > end:
                    break
                pos = stop
                if complete:
                    if self._frames:
                        self._parts.append(mv[start:stop].tobytes())
                        payload = b"".join(self._parts)
                        self._parts = []
                        self._frames = 0
                        self._total = 0
                    else:
                        payload = mv[start:stop].tobytes()
                    out.append(Message(self._is_response, uid, op, payload))
                else:
                    if not self._frames:
                        self._uid = uid
                        self._op = op
                    self._parts.append(mv[start:stop].tobytes())
                    self._frames += 1
                    self._total += dlen
        finally:
            if src is buf:
                mv.release()
                if pos:
                    del buf[:pos]
            else:
                if pos < end:
                    buf += mv[pos:]
                mv.release()
            self._consumed += pos
        return out

    def _why(self, level: int, resp: int, uid: int, op_class: int, op: int, complete: int,
             dlen: int) -> str:
        """The one-line reason a frame header was refused (first rule broken)."""
        if (level & PROTO_LEVEL_MASK) != _PROTO_HIGH:
            return f"bad proto_level 0x{level:08x} (expected 0x{_PROTO_HIGH >> 16:04x}xxxx)"
        if resp not in (0, 1):
            return f"corrupt is_response byte {resp} (uid {uid})"
        if resp != self._expect:
            got, want = ("response", "request") if resp else ("request", "response")
            return f"{self._side} side received a {got} where a {want} was expected (uid {uid})"
        if op_class:
            return f"unsupported op_class {op_class} (uid {uid})"
        if op > OP_HAVE:
            return f"unknown operation {op} (uid {uid})"
        if complete > 1:
            return f"corrupt complete byte {complete} (uid {uid})"
        if dlen > MAX_FRAME_DATA:
            return f"frame data_len {dlen} exceeds {MAX_FRAME_DATA} (uid {uid})"
        if not complete and dlen != MAX_FRAME_DATA:
            return f"non-final frame carries {dlen} bytes instead of {MAX_FRAME_DATA} (uid {uid})"
        if self._frames and (uid != self._uid or op != self._op):
            return (
                f"frame of uid {uid} op {OP_NAMES.get(op, op)} interleaved in message "
                f"uid {self._uid} op {OP_NAMES[self._op]}"
            )
        return f"message exceeds {MAX_PAYLOAD} bytes ({MAX_FRAMES} frames) (uid {uid})"


# --------------------------------------------------------------------------
# Human-readable one-liners
# --------------------------------------------------------------------------


def _result_name(code: int) -> str:
    return f"{RESULT_NAMES.get(code, 'UNKNOWN')}({code})"


def describe(message: Message) -> str:
    """One line summing up a message, for logs and the snoop tool.

    Never raises, whatever the payload.
    """
    op = message.op
    op_name = OP_NAMES.get(op, f"op{op}")
    payload = message.payload
    n = len(payload)
    if not message.is_response:
        head = f"request uid={message.uid} {op_name}"
        if op == OP_ADD:
            res = check_add(payload)
            if res == RESULT_ADD_CORRUPT:
                return f"{head} payload_len={n} invalid={_result_name(RESULT_ADD_CORRUPT)}"
            timeout_ms, id_len = _ADD_HEADER.unpack_from(payload, 0)
            fields = f"timeout_ms={timeout_ms} id_len={id_len} data_len={n - ADD_HEADER_SIZE - id_len}"
            if isinstance(res, int):
                return f"{head} {fields} invalid={_result_name(res)}"
            return f"{head} {fields}"
        return f"{head} id_len={n}"
    head = f"response uid={message.uid} {op_name}"
    if op == OP_GET:
        if n == 1 and payload[0] in (RESULT_NOTOK, RESULT_DISCONNECTED):
            return f"{head} result={_result_name(payload[0])}"
        if n == 0:
            return f"{head} payload_len=0 malformed"
        return f"{head} result=OK(0) data_len={n}"
    if n == 1:
        return f"{head} result={_result_name(payload[0])}"
    return f"{head} payload_len={n} malformed"
