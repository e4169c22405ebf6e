"""Meta commands (mg ms md ma mn me) executed against a store, memcached 1.6 semantics."""

from __future__ import annotations

import binascii
import time
from typing import TYPE_CHECKING, Final

from ..protocol.text import Meta, parse_flags32, parse_i32
from ..store import Mode, Status, absolute_exptime, remaining_ttl
from ..store.base import ITEM_HEADER_SIZE, Item

if TYPE_CHECKING:
    from .text import TextSession

_MS_MODES: Final = {b"E": Mode.ADD, b"A": Mode.APPEND, b"P": Mode.PREPEND, b"R": Mode.REPLACE, b"S": Mode.SET}


def _num(tok: bytes) -> int:
    """A u64 flag token (the parser has validated it)."""
    return int(tok)


def _ttl(tok: bytes) -> float:
    """A TTL flag token (validated by the parser) as an absolute expiry."""
    return absolute_exptime(parse_i32(tok) or 0)


def _key_flag(cmd: Meta, b64: bool) -> bytes:
    return b" k" + cmd.raw_key + (b" b" if b64 else b"")


def _common(cmd: Meta, flag: str, tok: bytes, b64: bool, cas: int) -> bytes | None:
    """Return flags shared by ms/md/ma: O k b c."""
    if flag == "O":
        return b" O" + tok
    if flag == "k":
        return _key_flag(cmd, b64)
    if flag == "c":
        return b" c%d" % cas
    return None


def execute_meta(session: TextSession, cmd: Meta, out: list[bytes]) -> None:
    name = cmd.command
    for flag, tok in cmd.flags:
        if flag == "O" and len(tok) > 32:
            out.append(b"CLIENT_ERROR opaque token too long\r\n")
            return
    if name == b"mg":
        _mg(session, cmd, out)
    elif name == b"ms":
        _ms(session, cmd, out)
    elif name == b"md":
        _md(session, cmd, out)
    elif name == b"ma":
        _ma(session, cmd, out)
    elif name == b"mn":
        out.append(b"MN\r\n")
    elif name == b"me":
        _me(session, cmd, out)


def _mg(session: TextSession, cmd: Meta, out: list[bytes]) -> None:
    store = session.store
    st = session.stats
    fl = dict(cmd.flags)
    b64 = "b" in fl
    now = time.time()
    # h and l report the state before this fetch, u asks for no bump: only then look up
    # without bumping and bump afterwards; otherwise one lookup does both
    bump_later = "u" not in fl and ("h" in fl or "l" in fl)
    item = store.get(cmd.key, bump="u" not in fl and not bump_later)
    created = False
    st.cmd_get += 1
    if item is None:
        st.get_misses += 1
        if "N" in fl:
            status, _ = store.store(Mode.ADD, cmd.key, b"", 0, _ttl(fl["N"]))
            item = store.get(cmd.key, bump=False) if status == Status.STORED else None
            created = item is not None
        if item is None:
            if "q" not in fl:
                miss = [b"EN"]
                for flag, tok in cmd.flags:
                    if flag == "O" or flag == "k":
                        miss.append(_common(cmd, flag, tok, b64, 0) or b"")
                miss.append(b"\r\n")
                out.append(b"".join(miss))
            return
    else:
        st.get_hits += 1
    won = False
    parts: list[bytes] = [b"VA %d" % len(item.value) if "v" in fl else b"HD"]
    for flag, tok in cmd.flags:
        if flag == "T":
            store.touch(cmd.key, _ttl(tok))
            st.cmd_touch += 1
            st.touch_hits += 1
        elif flag == "N":
            if created:
                won = True
        elif flag == "R":
            limit = _ttl(tok)
            if not item.win and not created and item.exptime != 0 and item.exptime < limit:
                won = True
        elif flag == "s":
            parts.append(b" s%d" % len(item.value))
        elif flag == "t":
            parts.append(b" t%d" % remaining_ttl(item.exptime, now))
        elif flag == "c":
            parts.append(b" c%d" % item.cas)
        elif flag == "f":
            parts.append(b" f%d" % item.flags)
        elif flag == "l":
            parts.append(b" l%d" % int(now - item.atime))
        elif flag == "h":
            parts.append(b" h1" if item.fetched else b" h0")
        elif flag == "O":
            parts.append(b" O" + tok)
        elif flag == "k":
            parts.append(_key_flag(cmd, b64))
    if item.win:
        parts.append(b" Z")
    if item.stale:
        parts.append(b" X")
        if not item.win:
            won = True
    if won:
        parts.append(b" W")
        store.mark_win(cmd.key, item)
    parts.append(b"\r\n")
    if "v" in fl:
        parts.append(item.value)
        parts.append(b"\r\n")
    if bump_later and not created:
        store.get(cmd.key)  # bump LRU, mark fetched, update last access
    out.append(b"".join(parts))


def _ms(session: TextSession, cmd: Meta, out: list[bytes]) -> None:
    fl = dict(cmd.flags)
    b64 = "b" in fl
    value = cmd.value or b""
    mode = Mode.SET
    if "M" in fl:
        m = _MS_MODES.get(fl["M"][:1].upper())
        if m is None or len(fl["M"]) != 1:
            out.append(b"CLIENT_ERROR invalid mode for ms M token\r\n")
            return
        mode = m
    flags = parse_flags32(fl["F"]) or 0 if "F" in fl else 0
    exptime = _ttl(fl["T"]) if "T" in fl else 0.0
    cas = _num(fl["C"]) if "C" in fl else 0
    session.stats.cmd_set += 1
    if len(cmd.key) + len(value) + ITEM_HEADER_SIZE > session.store.max_item_size:
        out.append(b"SERVER_ERROR object too large for cache\r\n")
        return
    status, new_cas = session.store.store(mode, cmd.key, value, flags, exptime, cas, invalidate="I" in fl)
    if status == Status.STORED:
        code = b"HD"
        if "q" in fl:
            return
    elif status == Status.EXISTS:
        code = b"EX"
    elif status == Status.NOT_FOUND:
        code = b"NF"
    elif status == Status.TOO_LARGE:
        out.append(b"SERVER_ERROR object too large for cache\r\n")
        return
    else:
        code = b"NS"
    parts = [code]
    for flag, tok in cmd.flags:
        extra = _common(cmd, flag, tok, b64, new_cas)
        if extra is not None:
            parts.append(extra)
    parts.append(b"\r\n")
    out.append(b"".join(parts))


def _md(session: TextSession, cmd: Meta, out: list[bytes]) -> None:
    fl = dict(cmd.flags)
    b64 = "b" in fl
    cas = _num(fl["C"]) if "C" in fl else 0
    store = session.store
    if "I" in fl:
        status = store.mark_stale(cmd.key, cas, _ttl(fl["T"]) if "T" in fl else None)
    elif "x" in fl:
        item = store.get(cmd.key, bump=False)
        if item is None:
            status = Status.NOT_FOUND
        elif cas and item.cas != cas:
            status = Status.EXISTS
        else:
            store.store(Mode.SET, cmd.key, b"", 0, item.exptime)
            status = Status.DELETED
    else:
        status = store.delete(cmd.key, cas)
    if status == Status.DELETED:
        session.stats.delete_hits += 1
        code = b"HD"
    elif status == Status.EXISTS:
        code = b"EX"
    else:
        session.stats.delete_misses += 1
        code = b"NF"
    if "q" in fl and code == b"HD":
        return
    parts = [code]
    for flag, tok in cmd.flags:
        if flag in ("O", "k"):
            extra = _common(cmd, flag, tok, b64, 0)
            if extra is not None:
                parts.append(extra)
    parts.append(b"\r\n")
    out.append(b"".join(parts))


def _ma(session: TextSession, cmd: Meta, out: list[bytes]) -> None:
    fl = dict(cmd.flags)
    b64 = "b" in fl
    incr = True
    if "M" in fl:
        m = fl["M"].upper()
        if m in (b"I", b"+", b"INCR"):
            incr = True
        elif m in (b"D", b"-", b"DECR"):
            incr = False
        else:
            out.append(b"CLIENT_ERROR invalid mode for ma M token\r\n")
            return
    delta = _num(fl["D"]) if "D" in fl else 1
    initial: int | None = None
    exptime = 0.0
    if "N" in fl:
        exptime = _ttl(fl["N"])
        initial = _num(fl["J"]) if "J" in fl else 0
    cas = _num(fl["C"]) if "C" in fl else 0
    store = session.store
    status, value, new_cas = store.arith(cmd.key, delta, incr, initial, exptime, cas)
    st = session.stats
    if status == Status.NON_NUMERIC:
        out.append(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
        return
    item: Item | None = None
    if status == Status.STORED:
        if incr:
            st.incr_hits += 1
        else:
            st.decr_hits += 1
        if "T" in fl:
            store.touch(cmd.key, _ttl(fl["T"]))
        if "t" in fl:
            item = store.get(cmd.key, bump=False)
        code = b"VA %d" % len(b"%d" % value) if "v" in fl else b"HD"
        if "q" in fl:
            return
    elif status == Status.EXISTS:
        code = b"EX"
    elif status == Status.NOT_FOUND:
        if incr:
            st.incr_misses += 1
        else:
            st.decr_misses += 1
        code = b"NF"
    else:
        code = b"NS"
    parts = [code]
    for flag, tok in cmd.flags:
        if flag == "t" and item is not None:
            parts.append(b" t%d" % remaining_ttl(item.exptime))
        elif flag in ("O", "k", "c") and (flag != "c" or status == Status.STORED):
            extra = _common(cmd, flag, tok, b64, new_cas)
            if extra is not None:
                parts.append(extra)
    parts.append(b"\r\n")
    if "v" in fl and status == Status.STORED:
        parts.append(b"%d\r\n" % value)
    out.append(b"".join(parts))


def _me(session: TextSession, cmd: Meta, out: list[bytes]) -> None:
    item = session.store.get(cmd.key, bump=False)
    if item is None:
        out.append(b"EN\r\n")
        return
    now = time.time()
    key = cmd.raw_key if "b" not in dict(cmd.flags) else binascii.b2a_base64(cmd.key, newline=False)
    out.append(b"ME %s exp=%d la=%d cas=%d fetch=%s cls=1 size=%d\r\n" % (
        key, remaining_ttl(item.exptime, now), int(now - item.atime), item.cas,
        b"yes" if item.fetched else b"no", len(cmd.key) + len(item.value) + ITEM_HEADER_SIZE))
