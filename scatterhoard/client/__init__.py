"""The client library: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both run the same command plans (:mod:`.core`) over the same sans-IO codec
(:mod:`.codec`, on :mod:`scatterhoard.protocol`) and route keys with the
same :class:`~scatterhoard.routing.Router` as ``hoard proxy``, so a key is
on the same server whether an application talks to the servers directly or
through the proxy.

>>> from scatterhoard import Client
>>> cache = Client(["10.0.0.1:11211", "10.0.0.2:11211:2"], timeout=500)  # doctest: +SKIP
>>> cache.set("user:42", b"...", expire=300)                             # doctest: +SKIP
True

:class:`SessionCache` / :class:`AsyncSessionCache` (:mod:`.sessions`) give
the distcache session API (add/get/remove/have) over the same clients, or
over the distcache protocol itself.
"""

from .aio import AsyncClient
from .config import PoolConfig, Server, load_yaml_pool, parse_server, parse_servers
from .core import ClientCore
from .errors import ValueTooLargeError
from .serde import BasicSerde, JsonSerde, PickleSerde, RawSerde, Serde, get_serde
from .sessions import AsyncSessionCache, SessionCache
from .sync import Client

__all__ = [
    "AsyncClient",
    "AsyncSessionCache",
    "BasicSerde",
    "Client",
    "ClientCore",
    "JsonSerde",
    "PickleSerde",
    "PoolConfig",
    "RawSerde",
    "Serde",
    "SessionCache",
    "Server",
    "ValueTooLargeError",
    "get_serde",
    "load_yaml_pool",
    "parse_server",
    "parse_servers",
]
