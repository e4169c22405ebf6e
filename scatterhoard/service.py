"""The run-until-signalled lifecycle every long-running hoard command shares."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable


class Service:
    """Base of servers and proxies: wait for :meth:`stop` or SIGTERM/SIGINT, then :meth:`close`."""

    _stopping: asyncio.Event | None = None

    async def run_until_stopped(self, ready: Callable[[], None] | None = None) -> None:
        """Install the signal handlers, call ``ready``, wait for a stop, close gracefully."""
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        if ready is not None:
            ready()
        await self._stopping.wait()
        await self.close()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def close(self) -> None:
        """Stop listening and release resources (subclasses extend)."""
