"""Free TCP ports for tests, benchmarks and examples that start servers.

Asking the kernel for port 0 returns a port from the *ephemeral* range, the
same range it uses for the source port of every outgoing connection. Between
picking such a port and a child server binding it, any client connection on
the machine (a load generator opening 50 connections, a proxy connecting to
its backends) can take it, and the server fails with "Address already in use".
So ports are picked at random *below* the ephemeral range, where the kernel
never assigns source ports, and checked by binding them once.
"""

from __future__ import annotations

import random
import socket

_EPHEMERAL_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
_LOWEST = 10000
_handed_out: set[int] = set()
_random = random.SystemRandom()


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open(_EPHEMERAL_FILE) as f:
            low, high = (int(part) for part in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))  # no SO_REUSEADDR: also refuses ports held by TIME_WAIT connections
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different ports on ``host`` that nothing uses now and the kernel will not hand out itself."""
    low, high = _ephemeral_range()
    if low - _LOWEST >= 1000:
        span = (_LOWEST, low - 1)
    else:  # an unusual ephemeral range: use what lies above it, else fall back to the kernel's pick
        span = (high + 1, 65535) if 65535 - high >= 1000 else (0, 0)
    picked: list[int] = []
    for _ in range(50 * count + 200):
        if len(picked) == count:
            return picked
        port = _random.randint(*span) if span[1] else _kernel_port(host)
        if port in _handed_out or not _bindable(host, port):  # _handed_out holds the picked ones too
            continue
        picked.append(port)
        _handed_out.add(port)
    raise OSError(f"could not find {count} free TCP ports on {host}")


def free_port(host: str = "127.0.0.1") -> int:
    """One port on ``host`` that nothing uses now (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


def _kernel_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
