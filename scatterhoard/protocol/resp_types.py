"""The Python values that stand for RESP2/RESP3 protocol values.

Mapping (wire type -> Python value returned by the parsers and accepted by
:func:`scatterhoard.protocol.resp.encode`):

========================  ==========  ==============================================
wire                      prefix      Python
========================  ==========  ==============================================
bulk (blob) string        ``$``       ``bytes``
null bulk / null array    ``$-1``     ``None`` (both, as RESP3 does)
                          ``*-1``
RESP3 null                ``_``       ``None``
simple string             ``+``       :class:`SimpleString` (``.value: bytes``)
simple error              ``-``       :class:`Error` (``.message: bytes``)
blob error                ``!``       :class:`BlobError` (a subclass of :class:`Error`)
integer                   ``:``       ``int``
big number                ``(``       :class:`BigNumber` (``.value: int``)
double                    ``,``       ``float`` (``inf``, ``-inf``, ``nan`` included)
boolean                   ``#``       ``bool``
array                     ``*``       ``list``
map                       ``%``       ``dict`` (aggregate keys become tuples)
set                       ``~``       :class:`RespSet` (a ``list`` subclass, wire order,
                                      duplicates kept)
push                      ``>``       :class:`Push` (a ``list`` subclass)
verbatim string           ``=``       :class:`Verbatim` (``.format: bytes``, ``.text: bytes``)
attribute                 ``|``       skipped, or :class:`Attributed` wrapping the value
                                      that follows it (``keep_attributes=True``)
========================  ==========  ==============================================

Every wrapper compares equal only to a value of the same class, so a simple
string never equals the bulk string with the same bytes, a :class:`Push` never
equals a plain list, and so on. The wrappers of scalars are hashable (they can
be map keys); they are immutable by convention.
"""

from __future__ import annotations

from typing import TypeAlias


class SimpleString:
    """A ``+`` simple string: short, no CR or LF inside (``+OK``, ``+PONG``)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is SimpleString and other.value == self.value

    def __hash__(self) -> int:
        return hash((SimpleString, self.value))

    def __repr__(self) -> str:
        return f"SimpleString({self.value!r})"

    def __bytes__(self) -> bytes:
        return self.value


class Error:
    """A ``-`` simple error reply; ``message`` is everything after the ``-``.

    The first word of the message is the error code (``ERR``, ``WRONGTYPE``...).
    """

    __slots__ = ("message",)

    def __init__(self, message: bytes) -> None:
        self.message = message

    @property
    def code(self) -> str:
        """The first word (``"ERR"``, ``"WRONGTYPE"``, ``"MOVED"``...)."""
        return self.message.split(b" ", 1)[0].decode("utf-8", "replace")

    @property
    def text(self) -> str:
        """The whole message decoded as UTF-8 (bad bytes replaced)."""
        return self.message.decode("utf-8", "replace")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.message == self.message

    def __hash__(self) -> int:
        return hash((type(self), self.message))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BlobError(Error):
    """A RESP3 ``!`` blob error: binary safe, may hold CR/LF."""

    __slots__ = ()


class BigNumber:
    """A RESP3 ``(`` big number (any size; the wire form is decimal digits)."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is BigNumber and other.value == self.value

    def __hash__(self) -> int:
        return hash((BigNumber, self.value))

    def __repr__(self) -> str:
        return f"BigNumber({self.value!r})"

    def __int__(self) -> int:
        return self.value


class Verbatim:
    """A RESP3 ``=`` verbatim string: a 3-byte ``format`` (``txt``, ``mkd``) and ``text``."""

    __slots__ = ("format", "text")

    def __init__(self, format: bytes, text: bytes) -> None:
        self.format = format
        self.text = text

    def __eq__(self, other: object) -> bool:
        return type(other) is Verbatim and other.format == self.format and other.text == self.text

    def __hash__(self) -> int:
        return hash((Verbatim, self.format, self.text))

    def __repr__(self) -> str:
        return f"Verbatim({self.format!r}, {self.text!r})"


class _TypedList(list["RespValue"]):
    """A list that only equals lists of its own class."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and list.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list.__repr__(self)})"


class RespSet(_TypedList):
    """A RESP3 ``~`` set, kept as a list in wire order (elements may be unhashable)."""

    __slots__ = ()


class Push(_TypedList):
    """A RESP3 ``>`` push (out-of-band data); element 0 names its kind (``message``...)."""

    __slots__ = ()

    @property
    def kind(self) -> bytes | None:
        """The first element when it is a string (``b"message"``, ``b"invalidate"``...)."""
        first = self[0] if self else None
        if isinstance(first, bytes):
            return first
        if isinstance(first, SimpleString):
            return first.value
        return None


class Attributed:
    """A value preceded on the wire by a RESP3 ``|`` attribute map."""

    __slots__ = ("attributes", "value")

    def __init__(self, value: RespValue, attributes: dict[RespValue, RespValue]) -> None:
        self.value = value
        self.attributes = attributes

    def __eq__(self, other: object) -> bool:
        return (type(other) is Attributed and other.value == self.value
                and other.attributes == self.attributes)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Attributed({self.value!r}, {self.attributes!r})"


RespValue: TypeAlias = (
    bytes | int | float | bool | None | SimpleString | Error | BigNumber | Verbatim
    | list["RespValue"] | tuple["RespValue", ...] | dict["RespValue", "RespValue"]
    | RespSet | Push | Attributed
)
"""Any value the parsers return (``tuple`` only appears as a map key)."""
