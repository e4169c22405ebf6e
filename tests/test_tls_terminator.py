"""`hoard tls` and its backend: a backend connection only for an authenticated client.

The backend here is a listener of the test that counts the connections it
accepts and answers every line (TCP, and a unix socket: the two ways the
terminator connects).  A peer that never completes a handshake (a port scan,
garbage, a protocol the server refuses, a handshake left hanging) must not
make the terminator open a backend connection, as with stunnel; a client whose
handshake succeeds gets exactly one.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support import free_port, hoard_argv, running, temp_dir
from tests.test_tls_support import client_context, make_cert, py_request


class CountingBackend:
    """Accepts connections, counts them, answers each line with ``VERSION test``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.accepted = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    _, buf = buf.split(b"\n", 1)
                    conn.sendall(b"VERSION test\r\n")

    def count(self) -> int:
        with self.lock:
            return self.accepted


@contextlib.contextmanager
def counting_backend(unix_path: str | None = None) -> Iterator[tuple[str, CountingBackend]]:
    if unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(unix_path)
        address = f"unix:{unix_path}"
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.listen(64)
    backend = CountingBackend(sock)
    try:
        yield address, backend
    finally:
        sock.close()


@contextlib.contextmanager
def terminator(directory: str, backend: str) -> Iterator[int]:
    cert, key = make_cert(directory)
    port = free_port()
    argv = hoard_argv("tls", "-l", f"127.0.0.1:{port}", "--cert", cert, "--key", key, "--backend", backend,
                      "--max-version", "1.2", "--handshake-timeout", "1")
    with running(argv, port=port):
        yield port


def _until_closed(s: socket.socket) -> None:
    s.settimeout(20)
    with contextlib.suppress(OSError):
        while s.recv(4096):
            pass


def test_no_backend_connection_before_the_handshake_succeeded() -> None:
    with temp_dir() as d, counting_backend() as (address, backend), terminator(d, address) as port:
        assert backend.count() == 0  # `running` waited for the port with a bare TCP connect
        with socket.create_connection(("127.0.0.1", port), timeout=20):
            pass  # connect and leave
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 10)  # not TLS: an alert, then closed
            _until_closed(s)
        tls13 = client_context(ssl.TLSVersion.TLSv1_3)  # the server stops at TLS 1.2: refused
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            try:
                tls13.wrap_socket(raw, server_hostname="localhost").close()
            except (ssl.SSLError, OSError):
                pass
            else:
                raise AssertionError("a TLS 1.3-only client got through a TLS 1.2 server")
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"\x16\x03\x01\x00\x10")  # the start of a ClientHello, then nothing
            _until_closed(s)  # --handshake-timeout 1
        time.sleep(0.3)
        assert backend.count() == 0

        res = py_request(port, client_context(ssl.TLSVersion.TLSv1_2))
        assert res.reply == b"VERSION test\r\n"
        assert backend.count() == 1


def test_unix_socket_backend_and_a_refused_backend() -> None:
    with temp_dir() as d:
        path = str(Path(d) / "backend.sock")
        with counting_backend(path) as (address, backend), terminator(d, address) as port:
            for _ in range(3):
                res = py_request(port, client_context(ssl.TLSVersion.TLSv1_2))
                assert res.reply == b"VERSION test\r\n"
            assert backend.count() == 3
        # nothing listens any more: the client is closed, not left hanging
        with terminator(d, f"127.0.0.1:{free_port()}") as port:
            res = py_request(port, client_context(ssl.TLSVersion.TLSv1_2), timeout=20)
            assert res.reply == b""
