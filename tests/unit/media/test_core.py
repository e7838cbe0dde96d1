"""``MediaCore`` on a fake clock: what each side of the call would hear and see.

No sockets: packets go in as bytes with a float ``now`` and come out as the
core returns them (copied at once, since the core reuses its buffers).
"""

import itertools
import random
from collections.abc import Iterable

import numpy as np
import pytest

from proto.events import LegQuality
from services.media.core import MediaCore, MediaTimedOut
from services.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from services.media.opus import OpusDecoder, OpusEncoder
from services.media.rtp import Address, RtpPacket
from services.media.sdp import OPUS, PCMA, PCMU, Codec

BROWSER_SSRC = 0x0B0B0B0B
"Our SSRC toward the browser (the one the WebRTC transport announced)."
FROM_BROWSER = 0x5EED0001
"The browser's own SSRC."
TRUNK: Address = ("203.0.113.5", 40000)
OTHER: Address = ("203.0.113.9", 41000)
EVENT_PT = 101


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return bytes(RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, marker))


def parsed(packets: Iterable[bytes | memoryview]) -> list[RtpPacket]:
    return [RtpPacket.parse(bytes(p)) for p in packets]


def make_core(
    browser: Codec = PCMU,
    trunk: Codec | None = PCMU,
    dtmf_pt: int | None = EVENT_PT,
    rtp_timeout: float = 5.0,
) -> MediaCore:
    # RTCP has tests of its own (test_rtcp.py): its timers stay out of these.
    core = MediaCore(browser, BROWSER_SSRC, rtp_timeout=rtp_timeout, now=0.0, rtcp=False)
    if trunk is not None:
        assert core.apply_trunk_answer(TRUNK, trunk, dtmf_pt, 0.0)
    return core


def tone(freq: float, samples: int, rate: int = 8000) -> np.ndarray:
    t = np.arange(samples) / rate
    return (np.sin(2 * np.pi * freq * t) * 10000).astype(np.int16)


def peak_hz(pcm: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


def to_browser(core: MediaCore, data: bytes, now: float, addr: Address = TRUNK) -> list[RtpPacket]:
    return parsed(core.receive_trunk(data, addr, now))


def to_trunk(core: MediaCore, data: bytes, now: float) -> list[RtpPacket]:
    return parsed(core.receive_browser(data, now))


def trunk_quality(core: MediaCore) -> LegQuality:
    _browser, trunk = core.quality()
    assert trunk is not None
    return trunk


def seqs(packets: list[RtpPacket]) -> list[int]:
    return [p.sequence_number for p in packets]


def steps(values: list[int], modulo: int) -> list[int]:
    return [(b - a) % modulo for a, b in itertools.pairwise(values)]


def trunk_voice(
    core: MediaCore, seq: int, ts: int, ssrc: int, now: float, count: int, addr: Address = TRUNK
) -> list[RtpPacket]:
    """``count`` 20 ms packets from the trunk; what the browser gets."""
    out: list[RtpPacket] = []
    for i in range(count):
        payload = bytes([(seq + i) & 0xFF]) * 160
        packet = rtp(0, seq + i, ts + 160 * i, ssrc, payload)
        out += to_browser(core, packet, now + 0.02 * i, addr)
    return out


def browser_voice(
    core: MediaCore, seq: int, ts: int, now: float, count: int, pt: int = 0
) -> list[RtpPacket]:
    """``count`` 20 ms packets from the browser; what the trunk gets."""
    out: list[RtpPacket] = []
    for i in range(count):
        payload = bytes([(seq + i) & 0xFF]) * 160
        out += to_trunk(core, rtp(pt, seq + i, ts + 160 * i, FROM_BROWSER, payload), now + 0.02 * i)
    return out


# -- passthrough -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("browser", "trunk"),
    [(PCMU, PCMU), (PCMA, PCMA), (PCMU, Codec("PCMU", 96, 8000))],
    ids=["pcmu", "pcma", "pcmu-as-96"],
)
def test_same_codec_passes_payloads_untouched_with_our_headers(
    browser: Codec, trunk: Codec
) -> None:
    core = make_core(browser, trunk)
    assert core.passthrough is True
    payload = bytes(range(160))
    (up,) = to_trunk(core, rtp(browser.payload_type, 7, 1000, FROM_BROWSER, payload), 0.0)
    assert up.payload == payload
    assert up.payload_type == trunk.payload_type
    assert up.ssrc != FROM_BROWSER
    (down,) = to_browser(core, rtp(trunk.payload_type, 9, 5000, 0x77, payload[::-1]), 0.0)
    assert down.payload == payload[::-1]
    assert down.payload_type == browser.payload_type
    assert down.ssrc == BROWSER_SSRC
    assert down.marker  # the first packet of our stream
    later = browser_voice(core, 8, 1160, 0.02, 50, browser.payload_type)
    assert {p.ssrc for p in later} == {up.ssrc}  # one SSRC of ours toward the trunk
    assert core.trunk_remote == TRUNK


def test_nothing_reaches_the_trunk_before_its_answer() -> None:
    core = make_core(trunk=None)
    assert core.passthrough is None
    assert browser_voice(core, 1, 0, 0.0, 5) == []
    assert core.receive_trunk(rtp(0, 1, 0, 0x77, b"\xff" * 160), TRUNK, 0.1) == []
    core.apply_trunk_answer(TRUNK, PCMU, EVENT_PT, 0.2)
    assert len(browser_voice(core, 6, 800, 0.2, 1)) == 1


def test_hold_stops_the_trunk_bound_audio_only() -> None:
    core = make_core()
    assert len(browser_voice(core, 1, 0, 0.0, 3)) == 3
    core.set_hold(True, 0.06)
    assert browser_voice(core, 4, 480, 0.06, 50) == []
    # Music on hold from the trunk still reaches the browser.
    assert len(trunk_voice(core, 1, 0, 0x77, 0.06, 10)) == 10
    assert core.trunk_remote == TRUNK


# -- sequence and timestamp continuity ---------------------------------------------------


def test_a_new_trunk_ssrc_continues_the_browser_stream() -> None:
    core = make_core()
    before = trunk_voice(core, 100, 50_000, 0x1111, 0.0, 10)
    # A transfer: another source, its own numbering, 100 ms after the last packet.
    after = trunk_voice(core, 40_000, 9_999_999, 0x2222, 0.18 + 0.1, 10)
    stream = before + after
    assert steps(seqs(stream), 1 << 16) == [1] * 19
    assert (after[0].timestamp - before[-1].timestamp) % (1 << 32) == 800
    assert steps([p.timestamp for p in after], 1 << 32) == [160] * 9
    assert after[0].marker and not after[1].marker
    assert {p.ssrc for p in stream} == {BROWSER_SSRC}


def test_a_new_trunk_ssrc_never_overlaps_the_last_packet() -> None:
    core = make_core()
    # 40 ms packets; the new source's first one arrives in the same instant (jitter).
    out = [
        to_browser(core, rtp(0, 10 + i, 320 * i, 0x1111, b"\x01" * 320), 0.04 * i)[0]
        for i in range(5)
    ]
    (new,) = to_browser(core, rtp(0, 3, 99_999, 0x2222, b"\x02" * 320), 0.16)
    assert steps([p.timestamp for p in [*out, new]], 1 << 32) == [320] * 5
    assert steps(seqs([*out, new]), 1 << 16) == [1] * 5


def test_a_new_trunk_ssrc_moves_an_opus_browser_clock_at_48k() -> None:
    core = make_core(OPUS, PCMU)
    before = trunk_voice(core, 100, 0, 0x1111, 0.0, 5)
    after = trunk_voice(core, 7, 123_456, 0x2222, 0.08 + 0.5, 5)
    assert steps(seqs(before + after), 1 << 16) == [1] * 9
    assert (after[0].timestamp - before[-1].timestamp) % (1 << 32) == 24_000  # 0.5 s


def test_early_media_then_final_answer_elsewhere_is_one_stream() -> None:
    core = make_core(trunk=None)
    core.apply_trunk_answer(OTHER, PCMU, EVENT_PT, 0.0)  # 183 with SDP
    early = trunk_voice(core, 500, 0, 0x1111, 0.0, 10, OTHER)
    assert core.apply_trunk_answer(OTHER, PCMU, EVENT_PT, 0.2) is False  # same SDP again
    early += trunk_voice(core, 510, 1600, 0x1111, 0.2, 5, OTHER)
    assert core.apply_trunk_answer(TRUNK, PCMU, EVENT_PT, 0.3)  # the 200 names another place
    # A straggler of the announcement is not mixed in.
    assert trunk_voice(core, 515, 2400, 0x1111, 0.3, 1, OTHER) == []
    final = trunk_voice(core, 9, 777, 0x2222, 0.32, 10)
    assert len(early) == 15 and len(final) == 10
    assert steps(seqs(early + final), 1 << 16) == [1] * 24
    assert final[0].marker
    assert core.trunk_remote == TRUNK


def test_trunk_loss_stays_visible_to_the_browser() -> None:
    core = make_core()
    # Across the wrap of both counters: 0, 1 and 2 are lost.
    out = trunk_voice(core, 65533, 0xFFFFFE00, 0x77, 0.0, 3)
    out += trunk_voice(core, 65539, 0xFFFFFE00 + 960, 0x77, 0.12, 3)
    assert steps(seqs(out), 1 << 16) == [1, 1, 4, 1, 1]
    assert steps([p.timestamp for p in out], 1 << 32) == [160, 160, 640, 160, 160]
    assert not any(p.marker for p in out[1:])
    assert trunk_quality(core).lost == 3


def test_a_late_packet_keeps_its_own_number() -> None:
    core = make_core()
    order = [10, 11, 13, 12, 14]
    out = [
        to_browser(core, rtp(0, seq, 160 * seq, 0x77, bytes([seq]) * 160), 0.02 * i)[0]
        for i, seq in enumerate(order)
    ]
    first = out[0].sequence_number
    assert [(s - first) % (1 << 16) for s in seqs(out)] == [0, 1, 3, 2, 4]
    assert [(p.timestamp - out[0].timestamp) % (1 << 32) for p in out] == [0, 160, 480, 320, 640]
    assert [p.payload[0] for p in out] == order
    # The packet after the late one continues from the newest, not from the late one.
    (nxt,) = to_browser(core, rtp(0, 15, 2400, 0x77, b"\x01" * 160), 0.1)
    assert nxt.sequence_number == (first + 5) & 0xFFFF


@pytest.mark.parametrize("hold", [10.0, 3.0])
def test_resuming_from_hold_moves_the_trunk_clock_by_the_hold(hold: float) -> None:
    core = make_core()
    before = browser_voice(core, 1, 0, 0.0, 50)  # until t = 0.98
    core.set_hold(True, 1.0)
    count = round(hold / 0.02)
    assert browser_voice(core, 51, 8000, 1.0, count) == []  # the browser goes on sending
    core.set_hold(False, 1.0 + hold)
    (after,) = browser_voice(core, 51 + count, 8000 + 160 * count, 1.0 + hold, 1)
    assert after.sequence_number == (before[-1].sequence_number + 1) & 0xFFFF
    assert after.marker
    elapsed = (after.timestamp - before[-1].timestamp) % (1 << 32)
    assert abs(elapsed - hold * 8000) <= 2 * 160


def test_an_opus_trunk_keeps_its_48k_clock_across_a_hold() -> None:
    # Opus on both legs relays as it is: the trunk's media clock is 48 kHz, not 8 kHz.
    core = make_core(OPUS, OPUS)
    assert core.passthrough is True
    frame = b"\xf8\xff\xfe"
    before = [
        to_trunk(core, rtp(111, i, 960 * i, FROM_BROWSER, frame), 0.02 * i)[0] for i in range(50)
    ]
    assert steps([p.timestamp for p in before], 1 << 32) == [960] * 49
    core.set_hold(True, 1.0)
    core.set_hold(False, 11.0)
    (after,) = to_trunk(core, rtp(111, 600, 960 * 600, FROM_BROWSER, frame), 11.0)
    elapsed = (after.timestamp - before[-1].timestamp) % (1 << 32)
    assert abs(elapsed - 10 * 48000) <= 2 * 960


# -- transcoding --------------------------------------------------------------------------


def test_opus_browser_to_pcmu_trunk_keeps_a_tone() -> None:
    core = make_core(OPUS, PCMU)
    assert core.passthrough is False
    encoder = OpusEncoder(8000)
    pcm = tone(440, 8000)
    out: list[RtpPacket] = []
    for i in range(50):
        payload = encoder.encode(pcm[160 * i : 160 * (i + 1)].tobytes())
        out += to_trunk(core, rtp(111, 300 + i, 4800 + 960 * i, FROM_BROWSER, payload), 0.02 * i)
    encoder.close()
    assert len(out) == 50
    assert {p.payload_type for p in out} == {0}
    assert {len(p.payload) for p in out} == {160}
    assert steps(seqs(out), 1 << 16) == [1] * 49
    assert steps([p.timestamp for p in out], 1 << 32) == [160] * 49
    heard = ulaw_decode(b"".join(p.payload for p in out[10:]))
    assert abs(peak_hz(heard) - 440) <= 15
    assert np.abs(heard).max() > 2000


def test_pcmu_trunk_to_opus_browser_keeps_a_tone() -> None:
    core = make_core(OPUS, PCMU)
    data = ulaw_encode(tone(1000, 8000))
    out: list[RtpPacket] = []
    for i in range(50):
        payload = data[160 * i : 160 * (i + 1)]
        out += to_browser(core, rtp(0, 60_000 + i, 160 * i, 0x77, payload), 0.02 * i)
    assert len(out) == 50
    assert {p.payload_type for p in out} == {111}
    assert {p.ssrc for p in out} == {BROWSER_SSRC}
    assert steps(seqs(out), 1 << 16) == [1] * 49
    assert steps([p.timestamp for p in out], 1 << 32) == [960] * 49
    decoder = OpusDecoder(8000)
    heard = np.concatenate([np.frombuffer(decoder.decode(p.payload), np.int16) for p in out])
    decoder.close()
    assert abs(peak_hz(heard[1600:]) - 1000) <= 15
    assert np.abs(heard[1600:]).max() > 2000


def test_pcmu_browser_and_pcma_trunk_convert_by_table() -> None:
    core = make_core(PCMU, PCMA)
    assert core.passthrough is False
    up_data = ulaw_encode(tone(440, 8000))
    down_data = alaw_encode(tone(1000, 8000))
    up: list[RtpPacket] = []
    down: list[RtpPacket] = []
    for i in range(50):
        chunk = slice(160 * i, 160 * (i + 1))
        up += to_trunk(core, rtp(0, i, 160 * i, FROM_BROWSER, up_data[chunk]), 0.02 * i)
        down += to_browser(core, rtp(8, i, 160 * i, 0x77, down_data[chunk]), 0.02 * i)
    assert {p.payload_type for p in up} == {8} and {p.payload_type for p in down} == {0}
    assert steps([p.timestamp for p in up], 1 << 32) == [160] * 49
    assert steps([p.timestamp for p in down], 1 << 32) == [160] * 49
    assert abs(peak_hz(alaw_decode(b"".join(p.payload for p in up))) - 440) <= 15
    assert abs(peak_hz(ulaw_decode(b"".join(p.payload for p in down))) - 1000) <= 15
    # The same samples, within the coarser of the two laws' steps.
    sent = tone(440, 8000).astype(np.int32)
    assert np.abs(alaw_decode(b"".join(p.payload for p in up)) - sent).max() < 700


# -- RTP_TIMEOUT ------------------------------------------------------------------------


def both_legs(
    core: MediaCore, start: float, stop: float, *, trunk: bool = True, browser: bool = True
) -> None:
    """Both legs (or one) send a packet every 20 ms over ``[start, stop)``."""
    ticks = round((stop - start) / 0.02)
    for i in range(ticks):
        now = round(start + 0.02 * i, 6)
        seq = round(now / 0.02)
        if trunk:
            core.receive_trunk(rtp(0, seq, 160 * seq, 0x77, b"\xff" * 160), TRUNK, now)
        if browser:
            core.receive_browser(rtp(0, seq, 160 * seq, FROM_BROWSER, b"\xff" * 160), now)


def test_no_silence_timer_before_the_answer() -> None:
    core = make_core()
    both_legs(core, 0.0, 1.0)
    assert core.get_timer() is None
    core.handle_timer(100.0)
    assert core.next_event() is None


# 3.04 and 4.7: (stop + 5.0) - stop < 5.0 in floats; the timer must fire all the same.
@pytest.mark.parametrize("stop", [2.0, 3.04, 4.7])
def test_a_silent_trunk_times_out(stop: float) -> None:
    core = make_core()
    core.answered(1.0)
    both_legs(core, 0.0, stop + 0.02)  # the trunk's last packet at ``stop``
    both_legs(core, stop + 0.02, stop + 5.0, trunk=False)
    when = core.get_timer()
    assert when is not None and when == pytest.approx(stop + 5.0)
    core.handle_timer(when - 0.01)
    assert core.next_event() is None
    core.handle_timer(when)
    assert core.next_event() == MediaTimedOut(leg="trunk", seconds=5.0)
    assert core.next_event() is None


def test_a_silent_browser_times_out() -> None:
    core = make_core()
    core.answered(0.0)
    both_legs(core, 0.0, 1.0)
    both_legs(core, 1.0, 6.0, browser=False)
    when = core.get_timer()
    assert when is not None and when == pytest.approx(0.98 + 5.0)
    core.handle_timer(when)
    assert core.next_event() == MediaTimedOut(leg="browser", seconds=5.0)


def test_the_watch_starts_at_the_answer() -> None:
    core = make_core()
    both_legs(core, 0.0, 1.0)
    core.answered(30.0)  # long after the last packet: the legs get a full RTP_TIMEOUT
    assert core.get_timer() == 35.0
    core.handle_timer(34.9)
    assert core.next_event() is None


def test_no_timeout_on_hold_and_a_fresh_start_on_resume() -> None:
    core = make_core()
    core.answered(0.0)
    both_legs(core, 0.0, 1.0)
    core.set_hold(True, 1.0)
    assert core.get_timer() is None
    core.handle_timer(500.0)
    assert core.next_event() is None
    core.set_hold(False, 600.0)
    assert core.get_timer() == 605.0
    core.handle_timer(604.9)
    assert core.next_event() is None
    core.handle_timer(605.0)
    event = core.next_event()
    assert isinstance(event, MediaTimedOut) and event.seconds == 5.0
    # Once only.
    assert core.get_timer() is None
    core.handle_timer(700.0)
    assert core.next_event() is None


# -- bad input -----------------------------------------------------------------------------


BAD = [
    b"",
    b"\x80",
    b"\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00",  # 11 bytes
    b"\x40" + b"\x00" * 171,  # RTP version 1
    b"\x00" * 172,  # version 0 (STUN-like)
    b"\x8f" + b"\x00" * 20,  # 15 CSRCs announced, not there
    b"\x90" + b"\x00" * 11 + b"\x00\x00\x00\xff",  # extension longer than the packet
    b"\xa0" + b"\x00" * 11 + b"\x01\x02\x00",  # padding length 0
    b"\xa0" + b"\x00" * 11 + b"\x01\x02\xff",  # padding past the start
    rtp(13, 1, 0, 5, b"\x40"),  # comfort noise
    rtp(72, 1, 0, 5, b"\x00" * 20, marker=True),  # RTCP (PT 200) muxed by mistake
    rtp(96, 1, 0, 5, b"\xff" * 160),  # a payload type nobody agreed on
]


def fuzz(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    junk = [rng.randbytes(rng.randrange(40)) for _ in range(300)]
    # Version 2 and a random payload type: a header that parses, more or less.
    return junk + [
        bytes([0x80 | rng.randrange(64), rng.randrange(256)]) + rng.randbytes(rng.randrange(200))
        for _ in range(700)
    ]


@pytest.mark.parametrize(("browser", "trunk"), [(PCMU, PCMU), (OPUS, PCMU), (PCMU, PCMA)])
def test_bad_packets_are_dropped_in_both_directions(browser: Codec, trunk: Codec) -> None:
    core = make_core(browser, trunk)
    for data in BAD:
        assert core.receive_browser(memoryview(data), 0.0) == []
        assert core.receive_trunk(data, TRUNK, 0.0) == []
    for i, data in enumerate(fuzz(4733)):
        for packet in parsed(core.receive_browser(data, 0.001 * i)):
            assert packet.payload_type == trunk.payload_type
        for packet in parsed(core.receive_trunk(memoryview(data), TRUNK, 0.001 * i)):
            assert packet.payload_type == browser.payload_type
    # Still working afterwards.
    voice = rtp(trunk.payload_type, 900, 0, 0x99, b"\xff" * 160)
    assert len(core.receive_trunk(voice, TRUNK, 2.0)) == 1


def test_payloads_no_codec_can_use_are_dropped() -> None:
    core = make_core(OPUS, PCMU)
    assert core.receive_browser(rtp(111, 1, 0, FROM_BROWSER, b""), 0.0) == []
    assert core.receive_trunk(rtp(0, 1, 0, 0x77, b"\xff" * 100), TRUNK, 0.0) == []  # 12.5 ms
    assert core.transcode_errors == 2
    relay = make_core()
    assert relay.receive_browser(rtp(0, 1, 0, FROM_BROWSER, b"\xff" * 1600), 0.0) == []


def test_bad_packets_before_the_answer() -> None:
    core = make_core(trunk=None)
    for data in [*BAD, *fuzz(3550)]:
        assert core.receive_browser(data, 0.0) == []
        assert core.receive_trunk(data, TRUNK, 0.0) == []
