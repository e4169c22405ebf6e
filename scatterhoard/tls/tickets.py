"""Shared session-ticket keys: stateless resumption across a farm.

The key ring lives in the cache, one entry per rotation period (*epoch*):
``tls:k:<epoch>`` holds 16 bytes of key name, 32 of HMAC-SHA256 key and 32
of AES-256-CBC key, sealed like sessions (:mod:`.sealing`).  The first server
to need an epoch's key creates it with an ``add`` (which only one writer can
win) and everybody reads the winner back, so the whole farm encrypts with
the same key without coordination.  New tickets use the current epoch's key;
tickets under the previous keys (as long as a session may live) still
decrypt, and are renewed.  When the cache is unreachable a server makes a
local key, so tickets keep working on that server.

OpenSSL side: ``SSL_CTX_set_tlsext_ticket_key_evp_cb`` (OpenSSL 3.0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SessionBlobError
from . import _ffi as F
from ._ffi import CData, ffi, libs
from .context import addr, connections
from .sealing import Sealer
from .store import Backend

if TYPE_CHECKING:
    from .context import TLSContext

log = logging.getLogger("scatterhoard.tls")

__all__ = ["TicketKey", "TicketKeys"]

KEY_PREFIX = b"tls:k:"
KEY_SIZE = 16 + 32 + 32


@dataclass(frozen=True)
class TicketKey:
    epoch: int
    name: bytes  # 16
    hmac_key: bytes  # 32
    aes_key: bytes  # 32
    shared: bool  # False: made locally while the cache was unreachable

    @classmethod
    def parse(cls, epoch: int, raw: bytes, shared: bool = True) -> TicketKey:
        if len(raw) != KEY_SIZE:
            raise SessionBlobError("ticket key has the wrong size")
        return cls(epoch, raw[:16], raw[16:48], raw[48:], shared)

    @classmethod
    def generate(cls, epoch: int, shared: bool) -> TicketKey:
        return cls.parse(epoch, os.urandom(KEY_SIZE), shared)

    def raw(self) -> bytes:
        return self.name + self.hmac_key + self.aes_key


class TicketKeys:
    """A ring of ticket keys shared through ``backend``; rotated every ``rotate`` seconds."""

    def __init__(self, backend: Backend, sealer: Sealer, *, rotate: int = 3600, lifetime: int = 300) -> None:
        if rotate < 1:
            raise ValueError("the rotation period must be at least 1 second")
        self.backend = backend
        self.sealer = sealer
        self.rotate = rotate
        #: old epochs still accepted for decryption: enough to cover a session's lifetime
        self.keep = math.ceil(lifetime / rotate) + 1
        self.by_name: dict[bytes, TicketKey] = {}
        self.by_epoch: dict[int, TicketKey] = {}
        self._task: asyncio.Task[None] | None = None
        self.rejected = 0

    def epoch(self, now: float | None = None) -> int:
        return int((time.time() if now is None else now) // self.rotate)

    def current(self) -> TicketKey:
        e = self.epoch()
        key = self.by_epoch.get(e)
        if key is None:  # refresh is late: a local key keeps tickets working here
            key = TicketKey.generate(e, shared=False)
            self._put(key)
        return key

    def _put(self, key: TicketKey) -> None:
        old = self.by_epoch.get(key.epoch)
        if old is not None and old.shared and not key.shared:
            return
        self.by_epoch[key.epoch] = key
        self.by_name[key.name] = key  # a replaced local key stays in by_name until it expires

    def _expire(self) -> None:
        oldest = self.epoch() - self.keep
        for name, key in list(self.by_name.items()):
            if key.epoch < oldest:
                del self.by_name[name]
                if self.by_epoch.get(key.epoch) is key:
                    del self.by_epoch[key.epoch]

    # -- the ring in the cache -----------------------------------------------------------
    def _cache_key(self, epoch: int) -> bytes:
        return KEY_PREFIX + epoch.to_bytes(8, "big", signed=True)

    async def _fetch(self, epoch: int) -> TicketKey | None:
        ck = self._cache_key(epoch)
        blob = await self.backend.get(ck)
        if blob is None:
            return None
        try:
            return TicketKey.parse(epoch, self.sealer.open(b"ticketkey", ck, blob))
        except SessionBlobError as exc:
            self.rejected += 1
            log.warning("tls: ticket key for epoch %d rejected: %s", epoch, exc)
            return None

    async def refresh(self) -> None:
        """Load (or create) the keys of the previous, current and next epochs."""
        now = self.epoch()
        ttl = (self.keep + 2) * self.rotate
        for e in range(now - self.keep, now + 2):
            have = self.by_epoch.get(e)
            if have is not None and have.shared:
                continue
            try:
                key = await self._fetch(e)
                if key is None and e >= now:
                    fresh = TicketKey.generate(e, shared=True)
                    ck = self._cache_key(e)
                    await self.backend.add(ck, self.sealer.seal(b"ticketkey", ck, fresh.raw()), ttl)
                    key = await self._fetch(e)  # whoever won the add
            except Exception as exc:
                log.warning("tls: ticket key ring unreachable: %s", exc)
                key = None
            if key is not None:
                self._put(key)
        self._expire()

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        period = max(1.0, min(self.rotate / 4, 60.0))
        while True:
            await asyncio.sleep(period)
            await self.refresh()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.backend.close()

    def install(self, context: TLSContext) -> None:
        ssl, _ = libs()
        F.check(ssl.SSL_CTX_set_tlsext_ticket_key_evp_cb(context.ctx, _ticket_cb) == 1,
                "SSL_CTX_set_tlsext_ticket_key_evp_cb")

    # -- the OpenSSL callback ----------------------------------------------------------------
    def crypt(self, key_name: CData, iv: CData, cctx: CData, hctx: CData, enc: int) -> int:
        """OpenSSL's ticket key callback.  It never answers -1 (a fatal handshake error): when
        encrypting, 0 means "issue no ticket"; when decrypting, "unknown key", a full handshake."""
        _, crypto = libs()
        if enc:
            key = self.current()
            ffi.memmove(key_name, key.name, 16)
            if crypto.RAND_bytes(iv, F.EVP_MAX_IV_LENGTH) != 1:
                F.error_queue()
                return 0
            if crypto.EVP_EncryptInit_ex(cctx, crypto.EVP_aes_256_cbc(), ffi.NULL, key.aes_key, iv) != 1:
                F.error_queue()
                return 0
            if not _set_hmac(hctx, key.hmac_key):
                F.error_queue()
                return 0
            return 1
        found = self.by_name.get(F.to_bytes(key_name, 16))
        if found is None:
            return 0  # unknown key: full handshake, a new ticket
        if crypto.EVP_DecryptInit_ex(cctx, crypto.EVP_aes_256_cbc(), ffi.NULL, found.aes_key, iv) != 1 \
                or not _set_hmac(hctx, found.hmac_key):
            F.error_queue()
            return 0
        return 1 if found.epoch == self.epoch() else 2  # 2: valid, but issue a fresh ticket


_DIGEST_NAME = ffi.new("char[]", b"digest")
_KEY_NAME = ffi.new("char[]", b"key")
_SHA256 = ffi.new("char[]", b"SHA256")


def _set_hmac(hctx: CData, key: bytes) -> bool:
    _, crypto = libs()
    keybuf = ffi.new("unsigned char[]", key)
    params = ffi.new("OSSL_PARAM[3]")
    params[0].key = _DIGEST_NAME
    params[0].data_type = F.OSSL_PARAM_UTF8_STRING
    params[0].data = _SHA256
    params[0].data_size = 6
    params[1].key = _KEY_NAME
    params[1].data_type = F.OSSL_PARAM_OCTET_STRING
    params[1].data = keybuf
    params[1].data_size = len(key)
    return bool(crypto.EVP_MAC_CTX_set_params(hctx, params) == 1)


def _on_error(exc_type: object, exc: object, tb: object) -> None:
    # the callback then answers 0: no ticket issued, or a ticket not decrypted (full handshake)
    log.error("tls: exception in the ticket key callback: %r (no ticket, or a full handshake)", exc)


def _ticket(s: CData, key_name: CData, iv: CData, cctx: CData, hctx: CData, enc: int) -> int:
    conn = connections.get(addr(s))
    tickets = None if conn is None else conn.session_context.tickets
    if tickets is None:
        return 0 if not enc else -1
    return tickets.crypt(key_name, iv, cctx, hctx, enc)


_ticket_cb = ffi.callback("int(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *, EVP_MAC_CTX *, int)",
                          _ticket, error=0, onerror=_on_error)
