"""Listen/connect addresses, one parser for every hoard command.

Accepted forms (case-insensitive prefixes):

* ``host:port``, ``[v6addr]:port``, ``host`` (with a default port)
* ``unix:/path`` or a bare ``/path``
* distcache/libnal forms: ``IP:host:port``, ``IPv4:host:port``, ``IP:port``
  (listen on all interfaces), ``UNIX:/path``, ``FD:n``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import AddressError

ACCEPTED_FORMS = (
    "host:port, [v6addr]:port, unix:/path, /path, "
    "IP:host:port, IPv4:host:port, IP:port, UNIX:/path, FD:n"
)


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed address: TCP (host, port), unix socket path, or inherited fd."""

    kind: Literal["tcp", "unix", "fd"]
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"FD:{self.fd}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def _port(text: str, original: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise AddressError(f"bad port in address {original!r}; accepted forms: {ACCEPTED_FORMS}") from None
    if not 0 <= port <= 65535:
        raise AddressError(f"port out of range in address {original!r} (0..65535)")
    return port


def _host_port(text: str, original: str, default_port: int | None) -> Address:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"unclosed '[' in address {original!r}; accepted forms: {ACCEPTED_FORMS}")
        host = text[1:end]
        rest = text[end + 1 :]
        if not rest:
            if default_port is None:
                raise AddressError(f"address {original!r} has no port; accepted forms: {ACCEPTED_FORMS}")
            return Address("tcp", host=host, port=default_port)
        if not rest.startswith(":"):
            raise AddressError(f"bad address {original!r}; accepted forms: {ACCEPTED_FORMS}")
        return Address("tcp", host=host, port=_port(rest[1:], original))
    if text.count(":") > 1:  # bare IPv6 literal without brackets
        if default_port is None:
            raise AddressError(f"IPv6 address {original!r} needs brackets: [addr]:port")
        return Address("tcp", host=text, port=default_port)
    host, sep, port = text.partition(":")
    if not sep:
        if default_port is None or not host:
            raise AddressError(f"address {original!r} has no port; accepted forms: {ACCEPTED_FORMS}")
        return Address("tcp", host=host, port=default_port)
    if not host:
        host = "0.0.0.0"
    return Address("tcp", host=host, port=_port(port, original))


def parse_address(text: str, default_port: int | None = None) -> Address:
    """Parse one address string; raise :class:`AddressError` naming the accepted forms."""
    original = text
    text = text.strip()
    if not text:
        raise AddressError(f"empty address; accepted forms: {ACCEPTED_FORMS}")
    lower = text.lower()
    if lower.startswith("unix:"):
        path = text[5:]
        if not path:
            raise AddressError(f"unix address {original!r} has no path")
        return Address("unix", path=path)
    if text.startswith("/") or text.startswith("./"):
        return Address("unix", path=text)
    if lower.startswith("fd:"):
        try:
            fd = int(text[3:], 10)
        except ValueError:
            raise AddressError(f"bad file descriptor in {original!r}; use FD:n") from None
        if fd < 0:
            raise AddressError(f"bad file descriptor in {original!r}; use FD:n")
        return Address("fd", fd=fd)
    for prefix in ("ipv4:", "ip:"):
        if lower.startswith(prefix):
            rest = text[len(prefix) :]
            if rest.isdigit():  # IP:port -> all interfaces
                return Address("tcp", host="0.0.0.0", port=_port(rest, original))
            return _host_port(rest, original, default_port)
    return _host_port(text, original, default_port)
