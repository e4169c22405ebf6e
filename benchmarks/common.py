"""What the benchmark scripts share: processes, CPU accounting, memcaslap, the load runs and the summary.

``bench_server.py`` and ``bench_proxy.py`` both run ours and a reference
program side by side, pinned with ``taskset``, drive them with the same two
loads (memcaslap, one request in flight per connection; ``hoard bench``'s
engine, :mod:`scatterhoard.bench`, pipelined), read the measured process's CPU
seconds from ``/proc`` and summarize the rounds as medians and ratios
ours/reference.  ``bench_client.py`` uses the port helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scatterhoard import ports
from scatterhoard.address import Address
from scatterhoard.bench import LoadSpec, RunConfig, preload
from scatterhoard.bench import run_load as bench_load
from scatterhoard.bench.workload import GET, SET

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
OURS = "hoard"
LOADS = ("nonpipelined", "pipelined")
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: (key of a run, label in the summary table, which way is better)
Metric = tuple[str, str, str]


# -- processes and measurements ---------------------------------------------------------------------


def free_port() -> int:
    """A free port outside the ephemeral range (load generators' connections cannot take it)."""
    return ports.free_port(HOST)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Wait until ``port`` accepts connections; fail when ``proc`` exits first (with its stderr, if piped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if proc.stderr is None:
                raise RuntimeError(f"server exited with {proc.returncode} before listening")
            err = proc.stderr.read().decode(errors="replace")
            raise RuntimeError(f"server exited with {proc.returncode} before listening: {err.strip()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces
    return (int(fields[14 - 3]) + int(fields[15 - 3])) / CLK_TCK


def pin_prefix(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def can_pin(cpu: int, client_cpu: int | None) -> bool:
    """Can the measured processes go to ``cpu`` and the generators to ``client_cpu`` (another one)?"""
    allowed = os.sched_getaffinity(0)
    return shutil.which("taskset") is not None and {cpu, client_cpu} <= allowed and cpu != client_cpu


@dataclass
class Process:
    """A started server or proxy, listening on ``port``."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def start_process(name: str, argv: list[str], port: int) -> Iterator[Process]:
    """Run ``argv`` until the block ends (SIGTERM, then SIGKILL after 10 s); entered once it listens."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_for_port(port, proc)
        yield Process(name, port, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def memcached_argv(exe: str, port: int, cpu: int | None) -> list[str]:
    argv = [*pin_prefix(cpu), exe, "-l", HOST, "-p", str(port), "-U", "0", "-t", "1", "-m", "1024", "-c", "4096"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    return argv


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}")
                                       if os.path.exists(p)), None)


def server_stats(port: int, timeout: float = 5.0) -> dict[str, str]:
    """The ``stats`` of a memcached-compatible server, as strings."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    out = {}
    for line in data.decode("ascii", "replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


def stat_counts(port: int) -> dict[str, int]:
    try:
        st = server_stats(port)
    except OSError:
        return {}
    return {k: int(st[k]) for k in ("cmd_get", "cmd_set", "get_hits", "get_misses", "curr_items")
            if k in st and st[k].isdigit()}


# -- memcaslap ------------------------------------------------------------------------------------


MEMASLAP_CFG = """\
key
16 16 1
value
{value} {value} 1
cmd
0 {set_ratio}
1 {get_ratio}
"""


def write_memaslap_cfg(directory: str, args: argparse.Namespace) -> str:
    """memcaslap's configuration for ``--value-size`` and ``--set-ratio``, written in ``directory``."""
    cfg_path = os.path.join(directory, "memaslap.cfg")
    Path(cfg_path).write_text(MEMASLAP_CFG.format(value=args.value_size, set_ratio=args.set_ratio,
                                                  get_ratio=round(1 - args.set_ratio, 6)))
    return cfg_path


def log2_percentile(hist: dict[int, int], p: float, lo: float, hi: float) -> float:
    """Percentile from memaslap's log2 histogram (bucket r holds (2^(r-1), 2^r] us)."""
    total = sum(hist.values())
    if total == 0:
        return 0.0
    target = p / 100.0 * total
    seen = 0
    for r in sorted(hist):
        n = hist[r]
        if n and seen + n >= target:
            frac = (target - seen) / n
            low = 2.0 ** (r - 1) if r > 0 else 0.0
            value = low + (2.0 ** r - low) * frac if r <= 1 else low * 2.0 ** frac  # geometric inside
            return max(lo, min(hi, value))
        seen += n
    return hi


def parse_memaslap(out: str) -> dict[str, Any]:
    """The totals and latency of a memcaslap run (``-S`` makes it print the latency stats)."""
    out = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out)
    m = re.search(r"Run time:\s*([\d.]+)s\s+Ops:\s*(\d+)\s+TPS:\s*(\d+)", out)
    if not m:
        raise RuntimeError(f"cannot parse memcaslap output:\n{out[-2000:]}")
    res: dict[str, Any] = {"elapsed": float(m.group(1)), "ops": int(m.group(2)), "tps": int(m.group(3))}
    for k in ("cmd_get", "cmd_set", "get_misses"):
        mm = re.search(rf"^{k}:\s*(\d+)", out, re.M)
        if mm:
            res[k] = int(mm.group(1))
    block = re.search(r"Total Statistics \((\d+) events\)(.*?)(?:\n\s*\n|\Z)", out, re.S)
    if block:
        body = block.group(2)
        vals = {k: float(v) for k, v in re.findall(r"^\s*(Min|Max|Avg):\s*([\d.]+)", body, re.M)}
        hist: dict[int, int] = {}
        dist = body.split("Log2 Dist:", 1)[-1]
        for row in re.finditer(r"^\s*(\d+):((?:\s+\d+)+)\s*$", dist, re.M):
            base = int(row.group(1))
            for i, n in enumerate(row.group(2).split()):
                hist[base + i] = hist.get(base + i, 0) + int(n)
        lo, hi = vals.get("Min", 0.0), vals.get("Max", 0.0)
        res["avg_us"] = vals.get("Avg", 0.0)
        res["p50_us"] = log2_percentile(hist, 50, lo, hi)
        res["p99_us"] = log2_percentile(hist, 99, lo, hi)
        res["max_us"] = hi
    return res


def run_memaslap(exe: str, port: int, args: argparse.Namespace, cfg_path: str,
                 binary: bool = False) -> dict[str, Any]:
    secs = max(1, int(round(args.duration)))
    argv = [*pin_prefix(args.client_cpu), exe, "-s", f"{HOST}:{port}", "-c", str(args.memaslap_conns),
            "-T", str(args.memaslap_threads), "-t", f"{secs}s", "-S", f"{secs}s", "-F", cfg_path, "-w", "1k",
            "-o", str(args.memaslap_overwrite), *(["-B"] if binary else [])]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    if proc.returncode != 0 and "Run time:" not in proc.stdout:
        raise RuntimeError(f"memcaslap failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout[-500:]}")
    return parse_memaslap(proc.stdout + proc.stderr)


# -- one run of a load ----------------------------------------------------------------------------


@dataclass
class LoadRun:
    """What one run of a load's generator measured (fields it does not measure are None)."""

    generator: str  # "memcaslap" (nonpipelined) or "hoard bench" (pipelined)
    ops: int
    elapsed: float
    p50_us: float
    p99_us: float
    client_cpu: float | None = None  # the generator's CPU seconds (hoard bench)
    avg_us: float | None = None  # memcaslap
    max_us: float | None = None
    errors: int | None = None  # hoard bench
    connections: int | None = None  # hoard bench
    depth: int | None = None  # hoard bench
    p999_us: float | None = None  # hoard bench


def run_load(load: str, port: int, args: argparse.Namespace, cfg_path: str, memaslap: str | None,
             protocol: str = "text") -> LoadRun:
    """Run ``load`` against ``port`` for ``--duration`` seconds with its generator (memcached
    ``protocol``: text or binary)."""
    if load == "nonpipelined":
        assert memaslap is not None
        m = run_memaslap(memaslap, port, args, cfg_path, binary=protocol == "binary")
        return LoadRun("memcaslap", m["ops"], m["elapsed"], m.get("p50_us", 0.0), m.get("p99_us", 0.0),
                       avg_us=m.get("avg_us"), max_us=m.get("max_us"))
    r = bench_load(pipelined_config(port, args, protocol))
    return LoadRun("hoard bench", r.ops, r.elapsed, r.latency_us(50), r.latency_us(99), client_cpu=r.client_cpu,
                   max_us=r.hist.max / 1000.0, errors=r.errors, connections=r.connections, depth=r.depth,
                   p999_us=r.latency_us(99.9))


def pipelined_spec(args: argparse.Namespace, protocol: str = "text") -> LoadSpec:
    """The pipelined load's shape: ``--set-ratio`` sets, the rest gets, over ``--keys`` keys."""
    sets = max(0, min(1000, round(args.set_ratio * 1000)))
    mix = tuple((k, w) for k, w in ((GET, 1000 - sets), (SET, sets)) if w)
    return LoadSpec(protocol=protocol, mix=mix, keyspace=args.keys, key_prefix="bench:",
                    value_min=args.value_size, value_max=args.value_size)


def pipelined_config(port: int, args: argparse.Namespace, protocol: str = "text") -> RunConfig:
    return RunConfig(Address("tcp", HOST, port), pipelined_spec(args, protocol), processes=args.processes,
                     connections=args.connections, depth=args.depth, duration=args.duration,
                     cpus=(args.client_cpu,) if args.client_cpu is not None else None)


def preload_keys(port: int, args: argparse.Namespace) -> None:
    """Store every key of the pipelined load's key space, so its gets hit."""
    preload(Address("tcp", HOST, port), pipelined_spec(args))


# -- command line -----------------------------------------------------------------------------------


def add_load_options(p: argparse.ArgumentParser, *, set_ratio_help: str | None = None,
                     overwrite_help: str | None = None) -> None:
    """The options that shape the loads, from ``--set-ratio`` to ``--depth``."""
    p.add_argument("--set-ratio", type=float, default=0.1, help=set_ratio_help)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=10_000, help="key space of the pipelined load (preloaded)")
    p.add_argument("--memaslap-conns", type=int, default=50)
    p.add_argument("--memaslap-threads", type=int, default=1,
                   help="memcaslap threads (the connections are shared among them)")
    p.add_argument("--memaslap-overwrite", type=float, default=0.95, help=overwrite_help)
    p.add_argument("--processes", type=int, default=2, help="pipelined generator processes")
    p.add_argument("--connections", type=int, default=25,
                   help="connections per generator process (2 x 25: the 50 connections of the non-pipelined load)")
    p.add_argument("--depth", type=int, default=16, help="requests in flight per connection")


def settle_run_length(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--duration`` and ``--rounds`` defaults (shorter with ``--quick``), and their bounds."""
    if args.duration is None:
        args.duration = 1.0 if args.quick else 10.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.duration <= 0 or args.rounds < 1:
        p.error("--duration must be positive and --rounds at least 1")


# -- summary and output -----------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]], metrics: tuple[Metric, ...], role: str,
              reference: str) -> dict[str, Any]:
    """Per load and metric: the median over rounds of ours and of ``reference`` (the ``role`` of a run),
    and the median of the per-round ratios ours/reference."""
    out: dict[str, Any] = {}
    for load in LOADS:
        lr = [r for r in runs if r["load"] == load]
        if not lr:
            continue
        out[load] = {}
        for key, _label, _better in metrics:
            ours = {r["round"]: r[key] for r in lr if r[role] == OURS and r[key] is not None}
            ref = {r["round"]: r[key] for r in lr if r[role] == reference and r[key] is not None}
            ratios = [ours[k] / ref[k] for k in ours if k in ref and ref[k]]
            out[load][key] = {
                OURS: statistics.median(ours.values()) if ours else None,
                reference: statistics.median(ref.values()) if ref else None,
                "ratio": round(statistics.median(ratios), 4) if ratios else None,
            }
    return out


def fmt(v: Any, width: int, prec: int = 0) -> str:
    if v is None:
        return "-".rjust(width)
    if isinstance(v, float | int):
        return f"{v:,.{prec}f}".rjust(width)
    return str(v).rjust(width)


def summary_table(summary: dict[str, Any], metrics: tuple[Metric, ...], reference: str) -> str:
    ref_title, ratio_title = reference + " (median)", "ratio " + OURS + "/" + reference
    ref_width, ratio_width = len(ref_title) + 2, len(ratio_title) + 1
    lines = [f"{'load':<13}{'metric':<22}{OURS + ' (median)':>16}{ref_title:>{ref_width}}"
             f"{ratio_title:>{ratio_width}}   note"]
    for load, values in summary.items():
        for key, label, better in metrics:
            m = values[key]
            ratio = f"{m['ratio']:.3f}" if m["ratio"] is not None else "-"
            lines.append(f"{load:<13}{label:<22}{fmt(m[OURS], 16)}{fmt(m[reference], ref_width)}"
                         f"{ratio:>{ratio_width}}   {better}")
    return "\n".join(lines)


def report(args: argparse.Namespace, config: dict[str, Any], runs: list[dict[str, Any]],
           summary: dict[str, Any], table: str, note: str) -> None:
    """The results on stdout: JSON with ``--json``, else the summary table and ``note``."""
    if args.json:
        print(json.dumps({"config": config, "runs": runs, "summary": summary}, indent=2))
    else:
        print()
        print(table)
        print(note)
