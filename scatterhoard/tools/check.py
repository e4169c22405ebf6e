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
:func:`case`; the registry and the runner live in :mod:`.check_runner`, the
per-protocol connections the cases talk through (blocking sockets driving the
sans-IO codecs) and the context a case runs in in :mod:`.check_conn`; this
module probes the target and holds the command line, and re-exports the names
of both (cases import them from here).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

from ..address import Address, parse_address
from ..errors import AddressError
from ..protocol import binary as b
from ..protocol import distcache as dc
from ..protocol.resp import encode_command
from .check_conn import (
    BinConn,
    Block,
    CheckFailed,
    Conn,
    ConnT,
    Context,
    DcConn,
    RespConn,
    Settings,
    TextConn,
    TextItem,
    connect,
    describe_packet,
    eq,
    fmt,
    ok,
    result_name,
    show,
    status_name,
)
from .check_runner import (
    EXPIRY_WAIT,
    PROTOCOLS,
    REGISTRY,
    Case,
    CaseFunc,
    CaseResult,
    Outcome,
    Runner,
    all_cases,
    case,
    select_cases,
)

__all__ = [
    "DEFAULT_PORT", "DESCRIPTION", "EXPIRY_WAIT", "MEMCACHED_PROTOCOLS", "PROTOCOLS", "REGISTRY",
    "BinConn", "Block", "Case", "CaseFunc", "CaseResult", "CheckFailed", "Conn", "ConnT", "Context", "DcConn",
    "Outcome", "RespConn", "Runner", "Settings", "TextConn", "TextItem",
    "add_parser", "all_cases", "case", "connect", "describe_packet", "eq", "fmt", "ok", "probe", "result_name",
    "run", "select_cases", "show", "status_name",
]

MEMCACHED_PROTOCOLS = ("ascii", "meta", "binary")
DEFAULT_PORT = 11211


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
