"""A first-in first-out queue for the proxy's per-request bookkeeping, compiled.

Compiled with mypyc (see :mod:`scatterhoard._build`). A client session's reply slots and a
backend connection's waiters go through one on every request. ``collections.deque`` is a
generic object to compiled code: ``q[0]``, ``q.popleft()`` and ``if q`` are each a C-API call
by name or by slot (~100-200 instructions). Here they are native calls over a list and a head
index and a tail index: a taken item's place is cleared (so it keeps nothing alive), an emptied
queue starts over at the front of the same list (no allocation per request), and a queue that
never empties drops its taken places in one move once they are the larger part of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, Generic, TypeVar, cast

from mypy_extensions import i64

T = TypeVar("T")

#: Taken items kept at most before a non-empty queue drops them (when they are half of it).
COMPACT_AFTER: Final = 64


class Fifo(Generic[T]):
    """``append`` at the tail, ``first``/``popleft`` at the head; ``len``, truth, iteration as a deque's."""

    def __init__(self) -> None:
        #: items[head:tail] are queued; a taken slot is set to None (nothing kept alive by it)
        self.items: list[T | None] = []
        self.head: i64 = 0
        self.tail: i64 = 0

    def __len__(self) -> int:
        return self.tail - self.head

    def __bool__(self) -> bool:
        return self.tail > self.head

    def __iter__(self) -> Iterator[T]:
        return iter(cast(list[T], self.items[self.head:self.tail]))

    def append(self, item: T) -> None:
        tail = self.tail
        items = self.items
        if tail < len(items):  # an emptied queue reuses its list: no allocation per request
            items[tail] = item
        else:
            items.append(item)
        self.tail = tail + 1

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.append(item)

    def first(self) -> T:
        """The head (IndexError when empty)."""
        if self.head >= self.tail:
            raise IndexError("first of an empty Fifo")
        return cast(T, self.items[self.head])

    def popleft(self) -> T:
        """Take the head (IndexError when empty)."""
        head = self.head
        tail = self.tail
        if head >= tail:
            raise IndexError("popleft from an empty Fifo")
        items = self.items
        item = items[head]
        items[head] = None
        head += 1
        if head == tail:
            self.tail = head = 0
        elif head >= COMPACT_AFTER and head * 2 >= tail:
            del items[:head]
            self.tail = tail - head
            head = 0
        self.head = head
        return cast(T, item)

    def clear(self) -> None:
        self.items.clear()
        self.head = self.tail = 0
