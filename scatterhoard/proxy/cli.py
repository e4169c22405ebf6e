"""``hoard proxy`` (also installed as ``hoard-proxy``): nutcracker's command line.

Every nutcracker 0.5.0 flag, with its meaning and default::

    hoard proxy [-?hVdDt] [-v verbosity level] [-o output file]
                [-c conf file] [-s stats port] [-a stats addr]
                [-i stats interval] [-p pid file] [-m mbuf size]

Like nutcracker, ``-h``/``-V``/``-D`` and ``-t``'s verdict go to stderr, a bad
option prints the usage and exits 1, ``-t`` exits 0 or 1 -- but says which
file, line, pool and key is wrong.  ``-d`` double-forks, starts a session and
points stdio at /dev/null (no chdir, as nutcracker); the listeners are bound
before, so errors reach the terminal and the proxy accepts connections as
soon as ``hoard proxy -d`` returns.  ``-p`` writes the pid file (removed at
exit); ``-o`` logs to a file that SIGHUP reopens (for logrotate); SIGTTIN and
SIGTTOU raise and lower the verbosity.  ``-m`` is validated like nutcracker's
mbuf size (512 bytes to 16 MB) but reads are not chunked by it.

Beyond nutcracker: SIGUSR1 reloads the configuration (:mod:`.reload`);
``hoard proxy reload -p PIDFILE [-c CONF]`` validates CONF and sends it;
``--workers N`` serves from N supervised processes (:mod:`.workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from .. import __version__
from ..errors import ConfigError, HoardError
from .app import Proxy, ProxyOptions
from .config import check_resolvable, load_config, load_config_text
from .reload import validate
from .stats import describe
from .workers import Supervisor

DEFAULT_CONF = "conf/nutcracker.yml"
LOG_DEFAULT, LOG_MIN, LOG_MAX = 5, 0, 11
MBUF_MIN, MBUF_MAX = 512, 16 * 1024 * 1024
NOTICE = 25
PROG = "hoard proxy"

VERSION_LINE = f"This is hoard proxy (scatterhoard {__version__}), a nutcracker-0.5.0 compatible proxy"
USAGE = f"""\
Usage: {PROG} [-?hVdDt] [-v verbosity level] [-o output file]
                   [-c conf file] [-s stats port] [-a stats addr]
                   [-i stats interval] [-p pid file] [-m mbuf size]
                   [--workers N]
       {PROG} reload -p pid file [-c conf file]

Options:
  -h, --help             : this help
  -V, --version          : show version and exit
  -t, --test-conf        : test configuration for syntax errors and exit
  -d, --daemonize        : run as a daemon
  -D, --describe-stats   : print stats description and exit
  -v, --verbose=N        : set logging level (default: {LOG_DEFAULT}, min: {LOG_MIN}, max: {LOG_MAX})
  -o, --output=S         : set logging file (default: stderr)
  -c, --conf-file=S      : set configuration file (default: {DEFAULT_CONF})
  -s, --stats-port=N     : set stats monitoring port (default: 22222)
  -a, --stats-addr=S     : set stats monitoring ip (default: 0.0.0.0)
  -i, --stats-interval=N : set stats aggregation interval in msec (default: 30000 msec)
  -p, --pid-file=S       : set pid file (default: off)
  -m, --mbuf-size=N      : set size of mbuf chunk in bytes (default: 16384 bytes)
      --workers=N        : serve from N processes sharing the listeners (SO_REUSEPORT), supervised
                           by this one: a dead worker is restarted, signals are forwarded, the stats
                           port sums every worker's counters (default: 1, no worker processes)

Reload: SIGUSR1 makes the proxy re-read its conf file: new, changed and removed pools
and servers take effect, clients stay connected, requests in flight finish; a file
that is invalid (or a listen address that cannot be bound) is rejected with one
logged line and the running configuration keeps serving.  `{PROG} reload -p FILE`
sends that signal to the proxy whose pid is in FILE (the proxy's own -p); with -c it
first validates that file and does not signal if it is invalid.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("command", nargs="?", default=None)
    p.add_argument("-h", "-?", "--help", action="store_true", dest="show_help")
    p.add_argument("-V", "--version", action="store_true", dest="show_version")
    p.add_argument("-t", "--test-conf", action="store_true", dest="test_conf")
    p.add_argument("-d", "--daemonize", action="store_true")
    p.add_argument("-D", "--describe-stats", action="store_true", dest="describe_stats")
    p.add_argument("-v", "--verbose", "--verbosity", dest="verbosity", default=str(LOG_DEFAULT))
    p.add_argument("-o", "--output", default=None)
    p.add_argument("-c", "--conf-file", dest="conf_file", default=None)
    p.add_argument("-s", "--stats-port", dest="stats_port", default="22222")
    p.add_argument("-a", "--stats-addr", dest="stats_addr", default="0.0.0.0")
    p.add_argument("-i", "--stats-interval", dest="stats_interval", default="30000")
    p.add_argument("-p", "--pid-file", dest="pid_file", default=None)
    p.add_argument("-m", "--mbuf-size", dest="mbuf_size", default="16384")
    p.add_argument("--workers", dest="workers", default="1")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("proxy", add_help=False, usage=argparse.SUPPRESS,
                       help="run a twemproxy (nutcracker) compatible sharding proxy",
                       description="A twemproxy-compatible sharding proxy: " + USAGE)
    add_arguments(p)
    p.set_defaults(func=run)


class OptionError(Exception):
    pass


def _atoi(text: str) -> int:
    return int(text) if text.isascii() and text.isdigit() else -1


def options_from_args(args: argparse.Namespace) -> tuple[int, ProxyOptions]:
    """(verbosity, options) with nutcracker's checks and messages."""
    verbosity = _atoi(args.verbosity)
    if verbosity < 0:
        raise OptionError("option -v requires a number")
    port = _atoi(args.stats_port)
    if port < 0:
        raise OptionError("option -s requires a number")
    if not 1 <= port <= 65535:
        raise OptionError(f"option -s value {port} is not a valid port")
    interval = _atoi(args.stats_interval)
    if interval < 0:
        raise OptionError("option -i requires a number")
    mbuf = _atoi(args.mbuf_size)
    if mbuf <= 0:
        raise OptionError("option -m requires a non-zero number")
    if not MBUF_MIN <= mbuf <= MBUF_MAX:
        raise OptionError(f"mbuf chunk size must be between {MBUF_MIN} and {MBUF_MAX} bytes")
    return verbosity, ProxyOptions(stats_port=port, stats_addr=args.stats_addr, stats_interval=interval,
                                   mbuf_size=mbuf)


# -- logging ------------------------------------------------------------------------------------------


def level_for(verbosity: int) -> int:
    """nutcracker's log levels (0 emerg .. 5 notice .. 11 pverb) as logging levels."""
    if verbosity <= 2:
        return logging.CRITICAL
    return {3: logging.ERROR, 4: logging.WARNING, 5: NOTICE, 6: logging.INFO}.get(verbosity, logging.DEBUG)


class ReopenableFileHandler(logging.StreamHandler[TextIO]):
    """Appends to a file; :meth:`reopen` (SIGHUP) starts writing to a fresh file at the same path."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(self._open())

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="replace")

    def reopen(self) -> None:
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            old.close()
        finally:
            self.release()

    def close(self) -> None:
        self.acquire()
        try:
            self.stream.close()
        finally:
            self.release()
        super().close()


class LogControl:
    """The proxy's logging: level from -v, destination from -o, signals to change both."""

    def __init__(self, verbosity: int, output: str | None, tag: str = "") -> None:
        logging.addLevelName(NOTICE, "NOTICE")
        self.verbosity = verbosity
        self.handler: logging.Handler = ReopenableFileHandler(output) if output else logging.StreamHandler()
        self.handler.setFormatter(logging.Formatter(
            "[%(asctime)s.%(msecs)03d] %(levelname)s " + tag.replace("%", "%%") + "%(message)s",
            "%Y-%m-%d %H:%M:%S"))
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(self.handler)
        root.setLevel(level_for(verbosity))

    def reopen(self) -> None:
        if isinstance(self.handler, ReopenableFileHandler):
            self.handler.reopen()
            logging.getLogger("scatterhoard.proxy").log(NOTICE, "reopened log file %s", self.handler.path)

    def change(self, step: int) -> None:
        self.verbosity = max(LOG_MIN, min(LOG_MAX, self.verbosity + step))
        logging.getLogger().setLevel(level_for(self.verbosity))
        logging.getLogger("scatterhoard.proxy").log(NOTICE, "log level %s to %d",
                                                    "up" if step > 0 else "down", self.verbosity)


# -- process ------------------------------------------------------------------------------------------


def daemonize() -> None:
    """nutcracker's nc_daemonize(): fork, setsid, fork, umask 0, stdio to /dev/null (no chdir)."""
    if os.fork():
        os._exit(0)
    os.setsid()
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.fork():
        os._exit(0)
    signal.signal(signal.SIGHUP, old)
    os.umask(0)
    fd = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(fd, std)
    if fd > 2:
        os.close(fd)


def write_pid_file(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))


def remove_pid_file(path: str) -> None:
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError:
        pass


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    try:
        verbosity, options = options_from_args(args)
    except OptionError as exc:
        _say(f"{PROG}: {exc}")
        _say(USAGE)
        return 1
    if args.show_help or args.show_version or args.describe_stats:
        _say(VERSION_LINE + "\n")
        if args.show_help:
            _say(USAGE)
        if args.describe_stats:
            sys.stderr.write(describe())
        return 0
    if args.command is not None:
        if args.command == "reload":
            return reload_command(args)
        _say(f"{PROG}: unknown command '{args.command}' (the only one is 'reload')")
        _say(USAGE)
        return 1
    workers = _atoi(args.workers)
    if workers < 1:
        _say(f"{PROG}: option --workers requires a number of at least 1")
        _say(USAGE)
        return 1
    path = args.conf_file or DEFAULT_CONF
    if args.test_conf:
        try:
            check_resolvable(load_config(path))
        except ConfigError as exc:
            _say(f"{PROG}: configuration file '{path}' syntax is invalid: {exc}")
            return 1
        _say(f"{PROG}: configuration file '{path}' syntax is ok")
        return 0
    try:
        config, text = load_config_text(path)
        proxy: Proxy | Supervisor = (Proxy(config, options) if workers == 1
                                     else Supervisor(config, options, workers, verbosity, args.output, text))
    except ConfigError as exc:
        _say(f"{PROG}: {exc}")
        return 1
    try:
        logs = LogControl(verbosity, args.output)
    except OSError as exc:
        _say(f"{PROG}: cannot open log file '{args.output}': {exc.strerror or exc}")
        return 1
    log = logging.getLogger("scatterhoard.proxy")
    try:
        proxy.bind()
    except HoardError as exc:
        log.error("%s", exc)
        if args.output:
            _say(f"{PROG}: {exc}")
        return 1
    if args.daemonize:
        daemonize()
    if args.pid_file:
        try:
            write_pid_file(args.pid_file)
        except OSError as exc:
            log.error("opening pid file '%s' failed: %s", args.pid_file, exc.strerror or exc)
            proxy.close_sockets()
            return 1
    log.log(NOTICE, "hoard proxy (scatterhoard %s) started on pid %d", __version__, os.getpid())
    proxy.signal_handlers = {
        signal.SIGHUP: logs.reopen,
        signal.SIGTTIN: lambda: logs.change(+1),
        signal.SIGTTOU: lambda: logs.change(-1),
    }
    if workers == 1:  # a --workers parent only supervises: the default loop is enough
        from ..server.app import install_event_loop_policy

        install_event_loop_policy()
    try:
        asyncio.run(proxy.serve())
    except KeyboardInterrupt:
        pass
    finally:
        if args.pid_file:
            remove_pid_file(args.pid_file)
        log.log(NOTICE, "done, hoard proxy done")
    return 0


def reload_command(args: argparse.Namespace) -> int:
    """``hoard proxy reload -p PIDFILE [-c CONF]``: validate CONF (if given), then SIGUSR1 the proxy."""
    if not args.pid_file:
        _say(f"{PROG} reload: needs -p PIDFILE, the pid file the running proxy was started with (-p)")
        return 1
    try:
        with open(args.pid_file) as f:
            text = f.read().strip()
    except OSError as exc:
        _say(f"{PROG} reload: cannot read pid file '{args.pid_file}': {exc.strerror or exc}")
        return 1
    pid = _atoi(text)
    if pid <= 0:
        _say(f"{PROG} reload: pid file '{args.pid_file}' does not hold a pid ({text[:40]!r})")
        return 1
    if args.conf_file:
        try:
            validate(args.conf_file)
        except ConfigError as exc:
            _say(f"{PROG} reload: not reloading, configuration is invalid: {' '.join(str(exc).split())}")
            return 1
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        _say(f"{PROG} reload: no process {pid} (from '{args.pid_file}'): is the proxy running?")
        return 1
    except PermissionError:
        _say(f"{PROG} reload: not allowed to signal process {pid} (from '{args.pid_file}')")
        return 1
    _say(f"{PROG} reload: asked process {pid} to reload its configuration; the outcome is in its log")
    return 0


def build_parser(prog: str = "hoard-proxy") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, add_help=False, usage=argparse.SUPPRESS)
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``hoard-proxy``: the same command as ``hoard proxy``, for harnesses that want one executable."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
