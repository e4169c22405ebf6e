"""The proxy's counters and nutcracker's stats formats.

nutcracker serves one JSON object per connection on its stats port (``-s``,
``-a``), built from counters aggregated every ``-i`` milliseconds::

    {"service":"nutcracker", "source":"host", "version":"0.5.0", "uptime":5,
     "timestamp":1700000000, "total_connections":5, "curr_connections":3,
     "alpha": {"client_eof":0, ..., "fragments":0,
               "127.0.0.1:11212": {"server_eof":0, ..., "out_queue_bytes":0}}}

:func:`render` writes exactly that layout (spacing included, so scripts that
grep it keep working); the header's uptime, timestamp and connection counts
are live, the pool and server metrics those of the last aggregation, as in
nutcracker.  Pools come sorted by name (length first, as twemproxy sorts
them), servers in twemproxy's pool order.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import __version__

if TYPE_CHECKING:
    from .pool import Pool

__all__ = [
    "POOL_METRICS",
    "SERVER_METRICS",
    "SERVICE",
    "VERSION",
    "PoolCounters",
    "ServerCounters",
    "describe",
    "render",
    "stats_rows",
    "stats_text",
]

SERVICE = "nutcracker"
VERSION = f"0.5.0-scatterhoard-{__version__}"

#: (name, kind, description) exactly as ``nutcracker -D`` prints them.
POOL_METRICS: tuple[tuple[str, str, str], ...] = (
    ("client_eof", "counter", "# eof on client connections"),
    ("client_err", "counter", "# errors on client connections"),
    ("client_connections", "gauge", "# active client connections"),
    ("server_ejects", "counter", "# times backend server was ejected"),
    ("forward_error", "counter", "# times we encountered a forwarding error"),
    ("fragments", "counter", "# fragments created from a multi-vector request"),
)
SERVER_METRICS: tuple[tuple[str, str, str], ...] = (
    ("server_eof", "counter", "# eof on server connections"),
    ("server_err", "counter", "# errors on server connections"),
    ("server_timedout", "counter", "# timeouts on server connections"),
    ("server_connections", "gauge", "# active server connections"),
    ("server_ejected_at", "timestamp", "timestamp when server was ejected in usec since epoch"),
    ("requests", "counter", "# requests"),
    ("request_bytes", "counter", "total request bytes"),
    ("responses", "counter", "# responses"),
    ("response_bytes", "counter", "total response bytes"),
    ("in_queue", "gauge", "# requests in incoming queue"),
    ("in_queue_bytes", "gauge", "current request bytes in incoming queue"),
    ("out_queue", "gauge", "# requests in outgoing queue"),
    ("out_queue_bytes", "gauge", "current request bytes in outgoing queue"),
)


class PoolCounters:
    """Per-pool counters (the gauge ``client_connections`` is kept live)."""

    __slots__ = ("client_eof", "client_err", "client_connections", "server_ejects", "forward_error",
                 "fragments")

    def __init__(self) -> None:
        self.client_eof = 0
        self.client_err = 0
        self.client_connections = 0
        self.server_ejects = 0
        self.forward_error = 0
        self.fragments = 0

    def values(self) -> list[int]:
        return [self.client_eof, self.client_err, self.client_connections, self.server_ejects,
                self.forward_error, self.fragments]


class ServerCounters:
    """Per-server counters; the queue gauges are computed from the connections at aggregation."""

    __slots__ = ("server_eof", "server_err", "server_timedout", "server_connections", "server_ejected_at",
                 "requests", "request_bytes", "responses", "response_bytes")

    def __init__(self) -> None:
        self.server_eof = 0
        self.server_err = 0
        self.server_timedout = 0
        self.server_connections = 0
        self.server_ejected_at = 0  # usec since the epoch
        self.requests = 0
        self.request_bytes = 0
        self.responses = 0
        self.response_bytes = 0

    def values(self, in_queue: int, in_queue_bytes: int, out_queue: int, out_queue_bytes: int) -> list[int]:
        return [self.server_eof, self.server_err, self.server_timedout, self.server_connections,
                self.server_ejected_at, self.requests, self.request_bytes, self.responses,
                self.response_bytes, in_queue, in_queue_bytes, out_queue, out_queue_bytes]


def describe() -> str:
    """What ``-D`` prints after the version line: every pool and server metric with its meaning."""
    lines = ["pool stats:"]
    lines += [f"  {name:<20}\"{desc}\"" for name, _, desc in POOL_METRICS]
    lines += ["", "server stats:"]
    lines += [f"  {name:<20}\"{desc}\"" for name, _, desc in SERVER_METRICS]
    return "\n".join(lines) + "\n"


PoolSnapshot = tuple[str, Sequence[int], Sequence[tuple[str, Sequence[int]]]]


def _key(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


def render(pools: Sequence[PoolSnapshot], *, uptime: int, timestamp: int, total_connections: int,
           curr_connections: int, source: str | None = None) -> bytes:
    """One stats document in nutcracker's exact layout, newline-terminated."""
    host = _key(source if source is not None else socket.gethostname())
    out = [f'{{"service":"{SERVICE}", "source":{host}, "version":"{VERSION}", "uptime":{uptime}, '
           f'"timestamp":{timestamp}, "total_connections":{total_connections}, '
           f'"curr_connections":{curr_connections}, ']
    pool_names = [m[0] for m in POOL_METRICS]
    server_names = [m[0] for m in SERVER_METRICS]
    for name, metrics, servers in pools:
        out.append(f"{_key(name)}: {{")
        out.append("".join(f'"{k}":{v}, ' for k, v in zip(pool_names, metrics, strict=True)))
        for sname, smetrics in servers:
            body = ", ".join(f'"{k}":{v}' for k, v in zip(server_names, smetrics, strict=True))
            out.append(f"{_key(sname)}: {{{body}}},")
        text = out[-1]
        # nutcracker's stats_end_nesting(): "..., " -> "...}," and "...}," -> "...}},"
        out[-1] = text[:-2] + "}," if text.endswith(", ") else text[:-1] + "},"
    text = "".join(out)
    return (text[:-2] + "}\n" if text.endswith(", ") else text[:-1] + "}\n").encode()


def stats_rows(pool: Pool) -> list[tuple[str, object]]:
    """What ``stats`` through the proxy reports (text and binary): the proxy's own counters, live."""
    ctx = pool.ctx
    now = time.time()
    rows: list[tuple[str, object]] = [
        ("pid", os.getpid()),
        ("uptime", int(now - ctx.start_time)),
        ("time", int(now)),
        ("version", VERSION),
        ("curr_connections", ctx.curr_connections),
        ("total_connections", ctx.total_connections),
        ("pool", pool.name),
    ]
    rows += zip([m[0] for m in POOL_METRICS], pool.stats.values(), strict=True)
    names = [m[0] for m in SERVER_METRICS]
    for i in pool.order:
        server = pool.servers[i]
        rows.append((f"server:{server.name}:live", int(not server.ejected)))
        rows += ((f"server:{server.name}:{k}", v)
                 for k, v in zip(names, server.stats.values(*server.queues()), strict=True))
    return rows


def stats_text(pool: Pool) -> bytes:
    """The answer to the text ``stats`` through the proxy."""
    return b"".join(b"STAT %s %s\r\n" % (k.encode(), str(v).encode()) for k, v in stats_rows(pool)) + b"END\r\n"
