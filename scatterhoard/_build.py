"""Which modules run compiled: the list ``setup.py`` hands to mypyc, and checks on it.

This module itself is never compiled. ``setup.py`` reads :data:`COMPILED` from here, so the
list lives in one place; ``hoard --version`` prints :func:`describe`; the test suite refuses
to run over a compiled module older than its source (:func:`stale`), which would otherwise
shadow an edit silently.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os

#: Modules on the per-request paths, compiled with mypyc when the build can (see setup.py).
#: Only self-contained logic. The engine interface (store/base.py) stays interpreted: compiled
#: callers would bypass the class attributes and properties that engines override; what every
#: request touches of it (Item, Mode, Status, the store rules) lives in store/item.py, compiled,
#: and engines extend it through methods (``Store.mark_win``), never by overriding attributes.
#: (MemoryStore, an interpreted ABC's subclass, compiles as a regular class; see the end of
#: store/memory.py.) server/app.py (threads, class swaps) stays interpreted. The load generator's
#: reply parsing (protocol/text_client.py, bench/codecs.py, bench/histogram.py) is compiled so
#: that ``hoard bench`` can saturate a server from one core. The client's request codecs, its
#: command core and pool are compiled too: what an application pays per call (a single get's own
#: CPU: a fifth less than interpreted; a meta get_many of 100 keys: a fifth less, the rest is the
#: kernel's). ``Client`` and ``AsyncClient`` stay interpreted: they are the API's boundary, where a
#: compiled signature would turn ``expire=1.5`` into a bare TypeError before the check that says
#: what is wrong (and AsyncClient's connection is an asyncio.BufferedProtocol subclass).
COMPILED = (
    "scatterhoard.protocol.text",
    "scatterhoard.server.text",
    "scatterhoard.server.meta",
    "scatterhoard.server.binary_fast",
    "scatterhoard.store.memory",
    "scatterhoard.store.item",
    "scatterhoard.server.stats",
    "scatterhoard.wire",
    "scatterhoard.fifo",
    "scatterhoard.server.connection",
    "scatterhoard.proxy.backend",
    "scatterhoard.proxy.session",
    "scatterhoard.proxy.memcached_backend",
    "scatterhoard.routing.hashing",
    "scatterhoard.routing.distribution",
    "scatterhoard.protocol.text_client",
    "scatterhoard.bench.codecs",
    "scatterhoard.bench.histogram",
    "scatterhoard.bench.drive",
    "scatterhoard.client.request",
    "scatterhoard.client.codec_text",
    "scatterhoard.client.codec_meta",
    "scatterhoard.client.codec_binary",
    "scatterhoard.client.core",
    "scatterhoard.client.pool",
)


def sources() -> list[str]:
    """The source paths of :data:`COMPILED`, relative to the project root (setup.py, the Makefile)."""
    return [name.replace(".", "/") + ".py" for name in COMPILED]


def _origin(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    return spec.origin if spec is not None else None


def compiled() -> list[str]:
    """The modules of :data:`COMPILED` that import as C extensions."""
    out = []
    for name in COMPILED:
        origin = _origin(name)
        if origin and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            out.append(name)
    return out


def stale() -> list[str]:
    """Compiled modules whose ``.py`` source is newer than the extension that shadows it."""
    out = []
    for name in compiled():
        ext = _origin(name)
        assert ext is not None
        source = os.path.join(os.path.dirname(ext), name.rpartition(".")[2] + ".py")
        if os.path.exists(source) and os.path.getmtime(source) > os.path.getmtime(ext):
            out.append(name)
    return out


def describe() -> str:
    n = len(compiled())
    if n == 0:
        return "pure Python"
    return f"{n} of {len(COMPILED)} hot modules compiled with mypyc"
