"""``MediaCore``: RFC 4733 digits both ways, and SDP updates (re-INVITEs) that move,
re-codec or hold the trunk's media. Ported from the tests of the old ``TrunkLeg``."""

import itertools

import numpy as np

from services.media.core import TRUNK as TO_TRUNK
from services.media.core import DigitReceived, MediaCore
from services.media.dtmf import event_payload
from services.media.g711 import ulaw_decode
from services.media.rtp import RtpPacket
from services.media.sdp import PCMA, PCMU

from .test_core import (
    EVENT_PT,
    FROM_BROWSER,
    OTHER,
    TRUNK,
    browser_voice,
    make_core,
    parsed,
    rtp,
    seqs,
    steps,
    to_browser,
    to_trunk,
    trunk_quality,
    trunk_voice,
)


def play(core: MediaCore, until: float) -> list[RtpPacket]:
    """Run the core's timers due until ``until``: the packets for the trunk."""
    out: list[RtpPacket] = []
    while (when := core.get_timer()) is not None and when <= until + 1e-9:
        out += parsed(packet for where, packet in core.handle_timer(when) if where == TO_TRUNK)
    return out


def digits(packets: list[RtpPacket]) -> list[tuple[str, bool]]:
    return [("0123456789*#ABCD"[p.payload[0]], bool(p.payload[1] & 0x80)) for p in packets]


def durations(packets: list[RtpPacket]) -> list[int]:
    return [int.from_bytes(p.payload[2:4], "big") for p in packets]


def test_digits_go_as_rfc4733_events() -> None:
    core = make_core()
    (voice,) = browser_voice(core, 1, 0, 0.0, 1)
    assert core.send_dtmf("1#", 60, 0.02)
    packets = play(core, 10.0)
    assert {p.payload_type for p in packets} == {EVENT_PT}
    assert (
        digits(packets)
        == [("1", False)] * 2 + [("1", True)] * 3 + [("#", False)] * 2 + [("#", True)] * 3
    )
    assert [p.marker for p in packets] == [True] + [False] * 4 + [True] + [False] * 4
    assert durations(packets) == [160, 320, 480, 480, 480] * 2
    # One event, one timestamp: the first right after the voice, the second 60 ms + later.
    first, second = {p.timestamp for p in packets[:5]}, {p.timestamp for p in packets[5:]}
    assert first == {(voice.timestamp + 160) & 0xFFFFFFFF}
    assert len(second) == 1 and (second.pop() - first.pop()) % (1 << 32) >= 480
    # Our stream toward the trunk: the voice's SSRC and sequence numbers.
    assert {p.ssrc for p in packets} == {voice.ssrc}
    assert steps([voice.sequence_number, *seqs(packets)], 1 << 16) == [1] * 10
    assert core.get_timer() is None  # not answered: nothing left to wait for


def test_voice_is_suppressed_while_an_event_plays() -> None:
    core = make_core()
    out = browser_voice(core, 1, 0, 0.0, 5)  # until t = 0.08
    assert core.send_dtmf("8", 100, 0.1)
    for i in range(5, 20):  # the browser keeps talking all along
        now = round(0.02 * i, 6)
        out += play(core, now)
        out += browser_voice(core, 1 + i, 160 * i, now, 1)
    kinds = "".join("e" if p.payload_type == EVENT_PT else "v" for p in out)
    # The voice of 0.10 to 0.16 s is dropped; at 0.18 s the end packets went first.
    assert kinds == "v" * 5 + "e" * 7 + "v" * 11
    events = out[5:12]
    assert digits(events) == [("8", False)] * 4 + [("8", True)] * 3
    assert durations(events) == [160, 320, 480, 640, 800, 800, 800]
    assert steps(seqs(out), 1 << 16) == [1] * (len(out) - 1)
    # Voice resumes as a new talkspurt, past the event's duration on the media clock.
    resumed = out[12]
    assert resumed.marker
    assert (resumed.timestamp - events[0].timestamp) % (1 << 32) >= 800
    assert steps([p.timestamp for p in out[12:]], 1 << 32) == [160] * 10


def test_events_follow_a_reinvite() -> None:
    core = make_core()
    assert core.send_dtmf("1", 40, 0.0)
    before = play(core, 1.0)
    # The trunk moves its media and renumbers telephone-event.
    assert core.apply_trunk_answer(OTHER, PCMU, 96, 1.0)
    assert core.trunk_remote == OTHER
    assert core.send_dtmf("7", 40, 1.0)
    moved = play(core, 2.0)
    assert digits(moved) == [("7", False)] + [("7", True)] * 3
    assert {p.payload_type for p in moved} == {96}
    assert moved[0].sequence_number == (before[-1].sequence_number + 1) & 0xFFFF
    assert moved[0].ssrc == before[0].ssrc


def test_no_events_without_telephone_event() -> None:
    core = make_core(dtmf_pt=None)
    assert not core.send_dtmf("1", 100, 0.0)
    assert core.get_timer() is None
    assert play(core, 10.0) == []
    assert not make_core(trunk=None).send_dtmf("1", 100, 0.0)  # no SDP from the trunk yet


def test_no_events_while_held() -> None:
    core = make_core()
    core.set_hold(True, 0.0)
    assert not core.send_dtmf("3", 40, 0.0)
    assert play(core, 10.0) == []
    core.set_hold(False, 10.0)
    assert core.send_dtmf("3", 40, 10.0)
    assert digits(play(core, 11.0))[0] == ("3", False)


def test_a_hold_cuts_the_digits_short() -> None:
    core = make_core()
    assert core.send_dtmf("123", 100, 0.0)
    first = play(core, 0.02)
    assert len(first) == 2
    core.set_hold(True, 0.03)
    # The digit under way ends (its end packet, three times); the others never start.
    rest = play(core, 10.0)
    assert digits(rest) == [("1", False)] * 2 + [("1", True)] * 3
    assert core.get_timer() is None
    assert browser_voice(core, 1, 0, 10.0, 3) == []


def test_trunk_events_become_one_digit_each() -> None:
    core = make_core()
    seq, now = 10, 0.0
    for timestamp, code in ((1600, 5), (3200, 11), (4800, 16)):  # 16: flash, not a digit
        for end, duration in ((False, 160), (False, 320), (True, 480), (True, 480), (True, 480)):
            packet = rtp(EVENT_PT, seq, timestamp, 0x77, event_payload(code, end, duration))
            assert core.receive_trunk(packet, TRUNK, now) == []  # nothing for the browser
            seq, now = seq + 1, now + 0.02
    assert core.has_events
    assert [core.next_event() for _ in range(3)] == [DigitReceived("5"), DigitReceived("#"), None]
    # The events count as the trunk's packets: they are neither loss nor silence.
    assert trunk_quality(core).packets_in == 15
    assert trunk_quality(core).lost == 0


def test_a_codec_change_in_an_update_is_followed() -> None:
    core = make_core()
    assert core.passthrough is True
    assert core.apply_trunk_answer(TRUNK, PCMA, EVENT_PT, 1.0)
    assert core.passthrough is False
    (packet,) = to_trunk(core, rtp(0, 1, 0, FROM_BROWSER, b"\xff" * 160), 1.0)  # µ-law silence
    assert packet.payload_type == 8
    assert packet.payload == b"\xd5" * 160  # A-law silence
    (back,) = to_browser(core, rtp(8, 1, 0, 0x77, b"\xd5" * 160), 1.0)
    assert back.payload_type == 0
    assert np.abs(ulaw_decode(back.payload)).max() <= 8  # silence (A-law has no true zero)
    # And back to the browser's codec: relayed as it is again.
    assert core.apply_trunk_answer(TRUNK, PCMU, EVENT_PT, 2.0)
    assert core.passthrough is True
    (again,) = to_trunk(core, rtp(0, 2, 160, FROM_BROWSER, b"\x12" * 160), 2.0)
    assert again.payload_type == 0 and again.payload == b"\x12" * 160


def test_a_codec_change_keeps_a_latched_source() -> None:
    core = make_core()
    nat = ("198.51.100.7", 31337)
    # The trunk sends from another port than its SDP names (a NAT): latched there.
    assert len(to_browser(core, rtp(0, 1, 160, 0x55, b"\x80" * 160), 0.0, nat)) == 1
    assert core.trunk_remote == nat
    assert core.apply_trunk_answer(TRUNK, PCMA, EVENT_PT, 0.5)
    assert core.trunk_remote == nat
    (heard,) = to_browser(core, rtp(8, 2, 320, 0x55, b"\xd5" * 160), 0.52, nat)
    assert heard.payload_type == 0
    assert np.abs(ulaw_decode(heard.payload)).max() <= 8
    (sent,) = to_trunk(core, rtp(0, 1, 0, FROM_BROWSER, b"\xff" * 160), 0.54)
    assert sent.payload_type == 8
    assert core.trunk_remote == nat


def test_a_new_address_in_an_update_latches_again() -> None:
    core = make_core()
    (before,) = to_browser(core, rtp(0, 1, 160, 0x55, b"\x80" * 160), 0.0)
    assert core.apply_trunk_answer(OTHER, PCMU, EVENT_PT, 1.0)
    assert core.trunk_remote == OTHER
    # The old place is not heard any more; the new one is, in the same browser stream.
    assert to_browser(core, rtp(0, 2, 320, 0x55, b"\x80" * 160), 1.0) == []
    out = trunk_voice(core, 900, 0, 0x66, 1.0, 3, OTHER)
    assert len(out) == 3 and out[0].marker
    assert steps([before.sequence_number, *seqs(out)], 1 << 16) == [1] * 3
    assert core.answered_remote == OTHER


def test_trunk_events_leave_no_gap_in_the_browsers_stream() -> None:
    # The trunk's digit uses five sequence numbers the browser never sees; its
    # loss figures must not count them.
    core = make_core()
    heard = trunk_voice(core, 100, 16000, 0x77, 0.0, 10)
    for n in range(5):
        event = rtp(EVENT_PT, 110 + n, 17600, 0x77, event_payload(1, n == 4, 160 * (n + 1)))
        assert to_browser(core, event, 0.2 + 0.02 * n) == []
    heard += trunk_voice(core, 115, 16000 + 160 * 15, 0x77, 0.3, 10)
    assert steps(seqs(heard), 1 << 16) == [1] * 19
    stamps = [p.timestamp for p in heard]
    assert all(0 < (b - a) % (1 << 32) < 160 * 10 for a, b in itertools.pairwise(stamps))
