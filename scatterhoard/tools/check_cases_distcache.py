"""``hoard check`` cases: the distcache session cache protocol (reference: distcache's dc_server)."""

from __future__ import annotations

from collections.abc import Iterator

from ..protocol import distcache as dc
from .check import EXPIRY_WAIT, Context, case, eq, ok, result_name

P = "distcache"


def _code(what: str, got: int, expected: int) -> None:
    eq(what, result_name(got), result_name(expected))


def _sid(ctx: Context, suffix: str = "") -> bytes:
    """A session id unique to the run and case, at most 64 bytes."""
    return ctx.key(suffix)[-dc.MAX_ID_LEN:]


@case(P, "add_get")
def add_get(ctx: Context) -> None:
    """ADD stores a session (OK), GET returns its data, a GET miss answers NOTOK(1)"""
    c, sid = ctx.distcache(), _sid(ctx)
    eq("GET of a missing session", c.get(sid), None)
    _code("ADD", c.add(sid, b"session data \x00\x01\xff", 60_000), dc.RESULT_OK)
    eq("GET", c.get(sid), b"session data \x00\x01\xff")


@case(P, "have_remove")
def have_remove(ctx: Context) -> None:
    """HAVE and REMOVE answer OK(0) for a stored session and NOTOK(1) otherwise"""
    c, sid = ctx.distcache(), _sid(ctx)
    _code("HAVE of a missing session", c.have(sid), dc.RESULT_NOTOK)
    _code("REMOVE of a missing session", c.remove(sid), dc.RESULT_NOTOK)
    _code("ADD", c.add(sid, b"x", 60_000), dc.RESULT_OK)
    _code("HAVE", c.have(sid), dc.RESULT_OK)
    _code("REMOVE", c.remove(sid), dc.RESULT_OK)
    _code("HAVE after REMOVE", c.have(sid), dc.RESULT_NOTOK)
    _code("REMOVE again", c.remove(sid), dc.RESULT_NOTOK)
    eq("GET after REMOVE", c.get(sid), None)


@case(P, "duplicate_add")
def duplicate_add(ctx: Context) -> None:
    """ADD of a live session id is ADD_DUPLICATE(101) and keeps the first data"""
    c, sid = ctx.distcache(), _sid(ctx)
    _code("ADD", c.add(sid, b"first", 60_000), dc.RESULT_OK)
    _code("second ADD of the same id", c.add(sid, b"second", 60_000), dc.RESULT_ADD_DUPLICATE)
    eq("GET after the duplicate ADD", c.get(sid), b"first")


@case(P, "add_limits")
def add_limits(ctx: Context) -> None:
    """ADD refuses a timeout over a week (102) and ids of 0 or over 64 bytes (103)"""
    c = ctx.distcache()
    week = dc.MAX_TIMEOUT_MS
    _code("ADD with a timeout of a week", c.add(_sid(ctx, "week"), b"x", week), dc.RESULT_OK)
    _code("ADD with a timeout over a week", c.add(_sid(ctx, "over"), b"x", week + 1), dc.RESULT_ADD_TIMEOUT)
    sid64 = (_sid(ctx, ":") + b"i" * 64)[:64]
    _code("ADD with a 64-byte id", c.add(sid64, b"x", 60_000), dc.RESULT_OK)
    _code("HAVE of the 64-byte id", c.have(sid64), dc.RESULT_OK)
    # dc_server closes the connection after a bad id length: one connection each
    _code("ADD with a 65-byte id", ctx.distcache().add(sid64 + b"i", b"x", 60_000), dc.RESULT_ADD_ID_LEN)
    _code("ADD with an empty id", ctx.distcache().add(b"", b"data", 60_000), dc.RESULT_ADD_ID_LEN)


@case(P, "corrupt_add")
def corrupt_add(ctx: Context) -> None:
    """an ADD too short to hold its header, or with no data, is ADD_CORRUPT(100) (then dc_server closes)"""
    c = ctx.distcache()
    uid = c.next_uid()
    _code("ADD with a 4-byte payload", c.call(dc.encode_message(False, uid, dc.OP_ADD, b"\x00\x00\x00\x01"),
                                               uid, dc.OP_ADD).code, dc.RESULT_ADD_CORRUPT)
    c2 = ctx.distcache()
    _code("ADD with empty data", c2.add(_sid(ctx), b"", 1000), dc.RESULT_ADD_CORRUPT)


@case(P, "multi_frame")
def multi_frame(ctx: Context) -> None:
    """sessions up to the 32768-byte message limit travel in 2048-byte frames both ways"""
    c, sid = ctx.distcache(), _sid(ctx)
    data = bytes(range(256)) * ((dc.MAX_PAYLOAD - dc.ADD_HEADER_SIZE - len(sid)) // 256)
    data += b"t" * (dc.MAX_PAYLOAD - dc.ADD_HEADER_SIZE - len(sid) - len(data))
    _code(f"ADD of {len(data)} bytes", c.add(sid, data, 60_000), dc.RESULT_OK)
    got = c.get(sid)
    ok(got == data, f"GET of the {len(data)}-byte session came back different "
                    f"({len(got) if got is not None else 'a miss'})")
    exact = _sid(ctx, "2048")
    _code("ADD of a payload of exactly 2048 bytes", c.add(exact, b"e" * (2048 - 8 - len(exact)), 60_000),
          dc.RESULT_OK)
    eq("GET of it", c.get(exact), b"e" * (2048 - 8 - len(exact)))


@case(P, "pipelined")
def pipelined(ctx: Context) -> None:
    """pipelined requests are answered in order, each with its uid"""
    c = ctx.distcache()
    ids = [_sid(ctx, f"{i}") for i in range(10)]
    reqs = [dc.encode_add(1000 + i, sid, b"d%d" % i * 300, 60_000) for i, sid in enumerate(ids)]
    reqs += [dc.encode_get(2000 + i, sid) for i, sid in enumerate(ids)]
    reqs += [dc.encode_remove(3000, ids[0]), dc.encode_have(3001, ids[0]), dc.encode_have(3002, ids[1])]
    c.send(b"".join(reqs))
    replies = [c.recv() for _ in reqs]
    eq("uids of the replies", [r.uid for r in replies],
       [*range(1000, 1010), *range(2000, 2010), 3000, 3001, 3002])
    eq("ADD results", [r.code for r in replies[:10]], [dc.RESULT_OK] * 10)
    eq("GET data", [r.data for r in replies[10:20]], [b"d%d" % i * 300 for i in range(10)])
    eq("REMOVE, HAVE, HAVE results", [r.code for r in replies[20:]], [0, 1, 0])


@case(P, "timeouts")
def timeouts(ctx: Context) -> Iterator[float]:
    """a session is gone after its timeout (1000 ms) and its id can be added again"""
    c = ctx.distcache()
    short, long_ = _sid(ctx, "short"), _sid(ctx, "long")
    _code("ADD with a 1000 ms timeout", c.add(short, b"s", 1000), dc.RESULT_OK)
    _code("ADD with a 100 s timeout", c.add(long_, b"l", 100_000), dc.RESULT_OK)
    yield EXPIRY_WAIT
    eq("GET of the timed-out session", c.get(short), None)
    _code("HAVE of the timed-out session", c.have(short), dc.RESULT_NOTOK)
    eq("GET of the live session", c.get(long_), b"l")
    _code("ADD of the timed-out id", c.add(short, b"again", 1000), dc.RESULT_OK)
