"""``scatterhoard.Client``: the blocking client (one thread or many; sockets from per-server pools)."""

from __future__ import annotations

import selectors
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from ..errors import (
    CacheConnectionError,
    CacheError,
    CacheTimeoutError,
    ConfigError,
    ProtocolError,
    ServerError,
)
from ..protocol.text_client import encode_arith, encode_delete, encode_get, encode_store, encode_touch
from ..routing import ServerSpec
from .codec import ConnState, Request
from .codec_text import QUICK_CODE, QUICK_NUMBER, QUICK_VALUES, Quick
from .config import Server
from .core import Batch, ClientCore, Key, Plan, T, is_ok, number
from .errors import socket_error
from .pool import SyncPool
from .serde import Serde

__all__ = ["Client"]

RECV_SIZE = 64 * 1024
SEND_ALL_LIMIT = 64 * 1024
"""A batch with less to send than this is written with blocking sendall, then read; a bigger one
goes through a selector, so replies are read while requests are still going out (no server can
block on a full socket while this process blocks on sending to it)."""

_TIMEVAL = struct.Struct("@ll")
_KERNEL_TIMEOUTS = sys.platform.startswith("linux")
DEFAULT_SPIN_US = 200
SPIN_BACKOFF = 64
"""After a reply that did not come within the spin, this many replies are waited for asleep."""
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_clock_ns = time.perf_counter_ns


class _Conn:
    """One socket and the protocol state of what is in flight on it."""

    __slots__ = ("sock", "state", "kernel_timeout", "timeout", "spin_ns", "spin_skip")

    def __init__(self, sock: socket.socket, state: ConnState, timeout: float, spin_ns: int = 0) -> None:
        self.sock = sock
        self.state = state
        self.timeout = timeout
        self.spin_skip = 0
        self.kernel_timeout = False
        if _KERNEL_TIMEOUTS:
            # Blocking socket + SO_RCVTIMEO/SO_SNDTIMEO: one syscall per recv/send
            # (socket.settimeout() polls before each one).
            try:
                value = _TIMEVAL.pack(int(timeout), int((timeout % 1) * 1_000_000))
                sock.settimeout(None)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
                self.kernel_timeout = True
            except (OSError, struct.error):
                pass
        if not self.kernel_timeout:
            sock.settimeout(timeout)
        # polling needs a blocking socket that takes MSG_DONTWAIT (Linux, SO_RCVTIMEO set above)
        self.spin_ns = spin_ns if self.kernel_timeout and _DONTWAIT else 0

    def recv_reply(self) -> bytes:
        """The first read of a reply. With a spin (``spin_us``), poll the socket that long before
        sleeping in recv: on a fast path to the server the reply comes while this thread is still
        awake, which saves the wake-up of a sleeping thread (tens of us on a virtual machine).
        A reply that does not come in time turns polling off for the next ``SPIN_BACKOFF`` replies,
        so a distant server costs a spin only now and then."""
        sock = self.sock
        if not self.spin_ns:
            return sock.recv(RECV_SIZE)
        if self.spin_skip:
            self.spin_skip -= 1
            return sock.recv(RECV_SIZE)
        end = _clock_ns() + self.spin_ns
        while True:
            try:
                return sock.recv(RECV_SIZE, _DONTWAIT)
            except BlockingIOError:
                if _clock_ns() > end:
                    break
        self.spin_skip = SPIN_BACKOFF
        return sock.recv(RECV_SIZE)

    def restore_blocking(self) -> None:
        if self.kernel_timeout:
            self.sock.setblocking(True)
        else:
            self.sock.settimeout(self.timeout)

    def close(self) -> None:
        self.sock.close()


def _as_error(exc: BaseException, label: str) -> CacheError:
    if isinstance(exc, ProtocolError):
        return ServerError(f"{label}: reply that is not the protocol ({exc}); connection dropped")
    return socket_error(exc, label)


class Client:
    """A blocking memcached client over one or many servers.

    ``servers``: one server or many -- ``"host:port[:weight] [name]"``,
    ``"unix:/path"``, distcache forms, a comma-separated string, a list -- or
    the path of a twemproxy YAML file (with ``pool=NAME`` unless it has one
    pool; its hash, distribution, hash_tag, timeout and ejection settings
    apply unless given here).

    Options (all keyword-only):

    ``protocol``        ``"text"`` (default), ``"meta"`` or ``"binary"``
    ``hash``, ``distribution``, ``hash_tag``
                        routing as in twemproxy/``hoard proxy`` (default
                        ketama + md5, libmemcached's weighted ketama)
    ``connect_timeout``, ``timeout``
                        milliseconds (default 5000, as the kamailio module)
    ``max_pool_size``   connections per server (default 8)
    ``failure_limit``   failures in a row that eject a server (default 2; 0 never)
    ``retry_timeout``   ms an ejected server stays out before a probe (default 30000)
    ``on_error``        ``"miss"`` (default): an outage or a refused request
                        gives a miss / False / None and a log line, never an
                        exception; ``"raise"``: exceptions from
                        :mod:`scatterhoard.errors`
    ``long_keys``       ``"hash"`` (default): keys over 250 bytes or with
                        spaces/control characters are stored under their md5
                        hex; ``"error"``: they raise ClientError
    ``serde``           ``None``/``"raw"`` (bytes), ``"basic"``, ``"json"``,
                        ``"pickle"`` or a serializer object (see
                        :mod:`scatterhoard.client.serde`)
    ``default_expire``  seconds for stores without ``expire`` (default 0: never)
    ``mode``            ``"set"`` (default) or ``"add"``: set() and set_many()
                        never overwrite (the kamailio module's mode 1)
    ``max_value_size``  bytes (default 1 MiB): bigger values raise
                        ValueTooLargeError (or fail with on_error="miss")
                        before anything is sent
    ``spin_us``         microseconds to poll for a reply before sleeping
                        (default 200; 0: always sleep). A reply from a
                        server on the same host or a fast LAN comes within
                        that, and a thread that never slept answers sooner
                        than one the kernel must wake (tens of microseconds
                        on a virtual machine: a loopback get took 40 us
                        instead of 88 here, for the same client CPU). A
                        server slower than the spin turns polling off for
                        the next 64 replies of that connection. Linux only;
                        AsyncClient has no such option (its event loop
                        does the waiting)

    Usable from several threads at once; ``with Client(...) as c:`` closes it.
    """

    def __init__(self, servers: str | ServerSpec | Server | Sequence[str | ServerSpec | Server],
                 **options: Any) -> None:
        spin_us = options.pop("spin_us", DEFAULT_SPIN_US)
        if isinstance(spin_us, bool) or not isinstance(spin_us, int | float) or not 0 <= spin_us <= 10_000:
            raise ConfigError(f"spin_us must be a number of microseconds from 0 to 10000, not {spin_us!r}")
        self._spin_ns = int(spin_us * 1000)
        core = self._core = ClientCore(servers, **options)
        self._pools: list[SyncPool[_Conn]] = [
            SyncPool(self._connector(i), core.max_pool_size, core.timeout, core.labels[i])
            for i in range(len(core.servers))
        ]
        # The commonest single-key commands skip the plan machinery (see _keyed); with the text
        # protocol they skip the request objects too (see _quick).
        self._text = core.protocol == "text"

    # -- plumbing ----------------------------------------------------------------------------------

    @property
    def core(self) -> ClientCore:
        return self._core

    def _connector(self, index: int) -> Any:
        core = self._core
        address = core.servers[index].address

        def connect() -> _Conn:
            if address.kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(core.connect_timeout)
                    sock.connect(address.path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((address.host, address.port), timeout=core.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _Conn(sock, core.codec.state(), core.timeout, self._spin_ns)

        return connect

    def _run(self, plan: Plan[T]) -> T:
        try:
            batch = next(plan)
            while True:
                batch = plan.send(self._execute(batch))
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _fail(self, server: int, conn: _Conn | None, exc: BaseException) -> CacheError:
        core = self._core
        error = _as_error(exc, core.labels[server])
        pool = self._pools[server]
        if conn is not None:
            pool.discard(conn)
        if core.is_connection_failure(error) or isinstance(exc, ProtocolError):
            pool.clear()
            core.io_failed(server, error)
        return error

    def _acquire(self, server: int) -> _Conn | CacheError:
        pool = self._pools[server]
        try:
            return pool.acquire()  # an idle one is taken without the pool's lock
        except CacheTimeoutError as exc:  # pool exhausted: not the server's fault
            return exc
        except OSError as exc:
            return self._fail(server, None, exc)

    def _finish(self, server: int, conn: _Conn, request: Request) -> object:
        self._pools[server].release(conn)
        self._core.io_ok(server)
        try:
            return request.result()
        except CacheError as exc:
            return exc
        except ProtocolError as exc:
            return ServerError(f"{self._core.labels[server]}: {exc}")

    def _read(self, conn: _Conn, request: Request) -> None:
        recv = conn.sock.recv
        feed = conn.state.feed
        deadline = 0.0
        while not request.done:
            data = recv(RECV_SIZE)
            if not data:
                raise CacheConnectionError("connection closed by the server")
            feed(data)
            if not request.done:
                now = time.monotonic()
                if not deadline:
                    deadline = now + conn.timeout
                elif now > deadline:
                    raise CacheTimeoutError("no complete answer in time")

    def _execute(self, batch: Batch) -> list[object]:
        if len(batch) != 1:
            return self._execute_many(batch)
        server, request = batch[0]
        pool = self._pools[server]
        conn = self._acquire(server)
        if isinstance(conn, CacheError):
            return [conn]
        try:
            sock = conn.sock
            state = conn.state
            data = state.submit(request)
            if len(data) > SEND_ALL_LIMIT:  # a big batch: read replies while still sending
                results: list[object] = [None]
                self._select([(0, server, conn, request, data)], results)
                return results
            sock.sendall(data)
            if not request.done:
                data = conn.recv_reply()
                if not data:
                    raise CacheConnectionError("connection closed by the server")
                state.feed(data)
                if not request.done:
                    self._read(conn, request)
        except (OSError, CacheError, ProtocolError) as exc:
            return [self._fail(server, conn, exc)]
        except BaseException:
            pool.discard(conn)
            raise
        pool.release(conn)
        core = self._core
        if core.failures[server]:
            core.io_ok(server)
        try:
            return [request.decode(request)]
        except CacheError as exc:
            return [exc]
        except ProtocolError as exc:
            return [ServerError(f"{core.labels[server]}: {exc}")]

    def _quick(self, server: int, what: str, data: bytes, quick: Quick) -> object:
        """One single-key text request, without a plan: what :meth:`_execute` gives for a batch of one.

        ``data`` is the request as :class:`TextCodec` encodes it and ``quick``
        how its reply reads.  When the reply comes back whole in one read (the
        common case) it is decoded right here, without a request object or the
        connection's state; otherwise ``quick.request`` takes over where the
        general path would have been.
        """
        if len(data) > SEND_ALL_LIMIT:
            return self._execute([(server, quick.request(what, data))])[0]
        conn = self._acquire(server)
        if isinstance(conn, CacheError):
            return conn
        request = None
        try:
            sock = conn.sock
            sock.sendall(data)
            reply = conn.recv_reply()
            if not reply:
                raise CacheConnectionError("connection closed by the server")
            result = quick.parse(reply)
            if result is None:
                request = quick.request(what, data)
                conn.state.submit(request)
                conn.state.feed(reply)
                if not request.done:
                    self._read(conn, request)
        except (OSError, CacheError, ProtocolError) as exc:
            return self._fail(server, conn, exc)
        except BaseException:
            self._pools[server].discard(conn)
            raise
        if request is not None:
            return self._finish(server, conn, request)
        self._pools[server].release(conn)
        core = self._core
        if core.failures[server]:
            core.io_ok(server)
        return result

    def _execute_many(self, batch: Batch) -> list[object]:
        results: list[object] = [None] * len(batch)
        active: list[tuple[int, int, _Conn, Request, bytes]] = []
        total = 0
        try:
            for i, (server, request) in enumerate(batch):
                conn = self._acquire(server)
                if isinstance(conn, CacheError):
                    results[i] = conn
                    continue
                data = conn.state.submit(request)
                total += len(data)
                active.append((i, server, conn, request, data))
            if total <= SEND_ALL_LIMIT:
                self._interleave(active, results)
            else:
                self._select(active, results)
        except BaseException:
            for i, server, conn, _, _ in active:
                if results[i] is None:
                    self._pools[server].discard(conn)
            raise
        return results

    def _interleave(self, active: list[tuple[int, int, _Conn, Request, bytes]], results: list[object]) -> None:
        """Send every server its batch, then read the answers one server after the other."""
        for i, server, conn, _, data in active:
            try:
                conn.sock.sendall(data)
            except (OSError, CacheError) as exc:
                results[i] = self._fail(server, conn, exc)
        for i, server, conn, request, _ in active:
            if results[i] is not None:
                continue
            try:
                if not request.done:
                    self._read(conn, request)
            except (OSError, CacheError, ProtocolError) as exc:
                results[i] = self._fail(server, conn, exc)
                continue
            results[i] = self._finish(server, conn, request)

    def _select(self, active: list[tuple[int, int, _Conn, Request, bytes]], results: list[object]) -> None:
        """Big batches: write and read all servers at once, so no server blocks on a full socket."""
        pending: dict[int, tuple[int, int, _Conn, Request, memoryview]] = {}
        with selectors.DefaultSelector() as selector:
            for i, server, conn, request, data in active:
                conn.sock.setblocking(False)
                pending[conn.sock.fileno()] = (i, server, conn, request, memoryview(data))
                selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            timeout = max(conn.timeout for _, _, conn, _, _ in active) if active else 0.0
            deadline = time.monotonic() + timeout
            while pending:
                remaining = deadline - time.monotonic()
                events = selector.select(remaining) if remaining > 0 else []
                if not events:
                    for fd, (i, server, conn, _, _) in list(pending.items()):
                        selector.unregister(conn.sock)
                        results[i] = self._fail(server, conn, CacheTimeoutError("no complete answer in time"))
                        del pending[fd]
                    break
                for key, mask in events:
                    fd = key.fd
                    i, server, conn, request, view = pending[fd]
                    try:
                        if mask & selectors.EVENT_WRITE and view:
                            sent = conn.sock.send(view)
                            view = view[sent:]
                            pending[fd] = (i, server, conn, request, view)
                            if not view:
                                selector.modify(conn.sock, selectors.EVENT_READ)
                        if mask & selectors.EVENT_READ:
                            data = conn.sock.recv(RECV_SIZE)
                            if not data:
                                raise CacheConnectionError("connection closed by the server")
                            conn.state.feed(data)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except (OSError, CacheError, ProtocolError) as exc:
                        selector.unregister(conn.sock)
                        del pending[fd]
                        results[i] = self._fail(server, conn, exc)
                        continue
                    if request.done and not view:
                        selector.unregister(conn.sock)
                        del pending[fd]
                        conn.restore_blocking()
                        results[i] = self._finish(server, conn, request)

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the idle connections (the client stays usable: it connects again on demand)."""
        for pool in self._pools:
            pool.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        core = self._core
        return (f"Client({core.labels!r}, protocol={core.protocol!r}, hash={core.router.hash_name!r}, "
                f"distribution={core.router.distribution!r})")

    # -- commands ----------------------------------------------------------------------------------

    @property
    def serde(self) -> Serde:
        return self._core.serde

    # The commonest single-key commands skip the plan machinery: revive due servers, route the
    # key, send one request and read its reply (AsyncClient's _keyed, blocking).

    def _route(self, key: Key) -> tuple[bytes, int | CacheError]:
        """Revive the servers due for it, then (wire key, server index or why there is none)."""
        core = self._core
        if core.ejected:
            self._run(core.revive())
        return core.route(key)

    def _keyed(self, key: Key, what: str, encode: Callable[[bytes], bytes], quick: Quick) -> tuple[bytes, object]:
        """Text: send ``encode(wire key)`` and read its reply with ``quick``: (wire key, reply or error)."""
        wire, server = self._route(key)
        return wire, server if isinstance(server, CacheError) else self._quick(server, what, encode(wire), quick)

    def _keyed_request(self, key: Key, build: Callable[[bytes], Request]) -> tuple[bytes, object]:
        """Meta and binary: run the request ``build(wire key)``: (wire key, reply or error)."""
        wire, server = self._route(key)
        return wire, server if isinstance(server, CacheError) else self._execute([(server, build(wire))])[0]

    def get(self, key: Key, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        core = self._core
        if self._text:
            wire, result = self._keyed(key, "get", lambda w: encode_get([w]), QUICK_VALUES)
        else:
            codec = core.codec
            wire, result = self._keyed_request(key, lambda w: codec.retrieve((w,)))
        return core.got(wire, result, default)

    def get_many(self, keys: Iterable[Key]) -> dict[Any, Any]:
        """``{key: value}`` for the keys found (one pipelined request per server)."""
        return self._run(self._core.get_many(keys))

    def gets(self, key: Key, default: Any = None) -> tuple[Any, int | None]:
        """``(value, cas token)``, or ``(default, None)``."""
        return self._run(self._core.gets(key, default))

    def gat(self, key: Key, expire: int, default: Any = None) -> Any:
        """Get and touch: the value (its expiry now ``expire``), or ``default``."""
        return self._run(self._core.gat(key, expire, default))

    def set(self, key: Key, value: Any, expire: int | None = None, noreply: bool = False) -> bool:
        """Store (``add`` instead with mode="add"); True when stored."""
        if self._text and noreply:
            return self._run(self._core.set(key, value, expire, noreply))
        return self._store(self._core.store_command, key, value, expire, noreply)

    def _store(self, command: str, key: Key, value: Any, expire: int | None, noreply: bool = False) -> bool:
        """set/add/replace/append/prepend without a plan (the plans' _store); text: with a reply."""
        core = self._core
        if core.ejected:
            self._run(core.revive())
        wire, data, flags, exptime, server = core.store_args(key, value, expire)
        if isinstance(server, CacheError):
            result: object = server
        elif self._text:
            result = self._quick(server, command, encode_store(command.encode(), wire, data, flags, exptime),
                                 QUICK_CODE)
        else:
            result = self._execute([(server, core.codec.store(command, wire, data, flags, exptime, 0, noreply))])[0]
        return is_ok(core.outcome(result, command))

    def set_many(self, mapping: Mapping[Key, Any] | Iterable[tuple[Key, Any]], expire: int | None = None,
                 noreply: bool = False) -> list[Key]:
        """Store many (pipelined per server); returns the keys that were not stored."""
        return self._run(self._core.set_many(mapping, expire, noreply))

    def add(self, key: Key, value: Any, expire: int | None = None, noreply: bool = False) -> bool:
        """Store only if absent."""
        if self._text and noreply:
            return self._run(self._core.add(key, value, expire, noreply))
        return self._store("add", key, value, expire, noreply)

    def replace(self, key: Key, value: Any, expire: int | None = None, noreply: bool = False) -> bool:
        """Store only if present."""
        if self._text and noreply:
            return self._run(self._core.replace(key, value, expire, noreply))
        return self._store("replace", key, value, expire, noreply)

    def append(self, key: Key, value: Any, noreply: bool = False) -> bool:
        """Add bytes after an existing value."""
        if self._text and noreply:
            return self._run(self._core.append(key, value, noreply))
        return self._store("append", key, value, 0, noreply)

    def prepend(self, key: Key, value: Any, noreply: bool = False) -> bool:
        """Add bytes before an existing value."""
        if self._text and noreply:
            return self._run(self._core.prepend(key, value, noreply))
        return self._store("prepend", key, value, 0, noreply)

    def cas(self, key: Key, value: Any, cas: int, expire: int | None = None,
            noreply: bool = False) -> bool | None:
        """Store if unchanged since gets(): True stored, False changed, None absent."""
        return self._run(self._core.cas(key, value, cas, expire, noreply))

    def delete(self, key: Key, noreply: bool = False) -> bool:
        """True when the key existed."""
        core = self._core
        if not self._text:
            codec = core.codec
            _, result = self._keyed_request(key, lambda w: codec.delete(w, noreply))
        elif noreply:
            return self._run(core.delete(key, noreply))
        else:
            _, result = self._keyed(key, "delete", encode_delete, QUICK_CODE)
        return is_ok(core.outcome(result, "delete"))

    def delete_many(self, keys: Iterable[Key], noreply: bool = False) -> bool:
        """Delete many (pipelined per server); True when every server answered."""
        return self._run(self._core.delete_many(keys, noreply))

    def incr(self, key: Key, delta: int = 1, noreply: bool = False) -> int | None:
        """The new value, or None when the key does not exist."""
        if self._text and noreply:
            return self._run(self._core.incr(key, delta, noreply))
        return self._arith("incr", key, delta, noreply)

    def decr(self, key: Key, delta: int = 1, noreply: bool = False) -> int | None:
        """The new value (not below 0), or None when the key does not exist."""
        if self._text and noreply:
            return self._run(self._core.decr(key, delta, noreply))
        return self._arith("decr", key, delta, noreply)

    def _arith(self, what: str, key: Key, delta: int, noreply: bool = False) -> int | None:
        core = self._core
        delta = core._delta(delta)
        incr = what == "incr"
        if self._text:
            _, result = self._keyed(key, what, lambda w: encode_arith(w, delta, incr), QUICK_NUMBER)
        else:
            codec = core.codec
            _, result = self._keyed_request(key, lambda w: codec.arith(w, delta, incr, noreply))
        return number(core.outcome(result, what))

    def touch(self, key: Key, expire: int, noreply: bool = False) -> bool:
        """Set a new expiry; True when the key exists."""
        core = self._core
        if self._text and noreply:
            return self._run(core.touch(key, expire, noreply))
        exptime = core._exptime(expire)
        if self._text:
            _, result = self._keyed(key, "touch", lambda w: encode_touch(w, exptime), QUICK_CODE)
        else:
            codec = core.codec
            _, result = self._keyed_request(key, lambda w: codec.touch(w, exptime, noreply))
        return is_ok(core.outcome(result, "touch"))

    def flush_all(self, delay: int = 0, noreply: bool = False) -> bool:
        """Invalidate every item on every live server; True when all of them did."""
        return self._run(self._core.flush_all(delay, noreply))

    def stats(self, *args: str) -> dict[str, dict[str, str]]:
        """``{server: {stat: value}}`` for every live server that answered."""
        return self._run(self._core.stats(*args))

    def version(self) -> dict[str, str]:
        """``{server: version}`` for every live server that answered."""
        return self._run(self._core.version())
