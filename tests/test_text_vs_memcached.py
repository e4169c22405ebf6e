"""Differential tests: the same raw text/meta requests to real memcached and to hoard server.

Each case is a list of steps; each step is sent with a trailing ``mn`` (meta
no-op) and read up to its ``MN``, so replies are compared step by step. CAS
values differ between servers, so they are renamed in order of appearance
(``<cas1>``, ``<cas2>`` ...); ``{cas}`` in a step is replaced by the last CAS
that server returned.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from tests.support import hoard_server, memcached

_CAS_PATTERNS = [
    re.compile(rb"^(VALUE \S+ \d+ \d+ )(\d+)", re.M),
    re.compile(rb"( c)(\d+)"),
    re.compile(rb"( cas=)(\d+)"),
]


def _normalize(data: bytes, names: dict[bytes, bytes]) -> bytes:
    def rename(m: re.Match[bytes]) -> bytes:
        value = m.group(2)
        if value not in names:
            names[value] = b"<cas%d>" % (len(names) + 1)
        return m.group(1) + names[value]

    for pat in _CAS_PATTERNS:
        data = pat.sub(rename, data)
    return re.sub(rb"^VERSION \S+", b"VERSION <v>", data, flags=re.M)


def _last_cas(data: bytes) -> bytes | None:
    found: list[tuple[int, bytes]] = []
    for pat in _CAS_PATTERNS:
        found += [(m.start(), m.group(2)) for m in pat.finditer(data)]
    return max(found)[1] if found else None


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.cas: bytes | None = None
        self.names: dict[bytes, bytes] = {}

    def step(self, data: bytes) -> bytes:
        if self.cas is not None:
            data = data.replace(b"{cas}", self.cas)
        self.sock.sendall(data + b"mn\r\n")
        buf = b""
        # a step may itself send mn: wait for every MN, not the first (replies can come in pieces)
        sentinels = data.count(b"mn\r\n") + 1
        while not (buf.endswith(b"MN\r\n") and buf.count(b"MN\r\n") >= sentinels):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                buf += b"<closed>"
                break
            buf += chunk
        buf = buf[:-4] if buf.endswith(b"MN\r\n") else buf
        cas = _last_cas(buf)
        if cas is not None:
            self.cas = cas
        return _normalize(buf, self.names)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    with memcached() as ref, hoard_server() as ours:
        yield ref, ours


BIG = b"x" * (1024 * 1024)
K250 = b"k" * 250
K251 = b"k" * 251

CASES: dict[str, list[bytes]] = {
    "set_get": [b"set a 5 0 3\r\nabc\r\n", b"get a\r\n", b"gets a\r\n", b"get a nope a\r\n"],
    "empty_value": [b"set e 0 0 0\r\n\r\n", b"get e\r\n"],
    # after a get, hoard keeps the item's reply instead of its value: every other reader slices it
    "after_a_get": [b"set rk 7 0 5\r\nhello\r\n", b"get rk\r\n", b"get rk\r\n", b"gets rk\r\n",
                    b"mg rk v f s\r\n", b"get rk rk\r\n", b"append rk 0 0 1\r\n!\r\n", b"get rk\r\n",
                    b"prepend rk 0 0 1\r\n<\r\n", b"mg rk v\r\n", b"set rk 0 0 2\r\n10\r\n",
                    b"get rk\r\n", b"incr rk 5\r\n", b"get rk\r\n", b"touch rk 100\r\n", b"get rk\r\n",
                    b"gat 100 rk\r\n", b"delete rk\r\n", b"get rk\r\n"],
    "add_replace": [b"add b 0 0 1\r\n1\r\n", b"add b 0 0 1\r\n2\r\n", b"replace nob 0 0 1\r\n1\r\n",
                    b"replace b 7 0 2\r\n22\r\n", b"get b\r\n"],
    "append_prepend": [b"append ap 0 0 1\r\nx\r\n", b"set ap 3 0 2\r\nmm\r\n", b"append ap 9 0 2\r\nzz\r\n",
                       b"prepend ap 9 0 2\r\naa\r\n", b"get ap\r\n"],
    "cas": [b"cas c 0 0 1 1\r\nx\r\n", b"set c 0 0 1\r\nx\r\n", b"gets c\r\n",
            b"cas c 0 0 1 {cas}\r\ny\r\n", b"cas c 0 0 1 1\r\nz\r\n", b"gets c\r\n"],
    "delete": [b"set d 0 0 1\r\nx\r\n", b"delete d\r\n", b"delete d\r\n", b"delete d 0\r\n",
               b"delete d 5\r\n", b"delete\r\n"],
    "noreply": [b"set n 0 0 1 noreply\r\nx\r\n", b"add n 0 0 1 noreply\r\ny\r\n",
                b"append n 0 0 1 noreply\r\nz\r\n", b"incr n 1 noreply\r\n", b"delete n noreply\r\n",
                b"get n\r\n", b"set n 0 0 1 noreply\r\n5\r\n", b"incr n 3 noreply\r\n", b"get n\r\n",
                b"touch n 100 noreply\r\n", b"flush_all noreply\r\n", b"get n\r\n"],
    "incr_decr": [b"set i 0 0 2\r\n10\r\n", b"incr i 5\r\n", b"decr i 100\r\n",
                  b"incr nope 1\r\n", b"decr nope 1\r\n", b"set j 0 0 3\r\nabc\r\n", b"incr j 1\r\n",
                  b"incr i abc\r\n", b"incr i -1\r\n", b"incr i 18446744073709551616\r\n"],
    "incr_wrap": [b"set w 0 0 20\r\n18446744073709551615\r\n", b"incr w 1\r\n", b"get w\r\n",
                  b"set w 0 0 20\r\n18446744073709551614\r\n", b"incr w 3\r\n"],
    # memcached space-pads a shrinking counter only when no other thread holds the item,
    # so the padded value itself is checked against hoard alone (test_decr_pads_in_place)
    "decr_pad": [b"set p 0 0 3\r\n100\r\n", b"decr p 91\r\n", b"incr p 1\r\n", b"decr p 10\r\n"],
    "append_too_large": [b"set at 0 0 600000\r\n" + b"a" * 600000 + b"\r\n",
                         b"append at 0 0 600000\r\n" + b"b" * 600000 + b"\r\n", b"get at\r\n"],
    "incr_odd_values": [b"set o 0 0 6\r\n12 abc\r\n", b"incr o 1\r\n", b"set o 0 0 3\r\n 12\r\n",
                        b"incr o 1\r\n", b"set o 0 0 3\r\n-12\r\n", b"incr o 1\r\n",
                        b"set o 0 0 20\r\n18446744073709551616\r\n", b"incr o 1\r\n"],
    "touch_gat": [b"touch t 10\r\n", b"set t 3 0 1\r\nx\r\n", b"touch t 100\r\n", b"gat 100 t nope\r\n",
                  b"gats 100 t\r\n", b"gat 10\r\n", b"gat abc t\r\n", b"touch t abc\r\n", b"touch t -1\r\n",
                  b"get t\r\n"],
    "key_length": [b"set " + K250 + b" 0 0 1\r\nx\r\n", b"get " + K250 + b"\r\n",
                   b"set " + K251 + b" 0 0 1\r\nx\r\n", b"get " + K251 + b"\r\n",
                   b"delete " + K251 + b"\r\n", b"incr " + K251 + b" 1\r\n", b"touch " + K251 + b" 1\r\n"],
    "flags_range": [b"set f 4294967295 0 1\r\nx\r\n", b"get f\r\n", b"set f 4294967296 0 1\r\nx\r\n",
                    b"set f -1 0 1\r\nx\r\n", b"set f abc 0 1\r\nx\r\n"],
    "exptime": [b"set x1 0 -1 1\r\nx\r\n", b"get x1\r\n", b"set x2 0 1000 1\r\nx\r\n", b"get x2\r\n",
                b"set x3 0 2592001 1\r\nx\r\n", b"get x3\r\n", b"set x4 0 99999999999 1\r\nx\r\n",
                b"set x5 0 abc 1\r\nx\r\n"],
    "too_large": [b"set big 0 0 1\r\nx\r\n", b"set big 0 0 %d\r\n" % len(BIG) + BIG + b"\r\n",
                  b"get big\r\n", b"set big2 0 0 %d noreply\r\n" % len(BIG) + BIG + b"\r\n",
                  b"get big2\r\n"],
    "large_ok": [b"set l 0 0 500000\r\n" + b"y" * 500000 + b"\r\n", b"get l\r\n"],
    "bad_chunk": [b"set bc 0 0 3\r\nabcd\r\n", b"get bc\r\n", b"set bc 0 0 3\r\nab\r\n\r\n", b"get bc\r\n"],
    "bad_commands": [b"\r\n", b"bogus\r\n", b"set\r\n", b"set a 0 0\r\n", b"get\r\n", b"gets\r\n",
                     b"incr a\r\n", b"touch a\r\n", b"set a 0 0 -1\r\n", b"stats foo\r\n",
                     b"verbosity\r\n", b"verbosity 1\r\n", b"verbosity x\r\n", b"version extra\r\n",
                     b"flush_all bogus\r\n", b"flush_all 0\r\n", b"GET a\r\n"],
    "multi_space": [b"set  ms  0  0  1\r\nx\r\n", b"get   ms   ms\r\n", b"set lf 0 0 1\nx\r\n", b"get lf\n"],
    "pipelined": [b"set p1 0 0 1\r\na\r\nset p2 0 0 1\r\nb\r\nget p1 p2\r\ndelete p1\r\nget p1 p2\r\n"],
    # meta protocol
    "mg_flags": [b"set m 42 0 5\r\nhello\r\n", b"mg m v f s k t c\r\n", b"mg m\r\n", b"mg nope v\r\n",
                 b"mg nope v q\r\n", b"mg m v q O123 k\r\n", b"mg m h\r\n", b"mg m h l\r\n"],
    "mg_ttl": [b"ms mt 1 T100\r\nx\r\n", b"mg mt t v\r\n", b"mg mt T200 t\r\n", b"mg mt t\r\n",
               b"ms mu 1\r\nx\r\n", b"mg mu t\r\n"],
    "mg_vivify": [b"mg vv N30 v t\r\n", b"mg vv N30 v t\r\n", b"mg vv v\r\n", b"ms vv 1\r\nx\r\n",
                  b"mg vv v c\r\n"],
    "mg_recache": [b"ms rc 1 T10\r\nx\r\n", b"mg rc R30 v\r\n", b"mg rc R30 v\r\n", b"mg rc R5 v\r\n"],
    "mg_base64": [b"ms Zm9v 3 b\r\nbar\r\n", b"mg Zm9v b v k\r\n", b"get foo\r\n", b"mg !!! b v\r\n"],
    "ms_modes": [b"ms mm 1 MA\r\nx\r\n", b"ms mm 1 ME\r\nx\r\n", b"ms mm 1 ME\r\ny\r\n",
                 b"ms mm 1 MA\r\nz\r\n", b"ms mm 1 MP\r\na\r\n", b"mg mm v\r\n", b"ms mm 1 MR\r\nr\r\n",
                 b"ms nomm 1 MR\r\nr\r\n", b"ms mm 1 MS F5 T0\r\ns\r\n", b"mg mm v f\r\n",
                 b"ms mm 1 MX\r\nq\r\n", b"ms mm 1 q\r\nq\r\n", b"ms mm 1 O99 k\r\nq\r\n"],
    "ms_cas": [b"ms mc 1\r\nx\r\n", b"mg mc c\r\n", b"ms mc 1 C{cas}\r\ny\r\n", b"ms mc 1 C1\r\nz\r\n",
               b"ms nomc 1 C5\r\nz\r\n", b"mg mc v\r\n"],
    "ms_invalidate": [b"ms iv 1\r\nx\r\n", b"mg iv c\r\n", b"ms iv 1 I C1\r\ny\r\n", b"mg iv v\r\n",
                      b"mg iv v\r\n"],
    "md": [b"md nomd\r\n", b"md nomd q\r\n", b"ms md 1\r\nx\r\n", b"md md q\r\n", b"mg md v\r\n",
           b"ms md 1\r\nx\r\n", b"md md C1\r\n", b"md md O5 k\r\n", b"md md\r\n"],
    "md_invalidate": [b"ms mi 1 T100\r\nx\r\n", b"md mi I T30\r\n", b"mg mi v t c\r\n", b"mg mi v\r\n",
                      b"ms mi 1\r\ny\r\n", b"mg mi v\r\n"],
    "ma": [b"ma noma\r\n", b"ma noma q\r\n", b"ma noma N0 J10 v\r\n", b"ma noma v\r\n",
           b"ma noma D5 v t\r\n", b"ma noma MD D100 v\r\n", b"ma noma M- v\r\n", b"ma noma MI D3\r\n",
           b"mg noma v\r\n", b"ms txt 1\r\nx\r\n", b"ma txt\r\n", b"ma noma Dabc\r\n", b"ma noma MZ\r\n",
           b"ma noma q D1\r\n", b"ma noma O77 k v\r\n"],
    "meta_miss_flags": [b"mg nokey O12 k v\r\n", b"mg nokey k q O5\r\n", b"mg Zm9v b k O1\r\n",
                        b"md nokey O3 k\r\n", b"ma nokey O4 k\r\n", b"md nokey q O3\r\n"],
    "ms_long_key": [b"ms " + K251 + b" 1\r\nx\r\n", b"mg k v\r\n"],
    "meta_errors": [b"mg\r\n", b"ms\r\n", b"ms k\r\n", b"ms k abc\r\n", b"mg " + K251 + b" v\r\n",
                    b"mg k v v\r\n", b"mg k 1\r\n", b"ms k 1 T\r\nx\r\n", b"mn\r\n"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_replies_as_memcached(ports: tuple[int, int], name: str) -> None:
    ref_port, our_port = ports
    ref, ours = Conn(ref_port), Conn(our_port)
    try:
        ref.step(b"flush_all\r\n")
        ours.step(b"flush_all\r\n")
        for i, step in enumerate(CASES[name]):
            expected = ref.step(step)
            got = ours.step(step)
            assert got == expected, f"step {i}: {step[:120]!r}"
    finally:
        ref.close()
        ours.close()


def test_decr_pads_in_place(ports: tuple[int, int]) -> None:
    c = Conn(ports[1])
    assert c.step(b"set pad 0 0 3\r\n100\r\ndecr pad 91\r\nget pad\r\n") == (
        b"STORED\r\n9\r\nVALUE pad 0 3\r\n9  \r\nEND\r\n")
    c.close()


def test_quit_closes(ports: tuple[int, int]) -> None:
    for port in ports:
        c = Conn(port)
        c.sock.sendall(b"quit\r\n")
        assert c.sock.recv(10) == b""
        c.close()
