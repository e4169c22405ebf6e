"""``hoard check``: the connections cases talk through, and the context a case runs in.

Blocking sockets driving the sans-IO codecs, one class per protocol
(:class:`TextConn`, :class:`BinConn`, :class:`RespConn`, :class:`DcConn`),
each keeping a transcript of the bytes exchanged for ``-v``; failures are
raised as :class:`CheckFailed` with messages made by the helpers here.
Everything is re-exported by :mod:`.check`, which cases import from.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ..address import Address
from ..distcache.net import connect_blocking
from ..errors import ProtocolError
from ..protocol import binary as b
from ..protocol import distcache as dc
from ..protocol.resp import RespParser, RespValue, encode_command

if TYPE_CHECKING:
    from .check_runner import Case


class CheckFailed(Exception):
    """A case's expectation was not met; the message says what was expected and what came."""


ConnT = TypeVar("ConnT", bound="Conn")


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
    if addr.kind == "fd":
        raise OSError(f"cannot check an inherited descriptor ({addr})")
    return connect_blocking(addr, timeout)


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
