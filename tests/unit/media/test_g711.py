import numpy as np
import pytest

from services.media import g711

# Reference values of the ITU-T G.711 reference code (as in CPython's audioop).
SAMPLES = np.array([0, 1, -1, 100, -100, 1000, -1000, 8000, -8000, 32767, -32768], np.int16)
ULAW = bytes([255, 255, 126, 242, 114, 206, 78, 160, 32, 128, 0])
ALAW = bytes([213, 213, 85, 211, 83, 250, 122, 138, 10, 170, 42])


def test_known_encodings() -> None:
    assert g711.ulaw_encode(SAMPLES) == ULAW
    assert g711.alaw_encode(SAMPLES) == ALAW


def test_silence() -> None:
    silence = np.zeros(160, np.int16)
    assert g711.ulaw_encode(silence) == b"\xff" * 160
    assert g711.alaw_encode(silence) == b"\xd5" * 160


def test_known_decodings() -> None:
    assert g711.ulaw_decode(bytes([0x00, 0x7F, 0x80, 0xFF, 0x10])).tolist() == [
        -32124,
        0,
        32124,
        0,
        -15996,
    ]
    assert g711.alaw_decode(bytes([0x00, 0x55, 0xD5, 0x80, 0x2A])).tolist() == [
        -5504,
        -8,
        8,
        5504,
        -32256,
    ]


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_round_trip_error_is_bounded(name: str) -> None:
    encode, decode = g711.CODECS[name]
    pcm = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    back = decode(encode(pcm)).astype(np.int32)
    error = np.abs(back - pcm.astype(np.int32))
    # Logarithmic quantisation: the step grows with the magnitude (at most 1/16 of it
    # plus the smallest step), and clipping costs a little at full scale.
    bound = np.abs(pcm.astype(np.int32)) // 16 + 16
    assert np.all(error <= np.maximum(bound, 1100 * (np.abs(pcm) > 32000)))


@pytest.mark.parametrize("name", ["PCMU", "PCMA"])
def test_every_code_is_stable(name: str) -> None:
    encode, decode = g711.CODECS[name]
    codes = bytes(range(256))
    # Decoding then encoding gives back the same code (except µ-law's two zeros).
    again = encode(decode(codes))
    differ = [c for c, a in zip(codes, again, strict=True) if c != a]
    assert differ in ([], [0x7F])


def test_decode_dtype_and_length() -> None:
    pcm = g711.ulaw_decode(b"\x00" * 160)
    assert pcm.dtype == np.int16
    assert len(pcm) == 160
