"""Value serializers: Python objects <-> (bytes, flags).

By default the client stores and returns ``bytes`` only (:class:`RawSerde`).
Anything else is behind an explicit option, ``serde=``:

=========== ==================================================================
``"raw"``    bytes-like only (the default); reads return the stored bytes
``"basic"``  bytes, ``str`` (UTF-8) and ``int``; the flags record which
``"json"``   as ``"basic"``, plus anything :func:`json.dumps` takes
``"pickle"`` as ``"basic"``, plus anything :mod:`pickle` takes -- only for
             data you trust: unpickling runs code
=========== ==================================================================

The flag bits are pymemcache's (:data:`FLAG_BYTES` 0, :data:`FLAG_PICKLE`
1, :data:`FLAG_INTEGER` 2, :data:`FLAG_LONG` 4, :data:`FLAG_TEXT` 16), so
the two libraries read each other's str/int/pickle items; JSON has its own
bit, :data:`FLAG_JSON` (32).  A value whose flags a serializer does not know
comes back as the stored bytes.

Any object with ``serialize(key, value) -> (bytes, flags)`` and
``deserialize(key, data, flags) -> value`` can be passed instead of a name
(the same two methods as pymemcache's serde objects).
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Final, Protocol, runtime_checkable

__all__ = [
    "FLAG_BYTES",
    "FLAG_INTEGER",
    "FLAG_JSON",
    "FLAG_LONG",
    "FLAG_PICKLE",
    "FLAG_TEXT",
    "BasicSerde",
    "JsonSerde",
    "PickleSerde",
    "RawSerde",
    "Serde",
    "get_serde",
]

FLAG_BYTES: Final = 0
FLAG_PICKLE: Final = 1 << 0
FLAG_INTEGER: Final = 1 << 1
FLAG_LONG: Final = 1 << 2
FLAG_TEXT: Final = 1 << 4
FLAG_JSON: Final = 1 << 5


@runtime_checkable
class Serde(Protocol):
    """What the ``serde=`` option accepts besides a name."""

    def serialize(self, key: bytes, value: Any) -> tuple[bytes, int]: ...

    def deserialize(self, key: bytes, data: bytes, flags: int) -> Any: ...


def _bytes_like(value: object) -> bytes | None:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return None


class RawSerde:
    """bytes in, bytes out; anything else is a TypeError."""

    __slots__ = ()

    def serialize(self, key: bytes, value: Any) -> tuple[bytes, int]:
        data = _bytes_like(value)
        if data is None:
            raise TypeError(
                f"value for key {key!r} is {type(value).__name__}, not bytes: encode it, or create the "
                "client with serde='basic' (str/int), 'json' or 'pickle'"
            )
        return data, FLAG_BYTES

    def deserialize(self, key: bytes, data: bytes, flags: int) -> Any:
        return data


class BasicSerde:
    """bytes, str (UTF-8, :data:`FLAG_TEXT`) and int (:data:`FLAG_INTEGER`)."""

    __slots__ = ()

    def _other(self, key: bytes, value: Any) -> tuple[bytes, int]:
        raise TypeError(
            f"value for key {key!r} is {type(value).__name__}: serde='basic' stores bytes, str and int "
            "only (use serde='json' or 'pickle' for more)"
        )

    def serialize(self, key: bytes, value: Any) -> tuple[bytes, int]:
        kind = type(value)
        if kind is bytes:
            return value, FLAG_BYTES
        if kind is str:
            return value.encode("utf-8"), FLAG_TEXT
        if kind is int:
            return b"%d" % value, FLAG_INTEGER
        data = _bytes_like(value)
        if data is not None:
            return data, FLAG_BYTES
        if isinstance(value, str):
            return str(value).encode("utf-8"), FLAG_TEXT
        if isinstance(value, int) and not isinstance(value, bool):
            return b"%d" % int(value), FLAG_INTEGER
        return self._other(key, value)

    def _load_other(self, key: bytes, data: bytes, flags: int) -> Any:
        return data

    def deserialize(self, key: bytes, data: bytes, flags: int) -> Any:
        if flags == FLAG_BYTES:
            return data
        if flags == FLAG_TEXT:
            return data.decode("utf-8")
        if flags in (FLAG_INTEGER, FLAG_LONG):
            return int(data)
        return self._load_other(key, data, flags)


class JsonSerde(BasicSerde):
    """:class:`BasicSerde` plus JSON (:data:`FLAG_JSON`) for everything else json can encode."""

    __slots__ = ()

    def _other(self, key: bytes, value: Any) -> tuple[bytes, int]:
        try:
            return json.dumps(value, separators=(",", ":")).encode("utf-8"), FLAG_JSON
        except (TypeError, ValueError) as exc:
            raise TypeError(f"value for key {key!r} cannot be stored as JSON: {exc}") from None

    def _load_other(self, key: bytes, data: bytes, flags: int) -> Any:
        if flags == FLAG_JSON:
            return json.loads(data)
        return data


class PickleSerde(BasicSerde):
    """:class:`BasicSerde` plus pickle (:data:`FLAG_PICKLE`) for everything else. Trusted data only."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def _other(self, key: bytes, value: Any) -> tuple[bytes, int]:
        return pickle.dumps(value, protocol=self.protocol), FLAG_PICKLE

    def _load_other(self, key: bytes, data: bytes, flags: int) -> Any:
        if flags == FLAG_PICKLE:
            return pickle.loads(data)
        return data


_NAMED: Final[dict[str, type[RawSerde] | type[BasicSerde]]] = {
    "raw": RawSerde,
    "basic": BasicSerde,
    "json": JsonSerde,
    "pickle": PickleSerde,
}


def get_serde(spec: str | Serde | None) -> Serde:
    """The serializer for a ``serde=`` option: a name from the table above, an object, or None (raw)."""
    if spec is None:
        return RawSerde()
    if isinstance(spec, str):
        try:
            return _NAMED[spec]()
        except KeyError:
            raise ValueError(f"unknown serde {spec!r}; expected one of: {', '.join(_NAMED)}") from None
    if not isinstance(spec, Serde):
        raise TypeError("serde must be a name or an object with serialize() and deserialize()")
    return spec
