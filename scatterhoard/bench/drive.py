"""The per-request work of a ``hoard bench`` connection, compiled (see :mod:`scatterhoard._build`).

A load generator written in Python spends most of its time on its own
bookkeeping, and a generator slower than the server measures itself. The
event loop in :mod:`.engine` stays in Python and runs once per read; what it
does for every single request (take the next pre-built request, tell the
codec, stamp its send time; parse its reply, count it, record its latency)
happens here, in native code.
"""

from __future__ import annotations

from collections import deque

from .codecs import Codec, Meta
from .histogram import Histogram


class Flow:
    """One connection's requests: the pool they come from and the ones in flight."""

    def __init__(self, codec: Codec, pool: list[tuple[bytes, Meta]]) -> None:
        self.codec = codec
        self.requests = [data for data, _ in pool]
        self.metas = [meta for _, meta in pool]
        self.next = 0
        #: intended send time of every request in flight, ns, oldest first
        self.times: deque[int] = deque()
        self.errors = 0  # error replies seen on this connection, all the run

    def batch(self, n: int) -> bytes:
        """The next ``n`` requests of the pool as one write; the codec learns each is sent.
        The caller stamps their times in :attr:`times`."""
        requests, metas, sent = self.requests, self.metas, self.codec.sent
        size = len(requests)
        j = self.next
        parts: list[bytes] = []
        for _ in range(n):
            sent(metas[j])
            parts.append(requests[j])
            j += 1
            if j == size:
                j = 0
        self.next = j
        return b"".join(parts)  # one part: join returns it as is

    def settle(self, data: bytes, now: int, hist: Histogram, counts: list[list[int]]) -> int:
        """Account for the replies in ``data``: latency of each completed request into ``hist``,
        (requests, hits, misses, errors) per operation kind into ``counts``. Returns how many completed."""
        outcomes = self.codec.feed(data)
        times = self.times
        errors = 0
        for kind, h, m, e in outcomes:
            hist.record(now - times.popleft())
            cnt = counts[kind]
            cnt[0] += 1
            cnt[1] += h
            cnt[2] += m
            cnt[3] += e
            errors += e
        self.errors += errors
        return len(outcomes)
