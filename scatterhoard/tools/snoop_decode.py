"""Sans-IO decoding for ``hoard snoop``: both directions of one connection, paired.

A :class:`Decoder` is fed what the client sent and what the server sent (as
copies: the snoop forwards the real bytes before decoding) and returns
:class:`Exchange` items, a request with its reply, as they complete:

* :class:`TextDecoder` -- memcached text and meta commands: requests through
  :class:`~scatterhoard.protocol.text.TextRequestParser`, replies cut by a
  self-describing framer (text replies carry no request id, and meta ``q``
  mode leaves some requests unanswered, so replies are framed without
  expectations and then paired);
* :class:`BinaryDecoder` -- memcached binary, through
  :class:`~scatterhoard.protocol.binary.BinaryParser`, paired by opcode and
  opaque (quiet requests may go unanswered);
* :class:`RespDecoder` -- RESP, through
  :class:`~scatterhoard.protocol.resp.RequestParser` and
  :class:`~scatterhoard.protocol.resp.RespParser`;
* :class:`DistcacheDecoder` -- distcache, through
  :class:`~scatterhoard.protocol.distcache.DistcacheParser`, paired by uid.

Bytes a codec refuses raise :class:`DecodeError`; the caller then stops
decoding that connection (and goes on forwarding it).
"""

from __future__ import annotations

from ..protocol import binary as b
from .snoop_decode_base import (
    MAX_DECODED_VALUE,
    DecodeError,
    Decoder,
    Exchange,
    Reply,
    Request,
    show_key,
    show_value,
)
from .snoop_decode_binary import BinaryDecoder
from .snoop_decode_distcache import DistcacheDecoder
from .snoop_decode_resp import RespDecoder, resp_keys, resp_text
from .snoop_decode_text import TextDecoder, TextReplyFramer

__all__ = [
    "MAX_DECODED_VALUE", "BinaryDecoder", "DecodeError", "Decoder", "DistcacheDecoder", "Exchange", "Reply",
    "Request", "RespDecoder", "TextDecoder", "TextReplyFramer", "decoder_for", "resp_keys", "resp_text",
    "show_key", "show_value",
]


def decoder_for(first_byte: int, values: int = 32) -> Decoder:
    """The decoder of a connection whose client sent ``first_byte`` first (as hoard server picks)."""
    if first_byte == b.REQUEST_MAGIC:
        return BinaryDecoder(values)
    if first_byte == 0x00:
        return DistcacheDecoder(values)
    if first_byte == 0x2A:  # '*'
        return RespDecoder(values)
    return TextDecoder(values)
