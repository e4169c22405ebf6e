"""Command lines of the distcache tools: dc_server, dc_client, dc_test, dc_snoop.

Each exists as a console script with the original single-dash flags
(``dc_server -listen IP:9001 -sessions 4096``) and as a ``hoard``
subcommand (``hoard dcserver``, ``hoard client``, ``hoard dctest``,
``hoard dcsnoop``) taking the same flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence

from ..address import ACCEPTED_FORMS, Address, parse_address
from ..errors import HoardError
from ..server.app import Server, install_event_loop_policy
from ..server.distcache import DistcacheCounters, DistcacheSession, SessionLimitStore
from ..server.stats import Settings
from ..store import MemoryStore
from .net import DEFAULT_PORT, drop_privileges, listen_socket

Runner = Callable[[argparse.Namespace], int]

#: Per-session memory the server budgets for (largest message plus bookkeeping).
SESSION_BYTES = 34 * 1024


def _address(text: str) -> Address:
    try:
        return parse_address(text, default_port=DEFAULT_PORT)
    except HoardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        n = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return n


def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if x < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return x


# --------------------------------------------------------------------------
# Shared daemon options and start-up
# --------------------------------------------------------------------------


def _daemon_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-daemon", action="store_true",
                   help=f"detach into the background once {what} is listening")
    p.add_argument("-pidfile", metavar="FILE", help="write the process id to FILE")
    p.add_argument("-user", metavar="USER", help="switch to USER once the listening socket exists")
    p.add_argument("-sockowner", metavar="USER", help="owner of the unix socket file")
    p.add_argument("-sockgroup", metavar="GROUP", help="group of the unix socket file")
    p.add_argument("-sockperms", metavar="MODE", help="octal permissions of the unix socket file, e.g. 660")
    p.add_argument("-killable", action="store_true",
                   help="exit cleanly on SIGUSR1 (ignored otherwise); SIGTERM/SIGINT always stop it")
    p.add_argument("-v", dest="verbose", action="count", default=0, help="log more (-v: connections)")


def _daemonize() -> Callable[[], None]:
    """Detach: fork twice, new session, stdio to /dev/null.

    The original process exits once the daemon calls the returned function
    (pid file written), with status 1 if the daemon died before that.
    """
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        os._exit(0 if os.read(r, 1) else 1)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)

    def ready() -> None:
        os.write(w, b"1")
        os.close(w)

    return ready


def _prepare(args: argparse.Namespace, name: str) -> tuple[socket.socket, Callable[[], None]]:
    """Bind (before any privilege drop or fork), drop privileges, detach, write the pid file.

    Returns the listening socket and a clean-up function.
    """
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"%(asctime)s {name}[%(process)d] %(message)s")
    addr: Address = args.listen
    sock = listen_socket(addr, owner=args.sockowner, group=args.sockgroup, perms=args.sockperms)
    if args.user:
        drop_privileges(args.user)
    ready = _daemonize() if args.daemon else None
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    if ready is not None:
        ready()
    if not args.killable:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    pid = os.getpid()

    def cleanup() -> None:
        if os.getpid() != pid:
            return
        if addr.kind == "unix":
            with contextlib.suppress(OSError):
                os.unlink(addr.path)
        if args.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(args.pidfile)

    return sock, cleanup


def _on_usr1(args: argparse.Namespace, stop: Callable[[], None]) -> None:
    if args.killable:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stop)


# --------------------------------------------------------------------------
# dc_server
# --------------------------------------------------------------------------

SERVER_DESCRIPTION = f"""\
Run a distcache session cache server (the hoard server engine: the same
listener also answers memcached text/binary clients, over the same sessions).

addresses: {ACCEPTED_FORMS}

examples:
  dc_server -listen IP:9001
  dc_server -listen UNIX:/tmp/cacheserver -sessions 4096 -sockperms 660 -daemon -pidfile /run/dc.pid
"""


def server_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-listen", type=_address, required=True, metavar="ADDR", help="address to listen on")
    p.add_argument("-sessions", type=_positive, default=512, metavar="N",
                   help="session capacity; when full, the sessions nearest to expiry go first (default 512)")
    p.add_argument("-progress", type=_positive, default=0, metavar="N",
                   help="every N operations (at most once a second) print a progress line to stderr")
    _daemon_options(p, "the server")
    p.set_defaults(func=run_server)


def run_server(args: argparse.Namespace) -> int:
    if args.sessions < 1:
        raise HoardError("-sessions must be at least 1")
    sock, cleanup = _prepare(args, "dc_server")
    fd = sock.detach()  # the server's listener takes the descriptor over
    budget = max(64 * 1024 * 1024, args.sessions * SESSION_BYTES)
    store = SessionLimitStore(MemoryStore(budget), args.sessions)
    settings = Settings(listen=[f"FD:{fd}"], memory_mb=budget // (1024 * 1024),
                        verbosity=args.verbose)
    install_event_loop_policy()
    server = Server(settings, store)
    counters = DistcacheCounters()
    if args.progress:
        counters.on_op = _progress_printer(counters, store, args.progress)
    server.session_factories[0x00] = lambda srv: DistcacheSession(srv.store, srv.stats, srv.settings, counters)

    async def main() -> None:
        _on_usr1(args, server.stop)
        await server.serve()

    try:
        asyncio.run(main())
    finally:
        cleanup()
    return 0


def _progress_printer(counters: DistcacheCounters, store: SessionLimitStore, every: int) -> Callable[[], None]:
    state = {"next": every, "last": 0.0}

    def on_op() -> None:
        ops = counters.operations
        if ops < state["next"]:
            return
        now = time.monotonic()
        if now - state["last"] < 1.0:
            return
        state["last"] = now
        state["next"] = ops - ops % every + every
        print(f"Info, total operations = {ops:7d}, total sessions = {len(store):5d}", file=sys.stderr,
              flush=True)

    return on_op


# --------------------------------------------------------------------------
# dc_client
# --------------------------------------------------------------------------

CLIENT_DESCRIPTION = f"""\
Run the local client proxy: applications connect to -listen (usually a unix
socket), and their requests travel over ONE persistent connection to
-server.  distcache clients get DISCONNECTED while the server is
unreachable; memcached text/binary clients are multiplexed too.

addresses: {ACCEPTED_FORMS}

example:
  dc_client -listen UNIX:/tmp/scache -server IP:cacheserver:9001 -daemon -pidfile /run/dc_client.pid
"""


def client_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-listen", type=_address, default=_address("UNIX:/tmp/scache"), metavar="ADDR",
                   help="local address to listen on (default UNIX:/tmp/scache)")
    p.add_argument("-server", type=_address, required=True, metavar="ADDR", help="the cache server")
    p.add_argument("-retry", type=_positive, default=5000, metavar="MS",
                   help="wait between reconnection attempts while the server is down (default 5000)")
    p.add_argument("-idle", type=_positive, default=0, metavar="MS",
                   help="close local connections idle for this long (default 0: never)")
    _daemon_options(p, "the proxy")
    p.set_defaults(func=run_client)


def run_client(args: argparse.Namespace) -> int:
    from .proxy import Proxy

    sock, cleanup = _prepare(args, "dc_client")
    install_event_loop_policy()
    proxy = Proxy(args.server, retry_ms=args.retry, idle_ms=args.idle)

    async def main() -> None:
        _on_usr1(args, proxy.stop)
        await proxy.serve([sock])

    try:
        asyncio.run(main())
    finally:
        cleanup()
    return 0


# --------------------------------------------------------------------------
# dc_test
# --------------------------------------------------------------------------

TEST_DESCRIPTION = f"""\
Send a barrage of random ADD/GET/HAVE/REMOVE operations and check every
result against an expected model.  Prints "all tests complete" and exits 0,
or the first discrepancy and "K tests succeeded before the first failure"
and exits 1; then throughput and latency percentiles.

addresses: {ACCEPTED_FORMS}

example:
  dc_test -connect UNIX:/tmp/scache -sessions 200 -ops 50000 -persistent
"""


def test_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-connect", type=_address, required=True, metavar="ADDR", help="the cache to test")
    p.add_argument("-sessions", type=_positive, default=10, metavar="N", help="number of sessions (default 10)")
    p.add_argument("-datamin", type=_positive, default=50, metavar="B", help="smallest session (default 50)")
    p.add_argument("-datamax", type=_positive, default=2100, metavar="B", help="largest session (default 2100)")
    p.add_argument("-timeout", type=_seconds, default=60.0, metavar="S", help="session timeout (default 60)")
    p.add_argument("-timevar", type=_seconds, default=5.0, metavar="S",
                   help="random variation of the timeout, +- (default 5)")
    p.add_argument("-ops", type=_positive, default=None, metavar="N",
                   help="number of operations (default 10 * sessions^2)")
    p.add_argument("-persistent", action="store_true", help="one connection for all operations "
                   "(default: a new connection per operation)")
    p.add_argument("-progress", type=_positive, default=0, metavar="N",
                   help="print a line every N operations")
    p.add_argument("-seed", type=int, default=None, help="random seed, to repeat a run")
    p.set_defaults(func=run_test_cmd)


def run_test_cmd(args: argparse.Namespace) -> int:
    from .tester import TestConfig, report, run_test

    cfg = TestConfig(connect=args.connect, sessions=args.sessions, datamin=args.datamin, datamax=args.datamax,
                     timeout=args.timeout, timevar=args.timevar, ops=args.ops, persistent=args.persistent,
                     progress=args.progress, seed=args.seed)
    try:
        cfg.check()
    except ValueError as exc:
        raise HoardError(str(exc)) from None
    return report(run_test(cfg))


# --------------------------------------------------------------------------
# dc_snoop
# --------------------------------------------------------------------------

SNOOP_DESCRIPTION = f"""\
A transparent proxy between distcache clients and a server that prints every
message in both directions (uid, operation, lengths, result, frames, time
to the reply).  Bytes are forwarded unchanged.

addresses: {ACCEPTED_FORMS}

example:
  dc_snoop -listen UNIX:/tmp/snoop -server UNIX:/tmp/scache
"""


def snoop_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-listen", type=_address, required=True, metavar="ADDR", help="address to listen on")
    p.add_argument("-server", "-connect", dest="server", type=_address, required=True, metavar="ADDR",
                   help="where to forward to")
    p.set_defaults(func=run_snoop, daemon=False, pidfile=None, user=None, sockowner=None, sockgroup=None,
                   sockperms=None, killable=True, verbose=0)


def run_snoop(args: argparse.Namespace) -> int:
    from ..tools.snoop_output import BackgroundOutput
    from .snoop import Snoop

    sock, cleanup = _prepare(args, "dc_snoop")
    install_event_loop_policy()
    out = BackgroundOutput(sys.stdout)  # a slow reader of the output never stalls the traffic
    snoop = Snoop(args.server, out)
    try:
        asyncio.run(snoop.serve([sock]))
    finally:
        cleanup()
        out.close()
    return 0


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------

_TOOLS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str, str]] = {
    "dc_server": (server_parser, SERVER_DESCRIPTION, "distcache session cache server"),
    "dc_client": (client_parser, CLIENT_DESCRIPTION, "distcache local client proxy (multiplexer)"),
    "dc_test": (test_parser, TEST_DESCRIPTION, "distcache correctness test and benchmark"),
    "dc_snoop": (snoop_parser, SNOOP_DESCRIPTION, "distcache protocol snooping proxy"),
}
#: ``hoard`` subcommand names of the tools.
SUBCOMMANDS = {"dcserver": "dc_server", "client": "dc_client", "dctest": "dc_test", "dcsnoop": "dc_snoop"}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``hoard dcserver / client / dctest / dcsnoop``."""
    for command, tool in SUBCOMMANDS.items():
        build, description, summary = _TOOLS[tool]
        p = sub.add_parser(command, help=f"{summary} ({tool})", description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        build(p)


def _tool_main(tool: str, argv: Sequence[str] | None) -> int:
    build, description, _ = _TOOLS[tool]
    parser = argparse.ArgumentParser(prog=tool, description=description, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    build(parser)
    args = parser.parse_args(argv)
    runner: Runner = args.func
    try:
        return runner(args)
    except HoardError as exc:
        print(f"{tool}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head & co.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def dc_server_main(argv: Sequence[str] | None = None) -> int:
    return _tool_main("dc_server", argv)


def dc_client_main(argv: Sequence[str] | None = None) -> int:
    return _tool_main("dc_client", argv)


def dc_test_main(argv: Sequence[str] | None = None) -> int:
    return _tool_main("dc_test", argv)


def dc_snoop_main(argv: Sequence[str] | None = None) -> int:
    return _tool_main("dc_snoop", argv)
