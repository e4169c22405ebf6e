"""nutcracker's YAML configuration: pools, their keys, twemproxy's defaults and rules.

A configuration is one YAML document mapping pool names to pools::

    alpha:
      listen: 127.0.0.1:22121
      hash: fnv1a_64
      distribution: ketama
      auto_eject_hosts: true
      servers:
       - 127.0.0.1:11211:1
       - 127.0.0.1:11212:1 cache-b

Every key twemproxy 0.5.0 accepts is accepted here, with its default (see
:class:`PoolConfig`), and read the way twemproxy reads it: scalars are taken
as written (not as YAML 1.1 types), so booleans are exactly ``true`` or
``false`` (``yes``/``on``/``True`` are errors, as in twemproxy) and numbers are
plain decimal digits.  Anchors, aliases, tags, flow collections and document
markers are rejected, as twemproxy rejects them, so a file passes ``-t`` here
when and only when it passes nutcracker's ``-t`` (plus the errors twemproxy
misses: a ``redis_auth`` without ``redis: true`` is one in both).

Unlike nutcracker, which only says "syntax is invalid", every error names the
file, line, pool and key: ``conf.yml:7: pool 'alpha': key 'hash': 'fnv2' is not
a valid hash (one of ...)``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import ConfigError
from ..routing import DISTRIBUTIONS, HASH_NAMES, Router, ServerSpec

__all__ = [
    "BOOL_KEYS",
    "DEFAULTS",
    "NUM_KEYS",
    "POOL_KEYS",
    "Listen",
    "PoolConfig",
    "ProxyConfig",
    "load_config",
    "check_resolvable",
    "parse_config",
    "parse_listen",
]

#: twemproxy's defaults (``CONF_DEFAULT_*`` in ``nc_conf.h``); timeout -1 waits forever.
DEFAULTS: dict[str, Any] = {
    "hash": "fnv1a_64",
    "hash_tag": None,
    "distribution": "ketama",
    "timeout": -1,
    "backlog": 512,
    "client_connections": 0,
    "redis": False,
    "tcpkeepalive": False,
    "reuseport": False,
    "redis_auth": None,
    "redis_db": 0,
    "preconnect": False,
    "auto_eject_hosts": False,
    "server_connections": 1,
    "server_retry_timeout": 30_000,
    "server_failure_limit": 2,
}
BOOL_KEYS = frozenset({"redis", "tcpkeepalive", "reuseport", "preconnect", "auto_eject_hosts"})
NUM_KEYS = frozenset({"timeout", "backlog", "client_connections", "redis_db", "server_connections",
                      "server_retry_timeout", "server_failure_limit"})
STRING_KEYS = frozenset({"hash", "hash_tag", "distribution", "redis_auth"})
POOL_KEYS = ("listen", *DEFAULTS, "servers")
_INT_MAX = (1 << 31) - 1

# YAML tokens twemproxy's conf_validate_tokens() refuses, with what to call them.
_FORBIDDEN_TOKENS: dict[type, str] = {
    yaml.DirectiveToken: "a directive",
    yaml.DocumentStartToken: "a document start marker (---)",
    yaml.DocumentEndToken: "a document end marker (...)",
    yaml.FlowSequenceStartToken: "a flow sequence ([...])",
    yaml.FlowMappingStartToken: "a flow mapping ({...})",
    yaml.AliasToken: "an alias (*name)",
    yaml.AnchorToken: "an anchor (&name)",
    yaml.TagToken: "a tag (!tag)",
}


@dataclass(frozen=True, slots=True)
class Listen:
    """A pool's ``listen:`` address: ``host:port``, or ``/path/to.sock [octal perms]``."""

    text: str  # as written (what duplicates are compared on, as twemproxy does)
    host: str = ""
    port: int = 0
    path: str = ""
    perm: int | None = None

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One pool, every key with twemproxy's default when absent (times in milliseconds)."""

    name: str
    listen: Listen
    servers: tuple[ServerSpec, ...]
    hash: str = "fnv1a_64"
    hash_tag: str | None = None
    distribution: str = "ketama"
    timeout: int = -1
    backlog: int = 512
    client_connections: int = 0
    redis: bool = False
    tcpkeepalive: bool = False
    reuseport: bool = False
    redis_auth: str | None = None
    redis_db: int = 0
    preconnect: bool = False
    auto_eject_hosts: bool = False
    server_connections: int = 1
    server_retry_timeout: int = 30_000
    server_failure_limit: int = 2
    line: int = 0  # where the pool starts in the file (for messages)
    listen_line: int = 0
    server_lines: tuple[int, ...] = ()

    def router(self) -> Router:
        """A :class:`Router` with this pool's servers, hash, distribution and hash tag."""
        return Router(self.servers, hash=self.hash, distribution=self.distribution, hash_tag=self.hash_tag)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Every pool of a configuration file, in file order."""

    pools: tuple[PoolConfig, ...]
    path: str = "<string>"

    def pool(self, name: str) -> PoolConfig:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)


# -- scalar readers (twemproxy's conf_set_* rules) ------------------------------------------------


def _read_num(text: str) -> int:
    """``nc_atoi``: decimal digits only (no sign, no spaces)."""
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError("is not a number (plain decimal digits expected)")
    value = int(text)
    if value > _INT_MAX:
        raise ValueError(f"is too large (at most {_INT_MAX})")
    return value


def _read_bool(text: str) -> bool:
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError('is not "true" or "false"')


def parse_listen(text: str) -> Listen:
    """``listen:``: ``host:port`` (``[v6]:port`` too) or ``/path [perms]`` (octal, <= 0777)."""
    if not text:
        raise ValueError('is empty; expected "host:port" or "/path/to/socket [permissions]"')
    if text.startswith("/"):
        path, sep, perm_text = text.rpartition(" ")
        if not sep:
            return Listen(text, path=text)
        # strtol(perm, NULL, 8) as twemproxy: leading octal digits (after a sign); the rest is ignored
        body = perm_text.lstrip()
        sign = -1 if body[:1] == "-" else 1
        body = body[1:] if body[:1] in "+-" else body
        digits = body[:len(body) - len(body.lstrip("01234567"))]
        perm = sign * int(digits or "0", 8)
        if not 0 <= perm <= 0o777:
            raise ValueError(f'has an invalid file permission {perm_text!r} in "socket_path permission" '
                             "(octal, at most 0777)")
        path = path.rstrip(" ")
        if not path:
            raise ValueError("has an empty socket path")
        return Listen(text, path=path, perm=perm)
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError('has an invalid "hostname:port" format string')
    try:
        port = _read_num(port_text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ValueError(f'has an invalid port {port_text!r} in "hostname:port"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Listen(text, host=host or "0.0.0.0", port=port)


# -- the document ---------------------------------------------------------------------------------


class _Where:
    """Builds one-line messages: ``file:line: pool 'p': key 'k': reason``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, node: yaml.Node | None, reason: str, pool: str | None = None,
              key: str | None = None) -> ConfigError:
        where = self.path if node is None else f"{self.path}:{node.start_mark.line + 1}"
        parts = [where]
        if pool is not None:
            parts.append(f"pool '{pool}'")
        if key is not None:
            parts.append(f"key '{key}'")
        return ConfigError(": ".join([*parts, reason]))


def _check_tokens(text: str, where: _Where) -> None:
    try:
        for token in yaml.scan(text):
            what = _FORBIDDEN_TOKENS.get(type(token))
            if what is not None:
                line = token.start_mark.line + 1
                raise ConfigError(f"{where.path}:{line}: {what} is not allowed in a nutcracker configuration")
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, where) from None


def _yaml_error(exc: yaml.MarkedYAMLError, where: _Where) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = exc.problem or exc.context or "invalid YAML"
    return ConfigError(f"{where.path}{line}: YAML syntax error: {problem}")


def parse_config(text: str, path: str = "<string>") -> ProxyConfig:
    """Parse and validate a nutcracker configuration; raise :class:`ConfigError` on the first problem."""
    where = _Where(path)
    _check_tokens(text, where)
    try:
        docs = [d for d in yaml.compose_all(text) if d is not None]
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, where) from None
    if not docs:
        raise ConfigError(f"{path}: has no pools")
    if len(docs) > 1:
        raise ConfigError(f"{path}: must contain only 1 document; found {len(docs)} documents")
    root = docs[0]
    if not isinstance(root, yaml.MappingNode):
        raise where.error(root, "the top level must map pool names to pools")
    pools: list[PoolConfig] = []
    seen: dict[str, int] = {}
    for key_node, value_node in root.value:
        if not isinstance(key_node, yaml.ScalarNode) or not key_node.value:
            raise where.error(key_node, "a pool name must be a non-empty string")
        name = key_node.value
        if name in seen:
            raise where.error(key_node, f"duplicate pool name (first defined on line {seen[name]})", name)
        seen[name] = key_node.start_mark.line + 1
        pools.append(_parse_pool(name, key_node, value_node, where))
    if not pools:
        raise ConfigError(f"{path}: has no pools")
    listens: dict[str, PoolConfig] = {}
    for pool in pools:
        other = listens.get(pool.listen.text)
        if other is not None:
            raise ConfigError(f"{path}:{pool.listen_line}: pool '{pool.name}': key 'listen': address "
                              f"'{pool.listen.text}' is already used by pool '{other.name}' (line {other.line})")
        listens[pool.listen.text] = pool
    return ProxyConfig(tuple(pools), path)


def _parse_pool(name: str, key_node: yaml.Node, node: yaml.Node, where: _Where) -> PoolConfig:
    if not isinstance(node, yaml.MappingNode):
        raise where.error(node, "must be a mapping of pool keys (listen, servers, ...)", name)
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    listen: Listen | None = None
    servers: list[ServerSpec] = []
    server_lines: list[int] = []
    for k_node, v_node in node.value:
        if not isinstance(k_node, yaml.ScalarNode):
            raise where.error(k_node, "a pool key must be a plain string", name)
        key = k_node.value
        if key not in POOL_KEYS:
            raise where.error(k_node, f"unknown key (known keys: {', '.join(POOL_KEYS)})", name, key)
        if key in lines:
            raise where.error(k_node, f"is a duplicate (first set on line {lines[key]})", name, key)
        lines[key] = k_node.start_mark.line + 1
        if key == "servers":
            servers, server_lines = _parse_servers(name, v_node, where)
            continue
        if not isinstance(v_node, yaml.ScalarNode):
            raise where.error(v_node, "must be a single value, not a list or mapping", name, key)
        text = v_node.value
        try:
            if key == "listen":
                listen = parse_listen(text)
            elif key in BOOL_KEYS:
                values[key] = _read_bool(text)
            elif key in NUM_KEYS:
                values[key] = _read_num(text)
            elif key == "hash":
                if text not in HASH_NAMES:
                    raise ValueError(f"{text!r} is not a valid hash (one of: {', '.join(HASH_NAMES)})")
                values[key] = text
            elif key == "distribution":
                if text not in DISTRIBUTIONS:
                    raise ValueError(f"{text!r} is not a valid distribution (one of: {', '.join(DISTRIBUTIONS)})")
                values[key] = text
            elif key == "hash_tag":
                if len(text) != 2:
                    raise ValueError(f"{text!r} is not a valid hash tag string with two characters")
                values[key] = text
            else:  # redis_auth
                values[key] = text
        except ValueError as exc:
            raise where.error(v_node, str(exc), name, key) from None
    pool_line = key_node.start_mark.line + 1
    if listen is None:
        raise where.error(key_node, 'key "listen" is missing', name)
    if not servers:
        raise where.error(key_node, "has no servers", name)
    if values.get("server_connections") == 0:
        raise ConfigError(f"{where.path}:{lines['server_connections']}: pool '{name}': "
                          "key 'server_connections': cannot be 0")
    if values.get("redis_auth") is not None and not values.get("redis", False):
        raise ConfigError(f"{where.path}:{lines['redis_auth']}: pool '{name}': key 'redis_auth': "
                          "is only valid for a redis pool (redis: true)")
    pool = PoolConfig(name=name, listen=listen, servers=tuple(servers), line=pool_line, listen_line=lines["listen"],
                      server_lines=tuple(server_lines), **values)
    try:
        pool.router()  # duplicate names, ketama label limits
    except ConfigError as exc:
        raise ConfigError(f"{where.path}:{lines['servers']}: pool '{name}': key 'servers': {exc}") from None
    return pool


def _parse_servers(pool: str, node: yaml.Node, where: _Where) -> tuple[list[ServerSpec], list[int]]:
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
        return [], []
    if not isinstance(node, yaml.SequenceNode):
        raise where.error(node, 'must be a list of "host:port:weight [name]" entries', pool, "servers")
    specs: list[ServerSpec] = []
    lines: list[int] = []
    names: dict[str, int] = {}
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode):
            raise where.error(item, "each server must be a single string", pool, "servers")
        try:
            spec = ServerSpec.parse(item.value)
        except ConfigError as exc:
            raise where.error(item, str(exc), pool, "servers") from None
        line = item.start_mark.line + 1
        first = names.get(spec.ident)
        if first is not None:
            raise where.error(item, f"server name {spec.ident!r} is a duplicate (first on line {first})",
                              pool, "servers")
        names[spec.ident] = line
        specs.append(spec)
        lines.append(line)
    return specs, lines


def load_config(path: str) -> ProxyConfig:
    """Read and validate a configuration file."""
    return load_config_text(path)[0]


def load_config_text(path: str) -> tuple[ProxyConfig, str]:
    """:func:`load_config`, and the text it was parsed from."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot open configuration '{path}': {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    return parse_config(text, path), text


def check_resolvable(config: ProxyConfig) -> None:
    """Resolve every TCP listen host (twemproxy does this while parsing)."""
    for pool in config.pools:
        if pool.listen.is_unix:
            continue
        try:
            socket.getaddrinfo(pool.listen.host, pool.listen.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"{config.path}:{pool.listen_line}: pool '{pool.name}': key 'listen': cannot resolve "
                              f"{pool.listen.host!r}: {getattr(exc, 'strerror', None) or exc}") from None
