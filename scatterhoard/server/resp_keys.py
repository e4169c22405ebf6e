"""The string and keyspace commands of the RESP face (GET, SET, EXPIRE, INCR ...).

Each handler takes the session and the command's arguments and returns the
encoded reply; errors are raised as :class:`~.resp_common.Reply`. Values are
stored with flags 0 (memcached clients read them as plain bytes); commands
that modify a value in place (APPEND, INCR...) keep its flags and expiry, like
redis keeps the TTL. Expiry times are redis's integer milliseconds, stored as
the engine's absolute float seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.resp import OK, bulk, integer
from ..store import Mode, Status
from ..store.base import ITEM_HEADER_SIZE, Item
from .resp_common import (
    INT64_MAX,
    INT64_MIN,
    NOT_INTEGER,
    SYNTAX_ERROR,
    TOO_BIG,
    Reply,
    coded,
    cstr,
    err,
    need_ll,
    now_ms,
    parse_ll,
    to_ms,
)
from .resp_float import FloatError, incr_by_float

if TYPE_CHECKING:
    from .resp import RespSession

ZERO = b":0\r\n"
ONE = b":1\r\n"

# SET / GETEX option flags (redis's OBJ_SET_NX ... OBJ_PXAT)
NX, XX, GET, KEEPTTL, PERSIST, EX, PX, EXAT, PXAT = (1 << i for i in range(9))
_EXPIRES = EX | PX | EXAT | PXAT
_SECONDS = EX | EXAT
_RELATIVE = EX | PX


# -- helpers -----------------------------------------------------------------------------
def _put(s: RespSession, key: bytes, value: bytes, flags: int = 0, exptime: float = 0.0) -> None:
    status = s.store.store(Mode.SET, key, value, flags, exptime)[0]
    if status != Status.STORED:
        raise _store_error(status)


def _store_error(status: Status) -> Reply:
    if status == Status.NO_MEMORY:
        return coded("OOM command not allowed when used memory > 'maxmemory'.")
    if status in (Status.TOO_LARGE, Status.NOT_STORED):
        return err(TOO_BIG)
    return err(f"the store refused the value ({status.name})")


def _fetch(s: RespSession, key: bytes) -> Item | None:
    """A read that counts as a memcached get (cmd_get, get_hits / get_misses)."""
    st = s.stats
    st.cmd_get += 1
    item = s.store.get(key)
    if item is None:
        st.get_misses += 1
    else:
        st.get_hits += 1
    return item


def _retime(s: RespSession, key: bytes, item: Item, exptime: float) -> None:
    """Give a live item a new expiry. It is stored again, so its cas changes and a
    WATCH on the key sees the change, as redis's WATCH sees an EXPIRE."""
    _put(s, key, item.value, item.flags, exptime)


def _fits(s: RespSession, key: bytes, value: bytes) -> bool:
    return len(key) + len(value) + ITEM_HEADER_SIZE <= s.store.max_item_size


def extended_options(argv: list[bytes], start: int, for_set: bool) -> tuple[int, bytes | None]:
    """SET's (``for_set``) or GETEX's options from ``argv[start:]``: (flags, expire argument).

    The same acceptance rules as redis's ``parseExtendedStringArgumentsOrReply``:
    conflicting options and options of the other command are a syntax error.
    """
    flags = 0
    expire: bytes | None = None
    j = start
    count = len(argv)
    while j < count:
        opt = cstr(argv[j]).lower()
        more = j + 1 < count
        timed = False
        if opt == b"nx" and for_set and not flags & XX:
            flags |= NX
        elif opt == b"xx" and for_set and not flags & NX:
            flags |= XX
        elif opt == b"get" and for_set:
            flags |= GET
        elif opt == b"keepttl" and for_set and not flags & (PERSIST | _EXPIRES):
            flags |= KEEPTTL
        elif opt == b"persist" and not for_set and not flags & (KEEPTTL | _EXPIRES):
            flags |= PERSIST
        elif opt == b"ex" and more and not flags & (KEEPTTL | PERSIST | EXAT | PX | PXAT):
            flags |= EX
            timed = True
        elif opt == b"px" and more and not flags & (KEEPTTL | PERSIST | EX | EXAT | PXAT):
            flags |= PX
            timed = True
        elif opt == b"exat" and more and not flags & (KEEPTTL | PERSIST | EX | PX | PXAT):
            flags |= EXAT
            timed = True
        elif opt == b"pxat" and more and not flags & (KEEPTTL | PERSIST | EX | EXAT | PX):
            flags |= PXAT
            timed = True
        else:
            raise err(SYNTAX_ERROR)
        if timed:
            j += 1
            expire = argv[j]
        j += 1
    return flags, expire


def expire_at(arg: bytes, flags: int, command: str) -> int:
    """The absolute expiry in ms of an EX/PX/EXAT/PXAT argument (redis's checks and errors)."""
    ms = need_ll(arg)
    seconds = flags & _SECONDS
    if ms <= 0 or (seconds and ms > INT64_MAX // 1000):
        raise err(f"invalid expire time in '{command}' command")
    if seconds:
        ms *= 1000
    if flags & _RELATIVE:
        ms += now_ms()
    if ms > INT64_MAX:  # redis sees the signed overflow as a negative time
        raise err(f"invalid expire time in '{command}' command")
    return ms


# -- SET and friends ---------------------------------------------------------------------
def _set_generic(s: RespSession, key: bytes, value: bytes, flags: int, expire: bytes | None,
                 command: str, ok_reply: bytes, abort_reply: bytes | None) -> bytes:
    when = expire_at(expire, flags, command) if expire is not None else None
    old_reply = b""
    if flags & GET:
        found = _fetch(s, key)
        old_reply = s.null if found is None else bulk(found.value)
    else:
        found = s.store.get(key, bump=False)
    if (flags & NX and found is not None) or (flags & XX and found is None):
        if flags & GET:
            return old_reply
        return s.null if abort_reply is None else abort_reply
    if when is not None:
        exptime = when / 1000.0
    elif flags & KEEPTTL and found is not None:
        exptime = found.exptime
    else:
        exptime = 0.0
    s.stats.cmd_set += 1
    _put(s, key, value, 0, exptime)
    return old_reply if flags & GET else ok_reply


def cmd_set(s: RespSession, argv: list[bytes]) -> bytes:
    if len(argv) == 3:  # the hot path: plain SET key value
        s.stats.cmd_set += 1
        status = s.store.store(Mode.SET, argv[1], argv[2])[0]
        if status != Status.STORED:
            raise _store_error(status)
        return OK
    flags, expire = extended_options(argv, 3, True)
    return _set_generic(s, argv[1], argv[2], flags, expire, "set", OK, None)


def cmd_setnx(s: RespSession, argv: list[bytes]) -> bytes:
    return _set_generic(s, argv[1], argv[2], NX, None, "setnx", ONE, ZERO)


def cmd_setex(s: RespSession, argv: list[bytes]) -> bytes:
    return _set_generic(s, argv[1], argv[3], EX, argv[2], "setex", OK, None)


def cmd_psetex(s: RespSession, argv: list[bytes]) -> bytes:
    return _set_generic(s, argv[1], argv[3], PX, argv[2], "psetex", OK, None)


def cmd_get(s: RespSession, argv: list[bytes]) -> bytes:
    item = _fetch(s, argv[1])
    return s.null if item is None else bulk(item.value)


def cmd_getset(s: RespSession, argv: list[bytes]) -> bytes:
    item = _fetch(s, argv[1])
    reply = s.null if item is None else bulk(item.value)
    s.stats.cmd_set += 1
    _put(s, argv[1], argv[2])
    return reply


def cmd_getdel(s: RespSession, argv: list[bytes]) -> bytes:
    item = _fetch(s, argv[1])
    if item is None:
        return s.null
    s.store.delete(argv[1])
    s.stats.delete_hits += 1
    return bulk(item.value)


def cmd_getex(s: RespSession, argv: list[bytes]) -> bytes:
    flags, expire = extended_options(argv, 2, False)
    key = argv[1]
    item = _fetch(s, key)
    if item is None:
        return s.null
    when = expire_at(expire, flags, "getex") if expire is not None else None
    reply = bulk(item.value)
    if when is not None:
        if flags & (EXAT | PXAT) and when <= now_ms():
            s.store.delete(key)
        else:
            _retime(s, key, item, when / 1000.0)
    elif flags & PERSIST and item.exptime:
        _retime(s, key, item, 0.0)
    return reply


def cmd_mget(s: RespSession, argv: list[bytes]) -> bytes:
    parts = [b"*%d\r\n" % (len(argv) - 1)]
    null = s.null
    for key in argv[1:]:
        item = _fetch(s, key)
        parts.append(null if item is None else bulk(item.value))
    return b"".join(parts)


def _mset_pairs(s: RespSession, argv: list[bytes], command: str) -> list[tuple[bytes, bytes]]:
    if len(argv) % 2 == 0:
        raise err(f"wrong number of arguments for '{command}' command")
    pairs = list(zip(argv[1::2], argv[2::2], strict=True))
    for key, value in pairs:  # all or nothing: refuse before storing any
        if not _fits(s, key, value):
            raise err(TOO_BIG)
    return pairs


def cmd_mset(s: RespSession, argv: list[bytes]) -> bytes:
    for key, value in _mset_pairs(s, argv, "mset"):
        s.stats.cmd_set += 1
        _put(s, key, value)
    return OK


def cmd_msetnx(s: RespSession, argv: list[bytes]) -> bytes:
    pairs = _mset_pairs(s, argv, "msetnx")
    if any(s.store.get(key, bump=False) is not None for key, _ in pairs):
        return ZERO
    for key, value in pairs:
        s.stats.cmd_set += 1
        _put(s, key, value)
    return ONE


# -- keyspace ------------------------------------------------------------------------------
def cmd_del(s: RespSession, argv: list[bytes]) -> bytes:
    st = s.stats
    deleted = 0
    for key in argv[1:]:
        if s.store.delete(key) == Status.DELETED:
            deleted += 1
            st.delete_hits += 1
        else:
            st.delete_misses += 1
    return integer(deleted)


def cmd_exists(s: RespSession, argv: list[bytes]) -> bytes:
    get = s.store.get
    return integer(sum(1 for key in argv[1:] if get(key, bump=False) is not None))


def cmd_touch(s: RespSession, argv: list[bytes]) -> bytes:
    get = s.store.get
    return integer(sum(1 for key in argv[1:] if get(key) is not None))


def cmd_type(s: RespSession, argv: list[bytes]) -> bytes:
    return b"+none\r\n" if s.store.get(argv[1], bump=False) is None else b"+string\r\n"


def cmd_strlen(s: RespSession, argv: list[bytes]) -> bytes:
    item = s.store.get(argv[1])
    return integer(0 if item is None else len(item.value))


# -- expiry --------------------------------------------------------------------------------
_EXPIRE_NX, _EXPIRE_XX, _EXPIRE_GT, _EXPIRE_LT = 1, 2, 4, 8
_EXPIRE_OPTIONS = {b"nx": _EXPIRE_NX, b"xx": _EXPIRE_XX, b"gt": _EXPIRE_GT, b"lt": _EXPIRE_LT}


def _expire_generic(s: RespSession, argv: list[bytes], base: int, seconds: bool, command: str) -> bytes:
    flags = 0
    for arg in argv[3:]:
        flag = _EXPIRE_OPTIONS.get(cstr(arg).lower())
        if flag is None:
            raise err(b"Unsupported option " + cstr(arg))
        flags |= flag
    if flags & _EXPIRE_NX and flags & (_EXPIRE_XX | _EXPIRE_GT | _EXPIRE_LT):
        raise err("NX and XX, GT or LT options at the same time are not compatible")
    if flags & _EXPIRE_GT and flags & _EXPIRE_LT:
        raise err("GT and LT options at the same time are not compatible")
    when = need_ll(argv[2])
    if seconds:
        if when > INT64_MAX // 1000 or when < -(-INT64_MIN // 1000):
            raise err(f"invalid expire time in '{command}' command")
        when *= 1000
    if when > INT64_MAX - base:
        raise err(f"invalid expire time in '{command}' command")
    when += base
    st = s.stats
    st.cmd_touch += 1
    key = argv[1]
    item = s.store.get(key, bump=False)
    if item is None:
        st.touch_misses += 1
        return ZERO
    st.touch_hits += 1
    current = to_ms(item.exptime) if item.exptime else -1
    if ((flags & _EXPIRE_NX and current != -1) or (flags & _EXPIRE_XX and current == -1)
            or (flags & _EXPIRE_GT and (current == -1 or when <= current))
            or (flags & _EXPIRE_LT and current != -1 and when >= current)):
        return ZERO
    if when <= now_ms():
        s.store.delete(key)
    else:
        _retime(s, key, item, when / 1000.0)
    return ONE


def cmd_expire(s: RespSession, argv: list[bytes]) -> bytes:
    return _expire_generic(s, argv, now_ms(), True, "expire")


def cmd_pexpire(s: RespSession, argv: list[bytes]) -> bytes:
    return _expire_generic(s, argv, now_ms(), False, "pexpire")


def cmd_expireat(s: RespSession, argv: list[bytes]) -> bytes:
    return _expire_generic(s, argv, 0, True, "expireat")


def cmd_pexpireat(s: RespSession, argv: list[bytes]) -> bytes:
    return _expire_generic(s, argv, 0, False, "pexpireat")


def _ttl_generic(s: RespSession, key: bytes, ms: bool, absolute: bool) -> bytes:
    item = s.store.get(key, bump=False)
    if item is None:
        return b":-2\r\n"
    if not item.exptime:
        return b":-1\r\n"
    expires = to_ms(item.exptime)
    ttl = max(expires if absolute else expires - now_ms(), 0)
    return integer(ttl if ms else (ttl + 500) // 1000)


def cmd_ttl(s: RespSession, argv: list[bytes]) -> bytes:
    return _ttl_generic(s, argv[1], False, False)


def cmd_pttl(s: RespSession, argv: list[bytes]) -> bytes:
    return _ttl_generic(s, argv[1], True, False)


def cmd_expiretime(s: RespSession, argv: list[bytes]) -> bytes:
    return _ttl_generic(s, argv[1], False, True)


def cmd_pexpiretime(s: RespSession, argv: list[bytes]) -> bytes:
    return _ttl_generic(s, argv[1], True, True)


def cmd_persist(s: RespSession, argv: list[bytes]) -> bytes:
    item = s.store.get(argv[1], bump=False)
    if item is None or not item.exptime:
        return ZERO
    _retime(s, argv[1], item, 0.0)
    return ONE


# -- counters and APPEND -------------------------------------------------------------------
def _incr_generic(s: RespSession, key: bytes, delta: int, incr: bool) -> bytes:
    st = s.stats
    item = s.store.get(key)
    if item is None:
        current = 0
        if incr:
            st.incr_misses += 1
        else:
            st.decr_misses += 1
    else:
        parsed = parse_ll(item.value)
        if parsed is None:
            raise err(NOT_INTEGER)
        current = parsed
        if incr:
            st.incr_hits += 1
        else:
            st.decr_hits += 1
    if (delta < 0 and current < 0 and delta < INT64_MIN - current) or (
            delta > 0 and current > 0 and delta > INT64_MAX - current):
        raise err("increment or decrement would overflow")
    value = current + delta
    if item is None:
        _put(s, key, b"%d" % value)
    else:
        _put(s, key, b"%d" % value, item.flags, item.exptime)
    return integer(value)


def cmd_incr(s: RespSession, argv: list[bytes]) -> bytes:
    return _incr_generic(s, argv[1], 1, True)


def cmd_decr(s: RespSession, argv: list[bytes]) -> bytes:
    return _incr_generic(s, argv[1], -1, False)


def cmd_incrby(s: RespSession, argv: list[bytes]) -> bytes:
    return _incr_generic(s, argv[1], need_ll(argv[2]), True)


def cmd_decrby(s: RespSession, argv: list[bytes]) -> bytes:
    delta = need_ll(argv[2])
    if delta == INT64_MIN:
        raise err("decrement would overflow")
    return _incr_generic(s, argv[1], -delta, False)


def cmd_incrbyfloat(s: RespSession, argv: list[bytes]) -> bytes:
    key = argv[1]
    item = s.store.get(key)
    try:
        value = incr_by_float(None if item is None else item.value, argv[2])
    except FloatError as exc:
        raise err(str(exc)) from None
    if item is None:
        _put(s, key, value)
    else:
        _put(s, key, value, item.flags, item.exptime)
    return bulk(value)


def cmd_append(s: RespSession, argv: list[bytes]) -> bytes:
    key, value = argv[1], argv[2]
    s.stats.cmd_set += 1
    item = s.store.get(key)
    if item is None:
        _put(s, key, value)
        return integer(len(value))
    length = len(item.value) + len(value)
    status = s.store.store(Mode.APPEND, key, value)[0]
    if status != Status.STORED:
        raise _store_error(status)
    return integer(length)
