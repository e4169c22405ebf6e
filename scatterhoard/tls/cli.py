"""``hoard tls``: the command line of the TLS terminator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from ..address import ACCEPTED_FORMS, Address, parse_address
from ..errors import ConfigError, HoardError

DESCRIPTION = """\
A TLS terminator: accept TLS on -l, forward the plaintext to --backend, and
share TLS sessions with every other `hoard tls` of the farm through --cache
(TLS 1.2 session ids and TLS 1.3 tickets, sealed with the --cache-key secret),
so that any instance resumes a session negotiated by another.
"""

EPILOG = f"""\
addresses: {ACCEPTED_FORMS}
--cache: a distcache address (the default protocol: `hoard server`, dc_server, a
  local dc_client), `distcache:ADDR`, or a memcached protocol through our client:
  `memcache:HOST:PORT[,HOST:PORT...]` (text; `text:` is the same), `meta:...`,
  `binary:...` (several servers are sharded like `hoard proxy`).
--cache-key: cached sessions hold TLS master secrets, so they are sealed
  (AES-256-GCM) with a secret every server of the farm shares. Create it once,
  copy it to every server: `hoard tls --gen-key FILE` (or `openssl rand -out FILE 32`).
example farm:
  hoard tls --gen-key /tmp/farm.key
  hoard server -p 11211 &
  hoard tls -l 127.0.0.1:8443 --cert c.pem --key k.pem --backend 127.0.0.1:8080 \\
      --cache 127.0.0.1:11211 --cache-key /tmp/farm.key &
  hoard tls -l 127.0.0.1:8444 ... (same flags) &
"""


def _address(text: str) -> Address:
    try:
        return parse_address(text)
    except HoardError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("tls", help="TLS terminator sharing sessions through the cache",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-l", "--listen", action="append", type=_address, default=[], metavar="ADDR",
                   help="TLS listen address (repeatable)")
    p.add_argument("--cert", metavar="PEM", help="certificate chain (PEM)")
    p.add_argument("--key", metavar="PEM", help="private key (PEM; default: in --cert)")
    p.add_argument("--backend", type=_address, metavar="ADDR", help="plaintext server to forward to")
    p.add_argument("--cache", metavar="ADDR", help="shared session cache (see below)")
    p.add_argument("--cache-key", metavar="FILE",
                   help="secret shared by the farm that seals cached sessions (>= 16 bytes)")
    p.add_argument("--cache-timeout", type=float, default=0.5, metavar="SEC",
                   help="give up on a cache lookup after this long: full handshake (default 0.5)")
    p.add_argument("--store-wait", type=float, default=0.05, metavar="SEC",
                   help="hold a new session's last handshake message until its cache write is "
                        "acknowledged, at most this long, so that the client finds it on any server "
                        "(default 0.05; 0: never wait)")
    p.add_argument("--tickets", action="store_true",
                   help="share session-ticket keys through the cache instead of sessions")
    p.add_argument("--ticket-rotate", type=int, default=3600, metavar="SEC",
                   help="ticket key rotation period (default 3600)")
    p.add_argument("--session-context", default="scatterhoard", metavar="TEXT",
                   help="session id context, identical on every server of the farm")
    p.add_argument("--session-timeout", type=int, default=300, metavar="SEC",
                   help="session lifetime (default 300)")
    p.add_argument("--min-version", default="1.2", help="lowest TLS version (default 1.2)")
    p.add_argument("--max-version", default="1.3", help="highest TLS version (default 1.3)")
    p.add_argument("--ciphers", help="TLS 1.2 cipher list (OpenSSL syntax)")
    p.add_argument("--ciphersuites", help="TLS 1.3 ciphersuites (OpenSSL syntax)")
    p.add_argument("--alpn", default="", metavar="P1,P2", help="ALPN protocols, preferred first")
    p.add_argument("--groups", metavar="G1:G2", help="key exchange groups (OpenSSL syntax, e.g. X25519:P-256)")
    p.add_argument("--handshake-timeout", type=float, default=30.0, metavar="SEC")
    p.add_argument("--reuseport", action="store_true",
                   help="SO_REUSEPORT: several `hoard tls` share one TCP address (the kernel balances)")
    p.add_argument("--gen-key", "--genkey", dest="genkey", metavar="FILE",
                   help="write a new random --cache-key file (32 bytes, mode 0600) and exit")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .sealing import generate_key_file

    if args.genkey:
        try:
            generate_key_file(args.genkey)
        except OSError as exc:
            raise ConfigError(f"--genkey {args.genkey}: {exc.strerror or exc}") from None
        return 0
    missing = [flag for flag, value in (("-l", args.listen), ("--cert", args.cert), ("--backend", args.backend))
               if not value]
    if missing:
        raise ConfigError(f"hoard tls needs {', '.join(missing)}")
    if args.cache and not args.cache_key:
        raise ConfigError("--cache needs --cache-key FILE: cached sessions hold TLS master secrets, so they "
                          "are sealed with a secret shared by every server of the farm. Create it once with "
                          "`hoard tls --gen-key FILE` (or `openssl rand -out FILE 32`), copy it to every "
                          "server, and pass --cache-key FILE")
    if args.tickets and not args.cache:
        raise ConfigError("--tickets needs --cache (the key ring lives there)")
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    from ..server.app import install_event_loop_policy

    install_event_loop_policy()
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from .context import TLSContext
    from .sealing import Sealer, load_key_file
    from .store import SessionStore, open_backend
    from .terminator import Terminator
    from .tickets import TicketKeys

    sid_ctx = args.session_context.encode()
    store = tickets = None
    if args.cache:
        sealer = Sealer(load_key_file(args.cache_key), context=sid_ctx)
        backend = open_backend(args.cache, args.cache_timeout)
        if args.tickets:
            tickets = TicketKeys(backend, sealer, rotate=args.ticket_rotate, lifetime=args.session_timeout)
        else:
            store = SessionStore(backend, sealer, timeout=args.cache_timeout, store_wait=args.store_wait)
    context = TLSContext(args.cert, args.key, min_version=args.min_version, max_version=args.max_version,
                         ciphers=args.ciphers, ciphersuites=args.ciphersuites,
                         alpn=[a for a in args.alpn.split(",") if a], session_store=store, tickets=tickets,
                         session_id_context=sid_ctx, session_timeout=args.session_timeout, groups=args.groups)
    term = Terminator(context, args.listen, args.backend, handshake_timeout=args.handshake_timeout,
                      reuseport=args.reuseport)
    try:
        await term.start()
        await term.run_until_stopped()
    finally:
        context.close()
    return 0
