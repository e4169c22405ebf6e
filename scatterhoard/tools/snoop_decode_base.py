"""Sans-IO decoding for ``hoard snoop``: what every protocol's decoder shares.

The items (:class:`Request`, :class:`Reply`, :class:`Exchange`), the
formatting helpers, :class:`Decoder` (which pairs requests with replies; its
subclasses, one per protocol in ``snoop_decode_*.py``, decode) and
:class:`SizedFeeder`, which measures the wire size of what a line-based parser
returns.  Everything public is re-exported by :mod:`.snoop_decode`.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Largest value the text decoder buffers to show; bigger ones are skipped, not decoded.
MAX_DECODED_VALUE = 64 * 1024 * 1024


class DecodeError(Exception):
    """The bytes are not (or no longer) the protocol: stop decoding this connection."""


@dataclass
class Request:
    command: str  # as shown and filtered: "get", "mg", "SETQ", "HGET", "ADD"
    keys: list[bytes]
    text: str  # one-line summary, values cut
    size: int  # bytes on the wire
    at: float = 0.0  # monotonic time of arrival of its last byte
    wall: float = 0.0  # the same, as a unix time
    expects_reply: bool = True  # False: noreply, quit, QUITQ
    quiet: bool = False  # a reply may or may not come (meta q, binary quiet opcodes)
    aliases: tuple[str, ...] = ()  # other names the --command filter matches (GETQ: GET)
    tag: object = None  # what pairs it with its reply (opaque, uid, O token...)


@dataclass
class Reply:
    text: str
    size: int
    status: str  # a short word for machines: STORED, HIT, MISS, HD, OK, ERROR...
    at: float = 0.0
    tag: object = None
    push: bool = False  # RESP3 out-of-band data: answers no request


@dataclass
class Exchange:
    request: Request | None
    reply: Reply | None
    note: str = ""  # why one side is missing: "noreply", "quiet", "unsolicited", "closed"...

    @property
    def latency(self) -> float | None:
        if self.request is None or self.reply is None:
            return None
        return max(0.0, self.reply.at - self.request.at)


# -- formatting helpers ---------------------------------------------------------------------------

PRINTABLE = re.compile(rb"[\x21-\x7e]*")


def show_key(key: bytes) -> str:
    """A key as text: itself when printable ASCII, else its bytes repr."""
    if PRINTABLE.fullmatch(key):
        return key.decode("ascii")
    return repr(key)


def show_value(value: bytes, limit: int) -> str:
    """A value cut at ``limit`` bytes (``limit`` 0: only its size)."""
    if limit <= 0:
        return f"{len(value)}B"
    text = repr(bytes(value[:limit]))[1:]
    if len(value) > limit:
        text += f"...(+{len(value) - limit}B)"
    return text


class Decoder:
    """Pairs requests and replies of one connection; subclasses decode one protocol."""

    protocol = "?"

    def __init__(self, values: int = 32) -> None:
        self.values = values
        self.pending: deque[Request] = deque()

    # The caller's interface.
    def client(self, data: bytes, at: float, wall: float) -> list[Exchange]:
        out: list[Exchange] = []
        for req in self._requests(data):
            req.at, req.wall = at, wall
            self.pending.append(req)  # noreply ones too: printed in order, once those before are done
            out.extend(self._drain())
        return out

    def server(self, data: bytes, at: float) -> list[Exchange]:
        out: list[Exchange] = []
        for rep in self._replies(data):
            rep.at = at
            out.extend(self._pair(rep))
        return out

    def close(self) -> list[Exchange]:
        """The requests still waiting when the connection ended."""
        out = [Exchange(r, None, "noreply" if not r.expects_reply else "quiet" if r.quiet else "closed")
               for r in self.pending]
        self.pending.clear()
        return out

    # What subclasses provide.
    def _requests(self, data: bytes) -> list[Request]:
        raise NotImplementedError

    def _replies(self, data: bytes) -> list[Reply]:
        raise NotImplementedError

    def _score(self, req: Request, rep: Reply) -> int:
        """How well ``rep`` fits ``req``: 0 it cannot be its reply, 1 it can, 2 it carries its tag."""
        return 1

    def _drain(self) -> list[Exchange]:
        """The requests at the head of the queue that get no reply."""
        out = []
        while self.pending and not self.pending[0].expects_reply:
            out.append(Exchange(self.pending.popleft(), None, "noreply"))
        return out

    def _pair(self, rep: Reply) -> list[Exchange]:
        """Pair ``rep`` with the request it answers.

        Replies come in request order, but quiet requests may get none.  The
        reply goes to the first request whose tag it carries (meta O/k,
        binary opcode and opaque); else to the first request that must be
        answered (not quiet) if it fits, else to the first quiet one it fits.
        The quiet requests skipped on the way got no reply.
        """
        if rep.push:
            return [Exchange(None, rep, "push")]
        found = quiet_fit = -1
        for i, req in enumerate(self.pending):
            if not req.expects_reply:
                continue
            score = self._score(req, rep)
            if score == 2:
                found = i
                break
            if req.quiet:
                if score and quiet_fit < 0:
                    quiet_fit = i
                continue
            found = i if score or quiet_fit < 0 else quiet_fit
            break
        else:
            found = quiet_fit
        if found < 0:
            return [Exchange(None, rep, "unsolicited")]
        out = []
        for _ in range(found):  # quiet requests the server did not answer (and noreply ones)
            skipped = self.pending.popleft()
            out.append(Exchange(skipped, None, "quiet" if skipped.expects_reply else "noreply"))
        out.append(Exchange(self.pending.popleft(), rep))
        out.extend(self._drain())
        return out


class SizedFeeder:
    """Feeds a line-based parser so that every item's wire size (and first bytes) are known.

    The data is cut after each newline: every item of these protocols ends
    with a newline, so at most one item completes per piece, and its size is
    what the parser consumed since the previous item.
    """

    HEAD = 200

    def __init__(self, feed: Callable[[bytes], Sequence[object]], buffered: Callable[[], int]) -> None:
        self._feed = feed
        self._buffered = buffered
        self.fed = 0
        self.consumed = 0
        self.head = bytearray()  # the first bytes of the item being received

    def feed(self, data: bytes) -> list[tuple[object, int, bytes]]:
        out: list[tuple[object, int, bytes]] = []
        start = 0
        end = len(data)
        while start < end:
            nl = data.find(b"\n", start)
            stop = end if nl < 0 else nl + 1
            piece = data[start:stop]
            if len(self.head) < self.HEAD:
                self.head += piece[:self.HEAD - len(self.head)]
            items = self._feed(piece)
            self.fed += stop - start
            if items:
                consumed = self.fed - self._buffered()
                size = consumed - self.consumed
                self.consumed = consumed
                head = bytes(self.head)
                out.extend((item, size if i == 0 else 0, head) for i, item in enumerate(items))
                self.head.clear()
            start = stop
        return out
