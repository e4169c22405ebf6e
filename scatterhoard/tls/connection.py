"""TLSConnection: one server-side ``SSL`` over two memory BIOs, sans I/O.

Bytes from the network go in with :meth:`feed`; :meth:`handshake`,
:meth:`read`, :meth:`write` and :meth:`shutdown` drive OpenSSL; whatever it
wants to send comes out of :meth:`output`.  The asyncio protocol in
:mod:`scatterhoard.tls.server` moves the bytes, and does the session lookups
a handshake asks for (:attr:`Handshake.LOOKUP`, see :mod:`.context`).
"""

from __future__ import annotations

import asyncio
import enum
import threading

from ..errors import TLSError, TLSHandshakeError
from . import _ffi as F
from ._ffi import CData, ffi, libs
from .context import TLSContext, addr, connections

__all__ = ["Handshake", "TLSConnection"]

READ_CHUNK = 16384
OUT_CHUNK = 32768


class Handshake(enum.Enum):
    DONE = "done"
    WANT_READ = "want_read"
    LOOKUP = "lookup"  # paused in the ClientHello callback: fetch ``lookup_ids``, then call again


class _Buffers(threading.local):
    """Scratch buffers for the calls that copy bytes out of OpenSSL, made once per thread (never
    one per call): decrypted data, and what the write BIO holds (a whole flight fits)."""

    def __init__(self) -> None:
        self.read = ffi.new("char[]", READ_CHUNK)
        self.out = ffi.new("char[]", OUT_CHUNK)


_buffers = _Buffers()
_mem_method: CData = None  # BIO_s_mem(), a static table in libcrypto: looked up once


def _bio_s_mem() -> CData:
    global _mem_method
    if _mem_method is None:
        _mem_method = libs()[1].BIO_s_mem()
    return _mem_method


class TLSConnection:
    """The TLS state of one accepted connection."""

    def __init__(self, context: TLSContext) -> None:
        ssl, crypto = libs()
        if context.ctx == ffi.NULL:
            raise TLSError("the TLS context is closed")
        self.context = context  # the certificate's context (changed by SNI)
        self.session_context = context  # the context whose session cache is used
        self.lookup_ids: list[bytes] = []
        self.lookup_done = False
        self.sni_done = False
        self.prefetched: dict[bytes, bytes] = {}
        #: cache writes of sessions this connection made, not yet waited for (see TLSServerProtocol)
        self.pending_writes: list[asyncio.Task[None]] = []
        raw = ssl.SSL_new(context.ctx)
        F.check(raw != ffi.NULL, "SSL_new")
        method = _bio_s_mem()
        rbio = crypto.BIO_new(method)
        wbio = crypto.BIO_new(method)
        if rbio == ffi.NULL or wbio == ffi.NULL:
            ssl.SSL_free(raw)
            raise TLSError(f"BIO_new: {F.error_queue()}")
        ssl.SSL_set_bio(raw, rbio, wbio)  # the SSL owns both BIOs from here on
        ssl.SSL_set_accept_state(raw)
        self._ssl: CData = raw
        self._rbio: CData = rbio
        self._wbio: CData = wbio
        self._key = addr(raw)
        connections[self._key] = self
        self.handshake_done = False
        self._shutdown_sent = False

    # -- bytes in and out ------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self._ssl == ffi.NULL or not data:
            return
        _, crypto = libs()
        if crypto.BIO_write(self._rbio, data, len(data)) != len(data):
            raise TLSError(f"BIO_write: {F.error_queue()}")

    def output(self) -> bytes:
        if self._ssl == ffi.NULL:
            return b""
        _, crypto = libs()
        n = crypto.BIO_ctrl(self._wbio, F.BIO_CTRL_PENDING, 0, ffi.NULL)
        if n <= 0:
            return b""
        buf = _buffers.out if n <= OUT_CHUNK else ffi.new("char[]", n)
        got = crypto.BIO_read(self._wbio, buf, n)
        return ffi.unpack(buf, got) if got > 0 else b""

    # -- TLS operations ----------------------------------------------------------------------
    def handshake(self) -> Handshake:
        """Advance the handshake; :class:`TLSHandshakeError` when it fails."""
        ssl, crypto = libs()
        if self._ssl == ffi.NULL:
            raise TLSHandshakeError("connection already freed")
        crypto.ERR_clear_error()
        ret = ssl.SSL_do_handshake(self._ssl)
        if ret == 1:
            self.handshake_done = True
            self.prefetched.clear()
            return Handshake.DONE
        err = ssl.SSL_get_error(self._ssl, ret)
        if err in (F.SSL_ERROR_WANT_READ, F.SSL_ERROR_WANT_WRITE):
            return Handshake.WANT_READ
        if err == F.SSL_ERROR_WANT_CLIENT_HELLO_CB:
            return Handshake.LOOKUP
        raise TLSHandshakeError(f"TLS handshake failed: {self._reason(err)}")

    def resume_after_lookup(self, found: dict[bytes, bytes]) -> None:
        """Hand the fetched sessions to the (paused) handshake; call :meth:`handshake` next."""
        self.prefetched = found
        self.lookup_done = True
        self.lookup_ids = []

    def read(self) -> tuple[bytes, bool]:
        """Decrypted application data available now, and whether the peer sent close_notify."""
        ssl, crypto = libs()
        if self._ssl == ffi.NULL:
            return b"", True
        buf = _buffers.read
        chunks: list[bytes] = []
        crypto.ERR_clear_error()
        while True:
            n = ssl.SSL_read(self._ssl, buf, READ_CHUNK)
            if n > 0:
                chunks.append(ffi.unpack(buf, n))
                if not ssl.SSL_has_pending(self._ssl) and crypto.BIO_ctrl(
                        self._rbio, F.BIO_CTRL_PENDING, 0, ffi.NULL) <= 0:
                    return b"".join(chunks), False  # all consumed: no SSL_read only to hear WANT_READ
                continue
            err = ssl.SSL_get_error(self._ssl, n)
            if err in (F.SSL_ERROR_WANT_READ, F.SSL_ERROR_WANT_WRITE):
                return b"".join(chunks), False
            if err == F.SSL_ERROR_ZERO_RETURN:
                return b"".join(chunks), True
            raise TLSError(f"TLS read failed: {self._reason(err)}")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` (all of it: memory BIOs never push back)."""
        ssl, crypto = libs()
        if self._ssl == ffi.NULL or not data:
            return
        crypto.ERR_clear_error()
        buf = ffi.from_buffer(data)
        n = ssl.SSL_write(self._ssl, buf, len(buf))
        if n != len(buf):
            err = ssl.SSL_get_error(self._ssl, n)
            raise TLSError(f"TLS write failed: {self._reason(err)}")

    def shutdown(self) -> None:
        """Queue our close_notify (once)."""
        ssl, crypto = libs()
        if self._ssl == ffi.NULL or self._shutdown_sent or not self.handshake_done:
            return
        self._shutdown_sent = True
        crypto.ERR_clear_error()
        if ssl.SSL_shutdown(self._ssl) < 0:
            F.error_queue()

    def free(self, keep_session: bool = True) -> None:
        """Release the ``SSL``.  ``keep_session``: an abrupt close must not evict the session
        (OpenSSL would call the remove callback), so mark the shutdown as done first."""
        ssl, crypto = libs()
        raw, self._ssl = self._ssl, ffi.NULL
        if raw == ffi.NULL:
            return
        connections.pop(self._key, None)
        if keep_session:
            ssl.SSL_set_shutdown(raw, F.SSL_SENT_SHUTDOWN | F.SSL_RECEIVED_SHUTDOWN)
        ssl.SSL_free(raw)
        crypto.ERR_clear_error()
        self.prefetched.clear()
        self.pending_writes.clear()

    # -- what was negotiated -----------------------------------------------------------------
    @property
    def version(self) -> str | None:
        if self._ssl == ffi.NULL or not self.handshake_done:
            return None
        return str(ffi.string(libs()[0].SSL_get_version(self._ssl)).decode("ascii"))

    @property
    def cipher(self) -> str | None:
        if self._ssl == ffi.NULL or not self.handshake_done:
            return None
        ssl, _ = libs()
        c = ssl.SSL_get_current_cipher(self._ssl)
        return None if c == ffi.NULL else ffi.string(ssl.SSL_CIPHER_get_name(c)).decode("ascii")

    @property
    def session_reused(self) -> bool:
        return self._ssl != ffi.NULL and bool(libs()[0].SSL_session_reused(self._ssl))

    @property
    def alpn_protocol(self) -> str | None:
        if self._ssl == ffi.NULL:
            return None
        data = ffi.new("const unsigned char **")
        n = ffi.new("unsigned int *")
        libs()[0].SSL_get0_alpn_selected(self._ssl, data, n)
        return None if n[0] == 0 else F.to_bytes(data[0], n[0]).decode("ascii", "replace")

    @property
    def server_name(self) -> str | None:
        if self._ssl == ffi.NULL:
            return None
        p = libs()[0].SSL_get_servername(self._ssl, F.TLSEXT_NAMETYPE_host_name)
        return None if p == ffi.NULL else ffi.string(p).decode("ascii", "replace")

    def _reason(self, err: int) -> str:
        queue = F.error_queue()
        if err == F.SSL_ERROR_SYSCALL and queue == "unknown OpenSSL error":
            return "unexpected end of stream"
        return queue
