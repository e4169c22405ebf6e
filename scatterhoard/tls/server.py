"""asyncio TLS servers on :class:`TLSConnection`: the library API.

Wrap any asyncio protocol::

    ctx = TLSContext("cert.pem", "key.pem", session_store=store)
    server = await start_tls_server(lambda: MyProtocol(), ctx, "0.0.0.0:443")

or use streams::

    async def handle(reader, writer): ...
    server = await start_stream_server(handle, ctx, "0.0.0.0:443")

The application protocol sees a :class:`TLSTransport` once the handshake has
completed; ``transport.get_extra_info("tls")`` is the :class:`TLSConnection`
(``version``, ``cipher``, ``session_reused``, ``alpn_protocol``,
``server_name``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from ..address import Address
from ..distcache.net import listen_socket, serve_socket, to_address
from ..errors import TLSError, TLSHandshakeError
from .connection import Handshake, TLSConnection
from .context import TLSContext

log = logging.getLogger("scatterhoard.tls")

__all__ = ["TLSServerProtocol", "TLSStats", "TLSTransport", "start_stream_server", "start_tls_server"]


@dataclass
class TLSStats:
    """Counters shared by the connections of one server."""

    connections: int = 0
    handshakes_full: int = 0
    handshakes_resumed: int = 0
    handshakes_failed: int = 0
    lookups: int = 0


class TLSTransport(asyncio.Transport):
    """What the application protocol writes to: plaintext in, TLS records out."""

    def __init__(self, owner: TLSServerProtocol) -> None:
        super().__init__()
        self._owner = owner
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("tls", "ssl_object"):
            return self._owner.conn
        if name == "sslcontext":
            return self._owner.context
        raw = self._owner.transport
        return default if raw is None else raw.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self._owner.send(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self._closing or self._owner.transport is None or self._owner.transport.is_closing()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._owner.close_tls()

    def abort(self) -> None:
        self._closing = True
        if self._owner.transport is not None:
            self._owner.transport.abort()

    def pause_reading(self) -> None:
        if self._owner.transport is not None:
            self._owner.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._owner.transport is not None:
            self._owner.transport.resume_reading()

    def is_reading(self) -> bool:
        return self._owner.transport is not None and self._owner.transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._owner.transport is not None:
            self._owner.transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return 0 if self._owner.transport is None else self._owner.transport.get_write_buffer_size()


class TLSServerProtocol(asyncio.Protocol):
    """The TLS side of one accepted connection; the application protocol sits on top."""

    def __init__(self, context: TLSContext, app_factory: Callable[[], asyncio.BaseProtocol],
                 stats: TLSStats | None = None, handshake_timeout: float = 30.0) -> None:
        self.context = context
        self.app_factory = app_factory
        self.app: asyncio.Protocol | None = None
        self.stats = stats if stats is not None else TLSStats()
        self.handshake_timeout = handshake_timeout
        self.transport: asyncio.Transport | None = None
        self.conn: TLSConnection | None = None
        self._app_transport = TLSTransport(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lookup: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._app_paused = False
        self._held: asyncio.TimerHandle | None = None  # output held until a new session is stored
        self._held_writes = 0  # cache writes the held output still waits for
        self._close_when_released = False

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.stats.connections += 1
        try:
            self.conn = TLSConnection(self.context)
        except TLSError as exc:
            log.error("tls: cannot start a connection: %s", exc)
            self.transport.abort()
            return
        self._loop = loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.handshake_timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            conn.feed(data)
        except TLSError as exc:
            self._fail(exc)
            return
        if not conn.handshake_done:
            if self._lookup is None:
                self._step()
        else:
            self._deliver()

    def eof_received(self) -> bool | None:
        # The peer closed its side without close_notify (or after it): finish.
        if self.app is not None and self.conn is not None and self.conn.handshake_done:
            self._deliver()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._lookup is not None:
            self._lookup.cancel()
        if self._held is not None:
            self._held.cancel()
            self._held = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.free(keep_session=True)
        self.transport = None
        app, self.app = self.app, None
        if app is not None:
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app is not None and not self._app_paused:
            self._app_paused = True
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None and self._app_paused:
            self._app_paused = False
            self.app.resume_writing()

    # -- the handshake --------------------------------------------------------------------
    def _step(self) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            state = conn.handshake()
        except TLSHandshakeError as exc:
            self.stats.handshakes_failed += 1
            self._flush()  # the alert
            if log.isEnabledFor(logging.DEBUG):  # getpeername only when it is printed
                log.debug("tls: %s (peer %s)", exc, self._peer())
            self._close_transport()
            return
        self._flush()
        if state is Handshake.LOOKUP:
            self.stats.lookups += 1
            assert self._loop is not None
            self._lookup = self._loop.create_task(self._fetch(conn))
        elif state is Handshake.DONE:
            self._handshake_complete(conn)

    async def _fetch(self, conn: TLSConnection) -> None:
        store = conn.session_context.session_store
        found: dict[bytes, bytes] = {}
        ids = list(conn.lookup_ids)
        if store is not None and ids:
            try:
                if len(ids) == 1:  # the usual case: one session id, or one TLS 1.3 ticket
                    der = await store.fetch(ids[0])
                    results = [der]
                else:
                    results = await asyncio.gather(*(store.fetch(i) for i in ids))
                found = {i: der for i, der in zip(ids, results, strict=True) if der is not None}
            except Exception:  # a store that raises (ours never does) is a miss: resume now, full
                log.exception("tls: the session lookup failed; full handshake")
                found = {}
        if self.conn is not conn:
            return  # closed meanwhile
        self._lookup = None
        conn.resume_after_lookup(found)
        self._step()

    def _handshake_complete(self, conn: TLSConnection) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if conn.session_reused:
            self.stats.handshakes_resumed += 1
        else:
            self.stats.handshakes_full += 1
        try:
            app = self.app_factory()
        except Exception:
            log.exception("tls: the application protocol factory failed")
            self._close_transport()
            return
        self.app = cast(asyncio.Protocol, app)
        self.app.connection_made(self._app_transport)
        self._deliver()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self.conn is not None and not self.conn.handshake_done:
            self.stats.handshakes_failed += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("tls: handshake timed out (peer %s)", self._peer())
            self._close_transport(abort=True)

    # -- application data -----------------------------------------------------------------
    def _deliver(self) -> None:
        conn, app = self.conn, self.app
        if conn is None or app is None:
            return
        try:
            data, eof = conn.read()
        except TLSError as exc:
            self._fail(exc)
            return
        self._flush()  # e.g. a KeyUpdate answer
        if data:
            app.data_received(data)
        if eof and self.app is not None:
            keep_open = app.eof_received()
            if not keep_open:
                self._app_transport.close()

    def send(self, data: bytes | bytearray | memoryview) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            conn.write(data)
        except TLSError as exc:
            self._fail(exc)
            return
        self._flush()

    def close_tls(self) -> None:
        """Send close_notify and close the connection after the buffered data."""
        if self.conn is not None:
            self.conn.shutdown()
            self._flush()
        if self._held is not None:
            self._close_when_released = True  # after the held output
            return
        self._close_transport()

    # -- plumbing ----------------------------------------------------------------------------
    def _flush(self) -> None:
        conn = self.conn
        if conn is None or self.transport is None:
            return
        if conn.pending_writes:
            self._hold(conn)
        if self._held is not None:
            return  # stays in the memory BIO, in order, until the session is in the cache
        out = conn.output()
        if out and not self.transport.is_closing():
            self.transport.write(out)

    def _hold(self, conn: TLSConnection) -> None:
        """The handshake just made a session and queued its cache write: keep what OpenSSL wrote
        after it (the server's Finished, or the TLS 1.3 ticket, and whatever follows) until the write
        is acknowledged (at most ``store_wait``), so that the client cannot offer the session to
        another server of the farm before it is in the cache."""
        writes, conn.pending_writes = conn.pending_writes, []
        store = conn.session_context.session_store
        wait = 0.0 if store is None else store.store_wait
        if self._held is not None or wait <= 0 or self._loop is None:
            return
        pending = [w for w in writes if not w.done()]
        if pending:  # callbacks and one timer: no task of its own per new session
            self._held = held = self._loop.call_later(wait, self._release)
            self._held_writes = len(pending)
            stored = functools.partial(self._stored, held)
            for w in pending:
                w.add_done_callback(stored)

    def _stored(self, held: asyncio.TimerHandle, _write: asyncio.Task[None]) -> None:
        if self._held is held:  # not a write of an earlier hold that ended with store_wait
            self._held_writes -= 1
            if self._held_writes <= 0:
                self._release()

    def _release(self) -> None:
        """The session is in the cache, or ``store_wait`` is over: send what was held."""
        held, self._held = self._held, None
        if held is None:
            return  # the connection was lost meanwhile
        held.cancel()
        self._flush()
        if self._close_when_released:
            self._close_transport()

    def _fail(self, exc: Exception) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("tls: connection error: %s (peer %s)", exc, self._peer())
        self._flush()
        self._close_transport(abort=True)

    def _close_transport(self, abort: bool = False) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _peer(self) -> object:
        return None if self.transport is None else self.transport.get_extra_info("peername")


async def start_tls_server(app_factory: Callable[[], asyncio.BaseProtocol], context: TLSContext,
                           listen: str | Address | socket.socket, *, stats: TLSStats | None = None,
                           handshake_timeout: float = 30.0, backlog: int = 512) -> asyncio.AbstractServer:
    """Listen on ``listen`` (any hoard address, or a listening socket) and serve TLS."""
    sock = listen if isinstance(listen, socket.socket) else listen_socket(to_address(listen), backlog)
    shared = stats if stats is not None else TLSStats()
    return await serve_socket(sock, lambda: TLSServerProtocol(context, app_factory, shared, handshake_timeout))


async def start_stream_server(client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                            Awaitable[None] | None],
                              context: TLSContext, listen: str | Address | socket.socket,
                              **kwargs: Any) -> asyncio.AbstractServer:
    """Like :func:`asyncio.start_server`, with our TLS layer."""

    def factory() -> asyncio.BaseProtocol:
        reader = asyncio.StreamReader()
        return asyncio.StreamReaderProtocol(reader, client_connected_cb)

    return await start_tls_server(factory, context, listen, **kwargs)
