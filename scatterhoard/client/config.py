"""Server lists for the client: address strings, and pools of a twemproxy (nutcracker) YAML file.

A server is written like a twemproxy ``servers:`` entry, with the weight
optional (1) and the distcache spellings accepted too:

* ``host``, ``host:port``, ``host:port:weight``, each optionally followed by
  `` name`` (the node name ketama hashes instead of the address)
* ``[v6addr]:port[:weight] [name]``
* ``unix:/path``, ``/path``, ``/path:weight [name]``
* distcache forms: ``IP:host:port``, ``IPv4:host:port``, ``UNIX:/path``

Several servers are a list, or one string with commas between them.
Routing identities follow twemproxy exactly (the host as written; the port
left out when it is 11211), so the same list routes keys like a nutcracker /
``hoard proxy`` pool with those servers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..address import Address, parse_address
from ..errors import AddressError, ConfigError
from ..routing import DEFAULT_KETAMA_PORT, ServerSpec

__all__ = ["PoolConfig", "Server", "is_yaml_path", "load_yaml_pool", "parse_server", "parse_servers"]


@dataclass(frozen=True, slots=True)
class Server:
    """Where one backend is (``address``), how it routes (``spec``), and its ``label`` in results."""

    spec: ServerSpec
    address: Address

    @property
    def label(self) -> str:
        return str(self.address)


def _weight(text: str, original: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise ConfigError(f"server {original!r} has an invalid weight {text!r} (must be >= 1)")
    return int(text)


def parse_server(text: str | ServerSpec | Server) -> Server:
    """One server from its string form (see the module docstring), a ServerSpec or a Server."""
    try:
        return _parse_server(text)
    except AddressError as exc:
        raise ConfigError(f"server {text!r}: {exc}") from None


def _parse_server(text: str | ServerSpec | Server) -> Server:
    if isinstance(text, Server):
        return text
    if isinstance(text, ServerSpec):
        if text.is_unix:
            return Server(text, Address("unix", path=text.host))
        return Server(text, parse_address(f"{text.host}:{text.port}"))
    if not isinstance(text, str):
        raise ConfigError(f"a server must be a string, not {type(text).__name__}")
    original = text
    text = text.strip()
    if not text:
        raise ConfigError("empty server address")
    body, sep, name = text.rpartition(" ")
    if sep:
        body = body.strip()
    else:
        body, name = text, ""
    lower = body.lower()
    if lower.startswith("unix:") or body.startswith("/"):
        path = body[5:] if lower.startswith("unix:") else body
        head, colon, tail = path.rpartition(":")
        weight = 1
        if colon and head and tail.isdigit():
            path, weight = head, _weight(tail, original)
        if not path.startswith("/"):
            raise ConfigError(f"unix socket server {original!r} needs an absolute path")
        return Server(ServerSpec(path, 0, weight, name or None), Address("unix", path=path))
    for prefix in ("ipv4:", "ip:"):
        if lower.startswith(prefix):
            body = body[len(prefix):]
            if body.isdigit():  # distcache's IP:port
                body = "127.0.0.1:" + body
            break
    if body.startswith("["):
        end = body.find("]")
        if end < 0:
            raise ConfigError(f"server {original!r}: unclosed '['")
        host, rest = body[1:end], body[end + 1:]
        parts = rest.split(":") if rest else ["", str(DEFAULT_KETAMA_PORT)]
        if parts[0] or len(parts) not in (2, 3):
            raise ConfigError(f"server {original!r} is not '[v6addr]:port[:weight] [name]'")
        address = parse_address(f"[{host}]:{parts[1]}")
        weight = _weight(parts[2], original) if len(parts) == 3 else 1
        return Server(ServerSpec(host, address.port, weight, name or None), address)
    parts = body.split(":")
    if len(parts) > 3:
        raise ConfigError(f"server {original!r}: write an IPv6 address as [addr]:port")
    host = parts[0]
    port_text = parts[1] if len(parts) > 1 else str(DEFAULT_KETAMA_PORT)
    weight_text = parts[2] if len(parts) > 2 else "1"
    if not host:
        raise ConfigError(f"server {original!r} has no host")
    address = parse_address(f"{host}:{port_text}")
    if address.kind != "tcp":
        raise ConfigError(f"server {original!r}: the client connects to host:port or unix:/path servers")
    _weight(weight_text, original)
    spec = ServerSpec.parse(f"{host}:{port_text}:{weight_text}" + (f" {name}" if name else ""))
    return Server(spec, address)


def parse_servers(servers: str | ServerSpec | Server | Sequence[str | ServerSpec | Server]) -> list[Server]:
    """A server list from one string (commas separate servers), or a sequence of them."""
    if isinstance(servers, (str, ServerSpec, Server)):
        items: Sequence[str | ServerSpec | Server] = (
            [s for s in servers.split(",") if s.strip()] if isinstance(servers, str) else [servers]
        )
    else:
        items = list(servers)
    if not items:
        raise ConfigError("no servers given")
    parsed = [parse_server(item) for item in items]
    labels = [s.label for s in parsed]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"a server is listed twice: {labels}")
    return parsed


# -- twemproxy YAML ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """The parts of a nutcracker pool the client uses, with nutcracker's defaults."""

    name: str
    servers: list[Server]
    hash: str = "fnv1a_64"
    distribution: str = "ketama"
    hash_tag: str | None = None
    timeout: int | None = None  # ms; nutcracker waits forever without one
    auto_eject_hosts: bool = False
    server_failure_limit: int = 2
    server_retry_timeout: int = 30000
    extra: dict[str, Any] = field(default_factory=dict)


def is_yaml_path(servers: object) -> bool:
    """True for a string naming an existing .yml/.yaml file."""
    return (isinstance(servers, (str, os.PathLike)) and str(servers).lower().endswith((".yml", ".yaml"))
            and os.path.isfile(servers))


def _int(conf: dict[str, Any], key: str, default: int | None, pool: str) -> int | None:
    value = conf.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"pool {pool!r}: {key} must be an integer, not {value!r}")
    return value


def load_yaml_pool(path: str | os.PathLike[str], pool: str | None = None) -> PoolConfig:
    """Read one pool of a twemproxy YAML config (the only pool when ``pool`` is None)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {os.fspath(path)!r}: {exc}") from None
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"{os.fspath(path)!r} is not a twemproxy config (a mapping of pools)")
    if pool is None:
        if len(doc) != 1:
            raise ConfigError(f"{os.fspath(path)!r} has pools {sorted(map(str, doc))}: pass pool=NAME")
        pool = str(next(iter(doc)))
    conf = doc.get(pool)
    if not isinstance(conf, dict):
        raise ConfigError(f"{os.fspath(path)!r} has no pool {pool!r} (pools: {sorted(map(str, doc))})")
    if conf.get("redis"):
        raise ConfigError(f"pool {pool!r} is a redis pool; the client speaks memcached")
    servers = conf.get("servers")
    if not isinstance(servers, list) or not servers or not all(isinstance(s, str) for s in servers):
        raise ConfigError(f"pool {pool!r} needs a list of servers")
    hash_tag = conf.get("hash_tag")
    failure_limit = _int(conf, "server_failure_limit", 2, pool)
    retry = _int(conf, "server_retry_timeout", 30000, pool)
    return PoolConfig(
        name=pool,
        servers=[parse_server(ServerSpec.parse(s.strip())) for s in servers],
        hash=str(conf.get("hash", "fnv1a_64")),
        distribution=str(conf.get("distribution", "ketama")),
        hash_tag=None if hash_tag is None else str(hash_tag),
        timeout=_int(conf, "timeout", None, pool),
        auto_eject_hosts=bool(conf.get("auto_eject_hosts", False)),
        server_failure_limit=2 if failure_limit is None else failure_limit,
        server_retry_timeout=30000 if retry is None else retry,
        extra={k: v for k, v in conf.items() if k not in {
            "servers", "hash", "distribution", "hash_tag", "timeout", "auto_eject_hosts",
            "server_failure_limit", "server_retry_timeout"}},
    )
