"""The memcached side of the proxy engine: text and meta reply framing, the ``version`` probe.

Replies are split without parsing more than needed: a line, or ``VALUE``
blocks up to ``END`` (sizes from the ``VALUE`` lines), or a meta reply (a
``VA`` carries a data block).  What to expect is the waiter's ``kind``
(:data:`~.backend.LINE`, :data:`~.backend.META`, ...); a quiet meta request
is followed by ``mn`` and its waiter by :data:`~.backend.DISCARD_MN`.
"""

from __future__ import annotations

from mypy_extensions import i64

from ..errors import ProtocolError
from ..fifo import Fifo
from ..protocol.text import at, find_crlf
from .backend import LINE, QUIET, VALUES, Dialect, ReplyFramer, Waiter
from .binary_backend import BinaryDialect


def _number_before(data: bytes, lo: i64, stop: i64) -> tuple[int, int]:
    """The decimal number that ends at ``data[stop - 1]`` after a space past ``lo``, read backwards
    in place: (value, index of that space); value -1 when there is none."""
    i: i64 = stop
    n = 0
    scale = 1
    while i > lo:
        c = data[i - 1]
        if c == 32:
            break
        if c < 48 or c > 57:
            return -1, i
        n += (c - 48) * scale
        scale *= 10
        i -= 1
    if i == stop or i <= lo:
        return -1, i
    return n, i - 1


class MemcachedFramer(ReplyFramer):
    """Memcached text and meta replies (the waiter's ``kind`` says what to expect)."""

    __slots__ = ("scan",)

    def __init__(self) -> None:
        self.scan = 0  # how far into the first incomplete reply its VALUE blocks were already walked

    def split(self, data: bytes, expect: Fifo[Waiter]) -> tuple[int, int, int]:
        n = len(data)
        pos = 0
        count = 0
        need = 0  # bytes the incomplete reply at pos needs at least, counted from pos
        scan = self.scan
        while expect:
            waiter = expect.first()
            kind = waiter.kind
            if kind >= VALUES:
                p = pos + scan
                while True:
                    if at(data, p, b"VALUE "):
                        eol = find_crlf(data, p, n)
                        if eol < 0:
                            need = n - pos + 1
                            break
                        size, sp = _number_before(data, p, eol)
                        if kind != VALUES:  # gets: the size comes before the cas
                            size, sp = _number_before(data, p, sp) if size >= 0 else (-1, sp)
                        if size < 0:
                            raise ProtocolError(f"bad VALUE line {data[p:eol][:80]!r}")
                        p = eol + size + 4
                        if p > n:
                            need = p - pos
                            break
                        if at(data, p, b"END\r\n"):  # the usual last (or only) value
                            end = p + 5
                            break
                        continue
                    if at(data, p, b"END\r\n"):
                        end = p + 5
                        break
                    eol = find_crlf(data, p, n)
                    if eol < 0:
                        need = n - pos + 1
                    elif p != pos:
                        raise ProtocolError(f"unexpected line after VALUE blocks: {data[p:eol][:80]!r}")
                    else:
                        end = eol + 2
                    break
                if need:
                    scan = p - pos
                    break
                scan = 0
            else:
                eol = find_crlf(data, pos, n)
                if eol < 0:
                    need = n - pos + 1
                    break
                end = eol + 2
                if kind != LINE:
                    if data.startswith(b"VA ", pos):
                        try:
                            size = int(data[pos + 3:eol].split(b" ", 1)[0])
                        except ValueError:
                            raise ProtocolError(f"bad meta VA line {data[pos:eol][:80]!r}") from None
                        end = eol + size + 4
                        if end > n:
                            need = end - pos
                            break
                    elif kind == QUIET and eol == pos + 2 and data.startswith(b"MN", pos):
                        expect.popleft()  # no reply: the MN answers the mn after it
                        expect.popleft()
                        count += 2
                        pos = end
                        waiter.complete(b"")
                        continue
            expect.popleft()
            count += 1
            waiter.complete(data[pos:end])
            pos = end
        self.scan = scan
        return count, pos, need


class MemcachedDialect(Dialect):
    """Memcached ASCII and meta: ``version`` is the probe; the ``"binary"`` variant is binary clients'."""

    __slots__ = ()

    def probe_request(self) -> bytes:
        return b"version\r\n"

    def framer(self) -> ReplyFramer:
        return MemcachedFramer()

    def variant(self, name: str) -> Dialect:
        if name != "binary":
            return super().variant(name)
        return BinaryDialect()

    def probe_ok(self, raw: bytes) -> bool:
        return raw.startswith(b"VERSION ")
