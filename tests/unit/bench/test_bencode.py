import pytest

from bench import bencode
from bench.bencode import BencodeError, decode, decode_prefix, encode


def test_encodes_the_four_kinds() -> None:
    assert encode(42) == b"i42e"
    assert encode(-7) == b"i-7e"
    assert encode(0) == b"i0e"
    assert encode(b"spam") == b"4:spam"
    assert encode("") == b"0:"
    assert encode([1, "a"]) == b"li1e1:ae"
    assert encode({}) == b"de"


def test_strings_are_utf8_and_lengths_count_bytes() -> None:
    assert encode("é") == b"2:\xc3\xa9"
    assert decode(b"2:\xc3\xa9", text=True) == "é"


def test_dictionary_keys_are_sorted_as_bytes() -> None:
    assert encode({"b": 1, "a": 2, "call-id": "x"}) == b"d1:ai2e1:bi1e7:call-id1:xe"


def test_bools_are_integers() -> None:
    assert encode(True) == b"i1e"
    assert encode(False) == b"i0e"


def test_nested_round_trip() -> None:
    value = {
        "command": "offer",
        "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n",
        "flags": ["trust-address", "symmetric"],
        "rtcp-mux": ["demux"],
        "totals": {"RTP": {"packets": 12, "bytes": 2064}},
    }
    assert decode(encode(value), text=True) == value


def test_decode_gives_bytes_unless_text() -> None:
    assert decode(b"d3:sdp3:v=0e") == {"sdp": b"v=0"}
    assert decode(b"d3:sdp3:v=0e", text=True) == {"sdp": "v=0"}


def test_binary_strings_survive() -> None:
    raw = bytes(range(256))
    assert decode(encode(raw)) == raw


def test_decode_prefix_reports_the_end() -> None:
    assert decode_prefix(b"i5ei6e") == (5, 3)
    assert decode_prefix(b"i5ei6e", 3) == (6, 6)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"i12",
        b"i-0e",
        b"i03e",
        b"ie",
        b"iabce",
        b"5:abc",
        b"05:abcde",
        b"l1:a",
        b"d1:a",
        b"di1ei2ee",
        b"x",
        b"i1ei2e",
    ],
)
def test_malformed_input_is_refused(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


def test_deep_nesting_is_refused_not_recursed() -> None:
    with pytest.raises(BencodeError, match="deep"):
        decode(b"l" * 1000 + b"e" * 1000)


def test_unencodable_values() -> None:
    with pytest.raises(BencodeError):
        encode(1.5)
    with pytest.raises(BencodeError):
        encode({1: "a"})
    with pytest.raises(BencodeError):
        encode(None)


def test_error_is_a_value_error() -> None:
    assert issubclass(bencode.BencodeError, ValueError)
