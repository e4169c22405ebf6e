"""RESP serializers: commands (client side), replies (server side), fast helpers.

:func:`encode` writes RESP3 when ``resp3=True``; otherwise it writes RESP2 and
downgrades the RESP3 types the way redis does for a RESP2 connection:

==================  ==========================  ===========================
value               RESP3                       RESP2
==================  ==========================  ===========================
``None``            ``_``                       ``$-1`` (null bulk)
``dict``            ``%`` map                   flat array ``k1 v1 k2 v2``
RespSet / set       ``~`` set                   array
Push                ``>`` push                  array
``float``           ``,`` double                bulk string (``inf``, ``nan``...)
``bool``            ``#t`` / ``#f``             integer ``1`` / ``0``
BigNumber           ``(`` big number            bulk string of the digits
Verbatim            ``=`` verbatim string       bulk string of the text
BlobError           ``!`` blob error            ``-`` simple error (CR/LF -> space)
Attributed          ``|`` attributes + value    the value alone
``int`` beyond      ``(`` big number            bulk string of the digits
64 bits
==================  ==========================  ===========================

``str`` is written as the bulk string of its UTF-8 bytes, ``tuple`` as an
array, ``bytearray``/``memoryview`` as bulk strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .resp_types import (
    Attributed,
    BigNumber,
    BlobError,
    Error,
    Push,
    RespSet,
    SimpleString,
    Verbatim,
)

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
NULL_BULK = b"$-1\r\n"
NULL_ARRAY = b"*-1\r\n"
NULL = b"_\r\n"
EMPTY_ARRAY = b"*0\r\n"
EMPTY_BULK = b"$0\r\n\r\n"

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_BIG = 1 << 14  # above this many bytes, a bulk body is not copied into a header string

Arg = bytes | str | int | float | bytearray | memoryview


def _arg_bytes(arg: Arg) -> bytes:
    if type(arg) is bytes:
        return arg
    if type(arg) is str:
        return arg.encode()
    if type(arg) is int:
        return b"%d" % arg
    if type(arg) is float:
        return repr(arg).encode()
    if isinstance(arg, bool):
        raise TypeError("a bool is not a redis command argument; send 0/1 or a string")
    if isinstance(arg, bytes | bytearray | memoryview):
        return bytes(arg)
    if isinstance(arg, str):
        return str(arg).encode()
    if isinstance(arg, int):
        return b"%d" % int(arg)
    if isinstance(arg, float):
        return repr(float(arg)).encode()
    raise TypeError(f"cannot send {type(arg).__name__} as a redis command argument")


def encode_command(*args: Arg) -> bytes:
    """One command as an array of bulk strings: ``encode_command("SET", "k", 1)``.

    ``str`` is sent as UTF-8, ``int`` in decimal, ``float`` as ``repr``.
    """
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        data = _arg_bytes(arg)
        if len(data) < _BIG:
            append(b"$%d\r\n%b\r\n" % (len(data), data))
        else:
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
    return b"".join(parts)


def encode_commands(commands: Iterable[Iterable[Arg]]) -> bytes:
    """A pipeline: every command encoded, concatenated."""
    return b"".join(encode_command(*command) for command in commands)


# ---------------------------------------------------------------------------
# Fast reply helpers
# ---------------------------------------------------------------------------

def ok() -> bytes:
    """``+OK\\r\\n``."""
    return OK


def simple(text: bytes | str) -> bytes:
    """A ``+`` simple string (no CR/LF allowed)."""
    data = text.encode() if isinstance(text, str) else text
    if b"\r" in data or b"\n" in data:
        raise ValueError("a simple string cannot hold CR or LF")
    return b"+%b\r\n" % data


def bulk(data: bytes | str) -> bytes:
    """A ``$`` bulk string."""
    if isinstance(data, str):
        data = data.encode()
    if len(data) < _BIG:
        return b"$%d\r\n%b\r\n" % (len(data), data)
    return b"".join((b"$%d\r\n" % len(data), data, b"\r\n"))


def null_bulk(resp3: bool = False) -> bytes:
    """``$-1\\r\\n`` (RESP2 null), or ``_\\r\\n`` with ``resp3``."""
    return NULL if resp3 else NULL_BULK


def integer(number: int) -> bytes:
    """A ``:`` integer."""
    return b":%d\r\n" % number


def _clean_error(message: bytes) -> bytes:
    if b"\r" in message or b"\n" in message:
        message = message.replace(b"\r\n", b" ").replace(b"\r", b" ").replace(b"\n", b" ")
    return message


def error(message: bytes | str) -> bytes:
    """A ``-`` error line. The message starts with its code: ``error("ERR syntax error")``.

    CR and LF in the message are replaced by spaces, as redis does.
    """
    data = message.encode() if isinstance(message, str) else message
    return b"-%b\r\n" % _clean_error(data)


def array_header(count: int) -> bytes:
    """``*<count>\\r\\n``, to put in front of ``count`` already encoded values."""
    return b"*%d\r\n" % count


def array(items: Iterable[bytes | str | None], resp3: bool = False) -> bytes:
    """An array of bulk strings, ``None`` as null (``MGET``-style replies)."""
    null = NULL if resp3 else NULL_BULK
    parts = [b""]
    append = parts.append
    count = 0
    for item in items:
        count += 1
        if item is None:
            append(null)
        else:
            append(bulk(item))
    parts[0] = b"*%d\r\n" % count
    return b"".join(parts)


def double(number: float, resp3: bool = False) -> bytes:
    """A ``,`` double (RESP3) or its RESP2 bulk string."""
    text = _double_text(number)
    return b",%b\r\n" % text if resp3 else b"$%d\r\n%b\r\n" % (len(text), text)


def _double_text(number: float) -> bytes:
    if math.isfinite(number):
        return repr(number).encode()
    if number != number:
        return b"nan"
    return b"inf" if number > 0 else b"-inf"


# ---------------------------------------------------------------------------
# Generic encoder
# ---------------------------------------------------------------------------

def encode(value: object, resp3: bool = False) -> bytes:
    """Serialize a reply value (see the module doc for types and RESP2 downgrades)."""
    if type(value) is bytes:
        return bulk(value)
    if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
        return b":%d\r\n" % value
    parts: list[bytes] = []
    _encode_into(value, parts, resp3)
    return b"".join(parts)


def _encode_into(value: object, parts: list[bytes], resp3: bool) -> None:
    append = parts.append
    if type(value) is bytes:
        if len(value) < _BIG:
            append(b"$%d\r\n%b\r\n" % (len(value), value))
        else:
            append(b"$%d\r\n" % len(value))
            append(value)
            append(b"\r\n")
    elif value is None:
        append(NULL if resp3 else NULL_BULK)
    elif type(value) is list:
        append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(item, parts, resp3)
    elif type(value) is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            append(b":%d\r\n" % value)
        elif resp3:
            append(b"(%d\r\n" % value)
        else:
            _encode_into(b"%d" % value, parts, resp3)
    elif isinstance(value, SimpleString):
        append(simple(value.value))
    elif isinstance(value, BlobError):
        if resp3:
            append(b"!%d\r\n%b\r\n" % (len(value.message), value.message))
        else:
            append(b"-%b\r\n" % _clean_error(value.message))
    elif isinstance(value, Error):
        append(b"-%b\r\n" % _clean_error(value.message))
    elif isinstance(value, bool):
        if resp3:
            append(b"#t\r\n" if value else b"#f\r\n")
        else:
            append(b":1\r\n" if value else b":0\r\n")
    elif isinstance(value, float):
        append(double(value, resp3))
    elif isinstance(value, str):
        _encode_into(value.encode(), parts, resp3)
    elif isinstance(value, dict):
        if resp3:
            append(b"%%%d\r\n" % len(value))
        else:
            append(b"*%d\r\n" % (2 * len(value)))
        for key, item in value.items():
            _encode_into(key, parts, resp3)
            _encode_into(item, parts, resp3)
    elif isinstance(value, RespSet | set | frozenset):
        append(b"%c%d\r\n" % (126 if resp3 else 42, len(value)))
        for item in value:
            _encode_into(item, parts, resp3)
    elif isinstance(value, Push):
        append(b"%c%d\r\n" % (62 if resp3 else 42, len(value)))
        for item in value:
            _encode_into(item, parts, resp3)
    elif isinstance(value, list | tuple):
        append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(item, parts, resp3)
    elif isinstance(value, Verbatim):
        if resp3:
            if len(value.format) != 3:
                raise ValueError(f"a verbatim format is 3 bytes, not {value.format!r}")
            append(b"=%d\r\n%b:" % (len(value.text) + 4, value.format))
            append(value.text)
            append(b"\r\n")
        else:
            _encode_into(value.text, parts, resp3)
    elif isinstance(value, BigNumber):
        if resp3:
            append(b"(%d\r\n" % value.value)
        else:
            _encode_into(b"%d" % value.value, parts, resp3)
    elif isinstance(value, Attributed):
        if resp3:
            append(b"|%d\r\n" % len(value.attributes))
            for key, item in value.attributes.items():
                _encode_into(key, parts, resp3)
                _encode_into(item, parts, resp3)
        _encode_into(value.value, parts, resp3)
    elif isinstance(value, bytes | bytearray | memoryview):
        _encode_into(bytes(value), parts, resp3)
    elif isinstance(value, int):
        _encode_into(int(value), parts, resp3)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as RESP")
