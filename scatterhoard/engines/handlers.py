"""The handler API: intercept every storage command, whatever protocol it came in.

Every protocol front end (memcached text, meta, binary, RESP, distcache)
translates its commands into the same few engine operations. A handler sits
between the front ends and the engine and sees each operation as one
:class:`Call` -- the operation, the key, its arguments and the
:class:`Context` of the connection (protocol, peer, the command as the
client named it) -- and returns the operation's result, usually by passing
the call on with ``forward(call)``. The server turns the result (or a
:class:`~scatterhoard.store.base.EngineError` the handler raises) into the
client's protocol::

    class ReadOnly(Handler):
        def handle(self, call: Call, forward: Forward) -> Any:
            if call.writes:
                raise AccessDenied("read-only server")
            return forward(call)

Results by operation (the :class:`~scatterhoard.store.base.Store` methods):

=============  =====================================================  =============================
``op``         arguments used                                          result
=============  =====================================================  =============================
``get``        ``touch`` (new expiry or None), ``bump``                ``Item`` or None
``store``      ``mode``, ``value``, ``flags``, ``exptime``, ``cas``,   ``(Status, new cas)``
               ``invalidate``
``delete``     ``cas``                                                 ``Status``
``mark_stale`` ``cas``, ``exptime`` (or None)                          ``Status``
``arith``      ``delta``, ``incr``, ``initial``, ``exptime``, ``cas``  ``(Status, value, new cas)``
``touch``      ``exptime``                                             ``bool``
``flush_all``  ``delay`` (key is empty)                                None
=============  =====================================================  =============================

Expiry times are absolute unix times (0: never). ``version``, ``stats``,
``noop``, ``quit`` and the connection commands of RESP do not reach the
engine and so do not reach handlers.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..store.base import EngineConfig, Item, Mode, Status, Store


@dataclass(frozen=True)
class Context:
    """Where a call comes from."""

    #: ``text``, ``meta``, ``binary``, ``resp``, ``distcache``; ``""`` outside a connection
    protocol: str = ""
    #: ``host:port`` of the client, ``unix`` for a unix socket, ``""`` when unknown
    peer: str = ""
    #: the command as the client named it: ``gets``, ``mg``, ``GETKQ``, ``SETNX``, ``ADD``...
    command: str = ""


#: The connection context of the call being run (set by the server per command).
current_context: contextvars.ContextVar[Context] = contextvars.ContextVar("scatterhoard_context",
                                                                          default=Context())  # noqa: B039 - frozen

_WRITES = frozenset({"store", "delete", "mark_stale", "arith", "touch", "flush_all"})


@dataclass(frozen=True)
class Call:
    """One engine operation, the same for every protocol."""

    op: str
    key: bytes
    context: Context
    mode: Mode = Mode.SET
    value: bytes = b""
    flags: int = 0
    exptime: float = 0.0
    cas: int = 0
    invalidate: bool = False
    touch: float | None = None
    bump: bool = True
    delta: int = 0
    incr: bool = True
    initial: int | None = None
    stale_exptime: float | None = None
    delay: float = 0.0

    @property
    def writes(self) -> bool:
        """True when the call may change stored data (a ``get`` that touches counts)."""
        return self.op in _WRITES or (self.op == "get" and self.touch is not None)

    def with_(self, **changes: Any) -> Call:
        """A copy with some fields changed (for handlers that transform calls)."""
        return replace(self, **changes)


Forward = Callable[[Call], Any]


class Handler:
    """Base class: override :meth:`handle`; the default passes every call on unchanged.

    A handler may inspect or change the call, answer it itself (return a
    result of the right shape, see the module table) or refuse it with
    :class:`~scatterhoard.store.base.AccessDenied` /
    :class:`~scatterhoard.store.base.Unsupported`.
    """

    @classmethod
    def from_config(cls, config: EngineConfig) -> Handler:
        """Build from ``--handler-opt k=v`` (default: keyword arguments)."""
        return cls(**config.options)

    def handle(self, call: Call, forward: Forward) -> Any:
        return forward(call)


def _run(engine: Store, call: Call) -> Any:
    op = call.op
    if op == "get":
        return engine.get(call.key, call.touch, call.bump)
    if op == "store":
        return engine.store(call.mode, call.key, call.value, call.flags, call.exptime, call.cas, call.invalidate)
    if op == "delete":
        return engine.delete(call.key, call.cas)
    if op == "arith":
        return engine.arith(call.key, call.delta, call.incr, call.initial, call.exptime, call.cas)
    if op == "touch":
        return engine.touch(call.key, call.exptime)
    if op == "flush_all":
        return engine.flush_all(call.delay)
    if op == "mark_stale":
        return engine.mark_stale(call.key, call.cas, call.stale_exptime)
    raise ValueError(f"unknown engine operation {op!r}")


class HandledStore(Store):
    """An engine behind a chain of handlers (the first handler sees calls first)."""

    def __init__(self, engine: Store, handlers: Sequence[Handler]) -> None:
        self.engine = engine
        self.handlers = list(handlers)
        self.blocking = engine.blocking
        self.capabilities = engine.capabilities
        chain: Forward = lambda call: _run(engine, call)  # noqa: E731
        for handler in reversed(self.handlers):
            chain = self._link(handler, chain)
        self._chain = chain

    @staticmethod
    def _link(handler: Handler, forward: Forward) -> Forward:
        return lambda call: handler.handle(call, forward)

    @property
    def max_item_size(self) -> int:
        return self.engine.max_item_size

    @max_item_size.setter
    def max_item_size(self, size: int) -> None:
        self.engine.max_item_size = size

    def bind_loop(self, loop: object) -> None:
        bind = getattr(self.engine, "bind_loop", None)
        if bind is not None:
            bind(loop)

    def _call(self, op: str, key: bytes, **args: Any) -> Any:
        return self._chain(Call(op, key, current_context.get(), **args))

    def get(self, key: bytes, touch: float | None = None, bump: bool = True) -> Item | None:
        result: Item | None = self._call("get", key, touch=touch, bump=bump)
        return result

    def store(self, mode: Mode, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0,
              cas: int = 0, invalidate: bool = False) -> tuple[Status, int]:
        result: tuple[Status, int] = self._call("store", key, mode=mode, value=value, flags=flags,
                                                exptime=exptime, cas=cas, invalidate=invalidate)
        return result

    def delete(self, key: bytes, cas: int = 0) -> Status:
        result: Status = self._call("delete", key, cas=cas)
        return result

    def mark_win(self, key: bytes, item: Item) -> None:
        self.engine.mark_win(key, item)  # a mark on an item already fetched (through the handlers)

    def mark_stale(self, key: bytes, cas: int = 0, exptime: float | None = None) -> Status:
        result: Status = self._call("mark_stale", key, cas=cas, stale_exptime=exptime)
        return result

    def arith(self, key: bytes, delta: int, incr: bool = True, initial: int | None = None,
              exptime: float = 0.0, cas: int = 0) -> tuple[Status, int, int]:
        result: tuple[Status, int, int] = self._call("arith", key, delta=delta, incr=incr, initial=initial,
                                                     exptime=exptime, cas=cas)
        return result

    def touch(self, key: bytes, exptime: float) -> bool:
        return bool(self._call("touch", key, exptime=exptime))

    def flush_all(self, delay: float = 0.0) -> None:
        self._call("flush_all", b"", delay=delay)

    def stats(self) -> dict[str, int | float | str]:
        return self.engine.stats()

    def items_snapshot(self) -> dict[str, int]:
        return self.engine.items_snapshot()

    def sweep(self, budget: int = 10000) -> int:
        sweep = getattr(self.engine, "sweep", None)
        return int(sweep(budget)) if sweep is not None else 0

    def close(self) -> None:
        for handler in self.handlers:
            close = getattr(handler, "close", None)
            if close is not None:
                close()
        self.engine.close()
