"""Listeners (TCP, unix, several at once), CLI errors, graceful shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

from tests.support import free_port, hoard_argv, recv_until, temp_dir, wait_for_port, wait_for_unix


def test_unix_and_tcp_listeners_share_one_store_and_shutdown_is_clean() -> None:
    with temp_dir() as d:
        path = os.path.join(d, "hoard.sock")
        # a stale socket file from a dead server is removed before listening
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        port = free_port()
        proc = subprocess.Popen(hoard_argv("server", "-l", f"unix:{path}", "-l", f"127.0.0.1:{port}"),
                                stderr=subprocess.PIPE)
        try:
            wait_for_port(port, proc=proc)
            wait_for_unix(path)
            u = socket.socket(socket.AF_UNIX)
            u.connect(path)
            u.sendall(b"set shared 0 0 2\r\nok\r\n")
            assert recv_until(u, b"\r\n") == b"STORED\r\n"
            t = socket.create_connection(("127.0.0.1", port))
            t.sendall(b"get shared\r\n")
            assert recv_until(t, b"END\r\n") == b"VALUE shared 0 2\r\nok\r\nEND\r\n"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            assert not os.path.exists(path)
            assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()
            u.close()
            t.close()
        finally:
            if proc.poll() is None:
                proc.kill()
            if proc.stderr:
                proc.stderr.close()


def test_bad_flags_give_one_line_errors() -> None:
    for args, needle in [(["-l", "host:port"], "accepted forms"), (["-I", "12q"], "bad size"),
                         (["-m", "0"], "memory limit")]:
        r = subprocess.run(hoard_argv("server", *args), capture_output=True, text=True, timeout=30)
        assert r.returncode == 2
        assert needle in r.stderr
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_port_in_use_is_a_clear_error() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    r = subprocess.run(hoard_argv("server", "-p", str(port)), capture_output=True, text=True, timeout=30)
    s.close()
    assert r.returncode == 2
    assert "cannot listen" in r.stderr and "Traceback" not in r.stderr


def test_help_lists_every_flag() -> None:
    r = subprocess.run(hoard_argv("server", "--help"), capture_output=True, text=True, timeout=30)
    for flag in ["-l", "-p", "-m", "-I", "-c", "-v"]:
        assert flag in r.stdout
    top = subprocess.run(hoard_argv("--help"), capture_output=True, text=True, timeout=30)
    assert "server" in top.stdout
