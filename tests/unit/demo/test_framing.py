"""Cutting a SIP TCP stream into messages."""

from __future__ import annotations

import pytest

from services.demo.framing import FramingError, split_messages

ONE = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 4\r\n\r\nbody"
TWO = b"BYE sip:x SIP/2.0\r\nl: 0\r\n\r\n"


def test_splits_keepalives_and_partial_messages() -> None:
    buffer = bytearray(b"\r\n\r\n" + ONE + TWO + TWO[:10])
    assert split_messages(buffer) == [ONE, TWO]
    assert buffer == TWO[:10]
    buffer += TWO[10:]
    assert split_messages(buffer) == [TWO]
    assert buffer == b""


def test_waits_for_the_whole_body() -> None:
    buffer = bytearray(ONE[:-2])
    assert split_messages(buffer) == []
    buffer += ONE[-2:]
    assert split_messages(buffer) == [ONE]


@pytest.mark.parametrize("data", [b"X\r\nContent-Length: x\r\n\r\n", b"X" * 70000])
def test_unframeable_streams(data: bytes) -> None:
    with pytest.raises(FramingError):
        split_messages(bytearray(data))
