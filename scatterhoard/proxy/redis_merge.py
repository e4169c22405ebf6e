"""Merging the replies of a command split over several redis servers (pure functions).

Every merger takes the raw replies of the parts, in part order, and returns
the client's reply.  An error in any part is the reply to the whole command
(the first one in part order), so a client never gets half a result.
"""

from __future__ import annotations

from ..errors import ProtocolError

OK = b"+OK\r\n"
_AGGREGATE = frozenset(b"*~>")


def first_error(parts: list[bytes]) -> bytes | None:
    for raw in parts:
        if raw.startswith((b"-", b"!")):
            return raw
    return None


def merge_sum(parts: list[bytes]) -> bytes:
    """DEL UNLINK TOUCH EXISTS DBSIZE: integers summed."""
    error = first_error(parts)
    if error is not None:
        return error
    total = 0
    for raw in parts:
        if raw[:1] != b":":
            return b"-ERR unexpected reply from a server: %s\r\n" % raw[:60].strip().replace(b"\r\n", b" ")
        total += int(raw[1:-2])
    return b":%d\r\n" % total


def merge_ok(parts: list[bytes]) -> bytes:
    """MSET FLUSHDB: ``+OK`` when every part said so."""
    for raw in parts:
        if raw != OK:
            return first_error(parts) or raw
    return OK


def array_items(raw: bytes) -> list[bytes]:
    """The elements of a flat array reply (bulk strings, nulls, integers...) as raw bytes each."""
    if not raw or raw[0] not in _AGGREGATE:
        raise ProtocolError(f"expected an array, got {raw[:40]!r}")
    eol = raw.find(b"\r\n")
    count = int(raw[1:eol])
    items = []
    p = eol + 2
    find = raw.find
    for _ in range(max(count, 0)):
        eol = find(b"\r\n", p)
        if raw[p] == 36:  # $
            size = int(raw[p + 1:eol])
            end = eol + 2 if size < 0 else eol + size + 4
        elif raw[p] in _AGGREGATE:
            raise ProtocolError("nested arrays are not expected here")
        else:
            end = eol + 2
        items.append(raw[p:end])
        p = end
    return items


def merge_mget(parts: list[bytes], owners: list[int]) -> bytes:
    """MGET: ``owners[i]`` is the part that holds key i; values back in key order (nulls kept)."""
    error = first_error(parts)
    if error is not None:
        return error
    items = [array_items(raw) for raw in parts]
    taken = [0] * len(parts)
    out = [b"*%d\r\n" % len(owners)]
    for part in owners:
        i = taken[part]
        out.append(items[part][i])
        taken[part] = i + 1
    return b"".join(out)


def _bulk_text(raw: bytes) -> bytes:
    """The body of a bulk string (or verbatim string) reply."""
    eol = raw.find(b"\r\n")
    body = raw[eol + 2:-2]
    if raw[:1] == b"=":
        body = body[4:]  # "txt:"
    return body


#: INFO fields that describe one server rather than count something: kept from the first server.
_NOT_ADDITIVE = frozenset({
    "redis_version", "redis_git_sha1", "redis_git_dirty", "redis_build_id", "redis_mode", "os", "arch_bits",
    "monotonic_clock", "multiplexing_api", "atomicvar_api", "gcc_version", "process_id", "process_supervised",
    "run_id", "tcp_port", "server_time_usec", "uptime_in_seconds", "uptime_in_days", "hz", "configured_hz",
    "lru_clock", "executable", "config_file", "io_threads_active", "maxmemory_policy", "mem_allocator",
    "role", "connected_slaves", "master_failover_state", "master_replid", "master_replid2",
    "master_repl_offset", "second_repl_offset", "repl_backlog_active", "repl_backlog_size",
    "repl_backlog_first_byte_offset", "repl_backlog_histlen", "loading", "async_loading", "rdb_bgsave_in_progress",
    "rdb_last_save_time", "rdb_last_bgsave_status", "rdb_last_bgsave_time_sec", "rdb_current_bgsave_time_sec",
    "aof_enabled", "aof_rewrite_in_progress", "aof_rewrite_scheduled", "aof_last_rewrite_time_sec",
    "aof_current_rewrite_time_sec", "aof_last_bgrewrite_status", "aof_last_write_status", "cluster_enabled",
    "maxmemory", "maxclients", "lazyfree_pending_objects", "mem_fragmentation_ratio", "aof_last_cow_size",
    "rdb_last_cow_size", "module_fork_in_progress", "module_fork_last_cow_size", "tracking_clients",
})


def merge_info(parts: list[bytes], servers: list[str]) -> bytes:
    """INFO: every server's report merged into one, as if the pool were one server.

    Counters and sizes are summed; fields that describe one server (version,
    pid, uptime, port, settings) are the first server's; ``dbN`` keyspace
    lines sum ``keys`` and ``expires`` and average ``avg_ttl``.  A ``# Proxy``
    section names the servers merged.
    """
    error = first_error(parts)
    if error is not None:
        return error
    sections: dict[str, dict[str, str]] = {}
    numeric: dict[tuple[str, str], int] = {}
    keyspace: dict[str, list[int]] = {}
    for raw in parts:
        section = ""
        for line in _bulk_text(raw).decode("utf-8", "replace").split("\r\n"):
            if line.startswith("#"):
                section = line[1:].strip()
                sections.setdefault(section, {})
                continue
            name, sep, value = line.partition(":")
            if not sep:
                continue
            fields = sections.setdefault(section, {})
            if section == "Keyspace":
                counts = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
                acc = keyspace.setdefault(name, [0, 0, 0, 0])
                acc[0] += int(counts.get("keys", 0))
                acc[1] += int(counts.get("expires", 0))
                acc[2] += int(counts.get("avg_ttl", 0))
                acc[3] += 1
                fields[name] = ""
            elif name not in _NOT_ADDITIVE and value.lstrip("-").isdigit():
                numeric[(section, name)] = numeric.get((section, name), 0) + int(value)
                fields.setdefault(name, value)
            else:
                fields.setdefault(name, value)
    lines = [f"# Proxy\r\nservers:{len(parts)}\r\nserver_names:{','.join(servers)}"]
    for section, fields in sections.items():
        body = [f"# {section}"]
        for name, value in fields.items():
            if section == "Keyspace":
                keys, expires, ttl, seen = keyspace[name]
                value = f"keys={keys},expires={expires},avg_ttl={ttl // max(seen, 1)}"
            elif (section, name) in numeric:
                value = str(numeric[(section, name)])
            body.append(f"{name}:{value}")
        lines.append("\r\n".join(body))
    text = ("\r\n\r\n".join(lines) + "\r\n").encode()
    return b"$%d\r\n%b\r\n" % (len(text), text)


def scan_reply(raw: bytes, index: int, nservers: int) -> bytes:
    """A server's SCAN reply with its cursor turned into the proxy's.

    The proxy's cursor is ``server_cursor * nservers + server_index``: the
    servers are walked one after the other; when server i says 0 the cursor
    points at the start of server i + 1 (``i + 1``), and after the last server
    it is 0.
    """
    if raw[:1] != b"*":
        return raw  # an error
    eol = raw.find(b"\r\n")
    head = raw.find(b"\r\n", eol + 2)  # $<len> of the cursor
    end = raw.find(b"\r\n", head + 2)
    cursor = int(raw[head + 2:end])
    if cursor:
        ours = cursor * nservers + index
    else:
        ours = index + 1 if index + 1 < nservers else 0
    text = b"%d" % ours
    return b"*2\r\n$%d\r\n%b\r\n%b" % (len(text), text, raw[end + 2:])
