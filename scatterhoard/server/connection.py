"""One client connection of ``hoard server``: the asyncio protocol on the hot path.

Compiled with mypyc (see :mod:`scatterhoard._build`): with the memory engine
every read goes data_received -> session.feed -> one write, all native
calls. The event loop drives it as an asyncio protocol (duck-typed: uvloop
and asyncio only call its methods). :class:`scatterhoard.server.app.EngineConnection`
extends it for engines that block (worker threads) or answer through
handlers.

The first byte of a connection picks the session (0x80 binary memcached,
0x00 distcache, ``*`` RESP, else text); the server's ``session_for`` knows which.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from mypy_extensions import mypyc_attr

from ..errors import ProtocolError
from ..wire import Wired
from .stats import ServerStats
from .text import TextSession

if TYPE_CHECKING:
    from .app import Server, Session

log = logging.getLogger("scatterhoard.server")


def peer_name(peer: object) -> str:
    """``host:port``, ``[v6]:port`` or ``unix`` for a transport's peername."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return "unix" if peer in ("", None) or isinstance(peer, str | bytes) else str(peer)


@mypyc_attr(allow_interpreted_subclasses=True)
class Connection(Wired):
    """One client connection: bytes in, the session's replies out, one write per read."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server
        self.stats: ServerStats = server.stats
        self.session: Session | None = None
        #: the session when it is a text session (a native call on every read)
        self.text: TextSession | None = None
        self.accepted = False
        self.peer = ""
        self.write_paused = False
        self.busy = False  # an engine job is running (EngineConnection)

    # -- asyncio protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        srv = self.server
        st = self.stats
        settings = srv.settings
        if st.curr_connections >= settings.maxconns:
            st.rejected_connections += 1
            transport.write(b"ERROR Too many open connections\r\n")
            transport.close()
            return
        self.accepted = True
        st.curr_connections += 1
        st.total_connections += 1
        srv.connections.add(self)
        if settings.verbosity > 1 or srv.guarded:
            self.peer = peer_name(transport.get_extra_info("peername"))
        if settings.verbosity > 1:
            log.info("<%s new client connection", self.peer)

    def data_received(self, data: bytes) -> None:
        if not self.accepted:
            return
        st = self.stats
        st.bytes_read += len(data)
        text = self.text
        try:
            if text is not None:
                out = text.feed(data)
                closing = text.closing
            else:
                session = self.session
                if session is None:
                    session = self._start(data[0])
                out = session.feed(data)
                closing = session.closing
        except Exception as exc:
            self._failed(exc)
            return
        if out:
            st.bytes_written += len(out)
            self._write(out)
        if closing:
            transport = self.transport
            assert transport is not None
            transport.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.busy:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.accepted:
            self.accepted = False
            self.stats.curr_connections -= 1
            self.server.connections.discard(self)

    # -- helpers -------------------------------------------------------------------------
    def _start(self, first: int) -> Session:
        session = self.session = self.server.session_for(first)
        if isinstance(session, TextSession):
            self.text = session
        return session

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, ProtocolError):
            log.warning("closing connection %s: %s", self.peer or id(self), exc)
        else:  # never let one client's input take the server down
            log.error("internal error on a connection; closing it", exc_info=exc)
        self._close()

    def _deliver(self, session: Session, out: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if out:
            self.stats.bytes_written += len(out)
            transport.write(out)
        if session.closing:
            transport.close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
