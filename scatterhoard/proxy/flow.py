"""Backpressure: bounded queues between clients and servers, so memory cannot grow without bound.

A client connection stops being read (``pause_reading``) while any of these
holds, and is read again when none does:

* ``WRITE`` -- its own transport is paused for writing: it does not read its
  replies (asyncio's high-water mark on the client transport);
* ``INFLIGHT`` -- it has :data:`MAX_INFLIGHT` requests waiting for replies;
  it is resumed when they are down to :data:`RESUME_INFLIGHT`;
* ``BACKEND`` -- it sent a request to a server connection whose write buffer
  is over its high-water mark (the server does not read fast enough); it is
  resumed when every such connection has drained (or is closed).

Stopping happens between two requests, even in the middle of one read: the
requests already parsed but not forwarded are *held* and forwarded first when
the client is resumed.  So a client that pipelines large gets and never reads
costs at most :data:`MAX_INFLIGHT` replies plus one read; a stalled server at
most one read per client feeding it.  Other clients are not slowed down.

The session side (``blocked``, ``limit``, ``held``, ``waits``) lives on
:class:`~scatterhoard.proxy.session.ClientConnection`; this module only
flips it, so the per-request cost is one comparison of the queue length
against ``limit`` (0 while blocked).
"""

from __future__ import annotations

from typing import Any

WRITE = 1
INFLIGHT = 2
BACKEND = 4

#: Requests of one client in flight at most (replies not yet written to it).
MAX_INFLIGHT = 256
RESUME_INFLIGHT = MAX_INFLIGHT // 2


def block(session: Any, reason: int) -> None:
    """Stop reading from ``session`` for ``reason``."""
    if session.closed:
        return
    if not session.blocked:
        session.limit = 0
        transport = session.transport
        if transport is not None:
            transport.pause_reading()
    session.blocked |= reason


def unblock(session: Any, reason: int) -> None:
    """``reason`` is gone; with no reason left, forward the held requests, then read again."""
    if not session.blocked & reason:
        return
    session.blocked &= ~reason
    if session.blocked or session.closed:
        return
    session.limit = MAX_INFLIGHT
    held = session.held
    if held:
        session.held = None
        session.ctx.current = session
        session._handle(held)
        if session.blocked:
            return
    transport = session.transport
    if transport is not None and not session.closing:
        transport.resume_reading()


def hold(session: Any, cmds: list[Any], cmd: Any) -> None:
    """``cmd`` (in ``cmds``) and the requests after it wait until the session is unblocked."""
    for i, c in enumerate(cmds):
        if c is cmd:
            session.held = cmds[i:]
            break
    if not session.blocked:
        block(session, INFLIGHT)


def recheck(session: Any) -> None:
    """At a flush of a blocked session: enough replies went out to take requests again?"""
    if session.blocked & INFLIGHT and len(session.queue) <= RESUME_INFLIGHT:
        unblock(session, INFLIGHT)


# -- server connections ----------------------------------------------------------------------


def feeding_paused(conn: Any) -> None:
    """The session being read sent a request to ``conn``, whose write buffer is full: block it."""
    session = conn.ctx.current
    if session is None or session in conn.feeders or session.closed:
        return
    conn.feeders.add(session)
    session.waits += 1
    block(session, BACKEND)


def release_feeders(conn: Any) -> None:
    """``conn`` drained (or closed): the sessions it blocked may go on."""
    feeders = conn.feeders
    if not feeders:
        return
    conn.feeders = set()
    for session in feeders:
        session.waits -= 1
        if session.waits <= 0:
            session.waits = 0
            unblock(session, BACKEND)
