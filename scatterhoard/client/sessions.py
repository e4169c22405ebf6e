"""Session caches: libdistcache's API (``add``/``get``/``remove``/``have``) for applications.

:class:`SessionCache` (blocking) and :class:`AsyncSessionCache` (asyncio)
store sessions on one server or many::

    from scatterhoard import SessionCache
    sessions = SessionCache(["10.0.0.1:11211", "10.0.0.2:11211"])     # memcached text protocol
    sessions.add(b"session-id", b"state", timeout_ms=300_000)         # True when stored
    sessions.get(b"session-id"); sessions.have(b"session-id"); sessions.remove(b"session-id")

``protocol`` picks the wire:

* ``"text"`` (default), ``"meta"``, ``"binary"``: the memcached protocols
  through :class:`~scatterhoard.Client` / :class:`~scatterhoard.AsyncClient`
  -- the same routing (a session lives on the server ``hoard proxy`` would
  pick), pooling and failover.  Every other keyword is a client option.
  ``add`` is memcached ``add`` (an existing session is never overwritten,
  like distcache's "duplicate id"); the timeout is rounded up to whole
  seconds, memcached's resolution.  Over text and meta a session id with
  spaces or control bytes is stored under its md5 (``long_keys="hash"``);
  binary stores any id as is.
* ``"distcache"``: the distcache protocol to one server (``hoard server``,
  ``dc_server``) or a local ``dc_client``, through
  :class:`scatterhoard.distcache.SessionCache` (millisecond timeouts).

On ``hoard server`` both reach the same store: a session added over one
protocol is found over the other under the same id bytes.

``strict=False`` (default): a dead cache answers misses (``False`` /
``None``) and logs; ``strict=True`` raises
:class:`~scatterhoard.errors.CacheConnectionError` /
:class:`~scatterhoard.errors.CacheTimeoutError`.  Arguments distcache cannot
carry (an id of 0 or over 64 bytes, empty data, a timeout over one week)
raise :class:`ValueError` whatever the protocol, so code can switch
protocols freely.

The commands are plans over :class:`~scatterhoard.client.core.ClientCore`
(written once); the two classes differ only in running them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from ..distcache.client import AsyncSessionCache as AsyncDistcacheSessionCache
from ..distcache.client import SessionCache as DistcacheSessionCache
from ..distcache.client import check_session_args
from ..errors import ConfigError
from ..routing import ServerSpec
from .aio import AsyncClient
from .config import Server
from .core import DEFAULT_TIMEOUT_MS, ClientCore, Plan
from .sync import Client

__all__ = [
    "AsyncDistcacheSessionCache",
    "AsyncSessionCache",
    "DistcacheSessionCache",
    "SessionCache",
    "add_plan",
    "get_plan",
    "have_plan",
    "remove_plan",
]

_ALREADY_EXPIRED: Final = 30 * 24 * 3600 + 1  # an absolute unix time long past
Servers = str | ServerSpec | Server | Sequence[str | ServerSpec | Server]


# -- the commands, once ---------------------------------------------------------------------------


def _exptime(timeout_ms: int) -> int:
    """A distcache timeout (ms from now) as memcached exptime: whole seconds, rounded up."""
    if timeout_ms <= 0:
        return _ALREADY_EXPIRED  # distcache: a session that is already over
    return math.ceil(timeout_ms / 1000)


def add_plan(core: ClientCore, session_id: bytes, data: bytes, timeout_ms: int) -> Plan[bool]:
    check_session_args(session_id, data, timeout_ms)
    return core.add(session_id, data, _exptime(timeout_ms))


def get_plan(core: ClientCore, session_id: bytes) -> Plan[Any]:
    check_session_args(session_id)
    return core.get(session_id)


def remove_plan(core: ClientCore, session_id: bytes) -> Plan[bool]:
    check_session_args(session_id)
    return core.delete(session_id)


def have_plan(core: ClientCore, session_id: bytes) -> Plan[bool]:
    check_session_args(session_id)
    value = yield from core.get(session_id)
    return value is not None


# -- set-up shared by both ------------------------------------------------------------------------


def _distcache_address(servers: Servers) -> str:
    if isinstance(servers, str) and "," not in servers:
        return servers
    if isinstance(servers, Sequence) and not isinstance(servers, str) and len(servers) == 1 \
            and isinstance(servers[0], str):
        return servers[0]
    raise ConfigError("protocol='distcache' talks to one server (or a local dc_client): give one address")


def _client_options(protocol: str, strict: bool, options: dict[str, Any]) -> dict[str, Any]:
    for name in ("on_error", "serde", "mode"):
        if name in options:
            raise ConfigError(f"SessionCache does not take {name}= (sessions are bytes; strict= says "
                              "whether failures raise)")
    return {**options, "protocol": protocol, "on_error": "raise" if strict else "miss"}


class SessionCache:
    """Blocking session cache; see the module documentation."""

    def __init__(self, servers: Servers, *, protocol: str = "text", strict: bool = False,
                 timeout: float | None = None, **options: Any) -> None:
        self.protocol = protocol
        self._dc: DistcacheSessionCache | None = None
        self._client: Client | None = None
        if protocol == "distcache":
            if options:
                raise ConfigError(f"protocol='distcache' takes no client options: {sorted(options)}")
            seconds = (DEFAULT_TIMEOUT_MS if timeout is None else timeout) / 1000
            self._dc = DistcacheSessionCache(_distcache_address(servers), timeout=seconds, strict=strict)
        else:
            if timeout is not None:
                options["timeout"] = timeout
            self._client = Client(servers, **_client_options(protocol, strict, options))

    @property
    def client(self) -> Client | None:
        """The memcached client underneath (None for protocol='distcache')."""
        return self._client

    def add(self, session_id: bytes, data: bytes, timeout_ms: int) -> bool:
        if self._dc is not None:
            return self._dc.add(session_id, data, timeout_ms)
        assert self._client is not None
        return self._client._run(add_plan(self._client.core, session_id, data, timeout_ms))

    def get(self, session_id: bytes) -> bytes | None:
        if self._dc is not None:
            return self._dc.get(session_id)
        assert self._client is not None
        value: bytes | None = self._client._run(get_plan(self._client.core, session_id))
        return value

    def remove(self, session_id: bytes) -> bool:
        if self._dc is not None:
            return self._dc.remove(session_id)
        assert self._client is not None
        return self._client._run(remove_plan(self._client.core, session_id))

    def have(self, session_id: bytes) -> bool:
        if self._dc is not None:
            return self._dc.have(session_id)
        assert self._client is not None
        return self._client._run(have_plan(self._client.core, session_id))

    def close(self) -> None:
        if self._dc is not None:
            self._dc.close()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> SessionCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSessionCache:
    """The asyncio twin of :class:`SessionCache`: the same API, awaited."""

    def __init__(self, servers: Servers, *, protocol: str = "text", strict: bool = False,
                 timeout: float | None = None, **options: Any) -> None:
        self.protocol = protocol
        self._dc: AsyncDistcacheSessionCache | None = None
        self._client: AsyncClient | None = None
        if protocol == "distcache":
            if options:
                raise ConfigError(f"protocol='distcache' takes no client options: {sorted(options)}")
            seconds = (DEFAULT_TIMEOUT_MS if timeout is None else timeout) / 1000
            self._dc = AsyncDistcacheSessionCache(_distcache_address(servers), timeout=seconds, strict=strict)
        else:
            if timeout is not None:
                options["timeout"] = timeout
            self._client = AsyncClient(servers, **_client_options(protocol, strict, options))

    @property
    def client(self) -> AsyncClient | None:
        return self._client

    async def add(self, session_id: bytes, data: bytes, timeout_ms: int) -> bool:
        if self._dc is not None:
            return await self._dc.add(session_id, data, timeout_ms)
        assert self._client is not None
        return await self._client._run(add_plan(self._client.core, session_id, data, timeout_ms))

    async def get(self, session_id: bytes) -> bytes | None:
        if self._dc is not None:
            return await self._dc.get(session_id)
        assert self._client is not None
        value: bytes | None = await self._client._run(get_plan(self._client.core, session_id))
        return value

    async def remove(self, session_id: bytes) -> bool:
        if self._dc is not None:
            return await self._dc.remove(session_id)
        assert self._client is not None
        return await self._client._run(remove_plan(self._client.core, session_id))

    async def have(self, session_id: bytes) -> bool:
        if self._dc is not None:
            return await self._dc.have(session_id)
        assert self._client is not None
        return await self._client._run(have_plan(self._client.core, session_id))

    async def close(self) -> None:
        if self._dc is not None:
            await self._dc.close()
        if self._client is not None:
            await self._client.close()

    async def __aenter__(self) -> AsyncSessionCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
