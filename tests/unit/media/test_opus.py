import contextlib
import random

import numpy as np
import pytest

from services.media.opus import OpusDecoder, OpusEncoder, OpusError

RATE = 8000
FRAME = RATE // 50  # 20 ms


def tone(seconds: float = 1.0, freq: float = 440.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 12000).astype(np.int16)


def frames(pcm: np.ndarray, size: int = FRAME) -> list[bytes]:
    return [pcm[i : i + size].tobytes() for i in range(0, len(pcm) - size + 1, size)]


def encode_tone() -> list[bytes]:
    encoder = OpusEncoder(RATE)
    try:
        return [encoder.encode(frame) for frame in frames(tone())]
    finally:
        encoder.close()


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


def test_round_trip_keeps_the_tone() -> None:
    packets = encode_tone()
    assert len(packets) == 50
    assert all(0 < len(p) <= 1275 for p in packets)
    decoder = OpusDecoder(RATE)
    out = np.concatenate([np.frombuffer(decoder.decode(p), np.int16) for p in packets])
    decoder.close()
    assert len(out) == RATE
    decoded = out[RATE // 10 :]
    assert abs(peak_hz(decoded, RATE) - 440) <= 10
    assert np.abs(decoded).max() > 3000  # not silence


def test_decode_at_48k_from_8k_encoder() -> None:
    packets = encode_tone()
    decoder = OpusDecoder(48000)
    outs = [decoder.decode(p) for p in packets[:5]]
    assert all(len(o) == 960 for o in outs)
    assert outs[0].format == "h"
    assert OpusDecoder.packet_samples(packets[0], 48000) == 960
    assert OpusDecoder.packet_samples(packets[0], RATE) == FRAME


def test_inputs_of_every_buffer_kind() -> None:
    pcm = tone(0.02)
    encoder = OpusEncoder(RATE)
    decoder = OpusDecoder(RATE)
    for data in (
        pcm.tobytes(),
        bytearray(pcm.tobytes()),
        memoryview(bytearray(pcm.tobytes())).cast("h"),
        memoryview(pcm.tobytes()),
    ):
        packet = encoder.encode(data)
        assert len(decoder.decode(memoryview(packet))) == FRAME
        assert len(decoder.decode(bytearray(packet))) == FRAME


def test_conceal_and_fec() -> None:
    packets = encode_tone()
    decoder = OpusDecoder(RATE)
    for p in packets[:10]:
        decoder.decode(p)
    assert len(decoder.conceal(FRAME)) == FRAME  # packets[10] lost: conceal it...
    fec = decoder.decode(packets[12], fec=True, samples=FRAME)  # ...or recover packets[11]
    assert len(fec) == FRAME
    assert len(decoder.decode(packets[12], fec=True)) == FRAME  # duration taken from the packet
    assert len(decoder.decode(packets[12])) == FRAME


def test_stereo_round_trip() -> None:
    pcm = np.repeat(tone(0.02, rate=48000), 2)  # interleaved L/R
    encoder = OpusEncoder(48000, 2, bitrate=64000)
    decoder = OpusDecoder(48000, 2)
    assert len(decoder.decode(encoder.encode(pcm.tobytes()))) == 960 * 2


def test_garbage_raises_and_never_crashes() -> None:
    decoder = OpusDecoder(RATE)
    with pytest.raises(OpusError, match=r"^opus: "):
        decoder.decode(b"")
    with pytest.raises(OpusError):
        decoder.decode(b"", fec=True)
    with pytest.raises(OpusError):
        OpusDecoder.packet_samples(b"", RATE)
    with pytest.raises(OpusError, match="corrupted"):
        decoder.decode(b"\x01" + bytes(49))  # code 1: two equal frames need an even length
    rng = random.Random(1234)
    payload = rng.randbytes(50)
    with contextlib.suppress(OpusError):
        assert len(decoder.decode(payload)) % 20 == 0  # a multiple of 2.5 ms at 8 kHz
    # Random bytes are often well-formed packets: whatever happens, it is OpusError or PCM.
    for size in (1, 2, 3, 50, 400, 1500):
        for _ in range(200):
            junk = rng.randbytes(size)
            with contextlib.suppress(OpusError):
                decoder.decode(junk)
            with contextlib.suppress(OpusError):
                decoder.decode(junk, fec=True, samples=FRAME)
            with contextlib.suppress(OpusError):
                OpusDecoder.packet_samples(junk, 48000)
    for bad in (0, -1, 10**6, 7):  # 7 samples is not a multiple of 2.5 ms
        with pytest.raises(OpusError):
            decoder.conceal(bad)
    with pytest.raises(OpusError):
        decoder.decode(b"\x00" * 10, samples=0)


def test_bad_encoder_input_and_parameters() -> None:
    encoder = OpusEncoder(RATE)
    for pcm in (b"", b"\x00", bytes(2 * 7), bytearray(), bytes(2 * FRAME * 7)):
        with pytest.raises(OpusError):
            encoder.encode(pcm)
    with pytest.raises(OpusError):
        OpusEncoder(44100)
    with pytest.raises(OpusError):
        OpusEncoder(RATE, complexity=11)
    with pytest.raises(OpusError):
        OpusDecoder(RATE, channels=3)


def test_close_twice_and_use_after_close() -> None:
    encoder = OpusEncoder()
    decoder = OpusDecoder()
    packet = encoder.encode(bytes(2 * FRAME))
    encoder.close()
    encoder.close()
    decoder.close()
    decoder.close()
    with pytest.raises(OpusError, match="closed"):
        encoder.encode(bytes(2 * FRAME))
    with pytest.raises(OpusError, match="closed"):
        decoder.decode(packet)
    with pytest.raises(OpusError, match="closed"):
        decoder.conceal(FRAME)
    del encoder, decoder  # __del__ after close() must not free again
