"""distcache tools and client API (the session-cache protocol of the original distcache).

* :class:`SessionCache` / :class:`AsyncSessionCache`: blocking and asyncio
  clients (libdistcache's ``DC_CTX`` level).
* ``dc_client`` (:mod:`.proxy`): the local multiplexing proxy.
* ``dc_test`` (:mod:`.tester`) and ``dc_snoop`` (:mod:`.snoop`).

All of them speak through the sans-IO codec in
:mod:`scatterhoard.protocol.distcache`.
"""

from .client import AsyncSessionCache, SessionCache

__all__ = ["AsyncSessionCache", "SessionCache"]
