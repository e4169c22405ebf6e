"""Constants and tables of the memcached binary protocol.

Re-exported by :mod:`scatterhoard.protocol.binary`; import them from there.
Values follow memcached's ``protocol_binary.h``; the status texts are the
exact strings memcached 1.6 puts in error replies (``write_bin_error``),
except for the server-state statuses 0x83-0x86, which memcached itself never
sends (a proxy does: ``hoard proxy`` answers EBUSY / ETMPFAIL for a server
that timed out / failed): theirs are the names of the protocol's spec.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_MAX_BODY",
    "HEADER_SIZE",
    "INCR_NO_CREATE",
    "KEY_RETURNING",
    "MAX_KEY_LENGTH",
    "OPCODE_NAMES",
    "OP_ADD",
    "OP_ADDQ",
    "OP_APPEND",
    "OP_APPENDQ",
    "OP_DECREMENT",
    "OP_DECREMENTQ",
    "OP_DELETE",
    "OP_DELETEQ",
    "OP_FLUSH",
    "OP_FLUSHQ",
    "OP_GAT",
    "OP_GATK",
    "OP_GATKQ",
    "OP_GATQ",
    "OP_GET",
    "OP_GETK",
    "OP_GETKQ",
    "OP_GETQ",
    "OP_INCREMENT",
    "OP_INCREMENTQ",
    "OP_NOOP",
    "OP_PREPEND",
    "OP_PREPENDQ",
    "OP_QUIT",
    "OP_QUITQ",
    "OP_REPLACE",
    "OP_REPLACEQ",
    "OP_SASL_AUTH",
    "OP_SASL_LIST_MECHS",
    "OP_SASL_STEP",
    "OP_SET",
    "OP_SETQ",
    "OP_STAT",
    "OP_TOUCH",
    "OP_VERBOSITY",
    "OP_VERSION",
    "QUIET_BASE",
    "QUIET_OPCODES",
    "QUIET_VARIANT",
    "REQUEST_MAGIC",
    "RESPONSE_MAGIC",
    "STATUS_AUTH_CONTINUE",
    "STATUS_AUTH_ERROR",
    "STATUS_DELTA_BADVAL",
    "STATUS_E2BIG",
    "STATUS_EBUSY",
    "STATUS_EINTERNAL",
    "STATUS_EINVAL",
    "STATUS_ENOMEM",
    "STATUS_ETMPFAIL",
    "STATUS_KEY_EEXISTS",
    "STATUS_KEY_ENOENT",
    "STATUS_MESSAGES",
    "STATUS_NAMES",
    "STATUS_NOT_STORED",
    "STATUS_NOT_SUPPORTED",
    "STATUS_NO_ERROR",
    "STATUS_UNKNOWN_COMMAND",
    "VALUE_OPCODES",
    "base_opcode",
    "is_quiet",
    "returns_key",
    "status_message",
]

REQUEST_MAGIC: Final = 0x80
RESPONSE_MAGIC: Final = 0x81
HEADER_SIZE: Final = 24

#: memcached's KEY_MAX_LENGTH: longer keys get EINVAL (and a close).
MAX_KEY_LENGTH: Final = 250
#: Default ``max_body`` of the parser: memcached's default item size limit
#: (1 MiB).  An item holds at least the key and value, so a longer body could
#: never be stored.
DEFAULT_MAX_BODY: Final = 1024 * 1024
#: INCR/DECR exptime meaning "do not create a missing counter".
INCR_NO_CREATE: Final = 0xFFFFFFFF

# -- opcodes ---------------------------------------------------------------

OP_GET: Final = 0x00
OP_SET: Final = 0x01
OP_ADD: Final = 0x02
OP_REPLACE: Final = 0x03
OP_DELETE: Final = 0x04
OP_INCREMENT: Final = 0x05
OP_DECREMENT: Final = 0x06
OP_QUIT: Final = 0x07
OP_FLUSH: Final = 0x08
OP_GETQ: Final = 0x09
OP_NOOP: Final = 0x0A
OP_VERSION: Final = 0x0B
OP_GETK: Final = 0x0C
OP_GETKQ: Final = 0x0D
OP_APPEND: Final = 0x0E
OP_PREPEND: Final = 0x0F
OP_STAT: Final = 0x10
OP_SETQ: Final = 0x11
OP_ADDQ: Final = 0x12
OP_REPLACEQ: Final = 0x13
OP_DELETEQ: Final = 0x14
OP_INCREMENTQ: Final = 0x15
OP_DECREMENTQ: Final = 0x16
OP_QUITQ: Final = 0x17
OP_FLUSHQ: Final = 0x18
OP_APPENDQ: Final = 0x19
OP_PREPENDQ: Final = 0x1A
OP_VERBOSITY: Final = 0x1B
OP_TOUCH: Final = 0x1C
OP_GAT: Final = 0x1D
OP_GATQ: Final = 0x1E
OP_SASL_LIST_MECHS: Final = 0x20
OP_SASL_AUTH: Final = 0x21
OP_SASL_STEP: Final = 0x22
OP_GATK: Final = 0x23
OP_GATKQ: Final = 0x24

OPCODE_NAMES: Final[dict[int, str]] = {
    OP_GET: "GET", OP_SET: "SET", OP_ADD: "ADD", OP_REPLACE: "REPLACE", OP_DELETE: "DELETE",
    OP_INCREMENT: "INCREMENT", OP_DECREMENT: "DECREMENT", OP_QUIT: "QUIT", OP_FLUSH: "FLUSH",
    OP_GETQ: "GETQ", OP_NOOP: "NOOP", OP_VERSION: "VERSION", OP_GETK: "GETK", OP_GETKQ: "GETKQ",
    OP_APPEND: "APPEND", OP_PREPEND: "PREPEND", OP_STAT: "STAT", OP_SETQ: "SETQ", OP_ADDQ: "ADDQ",
    OP_REPLACEQ: "REPLACEQ", OP_DELETEQ: "DELETEQ", OP_INCREMENTQ: "INCREMENTQ",
    OP_DECREMENTQ: "DECREMENTQ", OP_QUITQ: "QUITQ", OP_FLUSHQ: "FLUSHQ", OP_APPENDQ: "APPENDQ",
    OP_PREPENDQ: "PREPENDQ", OP_VERBOSITY: "VERBOSITY", OP_TOUCH: "TOUCH", OP_GAT: "GAT",
    OP_GATQ: "GATQ", OP_GATK: "GATK", OP_GATKQ: "GATKQ", OP_SASL_LIST_MECHS: "SASL_LIST_MECHS",
    OP_SASL_AUTH: "SASL_AUTH", OP_SASL_STEP: "SASL_STEP",
}

#: Quiet opcode -> its non-quiet base opcode.
QUIET_BASE: Final[dict[int, int]] = {
    OP_GETQ: OP_GET, OP_GETKQ: OP_GETK, OP_SETQ: OP_SET, OP_ADDQ: OP_ADD, OP_REPLACEQ: OP_REPLACE,
    OP_DELETEQ: OP_DELETE, OP_INCREMENTQ: OP_INCREMENT, OP_DECREMENTQ: OP_DECREMENT,
    OP_QUITQ: OP_QUIT, OP_FLUSHQ: OP_FLUSH, OP_APPENDQ: OP_APPEND, OP_PREPENDQ: OP_PREPEND,
    OP_GATQ: OP_GAT, OP_GATKQ: OP_GATK,
}
#: Base opcode -> its quiet variant.
QUIET_VARIANT: Final[dict[int, int]] = {base: quiet for quiet, base in QUIET_BASE.items()}
QUIET_OPCODES: Final[frozenset[int]] = frozenset(QUIET_BASE)
#: Opcodes whose success replies (and misses) carry the key.
KEY_RETURNING: Final[frozenset[int]] = frozenset((OP_GETK, OP_GETKQ, OP_GATK, OP_GATKQ))
#: Base opcodes whose requests carry a value (E2BIG applies to them).
VALUE_OPCODES: Final[frozenset[int]] = frozenset(
    (OP_SET, OP_ADD, OP_REPLACE, OP_APPEND, OP_PREPEND, OP_SASL_AUTH, OP_SASL_STEP))

# -- statuses --------------------------------------------------------------

STATUS_NO_ERROR: Final = 0x00
STATUS_KEY_ENOENT: Final = 0x01
STATUS_KEY_EEXISTS: Final = 0x02
STATUS_E2BIG: Final = 0x03
STATUS_EINVAL: Final = 0x04
STATUS_NOT_STORED: Final = 0x05
STATUS_DELTA_BADVAL: Final = 0x06
STATUS_AUTH_ERROR: Final = 0x20
STATUS_AUTH_CONTINUE: Final = 0x21
STATUS_UNKNOWN_COMMAND: Final = 0x81
STATUS_ENOMEM: Final = 0x82
STATUS_NOT_SUPPORTED: Final = 0x83
STATUS_EINTERNAL: Final = 0x84
STATUS_EBUSY: Final = 0x85  # "Busy": hoard proxy's answer when a server did not answer in time
STATUS_ETMPFAIL: Final = 0x86  # "Temporary failure": hoard proxy's when a server failed or none is live

STATUS_NAMES: Final[dict[int, str]] = {
    STATUS_NO_ERROR: "NO_ERROR", STATUS_KEY_ENOENT: "KEY_ENOENT", STATUS_KEY_EEXISTS: "KEY_EEXISTS",
    STATUS_E2BIG: "E2BIG", STATUS_EINVAL: "EINVAL", STATUS_NOT_STORED: "NOT_STORED",
    STATUS_DELTA_BADVAL: "DELTA_BADVAL", STATUS_AUTH_ERROR: "AUTH_ERROR",
    STATUS_AUTH_CONTINUE: "AUTH_CONTINUE", STATUS_UNKNOWN_COMMAND: "UNKNOWN_COMMAND",
    STATUS_ENOMEM: "ENOMEM", STATUS_NOT_SUPPORTED: "NOT_SUPPORTED", STATUS_EINTERNAL: "EINTERNAL",
    STATUS_EBUSY: "EBUSY", STATUS_ETMPFAIL: "ETMPFAIL",
}

#: The value of memcached's error replies, per status (exact bytes).
STATUS_MESSAGES: Final[dict[int, bytes]] = {
    STATUS_NO_ERROR: b"",
    STATUS_KEY_ENOENT: b"Not found",
    STATUS_KEY_EEXISTS: b"Data exists for key.",
    STATUS_E2BIG: b"Too large.",
    STATUS_EINVAL: b"Invalid arguments",
    STATUS_NOT_STORED: b"Not stored.",
    STATUS_DELTA_BADVAL: b"Non-numeric server-side value for incr or decr",
    STATUS_AUTH_ERROR: b"Auth failure.",
    STATUS_AUTH_CONTINUE: b"",
    STATUS_UNKNOWN_COMMAND: b"Unknown command",
    STATUS_ENOMEM: b"Out of memory",
    STATUS_NOT_SUPPORTED: b"Not supported",
    STATUS_EINTERNAL: b"Internal error",
    STATUS_EBUSY: b"Busy",
    STATUS_ETMPFAIL: b"Temporary failure",
}


def status_message(status: int) -> bytes:
    """memcached's error text for ``status`` (``b"UNHANDLED ERROR"`` if it has none)."""
    return STATUS_MESSAGES.get(status, b"UNHANDLED ERROR")


def base_opcode(opcode: int) -> int:
    """The non-quiet opcode of ``opcode`` (itself when it is not quiet)."""
    return QUIET_BASE.get(opcode, opcode)


def is_quiet(opcode: int) -> bool:
    return opcode in QUIET_BASE


def returns_key(opcode: int) -> bool:
    """True for GETK/GETKQ/GATK/GATKQ, whose replies carry the key."""
    return opcode in KEY_RETURNING
