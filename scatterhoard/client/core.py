"""The protocol-neutral client: every command written once, as a plan over the sans-IO codec.

A *plan* is a generator.  It yields a batch -- a list of ``(server index,
Request)`` pairs that can go out together -- and receives one result per pair:
the request's decoded result, or the :class:`~scatterhoard.errors.CacheError`
that stopped it.  It returns the command's value.  :class:`Client` runs plans
with blocking sockets and :class:`AsyncClient` with asyncio, and
:class:`ClientCore` knows no socket::

    def get(self, key, default=None):          # in ClientCore
        wire, server = self.route(key)
        result = (yield [(server, codec.retrieve((wire,)))])[0]
        return self.got(wire, result, default)

A generator costs a few microseconds per command, a lot next to a round
trip on a local network, so the commonest single-key commands (get, the
stores, delete, incr/decr, touch) also run without one: the clients call
the same steps directly -- :meth:`ClientCore.revive` when a server is
ejected, :meth:`~ClientCore.route` or :meth:`~ClientCore.store_args`, the
request, then :meth:`~ClientCore.got` or :meth:`~ClientCore.outcome` --
and so answer exactly as the plans do.  ``Client`` does it for the text
protocol (with :class:`~scatterhoard.client.codec_text.Quick` replies),
``AsyncClient`` for every protocol.

The I/O loops report each server's health back (:meth:`ClientCore.io_ok`,
:meth:`ClientCore.io_failed`); after ``failure_limit`` failures in a row a
server is ejected for ``retry_timeout`` ms (the :class:`~scatterhoard.routing.Router`
then sends its keys to the others, exactly as nutcracker's
``auto_eject_hosts`` does), and a plan probes it (``version``) once that
time has passed; it comes back when the probe succeeds.

Compiled with mypyc (see :mod:`scatterhoard._build`), as are the codecs. A compiled function
checks its arguments' types at the call, so the numbers an application hands over (expire,
delta, delay, a CAS token) are typed ``object`` here and checked by :meth:`ClientCore._exptime`
and friends, which say what is wrong (``expire=1.5`` is a ValueError naming the parameter, not
a TypeError from the call).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

from ..errors import CacheConnectionError, CacheError, CacheTimeoutError, ClientError, ConfigError
from ..routing import NoLiveServersError, Router, ServerSpec
from .codec import NOT_FOUND, OK, BinaryCodec, Codec, MetaCodec, Request, TextCodec
from .config import Server, is_yaml_path, load_yaml_pool, parse_servers
from .errors import ValueTooLargeError
from .serde import Serde, get_serde

__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "DEFAULT_TIMEOUT_MS",
    "MAX_KEY_LENGTH",
    "Batch",
    "ClientCore",
    "Plan",
]

T = TypeVar("T")
Batch = list[tuple[int, Request]]
Plan = Generator[Batch, list[Any], T]
Key = str | bytes

log = logging.getLogger("scatterhoard.client")

MAX_KEY_LENGTH: Final = 250
DEFAULT_TIMEOUT_MS: Final = 5000  # the kamailio memcached module's default
DEFAULT_MAX_VALUE_SIZE: Final = 1024 * 1024
DEFAULT_POOL_SIZE: Final = 8
_MAX_EXPTIME: Final = (1 << 31) - 1
_MAX_DELTA: Final = (1 << 64) - 1
_bad_key_char = re.compile(rb"[\x00-\x20\x7f]").search
_md5 = hashlib.md5
_PROTOCOLS: Final = ("text", "meta", "binary")
_CONNECTION_ERRORS: Final = (CacheConnectionError, CacheTimeoutError)


def is_ok(code: int | None) -> bool:
    """The answer of set/add/.../delete/touch: True when the server said so (STORED, DELETED...)."""
    return code == OK


def number(value: int | None) -> int | None:
    """The answer of incr/decr: the new value, None for a missing key (or a failure)."""
    return None if value is None else int(value)


def _cas_answer(code: int | None) -> bool | None:
    """True stored, None absent, False changed since gets() (or failed)."""
    if code == OK:
        return True
    return None if code == NOT_FOUND else False


def _ms(value: float | int, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of milliseconds, not {value!r}")
    return float(value) / 1000.0


class ClientCore:
    """Options, routing, key/value preparation, health and the command plans.

    See :class:`scatterhoard.Client` for the options.
    """

    def __init__(
        self,
        servers: str | ServerSpec | Server | Sequence[str | ServerSpec | Server],
        *,
        pool: str | None = None,
        protocol: str = "text",
        hash: str | None = None,
        distribution: str | None = None,
        hash_tag: str | None = None,
        connect_timeout: float | None = None,
        timeout: float | None = None,
        max_pool_size: int = DEFAULT_POOL_SIZE,
        failure_limit: int | None = None,
        retry_timeout: float | None = None,
        on_error: str = "miss",
        long_keys: str = "hash",
        serde: str | Serde | None = None,
        default_expire: object = 0,
        mode: str = "set",
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
    ) -> None:
        if is_yaml_path(servers):
            assert isinstance(servers, str)
            conf = load_yaml_pool(servers, pool)
            server_list = conf.servers
            hash = conf.hash if hash is None else hash
            distribution = conf.distribution if distribution is None else distribution
            hash_tag = conf.hash_tag if hash_tag is None else hash_tag
            if timeout is None and conf.timeout is not None:
                timeout = conf.timeout
            if failure_limit is None:
                failure_limit = conf.server_failure_limit if conf.auto_eject_hosts else 0
            if retry_timeout is None:
                retry_timeout = conf.server_retry_timeout
        elif pool is not None:
            raise ConfigError(f"pool={pool!r} needs servers to be the path of a twemproxy YAML file")
        else:
            server_list = parse_servers(servers)
        if protocol not in _PROTOCOLS:
            raise ConfigError(f"unknown protocol {protocol!r}; expected one of: {', '.join(_PROTOCOLS)}")
        if on_error not in ("miss", "raise"):
            raise ConfigError(f"on_error must be 'miss' or 'raise', not {on_error!r}")
        if long_keys not in ("hash", "error"):
            raise ConfigError(f"long_keys must be 'hash' or 'error', not {long_keys!r}")
        if mode not in ("set", "add"):
            raise ConfigError(f"mode must be 'set' or 'add', not {mode!r}")
        if isinstance(max_pool_size, bool) or not isinstance(max_pool_size, int) or max_pool_size < 1:
            raise ConfigError(f"max_pool_size must be >= 1, not {max_pool_size!r}")
        failure_limit = 2 if failure_limit is None else failure_limit
        if isinstance(failure_limit, bool) or not isinstance(failure_limit, int) or failure_limit < 0:
            raise ConfigError(f"failure_limit must be >= 0 (0: never eject), not {failure_limit!r}")
        if isinstance(max_value_size, bool) or not isinstance(max_value_size, int) or max_value_size < 1:
            raise ConfigError(f"max_value_size must be a positive number of bytes, not {max_value_size!r}")

        self.servers: list[Server] = server_list
        self.labels: list[str] = [s.label for s in server_list]
        self.router = Router([s.spec for s in server_list], hash=hash or "md5",
                             distribution=distribution or "ketama", hash_tag=hash_tag)
        self.protocol = protocol
        self.codec: Codec = (TextCodec() if protocol == "text" else MetaCodec() if protocol == "meta"
                             else BinaryCodec())
        self.serde: Serde = get_serde(serde)
        self.connect_timeout = _ms(DEFAULT_TIMEOUT_MS if connect_timeout is None else connect_timeout,
                                   "connect_timeout")
        self.timeout = _ms(DEFAULT_TIMEOUT_MS if timeout is None else timeout, "timeout")
        self.retry_timeout = _ms(30000 if retry_timeout is None else retry_timeout, "retry_timeout")
        self.max_pool_size = max_pool_size
        self.failure_limit = failure_limit
        self.raise_errors = on_error == "raise"
        self.hash_keys = long_keys == "hash"
        self.default_expire = self._exptime(default_expire)
        self.store_command = "add" if mode == "add" else "set"
        self.max_value_size = max_value_size
        n = len(server_list)
        self.failures = [0] * n
        self._retry_at = [0.0] * n
        self.ejected: set[int] = set()

    # -- health ------------------------------------------------------------------------------------

    def io_ok(self, server: int) -> None:
        """A request to ``server`` got its answer."""
        if self.failures[server]:
            self.failures[server] = 0
            if server in self.ejected:
                self.ejected.discard(server)
                self._set_live(self.router.live | {server})
                log.warning("cache server %s is back (probe succeeded); its keys route to it again",
                            self.labels[server])
            else:
                log.info("cache server %s answers again", self.labels[server])

    def io_failed(self, server: int, exc: CacheError) -> None:
        """A request to ``server`` failed at the connection level (connect, lost, timeout, garbage)."""
        failures = self.failures[server] = self.failures[server] + 1
        label = self.labels[server]
        if server in self.ejected:
            self._retry_at[server] = time.monotonic() + self.retry_timeout
            log.debug("cache server %s is still failing: %s", label, exc)
            return
        if self.failure_limit and failures >= self.failure_limit:
            self.ejected.add(server)
            self._retry_at[server] = time.monotonic() + self.retry_timeout
            self._set_live(self.router.live - {server})
            log.warning("cache server %s ejected for %.0f ms after %d failures in a row (%s); "
                        "its keys go to the other servers", label, self.retry_timeout * 1000, failures, exc)
        elif failures == 1:
            log.warning("cache server %s failed: %s", label, exc)
        else:
            log.debug("cache server %s failed again (%d in a row): %s", label, failures, exc)

    def _set_live(self, live: frozenset[int]) -> None:
        """Swap in a router for the new live set (other threads keep using the old one meanwhile)."""
        old = self.router
        router = Router(old.servers, hash=old.hash_name, distribution=old.distribution, hash_tag=old.hash_tag)
        router.set_live(live)
        self.router = router

    @staticmethod
    def is_connection_failure(exc: BaseException) -> bool:
        return isinstance(exc, _CONNECTION_ERRORS)

    def revive(self) -> Plan[None]:
        """Probe the ejected servers whose retry time has come (at most one probe per retry period)."""
        now = time.monotonic()
        due = [i for i in sorted(self.ejected) if self._retry_at[i] <= now]
        if not due:
            return
        for i in due:
            self._retry_at[i] = now + self.retry_timeout
        yield [(i, self.codec.version()) for i in due]

    # -- helpers -----------------------------------------------------------------------------------

    def _fallback(self, exc: BaseException, what: str, value: T) -> T:
        """``on_error``: raise, or log and answer ``value`` (a miss / False / None)."""
        if self.raise_errors:
            raise exc
        if isinstance(exc, _CONNECTION_ERRORS):
            log.debug("%s: %s; answering %r", what, exc, value)
        else:
            log.warning("%s failed: %s; answering %r", what, exc, value)
        return value

    def outcome(self, result: Any, what: str, fallback: Any = None) -> Any:
        """A single-server command's ``result``; for the error that stopped it, :meth:`_fallback`'s answer."""
        return self._fallback(result, what, fallback) if isinstance(result, BaseException) else result

    def route(self, key: Key) -> tuple[bytes, int | CacheError]:
        """A single-key command's wire key and server index (or the NoLiveServersError that answers it)."""
        wire = self._key(key)
        try:
            return wire, self.router.index_for(wire)
        except NoLiveServersError as exc:
            return wire, exc

    def _key(self, key: Key) -> bytes:
        """The key as sent: UTF-8 for str; md5 hex for an unusable one (long_keys='hash')."""
        if type(key) is bytes:
            raw = key
        elif type(key) is str:
            raw = key.encode("utf-8")
        elif isinstance(key, (bytes, bytearray, memoryview)):
            raw = bytes(key)
        elif isinstance(key, str):
            raw = str(key).encode("utf-8")
        else:
            raise TypeError(f"a key must be str or bytes, not {type(key).__name__}")
        if len(raw) > MAX_KEY_LENGTH or _bad_key_char(raw) is not None:
            if self.hash_keys:
                return _md5(raw).hexdigest().encode()
            reason = (f"is {len(raw)} bytes long (at most {MAX_KEY_LENGTH})" if len(raw) > MAX_KEY_LENGTH
                      else "contains a space or a control character")
            raise ClientError(f"key {raw[:60]!r} {reason}; create the client with long_keys='hash' "
                              "to store such keys under their md5")
        if not raw:
            raise ClientError("empty key")
        return raw

    @staticmethod
    def _exptime(expire: object) -> int:
        if isinstance(expire, bool) or not isinstance(expire, int) or not 0 <= expire <= _MAX_EXPTIME:
            raise ValueError(f"expire must be an int of seconds from 0 to {_MAX_EXPTIME} "
                             f"(or a unix time), not {expire!r}")
        return expire

    def _expire(self, expire: object) -> int:
        return self.default_expire if expire is None else self._exptime(expire)

    @staticmethod
    def _delta(delta: object) -> int:
        if isinstance(delta, bool) or not isinstance(delta, int) or not 0 <= delta <= _MAX_DELTA:
            raise ValueError(f"delta must be an int from 0 to 2**64-1, not {delta!r}")
        return delta

    def _too_large(self, wire: bytes, data: bytes) -> ValueTooLargeError:
        return ValueTooLargeError(f"value for key {wire[:60]!r} is {len(data)} bytes; "
                                  f"the item size limit is {self.max_value_size} (max_value_size)")

    def _value(self, wire: bytes, value: Any) -> tuple[bytes, int]:
        data, flags = self.serde.serialize(wire, value)
        if len(data) > self.max_value_size:
            raise self._too_large(wire, data)
        return data, flags

    def store_args(self, key: Key, value: Any,
                   expire: object) -> tuple[bytes, bytes, int, int, int | CacheError]:
        """``(wire key, data, flags, exptime, server)`` for a single-key store.

        ``server`` is instead the error that answers the command when the value
        is too large or no server is live (nothing is sent then).
        """
        wire, server = self.route(key)
        exptime = self._expire(expire)
        data, flags = self.serde.serialize(wire, value)
        if len(data) > self.max_value_size:
            server = self._too_large(wire, data)
        return wire, data, flags, exptime, server

    # -- retrieval ---------------------------------------------------------------------------------

    def _get_one(self, key: Key, default: Any, cas: bool, touch: int | None, what: str) -> Plan[Any]:
        if self.ejected:
            yield from self.revive()
        wire, server = self.route(key)
        result = server if isinstance(server, CacheError) else (
            yield [(server, self.codec.retrieve((wire,), cas, touch))])[0]
        return self.got(wire, result, default, cas, what)

    def got(self, wire: bytes, result: Any, default: Any, cas: bool = False, what: str = "get") -> Any:
        """A single-key retrieval's answer from its result: the hits, or the error that stopped it."""
        miss = (default, None) if cas else default
        if isinstance(result, BaseException):
            return self._fallback(result, what, miss)
        if not result:
            return miss
        item = result[0]
        value = self.serde.deserialize(wire, item.value, item.flags)
        return (value, item.cas) if cas else value

    def get(self, key: Key, default: Any = None) -> Plan[Any]:
        return self._get_one(key, default, False, None, "get")

    def gets(self, key: Key, default: Any = None) -> Plan[tuple[Any, int | None]]:
        return self._get_one(key, default, True, None, "gets")

    def gat(self, key: Key, expire: object, default: Any = None) -> Plan[Any]:
        return self._get_one(key, default, False, self._exptime(expire), "gat")

    def get_many(self, keys: Iterable[Key]) -> Plan[dict[Any, Any]]:
        if self.ejected:
            yield from self.revive()
        wires: dict[bytes, Key] = {}
        key_of = self._key
        for key in keys:
            wires[key_of(key)] = key
        if not wires:
            return {}
        try:
            groups = self.router.split(wires)
        except NoLiveServersError as exc:
            return self._fallback(exc, "get_many", {})
        retrieve = self.codec.retrieve
        results = yield [(server, retrieve(group)) for server, group in groups.items()]
        out: dict[Any, Any] = {}
        deserialize = self.serde.deserialize
        for result in results:
            if isinstance(result, BaseException):
                self._fallback(result, "get_many", None)
                continue
            for item in result:
                original = wires.get(item.key)
                if original is not None:
                    out[original] = deserialize(item.key, item.value, item.flags)
        return out

    # -- storage -----------------------------------------------------------------------------------

    def _store(self, command: str, key: Key, value: Any, expire: object, noreply: bool,
               answer: Callable[[int | None], T], cas: int = 0) -> Plan[T]:
        """``answer(result code)``; the code is None when the command failed (and on_error='miss')."""
        if self.ejected:
            yield from self.revive()
        wire, data, flags, exptime, server = self.store_args(key, value, expire)
        result = server if isinstance(server, CacheError) else (
            yield [(server, self.codec.store(command, wire, data, flags, exptime, cas, noreply))])[0]
        return answer(self.outcome(result, command))

    def set(self, key: Key, value: Any, expire: object = None, noreply: bool = False) -> Plan[bool]:
        return self._store(self.store_command, key, value, expire, noreply, is_ok)

    def add(self, key: Key, value: Any, expire: object = None, noreply: bool = False) -> Plan[bool]:
        return self._store("add", key, value, expire, noreply, is_ok)

    def replace(self, key: Key, value: Any, expire: object = None, noreply: bool = False) -> Plan[bool]:
        return self._store("replace", key, value, expire, noreply, is_ok)

    def append(self, key: Key, value: Any, noreply: bool = False) -> Plan[bool]:
        return self._store("append", key, value, 0, noreply, is_ok)

    def prepend(self, key: Key, value: Any, noreply: bool = False) -> Plan[bool]:
        return self._store("prepend", key, value, 0, noreply, is_ok)

    def cas(self, key: Key, value: Any, cas: object, expire: object = None,
            noreply: bool = False) -> Plan[bool | None]:
        if isinstance(cas, bool) or not isinstance(cas, int) or not 0 < cas <= _MAX_DELTA:
            raise ValueError(f"cas must be the positive token gets() returned, not {cas!r}")
        return self._store("cas", key, value, expire, noreply, _cas_answer, cas)

    def set_many(self, mapping: Mapping[Key, Any] | Iterable[tuple[Key, Any]], expire: object = None,
                 noreply: bool = False) -> Plan[list[Key]]:
        """The keys that were not stored."""
        if self.ejected:
            yield from self.revive()
        pairs = mapping.items() if isinstance(mapping, Mapping) else mapping
        exptime = self._expire(expire)
        command = self.store_command
        failed: list[Key] = []
        items: dict[bytes, tuple[Key, bytes, int]] = {}
        for key, value in pairs:
            wire = self._key(key)
            try:
                data, flags = self._value(wire, value)
            except ValueTooLargeError as exc:
                self._fallback(exc, "set_many", None)
                failed.append(key)
                continue
            items[wire] = (key, data, flags)
        if not items:
            return failed
        try:
            groups = self.router.split(items)
        except NoLiveServersError as exc:
            self._fallback(exc, "set_many", None)
            return failed + [original for original, _, _ in items.values()]
        batch: Batch = []
        for server, wires in groups.items():
            group = [(wire, items[wire][1], items[wire][2]) for wire in wires]
            batch.append((server, self.codec.store_many(command, group, exptime, noreply)))
        results = yield batch
        for result, wires in zip(results, groups.values(), strict=True):
            if isinstance(result, BaseException):
                self._fallback(result, "set_many", None)
                failed.extend(items[wire][0] for wire in wires)
                continue
            if noreply:
                continue  # success is assumed
            for wire, code in zip(wires, result, strict=True):
                if code == OK:
                    continue
                if isinstance(code, BaseException):
                    self._fallback(code, "set_many", None)
                failed.append(items[wire][0])
        return failed

    # -- delete / arithmetic / touch ---------------------------------------------------------------

    def _simple(self, what: str, key: Key, build: Any, fallback: Any) -> Plan[Any]:
        if self.ejected:
            yield from self.revive()
        wire, server = self.route(key)
        result = server if isinstance(server, CacheError) else (yield [(server, build(wire))])[0]
        return self.outcome(result, what, fallback)

    def delete(self, key: Key, noreply: bool = False) -> Plan[bool]:
        code = yield from self._simple("delete", key, lambda wire: self.codec.delete(wire, noreply), None)
        return is_ok(code)

    def delete_many(self, keys: Iterable[Key], noreply: bool = False) -> Plan[bool]:
        """True when every server holding some of the keys answered (whether or not the keys existed)."""
        if self.ejected:
            yield from self.revive()
        wires = list(dict.fromkeys(self._key(key) for key in keys))
        if not wires:
            return True
        try:
            groups = self.router.split(wires)
        except NoLiveServersError as exc:
            return self._fallback(exc, "delete_many", False)
        results = yield [(server, self.codec.delete_many(group, noreply)) for server, group in groups.items()]
        ok = True
        for result in results:
            if isinstance(result, BaseException):
                ok = self._fallback(result, "delete_many", False)
                continue
            if noreply:
                continue
            for code in result:
                if isinstance(code, BaseException):
                    ok = self._fallback(code, "delete_many", False)
        return ok

    def incr(self, key: Key, delta: object = 1, noreply: bool = False) -> Plan[int | None]:
        delta = self._delta(delta)
        value = yield from self._simple("incr", key, lambda wire: self.codec.arith(wire, delta, True, noreply),
                                        None)
        return number(value)

    def decr(self, key: Key, delta: object = 1, noreply: bool = False) -> Plan[int | None]:
        delta = self._delta(delta)
        value = yield from self._simple("decr", key, lambda wire: self.codec.arith(wire, delta, False, noreply),
                                        None)
        return number(value)

    def touch(self, key: Key, expire: object, noreply: bool = False) -> Plan[bool]:
        exptime = self._exptime(expire)
        code = yield from self._simple("touch", key, lambda wire: self.codec.touch(wire, exptime, noreply),
                                       None)
        return is_ok(code)

    # -- every server ------------------------------------------------------------------------------

    def _each(self, what: str, build: Any) -> Plan[tuple[int, dict[str, Any]]]:
        """Send one request to every live server: (servers asked, label -> result without failures)."""
        if self.ejected:
            yield from self.revive()
        live = sorted(self.router.live)
        if not live:
            self._fallback(NoLiveServersError(f"all {len(self.servers)} servers are ejected"), what, None)
            return 0, {}
        results = yield [(server, build()) for server in live]
        out: dict[str, Any] = {}
        for server, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                self._fallback(result, f"{what} on {self.labels[server]}", None)
            else:
                out[self.labels[server]] = result
        return len(live), out

    def flush_all(self, delay: object = 0, noreply: bool = False) -> Plan[bool]:
        """True when every live server flushed."""
        delay = self._exptime(delay)
        asked, done = yield from self._each("flush_all", lambda: self.codec.flush_all(delay, noreply))
        return bool(asked) and len(done) == asked

    def stats(self, *args: str) -> Plan[dict[str, dict[str, str]]]:
        """``stats [args]`` of every live server, by server label."""
        words = [arg.encode() for arg in args]
        if any(not w or _bad_key_char(w) for w in words):
            raise ValueError(f"bad stats arguments {args!r}")
        _, out = yield from self._each("stats", lambda: self.codec.stats(words))
        return out

    def version(self) -> Plan[dict[str, str]]:
        """The version of every live server, by server label."""
        _, out = yield from self._each("version", self.codec.version)
        return out

