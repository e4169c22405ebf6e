"""``hoard server``: memcached-style command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..errors import ConfigError
from .app import Server, install_event_loop_policy
from .stats import Settings

DESCRIPTION = """\
Run a cache server that speaks the memcached text, meta and binary protocols
on every listener (the protocol is detected per connection). Flags follow
memcached where memcached has one.

examples:
  hoard server                          # 127.0.0.1:11211, 64 MB
  hoard server -l 0.0.0.0 -p 11311 -m 1024 -I 2m
  hoard server -l unix:/run/hoard.sock -l 127.0.0.1:11211
"""


def parse_size(text: str) -> int:
    """'1048576', '512k', '2m', '1g' -> bytes."""
    t = text.strip().lower()
    mult = 1
    if t and t[-1] in "kmg":
        mult = {"k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}[t[-1]]
        t = t[:-1]
    if not t.isdigit():
        raise ConfigError(f"bad size {text!r}: use a number of bytes, optionally with k, m or g")
    return int(t) * mult


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("server", help="run a memcached-compatible cache server",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-l", "--listen", action="append", metavar="ADDR",
                   help="address to listen on (repeatable; comma-separated lists too): host, host:port, "
                        "[v6]:port, unix:/path, or distcache forms IP:host:port, UNIX:/path, FD:n "
                        "(default 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=11211, help="TCP port for listen addresses without "
                   "one (default 11211)")
    p.add_argument("-m", "--memory-limit", type=int, default=64, metavar="MB",
                   help="memory budget for items in megabytes; LRU eviction beyond it (default 64)")
    p.add_argument("-I", "--max-item-size", default="1m", metavar="SIZE",
                   help="largest item (key + value + overhead), e.g. 1m, 512k (default 1m)")
    p.add_argument("-c", "--conn-limit", type=int, default=1024, metavar="N",
                   help="max simultaneous connections; more are refused with an error (default 1024)")
    p.add_argument("-b", "--listen-backlog", type=int, default=1024, metavar="N",
                   help="TCP listen backlog (default 1024)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log more (-v errors and warnings, -vv connections)")
    p.add_argument("-t", "--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("-U", "--udp-port", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    listen: list[str] = []
    for item in args.listen or ["127.0.0.1"]:
        listen.extend(x for x in item.split(",") if x)
    item_size = parse_size(args.max_item_size)
    if item_size < 1024:
        raise ConfigError("-I: the item size limit must be at least 1k")
    if args.memory_limit < 1:
        raise ConfigError("-m: the memory limit must be at least 1 (MB)")
    return Settings(listen=listen, port=args.port, memory_mb=args.memory_limit, item_size_max=item_size,
                    maxconns=args.conn_limit, verbosity=args.verbose, backlog=args.listen_backlog)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logging.basicConfig(level=logging.INFO if settings.verbosity else logging.WARNING,
                        format="%(asctime)s hoard[%(process)d] %(message)s")
    install_event_loop_policy()
    server = Server(settings)

    def ready(bound: list[str]) -> None:
        if settings.verbosity:
            print(f"hoard server listening on {', '.join(bound)}", file=sys.stderr)

    asyncio.run(server.serve(ready))
    return 0
