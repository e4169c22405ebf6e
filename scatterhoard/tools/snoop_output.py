"""Where a snooper's lines go: a writer thread, so a slow reader of its output never stalls the traffic.

``hoard snoop ... | less`` stops reading when the pager's screen is full;
a pipe then fills and a write to it blocks. Written from the event loop,
that would stop the forwarding too. :class:`BackgroundOutput` takes lines
on the loop without ever blocking, keeps up to ``limit`` bytes of them, and
a thread writes them out. Lines that do not fit are dropped and counted, and
one line says how many when the reader catches up: the traffic comes first.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import Protocol, TextIO

DEFAULT_LIMIT = 2 * 1024 * 1024  # characters of output waiting for a slow reader (~25k lines)


class Output(Protocol):
    """What a snoop printer writes to: a text stream, or :class:`BackgroundOutput`."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class BackgroundOutput:
    """A write-only text stream (``write``/``flush``) that hands its lines to a writer thread."""

    def __init__(self, out: TextIO, limit: int = DEFAULT_LIMIT) -> None:
        self.out = out
        self.limit = limit
        self._buf: list[str] = []  # written since the last flush (event loop side)
        self._queue: deque[str] = deque()
        self._queued = 0  # characters in _queue
        self._dropped = 0  # lines dropped since the last note
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="snoop-output", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines dropped and not yet reported."""
        return self._dropped

    def write(self, text: str) -> int:
        self._buf.append(text)
        return len(text)

    def flush(self) -> None:
        """Queue what was written; never blocks (drops it, counted, when the queue is full)."""
        if not self._buf:
            return
        chunk = "".join(self._buf)
        self._buf.clear()
        with self._cond:
            if self._queued + len(chunk) > self.limit:
                self._dropped += chunk.count("\n")
                return
            if self._dropped:
                note = f"[hoard snoop: {self._dropped} lines dropped: the output was read too slowly]\n"
                chunk = note + chunk
                self._dropped = 0
            self._queue.append(chunk)
            self._queued += len(chunk)
            self._cond.notify()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (waiting at most ``timeout`` seconds for the reader), then stop."""
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    break
                chunk = self._queue.popleft()
                self._queued -= len(chunk)
            try:
                self.out.write(chunk)
                self.out.flush()
            except (OSError, ValueError):  # the reader went away (closed pipe): nothing more to say
                with self._cond:
                    self._queue.clear()
                    self._queued = 0
                break
        with contextlib.suppress(OSError, ValueError):
            self.out.flush()
