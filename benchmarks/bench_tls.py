#!/usr/bin/env python3
"""Benchmark `hoard tls`: full vs resumed handshakes, and forwarding throughput vs stunnel4.

One ``hoard server`` is the session cache, another the plaintext backend;
``hoard tls`` (and Debian's ``stunnel4`` when installed) terminate TLS in
front of it with the same RSA-2048 certificate made for the run.  The
measured terminator is pinned to CPU 0 when there are two CPUs, the client
threads (Python's ssl) run in this process on CPU 1.

* handshakes: ``--threads`` clients open connections as fast as they can for
  ``--duration`` seconds, each doing a handshake, one ``version`` request
  through to the backend and a close; once with no session (full
  handshakes) and once offering a session from the cache (resumed), for TLS
  1.2 and TLS 1.3.  Printed: handshakes/s and the terminator's CPU
  milliseconds per handshake (from ``/proc``), which is the cost the
  resumption saves.
* forwarding: ``--threads`` connections each ``get`` a 512 KB value in a
  loop through the terminator for ``--duration`` seconds; MB/s and MB per
  terminator CPU-second, ``hoard tls`` and ``stunnel4`` in turn.

    .venv/bin/python benchmarks/bench_tls.py              # about 30 s
    .venv/bin/python benchmarks/bench_tls.py --quick      # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    HOST,
    Process,
    can_pin,
    cpu_seconds,
    find_binary,
    free_port,
    pin_prefix,
    start_process,
)

VALUE_SIZE = 512 * 1024


def make_rsa_cert(directory: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = Path(directory) / "cert.pem", Path(directory) / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def hoard(*args: str) -> list[str]:
    return [sys.executable, "-m", "scatterhoard", *args]


def client_ctx(version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def request(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession | None]:
    with socket.create_connection((HOST, port), timeout=30) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait after Finished
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"version\r\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("connection closed before the reply")
                reply += chunk
            return s.session_reused, s.session


def run_threads(threads: int, duration: float, work: Callable[[], int]) -> int:
    """Call ``work`` in ``threads`` threads until ``duration`` is over; the sum of what it returned."""
    stop = time.monotonic() + duration
    totals = [0] * threads
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        try:
            while time.monotonic() < stop:
                totals[i] += work()
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client thread(s) failed: {errors[0]!r}")
    return sum(totals)


def measure(proc: Process, threads: int, duration: float, work: Callable[[], int]) -> tuple[int, float, float]:
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    n = run_threads(threads, duration, work)
    return n, time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0


def bench_handshakes(term: Process, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for label, version in (("TLS 1.2", ssl.TLSVersion.TLSv1_2), ("TLS 1.3", ssl.TLSVersion.TLSv1_3)):
        ctx = client_ctx(version)
        _, session = request(term.port, ctx, None)
        time.sleep(0.1)  # the session's (asynchronous) write to the cache
        row: dict[str, Any] = {"version": label}
        for kind, offered in (("full", None), ("resumed", session)):
            reused_wrong = 0

            def work(offered: ssl.SSLSession | None = offered, ctx: ssl.SSLContext = ctx) -> int:
                nonlocal reused_wrong
                reused, _ = request(term.port, ctx, offered)
                if reused != (offered is not None):
                    reused_wrong += 1
                return 1

            n, wall, cpu = measure(term, args.threads, args.duration, work)
            row[kind] = {"per_s": n / wall, "cpu_ms": 1000 * cpu / max(n, 1), "count": n,
                         "unexpected": reused_wrong}
        row["cpu_ratio"] = row["full"]["cpu_ms"] / max(row["resumed"]["cpu_ms"], 1e-9)
        rows.append(row)
    return rows


def fetcher(port: int) -> Callable[[], int]:
    local = threading.local()
    ctx = client_ctx(ssl.TLSVersion.TLSv1_3)
    expect = len(b"VALUE blob 0 %d\r\n" % VALUE_SIZE) + VALUE_SIZE + len(b"\r\nEND\r\n")

    def work() -> int:
        s = getattr(local, "sock", None)
        if s is None:
            raw = socket.create_connection((HOST, port), timeout=30)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s = local.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"get blob\r\n")
        got = 0
        while got < expect:
            chunk = s.recv(262144)
            if not chunk:
                raise RuntimeError("connection closed during a transfer")
            got += len(chunk)
        return got

    return work


def bench_forwarding(term: Process, args: argparse.Namespace) -> dict[str, Any]:
    n, wall, cpu = measure(term, args.threads, args.duration, fetcher(term.port))
    return {"mb_s": n / wall / 1e6, "mb_per_cpu_s": n / max(cpu, 1e-9) / 1e6}


def store_blob(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(b"set blob 0 0 %d\r\n" % VALUE_SIZE + os.urandom(VALUE_SIZE) + b"\r\n")
        reply = s.recv(100)
        if not reply.startswith(b"STORED"):
            raise RuntimeError(f"backend refused the value: {reply!r}")


@contextlib.contextmanager
def stunnel(exe: str, directory: str, cert: str, key: str, backend: int, cpu: int | None) -> Iterator[Process]:
    port = free_port()
    conf = Path(directory) / "stunnel.conf"
    conf.write_text(f"foreground = yes\npid =\noutput = {directory}/stunnel.log\n[bench]\n"
                    f"accept = {HOST}:{port}\nconnect = {HOST}:{backend}\ncert = {cert}\nkey = {key}\n")
    with start_process("stunnel4", [*pin_prefix(cpu), exe, str(conf)], port) as proc:
        yield proc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measurement (default 3)")
    p.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    p.add_argument("--quick", action="store_true", help="0.5 s per measurement")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 0.5
    cpu, client_cpu = (0, 1) if can_pin(0, 1) else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    results: dict[str, Any] = {"duration": args.duration, "threads": args.threads, "pinned": cpu is not None}
    with tempfile.TemporaryDirectory(prefix="tls_bench-") as d:
        cert, key = make_rsa_cert(d)
        farm_key = Path(d) / "farm.key"
        farm_key.write_bytes(os.urandom(32))
        cport, bport, tport = free_port(), free_port(), free_port()
        with start_process("cache", hoard("server", "-p", str(cport)), cport), \
                start_process("backend", hoard("server", "-p", str(bport), "-I", "2m"), bport):
            store_blob(bport)
            argv = [*pin_prefix(cpu), *hoard("tls", "-l", f"{HOST}:{tport}", "--cert", cert, "--key", key,
                                             "--backend", f"{HOST}:{bport}", "--cache", f"{HOST}:{cport}",
                                             "--cache-key", str(farm_key))]
            with start_process("hoard tls", argv, tport) as term:
                results["handshakes"] = bench_handshakes(term, args)
                results["forwarding"] = {"hoard tls": bench_forwarding(term, args)}
            exe = find_binary("stunnel4") or find_binary("stunnel")
            if exe is not None:
                with stunnel(exe, d, cert, key, bport, cpu) as st:
                    results["forwarding"]["stunnel4"] = bench_forwarding(st, args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_report(results)
    return 0


def print_report(r: dict[str, Any]) -> None:
    print(f"hoard tls, {r['threads']} client threads, {r['duration']:g} s per measurement"
          f"{', terminator pinned to CPU 0' if r['pinned'] else ''}; RSA-2048 certificate\n")
    print(f"{'handshakes':<10} {'full/s':>9} {'resumed/s':>10} {'full CPU ms':>12} {'resumed CPU ms':>15} "
          f"{'CPU full/resumed':>17}")
    for row in r["handshakes"]:
        f, s = row["full"], row["resumed"]
        print(f"{row['version']:<10} {f['per_s']:>9.0f} {s['per_s']:>10.0f} {f['cpu_ms']:>12.2f} "
              f"{s['cpu_ms']:>15.2f} {row['cpu_ratio']:>16.1f}x")
        if f["unexpected"] or s["unexpected"]:
            print(f"  warning: {f['unexpected']} full handshakes resumed, {s['unexpected']} resumptions were full")
    print(f"\n{'forwarding (512 KB gets)':<26} {'MB/s':>8} {'MB per CPU-s':>13}")
    for name, row in r["forwarding"].items():
        print(f"{name:<26} {row['mb_s']:>8.1f} {row['mb_per_cpu_s']:>13.1f}")
    fw = r["forwarding"]
    if "stunnel4" in fw:
        print(f"{'ratio hoard/stunnel4':<26} {fw['hoard tls']['mb_s'] / fw['stunnel4']['mb_s']:>7.2f}x "
              f"{fw['hoard tls']['mb_per_cpu_s'] / fw['stunnel4']['mb_per_cpu_s']:>12.2f}x")
    else:
        print("stunnel4 not installed: no comparison (apt-get install stunnel4)")


if __name__ == "__main__":
    sys.exit(main())
