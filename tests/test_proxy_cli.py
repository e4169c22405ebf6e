"""``hoard proxy``'s command line and configuration checks, next to Debian's nutcracker.

``-t`` must give the same verdict as ``nutcracker -t`` on the same files (and
say which pool, key and line is wrong); the flags have nutcracker's meaning;
``-d`` daemonizes, ``-p`` writes the pid file, ``-o`` logs to a file SIGHUP
reopens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scatterhoard.errors import ConfigError
from scatterhoard.proxy.cli import main
from scatterhoard.proxy.config import parse_config
from scatterhoard.proxy.stats import POOL_METRICS, SERVER_METRICS, describe, render
from tests.support import free_port, hoard_argv, require_binary, running, temp_dir, wait_for_port

pytestmark = pytest.mark.timeout(60)

GOOD = """\
alpha:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  hash_tag: "{}"
  distribution: ketama
  timeout: 400
  backlog: 1024
  client_connections: 0
  redis: false
  tcpkeepalive: true
  preconnect: true
  auto_eject_hosts: true
  server_connections: 2
  server_retry_timeout: 2000
  server_failure_limit: 3
  redis_db: 0
  servers:
   - 127.0.0.1:11212:1
   - 127.0.0.1:11213:2 server-b
   - /tmp/mc.sock:1 sock
omega:
  listen: /tmp/hoard-test-gamma 0666
  hash: hsieh
  distribution: modula
  servers:
   - 127.0.0.1:11214:100000
"""

# (config, key and line the error must name); each is refused by nutcracker -t too
BAD = [
    (GOOD.replace("redis: false", "redis: yes"), "pool 'alpha': key 'redis'", 9),
    (GOOD.replace("hash: hsieh", "hash: fnv2"), "pool 'omega': key 'hash'", 23),
    (GOOD.replace("timeout: 400", "timeout: -1"), "pool 'alpha': key 'timeout'", 6),
    (GOOD.replace("  backlog: 1024\n", "  backlog: 1024\n  bogus: 1\n"), "pool 'alpha': key 'bogus'", 8),
    (GOOD.replace("omega:", "alpha:"), "pool 'alpha': duplicate pool name", 21),
    (GOOD.replace("/tmp/hoard-test-gamma 0666", "127.0.0.1:22121"), "pool 'omega': key 'listen'", 22),
    (GOOD.replace("127.0.0.1:11213:2 server-b", "127.0.0.1:11213:2 sock"), "pool 'alpha': key 'servers'", 20),
    (GOOD.replace('hash_tag: "{}"', "hash_tag: abc"), "pool 'alpha': key 'hash_tag'", 4),
    (GOOD.replace("  backlog: 1024\n", "  backlog: 1024\n  backlog: 5\n"), "pool 'alpha': key 'backlog'", 8),
    (GOOD.replace("  server_connections: 2", "  server_connections: 0"), "key 'server_connections'", 13),
    (GOOD.replace("  redis_db: 0", "  redis_auth: secret"), "key 'redis_auth'", 16),
    (GOOD.replace("127.0.0.1:11214:100000", "127.0.0.1:11214:0"), "pool 'omega': key 'servers'", 26),
    (GOOD.replace("127.0.0.1:11214:100000", "127.0.0.1:99999:1"), "pool 'omega': key 'servers'", 26),
    (GOOD.replace("   - 127.0.0.1:11214:100000\n", ""), "pool 'omega': has no servers", 21),
    (GOOD.replace("  listen: 127.0.0.1:22121\n", ""), "pool 'alpha': key \"listen\" is missing", 1),
    (GOOD.replace("127.0.0.1:22121", "127.0.0.1:port"), "pool 'alpha': key 'listen'", 2),
    (GOOD.replace("/tmp/hoard-test-gamma 0666", "/tmp/hoard-test-gamma 1777"), "pool 'omega': key 'listen'", 22),
    (GOOD.replace("distribution: modula", "distribution: ring"), "pool 'omega': key 'distribution'", 24),
    (GOOD.replace("   - 127.0.0.1:11214:100000", "   - &a 127.0.0.1:11214:1"), "anchor", 26),
    (GOOD.replace("  servers:\n   - 127.0.0.1:11214:100000", "  servers: [127.0.0.1:11214:1]"), "flow", 25),
    ("", "has no pools", 0),
    ("alpha: 1\n", "pool 'alpha'", 1),
]


def write(tmp: Path, text: str, name: str = "conf.yml") -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


# -- configuration -------------------------------------------------------------------------------


def test_good_config_every_key_and_default() -> None:
    cfg = parse_config(GOOD, "good.yml")
    alpha, omega = cfg.pools
    assert (alpha.timeout, alpha.backlog, alpha.tcpkeepalive, alpha.preconnect, alpha.auto_eject_hosts,
            alpha.server_connections, alpha.server_retry_timeout, alpha.server_failure_limit) == \
        (400, 1024, True, True, True, 2, 2000, 3)
    assert [s.ident for s in alpha.servers] == ["127.0.0.1:11212", "server-b", "sock"]
    assert alpha.hash_tag == "{}"
    assert omega.listen.path == "/tmp/hoard-test-gamma" and omega.listen.perm == 0o666
    # twemproxy's defaults
    assert (omega.timeout, omega.backlog, omega.client_connections, omega.redis, omega.tcpkeepalive,
            omega.reuseport, omega.redis_auth, omega.redis_db, omega.preconnect, omega.auto_eject_hosts,
            omega.server_connections, omega.server_retry_timeout, omega.server_failure_limit) == \
        (-1, 512, 0, False, False, False, None, 0, False, False, 1, 30000, 2)
    plain = parse_config("p:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:2:1\n").pools[0]
    assert (plain.hash, plain.distribution, plain.hash_tag) == ("fnv1a_64", "ketama", None)
    assert parse_config("p:\n  listen: :22121\n  reuseport: true\n  servers:\n   - h:2:1\n").pools[0].reuseport


@pytest.mark.parametrize(("text", "what", "line"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_config_names_pool_key_and_line(text: str, what: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "bad.yml")
    message = str(info.value)
    assert what in message
    assert "\n" not in message
    if line:
        assert message.startswith(f"bad.yml:{line}: "), message


def test_test_conf_agrees_with_nutcracker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nutcracker = require_binary("nutcracker")
    for i, text in enumerate([GOOD] + [b[0] for b in BAD]):
        path = write(tmp_path, text, f"c{i}.yml")
        theirs = subprocess.run([nutcracker, "-t", "-c", path], capture_output=True, timeout=10).returncode
        ours = main(["-t", "-c", path])
        err = capsys.readouterr().err.strip()
        assert ours == theirs, (i, err)
        assert len(err.splitlines()) == 1
        assert ("syntax is ok" in err) == (ours == 0)
        if ours:
            assert err.startswith(f"hoard proxy: configuration file '{path}' syntax is invalid: {path}")


def test_test_conf_command(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD, "good.yml")
    out = subprocess.run(hoard_argv("proxy", "-t", "-c", good), capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "syntax is ok" in out.stderr
    bad = write(tmp_path, BAD[0][0], "bad.yml")
    out = subprocess.run(hoard_argv("proxy", "--test-conf", "--conf-file", bad), capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 1
    assert out.stderr.strip() == (f"hoard proxy: configuration file '{bad}' syntax is invalid: {bad}:9: pool "
                                  "'alpha': key 'redis': is not \"true\" or \"false\"")
    missing = str(tmp_path / "nope.yml")
    assert main(["-t", "-c", missing]) == 1


# -- flags -----------------------------------------------------------------------------------------


def test_version_help_describe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-V"]) == 0
    assert "nutcracker-0.5.0 compatible" in capsys.readouterr().err
    assert main(["--help"]) == 0
    err = capsys.readouterr().err
    for flag in ("-h, --help", "-V, --version", "-t, --test-conf", "-d, --daemonize", "-D, --describe-stats",
                 "-v, --verbose=N", "-o, --output=S", "-c, --conf-file=S", "-s, --stats-port=N",
                 "-a, --stats-addr=S", "-i, --stats-interval=N", "-p, --pid-file=S", "-m, --mbuf-size=N"):
        assert flag in err
    assert "default: conf/nutcracker.yml" in err and "default: 22222" in err and "30000 msec" in err
    assert main(["-D"]) == 0
    err = capsys.readouterr().err
    assert '  client_eof          "# eof on client connections"' in err
    assert '  out_queue_bytes     "current request bytes in outgoing queue"' in err


def test_describe_matches_nutcracker() -> None:
    out = subprocess.run([require_binary("nutcracker"), "-D"], capture_output=True, text=True, timeout=10)
    theirs = (out.stdout + out.stderr).split("pool stats:", 1)[1]
    assert describe().split("pool stats:", 1)[1].split() == theirs.split()


@pytest.mark.parametrize(("argv", "message"), [
    (["-s", "abc"], "option -s requires a number"),
    (["-s", "0"], "option -s value 0 is not a valid port"),
    (["-s", "70000"], "option -s value 70000 is not a valid port"),
    (["-i", "-5"], "option -i requires a number"),
    (["-v", "x"], "option -v requires a number"),
    (["-m", "0"], "option -m requires a non-zero number"),
    (["-m", "100"], "mbuf chunk size must be between 512 and 16777216 bytes"),
])
def test_bad_option_values(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"hoard proxy: {message}\n") and "Usage:" in err


def test_redis_pool_passes_test_conf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "r:\n  listen: 127.0.0.1:1\n  redis: true\n  redis_auth: pw\n  redis_db: 2\n"
                           "  servers:\n   - 127.0.0.1:6379:1\n")
    assert main(["-t", "-c", path]) == 0
    assert "syntax is ok" in capsys.readouterr().err


def test_listen_address_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write(tmp_path, f"p:\n  listen: 127.0.0.1:{port}\n  servers:\n   - 127.0.0.1:1:1\n")
        assert main(["-c", path, "-s", str(free_port())]) == 1
    assert f"pool 'p': cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_stats_render_layout() -> None:
    doc = render([("p", list(range(6)), [("s1", list(range(13))), ("s2", [0] * 13)])], uptime=3, timestamp=10,
                 total_connections=4, curr_connections=2, source="host")
    text = doc.decode()
    assert text.startswith('{"service":"nutcracker", "source":"host", "version":"0.5.0-scatterhoard-')
    assert '"uptime":3, "timestamp":10, "total_connections":4, "curr_connections":2, "p": {"client_eof":0, ' in text
    assert text.endswith('"out_queue_bytes":0}}}\n')
    assert '"out_queue_bytes":12},"s2": {"server_eof":0' in text
    parsed = json.loads(text)
    assert list(parsed["p"]) == [m[0] for m in POOL_METRICS] + ["s1", "s2"]
    assert list(parsed["p"]["s1"]) == [m[0] for m in SERVER_METRICS]


# -- running as a daemon ------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_daemonize_pid_file_and_log_reopen() -> None:
    with temp_dir() as tmp:
        port, stats = free_port(), free_port()
        conf = write(Path(tmp), f"d:\n  listen: 127.0.0.1:{port}\n  servers:\n   - 127.0.0.1:{free_port()}:1\n")
        pid_file, log = os.path.join(tmp, "proxy.pid"), os.path.join(tmp, "proxy.log")
        argv = hoard_argv("proxy", "-d", "-c", conf, "-s", str(stats), "-a", "127.0.0.1", "-p", pid_file,
                          "-o", log, "-v", "6")
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        wait_for_port(port)  # listening as soon as the command returned: the sockets were bound first
        deadline = time.monotonic() + 5
        while not (os.path.exists(pid_file) and Path(pid_file).read_text()):
            assert time.monotonic() < deadline, "no pid file"
            time.sleep(0.02)
        pid = int(Path(pid_file).read_text())
        try:
            assert _alive(pid) and os.getsid(pid) != os.getsid(0)  # a session of its own
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"version\r\n")
                assert sock.recv(100).startswith(b"VERSION ")
            assert f"started on pid {pid}" in Path(log).read_text()
            os.rename(log, log + ".1")  # logrotate, then SIGHUP: a new file
            os.kill(pid, signal.SIGHUP)
            deadline = time.monotonic() + 5
            while not os.path.exists(log):
                assert time.monotonic() < deadline, "the log file was not reopened"
                time.sleep(0.02)
            os.kill(pid, signal.SIGTTIN)  # verbosity 6 -> 7
            deadline = time.monotonic() + 5
            while "log level up to 7" not in Path(log).read_text():
                assert time.monotonic() < deadline, "SIGTTIN did not raise the verbosity"
                time.sleep(0.02)
            os.kill(pid, signal.SIGTTOU)
            while "log level down to 6" not in Path(log).read_text():
                assert time.monotonic() < deadline, "SIGTTOU did not lower the verbosity"
                time.sleep(0.02)
            os.kill(pid, signal.SIGUSR1)  # reload is a later milestone: must not kill the proxy
        finally:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        assert not _alive(pid)
        assert not os.path.exists(pid_file)
        assert "done, hoard proxy done" in Path(log).read_text()


def test_console_script_and_preconnect() -> None:
    script = Path(sys.executable).with_name("hoard-proxy")
    if not script.exists():
        pytest.skip("hoard-proxy is not installed in this environment (pip install -e .)")
    with temp_dir() as tmp:
        port, stats = free_port(), free_port()
        with socket.socket() as backend:
            backend.bind(("127.0.0.1", 0))
            backend.listen()
            conf = write(Path(tmp), f"p:\n  listen: 127.0.0.1:{port}\n  preconnect: true\n  servers:\n"
                                    f"   - 127.0.0.1:{backend.getsockname()[1]}:1\n")
            with running([str(script), "-c", conf, "-s", str(stats)], port=port):
                backend.settimeout(5)
                conn, _ = backend.accept()  # connected before any client asked for anything
                conn.close()
