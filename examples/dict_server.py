"""Example 1: a complete memcached-compatible server over a plain dict.

Like libmemcached's ``example/interface_v0.c`` (a simple single-threaded
server that keeps items in a linked list), but the storage is all you write:
``RecordStore`` supplies memcached's semantics (add/replace/append/prepend,
CAS, incr/decr, expiry, flush_all) and ``run_server`` the rest -- memcached
text, meta and binary, RESP and distcache on every listener, ``-l -p -m -I
-c -v``, stats, and the same behaviour under ``memccapable``.

    python examples/dict_server.py -p 11311
    hoard server --engine examples.dict_server:DictEngine -p 11311   # the same engine
"""

from __future__ import annotations

from scatterhoard.engines import Item, RecordStore, run_server


class DictEngine(RecordStore):
    """Every item in one dict: key -> Item (value, flags, exptime, cas, atime)."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[bytes, Item] = {}

    def load(self, key: bytes) -> Item | None:
        return self.items.get(key)

    def save(self, key: bytes, item: Item) -> None:
        self.items[key] = item

    def remove(self, key: bytes) -> bool:
        return self.items.pop(key, None) is not None

    def clear(self) -> None:
        self.items.clear()

    def count(self) -> int:
        return len(self.items)

    def size(self) -> int:
        return sum(len(k) + len(i.value) for k, i in self.items.items())


if __name__ == "__main__":
    raise SystemExit(run_server(DictEngine(), prog="dict_server"))
