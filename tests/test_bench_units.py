"""``hoard bench`` pieces without sockets: the histogram, the option parsers, key choice, the codecs'
reply accounting on replies cut anywhere, and the verifier's value report."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from scatterhoard.bench.codecs import make_codec
from scatterhoard.bench.engine import cpus_arg, split
from scatterhoard.bench.histogram import SUB, Histogram, bucket_of, bucket_range
from scatterhoard.bench.verify import value_diff
from scatterhoard.bench.workload import (
    DELETE,
    GET,
    INCR,
    MGET,
    SET,
    BenchError,
    KeyChooser,
    LoadSpec,
    Op,
    OpSource,
    parse_mix,
    parse_size_range,
)
from scatterhoard.protocol import binary as b
from scatterhoard.protocol import distcache as dc
from scatterhoard.protocol.resp import encode


def test_buckets_are_contiguous_and_precise() -> None:
    prev_hi = -1
    for idx in range(0, 40 * SUB):
        lo, hi = bucket_range(idx)
        if idx >= 2 * SUB:
            assert lo == prev_hi + 1, idx
            assert (hi - lo + 1) / lo <= 1 / SUB + 1e-12  # relative width
        assert bucket_of(lo) == idx and bucket_of(hi) == idx
        prev_hi = hi


def test_percentiles_match_exact_ones_within_the_precision() -> None:
    rng = random.Random(3)
    values = [int(rng.lognormvariate(12, 1.5)) for _ in range(20_000)]
    h = Histogram()
    for v in values:
        h.record(v)
    values.sort()
    for p in (1, 50, 90, 99, 99.9):
        exact = values[max(0, math.ceil(len(values) * p / 100) - 1)]
        assert abs(h.percentile(p) - exact) <= exact / SUB + 1, p
    assert h.percentile(100) == values[-1] == h.max and h.min == values[0] and h.total == len(values)


def test_merge_and_serialization_equal_one_histogram() -> None:
    rng = random.Random(4)
    a, b_, whole = Histogram(), Histogram(), Histogram()
    for i in range(5000):
        v = rng.randrange(1, 10**9)
        (a if i % 3 else b_).record(v)
        whole.record(v)
    merged = Histogram.from_bytes(a.to_bytes())
    merged.merge(Histogram.from_bytes(b_.to_bytes()))
    assert merged.counts == whole.counts
    assert (merged.total, merged.sum, merged.min, merged.max) == (whole.total, whole.sum, whole.min, whole.max)
    sparse = Histogram.from_sparse(whole.to_sparse())
    assert sparse.counts == whole.counts and sparse.percentile(99) == whole.percentile(99)
    assert Histogram().percentile(50) == 0


def test_parse_mix_and_sizes() -> None:
    assert parse_mix("get:90,set:10") == ((GET, 90), (SET, 10))
    assert parse_mix("GET, mget:3 ,get:1,delete:0") == ((GET, 2), (MGET, 3))
    for bad, msg in (("get:x", "bad weight"), ("put:1", "unknown operation"), ("get:0", "no operation"),
                     ("get:-1", "negative")):
        with pytest.raises(BenchError, match=msg):
            parse_mix(bad)
    assert parse_size_range("100") == (100, 100)
    assert parse_size_range("10-64k") == (10, 65536)
    assert parse_size_range("1m") == (1 << 20, 1 << 20)
    with pytest.raises(BenchError):
        parse_size_range("9-3")
    assert cpus_arg("0,2-3") == (0, 2, 3) and cpus_arg(None) is None
    assert [split(10, 3, i) for i in range(3)] == [4, 3, 3]


def test_spec_validation() -> None:
    LoadSpec(protocol="distcache", mix=parse_mix("get,set,delete"), value_max=32768).validate()
    with pytest.raises(BenchError, match="no mget operation"):
        LoadSpec(protocol="distcache", mix=parse_mix("mget")).validate()
    with pytest.raises(BenchError, match="too long for distcache"):
        LoadSpec(protocol="distcache", key_prefix="x" * 70).validate()


def test_zipf_is_skewed_and_uniform_is_not() -> None:
    zc = KeyChooser(1000, "zipf", 0.99, random.Random(1))
    uc = KeyChooser(1000, "uniform", 0.99, random.Random(1))
    zipf = Counter(zc.next() for _ in range(20_000))
    uni = Counter(uc.next() for _ in range(20_000))
    assert all(0 <= k < 1000 for k in zipf) and all(0 <= k < 1000 for k in uni)
    assert zipf.most_common(1)[0][1] > 1000  # rank 1 of zipf(0.99) over 1000 keys: ~13% of draws
    assert uni.most_common(1)[0][1] < 60


def test_op_source_follows_the_spec() -> None:
    spec = LoadSpec(mix=parse_mix("get:1,set:1,mget:1,incr:1"), value_min=5, value_max=9, mget_width=4,
                    key_prefix="p:")
    src = OpSource(spec, 7)
    ops = [src.next() for _ in range(400)]
    kinds = Counter(op.kind for op in ops)
    assert set(kinds) == {GET, SET, MGET, INCR}
    assert all(5 <= len(op.value) <= 9 for op in ops if op.kind == SET)
    assert all(len(op.keys) == 4 for op in ops if op.kind == MGET)
    assert all(op.keys[0].startswith(b"p:n:") for op in ops if op.kind == INCR)
    again = OpSource(spec, 7)
    assert [o.keys for o in ops[:20]] == [again.next().keys for _ in range(20)]  # seeded: the same stream


def feed_split(protocol: str, ops: list[Op], reply: bytes) -> list[tuple[int, int, int, int]]:
    """Encode ``ops``, then feed ``reply`` one byte at a time; the outcomes."""
    codec = make_codec(protocol)
    for i, op in enumerate(ops):
        codec.sent(codec.encode(op, i)[1])
    out = []
    for i in range(len(reply)):
        out += codec.feed(reply[i:i + 1])
    return out


def test_codecs_account_replies_cut_anywhere() -> None:
    k = (b"k",)
    ops = [Op(GET, k, b""), Op(MGET, (b"a", b"b", b"c"), b""), Op(SET, k, b"v"), Op(INCR, k, b""),
           Op(DELETE, k, b"")]
    text = (b"VALUE k 0 2\r\nEN\r\nEND\r\n" + b"VALUE a 0 1\r\nx\r\nVALUE c 0 1\r\ny\r\nEND\r\n"
            + b"SERVER_ERROR out of memory\r\n" + b"NOT_FOUND\r\n" + b"DELETED\r\n")
    assert feed_split("text", ops, text) == [(GET, 1, 0, 0), (MGET, 2, 1, 0), (SET, 0, 0, 1), (INCR, 0, 1, 0),
                                             (DELETE, 1, 0, 0)]
    meta = b"VA 1\r\nz\r\n" + b"EN\r\nVA 0\r\n\r\nEN\r\n" + b"HD\r\n" + b"NF\r\n" + b"HD\r\n"
    assert feed_split("meta", ops, meta) == [(GET, 1, 0, 0), (MGET, 1, 2, 0), (SET, 1, 0, 0), (INCR, 0, 1, 0),
                                             (DELETE, 1, 0, 0)]
    binary = b"".join([
        b.encode_response(b.OP_GET, 0, extras=b.pack_get_reply_extras(0), value=b"vv", opaque=0),
        b.encode_response(b.OP_GETKQ, 0, key=b"b", extras=b.pack_get_reply_extras(0), value=b"x", opaque=1),
        b.encode_response(b.OP_NOOP, 0, opaque=1),
        b.encode_error(b.OP_SET, b.STATUS_E2BIG, opaque=2),
        b.encode_response(b.OP_INCREMENT, 0, value=b.pack_counter(5), opaque=3),
        b.encode_error(b.OP_DELETE, b.STATUS_KEY_ENOENT, opaque=4),
    ])
    assert feed_split("binary", ops, binary) == [(GET, 1, 0, 0), (MGET, 1, 2, 0), (SET, 0, 0, 1),
                                                 (INCR, 1, 0, 0), (DELETE, 0, 1, 0)]
    resp = b"$-1\r\n" + encode([b"x", None, b"y"]) + b"-OOM command not allowed\r\n" + b":7\r\n" + b":1\r\n"
    assert feed_split("resp", ops, resp) == [(GET, 0, 1, 0), (MGET, 2, 1, 0), (SET, 0, 0, 1), (INCR, 1, 0, 0),
                                             (DELETE, 1, 0, 0)]
    dops = [Op(GET, k, b""), Op(SET, k, b"v"), Op(SET, k, b"v"), Op(DELETE, k, b"")]
    dist = (dc.encode_get_reply(0, b"data") + dc.encode_result(1, dc.OP_ADD, dc.RESULT_OK)
            + dc.encode_result(2, dc.OP_ADD, dc.RESULT_ADD_DUPLICATE) + dc.encode_result(3, dc.OP_REMOVE, 1))
    assert feed_split("distcache", dops, dist) == [(GET, 1, 0, 0), (SET, 1, 0, 0), (SET, 0, 1, 0),
                                                   (DELETE, 0, 1, 0)]


def test_value_diff_points_at_the_first_different_byte() -> None:
    assert value_diff(b"abcdef", b"abcxef").startswith("first difference at byte 3 of 6: expected 0x64, got 0x78")
    assert value_diff(b"abc", b"ab") == "length differs: expected 3 B, got 2 B"
