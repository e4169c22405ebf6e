"""The one address parser: modern and distcache (libnal) forms."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scatterhoard.address import Address, parse_address
from scatterhoard.errors import AddressError, HoardError


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:11211", Address("tcp", host="127.0.0.1", port=11211)),
    ("localhost:1", Address("tcp", host="localhost", port=1)),
    ("[::1]:9", Address("tcp", host="::1", port=9)),
    ("unix:/tmp/x.sock", Address("unix", path="/tmp/x.sock")),
    ("/tmp/x.sock", Address("unix", path="/tmp/x.sock")),
    ("IP:10.0.0.1:9001", Address("tcp", host="10.0.0.1", port=9001)),
    ("IPv4:localhost:9001", Address("tcp", host="localhost", port=9001)),
    ("IP:9001", Address("tcp", host="0.0.0.0", port=9001)),
    ("UNIX:/run/dc.sock", Address("unix", path="/run/dc.sock")),
    ("FD:3", Address("fd", fd=3)),
    (":80", Address("tcp", host="0.0.0.0", port=80)),
])
def test_forms(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


def test_default_port() -> None:
    assert parse_address("10.1.2.3", default_port=11211) == Address("tcp", host="10.1.2.3", port=11211)
    assert parse_address("[::1]", default_port=5) == Address("tcp", host="::1", port=5)


@pytest.mark.parametrize("text", ["", "host", "host:port", "host:70000", "FD:x", "FD:-1", "unix:",
                                  "[::1", "[::1]x", "::1"])
def test_bad_addresses_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    assert isinstance(info.value, HoardError)
    assert "\n" not in str(info.value)


def test_round_trip_str() -> None:
    for text in ["127.0.0.1:5", "[::1]:6", "unix:/a/b", "FD:4"]:
        assert str(parse_address(text)) == text


@given(st.text(max_size=40))
def test_never_raises_anything_else(text: str) -> None:
    try:
        parse_address(text)
    except AddressError:
        pass
