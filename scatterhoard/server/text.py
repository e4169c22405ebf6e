"""Executes memcached text-protocol commands against a store (no I/O here).

A session turns the bytes of one connection into reply bytes: all replies to
one read are joined and written at once, so pipelined requests cost one
write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from ..protocol import text as t
from ..store import MemoryStore, Mode, Status, Store, absolute_exptime
from ..store.base import flush_delay
from ..store.item import get_reply
from .meta import execute_meta
from .stats import VERSION, ServerStats, Settings, stats_group

_MODES: Final = {b"set": Mode.SET, b"add": Mode.ADD, b"replace": Mode.REPLACE, b"append": Mode.APPEND,
          b"prepend": Mode.PREPEND, b"cas": Mode.CAS}
_STORE_REPLY: Final = {
    Status.STORED: b"STORED\r\n",
    Status.NOT_STORED: b"NOT_STORED\r\n",
    Status.EXISTS: b"EXISTS\r\n",
    Status.NOT_FOUND: b"NOT_FOUND\r\n",
    Status.TOO_LARGE: b"SERVER_ERROR object too large for cache\r\n",
    Status.NO_MEMORY: b"SERVER_ERROR out of memory storing object\r\n",
}
_clock: Final = time.time  # Final: a static when compiled, not a module attribute lookup per call
NON_NUMERIC: Final = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"


def format_stats(rows: list[tuple[str, object]]) -> bytes:
    return b"".join(b"STAT %s %s\r\n" % (k.encode(), str(v).encode()) for k, v in rows) + b"END\r\n"


class TextSession:
    """One client connection speaking the memcached text (and meta) protocol."""

    def __init__(self, store: Store, stats: ServerStats, settings: Settings,
                 on_flush: Callable[[], None] | None = None) -> None:
        self.store = store
        #: the memory engine itself (not a subclass or wrapper): called natively on the hot paths
        self.memory: MemoryStore | None = store if type(store) is MemoryStore else None
        self.stats = stats
        self.settings = settings
        self.parser = t.TextRequestParser(store.max_item_size)
        self.closing = False
        self.now = 0.0
        self.on_flush = on_flush
        #: True once something (engines.guard) wrapped the entries of ``_dispatch``
        self.wrapped = False
        self._dispatch: dict[type, Callable[[Any, list[bytes]], None]] = {
            t.Get: self._get,
            t.StoreCmd: self._store,
            t.Delete: self._delete,
            t.Arith: self._arith,
            t.Touch: self._touch,
            t.FlushAll: self._flush_all,
            t.Version: self._version,
            t.Verbosity: self._verbosity,
            t.Quit: self._quit,
            t.Stats: self._stats,
            t.Meta: self._meta,
            t.ErrorReply: self._error,
            t.TooLarge: self._too_large,
        }

    def feed(self, data: bytes) -> bytes:
        self.now = 0.0  # the clock, read once per batch by the first get that needs it
        if not self.wrapped:
            key = self.parser.single_get(data)
            if key is not None:  # one plain get, as non-pipelined clients send: no command object
                return self._get_one(key)
        out: list[bytes] = []
        dispatch = self._dispatch
        if self.wrapped:  # handlers wrap the table: every command goes through it
            for cmd in self.parser.feed(data):
                dispatch[type(cmd)](cmd, out)
                if self.closing:
                    break
            return b"".join(out)
        for item in self.parser.feed_bare(data):  # direct (native) calls for the common commands
            if isinstance(item, bytes):  # a plain get of this key
                out.append(self._get_one(item))
            elif isinstance(item, t.Get):
                self._get(item, out)
            elif isinstance(item, t.StoreCmd):
                self._store(item, out)
            elif isinstance(item, t.Meta):
                self._meta(item, out)
            else:
                dispatch[type(item)](item, out)
            if self.closing:
                break
        return b"".join(out)

    # -- retrieval -------------------------------------------------------------------
    def _get(self, cmd: t.Get, out: list[bytes]) -> None:
        st = self.stats
        keys = cmd.keys
        if len(keys) == 1 and not cmd.with_cas and cmd.exptime is None:  # the hot path
            out.append(self._get_one(keys[0]))
            return
        store = self.store
        touch = None
        if cmd.exptime is not None:
            touch = absolute_exptime(cmd.exptime)
            st.cmd_touch += len(cmd.keys)
        hits = 0
        if cmd.with_cas:
            for key in cmd.keys:
                item = store.get(key, touch)
                if item is not None:
                    hits += 1
                    v = item.value
                    out.append(b"VALUE %s %d %d %d\r\n%s\r\n" % (key, item.flags, len(v), item.cas, v))
        else:
            for key in cmd.keys:
                item = store.get(key, touch)
                if item is not None:
                    hits += 1
                    v = item.value
                    out.append(b"VALUE %s %d %d\r\n%s\r\n" % (key, item.flags, len(v), v))
        out.append(b"END\r\n")
        n = len(cmd.keys)
        st.cmd_get += n
        st.get_hits += hits
        st.get_misses += n - hits
        if touch is not None:
            st.touch_hits += hits
            st.touch_misses += n - hits

    def _get_one(self, key: bytes) -> bytes:
        """The reply to ``get <key>``."""
        memory = self.memory
        if memory is not None:
            now = self.now
            if not now:
                now = self.now = _clock()
            item = memory.get(key, None, True, now)
        else:
            item = self.store.get(key)
        st = self.stats
        st.cmd_get += 1
        if item is None:
            st.get_misses += 1
            return b"END\r\n"
        st.get_hits += 1
        if memory is not None:
            return item.text_reply(key)  # built by the first get, then written as is
        return get_reply(key, item.flags, item.value)

    # -- storage ---------------------------------------------------------------------
    def _store(self, cmd: t.StoreCmd, out: list[bytes]) -> None:
        mode = _MODES[cmd.command]
        memory = self.memory
        exptime = absolute_exptime(cmd.exptime)
        if memory is not None:
            status, _ = memory.store(mode, cmd.key, cmd.value, cmd.flags, exptime, cmd.cas)
        else:
            status, _ = self.store.store(mode, cmd.key, cmd.value, cmd.flags, exptime, cmd.cas)
        st = self.stats
        st.cmd_set += 1
        if mode == Mode.CAS:
            if status == Status.STORED:
                st.cas_hits += 1
            elif status == Status.EXISTS:
                st.cas_badval += 1
            elif status == Status.NOT_FOUND:
                st.cas_misses += 1
        if not cmd.noreply:
            out.append(_STORE_REPLY[status])

    def _too_large(self, cmd: t.TooLarge, out: list[bytes]) -> None:
        self.stats.cmd_set += 1
        if cmd.command == b"set":
            self.store.delete(cmd.key)  # memcached: a failed set leaves no stale value behind
        if not cmd.noreply:
            out.append(b"SERVER_ERROR object too large for cache\r\n")

    def _delete(self, cmd: t.Delete, out: list[bytes]) -> None:
        status = self.store.delete(cmd.key)
        if status == Status.DELETED:
            self.stats.delete_hits += 1
            reply = b"DELETED\r\n"
        else:
            self.stats.delete_misses += 1
            reply = b"NOT_FOUND\r\n"
        if not cmd.noreply:
            out.append(reply)

    def _arith(self, cmd: t.Arith, out: list[bytes]) -> None:
        status, value, _ = self.store.arith(cmd.key, cmd.delta, cmd.incr)
        st = self.stats
        if status == Status.STORED:
            if cmd.incr:
                st.incr_hits += 1
            else:
                st.decr_hits += 1
            reply = b"%d\r\n" % value
        elif status == Status.NOT_FOUND:
            if cmd.incr:
                st.incr_misses += 1
            else:
                st.decr_misses += 1
            reply = b"NOT_FOUND\r\n"
        elif status == Status.NON_NUMERIC:
            reply = NON_NUMERIC
        else:
            reply = _STORE_REPLY.get(status, b"SERVER_ERROR out of memory\r\n")
        if not cmd.noreply:
            out.append(reply)

    def _touch(self, cmd: t.Touch, out: list[bytes]) -> None:
        self.stats.cmd_touch += 1
        if self.store.touch(cmd.key, absolute_exptime(cmd.exptime)):
            self.stats.touch_hits += 1
            reply = b"TOUCHED\r\n"
        else:
            self.stats.touch_misses += 1
            reply = b"NOT_FOUND\r\n"
        if not cmd.noreply:
            out.append(reply)

    # -- everything else -----------------------------------------------------------------
    def _flush_all(self, cmd: t.FlushAll, out: list[bytes]) -> None:
        self.stats.cmd_flush += 1
        self.store.flush_all(flush_delay(cmd.delay))
        if self.on_flush is not None:
            self.on_flush()
        if not cmd.noreply:
            out.append(b"OK\r\n")

    def _version(self, cmd: t.Version, out: list[bytes]) -> None:
        out.append(b"VERSION %s\r\n" % VERSION.encode())

    def _verbosity(self, cmd: t.Verbosity, out: list[bytes]) -> None:
        self.settings.verbosity = cmd.level
        if not cmd.noreply:
            out.append(b"OK\r\n")

    def _quit(self, cmd: t.Quit, out: list[bytes]) -> None:
        self.closing = True

    def _stats(self, cmd: t.Stats, out: list[bytes]) -> None:
        group = cmd.args[0] if cmd.args else b""
        rows = stats_group(self.stats, group, self.store, self.settings)
        if rows is None:
            out.append(b"ERROR\r\n")
        elif group == b"reset":
            out.append(b"RESET\r\n")
        else:
            out.append(format_stats(rows))

    def _meta(self, cmd: t.Meta, out: list[bytes]) -> None:
        self.stats.cmd_meta += 1
        execute_meta(self, cmd, out)

    def _error(self, cmd: t.ErrorReply, out: list[bytes]) -> None:
        self.stats.protocol_errors += 1
        out.append(cmd.message + b"\r\n")
        if cmd.close:
            self.closing = True
