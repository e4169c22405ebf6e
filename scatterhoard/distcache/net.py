"""Sockets for the distcache tools: connect and listen on any hoard address.

Addresses are parsed by :func:`scatterhoard.address.parse_address` (libnal
forms ``IP:host:port``, ``IPv4:``, ``IP:port``, ``UNIX:/path``, ``FD:n`` and
the modern ``host:port``, ``[::1]:port``, ``unix:/path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import socket
from collections.abc import Callable
from typing import TypeVar

from ..address import Address, parse_address
from ..errors import ConfigError, HoardError
from ..service import unlink_stale_socket

P = TypeVar("P", bound=asyncio.BaseProtocol)

#: Default TCP port of address strings without one (the libnal forms always carry one).
DEFAULT_PORT = 9001


def to_address(addr: str | Address) -> Address:
    return addr if isinstance(addr, Address) else parse_address(addr)


def _tcp_nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_blocking(addr: Address, timeout: float | None) -> socket.socket:
    """A connected blocking socket with ``timeout`` set (OSError on failure)."""
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
        sock = socket.socket(fileno=os.dup(addr.fd))
        sock.settimeout(timeout)
        return sock
    sock = socket.create_connection((addr.host, addr.port), timeout=timeout)
    _tcp_nodelay(sock)
    return sock


async def connect_async(factory: Callable[[], P], addr: Address) -> tuple[asyncio.Transport, P]:
    """Open a connection to ``addr`` with an asyncio protocol (OSError on failure)."""
    loop = asyncio.get_running_loop()
    if addr.kind == "unix":
        transport, proto = await loop.create_unix_connection(factory, addr.path)
    elif addr.kind == "fd":
        sock = socket.socket(fileno=os.dup(addr.fd))
        sock.setblocking(False)
        if sock.family == socket.AF_UNIX:
            transport, proto = await loop.create_unix_connection(factory, sock=sock)
        else:
            transport, proto = await loop.create_connection(factory, sock=sock)
    else:
        transport, proto = await loop.create_connection(factory, addr.host, addr.port)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _tcp_nodelay(sock)
    return transport, proto


def listen_socket(addr: Address, backlog: int = 512, *, owner: str | None = None, group: str | None = None,
                  perms: str | None = None) -> socket.socket:
    """A bound, listening socket (unix sockets: stale file unlinked, ownership/permissions applied).

    Binding happens before any fork or privilege drop, as the original tools do.
    """
    if addr.kind == "fd":
        sock = socket.socket(fileno=addr.fd)
        sock.setblocking(False)
        return sock
    try:
        if addr.kind == "unix":
            unlink_stale_socket(addr.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(addr.path)
            apply_socket_file_options(addr.path, owner, group, perms)
        else:
            infos = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        raise HoardError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def apply_socket_file_options(path: str, owner: str | None, group: str | None, perms: str | None) -> None:
    """-sockowner / -sockgroup / -sockperms on a unix socket file."""
    if owner is not None or group is not None:
        uid = -1 if owner is None else _uid(owner)
        gid = -1 if group is None else _gid(group)
        os.chown(path, uid, gid)
    if perms is not None:
        try:
            mode = int(perms, 8)
        except ValueError:
            raise ConfigError(f"-sockperms: {perms!r} is not an octal mode such as 660") from None
        os.chmod(path, mode)


def _uid(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise ConfigError(f"no such user: {name!r}") from None


def _gid(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"no such group: {name!r}") from None


def drop_privileges(user: str) -> None:
    """-user: switch to ``user`` (its primary group and supplementary groups too)."""
    try:
        pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        raise ConfigError(f"-user: no such user: {user!r}") from None
    if os.getuid() == pw.pw_uid:
        return
    try:
        os.setgroups([])
        os.initgroups(pw.pw_name, pw.pw_gid)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except OSError as exc:
        raise HoardError(f"-user {user}: cannot change user: {exc.strerror or exc}") from None


async def serve_socket(sock: socket.socket, factory: Callable[[], asyncio.BaseProtocol]) -> asyncio.AbstractServer:
    """Start accepting on a socket made by :func:`listen_socket`."""
    loop = asyncio.get_running_loop()
    if sock.family == socket.AF_UNIX:
        return await loop.create_unix_server(factory, sock=sock)
    return await loop.create_server(factory, sock=sock)
