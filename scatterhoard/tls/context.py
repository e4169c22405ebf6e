"""TLSContext: one ``SSL_CTX`` (certificate, protocols, ALPN, SNI) and OpenSSL's callbacks.

The callbacks are created once per process (:func:`cffi.FFI.callback` objects
kept referenced here for the life of the process) and dispatch to Python
objects through two registries keyed by the ``SSL_CTX``/``SSL`` pointer.

External session cache (``session_store=``): ``SSL_OP_NO_TICKET`` and
``SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL``; TLS 1.2 session ids
and TLS 1.3 stateful tickets both go through the new/get/remove callbacks.
OpenSSL's get callback is synchronous, so the lookup happens before it: the
ClientHello callback finds the ids the client offers (the legacy session id
for TLS 1.2, the pre_shared_key identities for TLS 1.3, whose legacy id is
random and skipped), answers RETRY, the connection fetches them with the
event loop running, and the handshake resumes; the get callback then only
decodes what was prefetched.  Every callback returns its "nothing happened"
value on an exception, which gives a full handshake, never a failed one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, TLSLibraryError
from . import _ffi as F
from ._ffi import CData, check, ffi, libs

if TYPE_CHECKING:
    from .connection import TLSConnection
    from .store import SessionStore
    from .tickets import TicketKeys

log = logging.getLogger("scatterhoard.tls")

__all__ = ["TLSContext", "parse_version"]

VERSIONS = {"1.0": F.TLS1_VERSION, "1.1": F.TLS1_1_VERSION, "1.2": F.TLS1_2_VERSION, "1.3": F.TLS1_3_VERSION}

#: SSL_CTX pointer -> TLSContext, SSL pointer -> TLSConnection
contexts: dict[int, TLSContext] = {}
connections: dict[int, TLSConnection] = {}


_UINTPTR = ffi.typeof("uintptr_t")


def addr(ptr: CData) -> int:
    return int(ffi.cast(_UINTPTR, ptr))


class _Scratch(threading.local):
    """Out-parameters of the calls made in the callbacks, allocated once per thread: each is read
    right after the call that fills it, and the callbacks do not nest."""

    def __init__(self) -> None:
        self.ptr = ffi.new("const unsigned char **")
        self.size = ffi.new("size_t *")
        self.uint = ffi.new("unsigned int *")


_scratch = _Scratch()


def parse_version(text: str) -> int:
    v = VERSIONS.get(text.lower().removeprefix("tlsv").removeprefix("tls"))
    if v is None:
        raise ConfigError(f"unknown TLS version {text!r}; use one of {', '.join(VERSIONS)}")
    return v


def _onerror(name: str) -> Any:
    def handler(exc_type: type[BaseException] | None, exc: BaseException | None,
                tb: TracebackType | None) -> None:
        log.error("tls: exception in the %s callback (continuing without it)", name,
                  exc_info=(exc_type, exc, tb) if exc_type is not None and exc is not None else None)
    return handler


# -- helpers used by the callbacks ----------------------------------------------------------
def session_id(sess: CData) -> bytes:
    ssl, _ = libs()
    n = _scratch.uint
    p = ssl.SSL_SESSION_get_id(sess, n)
    return F.to_bytes(p, n[0])


def session_der(sess: CData) -> bytes:
    ssl, _ = libs()
    n = ssl.i2d_SSL_SESSION(sess, ffi.NULL)
    if n <= 0:
        return b""
    buf = ffi.new("unsigned char[]", n)
    pp = ffi.new("unsigned char **", buf)
    if ssl.i2d_SSL_SESSION(sess, pp) != n:
        return b""
    return bytes(ffi.buffer(buf, n))


def _client_hello_ext(s: CData, ext_type: int) -> bytes | None:
    ssl, _ = libs()
    out, outlen = _scratch.ptr, _scratch.size
    if ssl.SSL_client_hello_get0_ext(s, ext_type, out, outlen) != 1:
        return None
    return F.to_bytes(out[0], outlen[0])


def offered_versions(s: CData) -> list[int]:
    ext = _client_hello_ext(s, F.EXT_SUPPORTED_VERSIONS)
    if not ext:
        return []
    n = min(ext[0], len(ext) - 1)
    return [int.from_bytes(ext[1 + i : 3 + i], "big") for i in range(0, n - 1, 2)]


def psk_identities(s: CData) -> list[bytes]:
    """The identities of the pre_shared_key extension (TLS 1.3 tickets)."""
    ext = _client_hello_ext(s, F.EXT_PRE_SHARED_KEY)
    if not ext or len(ext) < 2:
        return []
    end = min(2 + int.from_bytes(ext[:2], "big"), len(ext))
    pos, ids = 2, []
    while pos + 2 <= end:
        n = int.from_bytes(ext[pos : pos + 2], "big")
        ident = ext[pos + 2 : pos + 2 + n]
        if len(ident) != n:
            break
        ids.append(ident)
        pos += 2 + n + 4  # identity, obfuscated_ticket_age
    return ids


def server_name(s: CData) -> str | None:
    """The host_name of the server_name extension, as the client sent it."""
    ext = _client_hello_ext(s, F.EXT_SERVER_NAME)
    if not ext or len(ext) < 5 or ext[2] != F.TLSEXT_NAMETYPE_host_name:
        return None
    n = int.from_bytes(ext[3:5], "big")
    name = ext[5 : 5 + n]
    return name.decode("ascii", "replace").lower() if len(name) == n else None


def ids_to_fetch(s: CData, context: TLSContext) -> list[bytes]:
    """Which cache keys the handshake may look up, given what the client offers."""
    if context.max_version >= F.TLS1_3_VERSION and F.TLS1_3_VERSION in offered_versions(s):
        # TLS 1.3 will be negotiated: the legacy session id is random, the tickets are PSK ids.
        return [i for i in psk_identities(s)[:4] if 0 < len(i) <= F.SSL_MAX_SSL_SESSION_ID_LENGTH]
    ssl, _ = libs()
    out = _scratch.ptr
    n = ssl.SSL_client_hello_get0_session_id(s, out)
    if not 0 < n <= F.SSL_MAX_SSL_SESSION_ID_LENGTH:
        return []
    return [F.to_bytes(out[0], n)]


# -- the callbacks --------------------------------------------------------------------------
def _client_hello(s: CData, al: CData, arg: CData) -> int:
    conn = connections.get(addr(s))
    if conn is None:
        return F.SSL_CLIENT_HELLO_SUCCESS
    ctx = conn.session_context
    if ctx.sni and not conn.sni_done:
        conn.sni_done = True
        name = server_name(s)
        other = ctx.sni.get(name) if name else None
        if other is not None:
            ssl, _ = libs()
            ssl.SSL_set_SSL_CTX(s, other.ctx)
            conn.context = other
    if ctx.session_store is None or conn.lookup_done:
        return F.SSL_CLIENT_HELLO_SUCCESS
    ids = ids_to_fetch(s, ctx)
    if not ids:
        conn.lookup_done = True
        return F.SSL_CLIENT_HELLO_SUCCESS
    conn.lookup_ids = ids
    return F.SSL_CLIENT_HELLO_RETRY


def _get_session(s: CData, data: CData, length: int, copy: CData) -> CData:
    copy[0] = 0  # the session we return is OpenSSL's to free (copy=1 would leak it)
    conn = connections.get(addr(s))
    if conn is None or length <= 0:
        return ffi.NULL
    der = conn.prefetched.get(F.to_bytes(data, length))  # kept: a HelloRetryRequest asks again
    if not der:
        return ffi.NULL
    ssl, _ = libs()
    buf = ffi.from_buffer(der)
    pp = ffi.new("const unsigned char **", ffi.cast("const unsigned char *", buf))
    sess = ssl.d2i_SSL_SESSION(ffi.NULL, pp, len(der))
    if sess == ffi.NULL:
        F.error_queue()
        log.warning("tls: a cached session did not decode; full handshake")
    return sess


def _new_session(s: CData, sess: CData) -> int:
    conn = connections.get(addr(s))
    if conn is None or conn.session_context.session_store is None:
        return 0
    ssl, _ = libs()
    sid = session_id(sess)
    der = session_der(sess)
    ttl = int(ssl.SSL_SESSION_get_time(sess) + ssl.SSL_SESSION_get_timeout(sess) - time.time())
    if sid and der and ttl > 0:
        task = conn.session_context.session_store.store_later(sid, der, ttl)
        if task is not None:
            conn.pending_writes.append(task)  # the server holds its next flight until it is done
    return 0  # we keep no reference to ``sess``


def _remove_session(c: CData, sess: CData) -> None:
    ctx = contexts.get(addr(c))
    if ctx is not None and ctx.session_store is not None:
        sid = session_id(sess)
        if sid:
            ctx.session_store.remove_later(sid)


def _alpn(s: CData, out: CData, outlen: CData, inp: CData, inlen: int, arg: CData) -> int:
    conn = connections.get(addr(s))
    if conn is None:
        return F.SSL_TLSEXT_ERR_NOACK
    offered = F.to_bytes(inp, inlen)
    positions: dict[bytes, int] = {}
    pos = 0
    while pos < len(offered):
        n = offered[pos]
        positions.setdefault(offered[pos + 1 : pos + 1 + n], pos + 1)
        pos += 1 + n
    for proto in conn.context.alpn:
        at = positions.get(proto)
        if at is not None:
            out[0] = inp + at
            outlen[0] = len(proto)
            return F.SSL_TLSEXT_ERR_OK
    return F.SSL_TLSEXT_ERR_NOACK


# The C entry points, created once and referenced for the life of the process.
_client_hello_cb = ffi.callback("int(SSL *, int *, void *)", _client_hello,
                                error=F.SSL_CLIENT_HELLO_SUCCESS, onerror=_onerror("client hello"))
_get_session_cb = ffi.callback("SSL_SESSION *(SSL *, const unsigned char *, int, int *)", _get_session,
                               onerror=_onerror("get session"))
_new_session_cb = ffi.callback("int(SSL *, SSL_SESSION *)", _new_session, error=0,
                               onerror=_onerror("new session"))
_remove_session_cb = ffi.callback("void(SSL_CTX *, SSL_SESSION *)", _remove_session,
                                  onerror=_onerror("remove session"))
_alpn_cb = ffi.callback("int(SSL *, const unsigned char **, unsigned char *, const unsigned char *, unsigned int,"
                        " void *)", _alpn, error=F.SSL_TLSEXT_ERR_NOACK, onerror=_onerror("alpn"))


class TLSContext:
    """A server-side TLS configuration (an ``SSL_CTX``).

    ``session_store`` shares sessions through a cache (every server of a farm
    needs the same ``session_id_context`` and the same sealing key);
    ``tickets`` shares session-ticket keys instead; with neither, OpenSSL's
    own per-process cache and tickets are used.  ``alpn`` lists the
    protocols this server speaks, preferred first; ``groups`` the key exchange
    groups (``"X25519:P-256"``); ``sni`` maps server names to other contexts
    (certificates) selected during the ClientHello.
    """

    def __init__(self, certfile: str, keyfile: str | None = None, *, min_version: str = "1.2",
                 max_version: str = "1.3", ciphers: str | None = None, ciphersuites: str | None = None,
                 alpn: Sequence[str] = (), session_store: SessionStore | None = None,
                 tickets: TicketKeys | None = None, session_id_context: bytes = b"scatterhoard",
                 session_timeout: int = 300, num_tickets: int = 1, groups: str | None = None,
                 sni: Mapping[str, TLSContext] | None = None) -> None:
        if session_store is not None and tickets is not None:
            raise ConfigError("choose either a shared session cache or shared ticket keys, not both")
        if not 0 < len(session_id_context) <= 32:
            raise ConfigError("the session id context must be 1..32 bytes")
        ssl, _ = libs()
        self.min_version = parse_version(min_version)
        self.max_version = parse_version(max_version)
        if self.min_version > self.max_version:
            raise ConfigError(f"min_version {min_version} is above max_version {max_version}")
        self.alpn = [p.encode("ascii") for p in alpn]
        if any(not 0 < len(p) < 256 for p in self.alpn):
            raise ConfigError("ALPN protocol names must be 1..255 bytes")
        self.session_store = session_store
        self.tickets = tickets
        self.sni: dict[str, TLSContext] = {k.lower(): v for k, v in (sni or {}).items()}
        self.session_timeout = session_timeout
        raw = ssl.SSL_CTX_new(ssl.TLS_server_method())
        check(raw != ffi.NULL, "SSL_CTX_new")
        self.ctx: CData = raw
        contexts[addr(raw)] = self
        try:
            self._configure(certfile, keyfile or certfile, ciphers, ciphersuites, session_id_context,
                            num_tickets, groups)
        except BaseException:
            self.close()
            raise

    def _configure(self, certfile: str, keyfile: str, ciphers: str | None, ciphersuites: str | None,
                   sid_ctx: bytes, num_tickets: int, groups: str | None) -> None:
        ssl, _ = libs()
        c = self.ctx
        ssl.SSL_CTX_set_options(c, F.SSL_OP_NO_COMPRESSION | F.SSL_OP_NO_RENEGOTIATION
                                | F.SSL_OP_CIPHER_SERVER_PREFERENCE)
        ssl.SSL_CTX_ctrl(c, F.SSL_CTRL_MODE, F.SSL_MODE_RELEASE_BUFFERS, ffi.NULL)
        check(ssl.SSL_CTX_ctrl(c, F.SSL_CTRL_SET_MIN_PROTO_VERSION, self.min_version, ffi.NULL) == 1,
              "setting the minimum TLS version")
        check(ssl.SSL_CTX_ctrl(c, F.SSL_CTRL_SET_MAX_PROTO_VERSION, self.max_version, ffi.NULL) == 1,
              "setting the maximum TLS version")
        if ssl.SSL_CTX_use_certificate_chain_file(c, certfile.encode()) != 1:
            raise TLSLibraryError(f"cannot load the certificate {certfile}: {F.error_queue()}")
        if ssl.SSL_CTX_use_PrivateKey_file(c, keyfile.encode(), F.SSL_FILETYPE_PEM) != 1:
            raise TLSLibraryError(f"cannot load the private key {keyfile}: {F.error_queue()}")
        if ssl.SSL_CTX_check_private_key(c) != 1:
            raise TLSLibraryError(f"the key {keyfile} does not match {certfile}: {F.error_queue()}")
        if ciphers is not None and ssl.SSL_CTX_set_cipher_list(c, ciphers.encode()) != 1:
            raise TLSLibraryError(f"bad cipher list {ciphers!r}: {F.error_queue()}")
        if ciphersuites is not None and ssl.SSL_CTX_set_ciphersuites(c, ciphersuites.encode()) != 1:
            raise TLSLibraryError(f"bad TLS 1.3 ciphersuites {ciphersuites!r}: {F.error_queue()}")
        if groups is not None and ssl.SSL_CTX_ctrl(c, F.SSL_CTRL_SET_GROUPS_LIST, 0,
                                                    ffi.new("char[]", groups.encode())) != 1:
            raise TLSLibraryError(f"bad key exchange groups {groups!r}: {F.error_queue()}")
        check(ssl.SSL_CTX_set_session_id_context(c, sid_ctx, len(sid_ctx)) == 1, "session id context")
        ssl.SSL_CTX_set_timeout(c, self.session_timeout)
        ssl.SSL_CTX_set_client_hello_cb(c, _client_hello_cb, ffi.NULL)
        if self.alpn:
            ssl.SSL_CTX_set_alpn_select_cb(c, _alpn_cb, ffi.NULL)
        if self.session_store is not None:
            ssl.SSL_CTX_set_options(c, F.SSL_OP_NO_TICKET)
            ssl.SSL_CTX_ctrl(c, F.SSL_CTRL_SET_SESS_CACHE_MODE,
                             F.SSL_SESS_CACHE_SERVER | F.SSL_SESS_CACHE_NO_INTERNAL, ffi.NULL)
            ssl.SSL_CTX_sess_set_new_cb(c, _new_session_cb)
            ssl.SSL_CTX_sess_set_get_cb(c, _get_session_cb)
            ssl.SSL_CTX_sess_set_remove_cb(c, _remove_session_cb)
            check(ssl.SSL_CTX_set_num_tickets(c, num_tickets) == 1, "SSL_CTX_set_num_tickets")
        elif self.tickets is not None:
            ssl.SSL_CTX_ctrl(c, F.SSL_CTRL_SET_SESS_CACHE_MODE, F.SSL_SESS_CACHE_OFF, ffi.NULL)
            check(ssl.SSL_CTX_set_num_tickets(c, num_tickets) == 1, "SSL_CTX_set_num_tickets")
            self.tickets.install(self)

    def close(self) -> None:
        """Free the ``SSL_CTX`` (connections still open keep their own reference)."""
        raw, self.ctx = self.ctx, ffi.NULL
        if raw != ffi.NULL:
            contexts.pop(addr(raw), None)
            libs()[0].SSL_CTX_free(raw)

    def __enter__(self) -> TLSContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
