"""Unit and property tests of the sans-IO text/meta request parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scatterhoard.protocol import text as t

COMMANDS = [b"get a b\r\n", b"gets a\r\n", b"gat 10 a\r\n", b"set k 1 2 3\r\nabc\r\n",
            b"cas k 0 0 1 99 noreply\r\nx\r\n", b"delete k\r\n", b"incr k 5\r\n", b"touch k 10\r\n",
            b"flush_all 5\r\n", b"version\r\n", b"stats items\r\n", b"mg k v c t\r\n",
            b"ms k 2 T5 F3\r\nhi\r\n", b"md k q\r\n", b"ma k D4 N0\r\n", b"mn\r\n", b"bogus\r\n"]
# sets the whole-set shortcut takes, and neighbours it must leave to the general path (one command each)
SETS = [b"set k 0 0 3 noreply\r\nabc\r\n", b"set key:1 123456789 987654321 0\r\n\r\n",
        b"set k  0 0 1\r\nx\r\n", b"set k 4294967297 0 1\r\nx\r\n", b"set k 0 -1 2\r\nxy\r\n",
        b"set k 0 0 2 noreplY\r\nxy\r\n", b"set k 0 0 1\nz\r\n", b"set k 0 0 01\r\nz\r\n"]
ODD_SETS = [b"set k 0 0 2 noreply extra\r\nxy\r\n", b"set " + b"k" * 251 + b" 0 0 1\r\nz\r\n",
            b"set k 0 0 2\r\nxyz\r\n", b"set k 0 0\r\n"]


def test_whole_sets_read_as_the_general_path_reads_them() -> None:
    """A set whose data block is in the same read takes a shortcut; fed a byte at a time every one
    goes through the general path: the commands must be the same, case by case."""
    for cmd in [c for c in COMMANDS if c.startswith(b"set")] + SETS + ODD_SETS:
        whole = t.TextRequestParser(max_item_size=4096).feed(cmd + b"version\r\n")
        p = t.TextRequestParser(max_item_size=4096)
        bytewise = [c for i in range(len(cmd)) for c in p.feed(cmd[i:i + 1])] + p.feed(b"version\r\n")
        assert whole == bytewise, cmd
    (big,) = t.TextRequestParser(max_item_size=100).feed(b"set k 0 0 60\r\n" + b"v" * 60 + b"\r\n")
    assert isinstance(big, t.TooLarge)


def test_single_set_is_exactly_one_whole_plain_set_with_a_reply() -> None:
    """A proxy forwards what single_set accepts as it came: it must be one set the parser reads as
    StoreCmd (same key), expecting a reply, and nothing else in the read."""
    cases = [c for c in COMMANDS if c.startswith(b"set")] + SETS + ODD_SETS + [
        b"set k 0 0 3\r\nabc\r\nget k\r\n", b"set k 0 0 3\r\nabc\r", b"set k 0 0 3\r\nab\r\n\r\n",
        b"set k 0 0 4\r\nab\r\n\r\n", b"set k 0 0 1\r\n\r\r\n", b"get k\r\n", b"set k 0 0 0\r\n\r\n"]
    for cmd in cases:
        key = t.TextRequestParser(max_item_size=4096).single_set(cmd)
        parsed = t.TextRequestParser(max_item_size=4096).feed(cmd)
        plain = (len(parsed) == 1 and isinstance(parsed[0], t.StoreCmd) and parsed[0].command == b"set"
                 and not parsed[0].noreply and cmd.startswith(b"set %s " % parsed[0].key))
        if key is not None:
            assert plain and parsed[0].key == key, cmd
    assert t.TextRequestParser(max_item_size=4096).single_set(b"set k 0 0 3\r\nabc\r\n") == b"k"
    assert t.TextRequestParser(max_item_size=4096).single_set(b"set k 0 0 4\r\nab\r\n\r\n") == b"k"
    assert t.TextRequestParser(max_item_size=40).single_set(b"set k 0 0 3\r\nabc\r\n") is None  # too large
    busy = t.TextRequestParser(max_item_size=4096)
    busy.feed(b"get k")  # a line already begun: the next read is not a request on its own
    assert busy.single_set(b"set k 0 0 3\r\nabc\r\n") is None


@given(st.sampled_from(COMMANDS + SETS + ODD_SETS), st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255)),
                                                              max_size=3))
def test_single_set_agrees_with_the_parser(cmd: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(cmd)
    for pos, byte in edits:
        if pos < len(data):
            data[pos] = byte
    key = t.TextRequestParser(max_item_size=4096).single_set(bytes(data))
    if key is not None:
        parsed = t.TextRequestParser(max_item_size=4096).feed(bytes(data))
        assert len(parsed) == 1 and isinstance(parsed[0], t.StoreCmd), data
        assert parsed[0].key == key and not parsed[0].noreply and parsed[0].command == b"set", data
        assert len(b"set %s %d %d %d\r\n" % (key, parsed[0].flags, parsed[0].exptime, len(parsed[0].value))) \
            + len(parsed[0].value) + 2 <= len(data)


def test_parse_each_command_type() -> None:
    p = t.TextRequestParser()
    cmds = p.feed(b"".join(COMMANDS))
    assert [type(c).__name__ for c in cmds] == [
        "Get", "Get", "Get", "StoreCmd", "StoreCmd", "Delete", "Arith", "Touch", "FlushAll", "Version",
        "Stats", "Meta", "Meta", "Meta", "Meta", "Meta", "ErrorReply"]
    store = cmds[3]
    assert store == t.StoreCmd(b"set", b"k", 1, 2, b"abc", 0, False)
    assert cmds[4] == t.StoreCmd(b"cas", b"k", 0, 0, b"x", 99, True)
    assert cmds[12] == t.Meta(b"ms", b"k", b"k", [("T", b"5"), ("F", b"3")], b"hi")


def test_too_large_is_swallowed_and_the_stream_goes_on() -> None:
    p = t.TextRequestParser(max_item_size=1024)
    data = b"set big 0 0 5000\r\n" + b"x" * 5000 + b"\r\nget a\r\n"
    cmds = p.feed(data[:100]) + p.feed(data[100:3000]) + p.feed(data[3000:])
    assert cmds == [t.TooLarge(b"set", b"big", False), t.Get([b"a"], False, None)]


def test_line_too_long_closes() -> None:
    p = t.TextRequestParser()
    cmds = p.feed(b"x" * (t.MAX_LINE + 10))
    assert cmds == [t.ErrorReply(b"CLIENT_ERROR line too long", close=True)]


def test_long_get_line_is_allowed() -> None:
    keys = [b"key%d" % i for i in range(3000)]
    line = b"get " + b" ".join(keys) + b"\r\n"
    p = t.TextRequestParser()
    out = p.feed(line[:9000]) + p.feed(line[9000:])
    assert out == [t.Get(keys, False, None)]


def test_base64_meta_key() -> None:
    (cmd,) = t.TextRequestParser().feed(b"mg Zm9v b v\r\n")
    assert isinstance(cmd, t.Meta) and cmd.key == b"foo" and cmd.raw_key == b"Zm9v"
    (bad,) = t.TextRequestParser().feed(b"mg !!! b v\r\n")
    assert isinstance(bad, t.ErrorReply)


@given(st.lists(st.sampled_from(COMMANDS + SETS), min_size=1, max_size=20), st.data())
def test_split_anywhere_gives_the_same_commands(cmds: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(cmds)
    whole = t.TextRequestParser().feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    p = t.TextRequestParser()
    pieces = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        pieces += p.feed(stream[prev:cut])
        prev = cut
    assert pieces == whole
    assert len(whole) == len(cmds)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


@settings(max_examples=400)
@given(st.lists(st.sampled_from(COMMANDS + SETS), min_size=1, max_size=8),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6))
def test_mutated_commands_never_raise(cmds: list[bytes], edits: list[tuple[int, int]]) -> None:
    out = t.TextRequestParser(max_item_size=4096).feed(_mutate(b"".join(cmds), edits))
    for c in out:
        assert isinstance(c, t.TextCommand)


@settings(max_examples=300)
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(data: bytes) -> None:
    p = t.TextRequestParser(max_item_size=4096)
    for c in p.feed(data) + p.feed(b"\r\n"):
        assert isinstance(c, t.TextCommand)


@settings(max_examples=300)
@given(st.lists(st.sampled_from(COMMANDS + SETS), min_size=1, max_size=8),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6), st.data())
def test_mutated_stream_split_anywhere_parses_the_same(cmds: list[bytes], edits: list[tuple[int, int]],
                                                       data: st.DataObject) -> None:
    # the parser keeps a cut-short line or data block and goes on only when what it lacked arrives:
    # whatever the cuts, garbage included, the commands are those of the whole stream
    stream = _mutate(b"".join(cmds), edits)
    whole = t.TextRequestParser(max_item_size=4096).feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    p = t.TextRequestParser(max_item_size=4096)
    pieces: list[t.TextCommand] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        pieces += p.feed(stream[prev:cut])
        prev = cut
    assert pieces == whole


@settings(max_examples=500)
@given(st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"x" * 30, b"k" * 7]), max_size=40),
       st.integers(min_value=0, max_value=400))
def test_line_scans_find_what_bytes_find_finds(parts: list[bytes], pos: int) -> None:
    """find_lf/find_crlf scan SCAN bytes in place and hand the rest to bytes.find (a CRLF may
    straddle the hand-over, or sit behind a lone LF): both agree with bytes.find from any start."""
    view = b"".join(parts)
    pos = min(pos, len(view))
    assert t.find_lf(view, pos, len(view)) == view.find(b"\n", pos)
    assert t.find_crlf(view, pos, len(view)) == view.find(b"\r\n", pos)
    for cut in range(max(0, t.SCAN - 2), t.SCAN + 2):  # a CRLF exactly at the hand-over
        line = b"y" * cut + b"\r\n"
        assert t.find_crlf(line, 0, len(line)) == cut and t.find_lf(line, 0, len(line)) == cut + 1
