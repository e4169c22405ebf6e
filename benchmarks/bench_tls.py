#!/usr/bin/env python3
"""Benchmark `hoard tls`: full vs resumed handshakes, and forwarding throughput vs stunnel4.

One ``hoard server`` is the session cache, another the plaintext backend;
``hoard tls`` (and Debian's ``stunnel4`` when installed) terminate TLS in
front of it.  The measured terminator is pinned to CPU 0 when there are two
CPUs, the client threads (Python's ssl) run in this process on CPU 1.

* handshakes, once per certificate key (``--keys``: RSA-2048, the common
  deployment, and ECDSA P-256), each with its own ``hoard tls`` sharing
  sessions through the cache (distcache): ``--threads`` clients open
  connections as fast as they can for ``--duration`` seconds, each doing a
  handshake, one ``version`` request through to the backend and a close (so
  each connection also costs the terminator its backend connection, which it
  opens once the handshake has succeeded, and the forwarding of one request and
  its answer); once with no session (full handshakes) and once offering a
  session from the cache (resumed), for TLS 1.2 and TLS 1.3.  Printed:
  connections/s, terminator CPU per connection and connections per terminator
  CPU-second (user + system time of the process, from ``/proc``), and the
  ratio full/resumed of the CPU per connection, which is what the resumption
  saves.  The client is Python's ssl on OpenSSL 3: its TLS 1.3 resumption
  offers only the ``psk_dhe_ke`` mode (a resumption still does an X25519
  exchange), the server cannot choose plain ``psk_ke``.
* the floor: the same handshakes in memory, in this process (Python's ssl
  client over memory BIOs, our ``TLSConnection`` with OpenSSL's own session
  cache): the thread CPU of the server side only, i.e. what OpenSSL itself
  spends per handshake with no sockets, no event loop, no backend and no
  cache round trip; its full/resumed ratio bounds what any terminator built
  on it can show.
* forwarding: ``--threads`` connections each ``get`` a 512 KB value in a
  loop through the terminator for ``--duration`` seconds; MB/s and MB per
  terminator CPU-second, ``hoard tls`` and ``stunnel4`` in turn (same
  RSA-2048 certificate, TLS 1.3).

    .venv/bin/python benchmarks/bench_tls.py              # about 50 s
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


#: --keys choices: label printed, and how the certificate's key is made
KEYS = {"rsa2048": "RSA-2048", "p256": "ECDSA P-256"}


def make_cert(directory: str, kind: str) -> tuple[str, str]:
    """A self-signed certificate for localhost with a ``kind`` key (see :data:`KEYS`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "rsa2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unknown key kind {kind!r}")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = Path(directory) / f"{kind}-cert.pem", Path(directory) / f"{kind}-key.pem"
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
            return bool(s.session_reused), s.session


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


def bench_handshakes(term: Process, args: argparse.Namespace, key: str) -> list[dict[str, Any]]:
    rows = []
    for label, version in (("TLS 1.2", ssl.TLSVersion.TLSv1_2), ("TLS 1.3", ssl.TLSVersion.TLSv1_3)):
        ctx = client_ctx(version)
        _, session = request(term.port, ctx, None)
        row: dict[str, Any] = {"key": KEYS[key], "version": label}
        for kind, offered in (("full", None), ("resumed", session)):
            reused_wrong = 0

            def work(offered: ssl.SSLSession | None = offered, ctx: ssl.SSLContext = ctx) -> int:
                nonlocal reused_wrong
                reused, _ = request(term.port, ctx, offered)
                if reused != (offered is not None):
                    reused_wrong += 1
                return 1

            n, wall, cpu = measure(term, args.threads, args.duration, work)
            row[kind] = {"per_s": n / wall, "cpu_ms": 1000 * cpu / max(n, 1), "per_cpu_s": n / max(cpu, 1e-9),
                         "count": n, "unexpected": reused_wrong}
        row["cpu_ratio"] = row["full"]["cpu_ms"] / max(row["resumed"]["cpu_ms"], 1e-9)
        rows.append(row)
    return rows


def floor_handshake(server_ctx: Any, client: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[float, Any]:
    """One handshake in memory, then one record each way: (server-side thread CPU seconds, client)."""
    from scatterhoard.tls.connection import Handshake, TLSConnection

    cin, cout = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(cin, cout, server_hostname="localhost", session=session)
    t0 = time.thread_time()
    conn = TLSConnection(server_ctx)
    spent = time.thread_time() - t0
    done = False
    while True:
        try:
            c.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            pass
        data = cout.read()
        t0 = time.thread_time()
        conn.feed(data)
        state = Handshake.DONE if conn.handshake_done else conn.handshake()
        out = conn.output()
        spent += time.thread_time() - t0
        cin.write(out)
        if done and state is Handshake.DONE and not out:
            break
    c.write(b"version\r\n")
    data = cout.read()
    t0 = time.thread_time()
    conn.feed(data)
    conn.read()
    conn.write(b"VERSION x\r\n")
    out = conn.output()
    spent += time.thread_time() - t0
    cin.write(out)
    c.read(100)
    t0 = time.thread_time()
    conn.free()
    return spent + time.thread_time() - t0, c


def bench_floor(cert: str, key: str, label: str, count: int) -> list[dict[str, Any]]:
    from scatterhoard.tls import TLSContext
    from scatterhoard.tls._ffi import libs

    rows = []
    with TLSContext(cert, key) as server_ctx:  # OpenSSL's own cache: no lookup, no store
        libs()[0].SSL_CTX_set_num_tickets(server_ctx.ctx, 1)  # one TLS 1.3 ticket, as `hoard tls --cache` issues
        for vlabel, version in (("TLS 1.2", ssl.TLSVersion.TLSv1_2), ("TLS 1.3", ssl.TLSVersion.TLSv1_3)):
            client = client_ctx(version)
            _, first = floor_handshake(server_ctx, client, None)
            row: dict[str, Any] = {"key": label, "version": vlabel}
            for kind, offered in (("full", None), ("resumed", first.session)):
                total, unexpected = 0.0, 0
                for _ in range(count):
                    spent, c = floor_handshake(server_ctx, client, offered)
                    total += spent
                    unexpected += c.session_reused != (offered is not None)
                row[kind] = {"cpu_ms": 1000 * total / count, "count": count, "unexpected": unexpected}
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


def terminator_argv(cpu: int | None, port: int, cert: str, key: str, backend: int, cache: int,
                    farm_key: Path) -> list[str]:
    return [*pin_prefix(cpu), *hoard("tls", "-l", f"{HOST}:{port}", "--cert", cert, "--key", key,
                                     "--backend", f"{HOST}:{backend}", "--cache", f"{HOST}:{cache}",
                                     "--cache-key", str(farm_key))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measurement (default 3)")
    p.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    p.add_argument("--keys", default="rsa2048,p256",
                   help=f"certificate keys for the handshakes, comma-separated among {', '.join(KEYS)} "
                        "(default: both; forwarding always uses the first)")
    p.add_argument("--quick", action="store_true", help="0.5 s per measurement")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = p.parse_args(argv)
    keys = [k for k in args.keys.split(",") if k]
    if not keys or any(k not in KEYS for k in keys):
        p.error(f"--keys: choose among {', '.join(KEYS)}")
    if args.quick:
        args.duration = 0.5
    cpu, client_cpu = (0, 1) if can_pin(0, 1) else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    results: dict[str, Any] = {"duration": args.duration, "threads": args.threads, "pinned": cpu is not None,
                               "openssl": ssl.OPENSSL_VERSION, "handshakes": [], "floor": [], "forwarding": {}}
    with tempfile.TemporaryDirectory(prefix="tls_bench-") as d:
        certs = {k: make_cert(d, k) for k in keys}
        for k in keys:
            results["floor"] += bench_floor(*certs[k], KEYS[k], 50 if args.quick else 300)
        farm_key = Path(d) / "farm.key"
        farm_key.write_bytes(os.urandom(32))
        cport, bport = free_port(), free_port()
        with start_process("cache", hoard("server", "-p", str(cport)), cport), \
                start_process("backend", hoard("server", "-p", str(bport), "-I", "2m"), bport):
            store_blob(bport)
            for i, k in enumerate(keys):
                tport = free_port()
                with start_process(f"hoard tls ({KEYS[k]})",
                                   terminator_argv(cpu, tport, *certs[k], bport, cport, farm_key), tport) as term:
                    results["handshakes"] += bench_handshakes(term, args, k)
                    if i == 0:
                        results["forwarding"]["key"] = KEYS[k]
                        results["forwarding"]["hoard tls"] = bench_forwarding(term, args)
            exe = find_binary("stunnel4") or find_binary("stunnel")
            if exe is not None:
                with stunnel(exe, d, *certs[keys[0]], bport, cpu) as st:
                    results["forwarding"]["stunnel4"] = bench_forwarding(st, args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_report(results)
    return 0


def print_report(r: dict[str, Any]) -> None:
    print(f"hoard tls, {r['threads']} client threads, {r['duration']:g} s per measurement"
          f"{', terminator pinned to CPU 0' if r['pinned'] else ''}; client: Python ssl on {r['openssl']}")
    print("one connection = TLS handshake + backend connection (opened after the handshake) + one request "
          "forwarded and answered + close;\nCPU = the terminator's user+system time; ratio = full CPU ms / "
          "resumed CPU ms; TLS 1.3 resumption offers psk_dhe_ke only\n")
    print(f"{'key':<12} {'handshakes':<10} {'full/s':>7} {'resumed/s':>10} {'full CPU ms':>12} "
          f"{'resumed CPU ms':>15} {'full/CPU-s':>11} {'resumed/CPU-s':>14} {'ratio':>6}")
    for row in r["handshakes"]:
        f, s = row["full"], row["resumed"]
        print(f"{row['key']:<12} {row['version']:<10} {f['per_s']:>7.0f} {s['per_s']:>10.0f} {f['cpu_ms']:>12.2f} "
              f"{s['cpu_ms']:>15.2f} {f['per_cpu_s']:>11.0f} {s['per_cpu_s']:>14.0f} {row['cpu_ratio']:>5.1f}x")
        if f["unexpected"] or s["unexpected"]:
            print(f"  warning: {f['unexpected']} full handshakes resumed, {s['unexpected']} resumptions were full")
    print("\nfloor: OpenSSL alone, in memory (server side of the same handshakes and one request, thread CPU; "
          "no sockets, event loop, backend or cache)")
    print(f"{'key':<12} {'handshakes':<10} {'full CPU ms':>12} {'resumed CPU ms':>15} {'ratio':>6}")
    for row in r["floor"]:
        f, s = row["full"], row["resumed"]
        print(f"{row['key']:<12} {row['version']:<10} {f['cpu_ms']:>12.3f} {s['cpu_ms']:>15.3f} {row['cpu_ratio']:>5.1f}x")
        if f["unexpected"] or s["unexpected"]:
            print(f"  warning: {f['unexpected']} full handshakes resumed, {s['unexpected']} resumptions were full")
    fw = r["forwarding"]
    print(f"\n{'forwarding (512 KB gets, ' + fw.get('key', '?') + ')':<34} {'MB/s':>8} {'MB per CPU-s':>13}")
    for name in ("hoard tls", "stunnel4"):
        if name in fw:
            print(f"{name:<34} {fw[name]['mb_s']:>8.1f} {fw[name]['mb_per_cpu_s']:>13.1f}")
    if "stunnel4" in fw:
        print(f"{'ratio hoard/stunnel4':<34} {fw['hoard tls']['mb_s'] / fw['stunnel4']['mb_s']:>7.2f}x "
              f"{fw['hoard tls']['mb_per_cpu_s'] / fw['stunnel4']['mb_per_cpu_s']:>12.2f}x")
    else:
        print("stunnel4 not installed: no comparison (apt-get install stunnel4)")


if __name__ == "__main__":
    sys.exit(main())
