"""The ``hoard bench`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from ..address import parse_address
from ..errors import AddressError
from .compare import run_compare
from .engine import RunConfig, cpus_arg, preload, run_load
from .result import LoadResult
from .verify import Discrepancy, VerifyConfig, run_verify, verify_report
from .workload import PROTOCOLS, BenchError, LoadSpec, format_mix, parse_mix, parse_size_range

DEFAULT_PORT = 11211

DESCRIPTION = """\
Load a cache server or proxy (ours or anyone's) and measure it, or check its
replies against a model (--verify). Speaks memcached text, meta and binary,
RESP (redis) and distcache, over the same protocol core as the rest of hoard.

The load: --procs worker processes, each with --connections connections, each
keeping --depth requests in flight (closed loop), or sending at --rate ops/s
in total (open loop: latency is measured from when each request was due, so
a stalled server is charged for the whole stall). Keys are drawn uniformly or
zipf-distributed from --keys keys; --mix picks the operations. Requests are
built ahead of time (up to 4096 per connection, cycled); when --keys is larger
than all connections' pre-built requests together, each request is rebuilt
with a fresh key after it is sent, so the whole key space is used, at about
2 us more generator CPU per request (add --procs if the generator saturates).

Reports ops/s, hits/misses/errors per operation and latency p50/p90/p99/p99.9/max
from a log-bucket histogram (about 1% precision) merged over all processes.

operations (--mix): get, set, mget (--mget-width keys in one request; meta: one
mg per key; binary: GETKQ per key + NOOP), incr (on separate counter keys; a
missing counter is a miss, except in redis which creates it), delete.
distcache has get, set (ADD; an existing id counts as a miss) and delete (REMOVE).

exit status: 0 done, 1 --verify found a wrong reply, 2 bad options, the target
cannot be reached, or the run failed.

examples:
  hoard bench 127.0.0.1:11211 -t 10 --procs 2 -c 16 -d 16
  hoard bench 127.0.0.1:6379 --resp --mix get:80,set:20 --keys 100000 --distribution zipf
  hoard bench 127.0.0.1:11211 --rate 20000 -c 8 -d 4 --plot /tmp/latency.png
  hoard bench 127.0.0.1:11211 --compare 127.0.0.1:11311 --rounds 3 -t 5
  hoard bench 127.0.0.1:11211 --binary --verify -n 20000
  hoard bench unix:/run/hoard.sock --distcache --mix get:90,set:10 --value-size 200-4k --json
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="load generator and correctness checker for any cache target",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("address", metavar="ADDR", help="host:port, [v6]:port or unix:/path (default port 11211)")
    proto = p.add_argument_group("protocol (default --text)")
    for name, text in (("text", "memcached text protocol"), ("meta", "memcached meta commands"),
                       ("binary", "memcached binary protocol"), ("resp", "RESP (redis)"),
                       ("distcache", "distcache session cache protocol")):
        flags = ["--text", "--ascii"] if name == "text" else [f"--{name}"]  # --ascii as in hoard check
        proto.add_argument(*flags, dest="protocol", action="store_const", const=name, help=text)
    proto.add_argument("-P", "--protocol", dest="protocol", choices=PROTOCOLS, help="the same, by name")
    load = p.add_argument_group("load")
    load.add_argument("--procs", type=int, default=1, metavar="N", help="worker processes (default 1)")
    load.add_argument("-c", "--connections", type=int, default=4, metavar="N",
                      help="connections per process (default 4)")
    load.add_argument("-d", "--depth", type=int, default=1, metavar="N",
                      help="requests in flight per connection: pipeline depth (default 1)")
    load.add_argument("-t", "--duration", type=float, default=None, metavar="S",
                      help="seconds to run (default 10, unless --requests)")
    load.add_argument("-n", "--requests", type=int, default=None, metavar="N",
                      help="total requests to send, over all processes and connections")
    load.add_argument("-r", "--rate", type=float, default=None, metavar="OPS",
                      help="open loop: send OPS requests per second in total, on schedule (the workers "
                           "poll instead of sleeping when a request is due within 1 ms: pin them with --cpus)")
    load.add_argument("--cpus", default=None, metavar="LIST", help="pin the worker processes to these CPUs (1 or 0,2-3)")
    load.add_argument("--timeout", type=float, default=10.0, metavar="S",
                      help="fail when no reply comes for S seconds (default 10)")
    shape = p.add_argument_group("keys, values and operations")
    shape.add_argument("-m", "--mix", default="get:90,set:10", metavar="OP:W,...",
                       help="operation mix by weight (default get:90,set:10); ops: get set mget incr delete")
    shape.add_argument("-k", "--keys", type=int, default=None, metavar="N",
                       help="key space (default 10000; --verify: 50 per connection)")
    shape.add_argument("--key-prefix", default="hb:", metavar="P", help="key prefix (default hb:)")
    shape.add_argument("--distribution", choices=("uniform", "zipf"), default="uniform",
                       help="how keys are drawn (default uniform)")
    shape.add_argument("--zipf-s", type=float, default=0.99, metavar="S", help="zipf exponent (default 0.99)")
    shape.add_argument("-s", "--value-size", default=None, metavar="N|MIN-MAX",
                       help="value bytes, fixed or a uniform range, k/m suffixes (default 100; --verify 1-4k)")
    shape.add_argument("--mget-width", type=int, default=10, metavar="N", help="keys per mget (default 10)")
    shape.add_argument("-e", "--expire", type=int, default=0, metavar="S",
                       help="expiry of the values set, seconds (default 0: never)")
    shape.add_argument("--preload", action="store_true", help="store every key first, so gets hit")
    shape.add_argument("--seed", type=int, default=None, help="random seed (default: fixed for loads, "
                       "random for --verify)")
    modes = p.add_argument_group("modes and output")
    modes.add_argument("--verify", action="store_true",
                       help="model-check every reply (values byte for byte, flags, CAS, counters, expiry) "
                            "and stop at the first discrepancy; uses --connections, --requests/--duration, "
                            "--keys, --value-size")
    modes.add_argument("--compare", metavar="ADDR2", default=None,
                       help="run the same load against ADDR and ADDR2 in alternating rounds; print ratios")
    modes.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds for --compare (default 3)")
    modes.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    modes.add_argument("--plot", metavar="FILE.png", default=None,
                       help="draw throughput and latency over time and the percentile curve; with "
                            "--compare, the last round of each target side by side "
                            "(needs matplotlib: pip install 'scatterhoard[plot]')")
    modes.add_argument("-q", "--quiet", action="store_true", help="no live progress line")
    p.set_defaults(func=run)


class Progress:
    """The live progress line on a terminal (stderr), erased when done."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.shown = False

    def load(self, seconds: float, ops: int, errors: int) -> None:
        if self.enabled:
            rate = ops / seconds if seconds > 0 else 0.0
            self.stream.write(f"\r\x1b[K  {seconds:6.1f} s  {ops:>12,} ops  {rate:>12,.0f} ops/s  "
                              f"{errors:,} errors")
            self.stream.flush()
            self.shown = True

    def verify(self, seconds: float, ops: int) -> None:
        self.load(seconds, ops, 0)

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _fail(message: str) -> int:
    print(f"hoard bench: {message}", file=sys.stderr)
    return 2


def build_config(args: argparse.Namespace) -> RunConfig:
    address = parse_address(args.address, default_port=DEFAULT_PORT)
    lo, hi = parse_size_range(args.value_size or "100")
    spec = LoadSpec(protocol=args.protocol or "text", mix=parse_mix(args.mix),
                    keyspace=args.keys if args.keys is not None else 10_000, key_prefix=args.key_prefix,
                    distribution=args.distribution, zipf_s=args.zipf_s, value_min=lo, value_max=hi,
                    mget_width=args.mget_width, expire=args.expire, seed=args.seed if args.seed is not None else 1)
    duration = args.duration if args.duration is not None or args.requests is not None else 10.0
    cfg = RunConfig(address=address, spec=spec, processes=args.procs, connections=args.connections,
                    depth=args.depth, duration=duration, requests=args.requests, rate=args.rate,
                    timeout=args.timeout, cpus=cpus_arg(args.cpus))
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    try:
        if args.verify:
            return _run_verify(args)
        cfg = build_config(args)
        if args.compare:
            other = parse_address(args.compare, default_port=DEFAULT_PORT)
            if args.rounds < 1:
                raise BenchError("--rounds must be at least 1")
        if args.plot:
            from .plot import require_matplotlib

            require_matplotlib()
        return _run_load(args, cfg, other if args.compare else None)
    except AddressError as exc:
        return _fail(str(exc))
    except BenchError as exc:
        return _fail(str(exc))


def _run_load(args: argparse.Namespace, cfg: RunConfig, other: Any) -> int:
    progress = Progress(sys.stderr, not args.quiet)
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    spec = cfg.spec
    if args.preload:
        for addr in [cfg.address] + ([other] if other is not None else []):
            n = preload(addr, spec, timeout=cfg.timeout)
            say(f"preloaded {n:,} keys into {addr}")
    how = (f"{cfg.duration:g} s" if cfg.requests is None else f"{cfg.requests:,} requests")
    say(f"hoard bench {cfg.address}" + (f" vs {other}" if other is not None else "")
        + f": {spec.protocol}, {cfg.processes} proc x {cfg.connections} conn x depth {cfg.depth}, {how}, "
        f"mix {format_mix(spec.mix)}, {spec.keyspace:,} keys {spec.distribution}, "
        f"values {spec.value_min}" + (f"-{spec.value_max}" if spec.value_max != spec.value_min else "") + " B"
        + (f", open loop {cfg.rate:,.0f} ops/s" if cfg.rate else ""))
    results: list[LoadResult]
    try:
        if other is None:
            res = run_load(cfg, progress.load)
            progress.clear()
            results = [res]
            if args.json:
                print(json.dumps(res.summary(), indent=2))
            else:
                print(res.report())
        else:
            def on_run(n: int, r: LoadResult) -> None:
                progress.clear()
                say(f"round {n}: {r.target:<22} {r.ops_per_sec:>12,.0f} ops/s  p50 {r.latency_us(50):,.1f}  "
                    f"p99 {r.latency_us(99):,.1f}  p99.9 {r.latency_us(99.9):,.1f} us  errors {r.errors:,}")

            cmp = run_compare(cfg, other, args.rounds, on_run, progress.load)
            results = [cmp.runs[-1][1], cmp.runs[-1][2]]
            if args.json:
                print(json.dumps(cmp.summary(), indent=2))
            else:
                print()
                print(cmp.table())
    finally:
        progress.clear()
    if args.plot:
        from .plot import plot

        plot(results, args.plot, f"hoard bench: {spec.protocol}, mix {format_mix(spec.mix)}")
        say(f"plot written to {args.plot}")
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    address = parse_address(args.address, default_port=DEFAULT_PORT)
    lo, hi = parse_size_range(args.value_size or "1-4k")
    protocol = args.protocol or "text"
    if protocol == "distcache" and hi > 32768:
        raise BenchError("--value-size: distcache values are at most 32768 bytes")
    if args.compare or args.plot:
        raise BenchError("--verify does not combine with --compare or --plot")
    if args.connections < 1 or (args.keys is not None and args.keys < 1):
        raise BenchError("--connections and --keys must be at least 1")
    duration = args.duration if args.duration is not None or args.requests is not None else 10.0
    cfg = VerifyConfig(address=address, protocol=protocol, connections=args.connections, requests=args.requests,
                       duration=duration, keyspace=args.keys or 50, value_min=lo, value_max=hi, seed=args.seed,
                       timeout=args.timeout)
    progress = Progress(sys.stderr, not args.quiet)
    try:
        res = run_verify(cfg, sys.stdout, progress.verify)
    except Discrepancy as exc:
        progress.clear()
        if args.json:
            print(json.dumps({"verify": "discrepancy", "report": str(exc)}, indent=2))
        else:
            print(str(exc))
        return 1
    finally:
        progress.clear()
    if args.json:
        print(json.dumps(res.summary(), indent=2))
    else:
        print(verify_report(res, protocol, str(address)))
    return 0
