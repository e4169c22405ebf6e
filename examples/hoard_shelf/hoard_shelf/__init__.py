"""Example 3: an engine shipped in a separate package (entry point ``shelf``).

One file per item in a directory. It declares itself ``blocking`` (file I/O:
the server runs it in worker threads) and, to show how a missing capability
is answered, it supports neither CAS nor append/prepend: ``cas`` gets
``SERVER_ERROR``, binary APPEND status 0x83, RESP APPEND ``-ERR``; ``gets``
and the other CAS fields read 0, as memcached's do when run with ``-C``.
"""

from __future__ import annotations

import hashlib
import os
import struct

from scatterhoard.engines import EngineConfig, Item, RecordStore
from scatterhoard.errors import ConfigError

_HEADER = struct.Struct("<IdQdH")  # flags, exptime, cas, atime, key length


class ShelfEngine(RecordStore):
    """Items as files under ``dir`` (named by the key's sha1)."""

    blocking = True
    capabilities = frozenset({"arith", "touch", "flush"})

    def __init__(self, dir: str) -> None:  # noqa: A002 - the option's name
        super().__init__()
        self.dir = dir
        os.makedirs(dir, exist_ok=True)

    @classmethod
    def from_config(cls, config: EngineConfig) -> ShelfEngine:
        if set(config.options) != {"dir"}:
            raise ConfigError("shelf engine: give exactly one option, dir=DIRECTORY")
        return cls(config.options["dir"])

    def _path(self, key: bytes) -> str:
        return os.path.join(self.dir, hashlib.sha1(key).hexdigest())

    def load(self, key: bytes) -> Item | None:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        flags, exptime, cas, atime, klen = _HEADER.unpack_from(data)
        start = _HEADER.size + klen
        if data[_HEADER.size:start] != key:
            return None
        return Item(data[start:], flags, exptime, cas, atime)

    def save(self, key: bytes, item: Item) -> None:
        path = self._path(key)
        with open(path + ".tmp", "wb") as f:
            f.write(_HEADER.pack(item.flags, item.exptime, item.cas, item.atime, len(key)) + key + item.value)
        os.replace(path + ".tmp", path)

    def remove(self, key: bytes) -> bool:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            return False
        return True

    def clear(self) -> None:
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))

    def count(self) -> int:
        return len(os.listdir(self.dir))
