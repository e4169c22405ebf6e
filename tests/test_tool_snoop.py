"""``hoard snoop``: byte-identical forwarding both ways for text, binary, RESP and distcache
(values over 64 KB, split across reads), decoded lines, a raw dump on undecodable bytes,
and the decoders, filters and JSON output without sockets.

Forwarding is checked with a recording relay between the snoop and the real server:
client -> snoop -> relay -> server.  What the client sent must be what reached the relay,
and what the relay got from the server must be what reached the client (sha256 of each).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from scatterhoard.protocol import binary as b
from scatterhoard.protocol import distcache as dc
from scatterhoard.protocol.resp import RespParser, encode_command
from scatterhoard.tools.snoop import DecodingTap, Filters, Printer
from scatterhoard.tools.snoop_decode import BinaryDecoder, TextDecoder
from tests.support import (
    free_port,
    hoard_argv,
    hoard_server,
    memcached,
    require_binary,
    running,
    stop_process,
    temp_dir,
    wait_for_port,
)

BIG = 300_000  # well over 64 KB: split across reads on every hop


def pattern(n: int, salt: int = 0) -> bytes:
    """n bytes holding every byte value, CRLF included, the same on every run."""
    block = bytes((i * 7 + salt) % 256 for i in range(256)) + b"\r\nEND\r\n"
    return (block * (n // len(block) + 1))[:n]


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


class Relay:
    """Forwards every connection to ``upstream`` and records what passed each way."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.lock = threading.Lock()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            self.socks += [conn, up]
            threading.Thread(target=self._pump, args=(conn, up, self.to_server, 1), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn, self.to_client, 2), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while True:
                data = src.recv(rng.randint(1, 20000))  # odd read sizes: splits values anywhere
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                with self.lock:
                    record += data
                dst.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()


@contextlib.contextmanager
def snoop(upstream: int, *extra: str) -> Iterator[tuple[int, Relay, Path]]:
    """``hoard snoop`` in front of a recording relay in front of ``upstream``."""
    relay = Relay(upstream)
    port = free_port()
    with temp_dir() as d:
        out = Path(d) / "snoop.out"
        with open(out, "wb") as f:
            proc = subprocess.Popen(hoard_argv("snoop", "-l", f"127.0.0.1:{port}", "-c", f"127.0.0.1:{relay.port}",
                                               *extra), stdout=f, stderr=subprocess.PIPE)
            try:
                wait_for_port(port, proc=proc)
                yield port, relay, out
            finally:
                stop_process(proc)
                if proc.stderr is not None:
                    proc.stderr.close()
                relay.close()


def talk(port: int, stream: bytes, done: Callable[[bytes], bool], timeout: float = 20.0) -> bytes:
    """Send ``stream`` in odd-sized pieces while reading replies until ``done(received)``."""
    sock = socket.create_connection(("127.0.0.1", port))
    received = bytearray()
    finished = threading.Event()

    def reader() -> None:
        sock.settimeout(timeout)
        try:
            while not done(bytes(received)):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)
        except OSError:
            pass
        finished.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    rng = random.Random(5)
    pos = 0
    while pos < len(stream):
        n = rng.randint(1, 9000)
        sock.sendall(stream[pos:pos + n])
        pos += n
        if rng.random() < 0.05:
            time.sleep(0.002)
    assert finished.wait(timeout), f"no complete reply: got {len(received)} bytes"
    sock.close()
    return bytes(received)


def read_output(out: Path, marker: str, timeout: float = 5.0) -> str:
    """The snoop's output once ``marker`` is in it (it prints when replies complete)."""
    deadline = time.monotonic() + timeout
    while True:
        text = out.read_text()
        if marker in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def assert_identical(sent: bytes, received: bytes, relay: Relay) -> None:
    with relay.lock:
        to_server, to_client = bytes(relay.to_server), bytes(relay.to_client)
    assert len(to_server) == len(sent) and sha(to_server) == sha(sent)
    assert len(received) == len(to_client) and sha(received) == sha(to_client)


# -- byte-identical forwarding, one protocol each ----------------------------------------------------


def test_text_and_meta_through_snoop_to_memcached() -> None:
    big = pattern(BIG)
    with memcached() as mc, snoop(mc) as (port, relay, out):
        stream = (b"set snoop:big 7 0 %d\r\n%s\r\n" % (BIG, big) + b"get snoop:big\r\n" + b"gets snoop:big\r\n"
                  + b"mg snoop:big s v f\r\n" + b"set snoop:n 0 0 1 noreply\r\n5\r\n" + b"incr snoop:n 10\r\n"
                  + b"mg snoop:missing v q\r\n" + b"ms snoop:q 2 q\r\nhi\r\n" + b"mg snoop:q v k q\r\n"
                  + b"get snoop:none snoop:n\r\n" + b"mn\r\n")
        received = talk(port, stream, lambda r: r.endswith(b"MN\r\n"))
        assert_identical(stream, received, relay)
        text = read_output(out, "-> MN")
    assert received.count(big) == 3
    assert f"text set snoop:big flags=7 exptime=0 {BIG}B" in text
    assert " -> STORED" in text
    assert f"text get snoop:big -> VALUE snoop:big flags=7 {BIG}B" in text
    assert f"text mg snoop:big s v f -> VA {BIG} s{BIG} f7" in text
    assert "text set snoop:n flags=0 exptime=0 1B b'5' noreply -> (no reply expected)" not in text  # --values
    assert "text set snoop:n flags=0 exptime=0 1B '5' noreply -> (no reply expected)" in text
    assert "text incr snoop:n 10 -> 15" in text
    assert "text mg snoop:missing v q -> (no reply (quiet))" in text
    assert "text ms snoop:q 2B q 'hi' -> (no reply (quiet))" in text
    assert "text mg snoop:q v k q -> VA 2 ksnoop:q 'hi'" in text
    assert "text get snoop:none snoop:n -> VALUE snoop:n flags=0 2B '15' END" in text
    assert "text mn -> MN" in text
    line = next(ln for ln in text.splitlines() if "text get snoop:big ->" in ln)
    assert line.endswith(f"B/{BIG + len(b'VALUE snoop:big 7 300000') + 2 + 2 + 5}B")  # wire sizes
    assert "not decodable" not in text


def test_binary_through_snoop_to_memcached() -> None:
    big = pattern(BIG, 3)
    e8 = b.pack_store_extras(3, 0)
    with memcached() as mc, snoop(mc, "--values", "8") as (port, relay, out):
        stream = b"".join([
            b.encode_request(b.OP_SET, b"snoop:big", e8, big, opaque=1),
            b.encode_request(b.OP_GET, b"snoop:big", opaque=2),
            b.encode_request(b.OP_GETKQ, b"snoop:missing", opaque=3),
            b.encode_request(b.OP_GETQ, b"snoop:big", opaque=4),
            b.encode_request(b.OP_INCREMENT, b"snoop:n", b.pack_arith_extras(5, 40, 0), opaque=5),
            b.encode_request(b.OP_NOOP, opaque=6),
        ])

        def done(r: bytes) -> bool:
            return len(r) >= 24 and r[-24] == b.RESPONSE_MAGIC and r[-23] == b.OP_NOOP

        received = talk(port, stream, done)
        assert_identical(stream, received, relay)
        text = read_output(out, "NOOP opaque=6 ->")
    assert received.count(big) == 2
    assert f"binary SET snoop:big flags=3 exptime=0 {BIG}B " in text
    assert "binary GET snoop:big opaque=2 -> NO_ERROR flags=3 300000B" in text
    assert "binary GETKQ snoop:missing opaque=3 -> (no reply (quiet))" in text
    assert "binary GETQ snoop:big opaque=4 -> NO_ERROR flags=3" in text
    assert "binary INCREMENT snoop:n delta=5 initial=40 exptime=0x0 opaque=5 -> NO_ERROR 40" in text
    assert "binary NOOP opaque=6 -> NO_ERROR" in text
    assert f"{24 + 8 + 9 + BIG}B/24B" in text  # the SET's sizes on the wire


def test_resp_through_snoop_to_redis() -> None:
    redis = require_binary("redis-server")
    rport = free_port()
    big = pattern(BIG, 5)
    commands: list[tuple[bytes | str | int, ...]] = [("SET", "snoop:big", big), ("GET", "snoop:big"),
                                                     ("INCR", "snoop:n"), ("MGET", "snoop:n", "snoop:no"),
                                                     ("EXPIRE", "snoop:n", 100), ("TTL", "snoop:n"), ("PING",)]
    stream = b"".join(encode_command(*c) for c in commands)
    with running([redis, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                 port=rport), snoop(rport, "--json") as (port, relay, out):
        def done(r: bytes) -> bool:
            try:
                return len(RespParser().feed(r)) >= len(commands)
            except Exception:
                return False

        received = talk(port, stream, done)
        assert_identical(stream, received, relay)
        text = read_output(out, '"command": "PING"')
    records = [json.loads(ln) for ln in text.splitlines()]
    pairs = [r for r in records if "command" in r]
    assert [r["command"] for r in pairs] == ["SET", "GET", "INCR", "MGET", "EXPIRE", "TTL", "PING"]
    assert all(r["protocol"] == "resp" and r["latency_ms"] is not None for r in pairs)
    assert pairs[0]["keys"] == ["snoop:big"] and pairs[0]["reply"] == "+OK"
    assert pairs[0]["request_bytes"] == len(encode_command(*commands[0]))
    assert pairs[1]["reply_bytes"] == len(b"$300000\r\n") + BIG + 2
    assert pairs[3]["reply"] == "array[2]: '1', (nil)" and pairs[3]["keys"] == ["snoop:n", "snoop:no"]
    assert pairs[5]["reply"].startswith("(integer) ")
    assert pairs[6]["reply"] == "+PONG"


def test_distcache_through_snoop_to_hoard_server() -> None:
    ids = [b"snoop-session-%d" % i for i in range(10)]
    datas = [pattern(30_000, i) for i in range(10)]  # 300 KB of ADDs in one pipelined write
    stream = b"".join(dc.encode_add(i + 1, sid, data, 60_000) for i, (sid, data) in enumerate(zip(ids, datas, strict=True)))
    stream += b"".join(dc.encode_get(100 + i, sid) for i, sid in enumerate(ids))
    stream += dc.encode_have(200, ids[0]) + dc.encode_get(201, b"snoop-none")
    with hoard_server() as hs, snoop(hs) as (port, relay, out):
        def done(r: bytes) -> bool:
            try:
                return len(dc.DistcacheParser("client").feed(r)) >= 22
            except dc.FramingError:
                return False

        received = talk(port, stream, done)
        assert_identical(stream, received, relay)
        text = read_output(out, "uid=201")
    replies = dc.DistcacheParser("client").feed(received)
    assert [m.payload for m in replies[10:20]] == datas
    assert "distcache uid=1 ADD timeout_ms=60000 id_len=15 data_len=30000 id=snoop-session-0" in text
    assert "-> uid=1 ADD result=OK(0)" in text
    assert "distcache uid=100 GET id_len=15 id=snoop-session-0 -> uid=100 GET result=OK(0) data_len=30000" in text
    assert "distcache uid=200 HAVE id_len=15 id=snoop-session-0 -> uid=200 HAVE result=OK(0)" in text
    assert "distcache uid=201 GET id_len=10 id=snoop-none -> uid=201 GET result=NOTOK(1)" in text


def test_undecodable_bytes_are_shown_once_and_still_forwarded() -> None:
    """A fake server echoes everything back; the client's stream turns into garbage midway."""
    upstream = socket.create_server(("127.0.0.1", 0))
    uport = upstream.getsockname()[1]
    echoed = bytearray()

    def echo() -> None:
        while True:
            try:
                conn, _ = upstream.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    echoed.extend(data)
                    conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    stream = b.encode_request(b.OP_NOOP, opaque=1) + b"\x00not binary at all" * 4000 + pattern(100_000)
    with snoop(uport) as (port, relay, out):
        received = talk(port, stream, lambda r: len(r) >= len(stream))
        assert_identical(stream, received, relay)
        text = read_output(out, "not decodable")
    upstream.close()
    assert received == stream
    lines = [ln for ln in text.splitlines() if "not decodable" in ln]
    assert len(lines) == 1, text
    assert "binary client->server not decodable (bad magic byte 0x00)" in lines[0]
    assert "raw " in lines[0] and "forwarding without decoding" in lines[0]


# -- decoders, filters and output, without sockets ------------------------------------------------------


CLIENT = (b"set k1 0 0 5\r\nhello\r\nget k1 k2\r\nmg k2 v q\r\nmg k1 v q Oxy\r\nmn\r\n"
          b"delete k1 noreply\r\nbogus\r\nincr k9 1\r\n")
SERVER = b"STORED\r\nVALUE k1 0 5\r\nhello\r\nEND\r\nVA 5 Oxy\r\nhello\r\nMN\r\nERROR\r\nNOT_FOUND\r\n"


def decode_text(step: int) -> list[str]:
    """The snoop lines for CLIENT/SERVER fed ``step`` bytes at a time, without times and latencies."""
    out = io.StringIO()
    tap = DecodingTap(1, Printer(out), values=4)
    for i in range(0, len(CLIENT), step):
        tap.client_data(CLIENT[i:i + step])
    for i in range(0, len(SERVER), step):
        tap.server_data(SERVER[i:i + step])
    tap.closed("client")
    return [re.sub(r"  [\d.]+ ms  ", "  ", ln.split(" ", 1)[1]) for ln in out.getvalue().splitlines()]


def test_text_decoding_does_not_depend_on_how_bytes_are_split() -> None:
    lines = decode_text(1)
    assert lines == decode_text(3) == decode_text(1000)
    assert lines == [
        "#1 protocol text",
        "#1 text set k1 flags=0 exptime=0 5B 'hell'...(+1B) -> STORED  21B/8B",
        "#1 text get k1 k2 -> VALUE k1 flags=0 5B 'hell'...(+1B) END  11B/26B",
        "#1 text mg k2 v q -> (no reply (quiet))  11B",
        "#1 text mg k1 v q Oxy -> VA 5 Oxy 'hell'...(+1B)  15B/17B",
        "#1 text mn -> MN  4B/4B",
        "#1 text delete k1 noreply -> (no reply expected)  19B",
        "#1 text 'bogus' (invalid: ERROR) -> ERROR  7B/7B",
        "#1 text incr k9 1 -> NOT_FOUND  11B/11B",
        "#1 closed by the client",
    ]


def test_binary_quiet_requests_pair_by_opcode_and_opaque() -> None:
    dec = BinaryDecoder(values=0)
    reqs = b"".join([b.encode_request(b.OP_GETQ, b"a", opaque=1), b.encode_request(b.OP_GETQ, b"b", opaque=2),
                     b.encode_request(b.OP_GETKQ, b"c", opaque=3), b.encode_request(b.OP_NOOP, opaque=4)])
    reps = b"".join([b.encode_response(b.OP_GETQ, value=b"B", extras=b.pack_get_reply_extras(0), opaque=2),
                     b.encode_response(b.OP_NOOP, opaque=4)])
    assert dec.client(reqs, 1.0, 1.0) == []
    exchanges = dec.server(reps, 1.5)
    got = [(ex.request.text if ex.request else None, ex.reply.text if ex.reply else None, ex.note)
           for ex in exchanges]
    assert got == [("GETQ a opaque=1", None, "quiet"), ("GETQ b opaque=2", "NO_ERROR flags=0 1B", ""),
                   ("GETKQ c opaque=3", None, "quiet"), ("NOOP opaque=4", "NO_ERROR", "")]
    assert exchanges[1].latency == 0.5


def test_meta_quiet_reply_goes_to_the_request_whose_opaque_it_carries() -> None:
    dec = TextDecoder()
    dec.client(b"mg a v q Oa1\r\nmg b v q Ob2\r\nmn\r\n", 0.0, 0.0)
    exchanges = dec.server(b"VA 1 Ob2\r\nx\r\nMN\r\n", 0.1)
    assert [(ex.request.command if ex.request else None, ex.note) for ex in exchanges] == [
        ("mg", "quiet"), ("mg", ""), ("mn", "")]
    assert exchanges[1].request is not None and "Ob2" in exchanges[1].request.text


def test_filters_and_json() -> None:
    out = io.StringIO()
    printer = Printer(out, Filters(keys=["user:*"], commands=["get,SET"]), as_json=True)
    tap = DecodingTap(7, printer, values=0)
    tap.opened("127.0.0.1:1")
    tap.client_data(b"set user:1 0 0 2\r\nab\r\nget user:1\r\nget other\r\ndelete user:1\r\n")
    tap.server_data(b"STORED\r\nVALUE user:1 0 2\r\nab\r\nEND\r\nEND\r\nDELETED\r\n")
    records = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert [(r["command"], r["keys"], r["status"]) for r in records] == [
        ("set", ["user:1"], "STORED"), ("get", ["user:1"], "HIT")]
    assert records[0]["request"] == "set user:1 flags=0 exptime=0 2B" and records[0]["request_bytes"] == 22
    assert records[1]["reply"] == "VALUE user:1 flags=0 2B END" and records[1]["reply_bytes"] == 27
    assert all(r["conn"] == 7 and r["protocol"] == "text" and r["latency_ms"] >= 0 for r in records)

    slow = io.StringIO()
    tap = DecodingTap(8, Printer(slow, Filters(slow_ms=50)))
    tap.client_data(b"get a\r\n")
    tap.server_data(b"END\r\n")
    tap.client_data(b"get b\r\n")
    time.sleep(0.06)
    tap.server_data(b"END\r\n")
    lines = slow.getvalue().splitlines()
    assert len(lines) == 1 and " #8 text get b -> END (miss)  " in lines[0], lines  # opens/closes hidden too
    assert float(lines[0].split("  ")[1].removesuffix(" ms")) >= 50


# -- a slow reader of the output --------------------------------------------------------------------


def test_a_reader_that_never_reads_the_output_does_not_stall_the_traffic() -> None:
    """stdout is a pipe nobody reads (``hoard snoop ... | less`` with the pager's screen full):
    the pipe fills after a few hundred lines, yet every request still gets its answer at once,
    and the lines that did not fit are counted when the reader comes back."""
    with memcached() as mc:
        port = free_port()
        read_end, write_end = os.pipe()
        proc = subprocess.Popen(hoard_argv("snoop", "-l", f"127.0.0.1:{port}", "-c", f"127.0.0.1:{mc}"),
                                stdout=write_end, stderr=subprocess.DEVNULL)
        os.close(write_end)
        try:
            wait_for_port(port, proc=proc)
            # ~100k lines of output for a 64 KiB pipe: the snoop must not wait for its reader
            stream = b"".join(b"get k%d\r\n" % i for i in range(100_000))
            got = talk(port, stream, lambda r: r.count(b"END\r\n") == 100_000, timeout=60)
            assert got.count(b"END\r\n") == 100_000
            # now read: what fitted, then a note of what did not
            os.set_blocking(read_end, False)
            text = b""
            deadline = time.monotonic() + 10
            while b"lines dropped" not in text and time.monotonic() < deadline:
                with contextlib.suppress(BlockingIOError):
                    text += os.read(read_end, 1 << 20)
                with contextlib.suppress(OSError):  # one more exchange makes the note come out
                    talk(port, b"get note\r\n", lambda r: r.endswith(b"END\r\n"), timeout=5)
                time.sleep(0.05)
        finally:
            stop_process(proc)
            os.close(read_end)
    assert re.search(rb"\[hoard snoop: \d+ lines dropped: the output was read too slowly\]", text), text[-300:]
