"""Engine errors -> each protocol's error reply, and the handler context per command.

The protocol sessions call the engine synchronously. When the engine (or a
handler in front of it) raises :class:`~scatterhoard.store.base.EngineError`,
the command that was running is answered with its protocol's error, its
partial output is dropped and the connection goes on:

============  =================================  ==================================
protocol      :class:`Unsupported`               :class:`AccessDenied`
============  =================================  ==================================
text, meta    ``SERVER_ERROR <message>``         ``CLIENT_ERROR <message>``
binary        status 0x83 "Not supported"        status 0x20 "Auth error"
              (other EngineErrors: 0x84 "Internal error"; text SERVER_ERROR; RESP -ERR)
RESP          ``-ERR <message>``                 ``-NOPERM <message>``
distcache     a miss (GET) / result NOTOK        a miss (GET) / result NOTOK
============  =================================  ==================================

RESP's WATCH needs ``cas`` too (it compares cas values): an engine without it
answers WATCH ``-ERR``. distcache's four operations (ADD, GET, HAVE, REMOVE)
need no capability; only other engine errors reach them.

:func:`guard_session` also names each command in
:data:`~scatterhoard.engines.handlers.current_context` so handlers see it.
The server only guards sessions when the engine is not the plain memory
engine or handlers are installed, so the default hot path is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol import binary as b
from ..protocol import distcache as dc
from ..protocol import text as t
from ..protocol.binary_consts import OPCODE_NAMES
from ..protocol.resp import error as resp_error
from ..server.binary import BinarySession
from ..server.distcache import DistcacheSession
from ..server.resp import RespSession
from ..server.text import TextSession
from ..store.base import AccessDenied, EngineError, Unsupported
from .handlers import current_context

#: memcached's binary "Not supported" status (PROTOCOL_BINARY_RESPONSE_NOT_SUPPORTED)
STATUS_NOT_SUPPORTED = 0x83
#: memcached's binary "Internal error" (any other EngineError: a failing disk...)
STATUS_INTERNAL_ERROR = 0x84

Out = list[bytes]


def _message(exc: EngineError) -> bytes:
    text = str(exc) or type(exc).__name__
    return text.encode("utf-8", "replace").replace(b"\r", b" ").replace(b"\n", b" ")


def text_error(exc: EngineError) -> bytes:
    code = b"CLIENT_ERROR " if isinstance(exc, AccessDenied) else b"SERVER_ERROR "
    return code + _message(exc) + b"\r\n"


def _text_name(cmd: Any) -> tuple[str, str]:
    """(protocol, command name) of a parsed text/meta command."""
    kind = type(cmd)
    if kind is t.Get:
        name = ("gat" if cmd.exptime is not None else "get") + ("s" if cmd.with_cas else "")
        return "text", name
    if kind is t.Meta:
        return "meta", cmd.command.decode()
    if kind is t.StoreCmd or kind is t.TooLarge:
        return "text", cmd.command.decode()
    if kind is t.Arith:
        return "text", "incr" if cmd.incr else "decr"
    return "text", {t.Delete: "delete", t.Touch: "touch", t.FlushAll: "flush_all", t.Stats: "stats"}.get(
        kind, kind.__name__.lower())


def _guard_text(session: TextSession) -> None:
    def wrap(run: Callable[[Any, Out], None]) -> Callable[[Any, Out], None]:
        def guarded(cmd: Any, out: Out) -> None:
            mark = len(out)
            protocol, name = _text_name(cmd)
            base = current_context.get()
            token = current_context.set(base.__class__(protocol, base.peer, name))
            try:
                run(cmd, out)
            except EngineError as exc:
                del out[mark:]
                out.append(text_error(exc))
            finally:
                current_context.reset(token)
        return guarded

    passive = (t.Version, t.Verbosity, t.Quit, t.ErrorReply)
    session.wrapped = True
    dispatch = session._dispatch
    for kind, run in list(dispatch.items()):
        if kind not in passive:
            dispatch[kind] = wrap(run)


def _guard_binary(session: BinarySession) -> None:
    def wrap(run: Callable[[b.BinRequest, Out], None]) -> Callable[[b.BinRequest, Out], None]:
        def guarded(req: b.BinRequest, out: Out) -> None:
            mark = len(out)
            base = current_context.get()
            token = current_context.set(base.__class__("binary", base.peer, OPCODE_NAMES.get(req.opcode, "")))
            try:
                run(req, out)
            except EngineError as exc:
                del out[mark:]
                status = (b.STATUS_AUTH_ERROR if isinstance(exc, AccessDenied) else
                          STATUS_NOT_SUPPORTED if isinstance(exc, Unsupported) else STATUS_INTERNAL_ERROR)
                out.append(b.encode_error(req.opcode, status, req.opaque, _message(exc)))
            finally:
                current_context.reset(token)
        return guarded

    dispatch = session._dispatch
    for opcode, run in list(dispatch.items()):
        if opcode not in (b.OP_NOOP, b.OP_VERSION, b.OP_QUIT, b.OP_VERBOSITY):
            dispatch[opcode] = wrap(run)


def _guard_resp(session: RespSession) -> None:
    run = session._run
    store = session.store
    # WATCH compares cas values: without the capability (cas 0 everywhere) it could not see a change
    no_cas = None if "cas" in store.capabilities else (
        f"the {type(getattr(store, 'engine', store)).__name__} engine does not support cas (WATCH)")

    def guarded(cmd: Any, argv: list[bytes]) -> bytes:
        base = current_context.get()
        token = current_context.set(base.__class__("resp", base.peer, cmd.name.upper()))
        try:
            if no_cas is not None and cmd.name == "watch":
                raise Unsupported(no_cas)
            return run(cmd, argv)
        except EngineError as exc:
            session.stats.resp_errors += 1
            code = b"NOPERM " if isinstance(exc, AccessDenied) else b"ERR "
            return resp_error(code + _message(exc))
        finally:
            current_context.reset(token)

    setattr(session, "_run", guarded)  # noqa: B010 - an instance override of the method


class _GuardedDistcache(DistcacheSession):
    __slots__ = ()

    def execute(self, message: dc.Message) -> bytes:
        base = current_context.get()
        token = current_context.set(base.__class__("distcache", base.peer, dc.OP_NAMES.get(message.op, "")))
        try:
            return super().execute(message)
        except EngineError:  # distcache has no error text: a miss, or NOTOK
            if message.op == dc.OP_GET:
                return dc.encode_get_reply(message.uid, None)
            return dc.encode_result(message.uid, message.op, dc.RESULT_NOTOK)
        finally:
            current_context.reset(token)


def guard_session(session: object) -> str:
    """Make ``session`` answer engine errors in its protocol; returns the protocol's name."""
    if isinstance(session, TextSession):
        _guard_text(session)
        return "text"
    if isinstance(session, BinarySession):
        _guard_binary(session)
        return "binary"
    if isinstance(session, RespSession):
        _guard_resp(session)
        return "resp"
    if isinstance(session, DistcacheSession):
        if type(session) is DistcacheSession:
            session.__class__ = _GuardedDistcache
        return "distcache"
    return type(session).__name__.lower()
