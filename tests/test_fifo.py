"""The proxy's compiled FIFO behaves as a deque under any sequence of operations."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scatterhoard.fifo import COMPACT_AFTER, Fifo


@given(st.lists(st.one_of(st.just("pop"), st.just("clear"), st.integers(1, 3)), max_size=400))
def test_fifo_matches_deque(ops: list[object]) -> None:
    fifo: Fifo[int] = Fifo()
    ref: deque[int] = deque()
    n = 0
    for op in ops:
        if op == "pop":
            if ref:
                assert fifo.first() == ref[0]
                assert fifo.popleft() == ref.popleft()
            else:
                with pytest.raises(IndexError):
                    fifo.popleft()
                with pytest.raises(IndexError):
                    fifo.first()
        elif op == "clear":
            fifo.clear()
            ref.clear()
        else:
            assert isinstance(op, int)
            batch = list(range(n, n + op))
            n += op
            if op == 1:
                fifo.append(batch[0])
            else:
                fifo.extend(batch)
            ref.extend(batch)
        assert len(fifo) == len(ref) and bool(fifo) == bool(ref) and list(fifo) == list(ref)
        assert fifo.head < COMPACT_AFTER or fifo.head * 2 < fifo.tail  # taken places stay bounded
        assert all(x is None for x in fifo.items[:fifo.head])  # and keep nothing alive


def test_taken_items_are_dropped_while_the_queue_never_empties() -> None:
    fifo: Fifo[int] = Fifo()
    fifo.append(0)
    for i in range(1, 10_000):
        fifo.append(i)
        assert fifo.popleft() == i - 1
    assert len(fifo) == 1 and len(fifo.items) <= 2 * COMPACT_AFTER
