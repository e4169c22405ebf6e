"""``dc_snoop``: a transparent distcache proxy that prints every message both ways.

A thin front on the general snoop engine
(:class:`scatterhoard.tools.snoop.SnoopProxy`, also behind ``hoard snoop``):
the engine forwards bytes exactly as received, the moment they arrive, with
end-to-end flow control; this module's tap decodes a copy with the distcache
codec and prints every message with
:func:`~scatterhoard.protocol.distcache.describe` (direction, uid, operation,
lengths, result), its frames, and for a response the time since its request.
Traffic the codec refuses is reported once and still forwarded.
"""

from __future__ import annotations

import contextlib
import sys
import time

from ..address import Address
from ..protocol import distcache as dc
from ..tools.snoop import SnoopProxy
from ..tools.snoop_output import Output


def frame_lengths(payload_len: int) -> list[int]:
    """The data_len of every frame of a message (non-final frames carry exactly 2048)."""
    if payload_len == 0:
        return [0]
    full, rest = divmod(payload_len, dc.MAX_FRAME_DATA)
    return [dc.MAX_FRAME_DATA] * full + ([rest] if rest else [])


class Printer:
    """Formats snoop lines; ``out`` is flushed after every batch."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.started = time.monotonic()

    def line(self, conn: int, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.started:10.6f}] conn {conn} {text}\n")

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.out.flush()


class DistcacheTap:
    """Decodes one snooped connection as distcache and prints each message."""

    def __init__(self, conn: int, printer: Printer) -> None:
        self.id = conn
        self.printer = printer
        self.parsers = {True: dc.DistcacheParser("server"), False: dc.DistcacheParser("client")}
        self.broken: dict[bool, bool] = {True: False, False: False}
        self.sent_at: dict[int, float] = {}

    def opened(self, peer: str) -> None:
        self.printer.line(self.id, f"open from {peer}")

    def connect_failed(self, reason: str) -> None:
        self.printer.line(self.id, reason)
        self.printer.flush()

    def client_data(self, data: bytes) -> None:
        self._decode(True, data)

    def server_data(self, data: bytes) -> None:
        self._decode(False, data)

    def closed(self, by: str) -> None:
        self.printer.line(self.id, f"closed by the {by}")
        self.printer.flush()

    def _decode(self, from_client: bool, data: bytes) -> None:
        if self.broken[from_client]:
            return
        printer = self.printer
        direction = "client->server" if from_client else "server->client"
        try:
            messages = self.parsers[from_client].feed(data)
        except dc.FramingError as exc:
            self._show(direction, exc.messages)
            printer.line(self.id, f"{direction} not distcache any more ({exc.reason}); "
                                  "forwarding without decoding")
            self.broken[from_client] = True
            printer.flush()
            return
        if messages:
            self._show(direction, messages)
            printer.flush()

    def _show(self, direction: str, messages: list[dc.Message]) -> None:
        now = time.monotonic()
        for m in messages:
            lens = frame_lengths(len(m.payload))
            frames = f"frames={len(lens)}" + (f" ({'+'.join(map(str, lens))})" if len(lens) > 1 else "")
            timing = ""
            if m.is_response:
                sent = self.sent_at.pop(m.uid, None)
                if sent is not None:
                    timing = f" {(now - sent) * 1000:.3f} ms"
            else:
                self.sent_at[m.uid] = now
            wire = len(m.payload) + dc.HEADER_SIZE * len(lens)
            self.printer.line(self.id, f"{direction} {dc.describe(m)} {frames} bytes={wire}{timing}")


class Snoop(SnoopProxy):
    """The dc_snoop engine: accept, connect a twin to ``server``, print both directions."""

    def __init__(self, server: Address, out: Output | None = None) -> None:
        self.printer = Printer(out if out is not None else sys.stdout)
        super().__init__(server, lambda conn: DistcacheTap(conn, self.printer))
