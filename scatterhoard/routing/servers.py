"""Backend server descriptions as twemproxy (nutcracker) understands them.

A server in a twemproxy pool is written ``host:port:weight [name]`` (or
``/path/to/socket:weight [name]``).  Two things about it matter for routing:

* its **identity**, the string ketama hashes to place the server's points on
  the ring and that twemproxy sorts the pool by.  It is the node ``name`` when
  one is given; otherwise ``host:port`` exactly as written in the config, or
  just ``host`` when the port is 11211 (libmemcached compatibility).  For a
  unix socket without a name it is the path followed by a colon
  (``/tmp/mc.sock:``): twemproxy appends ``":" + port`` with an empty port.
* its **weight** (a positive integer).

twemproxy sorts a pool's servers by identity -- shorter identities first,
equal lengths in byte order (``string_compare()`` in ``nc_string.c``) -- when
it validates the config, so that order, not the config order, is the one that
modula's ``hash % total_weight`` walks and that ketama's ring indices refer
to.  :func:`twemproxy_order` computes it.  Duplicate identities are a config
error in twemproxy and here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["DEFAULT_KETAMA_PORT", "ServerSpec", "twemproxy_order"]

DEFAULT_KETAMA_PORT = 11211
"""The port that is left out of a server's identity (``CONF_DEFAULT_KETAMA_PORT``)."""


def _atoi(text: str) -> int:
    """``nc_atoi()``: decimal digits only, else -1."""
    if not text or not text.isascii() or not text.isdigit():
        return -1
    return int(text)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One backend of a pool: where it is, its weight and (optionally) its node name.

    ``host`` is a hostname/IP as written in the config, or a unix socket path
    starting with ``/`` (then ``port`` is 0).  ``name``, when set, replaces the
    address as the server's identity on the ketama ring and in the pool order,
    so a backend can move to another address without remapping its keys.
    """

    host: str
    port: int = DEFAULT_KETAMA_PORT
    weight: int = 1
    name: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("server host must not be empty")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or self.weight <= 0:
            raise ConfigError(f"server {self.host!r} has an invalid weight {self.weight!r} (must be >= 1)")
        if self.is_unix:
            if self.port != 0:
                raise ConfigError(f"unix socket server {self.host!r} cannot have a port")
        elif isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ConfigError(f"server {self.host!r} has an invalid port {self.port!r}")
        if self.name is not None and not self.name:
            raise ConfigError(f"server {self.host!r} has an empty name")

    @property
    def is_unix(self) -> bool:
        """True for a unix socket path."""
        return self.host.startswith("/")

    @property
    def ident(self) -> str:
        """The identity twemproxy hashes and sorts on (see the module docstring)."""
        if self.name is not None:
            return self.name
        if self.is_unix:
            return self.host + ":"
        if self.port == DEFAULT_KETAMA_PORT:
            return self.host
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> ServerSpec:
        """Parse a twemproxy ``servers:`` entry: ``host:port:weight [name]`` or ``/path:weight [name]``.

        Like ``conf_add_server()`` it splits from the end: the name after the
        last space, the weight after the last colon, then (for TCP) the port
        after the next colon; everything before is the host.  A port written
        with leading zeros keeps its spelling in the identity (twemproxy uses
        the config text), which is recorded by setting ``name`` to it.
        """
        if not isinstance(text, str) or not text:
            raise ConfigError(f"invalid server {text!r}")
        rest, sep, name = text.rpartition(" ")
        if not sep:
            rest, name = text, ""
        elif not name:
            raise ConfigError(f"server {text!r} has an empty name")
        rest, sep, weight_text = rest.rpartition(":")
        if not sep:
            raise ConfigError(f"server {text!r} is not 'host:port:weight [name]' or '/path:weight [name]'")
        weight = _atoi(weight_text)
        if weight <= 0:
            raise ConfigError(f"server {text!r} has an invalid or zero weight")
        if rest.startswith("/"):
            return cls(rest, 0, weight, name or None)
        host, sep, port_text = rest.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"server {text!r} is not 'host:port:weight [name]' or '/path:weight [name]'")
        port = _atoi(port_text)
        if not 1 <= port <= 65535:
            raise ConfigError(f"server {text!r} has an invalid port")
        if not name and port_text != str(port) and port != DEFAULT_KETAMA_PORT:
            name = f"{host}:{port_text}"
        return cls(host, port, weight, name or None)

    def __str__(self) -> str:
        """The twemproxy ``servers:`` form of this server."""
        address = f"{self.host}:{self.weight}" if self.is_unix else f"{self.host}:{self.port}:{self.weight}"
        return address if self.name is None else f"{address} {self.name}"


def twemproxy_order(servers: Sequence[ServerSpec]) -> list[int]:
    """Indices of ``servers`` in twemproxy's pool order: by identity length, then bytes.

    Raises :class:`ConfigError` for duplicate identities, as twemproxy does.
    """
    keyed = sorted((len(raw), raw, i) for i, raw in enumerate(s.ident.encode() for s in servers))
    for (_, a, i), (_, b, j) in zip(keyed, keyed[1:], strict=False):
        if a == b:
            raise ConfigError(
                f"servers {servers[i]} and {servers[j]} have the same name {a.decode(errors='replace')!r}"
            )
    return [i for _, _, i in keyed]
