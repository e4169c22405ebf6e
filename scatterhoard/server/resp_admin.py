"""Connection and server commands of the RESP face: PING ECHO SELECT DBSIZE FLUSHDB
FLUSHALL INFO HELLO AUTH CLIENT QUIT COMMAND RESET.

The server presents itself as a standalone redis master of version
:data:`REDIS_VERSION` without a password (the default user is ``nopass``,
as in a fresh redis), with one database, 0.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import platform
import resource
import time
from typing import TYPE_CHECKING

from .. import __version__
from ..protocol.resp import OK, PONG, RespSet, SimpleString, bulk, encode, integer
from .resp_common import SYNTAX_ERROR, Command, coded, cstr, err, need_ll, parse_ll

if TYPE_CHECKING:
    from .resp import RespSession

#: What HELLO and INFO report: the redis release whose behaviour this face follows.
REDIS_VERSION = "7.0.15"
_WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
_NAME_ERROR = "Client names cannot contain spaces, newlines or special characters."


def verbatim(text: bytes, resp3: bool) -> bytes:
    """A RESP3 verbatim ``txt`` string (INFO, CLIENT INFO), a bulk string in RESP2."""
    if resp3:
        return b"=%d\r\ntxt:%b\r\n" % (len(text) + 4, text)
    return bulk(text)


# -- simple ones ---------------------------------------------------------------------------
def cmd_ping(s: RespSession, argv: list[bytes]) -> bytes:
    if len(argv) > 2:
        raise err("wrong number of arguments for 'ping' command")
    return PONG if len(argv) == 1 else bulk(argv[1])


def cmd_echo(s: RespSession, argv: list[bytes]) -> bytes:
    return bulk(argv[1])


def cmd_select(s: RespSession, argv: list[bytes]) -> bytes:
    index = need_ll(argv[1])
    if not -(2**31) <= index < 2**31:
        raise err("value is out of range, value must between -2147483648 and 2147483647")
    if index != 0:
        raise err("DB index is out of range")
    return OK


def cmd_dbsize(s: RespSession, argv: list[bytes]) -> bytes:
    return integer(int(s.store.stats().get("curr_items", 0)))


def cmd_flushall(s: RespSession, argv: list[bytes]) -> bytes:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].lower() not in (b"sync", b"async")):
        raise err(SYNTAX_ERROR)
    s.stats.cmd_flush += 1
    s.store.flush_all()
    return OK


def cmd_quit(s: RespSession, argv: list[bytes]) -> bytes:
    s.closing = True
    return OK


# -- AUTH, HELLO, CLIENT -------------------------------------------------------------------
def _authenticate(username: bytes) -> None:
    """No password is configured: the default user takes any password, nobody else exists."""
    if username != b"default":
        raise coded(_WRONGPASS)


def cmd_auth(s: RespSession, argv: list[bytes]) -> bytes:
    if len(argv) > 3:
        raise err(SYNTAX_ERROR)
    if len(argv) == 2:
        raise err("AUTH <password> called without any password configured for the default user. "
                  "Are you sure your configuration is correct?")
    _authenticate(argv[1])
    return OK


def _set_name(s: RespSession, name: bytes) -> None:
    if any(byte < 0x21 or byte > 0x7E for byte in name):
        raise err(_NAME_ERROR)
    s.name = name or None


def cmd_hello(s: RespSession, argv: list[bytes]) -> bytes:
    version = 0
    j = 1
    if len(argv) >= 2:
        parsed = need_ll_or(argv[1], "Protocol version is not an integer or out of range")
        if parsed < 2 or parsed > 3:
            raise coded("NOPROTO unsupported protocol version")
        version = parsed
        j = 2
    while j < len(argv):
        more = len(argv) - 1 - j
        opt = cstr(argv[j]).lower()
        if opt == b"auth" and more >= 2:
            _authenticate(argv[j + 1])
            j += 2
        elif opt == b"setname" and more:
            _set_name(s, argv[j + 1])
            j += 1
        else:
            raise err(b"Syntax error in HELLO option '" + cstr(argv[j]) + b"'")
        j += 1
    if version:
        s.set_protocol(version)
    return encode({
        b"server": b"redis", b"version": REDIS_VERSION.encode(), b"proto": 3 if s.resp3 else 2,
        b"id": s.id, b"mode": b"standalone", b"role": b"master", b"modules": [],
    }, s.resp3)


def need_ll_or(data: bytes, message: str) -> int:
    value = parse_ll(data)
    if value is None:
        raise err(message)
    return value


def client_info_line(s: RespSession) -> bytes:
    now = time.monotonic()
    multi = -1 if s.multi is None else len(s.multi)
    return (f"id={s.id} name={(s.name or b'').decode('ascii')} age={int(now - s.created)} "
            f"idle={int(now - s.last_active)} flags={'x' if s.multi is not None else 'N'} db=0 sub=0 "
            f"psub=0 ssub=0 multi={multi} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 "
            f"oll=0 omem=0 tot-mem=0 events=r cmd={s.last_command} user=default redir=-1 "
            f"resp={3 if s.resp3 else 2} lib-name={s.lib_name.decode('ascii')} "
            f"lib-ver={s.lib_ver.decode('ascii')}\n").encode()


def cmd_client_setname(s: RespSession, argv: list[bytes]) -> bytes:
    _set_name(s, argv[2])
    return OK


def cmd_client_getname(s: RespSession, argv: list[bytes]) -> bytes:
    return s.null if s.name is None else bulk(s.name)


def cmd_client_id(s: RespSession, argv: list[bytes]) -> bytes:
    return integer(s.id)


def cmd_client_info(s: RespSession, argv: list[bytes]) -> bytes:
    return verbatim(client_info_line(s), s.resp3)


def cmd_client_setinfo(s: RespSession, argv: list[bytes]) -> bytes:
    attr = argv[2].lower()
    if attr not in (b"lib-name", b"lib-ver"):
        raise err(b"Unrecognized option '" + cstr(argv[2]) + b"'")
    if any(byte < 0x21 or byte > 0x7E for byte in argv[3]):
        raise err(f"{attr.decode().upper()} cannot contain spaces, newlines or special characters.")
    if attr == b"lib-name":
        s.lib_name = argv[3]
    else:
        s.lib_ver = argv[3]
    return OK


def _help(lines: list[str]) -> bytes:
    return encode([SimpleString(line.encode()) for line in lines])


def cmd_client_help(s: RespSession, argv: list[bytes]) -> bytes:
    return _help([
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GETNAME", "    Return the name of the current connection.",
        "ID", "    Return the ID of the current connection.",
        "INFO", "    Return information about the current client connection.",
        "SETINFO <option> <value>", "    Set client meta attr (LIB-NAME or LIB-VER).",
        "SETNAME <name>", "    Assign the name <name> to the current connection.",
        "HELP", "    Print this help.",
    ])


# -- COMMAND -------------------------------------------------------------------------------
def _info_of(cmd: Command) -> list[object]:
    first, last, step = cmd.keys
    subs = list(cmd.subcommands.values()) if cmd.subcommands else []
    return [
        cmd.name.encode(), cmd.arity,
        RespSet(SimpleString(flag.encode()) for flag in cmd.flags),
        first, last, step,
        RespSet(SimpleString(cat.encode()) for cat in cmd.categories),
        RespSet(), [], [_info_of(sub) for sub in subs],
    ]


def cmd_command(s: RespSession, argv: list[bytes]) -> bytes:
    return encode([_info_of(cmd) for cmd in s.commands.values()], s.resp3)


def cmd_command_count(s: RespSession, argv: list[bytes]) -> bytes:
    return integer(len(s.commands))


def cmd_command_docs(s: RespSession, argv: list[bytes]) -> bytes:
    return b"%0\r\n" if s.resp3 else b"*0\r\n"


def _lookup(s: RespSession, name: bytes) -> Command | None:
    base, _, sub = name.lower().partition(b"|")
    cmd = s.commands.get(base)
    if cmd is None or not sub:
        return cmd
    return None if cmd.subcommands is None else cmd.subcommands.get(sub)


def cmd_command_info(s: RespSession, argv: list[bytes]) -> bytes:
    if len(argv) == 2:
        return cmd_command(s, argv)
    found = [_lookup(s, name) for name in argv[2:]]
    return encode([None if cmd is None else _info_of(cmd) for cmd in found], s.resp3)


def cmd_command_list(s: RespSession, argv: list[bytes]) -> bytes:
    names = list(s.commands)
    if len(argv) == 5 and argv[2].lower() == b"filterby":
        kind, value = argv[3].lower(), argv[4]
        if kind == b"module":
            names = []
        elif kind == b"aclcat":
            category = "@" + value.decode("latin-1").lower()
            names = [name for name in names if category in s.commands[name].categories]
        elif kind == b"pattern":
            names = [name for name in names if fnmatch.fnmatchcase(name, value.lower())]
        else:
            raise err(SYNTAX_ERROR)
    elif len(argv) != 2:
        raise err(SYNTAX_ERROR)
    return encode(names, s.resp3)


def cmd_command_getkeys(s: RespSession, argv: list[bytes]) -> bytes:
    args = argv[2:]
    cmd = s.commands.get(args[0].lower())
    if cmd is not None and cmd.subcommands is not None and len(args) > 1:
        cmd = cmd.subcommands.get(args[1].lower())
    if cmd is None:
        raise err("Invalid command specified")
    first, last, step = cmd.keys
    if not first:
        raise err("The command has no key arguments")
    if (cmd.arity > 0 and len(args) != cmd.arity) or len(args) < -cmd.arity:
        raise err("Invalid number of arguments specified for command")
    stop = len(args) + last if last < 0 else last
    return encode(args[first:stop + 1:step], s.resp3)


def cmd_command_help(s: RespSession, argv: list[bytes]) -> bytes:
    return _help([
        "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "(no subcommand)", "    Return details about all commands.",
        "COUNT", "    Return the total number of commands in this server.",
        "LIST", "    Return a list of all commands in this server.",
        "INFO [<command-name> ...]", "    Return details about the given commands (all when none).",
        "DOCS [<command-name> ...]", "    Return documentation details (none on this server).",
        "GETKEYS <full-command>", "    Return the keys from a full command.",
        "HELP", "    Print this help.",
    ])


# -- INFO ----------------------------------------------------------------------------------
def _human(size: int) -> str:
    """redis's bytesToHuman."""
    if size < 1024:
        return f"{size}B"
    for power, unit in ((2, "K"), (3, "M"), (4, "G"), (5, "T"), (6, "P")):
        if size < 1024**power or unit == "P":
            return f"{size / 1024 ** (power - 1):.2f}{unit}"
    return f"{size}B"  # pragma: no cover


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _info_server(s: RespSession) -> list[tuple[str, object]]:
    now = time.time()
    started = s.stats.started
    uname = platform.uname()
    pid = os.getpid()
    return [
        ("redis_version", REDIS_VERSION), ("redis_git_sha1", "00000000"), ("redis_git_dirty", 0),
        ("redis_build_id", "0"), ("redis_mode", "standalone"),
        ("os", f"{uname.system} {uname.release} {uname.machine}"), ("arch_bits", 64),
        ("multiplexing_api", "asyncio"), ("process_id", pid), ("process_supervised", "no"),
        ("run_id", hashlib.sha1(f"{pid}:{started}".encode()).hexdigest()),
        ("tcp_port", s.settings.port), ("server_time_usec", int(now * 1e6)),
        ("uptime_in_seconds", int(now - started)), ("uptime_in_days", int(now - started) // 86400),
        ("hz", 10), ("configured_hz", 10), ("executable", ""), ("config_file", ""),
        ("io_threads_active", 0), ("scatterhoard_version", __version__),
    ]


def _info_clients(s: RespSession) -> list[tuple[str, object]]:
    return [
        ("connected_clients", s.stats.curr_connections), ("cluster_connections", 0),
        ("maxclients", s.settings.maxconns), ("client_recent_max_input_buffer", 0),
        ("client_recent_max_output_buffer", 0), ("blocked_clients", 0), ("tracking_clients", 0),
        ("clients_in_timeout_table", 0),
    ]


def _info_memory(s: RespSession) -> list[tuple[str, object]]:
    stats = s.store.stats()
    used = int(stats.get("bytes", 0))
    limit = int(stats.get("limit_maxbytes", s.settings.memory_mb * 1024 * 1024))
    rss = _rss()
    return [
        ("used_memory", used), ("used_memory_human", _human(used)),
        ("used_memory_rss", rss), ("used_memory_rss_human", _human(rss)),
        ("maxmemory", limit), ("maxmemory_human", _human(limit)),
        ("maxmemory_policy", "allkeys-lru"), ("mem_allocator", "libc"),
    ]


def _info_persistence(s: RespSession) -> list[tuple[str, object]]:
    return [("loading", 0), ("async_loading", 0), ("rdb_changes_since_last_save", 0),
            ("rdb_bgsave_in_progress", 0), ("aof_enabled", 0), ("aof_rewrite_in_progress", 0)]


def _info_stats(s: RespSession) -> list[tuple[str, object]]:
    st = s.stats
    store = s.store.stats()
    return [
        ("total_connections_received", st.total_connections),
        ("total_commands_processed", s.stats.resp_commands),
        ("instantaneous_ops_per_sec", 0),
        ("total_net_input_bytes", st.bytes_read), ("total_net_output_bytes", st.bytes_written),
        ("rejected_connections", st.rejected_connections),
        ("expired_keys", store.get("reclaimed", 0)), ("evicted_keys", store.get("evictions", 0)),
        ("keyspace_hits", st.get_hits), ("keyspace_misses", st.get_misses),
        ("total_error_replies", s.stats.resp_errors),
    ]


def _info_replication(s: RespSession) -> list[tuple[str, object]]:
    return [("role", "master"), ("connected_slaves", 0), ("master_repl_offset", 0)]


def _info_cpu(s: RespSession) -> list[tuple[str, object]]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return [("used_cpu_sys", f"{ru.ru_stime:.6f}"), ("used_cpu_user", f"{ru.ru_utime:.6f}")]


def _info_keyspace(s: RespSession) -> list[tuple[str, object]]:
    keys = int(s.store.stats().get("curr_items", 0))
    return [("db0", f"keys={keys},expires=0,avg_ttl=0")] if keys else []


_SECTIONS = {
    "server": ("Server", _info_server), "clients": ("Clients", _info_clients),
    "memory": ("Memory", _info_memory), "persistence": ("Persistence", _info_persistence),
    "stats": ("Stats", _info_stats), "replication": ("Replication", _info_replication),
    "cpu": ("CPU", _info_cpu), "keyspace": ("Keyspace", _info_keyspace),
}


def info_text(s: RespSession, args: list[bytes]) -> bytes:
    wanted: set[str] = set()
    for arg in args or [b"default"]:
        name = arg.decode("latin-1").lower()
        if name in ("default", "all", "everything"):
            wanted.update(_SECTIONS)
        else:
            wanted.add(name)
    chunks: list[str] = []
    for name, (title, rows) in _SECTIONS.items():
        if name in wanted:
            lines = [f"# {title}\r\n"] + [f"{key}:{value}\r\n" for key, value in rows(s)]
            chunks.append("".join(lines))
    return "\r\n".join(chunks).encode()


def cmd_info(s: RespSession, argv: list[bytes]) -> bytes:
    return verbatim(info_text(s, argv[1:]), s.resp3)
