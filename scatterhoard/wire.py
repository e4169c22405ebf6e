"""The base of the connection protocols on hot paths: a transport and its ``write``, bound once.

Compiled with mypyc (see :mod:`scatterhoard._build`). ``hoard server``'s connections, ``hoard
proxy``'s client sessions and its backend connections write once per read or per loop
iteration; a compiled ``transport.write(data)`` is a method lookup on every call, the bound
``self._write(data)`` a direct call. Setting :attr:`Wired.transport` (in ``connection_made``, or
when a session takes over another's connection) binds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mypy_extensions import mypyc_attr


def unwritable(data: bytes) -> None:
    """The bound ``write`` of a connection without a transport: a bug if called."""
    raise AssertionError("write on a connection without a transport")


@mypyc_attr(allow_interpreted_subclasses=True)
class Wired:
    """A connection's transport (None before ``connection_made``) and its bound write."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._write: Callable[[bytes], object] = unwritable

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    @transport.setter
    def transport(self, transport: asyncio.Transport | None) -> None:
        self._transport = transport
        self._write = transport.write if transport is not None else unwritable
