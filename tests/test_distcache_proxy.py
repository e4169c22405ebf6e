"""dc_client (``hoard client``): one multiplexed upstream connection, DISCONNECTED while the
server is down, local clients isolated from each other; memcached clients multiplexed too."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator

from pymemcache.client.base import Client as MemcacheClient

from scatterhoard.distcache import SessionCache
from scatterhoard.protocol import binary as b
from scatterhoard.protocol import distcache as dc
from tests.support import free_port, hoard_argv, hoard_server, recv_until, running, temp_dir

HDR = struct.Struct(">IBIBBBH")


@contextlib.contextmanager
def proxy(port: int, *extra: str) -> Iterator[str]:
    with temp_dir() as d:
        path = f"{d}/dc_client.sock"
        with running(hoard_argv("client", "-listen", f"UNIX:{path}", "-server", f"IP:127.0.0.1:{port}",
                                *extra), unix_path=path):
            yield path


def unix(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def recv_replies(sock: socket.socket, count: int, timeout: float = 5.0) -> list[dc.Response]:
    parser = dc.DistcacheParser("client")
    sock.settimeout(timeout)
    out: list[dc.Response] = []
    while len(out) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} of {count} replies"
        out.extend(dc.decode_response(m) for m in parser.feed(chunk))
    return out


def server_connections(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"stats\r\n")
        text = recv_until(s, b"END\r\n").decode()
    row = next(ln for ln in text.splitlines() if ln.startswith("STAT curr_connections "))
    return int(row.split()[2]) - 1  # not counting this one


def test_server_down_means_disconnected_then_reconnects() -> None:
    port = free_port()
    with proxy(port, "-retry", "100") as path:
        cache = SessionCache(f"UNIX:{path}", timeout=2)
        t0 = time.monotonic()
        assert cache.execute(dc.OP_GET, b"anything").code == dc.RESULT_DISCONNECTED
        assert cache.execute(dc.OP_ADD, b"anything", b"x", 1000).code == dc.RESULT_DISCONNECTED
        assert cache.get(b"anything") is None  # the friendly API: a miss
        assert time.monotonic() - t0 < 1.0  # answered at once, no hanging
        with hoard_server(port):
            deadline = time.monotonic() + 5
            while cache.execute(dc.OP_HAVE, b"x").code == dc.RESULT_DISCONNECTED:
                assert time.monotonic() < deadline, "the proxy never reconnected"
                time.sleep(0.05)
            assert cache.add(b"sess", b"data", 60_000)
            assert cache.get(b"sess") == b"data"
        # the server went away: the same local connection now gets DISCONNECTED
        deadline = time.monotonic() + 5
        while cache.execute(dc.OP_HAVE, b"sess").code != dc.RESULT_DISCONNECTED:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with hoard_server(port):
            deadline = time.monotonic() + 5
            while cache.execute(dc.OP_HAVE, b"x").code == dc.RESULT_DISCONNECTED:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        cache.close()


def test_one_upstream_connection_and_uids_restored() -> None:
    """Many local clients pipelining the SAME uids each get their own replies."""
    with hoard_server() as port, proxy(port) as path:
        clients = [unix(path) for _ in range(8)]
        try:
            for n, c in enumerate(clients):
                c.sendall(b"".join(dc.encode_add(uid, b"c%d-s%d" % (n, uid), b"data-%d-%d" % (n, uid) * 300,
                                                 60_000) for uid in range(1, 21)))
            for c in clients:
                assert [(r.uid, r.code) for r in recv_replies(c, 20)] == [(u, 0) for u in range(1, 21)]
            for c in clients:  # interleaved GETs with identical uids on every connection
                c.sendall(b"".join(dc.encode_get(uid, b"c%d-s%d" % (n, uid)) for n in range(8)
                                   for uid in (7,)))
            for c in clients:
                got = recv_replies(c, 8)
                assert [r.data for r in got] == [b"data-%d-7" % n * 300 for n in range(8)]
                assert {r.uid for r in got} == {7}
            assert server_connections(port) == 1  # everything went over ONE upstream connection
        finally:
            for c in clients:
                c.close()


def test_local_client_leaving_mid_request_disturbs_no_one() -> None:
    with hoard_server() as port, proxy(port) as path:
        keeper = unix(path)
        keeper.sendall(dc.encode_add(1, b"keep", b"K" * 4000, 60_000))
        assert recv_replies(keeper, 1)[0].code == 0
        for round_ in range(20):
            quitter = unix(path)
            quitter.sendall(b"".join(dc.encode_add(u, b"q%d-%d" % (round_, u), b"Q" * 3000, 60_000)
                                     for u in range(50)) + dc.encode_get(99, b"keep")[:20])
            keeper.sendall(dc.encode_get(round_, b"keep"))
            quitter.close()  # requests still in flight, one half-sent
            (r,) = recv_replies(keeper, 1)
            assert (r.uid, r.data) == (round_, b"K" * 4000)
        keeper.close()
        assert SessionCache(f"UNIX:{path}", strict=True).get(b"keep") == b"K" * 4000


def test_bad_local_client_is_closed_alone() -> None:
    with hoard_server() as port, proxy(port) as path:
        good = unix(path)
        good.sendall(dc.encode_add(1, b"g", b"G", 60_000))
        assert recv_replies(good, 1)[0].code == 0
        bad = unix(path)
        bad.sendall(dc.encode_have(3, b"g") + HDR.pack(0x00550000, 0, 1, 0, 1, 1, 0))
        bad.settimeout(5)
        data = b""
        while chunk := bad.recv(4096):
            data += chunk
        bad.close()
        good.sendall(dc.encode_get(2, b"g"))
        assert recv_replies(good, 1)[0].data == b"G"
        assert server_connections(port) == 1


def test_memcached_text_clients_share_one_upstream_connection() -> None:
    with hoard_server() as port, proxy(port) as path:
        clients = [MemcacheClient(path) for _ in range(4)]
        try:
            for i, c in enumerate(clients):
                c.set(f"k{i}", f"v{i}" * 100, noreply=False)
                c.set(f"nr{i}", b"x", noreply=True)
            for i, c in enumerate(clients):
                assert c.get(f"k{i}") == (f"v{i}" * 100).encode()
                assert c.get_many([f"k{j}" for j in range(4)] + ["missing"]) == {
                    f"k{j}": (f"v{j}" * 100).encode() for j in range(4)}
                assert c.incr(f"n{i}", 1) is None
                assert c.add(f"k{i}", "other", noreply=False) is False
                assert c.get(f"nr{i}") == b"x"
            # raw: pipelined classic + meta + an error in the middle, and quit closes only us
            raw = unix(path)
            raw.sendall(b"get k0\r\nbogus command\r\nmn\r\nms mk 2 T0\r\nhi\r\nmg mk v\r\nmn\r\n"
                        b"set big 0 0 3\r\nabc\r\ndelete big\r\nquit\r\n")
            raw.settimeout(5)
            reply = b""
            while chunk := raw.recv(65536):
                reply += chunk
            raw.close()
            v0 = b"v0" * 100
            assert reply == (b"VALUE k0 0 %d\r\n%s\r\nEND\r\nERROR\r\nMN\r\nHD\r\nVA 2\r\nhi\r\nMN\r\n"
                             b"STORED\r\nDELETED\r\n" % (len(v0), v0))
            assert clients[0].get("k1") == b"v1" * 100
            assert server_connections(port) == 2  # the distcache link and one text link
        finally:
            for c in clients:
                c.close()


def test_memcached_binary_clients_through_the_proxy() -> None:
    with hoard_server() as port, proxy(port) as path:
        a, bb = unix(path), unix(path)
        try:
            a.sendall(b.encode_request(b.OP_SET, key=b"ka", extras=struct.pack(">II", 0, 0), value=b"va",
                                       opaque=7))
            bb.sendall(b.encode_request(b.OP_SET, key=b"kb", extras=struct.pack(">II", 0, 0), value=b"vb",
                                        opaque=7))
            for s in (a, bb):
                p = b.BinaryParser(None, magic=b.RESPONSE_MAGIC)
                s.settimeout(5)
                (resp,) = p.feed(s.recv(4096))
                assert isinstance(resp, b.Packet) and (resp.opaque, resp.status) == (7, 0)
            # quiet gets: a miss says nothing, hits come back with their own opaques, then the noop
            a.sendall(b.encode_request(b.OP_GETKQ, key=b"nope", opaque=1)
                      + b.encode_request(b.OP_GETKQ, key=b"kb", opaque=2)
                      + b.encode_request(b.OP_GETKQ, key=b"ka", opaque=3)
                      + b.encode_request(b.OP_NOOP, opaque=4))
            parser = b.BinaryParser(None, magic=b.RESPONSE_MAGIC)
            got: list[b.Packet] = []
            while len(got) < 3:
                got.extend(p for p in parser.feed(a.recv(4096)) if isinstance(p, b.Packet))
            assert [(p.opaque, p.key, p.value) for p in got] == [(2, b"kb", b"vb"), (3, b"ka", b"va"),
                                                                 (4, b"", b"")]
            # quit closes only this local connection
            bb.sendall(b.encode_request(b.OP_QUIT, opaque=9))
            bb.settimeout(5)
            data = b""
            while chunk := bb.recv(4096):
                data += chunk
            assert data[0] == b.RESPONSE_MAGIC
            a.sendall(b.encode_request(b.OP_GET, key=b"ka", opaque=11))
            (resp,) = b.BinaryParser(None, magic=b.RESPONSE_MAGIC).feed(a.recv(4096))
            assert isinstance(resp, b.Packet) and (resp.opaque, resp.value) == (11, b"va")
            assert server_connections(port) == 2
        finally:
            a.close()
            bb.close()


def test_idle_local_connections_are_closed() -> None:
    with hoard_server() as port, proxy(port, "-idle", "200") as path:
        s = unix(path)
        s.sendall(dc.encode_have(1, b"x"))
        recv_replies(s, 1)
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - t0 < 3
        s.close()
