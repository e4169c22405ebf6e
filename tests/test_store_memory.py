"""The memory engine: eviction order (oldest first, but a fetched item gets a second chance) and the
reply an item keeps after a text get."""

from __future__ import annotations

from scatterhoard.store import MemoryStore, Mode
from scatterhoard.store.memory import ITEM_OVERHEAD


def _fill(store: MemoryStore, keys: range) -> None:
    for i in keys:
        store.store(Mode.SET, b"k%03d" % i, b"v" * 100)


def test_unfetched_items_go_oldest_first() -> None:
    per_item = 4 + 100 + ITEM_OVERHEAD
    store = MemoryStore(limit_bytes=10 * per_item)
    _fill(store, range(15))
    assert [i for i in range(15) if store.get(b"k%03d" % i, bump=False) is not None] == list(range(5, 15))
    assert store.evictions == 5 and store.evicted_unfetched == 5


def test_a_fetched_item_survives_the_next_evictions() -> None:
    per_item = 4 + 100 + ITEM_OVERHEAD
    store = MemoryStore(limit_bytes=10 * per_item)
    _fill(store, range(10))
    assert store.get(b"k000") is not None  # the oldest, fetched: it is kept when its turn comes
    _fill(store, range(10, 13))
    alive = [i for i in range(13) if store.get(b"k%03d" % i, bump=False) is not None]
    assert alive == [0, *range(4, 13)]
    assert store.evictions == 3 and store.evicted_unfetched == 3
    # it went back in behind k010 (stored just before the eviction that spared it); its second
    # chance used up, it goes right after the seven older ones
    _fill(store, range(13, 20))
    assert store.get(b"k000", bump=False) is not None
    _fill(store, range(20, 21))
    assert store.get(b"k000", bump=False) is None


def test_an_expired_fetched_item_is_not_kept() -> None:
    per_item = 4 + 100 + ITEM_OVERHEAD
    store = MemoryStore(limit_bytes=3 * per_item)
    store.store(Mode.SET, b"k000", b"v" * 100, exptime=1.0)  # an absolute time long past: expired
    item = store._data[b"k000"]
    item.active = True
    _fill(store, range(1, 4))
    assert store.get(b"k000", bump=False) is None and store.reclaimed == 1


def test_an_item_keeps_its_text_reply_in_place_of_its_value() -> None:
    store = MemoryStore()
    store.store(Mode.SET, b"k", b"hello", 7)
    used = store.used
    item = store.get(b"k")
    assert item is not None and item.reply is None
    reply = item.text_reply(b"k")
    assert reply == b"VALUE k 7 5\r\nhello\r\nEND\r\n"
    assert item.text_reply(b"k") is reply  # built once, then written as is
    assert item.value == b"hello" and item.nbytes == 5 and store.used == used
    store.store(Mode.APPEND, b"k", b"!")  # a new item, from the value sliced out of the reply
    fresh = store.get(b"k")
    assert fresh is not None and fresh.value == b"hello!" and fresh.flags == 7 and fresh.reply is None
    assert fresh.text_reply(b"k") == b"VALUE k 7 6\r\nhello!\r\nEND\r\n"
    assert store.used == used + 1
    fresh.value = b"xy"  # assigning the value drops the reply
    assert fresh.reply is None and fresh.nbytes == 2 and fresh.value == b"xy"
    assert fresh.text_reply(b"k") == b"VALUE k 7 2\r\nxy\r\nEND\r\n"
    store.store(Mode.SET, b"e", b"")
    item = store.get(b"e")
    assert item is not None
    assert item.text_reply(b"e") == b"VALUE e 0 0\r\n\r\nEND\r\n" and item.value == b""
