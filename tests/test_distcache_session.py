"""The distcache server session and the -sessions store wrapper, without sockets."""

from __future__ import annotations

import struct
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scatterhoard.protocol import distcache as dc
from scatterhoard.server.distcache import DistcacheSession, SessionLimitStore
from scatterhoard.server.stats import ServerStats, Settings
from scatterhoard.store import MemoryStore, Mode, Status

HDR = struct.Struct(">IBIBBBH")


def session(store: MemoryStore | SessionLimitStore | None = None) -> DistcacheSession:
    return DistcacheSession(store if store is not None else MemoryStore(1 << 24), ServerStats(), Settings())


def replies(data: bytes) -> list[dc.Response]:
    parser = dc.DistcacheParser("client")
    return [dc.decode_response(m) for m in parser.feed(data)]


def one(s: DistcacheSession, wire: bytes) -> dc.Response:
    (resp,) = replies(s.feed(wire))
    return resp


def add_payload(timeout: int, id_len: int, sid: bytes, data: bytes) -> bytes:
    return struct.pack(">II", timeout, id_len) + sid + data


def test_add_get_have_remove() -> None:
    s = session()
    assert one(s, dc.encode_add(1, b"sid-1", b"state", 10_000)) == dc.Response(1, dc.OP_ADD, 0, None)
    assert one(s, dc.encode_get(2, b"sid-1")) == dc.Response(2, dc.OP_GET, 0, b"state")
    assert one(s, dc.encode_have(3, b"sid-1")).code == dc.RESULT_OK
    assert one(s, dc.encode_remove(4, b"sid-1")).code == dc.RESULT_OK
    assert one(s, dc.encode_remove(5, b"sid-1")).code == dc.RESULT_NOTOK
    assert one(s, dc.encode_have(6, b"sid-1")).code == dc.RESULT_NOTOK
    assert one(s, dc.encode_get(7, b"sid-1")) == dc.Response(7, dc.OP_GET, dc.RESULT_NOTOK, None)


def test_duplicate_add_is_101_and_leaves_the_entry_untouched() -> None:
    store = MemoryStore(1 << 24)
    s = session(store)
    assert one(s, dc.encode_add(1, b"dup", b"first", 60_000)).code == dc.RESULT_OK
    before = store.get(b"dup", bump=False)
    assert before is not None
    exptime, cas = before.exptime, before.cas
    assert one(s, dc.encode_add(2, b"dup", b"second", 600_000)).code == dc.RESULT_ADD_DUPLICATE
    after = store.get(b"dup", bump=False)
    assert after is not None
    assert (after.value, after.exptime, after.cas) == (b"first", exptime, cas)


def test_millisecond_timeouts_and_get_have_never_extend_life() -> None:
    store = MemoryStore(1 << 24)
    s = session(store)
    t0 = time.time()
    assert one(s, dc.encode_add(1, b"short", b"x" * 10, 300)).code == dc.RESULT_OK
    item = store.get(b"short", bump=False)
    assert item is not None
    assert t0 + 0.3 <= item.exptime <= time.time() + 0.3  # float expiry, ms honoured
    for uid in range(2, 6):
        assert one(s, dc.encode_get(uid, b"short")).code == dc.RESULT_OK
        assert one(s, dc.encode_have(uid, b"short")).code == dc.RESULT_OK
    item2 = store.get(b"short", bump=False)
    assert item2 is not None and item2.exptime == item.exptime
    time.sleep(max(0.0, item.exptime - time.time()) + 0.02)
    assert one(s, dc.encode_have(9, b"short")).code == dc.RESULT_NOTOK
    assert one(s, dc.encode_get(10, b"short")).code == dc.RESULT_NOTOK
    # an expired id can be added again
    assert one(s, dc.encode_add(11, b"short", b"y", 1000)).code == dc.RESULT_OK


def test_zero_timeout_is_expired_at_once() -> None:
    s = session()
    assert one(s, dc.encode_add(1, b"zero", b"x", 0)).code == dc.RESULT_OK
    assert one(s, dc.encode_have(2, b"zero")).code == dc.RESULT_NOTOK


def test_add_result_codes_in_order() -> None:
    def add(payload: bytes) -> tuple[int, bool]:
        s = session()
        code = one(s, dc.encode_message(False, 1, dc.OP_ADD, payload)).code
        return code, s.closing

    # a corrupt ADD (100) or a bad id length (103) is answered, then that connection is closed
    assert add(b"\x00\x00\x01") == (dc.RESULT_ADD_CORRUPT, True)                       # under 8 bytes
    assert add(add_payload(1000, 5, b"abcde", b"")) == (dc.RESULT_ADD_CORRUPT, True)  # id_len >= remaining
    assert add(add_payload(604_800_001, 70, b"i" * 70, b"d")) == (dc.RESULT_ADD_TIMEOUT, False)  # 102 first
    assert add(add_payload(1000, 65, b"i" * 65, b"d")) == (dc.RESULT_ADD_ID_LEN, True)
    assert add(add_payload(1000, 0, b"", b"d")) == (dc.RESULT_ADD_ID_LEN, True)
    assert add(add_payload(604_800_000, 64, b"i" * 64, b"d")) == (dc.RESULT_OK, False)


def test_pipelined_requests_answered_in_order() -> None:
    s = session()
    wire = b"".join([
        dc.encode_add(10, b"p1", b"a" * 5000, 60_000),
        dc.encode_get(11, b"p1"),
        dc.encode_have(12, b"nope"),
        dc.encode_add(13, b"p1", b"b", 60_000),
        dc.encode_remove(14, b"p1"),
        dc.encode_get(15, b"p1"),
    ])
    out = b""
    for i in range(0, len(wire), 7):  # split anywhere
        out += s.feed(wire[i:i + 7])
    got = replies(out)
    assert [(r.uid, r.code) for r in got] == [(10, 0), (11, 0), (12, 1), (13, 101), (14, 0), (15, 1)]
    assert got[1].data == b"a" * 5000


def test_framing_error_answers_what_came_before_then_closes() -> None:
    s = session()
    bad = HDR.pack(0x00120000, 0, 3, 0, dc.OP_GET, 1, 0)
    out = s.feed(dc.encode_add(1, b"k", b"v", 1000) + dc.encode_have(2, b"k") + bad + dc.encode_get(4, b"k"))
    assert [(r.uid, r.code) for r in replies(out)] == [(1, 0), (2, 0)]
    assert s.closing
    assert s.feed(dc.encode_get(5, b"k")) == b""


def test_memcached_and_distcache_share_items() -> None:
    store = MemoryStore(1 << 24)
    s = session(store)
    store.set(b"mc-key", b"from memcached")
    assert one(s, dc.encode_get(1, b"mc-key")).data == b"from memcached"
    assert one(s, dc.encode_add(2, b"dc-key", b"from distcache", 5000)).code == 0
    item = store.get(b"dc-key")
    assert item is not None and item.value == b"from distcache"


def test_one_byte_values_are_ambiguous_and_empty_values_miss() -> None:
    """Documented protocol limits: a stored b"\\x01" reads as a miss; an empty value is a miss."""
    store = MemoryStore(1 << 24)
    s = session(store)
    store.set(b"one", b"\x01")
    store.set(b"empty", b"")
    assert one(s, dc.encode_get(1, b"one")).code == dc.RESULT_NOTOK
    assert one(s, dc.encode_get(2, b"empty")).code == dc.RESULT_NOTOK
    assert one(s, dc.encode_have(3, b"empty")).code == dc.RESULT_OK


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_random_bytes_only_answer_or_close(data: bytes, chunk: int) -> None:
    s = session()
    for i in range(0, len(data), chunk):
        out = s.feed(b"\x00" + data[i:i + chunk] if i == 0 else data[i:i + chunk])
        assert isinstance(out, bytes)
        replies(out)  # whatever it sends is well-formed
        if s.closing:
            break


# -- SessionLimitStore -------------------------------------------------------------------


def test_capacity_evicts_nearest_to_expiry_first() -> None:
    store = SessionLimitStore(MemoryStore(1 << 24), 3)
    now = time.time()
    assert store.add(b"late", b"1", 0, now + 300) == Status.STORED
    assert store.add(b"soon", b"2", 0, now + 10) == Status.STORED
    assert store.add(b"never", b"3", 0, 0.0) == Status.STORED
    assert store.add(b"mid", b"4", 0, now + 100) == Status.STORED  # full: "soon" goes
    assert store.get(b"soon") is None
    assert {k for k in (b"late", b"never", b"mid") if store.get(k) is not None} == {b"late", b"never", b"mid"}
    assert store.add(b"x", b"5", 0, now + 500) == Status.STORED  # then "mid"
    assert store.get(b"mid") is None and store.get(b"never") is not None
    assert len(store) == 3
    assert store.stats()["session_capacity_evictions"] == 2


def test_capacity_ignores_overwrites_and_counts_removals() -> None:
    store = SessionLimitStore(MemoryStore(1 << 24), 2)
    now = time.time()
    store.set(b"a", b"1", 0, now + 10)
    store.set(b"b", b"2", 0, now + 20)
    store.set(b"a", b"1b", 0, now + 30)  # overwrite: nothing evicted
    assert store.get(b"b") is not None
    assert store.add(b"b", b"dup", 0, now + 40) == Status.NOT_STORED
    assert store.delete(b"a") == Status.DELETED
    store.set(b"c", b"3", 0, now + 5)  # room after the delete
    assert store.get(b"b") is not None and store.get(b"c") is not None
    # an expired entry frees its place before any live one is evicted
    store.set(b"d", b"4", 0, now - 1)
    assert store.get(b"b") is not None


def test_capacity_store_touch_and_sweep() -> None:
    store = SessionLimitStore(MemoryStore(1 << 24), 2)
    now = time.time()
    store.set(b"a", b"1", 0, now + 0.05)
    store.set(b"b", b"2", 0, now + 100)
    assert store.touch(b"a", now + 1000)  # now "b" is nearer to expiry
    store.set(b"c", b"3", 0, now + 500)
    assert store.get(b"b") is None and store.get(b"a") is not None
    store.set(b"e", b"x", 0, time.time() + 0.01)
    time.sleep(0.03)
    store.sweep()
    assert b"e" not in store._exp
    store.flush_all()
    assert len(store) == 0
    assert store.store(Mode.SET, b"z", b"1", 0, 0.0)[0] == Status.STORED


def test_session_with_capacity_store() -> None:
    s = session(SessionLimitStore(MemoryStore(1 << 24), 5))
    for i in range(20):
        assert one(s, dc.encode_add(i, b"id-%d" % i, b"d", 60_000 + i)).code == 0
    live = [i for i in range(20) if one(s, dc.encode_have(100 + i, b"id-%d" % i)).code == 0]
    assert live == [15, 16, 17, 18, 19]
