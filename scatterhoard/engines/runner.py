"""Run a server over your own engine with every ``hoard server`` flag: :func:`run_server`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import HoardError
from ..store.base import Store
from .handlers import Handler


def run_server(engine: Store, handlers: Sequence[Handler] = (), argv: Sequence[str] | None = None,
               prog: str | None = None) -> int:
    """Parse ``hoard server``'s flags (-l -p -m -I -c -b -t -v) from ``argv`` (default: the
    command line), serve ``engine`` behind ``handlers`` until SIGTERM/SIGINT; returns the exit
    status (a configuration error prints one line and returns 2)::

        if __name__ == "__main__":
            raise SystemExit(run_server(MyEngine()))
    """
    from ..server import cli

    parser = argparse.ArgumentParser(prog=prog, description=f"A memcached-compatible cache server over "
                                     f"{type(engine).__name__}: memcached text, meta and binary, RESP and "
                                     "distcache on every listener.")
    cli.add_arguments(parser, engine_flags=False)
    args = parser.parse_args(argv)
    try:
        return cli.run(args, engine, handlers)
    except HoardError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
