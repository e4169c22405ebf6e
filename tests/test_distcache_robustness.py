"""Bad distcache input closes only the offending connection; everyone else keeps working."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scatterhoard.protocol import distcache as dc
from tests.support import free_port, hoard_argv, running, stop_process

HDR = struct.Struct(">IBIBBBH")


def frame(data: bytes = b"", *, level: int = dc.PROTO_LEVEL, resp: int = 0, uid: int = 1, op: int = dc.OP_GET,
          complete: int = 1, dlen: int | None = None) -> bytes:
    return HDR.pack(level, resp, uid, 0, op, complete, len(data) if dlen is None else dlen) + data


FRAMING_VIOLATIONS = {
    "wrong proto_level": frame(b"sid", level=0x00120000),
    "is_response=1 from a client": frame(b"sid", resp=1),
    "data_len over 2048": frame(b"x" * 2049),
    "short non-final frame": frame(b"x" * 100, complete=0),
    "payload over 32768": b"".join(frame(b"x" * 2048, complete=0, op=dc.OP_ADD) for _ in range(16))
    + frame(b"x" * 10, op=dc.OP_ADD),
    "corrupt is_response byte": frame(b"sid", resp=7),
    "unknown operation": frame(b"sid", op=9),
}


def recv_replies(sock: socket.socket, count: int, timeout: float = 5.0) -> list[dc.Response]:
    parser = dc.DistcacheParser("client")
    sock.settimeout(timeout)
    out: list[dc.Response] = []
    while len(out) < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(out)} of {count} replies")
        out.extend(dc.decode_response(m) for m in parser.feed(chunk))
    return out


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    port = free_port()
    with running(hoard_argv("server", "-l", "127.0.0.1", "-p", str(port)), port=port):
        yield port


@pytest.fixture(scope="module")
def good(port: int) -> Iterator[socket.socket]:
    """A well-behaved distcache client that stays connected through every bad test."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(dc.encode_add(1, b"keeper", b"precious" * 500, 600_000))
    assert recv_replies(sock, 1)[0].code == dc.RESULT_OK
    yield sock
    sock.close()


def start_good(good: socket.socket, uid: int) -> None:
    good.sendall(dc.encode_get(uid, b"keeper")[:9])  # half a request in flight while another misbehaves


def finish_good(good: socket.socket, uid: int) -> None:
    good.sendall(dc.encode_get(uid, b"keeper")[9:] + dc.encode_have(uid + 1, b"keeper"))
    r1, r2 = recv_replies(good, 2)
    assert (r1.uid, r1.code, r1.data) == (uid, dc.RESULT_OK, b"precious" * 500)
    assert (r2.uid, r2.code) == (uid + 1, dc.RESULT_OK)


@pytest.mark.parametrize("name", list(FRAMING_VIOLATIONS))
def test_framing_violation_closes_only_that_connection(port: int, good: socket.socket, name: str) -> None:
    uid = 100 + 10 * list(FRAMING_VIOLATIONS).index(name)
    start_good(good, uid)
    with socket.create_connection(("127.0.0.1", port)) as bad:
        # a valid request first: it is answered before the connection is closed
        bad.sendall(dc.encode_have(5, b"keeper") + FRAMING_VIOLATIONS[name])
        assert recv_replies(bad, 1)[0] == dc.Response(5, dc.OP_HAVE, dc.RESULT_OK, None)
        assert closed_by_peer(bad), name
    finish_good(good, uid)


@pytest.mark.parametrize(("payload", "code"), [
    (b"\x00\x00\x00\x01\x00", dc.RESULT_ADD_CORRUPT),                                  # ADD under 8 bytes
    (struct.pack(">II", 1000, 65) + b"i" * 65 + b"data", dc.RESULT_ADD_ID_LEN),        # id_len over 64
    (struct.pack(">II", 1000, 4000) + b"short", dc.RESULT_ADD_CORRUPT),                # id_len past the end
])
def test_bad_add_payloads_get_their_result_code(port: int, good: socket.socket, payload: bytes,
                                                code: int) -> None:
    """The protocol's own result code answers them (as the original does), then only that
    connection is closed; another client keeps working and loses nothing."""
    uid = 300 + code
    start_good(good, uid)
    with socket.create_connection(("127.0.0.1", port)) as bad:
        bad.sendall(dc.encode_message(False, 9, dc.OP_ADD, payload) + dc.encode_have(10, b"keeper"))
        (r1,) = recv_replies(bad, 1)
        assert (r1.uid, r1.code) == (9, code)
        assert closed_by_peer(bad)
    finish_good(good, uid)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=5000))
def test_random_bytes_never_disturb_another_client(port: int, good: socket.socket, data: bytes) -> None:
    start_good(good, 500)
    with socket.create_connection(("127.0.0.1", port)) as bad:
        bad.sendall(b"\x00" + data)
    finish_good(good, 500)


def test_each_violation_is_logged_in_one_line() -> None:
    port = free_port()
    with running(hoard_argv("server", "-l", "127.0.0.1", "-p", str(port)), port=port) as proc:
        for wire in list(FRAMING_VIOLATIONS.values())[:3]:
            with socket.create_connection(("127.0.0.1", port)) as bad:
                bad.sendall(wire)
                assert closed_by_peer(bad)
        stop_process(proc)
        assert proc.stderr is not None
        lines = [ln for ln in proc.stderr.read().decode().splitlines() if "closing connection" in ln]
    assert len(lines) == 3
    assert "bad proto_level 0x00120000" in lines[0]
