"""The sans-IO RESP (redis serialization protocol) codec, RESP2 and RESP3.

One import point for the three parts:

* :mod:`.resp_types` -- the Python value of each wire type (bytes for bulk
  strings, :class:`SimpleString`, :class:`Error`, ``int``, ``None`` for
  every null, ``list``, ``dict``, :class:`RespSet`, ``float``, ``bool``,
  :class:`Push`, :class:`Verbatim`, :class:`BigNumber`, :class:`BlobError`,
  :class:`Attributed`);
* :mod:`.resp_parser` -- :class:`RespParser` (replies / any value) and
  :mod:`.resp_request` -- :class:`RequestParser` (commands: arrays of bulk
  strings or inline lines, the hot path of a server or proxy), both
  incremental and linear;
* :mod:`.resp_encode` -- :func:`encode_command` (client side),
  :func:`encode` (replies, RESP3 or RESP2 with downgrades) and fast helpers
  (:func:`ok`, :func:`bulk`, :func:`null_bulk`, :func:`integer`,
  :func:`error`, :func:`array`...).

No I/O here: callers own the sockets.
"""

from __future__ import annotations

from .resp_encode import (
    EMPTY_ARRAY,
    EMPTY_BULK,
    NULL,
    NULL_ARRAY,
    NULL_BULK,
    OK,
    PONG,
    QUEUED,
    array,
    array_header,
    bulk,
    double,
    encode,
    encode_command,
    encode_commands,
    error,
    integer,
    null_bulk,
    ok,
    simple,
)
from .resp_parser import (
    ERR_BULK_COUNT_TOO_BIG,
    ERR_BULK_LENGTH,
    ERR_INLINE_TOO_BIG,
    ERR_MBULK_COUNT_TOO_BIG,
    ERR_MULTIBULK_LENGTH,
    ERR_UNBALANCED_QUOTES,
    MAX_BULK,
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_INLINE,
    RespParser,
    RespProtocolError,
    decode,
)
from .resp_request import RequestParser, split_inline
from .resp_types import (
    Attributed,
    BigNumber,
    BlobError,
    Error,
    Push,
    RespSet,
    RespValue,
    SimpleString,
    Verbatim,
)

__all__ = [
    "EMPTY_ARRAY",
    "EMPTY_BULK",
    "ERR_BULK_COUNT_TOO_BIG",
    "ERR_BULK_LENGTH",
    "ERR_INLINE_TOO_BIG",
    "ERR_MBULK_COUNT_TOO_BIG",
    "ERR_MULTIBULK_LENGTH",
    "ERR_UNBALANCED_QUOTES",
    "MAX_BULK",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_INLINE",
    "NULL",
    "NULL_ARRAY",
    "NULL_BULK",
    "OK",
    "PONG",
    "QUEUED",
    "Attributed",
    "BigNumber",
    "BlobError",
    "Error",
    "Push",
    "RequestParser",
    "RespParser",
    "RespProtocolError",
    "RespSet",
    "RespValue",
    "SimpleString",
    "Verbatim",
    "array",
    "array_header",
    "bulk",
    "decode",
    "double",
    "encode",
    "encode_command",
    "encode_commands",
    "error",
    "integer",
    "null_bulk",
    "ok",
    "simple",
    "split_inline",
]
