"""One call's media, sans I/O: the browser's RTP in, the trunk's RTP out, and back.

``MediaCore`` never touches a socket, a clock or a key. The adapter feeds it
every decrypted browser packet (``receive_browser``) and every trunk datagram
(``receive_trunk``) with the time, sends what they return, runs
``handle_timer`` when ``get_timer`` says, and reads ``next_event``. Each packet
is handled in one synchronous call: parsed, counted, relayed with its payload
untouched when both legs share a codec (only the header is rewritten, with
continuous sequence numbers and timestamps across re-INVITEs, holds,
transfers and the switch from early to final media), or converted by a
``Transcoder`` when they do not.

The decisions of a call's media live here: where the trunk's audio goes
(its SDP, then symmetric latching), hold (nothing goes to the trunk while
either side holds), RFC 4733 digits both ways, and ``RTP_TIMEOUT``: once the
trunk has answered, a leg silent that long ends the call, except on hold.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from proto.events import LegQuality
from services.media.dtmf import DtmfReceiver, DtmfSender
from services.media.quality import leg_quality
from services.media.rtcp import RtcpLeg
from services.media.rtp import Address, RtpSession, RtpStats
from services.media.sdp import Codec
from services.media.transcode import Transcoder, is_passthrough

BROWSER = "browser"
TRUNK = "trunk"
BROWSER_RTCP = "browser_rtcp"
TRUNK_RTCP = "trunk_rtcp"
_BROWSER_ADDRESS: Address = ("browser", 0)
"The browser leg has one peer (the ICE pair): a fixed address for latching."
MAX_CONCEALED = 3
"Lost browser packets (in a row) stood in for when transcoding; a longer gap stays a gap."


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """The trunk sent an RFC 4733 digit."""

    digit: str


@dataclass(frozen=True, slots=True)
class MediaTimedOut:
    """A leg sent no RTP for ``RTP_TIMEOUT`` after the answer (not on hold)."""

    leg: str
    "``browser`` or ``trunk``."
    seconds: float


CoreEvent = DigitReceived | MediaTimedOut


class MediaCore:
    """The media of one call between the browser leg and the trunk leg."""

    def __init__(
        self,
        browser_codec: Codec,
        browser_ssrc: int,
        *,
        rtp_timeout: float,
        now: float,
        rtcp: bool = True,
        wall_offset: float = 0.0,
        cname: bytes = b"bridge",
    ) -> None:
        self.browser_codec = browser_codec
        self._browser = RtpSession(
            _BROWSER_ADDRESS,
            browser_codec.payload_type,
            ssrc=browser_ssrc,
            clock_rate=browser_codec.clock_rate,
        )
        self._rtcp = rtcp
        self._wall_offset = wall_offset
        "Unix time minus ``now``: RTCP's NTP timestamps are wall-clock time."
        self._cname = cname
        self.browser_rtcp = RtcpLeg(self._browser, cname, now, wall_offset) if rtcp else None
        self.trunk_rtcp: RtcpLeg | None = None
        self._trunk_rtcp_remote: Address | None = None
        self._trunk_rtcp_latched = False
        self._trunk: RtpSession | None = None
        self.trunk_codec: Codec | None = None
        self._answer: tuple[Address, Codec, int | None] | None = None
        "The trunk's SDP applied last: where its ``c=``/``m=`` point, the codec, telephone-event."
        self._transcoder: Transcoder | None = None
        self.dtmf_payload_type: int | None = None
        self._dtmf: DtmfSender | None = None
        self._dtmf_in = DtmfReceiver()
        self.held = False
        "Either side holds the call: nothing goes to the trunk."
        self._quiet = False
        "Nothing of the browser's goes to the trunk: held, or a DTMF event is on the wire."
        self._rtp_timeout = rtp_timeout
        self._watch_from: float | None = None
        "Since when both legs must send (the answer, or the end of a hold); None: not watched."
        self._timed_out = False
        self._events: deque[CoreEvent] = deque()
        self._to_trunk: list[bytes | memoryview] = []
        self._to_browser: list[bytes | memoryview] = []

    # -- what the adapter reads ------------------------------------------------------

    @property
    def trunk_remote(self) -> Address | None:
        """Where packets for the trunk go (its SDP, then where it sends from)."""
        return self._trunk.remote if self._trunk is not None else None

    @property
    def answered_remote(self) -> Address | None:
        """Where the trunk's SDP applied last points (before latching moves it)."""
        return self._answer[0] if self._answer else None

    @property
    def passthrough(self) -> bool | None:
        """True when payloads are relayed untouched; None before the trunk's SDP."""
        if self.trunk_codec is None:
            return None
        return self._transcoder is None

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    def next_event(self) -> CoreEvent | None:
        return self._events.popleft() if self._events else None

    def quality(self) -> tuple[LegQuality, LegQuality | None]:
        """The browser leg's figures, and the trunk leg's once its SDP is known."""
        browser = leg_quality(self._browser, self.browser_rtcp, self.browser_codec.name)
        trunk = self._trunk
        if trunk is None or self.trunk_codec is None:
            return browser, None
        return browser, leg_quality(trunk, self.trunk_rtcp, self.trunk_codec.name)

    @property
    def trunk_stats(self) -> RtpStats | None:
        return self._trunk.stats if self._trunk is not None else None

    @property
    def transcode_errors(self) -> int:
        return self._transcoder.errors if self._transcoder is not None else 0

    # -- the trunk's SDP, hold, digits -----------------------------------------------

    def apply_trunk_answer(
        self, remote: Address, codec: Codec, dtmf_pt: int | None, now: float
    ) -> bool:
        """Apply the trunk's SDP; a later, different one (200 after 183, a re-INVITE) retargets.

        The same SDP again (a 200 repeating the 183's) changes nothing: the
        stream stays latched and early media carries on without a gap. True
        when anything changed.
        """
        if self._answer == (remote, codec, dtmf_pt):
            return False
        trunk = self._trunk
        if trunk is None:
            trunk = self._trunk = RtpSession(
                remote, codec.payload_type, clock_rate=codec.clock_rate
            )
            trunk.on_event = self._on_trunk_event
            if self._rtcp:
                self.trunk_rtcp = RtcpLeg(trunk, self._cname, now, self._wall_offset)
        elif self._answer is None or self._answer[0] != remote:
            trunk.retarget(remote, codec.payload_type, now)
        else:
            # Same address, new codec: keep the latch (a trunk behind NAT sends
            # from elsewhere than its SDP says, and must not be cut off).
            trunk.payload_type = codec.payload_type
        if self._answer is None or self._answer[0] != remote:
            # RTCP on the next port (RFC 3550 11), until the trunk's own reports latch it.
            self._trunk_rtcp_remote = (remote[0], remote[1] + 1)
            self._trunk_rtcp_latched = False
        trunk.event_payload_type = dtmf_pt
        self.dtmf_payload_type = dtmf_pt
        if self._dtmf is not None:
            if dtmf_pt is None:
                self._dtmf.clear()  # no telephone-event any more: queued digits cannot go
            else:
                self._dtmf.payload_type = dtmf_pt
        if self.trunk_codec is None or self.trunk_codec.name != codec.name:
            if self._transcoder is not None:
                self._transcoder.close()
            self._transcoder = (
                None
                if is_passthrough(self.browser_codec, codec)
                else Transcoder(self.browser_codec, codec)
            )
        self.trunk_codec = codec
        self._answer = (remote, codec, dtmf_pt)
        return True

    def answered(self, now: float) -> None:
        """The trunk answered for good: from now on both legs must keep sending."""
        if self._watch_from is None:
            self._watch_from = now

    def set_hold(self, held: bool, now: float) -> None:
        """Stop sending to the trunk while held; resume with a new talkspurt."""
        if held == self.held:
            return
        self.held = held
        if held and self._dtmf is not None:
            self._dtmf.clear()
        if not held:
            if self._trunk is not None:
                self._trunk.new_talkspurt()
            if self._watch_from is not None:
                # Silence during the hold does not count against the legs.
                self._watch_from = now
        self._quiet = held or (self._dtmf is not None and self._dtmf.active)

    def send_dtmf(self, digits: str, duration_ms: int, now: float) -> bool:
        """Queue ``digits`` as RFC 4733 events; False when the trunk's SDP has no
        telephone-event, or while held (nothing may be sent then)."""
        trunk = self._trunk
        if trunk is None or self.dtmf_payload_type is None or self.held:
            return False
        if self._dtmf is None:
            self._dtmf = DtmfSender(trunk, self.dtmf_payload_type)
        self._dtmf.queue(digits, duration_ms, now)
        return True

    def _on_trunk_event(self, timestamp: int, payload: bytes | memoryview) -> None:
        digit = self._dtmf_in.receive(timestamp, bytes(payload))
        if digit is not None:
            self._events.append(DigitReceived(digit))

    # -- packets ---------------------------------------------------------------------

    def receive_browser(self, data: bytes | memoryview, now: float) -> list[bytes | memoryview]:
        """Packets for ``trunk_remote`` from one decrypted browser RTP packet.

        The list and its packets are reused by the next call: send them at once.
        """
        out = self._to_trunk
        out.clear()
        browser = self._browser
        lost = browser.stats.lost
        payload = browser.receive(data, _BROWSER_ADDRESS, now)
        trunk = self._trunk
        if payload is None or trunk is None or self._quiet:
            return out
        gap = browser.stats.lost - lost
        if self._transcoder is not None:
            if gap < 0:
                # A late packet: its place was concealed already and the decoder has moved
                # on; converting it now would garble the audio and repeat a number.
                return out
            if 0 < gap <= MAX_CONCEALED:
                self._conceal(gap, payload, now, out)
        self._relay(browser, trunk, payload, now, out, to_trunk=True)
        return out

    def _conceal(
        self, gap: int, payload: bytes | memoryview, now: float, out: list[bytes | memoryview]
    ) -> None:
        """Stand-ins for the ``gap`` browser packets lost before this one (Opus FEC/PLC)."""
        transcoder, browser, trunk = self._transcoder, self._browser, self._trunk
        assert transcoder is not None and trunk is not None
        if not transcoder.conceals:
            return
        step = browser.clock_rate // 50  # 20 ms, the browsers' packet time
        samples = trunk.clock_rate // 50
        for back in range(gap, 0, -1):
            stand_in = transcoder.conceal_to_trunk(samples, payload, just_before=back == 1)
            if stand_in is None:
                return
            packet = trunk.forward(
                stand_in,
                browser.in_ssrc,
                (browser.in_sequence - back) & 0xFFFF,
                (browser.in_timestamp - back * step) & 0xFFFFFFFF,
                False,
                now,
                transcoder.scale_to_trunk,
            )
            if packet is not None:
                out.append(bytes(packet))  # the next forward reuses the buffer

    def receive_trunk(
        self, data: bytes | memoryview, addr: Address, now: float
    ) -> list[bytes | memoryview]:
        """Plain RTP packets for the browser (to protect and send) from one trunk datagram.

        The list and its packets are reused by the next call: send them at once.
        """
        out = self._to_browser
        out.clear()
        trunk = self._trunk
        if trunk is None:
            return out  # no SDP yet: we cannot know the payload type
        # Telephone-events went to ``_on_trunk_event`` and left None here.
        payload = trunk.receive(data, addr, now)
        if payload is None:
            # An event or comfort noise used a sequence number the browser never sees:
            # continue its numbering from our last packet, not as if it had been lost.
            self._browser.new_talkspurt()
            return out
        self._relay(trunk, self._browser, payload, now, out, to_trunk=False)
        return out

    def _relay(
        self,
        source: RtpSession,
        target: RtpSession,
        payload: bytes | memoryview,
        now: float,
        out: list[bytes | memoryview],
        *,
        to_trunk: bool,
    ) -> None:
        """Relay the packet ``source`` accepted last onto ``target``, converted if need be."""
        scale = (1, 1)
        transcoder = self._transcoder
        if transcoder is not None:
            converted = transcoder.to_trunk(payload) if to_trunk else transcoder.to_browser(payload)
            if converted is None:
                return
            payload = converted
            scale = transcoder.scale_to_trunk if to_trunk else transcoder.scale_to_browser
        packet = target.forward(
            payload,
            source.in_ssrc,
            source.in_sequence,
            source.in_timestamp,
            source.in_marker,
            now,
            scale,
        )
        if packet is not None:
            out.append(packet)

    # -- RTCP: terminated per leg ------------------------------------------------------

    @property
    def trunk_rtcp_remote(self) -> Address | None:
        """Where our RTCP to the trunk goes: its RTP port + 1, then where its reports come from."""
        return self._trunk_rtcp_remote

    def receive_trunk_rtcp(self, data: bytes | memoryview, addr: Address, now: float) -> None:
        """Read a datagram that reached our RTCP port (symmetric: the first one latches)."""
        if self.trunk_rtcp is None:
            return
        if self._trunk_rtcp_latched and addr != self._trunk_rtcp_remote:
            return
        before = self.trunk_rtcp.reports_in
        self.trunk_rtcp.receive(data, now)
        if self.trunk_rtcp.reports_in > before and not self._trunk_rtcp_latched:
            self._trunk_rtcp_remote, self._trunk_rtcp_latched = addr, True

    def receive_browser_rtcp(self, data: bytes | memoryview, now: float) -> None:
        """Read one decrypted RTCP compound packet from the browser."""
        if self.browser_rtcp is not None:
            self.browser_rtcp.receive(data, now)

    # -- timers ----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next run; None when nothing waits."""
        timers = []
        if self._dtmf is not None and (when := self._dtmf.get_timer()) is not None:
            timers.append(when)
        for rtcp in (self.browser_rtcp, self.trunk_rtcp):
            if rtcp is not None:
                timers.append(rtcp.due)
        if self._watch_from is not None and not self.held and not self._timed_out:
            timers.append(self._silent_since() + self._rtp_timeout)
        return min(timers) if timers else None

    def _silent_since(self) -> float:
        """The older of the two legs' last packets (or the watch start, if later)."""
        assert self._watch_from is not None
        since = self._watch_from
        latest = [
            leg.stats.last_in if leg.stats.last_in is not None else since
            for leg in (self._browser, self._trunk)
            if leg is not None
        ]
        return max(since, min(latest)) if latest else since

    def handle_timer(self, now: float) -> list[tuple[str, bytes]]:
        """Run what is due at ``now``: (where, datagram) pairs to send. ``TRUNK`` goes to
        ``trunk_remote``, ``TRUNK_RTCP`` to ``trunk_rtcp_remote``, ``BROWSER_RTCP`` to the
        browser (SRTCP)."""
        out: list[tuple[str, bytes]] = []
        dtmf = self._dtmf
        if dtmf is not None:
            # A hold drops the queued digits; the one under way still ends properly (its
            # end packets), or the far end would hear it until its own timeout.
            out += [(TRUNK, packet) for packet in dtmf.handle_timer(now)]
            self._quiet = self.held or dtmf.active
        if self.browser_rtcp is not None and now >= self.browser_rtcp.due:
            out.append((BROWSER_RTCP, self.browser_rtcp.report(now)))
        if self.trunk_rtcp is not None and now >= self.trunk_rtcp.due:
            out.append((TRUNK_RTCP, self.trunk_rtcp.report(now)))
        if self._watch_from is not None and not self.held and not self._timed_out:
            self._check_silence(now)
        return out

    def _check_silence(self, now: float) -> None:
        assert self._watch_from is not None
        for name, leg in ((TRUNK, self._trunk), (BROWSER, self._browser)):
            if leg is None:
                continue
            last = leg.stats.last_in
            since = self._watch_from if last is None else max(last, self._watch_from)
            if now >= since + self._rtp_timeout:  # the very sum get_timer() returned
                self._timed_out = True
                self._events.append(MediaTimedOut(name, round(now - since, 1)))
                return

    def close(self) -> None:
        if self._transcoder is not None:
            self._transcoder.close()
            self._transcoder = None
