"""Pure key routing, compatible with twemproxy (nutcracker) 0.5.0.

Shared by the sharding proxy and the client library: given the same servers,
``hash:``, ``distribution:`` and ``hash_tag:`` settings, a :class:`Router`
sends every key to the same backend twemproxy would.  No I/O happens here.

>>> router = Router(["10.0.0.1:11211:1", "10.0.0.2:11211:2 cache-b"], hash="fnv1a_64")
>>> router.index_for(b"user:42") in (0, 1)
True

See :mod:`.hashing` for the twelve hash functions and their twemproxy quirks,
:mod:`.servers` for server identities and pool order, and
:mod:`.distribution` for ketama/modula/random and hash tags.
"""

from __future__ import annotations

from .distribution import (
    DISTRIBUTIONS,
    NoLiveServersError,
    Router,
    build_ketama,
    build_modula,
    hash_tag_part,
    ketama_points,
)
from .hashing import HASH_FUNCTIONS, HASH_NAMES, HashFunction, get_hash, hash_key
from .servers import DEFAULT_KETAMA_PORT, ServerSpec, twemproxy_order

__all__ = [
    "DEFAULT_KETAMA_PORT",
    "DISTRIBUTIONS",
    "HASH_FUNCTIONS",
    "HASH_NAMES",
    "HashFunction",
    "NoLiveServersError",
    "Router",
    "ServerSpec",
    "build_ketama",
    "build_modula",
    "get_hash",
    "hash_key",
    "hash_tag_part",
    "ketama_points",
    "twemproxy_order",
]
