"""``HoardCache``: Django's cache API on :class:`scatterhoard.Client`.

It behaves like Django's memcached backends (the same key rules, timeouts
and failure semantics), with the client's routing, pooling and failover:

* ``LOCATION``: one server, a list, a ``;``/``,``-separated string, or the
  path of a twemproxy YAML file (``OPTIONS={"pool": NAME}``).
* ``OPTIONS``: keyword options of :class:`scatterhoard.Client` (``protocol``,
  ``hash``, ``timeout``, ``on_error``, ...).  ``serde`` defaults to
  ``"pickle"`` (ints stay numbers the server can ``incr``; everything else is
  pickled, like Django's memcached backends).
* Keys that memcached refuses (over 250 characters, spaces, control
  characters) raise :class:`django.core.cache.InvalidCacheKey`, as the
  memcached backends do, instead of being hashed.
* Timeouts: ``None`` never expires; ``0`` or less stores the item already
  expired; over 30 days becomes an absolute unix time (memcached's rule).
* A ``set`` that fails deletes the key, so a stale value is never read back
  (what the cached sessions backend relies on when a session grows past the
  item size).
* The client is shared by the threads of the process and keeps its pooled
  connections across requests, so :meth:`HoardCache.close` (called by Django
  after every request) is free.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from django.core.cache.backends.base import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
    DEFAULT_TIMEOUT,
    BaseCache,
    InvalidCacheKey,
    memcache_key_warnings,
)

from ...client import Client
from ...client.errors import ValueTooLargeError

__all__ = ["HoardCache"]

_THIRTY_DAYS: Final = 30 * 24 * 3600
_ALREADY_EXPIRED: Final = _THIRTY_DAYS + 1  # an absolute unix time long past: memcached expires it at once
_MAX_EXPTIME: Final = (1 << 31) - 1
_split_location = re.compile(r"[;,]").split


def _servers(location: str | list[str] | tuple[str, ...]) -> str | list[str]:
    if isinstance(location, str):
        if location.lower().endswith((".yml", ".yaml")):
            return location
        return [part.strip() for part in _split_location(location) if part.strip()]
    return [str(part).strip() for part in location]


class HoardCache(BaseCache):  # type: ignore[misc]
    """A Django cache backend on memcached protocol servers (memcached, ``hoard server``, ``hoard proxy``)."""

    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(params)
        options = dict(params.get("OPTIONS") or {})
        options.setdefault("serde", "pickle")
        self._servers = _servers(server)
        self._options = options
        self._client_instance: Client | None = None

    @property
    def _client(self) -> Client:
        client = self._client_instance
        if client is None:
            client = self._client_instance = Client(self._servers, **self._options)
        return client

    # -- keys and timeouts -------------------------------------------------------------------------

    def validate_key(self, key: str) -> None:
        for warning in memcache_key_warnings(key):
            raise InvalidCacheKey(warning)

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> int:
        """Django's timeout (seconds, None = forever) as a memcached exptime."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return 0
        seconds = int(timeout)
        if seconds <= 0:
            return _ALREADY_EXPIRED
        if seconds > _THIRTY_DAYS:
            return min(int(time.time()) + seconds, _MAX_EXPTIME)
        return seconds

    # -- the cache API -----------------------------------------------------------------------------

    def add(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return bool(self._client.add(key, value, self.get_backend_timeout(timeout)))

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        return self._client.get(key, default)

    def set(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        key = self.make_and_validate_key(key, version=version)
        client = self._client
        try:
            stored = client.set(key, value, self.get_backend_timeout(timeout))
        except ValueTooLargeError:
            client.delete(key)
            raise
        if not stored:
            client.delete(key)  # never leave the old value behind a failed set

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return bool(self._client.touch(key, self.get_backend_timeout(timeout)))

    def delete(self, key: str, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return bool(self._client.delete(key))

    def get_many(self, keys: Iterable[str], version: int | None = None) -> dict[str, Any]:
        made = {self.make_and_validate_key(key, version=version): key for key in keys}
        if not made:
            return {}
        found = self._client.get_many(made)
        return {made[key]: value for key, value in found.items()}

    def set_many(self, data: Mapping[str, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: int | None = None) -> list[str]:
        made = {self.make_and_validate_key(key, version=version): key for key in data}
        if not made:
            return []
        failed = self._client.set_many({key: data[original] for key, original in made.items()},
                                       self.get_backend_timeout(timeout))
        return [made[str(key)] for key in failed]

    def delete_many(self, keys: Iterable[str], version: int | None = None) -> None:
        made = [self.make_and_validate_key(key, version=version) for key in keys]
        if made:
            self._client.delete_many(made)

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        key = self.make_and_validate_key(key, version=version)
        client = self._client
        if delta < 0:
            value = client.decr(key, -delta)
        else:
            value = client.incr(key, delta)
        if value is None:
            if client.get(key, self._missing_key) is self._missing_key:
                raise ValueError(f"Key '{key}' not found")
            raise TypeError(f"the value of key '{key}' is not an integer the server can count with")
        return value

    def decr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        return self.incr(key, -delta, version=version)

    def clear(self) -> None:
        self._client.flush_all()

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: the client's pooled connections are reused by the next request."""
