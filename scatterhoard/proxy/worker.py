"""One ``hoard proxy --workers N`` worker process (started by :mod:`.workers`, not by hand).

``python -m scatterhoard.proxy.worker SPEC``: SPEC is the JSON the parent
writes (configuration path, worker index, the report socket's fd, inherited
unix listeners, logging and stats settings); the configuration text comes on
stdin (when SPEC says so; else the file is read).  The worker serves every pool
with its own SO_REUSEPORT listeners, reports its counters to the parent at
each aggregation, and stops when told to (SIGTERM) or when the parent is gone
(the report socket reaches EOF).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from ..errors import HoardError
from .app import Proxy, ProxyOptions
from .cli import LogControl
from .config import load_config, parse_config
from .workers import inherit_unix, report_line

log = logging.getLogger("scatterhoard.proxy")


async def _serve(proxy: Proxy, report: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=report)
    proxy.options.on_aggregate = lambda p: writer.write(report_line(p))

    async def parent_gone() -> None:
        while await reader.read(4096):
            pass
        log.warning("worker: the parent process is gone; stopping")
        proxy.stop()

    watcher = asyncio.get_running_loop().create_task(parent_gone())
    try:
        await proxy.serve()
    finally:
        watcher.cancel()
        writer.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    spec = json.loads(args[0])
    index = int(spec["index"])
    logs = LogControl(int(spec["verbosity"]), spec["output"], tag=f"worker {index}: ")
    report = socket.socket(fileno=int(spec["report"]))
    options = ProxyOptions(stats_port=0, stats_interval=int(spec["interval"]), mbuf_size=int(spec["mbuf"]),
                           source=str(spec["source"]), reuseport=True,
                           inherited=inherit_unix({str(k): int(v) for k, v in spec["unix"].items()}),
                           bind_new_unix=index == 0)
    try:
        path = str(spec["conf"])
        config = parse_config(sys.stdin.read(), path) if spec["text"] else load_config(path)
        proxy = Proxy(config, options)
        proxy.bind()
    except HoardError as exc:
        log.error("%s", exc)
        return 1
    proxy.signal_handlers = {
        signal.SIGHUP: logs.reopen,
        signal.SIGTTIN: lambda: logs.change(+1),
        signal.SIGTTOU: lambda: logs.change(-1),
    }
    from ..server.app import install_event_loop_policy

    install_event_loop_policy()
    try:
        asyncio.run(_serve(proxy, report))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
