"""Example 2: a logging and access-control handler, for every protocol at once.

A handler sees each engine operation as one ``Call`` (op, key, arguments and
the connection's protocol, peer and command name), whether the client spoke
memcached text, meta, binary, RESP or distcache, and the server answers a
refusal in the client's own protocol (``CLIENT_ERROR``, binary "Auth error",
RESP ``-NOPERM``).

    hoard server --handler examples.acl_handler:AclHandler \\
        --handler-opt readonly=config: --handler-opt hidden=secret: --handler-opt log=/tmp/audit.log
    python examples/acl_handler.py -p 11311      # the same over the memory engine
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from scatterhoard.engines import AccessDenied, Call, Forward, Handler, MemoryStore, run_server


class AclHandler(Handler):
    """Keys under ``hidden`` are invisible, keys under ``readonly`` cannot be written;
    every call is logged as one line: time protocol peer command op key -> outcome."""

    def __init__(self, readonly: str = "config:", hidden: str = "secret:", log: str = "-") -> None:
        self.readonly = readonly.encode()
        self.hidden = hidden.encode()
        self.out: IO[str] = sys.stderr if log == "-" else open(log, "a", buffering=1)  # noqa: SIM115

    def handle(self, call: Call, forward: Forward) -> Any:
        ctx = call.context
        if self.hidden and call.key.startswith(self.hidden):
            outcome: Any = "denied"
        elif self.readonly and call.writes and call.key.startswith(self.readonly):
            outcome = "denied (read-only)"
        elif call.op == "flush_all":
            outcome = "denied (flush)"
        else:
            outcome = None
        line = f"{time.time():.3f} {ctx.protocol} {ctx.peer} {ctx.command} {call.op} {call.key!r}"
        if outcome is not None:
            print(f"{line} -> {outcome}", file=self.out)
            raise AccessDenied(f"{call.op} {outcome}")
        result = forward(call)
        print(f"{line} -> {_short(result)}", file=self.out)
        return result

    def close(self) -> None:
        if self.out is not sys.stderr:
            self.out.close()


def _short(result: Any) -> str:
    if isinstance(result, tuple):
        return getattr(result[0], "name", str(result[0]))
    if result is None or isinstance(result, bool):
        return "miss" if result is None else str(result)
    return getattr(result, "name", "hit")


if __name__ == "__main__":
    raise SystemExit(run_server(MemoryStore(), [AclHandler()], prog="acl_server"))
