"""The run-until-signalled lifecycle every long-running hoard command shares."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
from collections.abc import Callable

from .errors import HoardError


class Service:
    """Base of servers and proxies: wait for :meth:`stop` or SIGTERM/SIGINT, then :meth:`close`."""

    _stopping: asyncio.Event | None = None

    async def run_until_stopped(self, ready: Callable[[], None] | None = None,
                                signals: dict[int, Callable[[], None]] | None = None) -> None:
        """Install the signal handlers (SIGTERM/SIGINT stop; ``signals`` adds or overrides),
        call ``ready``, wait for a stop, close gracefully."""
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        handlers: dict[int, Callable[[], None]] = {signal.SIGTERM: self.stop, signal.SIGINT: self.stop,
                                                   **(signals or {})}
        for sig, handler in handlers.items():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, handler)
        if ready is not None:
            ready()
        await self._stopping.wait()
        await self.close()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def close(self) -> None:
        """Stop listening and release resources (subclasses extend)."""


def unlink_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on any more (libnal does the same)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise HoardError(f"cannot listen on unix:{path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise HoardError(f"cannot listen on unix:{path}: another process is listening there")
    finally:
        probe.close()
