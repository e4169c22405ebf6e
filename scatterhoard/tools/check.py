"""``hoard check ADDR``: a protocol conformance suite, like memcapable but wider.

Each *case* checks one rule of one protocol (``ascii``, ``meta``, ``binary``,
``resp``, ``distcache``) over its own connection and prints ``name [pass]`` or
``name [FAIL] reason``; a summary ``N passed, M failed`` ends the run and the
exit status is 1 when anything failed, 2 when the address cannot be reached.

The reference is real memcached 1.6 (and redis for RESP, distcache's
``dc_server`` for distcache): where a server and the reference differ, the
reference wins.  Cases only touch keys under a random per-run prefix, never
flush, and do not depend on wall-clock exactness: a case that needs time to
pass (expiry) *yields* the seconds it needs, every such case is suspended, and
the runner sleeps once for all of them before resuming them.

The cases live in ``check_cases_*.py`` and register themselves with
:func:`case`; this module holds the runner, the per-protocol connections the
cases talk through (blocking sockets driving the sans-IO codecs) and the
command line.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TextIO, TypeVar

from ..address import Address, parse_address
from ..errors import AddressError, ProtocolError
from ..protocol import binary as b
from ..protocol import distcache as dc
from ..protocol.resp import RespParser, RespValue, encode_command

PROTOCOLS = ("ascii", "meta", "binary", "resp", "distcache")
MEMCACHED_PROTOCOLS = ("ascii", "meta", "binary")
DEFAULT_PORT = 11211
#: Seconds to wait, after the last expiry case is set up, before checking expiry.
#: Items get exptime 1 s, so this leaves a 2 s margin for coarse server clocks.
EXPIRY_WAIT = 3.0


class CheckFailed(Exception):
    """A case's expectation was not met; the message says what was expected and what came."""


ConnT = TypeVar("ConnT", bound="Conn")
CaseResult = Iterator[float] | None
CaseFunc = Callable[["Context"], CaseResult]


@dataclass(frozen=True)
class Case:
    protocol: str
    name: str
    func: CaseFunc
    summary: str

    @property
    def full_name(self) -> str:
        return f"{self.protocol} {self.name}"


REGISTRY: list[Case] = []


def case(protocol: str, name: str) -> Callable[[CaseFunc], CaseFunc]:
    """Register a case; its docstring's first line is its summary (shown with -v)."""
    assert protocol in PROTOCOLS, protocol

    def register(func: CaseFunc) -> CaseFunc:
        doc = (func.__doc__ or "").strip().splitlines()
        REGISTRY.append(Case(protocol, name, func, doc[0] if doc else ""))
        return func

    return register


def all_cases() -> list[Case]:
    from . import (  # noqa: F401  (imported for their registrations)
        check_cases_ascii,
        check_cases_binary,
        check_cases_distcache,
        check_cases_meta,
        check_cases_resp,
    )

    return list(REGISTRY)


# -- formatting ---------------------------------------------------------------------------------


def show(data: bytes | bytearray | memoryview, limit: int = 100) -> str:
    """Bytes for a failure message: repr, cut at ``limit`` with the rest counted."""
    data = bytes(data)
    if len(data) <= limit:
        return repr(data)
    return f"{bytes(data[:limit])!r}...(+{len(data) - limit} bytes)"


def fmt(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return show(value)
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return repr(value)


def eq(what: str, got: object, expected: object) -> None:
    """Fail with ``what: expected X, got Y`` unless ``got == expected``."""
    if got != expected:
        raise CheckFailed(f"{what}: expected {fmt(expected)}, got {fmt(got)}")


def ok(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


# -- connections ----------------------------------------------------------------------------------


def connect(addr: Address, timeout: float) -> socket.socket:
    """A connected blocking socket with ``timeout`` (OSError when it cannot be had)."""
    if addr.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(addr.path)
        except BaseException:
            sock.close()
            raise
        return sock
    if addr.kind == "fd":
        raise OSError(f"cannot check an inherited descriptor ({addr})")
    sock = socket.create_connection((addr.host, addr.port), timeout=timeout)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Conn:
    """A blocking connection with a receive buffer and a transcript for ``-v``."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sock = connect(ctx.addr, ctx.timeout)
        self.buf = bytearray()
        self.last_request = b""

    def send(self, data: bytes) -> None:
        self.last_request = data
        self.ctx.log(">", data)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise CheckFailed(f"cannot send {self.req()}: {exc.strerror or exc}") from None

    def req(self) -> str:
        """The last request for messages: its first line, cut."""
        head = self.last_request.split(b"\r\n", 1)[0] if self.last_request[:1] not in (b"\x80", b"\x00") \
            else self.last_request
        return show(head, 60)

    def _recv(self, waiting_for: str) -> None:
        try:
            chunk = self.sock.recv(262144)
        except TimeoutError:
            got = f"; got so far {show(self.buf)}" if self.buf else ""
            raise CheckFailed(f"no reply to {self.req()} within {self.ctx.timeout:g} s "
                              f"(waiting for {waiting_for}{got})") from None
        except OSError as exc:
            raise CheckFailed(f"connection error after {self.req()}: {exc.strerror or exc}") from None
        if not chunk:
            got = f" after sending {show(self.buf)}" if self.buf else ""
            raise CheckFailed(f"connection closed by the server{got} (waiting for {waiting_for} "
                              f"after {self.req()})")
        self.ctx.log("<", chunk)
        self.buf += chunk

    def read_exact(self, n: int, waiting_for: str = "data") -> bytes:
        while len(self.buf) < n:
            self._recv(waiting_for)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def expect_silence(self, seconds: float = 0.2) -> None:
        """Nothing more may arrive within ``seconds``."""
        if not self.buf:
            self.sock.settimeout(seconds)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return
            finally:
                self.sock.settimeout(self.ctx.timeout)
            if not chunk:
                return
            self.buf += chunk
        raise CheckFailed(f"unexpected extra reply after {self.req()}: {show(self.buf)}")

    def expect_closed(self) -> None:
        """The server must close the connection (after whatever it has already sent)."""
        self.buf.clear()
        deadline = time.monotonic() + self.ctx.timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                return  # reset: closed too
            if not chunk:
                return
            self.buf += chunk
        extra = f"; it sent {show(self.buf)}" if self.buf else ""
        raise CheckFailed(f"connection still open {self.ctx.timeout:g} s after {self.req()}{extra}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Block:
    """An expected data block: exactly these bytes, then CRLF (may contain CRLF itself)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


TextItem = bytes | re.Pattern[bytes] | Block


class TextConn(Conn):
    """The memcached text protocol (classic and meta commands)."""

    def read_line(self, waiting_for: str = "a reply line") -> bytes:
        """One reply line without its CRLF."""
        start = 0
        while True:
            eol = self.buf.find(b"\n", start)
            if eol >= 0:
                break
            start = len(self.buf)
            self._recv(waiting_for)
        line = bytes(self.buf[:eol])
        del self.buf[:eol + 1]
        if not line.endswith(b"\r"):
            raise CheckFailed(f"reply line not terminated by CRLF after {self.req()}: {show(line)}")
        return line[:-1]

    def call(self, request: bytes, *expected: TextItem) -> list[re.Match[bytes]]:
        """Send ``request``, then read one reply item per ``expected`` and compare.

        ``bytes`` is a line (exact), a pattern a line it must fully match, a
        :class:`Block` a data block.  Returns the matches of the patterns.
        """
        self.send(request)
        return self.expect(*expected)

    def expect(self, *expected: TextItem) -> list[re.Match[bytes]]:
        matches: list[re.Match[bytes]] = []
        for n, item in enumerate(expected, 1):
            where = f"reply line {n} to {self.req()}" if len(expected) > 1 else f"reply to {self.req()}"
            if isinstance(item, Block):
                data = self.read_exact(len(item.data) + 2, f"a {len(item.data)}-byte data block")
                if data[:-2] != item.data:
                    raise CheckFailed(f"{where}: expected data block {show(item.data)}, got {show(data[:-2])}")
                if data[-2:] != b"\r\n":
                    raise CheckFailed(f"{where}: data block not followed by CRLF (got {show(data[-2:])})")
                continue
            line = self.read_line(f"reply line {n} of {len(expected)}" if len(expected) > 1 else "a reply line")
            if isinstance(item, bytes):
                if line != item:
                    raise CheckFailed(f"{where}: expected {show(item)}, got {show(line)}")
            else:
                m = item.fullmatch(line)
                if m is None:
                    raise CheckFailed(f"{where}: expected a line like {show(item.pattern)}, got {show(line)}")
                matches.append(m)
        return matches

    def gets(self, key: bytes) -> tuple[int, bytes, int] | None:
        """(flags, value, cas) of ``key`` through ``gets``, or None on a miss."""
        self.send(b"gets %s\r\n" % key)
        line = self.read_line()
        if line == b"END":
            return None
        m = re.fullmatch(rb"VALUE (\S+) (\d+) (\d+) (\d+)", line)
        if m is None or m.group(1) != key:
            raise CheckFailed(f"reply to {self.req()}: expected 'VALUE {key.decode()} <flags> <bytes> <cas>' "
                              f"or 'END', got {show(line)}")
        data = self.read_exact(int(m.group(3)) + 2)
        self.expect(b"END")
        return int(m.group(2)), data[:-2], int(m.group(4))


class BinConn(Conn):
    """The memcached binary protocol, through :class:`~scatterhoard.protocol.binary.BinaryParser`."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.parser = b.BinaryParser(None, magic=b.RESPONSE_MAGIC)
        self.packets: list[b.Packet] = []

    def recv(self) -> b.Packet:
        while not self.packets:
            self._recv("a response packet")
            try:
                items = self.parser.feed(bytes(self.buf))
            except b.BinaryFramingError as exc:
                raise CheckFailed(f"reply to {self.req()} is not a binary response: {exc}") from None
            self.buf.clear()
            self.packets.extend(p for p in items if isinstance(p, b.Packet))
        return self.packets.pop(0)

    def req(self) -> str:
        try:
            packets = b.BinaryParser(None, magic=b.REQUEST_MAGIC).feed(self.last_request)
        except b.BinaryFramingError:
            return super().req()
        if not packets:
            return super().req()
        p = packets[0]
        text = b.OPCODE_NAMES.get(p.opcode, f"opcode 0x{p.opcode:02x}") + (f" {show(p.key, 50)}" if p.key else "")
        return text + (f" (+{len(packets) - 1} more requests)" if len(packets) > 1 else "")

    def call(self, opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"", *, cas: int = 0,
             opaque: int = 0) -> b.Packet:
        self.send(b.encode_request(opcode, key, extras, value, opaque=opaque, cas=cas))
        return self.recv()

    def expect_silence(self, seconds: float = 0.2) -> None:
        if self.packets:
            raise CheckFailed(f"unexpected extra reply after {self.req()}: {describe_packet(self.packets[0])}")
        super().expect_silence(seconds)

    def status(self, p: b.Packet, status: int, what: str = "") -> b.Packet:
        """``p`` must be a reply to the last request's opcode with ``status``."""
        what = what or f"reply to {b.OPCODE_NAMES.get(p.opcode, hex(p.opcode))}"
        if p.status != status:
            extra = f" ({show(p.value, 60)})" if p.status and p.value else ""
            raise CheckFailed(f"{what}: expected status {status_name(status)}, got {status_name(p.status)}{extra}")
        return p


def status_name(status: int) -> str:
    return f"{b.STATUS_NAMES.get(status, 'UNKNOWN')}(0x{status:02x})"


def describe_packet(p: b.Packet) -> str:
    name = b.OPCODE_NAMES.get(p.opcode, f"0x{p.opcode:02x}")
    return (f"{name} status={status_name(p.status)} opaque={p.opaque} key={show(p.key, 40)} "
            f"value={show(p.value, 40)}")


class RespConn(Conn):
    """RESP, through :class:`~scatterhoard.protocol.resp.RespParser`."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.parser = RespParser()
        self.values: list[RespValue] = []

    def recv(self) -> RespValue:
        while not self.values:
            self._recv("a RESP reply")
            try:
                self.values.extend(self.parser.feed(bytes(self.buf)))
            except ProtocolError as exc:
                raise CheckFailed(f"reply to {self.req()} is not RESP: {exc}") from None
            self.buf.clear()
        return self.values.pop(0)

    def cmd(self, *args: bytes | str | int) -> RespValue:
        self.send(encode_command(*args))
        return self.recv()

    def pipeline(self, commands: Sequence[Sequence[bytes | str | int]]) -> list[RespValue]:
        self.send(b"".join(encode_command(*c) for c in commands))
        return [self.recv() for _ in commands]

    def req(self) -> str:
        try:
            parts = RespParser().feed(self.last_request)
        except ProtocolError:
            return super().req()
        if parts and isinstance(parts[0], list):
            words = [bytes(x).decode("latin-1") if isinstance(x, bytes) else repr(x) for x in parts[0]]
            text = " ".join(w if len(w) <= 40 else w[:40] + "..." for w in words)
            return repr(text + (" ..." if len(parts) > 1 else ""))
        return super().req()


class DcConn(Conn):
    """distcache, through :class:`~scatterhoard.protocol.distcache.DistcacheParser`."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.parser = dc.DistcacheParser("client")
        self.messages: list[dc.Message] = []
        self.uid = 0

    def next_uid(self) -> int:
        self.uid += 1
        return self.uid

    def recv(self) -> dc.Response:
        while not self.messages:
            self._recv("a distcache reply")
            try:
                self.messages.extend(self.parser.feed(bytes(self.buf)))
            except dc.FramingError as exc:
                raise CheckFailed(f"reply to {self.req()} is not distcache: {exc.reason}") from None
            self.buf.clear()
        m = self.messages.pop(0)
        try:
            return dc.decode_response(m)
        except (ProtocolError, ValueError) as exc:
            raise CheckFailed(f"bad reply to {self.req()}: {exc}") from None

    def req(self) -> str:
        try:
            msgs = dc.DistcacheParser("server").feed(self.last_request)
        except dc.FramingError:
            return super().req()
        return repr(dc.describe(msgs[0]) + (" ..." if len(msgs) > 1 else "")) if msgs else super().req()

    def call(self, request: bytes, uid: int, op: int) -> dc.Response:
        self.send(request)
        r = self.recv()
        eq(f"uid of the reply to {self.req()}", r.uid, uid)
        eq(f"operation of the reply to {self.req()}", dc.OP_NAMES.get(r.op, r.op), dc.OP_NAMES[op])
        return r

    def add(self, sid: bytes, data: bytes, timeout_ms: int) -> int:
        uid = self.next_uid()
        return self.call(dc.encode_add(uid, sid, data, timeout_ms), uid, dc.OP_ADD).code

    def get(self, sid: bytes) -> bytes | None:
        uid = self.next_uid()
        r = self.call(dc.encode_get(uid, sid), uid, dc.OP_GET)
        if r.code == dc.RESULT_DISCONNECTED:
            raise CheckFailed(f"GET answered DISCONNECTED(2) for {show(sid)}")
        return r.data

    def have(self, sid: bytes) -> int:
        uid = self.next_uid()
        return self.call(dc.encode_have(uid, sid), uid, dc.OP_HAVE).code

    def remove(self, sid: bytes) -> int:
        uid = self.next_uid()
        return self.call(dc.encode_remove(uid, sid), uid, dc.OP_REMOVE).code


def result_name(code: int) -> str:
    return f"{dc.RESULT_NAMES.get(code, 'UNKNOWN')}({code})"


# -- the context a case runs in -------------------------------------------------------------------


@dataclass
class Settings:
    addr: Address
    timeout: float = 2.0
    item_size_max: int = 1024 * 1024
    prefix: str = field(default_factory=lambda: f"hc{secrets.token_hex(3)}:")


class Context:
    """What a case gets: connections to the target, unique keys, a transcript."""

    def __init__(self, settings: Settings, case: Case) -> None:
        self.settings = settings
        self.addr = settings.addr
        self.timeout = settings.timeout
        self.item_size_max = settings.item_size_max
        self.case = case
        self.conns: list[Conn] = []
        self.transcript: list[str] = []

    def key(self, suffix: str = "") -> bytes:
        """A key unique to this run and case (no spaces or control characters)."""
        return f"{self.settings.prefix}{self.case.protocol}.{self.case.name}{suffix}".encode()

    def padded_key(self, length: int) -> bytes:
        """A unique key of exactly ``length`` bytes."""
        base = self.key(":")
        if len(base) > length:
            base = base[:length]
        return base + b"k" * (length - len(base))

    def log(self, direction: str, data: bytes) -> None:
        self.transcript.append(f"    {direction} {show(data, 160)}")
        if len(self.transcript) > 40:
            del self.transcript[:-40]

    def _open(self, cls: type[ConnT]) -> ConnT:
        try:
            conn = cls(self)
        except OSError as exc:
            raise CheckFailed(f"cannot connect to {self.addr}: {exc.strerror or exc}") from None
        self.conns.append(conn)
        return conn

    def text(self) -> TextConn:
        return self._open(TextConn)

    def binary(self) -> BinConn:
        return self._open(BinConn)

    def resp(self) -> RespConn:
        return self._open(RespConn)

    def distcache(self) -> DcConn:
        return self._open(DcConn)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.conns.clear()


# -- probing --------------------------------------------------------------------------------------


def _probe_request(protocol: str) -> bytes:
    if protocol == "ascii":
        return b"version\r\n"
    if protocol == "meta":
        return b"mn\r\n"
    if protocol == "binary":
        return b.encode_request(b.OP_NOOP, opaque=0x5EED)
    if protocol == "resp":
        return encode_command(b"PING")
    return dc.encode_have(7, b"hoard-check-probe")


def _probe_answered(protocol: str, data: bytes) -> bool:
    if protocol == "ascii":
        return data.startswith(b"VERSION ") and data.endswith(b"\r\n")
    if protocol == "meta":
        return data == b"MN\r\n"
    if protocol == "binary":
        return len(data) >= b.HEADER_SIZE and data[0] == b.RESPONSE_MAGIC and data[1] == b.OP_NOOP
    if protocol == "resp":
        return data == b"+PONG\r\n"
    return len(data) >= dc.HEADER_SIZE + 1 and data[4] == 1 and data[10] == dc.OP_HAVE


def _probe_one(addr: Address, protocol: str, timeout: float) -> bool:
    """Does the target answer a harmless request of ``protocol``?"""
    try:
        sock = connect(addr, timeout)
    except OSError:
        return False
    try:
        sock.settimeout(timeout)
        sock.sendall(_probe_request(protocol))
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(data) < 4096:
            try:
                chunk = sock.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            if _probe_answered(protocol, data):
                return True
            if data.endswith(b"\n") and protocol in ("ascii", "meta", "resp"):
                break
        return False
    except OSError:
        return False
    finally:
        sock.close()


def probe(addr: Address, timeout: float = 1.0) -> list[str]:
    """The protocols the target answers, in :data:`PROTOCOLS` order (probed in parallel)."""
    with ThreadPoolExecutor(len(PROTOCOLS)) as pool:
        answers = list(pool.map(lambda p: _probe_one(addr, p, timeout), PROTOCOLS))
    return [p for p, yes in zip(PROTOCOLS, answers, strict=True) if yes]


# -- the runner -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    passed: bool
    reason: str
    seconds: float
    transcript: list[str]


class Runner:
    """Runs cases in order, suspends those that wait for expiry, sleeps once, resumes them."""

    def __init__(self, settings: Settings, out: TextIO, verbose: bool = False) -> None:
        self.settings = settings
        self.out = out
        self.verbose = verbose
        self.outcomes: list[Outcome | None] = []
        self._printed = 0
        # A target that stops answering would cost a timeout per case: after GIVE_UP cases of a
        # protocol in a row found it unreachable or silent, the rest of that protocol is not run.
        self._streak: dict[str, int] = {}
        self._gave_up: dict[str, str] = {}

    GIVE_UP = 3

    def run(self, cases: Sequence[Case]) -> tuple[int, int]:
        self.outcomes = [None] * len(cases)
        suspended: list[tuple[int, Context, Iterator[float], float, float]] = []
        for i, c in enumerate(cases):
            ctx = Context(self.settings, c)
            started = time.monotonic()
            gave_up = self._gave_up.get(c.protocol)
            if gave_up is not None:
                self._done(i, ctx, started, CheckFailed(f"not run: {gave_up}"))
                continue
            gen: Iterator[float] | None = None
            try:
                result = c.func(ctx)
                if result is not None:
                    gen = result
                    wait = next(gen)
                    suspended.append((i, ctx, gen, started, time.monotonic() + wait))
                    continue
                self._done(i, ctx, started, None)
            except StopIteration:
                self._done(i, ctx, started, None)
            except Exception as exc:  # noqa: BLE001  (every failure is reported, the run goes on)
                self._done(i, ctx, started, exc)
        while suspended:
            until = max(s[4] for s in suspended)
            delay = until - time.monotonic()
            if delay > 0:
                if self.verbose:
                    self.out.write(f"  (waiting {delay:.1f} s for {len(suspended)} expiry cases)\n")
                    self.out.flush()
                time.sleep(delay)
            again: list[tuple[int, Context, Iterator[float], float, float]] = []
            for i, ctx, gen, started, _ in suspended:
                try:
                    wait = next(gen)
                    again.append((i, ctx, gen, started, time.monotonic() + wait))
                except StopIteration:
                    self._done(i, ctx, started, None)
                except Exception as exc:  # noqa: BLE001
                    self._done(i, ctx, started, exc)
            suspended = again
        passed = sum(1 for o in self.outcomes if o is not None and o.passed)
        failed = len(cases) - passed
        self.out.write(f"{passed} passed, {failed} failed\n")
        self.out.flush()
        return passed, failed

    def _done(self, i: int, ctx: Context, started: float, exc: BaseException | None) -> None:
        ctx.close()
        if exc is None:
            reason = ""
        elif isinstance(exc, CheckFailed):
            reason = str(exc)
        elif isinstance(exc, OSError):
            reason = f"socket error: {exc.strerror or exc}"
        else:
            reason = f"internal error in the case: {type(exc).__name__}: {exc}"
        self.outcomes[i] = Outcome(ctx.case, exc is None, reason, time.monotonic() - started, ctx.transcript)
        proto = ctx.case.protocol
        if reason.startswith(("no reply to", "cannot connect to")):
            self._streak[proto] = self._streak.get(proto, 0) + 1
            if self._streak[proto] >= self.GIVE_UP and proto not in self._gave_up:
                self._gave_up[proto] = (f"{self.GIVE_UP} {proto} cases in a row got no reply or no connection")
        elif not reason.startswith("not run:"):
            self._streak[proto] = 0
        self._flush()

    def _flush(self) -> None:
        """Print outcomes in case order, as far as they are known."""
        width = max((len(o.case.full_name) for o in self.outcomes if o is not None), default=0)
        width = max(width, 36)
        while self._printed < len(self.outcomes):
            o = self.outcomes[self._printed]
            if o is None:
                break
            name = o.case.full_name.ljust(width)
            if o.passed:
                line = f"{name} [pass]"
            else:
                line = f"{name} [FAIL] {o.reason}"
            if self.verbose:
                line += f"  ({o.seconds * 1000:.1f} ms: {o.case.summary})"
            self.out.write(line + "\n")
            if self.verbose and not o.passed and o.transcript:
                self.out.write("\n".join(o.transcript) + "\n")
            self._printed += 1
        self.out.flush()


def select_cases(protocols: Sequence[str], only: Sequence[str] = ()) -> list[Case]:
    chosen = [c for c in all_cases() if c.protocol in protocols]
    if only:
        chosen = [c for c in chosen
                  if any(fnmatchcase(c.full_name, pat) or fnmatchcase(c.name, pat) for pat in only)]
    order = {p: n for n, p in enumerate(PROTOCOLS)}
    return sorted(chosen, key=lambda c: order[c.protocol])  # stable: registration order within one


# -- command line ---------------------------------------------------------------------------------

DESCRIPTION = """\
Check that a server (ours or anyone's, a server or a proxy) speaks its protocols
as the reference does: memcached 1.6 for the text, meta and binary protocols,
redis for RESP, distcache's dc_server for distcache. Prints one line per case,
`name [pass]` or `name [FAIL] reason`, then `N passed, M failed`.

Without a protocol flag every protocol the target answers is checked (it is
probed first); when it answers none, the memcached ones are checked. Cases only
use keys under a random prefix and never flush; one shared pause of about 3 s
checks expiry.

exit status: 0 all passed, 1 some case failed, 2 the address cannot be reached.

examples:
  hoard check 127.0.0.1:11211
  hoard check 127.0.0.1:6379 --resp
  hoard check unix:/run/hoard.sock --binary --meta -v
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="protocol conformance suite against a server",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("address", metavar="ADDR", help="host:port, [v6]:port, unix:/path (default port 11211)")
    for proto, text in (("ascii", "the classic memcached text protocol"), ("meta", "memcached meta commands"),
                        ("binary", "the memcached binary protocol"), ("resp", "RESP (redis)"),
                        ("distcache", "the distcache session cache protocol")):
        p.add_argument(f"--{proto}", dest="protocols", action="append_const", const=proto,
                       help=f"check {text} (repeatable with the others)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show each case's time and summary, and the bytes exchanged by failing cases")
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only the cases whose name matches (e.g. 'incr*', 'binary quiet*'; repeatable)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S",
                   help="seconds to wait for each reply (default 2)")
    p.add_argument("--max-item-size", type=int, default=1024 * 1024, metavar="BYTES",
                   help="the target's item size limit, for the max-item-size cases (default 1 MiB)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    if args.list:
        for c in select_cases(args.protocols or list(PROTOCOLS), args.only):
            out.write(f"{c.full_name:<36} {c.summary}\n")
        return 0
    try:
        addr = parse_address(args.address, default_port=DEFAULT_PORT)
    except AddressError as exc:
        print(f"hoard check: {exc}", file=sys.stderr)
        return 2
    try:
        connect(addr, args.timeout).close()
    except OSError as exc:
        print(f"hoard check: cannot connect to {addr}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    protocols: list[str] = list(dict.fromkeys(args.protocols or []))
    if not protocols:
        protocols = probe(addr, min(args.timeout, 1.0))
        if args.verbose and protocols:
            out.write(f"  {addr} answers: {', '.join(protocols)}\n")
        if not protocols:
            out.write(f"  ({addr} answered no probe of {', '.join(PROTOCOLS)}: checking the memcached ones)\n")
            protocols = list(MEMCACHED_PROTOCOLS)
    cases = select_cases(protocols, args.only)
    if not cases:
        print("hoard check: no case selected", file=sys.stderr)
        return 2
    settings = Settings(addr, timeout=args.timeout, item_size_max=args.max_item_size)
    _, failed = Runner(settings, out, args.verbose).run(cases)
    return 1 if failed else 0
