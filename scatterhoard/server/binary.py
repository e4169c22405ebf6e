"""Executes memcached binary-protocol requests against a store (no I/O here).

Quiet commands suppress success replies (and get misses); errors are always
sent. Replies to one read are joined into one write.
"""

from __future__ import annotations

from collections.abc import Callable

from ..protocol import binary as b
from ..store import MemoryStore, Mode, Status, Store, absolute_exptime
from ..store.base import ITEM_HEADER_SIZE, flush_delay
from .binary_fast import quick_gets
from .stats import VERSION, ServerStats, Settings, stats_group

_STORE_MODES = {b.OP_SET: Mode.SET, b.OP_ADD: Mode.ADD, b.OP_REPLACE: Mode.REPLACE,
                b.OP_APPEND: Mode.APPEND, b.OP_PREPEND: Mode.PREPEND}
_CONCAT_MODES = (Mode.APPEND, Mode.PREPEND)
_STATUS = {
    Status.EXISTS: b.STATUS_KEY_EEXISTS,
    Status.NOT_FOUND: b.STATUS_KEY_ENOENT,
    Status.TOO_LARGE: b.STATUS_E2BIG,
    Status.NO_MEMORY: b.STATUS_ENOMEM,
    Status.NON_NUMERIC: b.STATUS_DELTA_BADVAL,
}
_VERSION = VERSION.encode()


class BinarySession:
    """One client connection speaking the memcached binary protocol."""

    def __init__(self, store: Store, stats: ServerStats, settings: Settings) -> None:
        self.store = store
        self.stats = stats
        self.settings = settings
        self.parser = b.BinaryParser(store.max_item_size + 512, magic=b.REQUEST_MAGIC)
        #: the memory engine itself: runs of plain gets are answered by :func:`quick_gets`
        self.memory: MemoryStore | None = store if type(store) is MemoryStore else None
        self.closing = False
        self._dispatch: dict[int, Callable[[b.BinRequest, list[bytes]], None]] = {
            b.OP_GET: self._get, b.OP_GETK: self._get, b.OP_GAT: self._get, b.OP_GATK: self._get,
            b.OP_SET: self._store, b.OP_ADD: self._store, b.OP_REPLACE: self._store,
            b.OP_APPEND: self._store, b.OP_PREPEND: self._store,
            b.OP_DELETE: self._delete, b.OP_INCREMENT: self._arith, b.OP_DECREMENT: self._arith,
            b.OP_TOUCH: self._touch, b.OP_FLUSH: self._flush, b.OP_NOOP: self._noop,
            b.OP_VERSION: self._version, b.OP_QUIT: self._quit, b.OP_STAT: self._stat,
            b.OP_VERBOSITY: self._verbosity,
        }

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        parser = self.parser
        if self.memory is not None and not parser.buffered and not parser.skipping:
            done = quick_gets(data, self.memory, self.stats, out)  # the leading run of plain gets
            if done:
                if done == len(data):
                    return b"".join(out)
                data = data[done:]
        try:
            items = parser.feed(data)
        except b.BinaryFramingError as exc:
            self._run(exc.packets, out)
            if exc.status is not None and not self.closing:
                out.append(b.encode_error(exc.opcode, exc.status, exc.opaque))
            self.closing = True
            self.stats.protocol_errors += 1
            return b"".join(out)
        self._run(items, out)
        return b"".join(out)

    def _run(self, items: list[b.Packet | b.TooLarge], out: list[bytes]) -> None:
        dispatch = self._dispatch
        for item in items:
            if self.closing:
                return
            if type(item) is b.TooLarge:
                inv = b.decode_too_large(item)
                # not counted in cmd_set: memcached counts the values it could read into an item
                if inv.status == b.STATUS_E2BIG and b.base_opcode(item.opcode) == b.OP_SET:
                    self.store.delete(item.key)  # a failed set leaves no stale value (memcached)
                out.append(inv.encode())
                self.closing = inv.close
                continue
            assert type(item) is b.Packet
            req = b.decode_request(item)
            if type(req) is b.BinInvalid:
                self.stats.protocol_errors += 1
                out.append(req.encode())
                self.closing = req.close
                continue
            assert type(req) is b.BinRequest
            handler = dispatch.get(req.command)
            if handler is None:  # SASL and anything else unimplemented
                out.append(b.encode_error(req.opcode, b.STATUS_UNKNOWN_COMMAND, req.opaque))
                continue
            handler(req, out)

    def _error(self, req: b.BinRequest, status: int, out: list[bytes]) -> None:
        out.append(b.encode_error(req.opcode, status, req.opaque))

    # -- handlers ---------------------------------------------------------------------
    def _get(self, req: b.BinRequest, out: list[bytes]) -> None:
        # GAT* count as touches only, not as gets (memcached's process_bin_get_or_touch)
        st = self.stats
        touching = req.command == b.OP_GAT or req.command == b.OP_GATK
        touch = absolute_exptime(req.exptime) if touching else None
        item = self.store.get(req.key, touch)
        if touching:
            st.cmd_touch += 1
        else:
            st.cmd_get += 1
        if item is None:
            if touching:
                st.touch_misses += 1
            else:
                st.get_misses += 1
            if req.quiet:
                return
            if req.returns_key:
                out.append(b.encode_response(req.opcode, b.STATUS_KEY_ENOENT, key=req.key, opaque=req.opaque))
            else:
                self._error(req, b.STATUS_KEY_ENOENT, out)
            return
        if touching:
            st.touch_hits += 1
        else:
            st.get_hits += 1
        out.append(b.encode_response(req.opcode, 0, req.key if req.returns_key else b"",
                                     b.pack_get_reply_extras(item.flags), item.value, req.opaque, item.cas))

    def _store(self, req: b.BinRequest, out: list[bytes]) -> None:
        fits = self._fits(req.key, req.value)
        if fits:  # memcached counts the values it could read into an item
            self.stats.cmd_set += 1
        mode = _STORE_MODES[req.command]
        concat = mode in _CONCAT_MODES
        status, cas = self.store.store(mode, req.key, req.value, req.flags, absolute_exptime(req.exptime),
                                       req.cas)
        if status == Status.STORED:
            if req.cas and not concat:
                self.stats.cas_hits += 1
            if not req.quiet:
                out.append(b.encode_response(req.opcode, 0, opaque=req.opaque, cas=cas))
            return
        if status == Status.NOT_STORED:
            code = {Mode.ADD: b.STATUS_KEY_EEXISTS, Mode.REPLACE: b.STATUS_KEY_ENOENT}.get(
                mode, b.STATUS_NOT_STORED)
        elif concat and (status == Status.NOT_FOUND or (status == Status.TOO_LARGE and fits)):
            # memcached: APPEND/PREPEND with a CAS is no CAS command (a missing item is
            # NOT_STORED, no cas_* stats), and only a value too large on its own is E2BIG;
            # one that makes the item too large is NOT_STORED.
            code = b.STATUS_NOT_STORED
        else:
            code = _STATUS.get(status, b.STATUS_NOT_STORED)
            if req.cas and not concat:
                if status == Status.EXISTS:
                    self.stats.cas_badval += 1
                elif status == Status.NOT_FOUND:
                    self.stats.cas_misses += 1
        self._error(req, code, out)

    def _fits(self, key: bytes, value: bytes) -> bool:
        return len(key) + len(value) + ITEM_HEADER_SIZE <= self.store.max_item_size

    def _delete(self, req: b.BinRequest, out: list[bytes]) -> None:
        status = self.store.delete(req.key, req.cas)
        if status == Status.DELETED:
            self.stats.delete_hits += 1
            if not req.quiet:
                out.append(b.encode_response(req.opcode, 0, opaque=req.opaque))
            return
        if status == Status.NOT_FOUND:
            self.stats.delete_misses += 1
        self._error(req, _STATUS.get(status, b.STATUS_KEY_ENOENT), out)

    def _arith(self, req: b.BinRequest, out: list[bytes]) -> None:
        incr = req.command == b.OP_INCREMENT
        status, value, cas = self.store.arith(req.key, req.delta, incr, None, 0.0, req.cas)
        created = status == Status.NOT_FOUND and req.autocreate
        if created:  # a miss that creates the counter counts as neither hit nor miss (memcached)
            status, value, cas = self.store.arith(req.key, req.delta, incr, req.initial,
                                                  absolute_exptime(req.exptime), req.cas)
        st = self.stats
        if status == Status.STORED:
            if not created:
                if incr:
                    st.incr_hits += 1
                else:
                    st.decr_hits += 1
            if not req.quiet:
                out.append(b.encode_response(req.opcode, 0, value=b.pack_counter(value), opaque=req.opaque,
                                             cas=cas))
            return
        if status == Status.NOT_FOUND:
            if incr:
                st.incr_misses += 1
            else:
                st.decr_misses += 1
        self._error(req, _STATUS.get(status, b.STATUS_NOT_STORED), out)

    def _touch(self, req: b.BinRequest, out: list[bytes]) -> None:
        self.stats.cmd_touch += 1
        item = self.store.get(req.key, absolute_exptime(req.exptime), bump=False)
        if item is None:
            self.stats.touch_misses += 1
            self._error(req, b.STATUS_KEY_ENOENT, out)
            return
        self.stats.touch_hits += 1
        if not req.quiet:
            out.append(b.encode_response(req.opcode, 0, extras=b.pack_get_reply_extras(item.flags),
                                         opaque=req.opaque, cas=item.cas))

    def _flush(self, req: b.BinRequest, out: list[bytes]) -> None:
        self.stats.cmd_flush += 1
        self.store.flush_all(flush_delay(req.exptime))
        if not req.quiet:
            out.append(b.encode_response(req.opcode, 0, opaque=req.opaque))

    def _noop(self, req: b.BinRequest, out: list[bytes]) -> None:
        out.append(b.encode_response(req.opcode, 0, opaque=req.opaque))

    def _version(self, req: b.BinRequest, out: list[bytes]) -> None:
        out.append(b.encode_response(req.opcode, 0, value=_VERSION, opaque=req.opaque))

    def _verbosity(self, req: b.BinRequest, out: list[bytes]) -> None:
        self.settings.verbosity = req.verbosity
        if not req.quiet:
            out.append(b.encode_response(req.opcode, 0, opaque=req.opaque))

    def _quit(self, req: b.BinRequest, out: list[bytes]) -> None:
        if not req.quiet:
            out.append(b.encode_response(req.opcode, 0, opaque=req.opaque))
        self.closing = True

    def _stat(self, req: b.BinRequest, out: list[bytes]) -> None:
        # memcached has no "stats conns" in the binary protocol: KEY_ENOENT, like any unknown group
        rows = None if req.key == b"conns" else stats_group(self.stats, req.key, self.store, self.settings)
        if rows is None:
            self._error(req, b.STATUS_KEY_ENOENT, out)
            return
        for name, value in rows:
            out.append(b.encode_response(req.opcode, 0, key=name.encode(), value=str(value).encode(),
                                         opaque=req.opaque))
        out.append(b.encode_response(req.opcode, 0, opaque=req.opaque))
