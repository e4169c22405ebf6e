"""Where TLS sessions and ticket keys live: our cache clients behind one small interface.

``open_backend("IP:cache:9001")`` (distcache, the default),
``open_backend("distcache:unix:/tmp/scache")``, or one of the memcached
protocols through :class:`scatterhoard.AsyncClient`:
``open_backend("memcache:10.0.0.1:11211,10.0.0.2:11211")`` (text; ``text:``
is the same), ``meta:...`` or ``binary:...`` (several servers are sharded the
way ``hoard proxy`` does).  The three memcached protocols store the same keys
and values, so a farm may mix them.

:class:`SessionStore` is what OpenSSL's session callbacks talk to: it seals
sessions before storing them, opens (and authenticates) them after fetching,
and never raises: a dead cache, a slow cache or a forged value is a miss, so
the handshake falls back to a full one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from ..client import AsyncClient
from ..distcache.client import AsyncSessionCache
from ..errors import ConfigError, SessionBlobError
from .sealing import Sealer

log = logging.getLogger("scatterhoard.tls")

__all__ = ["Backend", "DistcacheBackend", "MemcacheBackend", "SessionStore", "StoreStats", "open_backend"]

#: Cache key prefix of sessions (distcache ids are at most 64 bytes: 6 + 32 fits).
SESSION_PREFIX = b"tls:s:"
#: distcache refuses timeouts over one week.
MAX_TTL = 7 * 24 * 3600


class Backend(Protocol):
    """The four operations the TLS layer needs from a cache."""

    async def get(self, key: bytes) -> bytes | None: ...

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool: ...

    async def remove(self, key: bytes) -> bool: ...

    async def close(self) -> None: ...


class DistcacheBackend:
    """The distcache protocol (``hoard server``, ``dc_server``, a local ``dc_client``)."""

    def __init__(self, address: str, timeout: float) -> None:
        self.timeout = timeout  # every call gives up after this long (the client's own limit)
        self.client = AsyncSessionCache(address, timeout=timeout)

    async def get(self, key: bytes) -> bytes | None:
        return await self.client.get(key)

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        return await self.client.add(key, value, timeout_ms=max(1, min(ttl, MAX_TTL)) * 1000)

    async def remove(self, key: bytes) -> bool:
        return await self.client.remove(key)

    async def close(self) -> None:
        await self.client.close()


class MemcacheBackend:
    """A memcached protocol (``text``, ``meta`` or ``binary``) through :class:`scatterhoard.AsyncClient`
    (keys as hex text, the same whatever the protocol)."""

    def __init__(self, servers: str, timeout: float, protocol: str = "text") -> None:
        ms = max(1, int(timeout * 1000))
        self.timeout = ms / 1000  # every call gives up after this long (the client's own limit)
        self.protocol = protocol
        self.client = AsyncClient(servers.split(","), timeout=ms, connect_timeout=ms, serde="raw",
                                  on_error="miss", protocol=protocol)

    @staticmethod
    def _key(key: bytes) -> str:
        if key[:4] == b"tls:" and key[5:6] == b":":  # "tls:s:<id>" -> "tls:s:<hex id>"
            return key[:6].decode("ascii", "replace") + key[6:].hex()
        return key.hex()

    async def get(self, key: bytes) -> bytes | None:
        value = await self.client.get(self._key(key))
        return bytes(value) if value is not None else None

    async def add(self, key: bytes, value: bytes, ttl: int) -> bool:
        return bool(await self.client.add(self._key(key), value, expire=max(1, min(ttl, MAX_TTL))))

    async def remove(self, key: bytes) -> bool:
        return bool(await self.client.delete(self._key(key)))

    async def close(self) -> None:
        await self.client.close()


#: ``--cache`` prefixes naming a memcached protocol of our client
MEMCACHE_SCHEMES = {"memcache": "text", "memcached": "text", "mc": "text", "text": "text",
                    "meta": "meta", "binary": "binary"}


def open_backend(spec: str, timeout: float = 0.5) -> Backend:
    """``[distcache:|dc:|memcache:|text:|meta:|binary:]ADDRESS`` -> a backend (distcache by default).

    ``memcache:`` (or ``text:``), ``meta:`` and ``binary:`` take ``HOST:PORT[,HOST:PORT...]``."""
    scheme, sep, rest = spec.partition(":")
    scheme = scheme.lower()
    if sep and scheme in MEMCACHE_SCHEMES:
        if not rest:
            raise ConfigError(f"cache address {spec!r} has no server")
        return MemcacheBackend(rest, timeout, MEMCACHE_SCHEMES[scheme])
    if sep and scheme in ("distcache", "dc"):
        spec = rest
    if not spec:
        raise ConfigError("empty cache address")
    return DistcacheBackend(spec, timeout)


@dataclass
class StoreStats:
    stored: int = 0
    store_failed: int = 0
    hits: int = 0
    misses: int = 0
    rejected: int = 0
    removed: int = 0


class SessionStore:
    """Sealed TLS sessions in a shared cache, for :class:`~scatterhoard.tls.TLSContext`.

    ``sealer`` carries the farm's secret; sessions are stored under
    ``tls:s:<session id>`` for their remaining lifetime.  ``timeout`` bounds a
    lookup.  Writes run as tasks; the connection that made a new session holds
    its last handshake flight (TLS 1.2: the server's Finished; TLS 1.3: the
    ticket) until the write is acknowledged, at most ``store_wait`` seconds, so
    that a client which reconnects at once to another server finds its session
    there (0: never wait).  :meth:`drain` waits for the writes in flight.
    """

    def __init__(self, backend: Backend | str, sealer: Sealer, *, timeout: float = 0.5,
                 store_wait: float = 0.05) -> None:
        self.backend: Backend = open_backend(backend, timeout) if isinstance(backend, str) else backend
        self.sealer = sealer
        self.timeout = timeout
        self.store_wait = store_wait
        self.stats = StoreStats()
        self._tasks: set[asyncio.Task[None]] = set()
        # Our cache clients bound every call themselves: a second timer per lookup is only needed
        # around a backend we do not know (or one whose own limit is longer than ``timeout``).
        self._own_limit = (self.backend.timeout if isinstance(self.backend, (DistcacheBackend, MemcacheBackend))
                           else None)

    @staticmethod
    def key(session_id: bytes) -> bytes:
        return SESSION_PREFIX + session_id

    # -- called from OpenSSL callbacks (synchronous): schedule the I/O ------------------
    def store_later(self, session_id: bytes, der: bytes, ttl: int) -> asyncio.Task[None] | None:
        """Start storing a session; the task (which never raises), None without an event loop."""
        return self._spawn(self._store(session_id, der, ttl))

    def remove_later(self, session_id: bytes) -> None:
        self._spawn(self._remove(session_id))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.debug("tls: no running event loop; cache write dropped")
            coro.close()
            return None
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _store(self, session_id: bytes, der: bytes, ttl: int) -> None:
        key = self.key(session_id)
        try:
            blob = self.sealer.seal(b"session", key, der)
            ok = await self.backend.add(key, blob, ttl)
        except Exception as exc:  # a cache problem must never reach the TLS connection
            log.warning("tls: storing a session failed: %s", exc)
            ok = False
        if ok:
            self.stats.stored += 1
        else:
            self.stats.store_failed += 1

    async def _remove(self, session_id: bytes) -> None:
        try:
            if await self.backend.remove(self.key(session_id)):
                self.stats.removed += 1
        except Exception as exc:
            log.warning("tls: removing a session failed: %s", exc)

    # -- lookups (awaited by the connection while its handshake is paused) -------------
    async def fetch(self, session_id: bytes) -> bytes | None:
        """The DER session for ``session_id``, or None (miss, outage, forged/foreign blob)."""
        key = self.key(session_id)
        try:
            if self._own_limit is not None and self._own_limit <= self.timeout:
                blob = await self.backend.get(key)
            else:
                async with asyncio.timeout(self.timeout):
                    blob = await self.backend.get(key)
        except Exception as exc:  # TimeoutError included
            log.debug("tls: session lookup failed: %r", exc)
            blob = None
        if blob is None:
            self.stats.misses += 1
            return None
        try:
            der = self.sealer.open(b"session", key, blob)
        except SessionBlobError as exc:
            self.stats.rejected += 1
            log.warning("tls: cached session rejected: %s", exc)
            return None
        except Exception:  # a broken sealer: still a miss, never an exception into the handshake
            self.stats.rejected += 1
            log.exception("tls: opening a cached session failed")
            return None
        self.stats.hits += 1
        return der

    async def drain(self) -> None:
        """Wait for the cache writes in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self.backend.close()
