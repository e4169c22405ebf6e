"""``hoard check``: the case registry and the runner.

Cases register themselves with :func:`case`; :class:`Runner` runs them in
order, suspends those that wait for expiry, sleeps once for all of them and
resumes them, printing outcomes in case order.  Everything is re-exported by
:mod:`.check`, which cases import from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TextIO

from .check_conn import CheckFailed, Context, Settings

PROTOCOLS = ("ascii", "meta", "binary", "resp", "distcache")
#: Seconds to wait, after the last expiry case is set up, before checking expiry.
#: Items get exptime 1 s, so this leaves a 2 s margin for coarse server clocks.
EXPIRY_WAIT = 3.0

CaseResult = Iterator[float] | None
CaseFunc = Callable[["Context"], CaseResult]


@dataclass(frozen=True)
class Case:
    protocol: str
    name: str
    func: CaseFunc
    summary: str

    @property
    def full_name(self) -> str:
        return f"{self.protocol} {self.name}"


REGISTRY: list[Case] = []


def case(protocol: str, name: str) -> Callable[[CaseFunc], CaseFunc]:
    """Register a case; its docstring's first line is its summary (shown with -v)."""
    assert protocol in PROTOCOLS, protocol

    def register(func: CaseFunc) -> CaseFunc:
        doc = (func.__doc__ or "").strip().splitlines()
        REGISTRY.append(Case(protocol, name, func, doc[0] if doc else ""))
        return func

    return register


def all_cases() -> list[Case]:
    from . import (  # noqa: F401  (imported for their registrations)
        check_cases_ascii,
        check_cases_binary,
        check_cases_distcache,
        check_cases_meta,
        check_cases_resp,
    )

    return list(REGISTRY)


# -- the runner -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    passed: bool
    reason: str
    seconds: float
    transcript: list[str]


class Runner:
    """Runs cases in order, suspends those that wait for expiry, sleeps once, resumes them."""

    def __init__(self, settings: Settings, out: TextIO, verbose: bool = False) -> None:
        self.settings = settings
        self.out = out
        self.verbose = verbose
        self.outcomes: list[Outcome | None] = []
        self._printed = 0
        # A target that stops answering would cost a timeout per case: after GIVE_UP cases of a
        # protocol in a row found it unreachable or silent, the rest of that protocol is not run.
        self._streak: dict[str, int] = {}
        self._gave_up: dict[str, str] = {}
        self.sleep: Callable[[float], None] = time.sleep  # the one pause for all waiting cases

    GIVE_UP = 3

    def run(self, cases: Sequence[Case]) -> tuple[int, int]:
        self.outcomes = [None] * len(cases)
        suspended: list[tuple[int, Context, Iterator[float], float, float]] = []
        for i, c in enumerate(cases):
            ctx = Context(self.settings, c)
            started = time.monotonic()
            gave_up = self._gave_up.get(c.protocol)
            if gave_up is not None:
                self._done(i, ctx, started, CheckFailed(f"not run: {gave_up}"))
                continue
            gen: Iterator[float] | None = None
            try:
                result = c.func(ctx)
                if result is not None:
                    gen = result
                    wait = next(gen)
                    suspended.append((i, ctx, gen, started, time.monotonic() + wait))
                    continue
                self._done(i, ctx, started, None)
            except StopIteration:
                self._done(i, ctx, started, None)
            except Exception as exc:  # noqa: BLE001  (every failure is reported, the run goes on)
                self._done(i, ctx, started, exc)
        while suspended:
            until = max(s[4] for s in suspended)
            delay = until - time.monotonic()
            if delay > 0:
                if self.verbose:
                    self.out.write(f"  (waiting {delay:.1f} s for {len(suspended)} expiry cases)\n")
                    self.out.flush()
                self.sleep(delay)
            again: list[tuple[int, Context, Iterator[float], float, float]] = []
            for i, ctx, gen, started, _ in suspended:
                try:
                    wait = next(gen)
                    again.append((i, ctx, gen, started, time.monotonic() + wait))
                except StopIteration:
                    self._done(i, ctx, started, None)
                except Exception as exc:  # noqa: BLE001
                    self._done(i, ctx, started, exc)
            suspended = again
        passed = sum(1 for o in self.outcomes if o is not None and o.passed)
        failed = len(cases) - passed
        self.out.write(f"{passed} passed, {failed} failed\n")
        self.out.flush()
        return passed, failed

    def _done(self, i: int, ctx: Context, started: float, exc: BaseException | None) -> None:
        ctx.close()
        if exc is None:
            reason = ""
        elif isinstance(exc, CheckFailed):
            reason = str(exc)
        elif isinstance(exc, OSError):
            reason = f"socket error: {exc.strerror or exc}"
        else:
            reason = f"internal error in the case: {type(exc).__name__}: {exc}"
        self.outcomes[i] = Outcome(ctx.case, exc is None, reason, time.monotonic() - started, ctx.transcript)
        proto = ctx.case.protocol
        if reason.startswith(("no reply to", "cannot connect to")):
            self._streak[proto] = self._streak.get(proto, 0) + 1
            if self._streak[proto] >= self.GIVE_UP and proto not in self._gave_up:
                self._gave_up[proto] = (f"{self.GIVE_UP} {proto} cases in a row got no reply or no connection")
        elif not reason.startswith("not run:"):
            self._streak[proto] = 0
        self._flush()

    def _flush(self) -> None:
        """Print outcomes in case order, as far as they are known."""
        width = max((len(o.case.full_name) for o in self.outcomes if o is not None), default=0)
        width = max(width, 36)
        while self._printed < len(self.outcomes):
            o = self.outcomes[self._printed]
            if o is None:
                break
            name = o.case.full_name.ljust(width)
            if o.passed:
                line = f"{name} [pass]"
            else:
                line = f"{name} [FAIL] {o.reason}"
            if self.verbose:
                line += f"  ({o.seconds * 1000:.1f} ms: {o.case.summary})"
            self.out.write(line + "\n")
            if self.verbose and not o.passed and o.transcript:
                self.out.write("\n".join(o.transcript) + "\n")
            self._printed += 1
        self.out.flush()


def select_cases(protocols: Sequence[str], only: Sequence[str] = ()) -> list[Case]:
    chosen = [c for c in all_cases() if c.protocol in protocols]
    if only:
        chosen = [c for c in chosen
                  if any(fnmatchcase(c.full_name, pat) or fnmatchcase(c.name, pat) for pat in only)]
    order = {p: n for n, p in enumerate(PROTOCOLS)}
    return sorted(chosen, key=lambda c: order[c.protocol])  # stable: registration order within one
