"""Conversions between every pair of codecs the media tier knows: a tone survives each."""

import itertools

import numpy as np
import pytest

from services.media.core import MediaCore
from services.media.g711 import ulaw_decode, ulaw_encode
from services.media.opus import OpusEncoder
from services.media.pcm_codecs import G722Codec, OpusCodec, resample
from services.media.rtp import RtpPacket, RtpSession
from services.media.sdp import G722, OPUS, PCMU, Codec
from services.media.transcode import Transcoder, UnsupportedCodecError

from .test_core import FROM_BROWSER, make_core, seqs, steps, to_trunk
from .test_core import rtp as rtp_packet
from .test_core import tone as tone16

TRUNK = ("192.0.2.10", 40000)


def tone(freq: float, samples: int, rate: int) -> np.ndarray:
    return (np.sin(2 * np.pi * freq * np.arange(samples) / rate) * 8000).astype(np.int16)


def peak(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


def encoder_for(codec: Codec):  # type: ignore[no-untyped-def]
    """(encode 20 ms of samples, decode, rate) for a codec, independent of the Transcoder."""
    name = codec.name.upper()
    if name == "PCMU":
        return (lambda pcm: ulaw_encode(pcm)), ulaw_decode, 8000
    if name == "G722":
        g722 = G722Codec()
        return g722.encode, g722.decode, 16000
    if name == "OPUS":
        opus = OpusCodec(16000)
        return opus.encode, opus.decode, 16000
    raise AssertionError(name)


@pytest.mark.parametrize(
    ("source", "target"),
    [(OPUS, G722), (G722, OPUS), (PCMU, G722), (G722, PCMU), (OPUS, PCMU), (PCMU, OPUS)],
    ids=lambda c: c.name,
)
def test_a_tone_survives_the_conversion(source: Codec, target: Codec) -> None:
    transcoder = Transcoder(source, target)
    encode, _, rate = encoder_for(source)
    _, decode, target_rate = encoder_for(target)
    frame = rate // 50
    pcm = tone(700, rate, rate)
    heard = []
    for n in range(50):
        converted = transcoder.to_trunk(encode(pcm[n * frame : (n + 1) * frame]))
        assert converted is not None
        heard.append(np.array(decode(converted), dtype=np.int16))
    out = np.concatenate(heard[10:])
    assert abs(peak(out, target_rate) - 700) <= 20
    assert np.abs(out).max() > 2000
    assert transcoder.errors == 0
    transcoder.close()


def test_resampling_keeps_the_tone() -> None:
    pcm = tone(1000, 8000, 8000)
    up = resample(pcm, 8000, 16000)
    assert len(up) == 16000 and abs(peak(up, 16000) - 1000) <= 5
    down = resample(up, 16000, 8000)
    assert len(down) == 8000 and abs(peak(down, 8000) - 1000) <= 5


def test_same_codec_is_not_a_conversion() -> None:
    with pytest.raises(UnsupportedCodecError):
        Transcoder(G722, G722)
    with pytest.raises(UnsupportedCodecError):
        Transcoder(Codec("iLBC", 97, 8000), PCMU)


def test_g722_passes_through_untouched_on_its_8000_clock() -> None:
    core = MediaCore(G722, 0xB0B, rtp_timeout=30, now=0.0, rtcp=False)
    core.apply_trunk_answer(TRUNK, G722, None, 0.0)
    assert core.passthrough is True
    trunk = RtpSession(TRUNK, 9, ssrc=5)
    payloads = [bytes([n]) * 160 for n in range(5)]
    out = []
    for n, payload in enumerate(payloads):
        packet = bytes(trunk.packet_for(payload, 160, n * 0.02))
        out += [RtpPacket.parse(bytes(p)) for p in core.receive_trunk(packet, TRUNK, n * 0.02)]
    assert [p.payload for p in out] == payloads
    assert {p.payload_type for p in out} == {9}
    stamps = [p.timestamp for p in out]
    assert [b - a for a, b in itertools.pairwise(stamps)] == [160] * 4


# --- lost and late packets from an Opus browser ---------------------------------


@pytest.mark.parametrize("lost", [1, 3])
def test_lost_opus_packets_are_stood_in_for_toward_the_trunk(lost: int) -> None:
    core = make_core(OPUS, PCMU)
    encoder = OpusEncoder(8000)
    pcm = tone16(440, 8000)
    out: list[RtpPacket] = []
    for i in range(50):
        payload = encoder.encode(pcm[160 * i : 160 * (i + 1)].tobytes())
        if 20 <= i < 20 + lost:
            continue  # lost on the way from the browser
        out += to_trunk(
            core, rtp_packet(111, 300 + i, 4800 + 960 * i, FROM_BROWSER, payload), 0.02 * i
        )
    encoder.close()
    # Every 20 ms of the browser's stream reaches the trunk, numbered without a gap.
    assert len(out) == 50
    assert steps(seqs(out), 1 << 16) == [1] * 49
    assert steps([p.timestamp for p in out], 1 << 32) == [160] * 49
    heard = ulaw_decode(b"".join(p.payload for p in out[10:]))
    assert abs(peak(heard, 8000) - 440) <= 15


def test_a_long_browser_gap_stays_a_gap() -> None:
    core = make_core(OPUS, PCMU)
    encoder = OpusEncoder(8000)
    out: list[RtpPacket] = []
    for i in [*range(10), *range(20, 30)]:
        payload = encoder.encode(tone16(440, 160).tobytes())
        out += to_trunk(core, rtp_packet(111, i, 960 * i, FROM_BROWSER, payload), 0.02 * i)
    encoder.close()
    assert len(out) == 20
    assert steps(seqs(out), 1 << 16) == [1] * 9 + [11] + [1] * 9


def test_a_late_opus_packet_after_its_stand_in_is_dropped() -> None:
    core = make_core(OPUS, PCMU)
    encoder = OpusEncoder(8000)
    payloads = [encoder.encode(tone16(440, 160).tobytes()) for _ in range(12)]
    encoder.close()
    out: list[RtpPacket] = []
    for i in [*range(5), 6, 7, 5, *range(8, 12)]:  # 5 comes after 6 and 7
        out += to_trunk(
            core, rtp_packet(111, 300 + i, 960 * i, FROM_BROWSER, payloads[i]), 0.02 * i
        )
    # Twelve packets reach the trunk, each number once: 5's stand-in, not 5 itself.
    assert len(out) == 12
    assert steps(seqs(out), 1 << 16) == [1] * 11
