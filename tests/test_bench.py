"""``hoard bench``: short loads against real memcached, redis-server and hoard server in every protocol,
with the JSON's counts equal to what the server's own statistics say it was asked; --compare; --plot;
one-line errors.  (The histogram and option parsing are checked without sockets in test_bench_units.py,
--verify in test_bench_verify.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scatterhoard.bench.workload import key_bytes
from scatterhoard.protocol.resp import RespParser, encode_command
from tests.support import (
    free_port,
    hoard_argv,
    hoard_server,
    memcached,
    require_binary,
    require_module,
    running,
    temp_dir,
)

MIX = "get:60,set:20,mget:10,delete:5,incr:5"
MIX_DC = "get:70,set:20,delete:10"


def bench(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hoard_argv("bench", *argv), capture_output=True, text=True, timeout=timeout)


def bench_json(*argv: str) -> dict[str, Any]:
    res = bench(*argv, "--json", "-q")
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def mc_stats(port: int) -> dict[str, int]:
    """memcached-style ``stats`` (memcached and hoard server), the numeric ones."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            assert chunk, "connection closed during stats"
            data += chunk
    out = {}
    for line in data.decode().splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
            out[parts[1]] = int(parts[2])
    return out


def redis_commandstats(port: int) -> dict[str, int]:
    """calls per command from redis's ``INFO commandstats``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(encode_command("INFO", "commandstats"))
        parser = RespParser()
        values: list[Any] = []
        while not values:
            values = parser.feed(s.recv(65536))
    text = values[0].decode() if isinstance(values[0], bytes) else str(values[0])
    out = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            fields = dict(f.split("=", 1) for f in rest.split(","))
            out[name[len("cmdstat_"):]] = int(fields["calls"])
    return out


def delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def requests(out: dict[str, Any], op: str) -> int:
    return int(out["by_op"].get(op, {}).get("requests", 0))


def assert_sane(out: dict[str, Any], protocol: str) -> None:
    assert out["protocol"] == protocol
    assert out["ops"] > 0 and out["ops_per_sec"] > 0 and out["elapsed_s"] > 0
    assert out["ops"] == sum(v["requests"] for v in out["by_op"].values())
    assert out["errors"] == 0, out
    assert out["hits"] == sum(v["hits"] for v in out["by_op"].values())
    lat = out["latency_us"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert sum(iv["ops"] for iv in out["timeline"]) == out["ops"]
    assert out["processes"] == 2 and out["connections"] == 4


def assert_memcached_counts(out: dict[str, Any], before: dict[str, int], after: dict[str, int]) -> None:
    """Every request the bench counted is one the server counted, and no more."""
    assert delta(before, after, "cmd_get") == out["get_keys"]
    gm = [out["by_op"].get(op, {"hits": 0, "misses": 0}) for op in ("get", "mget")]
    assert delta(before, after, "get_hits") == sum(x["hits"] for x in gm)
    assert delta(before, after, "get_misses") == sum(x["misses"] for x in gm)
    if "set" in out["by_op"]:
        assert delta(before, after, "cmd_set") == requests(out, "set")
    if "delete" in out["by_op"]:
        d = out["by_op"]["delete"]
        assert delta(before, after, "delete_hits") == d["hits"]
        assert delta(before, after, "delete_misses") == d["misses"]
    if "incr" in out["by_op"]:
        assert delta(before, after, "incr_hits") + delta(before, after, "incr_misses") == requests(out, "incr")


def load_args(port: int, protocol: str, mix: str = MIX) -> list[str]:
    # a duration, not a request count: the requests in flight at the deadline must be counted too
    return [f"127.0.0.1:{port}", f"--{protocol}", "-t", "0.5", "--procs", "2", "-c", "2", "-d", "8",
            "--keys", "300", "--mix", mix, "--value-size", "10-3000", "--mget-width", "5"]


@pytest.mark.parametrize("protocol", ["text", "meta", "binary"])
def test_load_against_memcached_counts_what_memcached_counts(protocol: str) -> None:
    with memcached() as port:
        before = mc_stats(port)
        out = bench_json(*load_args(port, protocol))
        after = mc_stats(port)
    assert_sane(out, protocol)
    assert_memcached_counts(out, before, after)
    assert {"get", "set", "mget", "delete", "incr"} == set(out["by_op"])
    assert out["hits"] > 0 and out["misses"] > 0  # sets made some gets hit; the key space is wider


@pytest.mark.parametrize("protocol", ["text", "meta", "binary", "resp", "distcache"])
def test_load_against_hoard_server_counts_what_it_counts(protocol: str) -> None:
    mix = MIX_DC if protocol == "distcache" else MIX
    with hoard_server() as port:
        before = mc_stats(port)
        out = bench_json(*load_args(port, protocol, mix))
        after = mc_stats(port)
    assert_sane(out, protocol)
    assert delta(before, after, "cmd_get") == out["get_keys"]
    assert delta(before, after, "cmd_set") == requests(out, "set")
    gm = [out["by_op"].get(op, {"hits": 0, "misses": 0}) for op in ("get", "mget")]
    assert delta(before, after, "get_hits") == sum(x["hits"] for x in gm)
    assert delta(before, after, "get_misses") == sum(x["misses"] for x in gm)
    d = out["by_op"]["delete"]
    assert delta(before, after, "delete_hits") == d["hits"] and delta(before, after, "delete_misses") == d["misses"]
    if protocol != "distcache":  # distcache has no counters
        i = out["by_op"]["incr"]
        if protocol == "resp":
            # INCR creates a missing counter (a hit for the bench, as in redis); the server's
            # stats count that first INCR as a memcached incr miss
            assert i["misses"] == 0
            assert delta(before, after, "incr_hits") + delta(before, after, "incr_misses") == i["hits"]
        else:
            assert delta(before, after, "incr_hits") == i["hits"], (before, after, i)
            assert delta(before, after, "incr_misses") == i["misses"]


@contextlib.contextmanager
def redis() -> Iterator[int]:
    exe = require_binary("redis-server")
    port = free_port()
    with running([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], port=port):
        yield port


def redis_call(port: int, *args: str) -> Any:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(encode_command(*args))
        parser = RespParser()
        values: list[Any] = []
        while not values:
            values = parser.feed(s.recv(65536))
    return values[0]


def redis_keyspace(port: int) -> dict[str, int]:
    info = redis_call(port, "INFO", "stats").decode()
    return {k: int(v) for k, _, v in (ln.partition(":") for ln in info.splitlines()) if k.startswith("keyspace_")}


def test_load_against_redis_counts_what_redis_counts() -> None:
    with redis() as port:
        before, ks0 = redis_commandstats(port), redis_keyspace(port)
        out = bench_json(*load_args(port, "resp"), "--expire", "100")
        after, ks1 = redis_commandstats(port), redis_keyspace(port)
        ttls = [redis_call(port, "TTL", key_bytes("hb:", n).decode()) for n in range(300)]
    assert_sane(out, "resp")
    for op, cmd in (("get", "get"), ("set", "set"), ("mget", "mget"), ("incr", "incr"), ("delete", "del")):
        assert delta(before, after, cmd) == requests(out, op), (op, before, after)
    assert out["by_op"]["incr"]["misses"] == 0  # redis creates counters
    # redis's own hit/miss counters see the reads (GET, MGET per key) as the bench does
    gm = [out["by_op"].get(op, {"hits": 0, "misses": 0}) for op in ("get", "mget")]
    assert delta(ks0, ks1, "keyspace_hits") == sum(x["hits"] for x in gm)
    assert delta(ks0, ks1, "keyspace_misses") == sum(x["misses"] for x in gm)
    # --expire reached the server: every value the sets left has a TTL of at most 100 s
    live = [t for t in ttls if t != -2]
    assert live and all(0 < t <= 100 for t in live), ttls


def test_expire_reaches_memcached_protocols() -> None:
    with hoard_server() as port:
        for protocol in ("text", "meta", "binary"):
            bench_json(f"127.0.0.1:{port}", f"--{protocol}", "-n", "200", "-c", "1", "--keys", "50",
                       "--key-prefix", f"{protocol}:", "--mix", "set", "--expire", "100")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            for protocol in ("text", "meta", "binary"):
                ttls = []
                for n in range(50):
                    s.sendall(b"mg " + key_bytes(f"{protocol}:", n) + b" t\r\n")
                    line = b""
                    while not line.endswith(b"\r\n"):
                        line += s.recv(1024)
                    if line.startswith(b"HD"):
                        ttls.append(int(line.split()[1][1:]))
                assert ttls and all(0 < t <= 100 for t in ttls), (protocol, ttls)


def test_open_loop_charges_a_stalled_server_for_the_whole_stall() -> None:
    """Coordinated omission: requests due while the server is stopped are timed from when they
    were due, so a 0.4 s stall shows in the upper percentiles, not only in the few requests in flight."""
    exe = require_binary("memcached")
    port = free_port()
    argv = [exe, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1"] + (["-u", "root"] if os.geteuid() == 0 else [])
    with running(argv, port=port) as proc:
        def stall() -> None:
            time.sleep(0.8)
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(0.4)
            os.kill(proc.pid, signal.SIGCONT)

        thread = threading.Thread(target=stall)
        thread.start()
        try:
            out = bench_json(f"127.0.0.1:{port}", "-t", "2", "-c", "2", "-d", "4", "--rate", "1000")
        finally:
            thread.join()
    lat = out["latency_us"]
    # 2 s at 1000/s with 8 requests in flight at most: ~400 requests were due during the stall,
    # waiting 0-400 ms; a closed-loop clock would have charged the stall to 8 of them only
    assert lat["max"] >= 300_000, lat
    assert lat["p90"] >= 100_000, lat


def test_requests_mode_zipf_and_open_loop_rate() -> None:
    with memcached() as port:
        before = mc_stats(port)
        out = bench_json(f"127.0.0.1:{port}", "-n", "3000", "--procs", "2", "-c", "3", "-d", "4",
                         "--distribution", "zipf", "--keys", "100000", "--mix", "get:1,set:1")
        after = mc_stats(port)
        paced = bench_json(f"127.0.0.1:{port}", "-t", "1", "-c", "2", "-d", "4", "--rate", "1500")
    assert out["ops"] == 3000
    assert delta(before, after, "cmd_get") + delta(before, after, "cmd_set") == 3000
    assert paced["rate"] == 1500
    assert 0 < paced["ops"] <= 1500 + 2  # never more than the schedule (one per connection of slack)


def test_a_key_space_wider_than_the_prebuilt_requests_is_used_whole() -> None:
    """One connection pre-builds at most 4096 requests; 30000 sets over a million keys must still
    touch ~29500 distinct keys (each request is rebuilt after it is sent), not 4096."""
    with hoard_server() as port:
        out = bench_json(f"127.0.0.1:{port}", "-n", "30000", "-c", "1", "--keys", "1000000", "--mix", "set",
                         "--value-size", "10")
        items = mc_stats(port)["curr_items"]
    assert out["ops"] == 30000
    assert 29000 <= items <= 30000, items


def test_preload_makes_gets_hit_on_both_sides_of_compare() -> None:
    with memcached() as mc, hoard_server() as hs:
        res = bench(f"127.0.0.1:{hs}", "--compare", f"127.0.0.1:{mc}", "--rounds", "1", "-t", "0.3",
                    "--keys", "200", "--preload", "--mix", "get", "--json", "-q")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [r["round"] for r in out["rounds"]] == [1]
    for side in ("a", "b"):
        r = out["rounds"][0][side]
        assert r["ops"] > 0 and r["misses"] == 0 and r["hits"] == r["ops"]
    assert out["a"] == f"127.0.0.1:{hs}" and out["b"] == f"127.0.0.1:{mc}"
    ratio = out["medians"]["ops/s"]["ratio"]
    assert isinstance(ratio, float) and ratio > 0
    assert "preloaded 200 keys" in res.stderr


def test_compare_prints_a_ratio_table() -> None:
    with memcached() as a, memcached() as b:
        res = bench(f"127.0.0.1:{a}", "--compare", f"127.0.0.1:{b}", "--rounds", "2", "-n", "400", "-q")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("round 1:") == 2 and res.stdout.count("round 2:") == 2
    table = res.stdout[res.stdout.index("metric"):].splitlines()
    assert [ln.split()[0] for ln in table[1:]] == ["ops/s", "p50", "p90", "p99", "p99.9", "max"]
    assert "ratio A/B" in table[0]


def test_plot_file_is_written() -> None:
    require_module("matplotlib")
    with memcached() as port, temp_dir() as d:
        png = Path(d) / "bench.png"
        res = bench(f"127.0.0.1:{port}", "-t", "1.2", "-c", "2", "--plot", str(png), "-q")
        assert res.returncode == 0, res.stderr
        data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert f"plot written to {png}" in res.stdout


def test_plot_without_matplotlib_is_one_clear_line() -> None:
    """A matplotlib that cannot be imported (a package raising ImportError first on the path)."""
    with temp_dir() as d:
        fake = Path(d) / "matplotlib"
        fake.mkdir()
        (fake / "__init__.py").write_text("raise ImportError('matplotlib is not installed here')\n")
        res = subprocess.run(hoard_argv("bench", "127.0.0.1:1", "--plot", f"{d}/x.png"), capture_output=True,
                             text=True, timeout=60, env={"PYTHONPATH": d, "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "hoard bench: --plot needs matplotlib: pip install 'scatterhoard[plot]' (or pip install matplotlib)"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--mix", "get:90,fetch:10"], "hoard bench: --mix: unknown operation 'fetch' (one of get, set, mget, incr, delete)"),
    (["--distcache", "--mix", "get,incr"], "hoard bench: the distcache protocol has no incr operation "
                                           "(it has: get, set, delete)"),
    (["--value-size", "10-x"], "hoard bench: --value-size: bad size '10-x' (N or MIN-MAX, e.g. 100 or 10-64k)"),
    (["--distcache", "--value-size", "40000"], "hoard bench: --value-size: distcache values are at most 32768 bytes"),
    (["-d", "0"], "hoard bench: --procs, --connections and --depth must be at least 1"),
])
def test_bad_options_are_one_line_and_exit_2(argv: list[str], message: str) -> None:
    res = bench("127.0.0.1:1", *argv)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [message]


def test_unreachable_target_is_one_line_and_exit_2() -> None:
    port = free_port()
    for extra in ([], ["--verify"]):
        res = bench(f"127.0.0.1:{port}", "-n", "10", *extra)
        assert res.returncode == 2, res.stdout + res.stderr
        assert res.stderr.strip().splitlines() == [
            f"hoard bench: cannot connect to 127.0.0.1:{port}: Connection refused"]


def test_server_that_hangs_up_is_reported() -> None:
    """A server that answers nothing and closes each connection: one line, exit 2."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(100)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        res = bench(f"127.0.0.1:{port}", "-n", "10", "-c", "1")
    finally:
        listener.close()
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hoard bench: 127.0.0.1:{port} closed a connection with "), lines


def test_help_lists_every_option() -> None:
    res = bench("--help")
    assert res.returncode == 0
    for opt in ("--text", "--meta", "--binary", "--resp", "--distcache", "--procs", "--connections", "--depth",
                "--duration", "--requests", "--rate", "--mix", "--keys", "--distribution", "--value-size",
                "--mget-width", "--expire", "--preload", "--verify", "--compare", "--rounds", "--json", "--plot",
                "--cpus"):
        assert opt in res.stdout, opt


def test_unix_socket_target_and_bad_cpus() -> None:
    with temp_dir() as d:
        path = f"{d}/hoard.sock"
        with hoard_server(extra=("-l", f"unix:{path}")):
            out = bench_json(f"unix:{path}", "-n", "500", "-c", "2", "--binary")
            bad = bench(f"unix:{path}", "-n", "10", "--cpus", "4000")
    assert out["ops"] == 500 and out["errors"] == 0 and out["target"] == f"unix:{path}"
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"hoard bench: --cpus 4000: cannot pin to these CPUs (Invalid argument; this machine has {os.cpu_count()})"]


def test_progress_line_on_a_terminal_only() -> None:
    """On a terminal (a pty) stderr gets a live line, erased at the end; piped, it gets none."""
    with memcached() as port:
        master, slave = pty.openpty()
        proc = subprocess.Popen(hoard_argv("bench", f"127.0.0.1:{port}", "-t", "1.5", "-c", "2"),
                                stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        seen = b""
        with contextlib.suppress(OSError):  # EIO once the process has exited and closed the pty
            while chunk := os.read(master, 4096):
                seen += chunk
        os.close(master)
        out, _ = proc.communicate(timeout=60)
        piped = bench(f"127.0.0.1:{port}", "-t", "1", "-c", "2")
    assert proc.returncode == 0
    assert re.search(rb"\r\x1b\[K +\d+\.\d s +[\d,]+ ops +[\d,]+ ops/s +0 errors", seen), seen
    assert seen.endswith(b"\r\x1b[K")  # erased before the report
    assert "ops/s" in out and "\r" not in out
    assert piped.returncode == 0 and piped.stderr == ""
