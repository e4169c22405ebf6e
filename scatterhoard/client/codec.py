"""The client's sans-IO layer: requests for each command, per protocol, and connection states.

A :class:`Request` is everything one server is asked as part of a command
(one ``get k1 k2 ...`` line, or the N ``set``s of a ``set_many``), with a
``decode`` function that turns the replies into a protocol-neutral result:

========================= ====================================================
retrieve                  ``list[Value]`` (hits only)
store, delete, touch,     a result code (:data:`OK`, :data:`NOT_STORED`,
flush_all                 :data:`EXISTS`, :data:`NOT_FOUND`)
store_many, delete_many   ``list[int | CacheError]``, one per item
arith                     the new value, or ``None`` when the key is missing
stats                     ``dict[str, str]``
version                   ``str``
========================= ====================================================

``decode`` raises a :class:`~scatterhoard.errors.CacheError` when the server
refused the whole request.  :class:`TextCodec`, :class:`BinaryCodec`
and :class:`MetaCodec` build requests; :class:`TextConnState` /
:class:`BinaryConnState` / :class:`MetaConnState` track one connection:
``submit(request)`` gives the bytes to write, ``feed(data)`` hands replies
to the requests in flight and sets their ``done``.  No I/O
happens here; the sync and asyncio clients only move bytes.
"""

from __future__ import annotations

from ..protocol.text_client import Value
from .codec_binary import BinaryCodec, BinaryConnState, BinaryRequest
from .codec_meta import MetaCodec, MetaConnState, MetaRequest
from .codec_text import GET_CHUNK, TextCodec, TextConnState, TextRequest
from .request import EXISTS, NOT_FOUND, NOT_STORED, OK, Request

__all__ = [
    "EXISTS",
    "GET_CHUNK",
    "NOT_FOUND",
    "NOT_STORED",
    "OK",
    "BinaryCodec",
    "BinaryConnState",
    "BinaryRequest",
    "Codec",
    "ConnState",
    "MetaCodec",
    "MetaConnState",
    "MetaRequest",
    "Request",
    "TextCodec",
    "TextConnState",
    "TextRequest",
    "Value",
]

ConnState = TextConnState | BinaryConnState | MetaConnState
Codec = TextCodec | BinaryCodec | MetaCodec
