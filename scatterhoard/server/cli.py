"""``hoard server``: memcached-style command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from ..engines.handlers import Handler
from ..engines.loader import create_engine, create_handler, parse_options
from ..errors import ConfigError
from ..store import EngineConfig, Store
from .app import DEFAULT_WORKERS, Server, install_event_loop_policy
from .stats import Settings

DESCRIPTION = """\
Run a cache server that speaks the memcached text, meta and binary protocols
on every listener (the protocol is detected per connection). Flags follow
memcached where memcached has one.

examples:
  hoard server                          # 127.0.0.1:11211, 64 MB
  hoard server -l 0.0.0.0 -p 11311 -m 1024 -I 2m
  hoard server -l unix:/run/hoard.sock -l 127.0.0.1:11211
  hoard server --engine sqlite --engine-opt path=/var/cache/hoard.db --durable
  hoard server --engine tiered --engine-opt path=/var/cache/hoard.db --engine-opt front_mb=64
  hoard server --engine mypkg.engines:MyEngine --handler mypkg.audit:AuditHandler
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
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser, engine_flags: bool = True) -> None:
    """The flags of ``hoard server`` (without --engine/--handler for a fixed-engine server)."""
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
    p.add_argument("-t", "--threads", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help="worker threads for a blocking engine such as sqlite: how many slow engine calls "
                        f"may run at once (default {DEFAULT_WORKERS}; the memory engine uses none)")
    p.add_argument("-U", "--udp-port", type=int, default=0, help=argparse.SUPPRESS)
    if not engine_flags:
        return
    p.add_argument("--engine", default="memory", metavar="NAME_OR_PATH",
                   help="storage engine: memory (default), sqlite, tiered, an entry point of the "
                        "scatterhoard.engines group, or package.module:Class")
    p.add_argument("--engine-opt", action="append", metavar="K=V",
                   help="engine option (repeatable), e.g. path=/var/cache/hoard.db, max_mb=512")
    p.add_argument("--durable", action="store_true",
                   help="same as --engine-opt durable=1: acknowledge writes only once on disk (sqlite)")
    p.add_argument("--handler", action="append", metavar="NAME_OR_PATH",
                   help="a command handler in front of the engine (repeatable, first sees calls first): "
                        "an entry point of scatterhoard.handlers or package.module:Class")
    p.add_argument("--handler-opt", action="append", metavar="K=V",
                   help="option given to every --handler (repeatable)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    listen: list[str] = []
    for item in args.listen or ["127.0.0.1"]:
        listen.extend(x for x in item.split(",") if x)
    item_size = parse_size(args.max_item_size)
    if item_size < 1024:
        raise ConfigError("-I: the item size limit must be at least 1k")
    if args.memory_limit < 1:
        raise ConfigError("-m: the memory limit must be at least 1 (MB)")
    if args.threads < 1:
        raise ConfigError("-t: at least 1 worker thread")
    return Settings(listen=listen, port=args.port, memory_mb=args.memory_limit, item_size_max=item_size,
                    maxconns=args.conn_limit, verbosity=args.verbose, backlog=args.listen_backlog)


def engine_from_args(args: argparse.Namespace, settings: Settings) -> tuple[Store, list[Handler]]:
    """The engine and handlers ``--engine``/``--engine-opt``/``--durable``/``--handler`` ask for."""
    options = parse_options(args.engine_opt)
    if args.durable:
        options["durable"] = "1"
    config = EngineConfig(options, settings.memory_mb * 1024 * 1024, settings.item_size_max)
    handler_config = EngineConfig(parse_options(args.handler_opt, "--handler-opt"), config.memory_bytes,
                                  config.item_size_max)
    handlers = [create_handler(name, handler_config) for name in args.handler or []]
    return create_engine(args.engine, config), handlers


def run(args: argparse.Namespace, engine: Store | None = None, handlers: Sequence[Handler] = ()) -> int:
    """Run the server; ``engine``/``handlers`` given here replace the --engine/--handler flags."""
    settings = settings_from_args(args)
    logging.basicConfig(level=logging.INFO if settings.verbosity else logging.WARNING,
                        format="%(asctime)s hoard[%(process)d] %(message)s")
    if engine is None:
        engine, built = engine_from_args(args, settings)
        handlers = [*handlers, *built]
    else:
        engine.max_item_size = settings.item_size_max
    install_event_loop_policy()
    server = Server(settings, engine, handlers, workers=args.threads)

    def ready(bound: list[str]) -> None:
        if settings.verbosity:
            print(f"hoard server listening on {', '.join(bound)}", file=sys.stderr)

    asyncio.run(server.serve(ready))
    return 0
