"""``hoard``: one command line for every scatterhoard tool."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__, _build
from .errors import HoardError

DESCRIPTION = """\
scatterhoard: a distributed cache toolkit. A memcached-compatible cache server
(text, meta, binary, RESP and distcache on one port, pluggable engines), a
twemproxy-compatible sharding proxy, the distcache tools, a TLS terminator that
shares sessions through the cache, and operator tools (bench, check, snoop),
all over one sans-IO protocol core.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hoard", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", "--version", action="version",
                        version=f"scatterhoard {__version__} ({_build.describe()})")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    from .server.cli import add_parser as add_server

    add_server(sub)
    from .proxy.cli import add_parser as add_proxy

    add_proxy(sub)
    from .distcache.cli import add_parsers

    add_parsers(sub)
    from .tools.cli import add_parsers as add_tools

    add_tools(sub)
    from .bench.cli import add_parser as add_bench

    add_bench(sub)
    from .tls.cli import add_parser as add_tls

    add_tls(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except HoardError as exc:
        print(f"hoard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
