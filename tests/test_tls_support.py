"""Helpers shared by the TLS tests (no tests here): certificates, farms, real clients.

Certificates are made at test time with ``cryptography``; clients are the
real ``openssl s_client`` and Python's :mod:`ssl`; every server is a real
``hoard server`` / ``hoard tls`` process on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scatterhoard.tls import TLSContext, TLSStats, start_stream_server
from tests.support import free_port, hoard_argv, hoard_server, require_binary, running


def make_cert(directory: str | Path, name: str = "localhost", stem: str = "server") -> tuple[str, str]:
    """A self-signed P-256 certificate for ``name``: (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path = Path(directory) / f"{stem}-cert.pem"
    key_path = Path(directory) / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def make_key(directory: str | Path, stem: str = "farm") -> str:
    path = Path(directory) / f"{stem}.key"
    path.write_bytes(os.urandom(32))
    return str(path)


def openssl() -> str:
    """The ``openssl`` command: skipped without it, a failure under ``make test``/CI."""
    return require_binary("openssl")


@dataclass
class Farm:
    """Certificates, key file, one cache, one backend, and the terminators' ports."""

    directory: str
    cert: str
    key: str
    cache_key: str
    cache_port: int
    backend_port: int
    cache_proc: subprocess.Popen[bytes]
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def tls_argv(self, port: int, *extra: str, cache: str | None = None, cache_key: str | None = None) -> list[str]:
        return hoard_argv("tls", "-l", f"127.0.0.1:{port}", "--cert", self.cert, "--key", self.key,
                          "--backend", f"127.0.0.1:{self.backend_port}",
                          "--cache", cache or f"127.0.0.1:{self.cache_port}",
                          "--cache-key", cache_key or self.cache_key, *extra)

    @contextlib.contextmanager
    def terminator(self, *extra: str, cache: str | None = None, cache_key: str | None = None) -> Iterator[int]:
        port = free_port()
        with running(self.tls_argv(port, *extra, cache=cache, cache_key=cache_key), port=port) as proc:
            self.procs.append(proc)
            yield port


@contextlib.contextmanager
def farm(directory: str, n: int = 2, extra: Sequence[str] = (), cache_port: int | None = None) -> Iterator[Farm]:
    """``n`` terminators sharing one ``hoard server`` cache, forwarding to a ``hoard server`` backend."""
    cert, key = make_cert(directory)
    cache_key = make_key(directory)
    cport = cache_port or free_port()
    cache_argv = hoard_argv("server", "-l", "127.0.0.1", "-p", str(cport))
    with running(cache_argv, port=cport) as cache_proc, hoard_server() as bport, \
            contextlib.ExitStack() as stack:
        f = Farm(directory, cert, key, cache_key, cport, bport, cache_proc)
        for _ in range(n):
            f.ports.append(stack.enter_context(f.terminator(*extra)))
        yield f


@dataclass
class SClientResult:
    output: str

    @property
    def reused(self) -> bool:
        return any(line.startswith("Reused,") for line in self.output.splitlines())

    @property
    def new(self) -> bool:
        return any(line.startswith("New,") for line in self.output.splitlines())

    @property
    def answered(self) -> bool:
        return "VERSION " in self.output

    @property
    def master_key(self) -> bytes | None:
        for line in self.output.splitlines():
            line = line.strip()
            if line.startswith("Master-Key:") and len(line) > 12:
                return bytes.fromhex(line.split(":", 1)[1].strip())
        return None


def s_client(port: int, version: str, *, sess_out: str | None = None, sess_in: str | None = None,
             servername: str | None = None) -> SClientResult:
    """``openssl s_client`` through a terminator to the backend: sends ``version`` and waits
    for the backend's answer (so a TLS 1.3 ticket sent before it has been received)."""
    argv = [openssl(), "s_client", "-connect", f"127.0.0.1:{port}", f"-{version}"]
    if sess_out:
        argv += ["-sess_out", sess_out]
    if sess_in:
        argv += ["-sess_in", sess_in]
    if servername:
        argv += ["-servername", servername]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    lines: list[bytes] = []
    try:
        proc.stdin.write(b"version\r\n")
        proc.stdin.flush()
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(b"VERSION "):
                break
        proc.stdin.close()
        lines.extend(proc.stdout.readlines())
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
    return SClientResult(b"".join(lines).decode("utf-8", "replace"))


def session_ticket(sess_pem: str) -> bytes:
    """The ticket of a session saved by ``s_client -sess_out`` (``openssl sess_id -text``): a TLS
    1.3 stateful ticket is the server's session id; a stateless one starts with its key name."""
    text = subprocess.run([openssl(), "sess_id", "-in", sess_pem, "-noout", "-text"], capture_output=True,
                          text=True, timeout=30, check=True).stdout
    return ticket_in(text)


def ticket_in(text: str) -> bytes:
    """The last ``TLS session ticket:`` hex dump in an ``openssl`` session printout (an
    ``s_client`` output prints the ticket it received last, TLS 1.3's after the handshake)."""
    before, found, rest = text.rpartition("TLS session ticket:\n")
    assert found, text
    ticket = b""
    for line in rest.splitlines():
        m = re.match(r"\s*[0-9a-f]{4} - ((?:[0-9a-f]{2}[ -]){0,15}[0-9a-f]{2})", line)
        if m is None:
            break
        ticket += bytes.fromhex(m.group(1).replace("-", " "))
    assert ticket, text
    return ticket


def client_context(version: ssl.TLSVersion, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


@dataclass
class PyResult:
    session: ssl.SSLSession | None
    reused: bool
    reply: bytes
    version: str | None
    alpn: str | None = None


def py_request(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None,
               request: bytes = b"version\r\n", server_hostname: str = "localhost",
               timeout: float = 20.0) -> PyResult:
    """One TLS connection with Python's ssl: send ``request``, read one reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle wait after Finished
        with ctx.wrap_socket(raw, server_hostname=server_hostname, session=session) as s:
            s.sendall(request)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return PyResult(s.session, s.session_reused, reply, s.version(), s.selected_alpn_protocol())


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- in-process servers (the library API) ----------------------------------------------------
async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers one line with what was negotiated, then closes (sending close_notify)."""
    tls = writer.get_extra_info("tls")
    line = await reader.readline()
    info = f"{tls.version} {tls.alpn_protocol} {tls.server_name} {int(tls.session_reused)} ".encode()
    writer.write(info + line)
    await writer.drain()
    writer.close()


def serve_contexts(contexts: Sequence[TLSContext], test: Callable[[list[int]], Awaitable[None]],
                   handler: Callable[..., Any] = echo_handler, stats: TLSStats | None = None,
                   **kwargs: Any) -> None:
    """Run ``test(ports)`` against one stream server per context (in order) in this process's
    event loop; then close the servers, the contexts' session stores and the contexts."""
    async def main() -> None:
        servers = [await start_stream_server(handler, c, "127.0.0.1:0", stats=stats, **kwargs)
                   for c in contexts]
        try:
            await test([s.sockets[0].getsockname()[1] for s in servers])
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()
            stores = {id(c.session_store): c.session_store for c in contexts if c.session_store is not None}
            for store in stores.values():
                await store.close()

    try:
        asyncio.run(main())
    finally:
        for c in contexts:
            c.close()


def serve_in_process(ctx: TLSContext, test: Callable[[int], Awaitable[None]],
                     handler: Callable[..., Any] = echo_handler, stats: TLSStats | None = None,
                     **kwargs: Any) -> None:
    """Run ``test(port)`` against a stream server on ``ctx`` in this process's event loop."""
    async def one(ports: list[int]) -> None:
        await test(ports[0])

    serve_contexts([ctx], one, handler, stats, **kwargs)
