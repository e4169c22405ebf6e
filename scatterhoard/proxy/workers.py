"""``hoard proxy --workers N``: N proxy processes sharing the listeners, one supervisor.

The parent (the process ``-p`` names and ``-d`` daemonizes) binds nothing it
would have to serve itself, except the stats port:

* each TCP ``listen:`` address is bound (not listened on) with SO_REUSEPORT,
  so a port in use is reported at start and the port stays reserved; every
  worker binds its own listening socket on it with SO_REUSEPORT and the
  kernel spreads new connections over the workers;
* each unix-socket listener is bound and listened on by the parent and
  inherited by every worker (one shared accept queue: unix sockets have no
  SO_REUSEPORT balancing);
* the stats port is the parent's: every worker reports its counters over a
  unix socket pair at each aggregation (``-i`` ms; every 100 ms with ``-i 0``)
  and the parent serves one JSON document with the pool and server counters
  summed over the workers (``server_ejected_at``: the latest), the header's
  connection counts summed too.

The parent restarts a worker that dies (after a 1 s pause if it lived less
than a second) and forwards signals: SIGTERM/SIGINT stop the workers then the
parent; SIGUSR1 first validates the configuration file (an invalid one is
rejected with one logged line and not forwarded) then makes every worker
reload it; SIGHUP, SIGTTIN and SIGTTOU act on the parent's log and are
forwarded.  A restarted worker gets the configuration last accepted (the text
validated at start or at the last reload, on its stdin), whatever the file
holds now.  Counters of a worker that died are lost with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from ..errors import ConfigError, HoardError
from ..service import Service
from .app import Proxy, ProxyOptions, StatsConnection, bind_listener, bind_stats, listen_key, pool_order
from .config import ProxyConfig
from .reload import one_line, validate_text
from .stats import PoolSnapshot, render

log = logging.getLogger("scatterhoard.proxy")

EJECTED_AT = 4  # index of server_ejected_at in a server's metrics: the latest, not the sum
RESTART_PAUSE = 1.0  # seconds before restarting a worker that lived less than this


def sum_snapshots(reports: list[list[PoolSnapshot]]) -> list[PoolSnapshot]:
    """Pool and server metrics added up over the workers' reports (pools and servers by name)."""
    pools: dict[str, tuple[list[int], dict[str, list[int]]]] = {}
    for report in reports:
        for name, metrics, servers in report:
            entry = pools.get(name)
            if entry is None:
                pools[name] = entry = ([0] * len(metrics), {})
            totals, by_server = entry
            for i, v in enumerate(metrics):
                totals[i] += v
            for sname, smetrics in servers:
                acc = by_server.get(sname)
                if acc is None:
                    by_server[sname] = acc = [0] * len(smetrics)
                for i, v in enumerate(smetrics):
                    acc[i] = max(acc[i], v) if i == EJECTED_AT else acc[i] + v
    names = sorted(pools, key=pool_order)
    return [(n, pools[n][0], list(pools[n][1].items())) for n in names]


class Report(asyncio.Protocol):
    """The parent's end of one worker's report channel: one JSON line per aggregation."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        if lines:
            with contextlib.suppress(ValueError):
                self.supervisor.reports[self.index] = json.loads(lines[-1])


class Worker:
    """One worker process slot: the process running in it now, and its report channel."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.channel: asyncio.BaseTransport | None = None


class Supervisor(Service):
    """The ``--workers`` parent: starts, watches and signals the workers; serves the summed stats."""

    def __init__(self, config: ProxyConfig, options: ProxyOptions, workers: int, verbosity: int,
                 output: str | None, text: str | None = None) -> None:
        self.config = config
        self.text = text  # the configuration the workers start with (None: they read the file)
        self.options = options
        self.count = workers
        self.verbosity = verbosity
        self.output = output
        self.reserved: dict[str, socket.socket] = {}  # TCP addresses, bound not listening
        self.unix: dict[str, socket.socket] = {}  # unix listeners, inherited by the workers
        self.stats_socket: socket.socket | None = None
        self.workers = [Worker(i) for i in range(workers)]
        self.reports: dict[int, dict[str, Any]] = {}
        self.start_time = time.time()
        self.stopping = False
        self.signal_handlers: dict[int, Callable[[], None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats_server: asyncio.AbstractServer | None = None

    # -- sockets -----------------------------------------------------------------------------
    def bind(self) -> None:
        try:
            for pool in self.config.pools:
                key = listen_key(pool.listen)
                try:
                    if pool.listen.is_unix:
                        self.unix[key] = bind_listener(pool.listen, pool.backlog)
                    else:
                        self.reserved[key] = bind_listener(pool.listen, 0, reuseport=True, listening=False)
                except (OSError, IndexError) as exc:
                    raise HoardError(f"pool '{pool.name}': cannot listen on {pool.listen}: "
                                     f"{getattr(exc, 'strerror', None) or exc}") from None
            self.stats_socket = bind_stats(self.options)
        except BaseException:
            self.close_sockets()
            raise

    def close_sockets(self) -> None:
        for sock in self.reserved.values():
            sock.close()
        for path, sock in self.unix.items():
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.reserved, self.unix = {}, {}
        if self.stats_socket is not None:
            self.stats_socket.close()
            self.stats_socket = None

    # -- workers -----------------------------------------------------------------------------
    async def spawn(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        opts = self.options
        spec = {"conf": self.config.path, "text": self.text is not None, "index": worker.index,
                "report": theirs.fileno(),
                "unix": {k: s.fileno() for k, s in self.unix.items()}, "verbosity": self.verbosity,
                "output": self.output, "interval": opts.stats_interval if opts.stats_interval > 0 else 100,
                "mbuf": opts.mbuf_size, "source": opts.source}
        fds = [theirs.fileno(), *(s.fileno() for s in self.unix.values())]
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "scatterhoard.proxy.worker", json.dumps(spec), pass_fds=fds,
                stdin=subprocess.PIPE)
        finally:
            theirs.close()
        stdin = worker.proc.stdin
        assert stdin is not None
        if self.text is not None:
            stdin.write(self.text.encode())
        stdin.close()
        worker.started = time.monotonic()
        worker.channel, _ = await loop.create_unix_connection(lambda: Report(self, worker.index), sock=ours)
        log.log(25, "worker %d started, pid %d", worker.index, worker.proc.pid)
        task = loop.create_task(self.watch(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def watch(self, worker: Worker) -> None:
        proc = worker.proc
        assert proc is not None
        status = await proc.wait()
        if worker.channel is not None:
            worker.channel.close()
            worker.channel = None
        self.reports.pop(worker.index, None)
        if self.stopping:
            return
        log.warning("worker %d (pid %d) exited with status %d; starting a new one", worker.index, proc.pid,
                    status)
        if time.monotonic() - worker.started < RESTART_PAUSE:
            await asyncio.sleep(RESTART_PAUSE)
        if not self.stopping:
            await self.spawn(worker)

    def signal_workers(self, sig: int) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(sig)

    def forwarding(self, sig: int, also: Callable[[], None] | None = None) -> Callable[[], None]:
        def handler() -> None:
            if also is not None:
                also()
            self.signal_workers(sig)
        return handler

    def reload(self) -> None:
        """SIGUSR1: validate the file here (one error line, not forwarded), then every worker reloads."""
        try:
            config, text = validate_text(self.config.path)
        except ConfigError as exc:
            log.error("reload rejected, the running configuration stays: %s", one_line(exc))
            return
        self.text = text
        keep = {listen_key(p.listen) for p in config.pools}
        for key in [k for k in self.reserved if k not in keep]:
            self.reserved.pop(key).close()
        self.config = config
        log.log(25, "reloading the configuration in %d worker(s)", self.count)
        self.signal_workers(signal.SIGUSR1)

    # -- running -----------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping = True  # before the workers see the signal too (a terminal's Ctrl-C) and exit
        super().stop()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.start_time = time.time()
        if self.stats_socket is not None:
            self._stats_server = await loop.create_server(lambda: StatsConnection(self.stats_document),
                                                          sock=self.stats_socket)
        for worker in self.workers:
            await self.spawn(worker)
        handlers: dict[int, Callable[[], None]] = {signal.SIGUSR1: self.reload}
        for sig, extra in self.signal_handlers.items():
            handlers[sig] = self.forwarding(sig, extra)
        await self.run_until_stopped(None, handlers)

    async def close(self) -> None:
        self.stopping = True
        if self._stats_server is not None:
            self._stats_server.close()
        self.signal_workers(signal.SIGTERM)
        for worker in self.workers:
            if worker.proc is None:
                continue
            try:
                await asyncio.wait_for(worker.proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.wait()
        for task in list(self._tasks):
            task.cancel()
        self.close_sockets()
        log.log(25, "hoard proxy stopped (%d workers)", self.count)

    def stats_document(self) -> bytes:
        reports = list(self.reports.values())
        pools = sum_snapshots([cast(list[PoolSnapshot], r["pools"]) for r in reports])
        now = time.time()
        return render(pools, uptime=int(now - self.start_time), timestamp=int(now),
                      total_connections=sum(int(r["total"]) for r in reports),
                      curr_connections=sum(int(r["curr"]) for r in reports), source=self.options.source)


def report_line(proxy: Proxy) -> bytes:
    """What a worker sends its parent at each aggregation."""
    ctx = proxy.ctx
    return json.dumps({"pools": proxy.snapshot(), "total": ctx.total_connections if ctx else 0,
                       "curr": ctx.curr_connections if ctx else 0}).encode() + b"\n"


def inherit_unix(fds: dict[str, int]) -> dict[str, socket.socket]:
    return {key: socket.socket(fileno=fd) for key, fd in fds.items()}
