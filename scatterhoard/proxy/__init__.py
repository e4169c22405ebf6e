"""``hoard proxy``: a twemproxy (nutcracker) compatible sharding proxy for memcached.

Same YAML configuration and command line as nutcracker 0.5.0, keys routed to
the same servers (:mod:`scatterhoard.routing`), the memcached ASCII, meta and
binary protocols proxied with pipelining end to end, timeouts, auto-ejection with a
health probe before a server returns, and nutcracker's JSON stats port.

* :mod:`.config` -- the YAML pools, validated with file/line/pool/key errors;
* :mod:`.backend` -- server connections, reply splitting, timeouts, ejection;
* :mod:`.session` -- client connections: parse, route, split, reorder;
* :mod:`.binary_session` / :mod:`.binary_backend` -- binary memcached clients and their server connections;
* :mod:`.stats` -- counters, nutcracker's JSON snapshot, ``-D`` descriptions;
* :mod:`.flow` -- backpressure: when a client stops being read, and resumes;
* :mod:`.app` -- listeners, pools, the stats port, signals;
* :mod:`.reload` -- configuration reload without a restart (SIGUSR1);
* :mod:`.workers` / :mod:`.worker` -- ``--workers N``: the supervisor and a worker process;
* :mod:`.cli` -- ``hoard proxy`` / ``hoard-proxy`` with nutcracker's flags.
"""

from __future__ import annotations

from .config import PoolConfig, ProxyConfig, load_config, parse_config

__all__ = ["PoolConfig", "ProxyConfig", "load_config", "parse_config"]
