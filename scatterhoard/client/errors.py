"""How server answers and socket failures become :mod:`scatterhoard.errors` exceptions.

The client raises only members of the one exception tree (rooted in
:class:`~scatterhoard.errors.CacheError`):

* :class:`~scatterhoard.errors.ClientError` -- the request was refused as
  malformed (``CLIENT_ERROR``, ``ERROR``, binary ``EINVAL``/``DELTA_BADVAL``),
  or a key is unusable with ``long_keys="error"``;
  :class:`ValueTooLargeError` is the one for a value over the item size.
* :class:`~scatterhoard.errors.ServerError` -- the server could not do it
  (``SERVER_ERROR ...``, binary ``ENOMEM``), or answered with bytes that are
  not the protocol (the connection is then dropped).
* :class:`~scatterhoard.errors.CacheConnectionError` -- connect failed, the
  connection was lost, or every server is ejected
  (:class:`~scatterhoard.routing.NoLiveServersError`).
* :class:`~scatterhoard.errors.CacheTimeoutError` -- no answer in time.
"""

from __future__ import annotations

import socket

from ..errors import CacheConnectionError, CacheError, CacheTimeoutError, ClientError, ServerError
from ..protocol import binary as bp

__all__ = [
    "ValueTooLargeError",
    "binary_status_error",
    "socket_error",
    "text_error",
]


class ValueTooLargeError(ClientError):
    """A value is larger than the server's (or the client's ``max_value_size``) item size.

    The connection stays usable: the client checks the size before sending,
    and the server skips an oversized value it was sent anyway.
    """


def text_error(line: bytes, what: str) -> CacheError:
    """The exception for a text-protocol error line (``ERROR``, ``CLIENT_ERROR x``, ``SERVER_ERROR x``)."""
    text = line.decode("utf-8", "replace")
    if line.startswith(b"SERVER_ERROR"):
        message = text[len("SERVER_ERROR"):].strip()
        if "too large" in message:
            return ValueTooLargeError(f"{what}: the server refused the value as too large ({message})")
        return ServerError(f"{what}: {message or text}")
    if line.startswith(b"CLIENT_ERROR"):
        return ClientError(f"{what}: {text[len('CLIENT_ERROR'):].strip() or text}")
    return ClientError(f"{what}: the server answered {text!r}")


def binary_status_error(status: int, message: bytes, what: str) -> CacheError:
    """The exception for a binary-protocol error status."""
    text = message.decode("utf-8", "replace") or bp.STATUS_NAMES.get(status, f"status 0x{status:02x}")
    if status == bp.STATUS_E2BIG:
        return ValueTooLargeError(f"{what}: the server refused the value as too large ({text})")
    if status in (bp.STATUS_EINVAL, bp.STATUS_DELTA_BADVAL, bp.STATUS_UNKNOWN_COMMAND):
        return ClientError(f"{what}: {text}")
    return ServerError(f"{what}: {text}")


def socket_error(exc: BaseException, server: str) -> CacheError:
    """A socket-level failure talking to ``server`` as a CacheError."""
    if isinstance(exc, CacheError):
        return exc
    if isinstance(exc, (socket.timeout, TimeoutError, BlockingIOError)):
        return CacheTimeoutError(f"{server}: no answer in time")
    return CacheConnectionError(f"{server}: {exc.__class__.__name__}: {exc}")
