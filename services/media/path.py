"""One call's packets, the asyncio side: the core between the browser transport and the trunk.

``MediaPath`` owns the trunk's RTP and RTCP sockets and, once the browser
leg is answered, the call's ``MediaCore``: every datagram is handed to the
core in the socket callback that received it and what the core returns is
sent at once (no task, no queue). One loop timer runs the core's
``handle_timer`` when ``get_timer`` says; the core's events go to
``on_event``. It also keys the trunk sockets with the SDES keys of the
trunk's SDP (``key``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from services.media import sdes
from services.media.browser_transport import BrowserTransport
from services.media.core import BROWSER_RTCP, TRUNK, TRUNK_RTCP, CoreEvent, MediaCore
from services.media.sdp import TrunkMedia
from services.media.trunk_socket import TrunkSocket

log = logging.getLogger("services.media.call")

EventSink = Callable[[CoreEvent], None]


class MediaPath:
    """The sockets, the core and its timer of one call."""

    def __init__(self, call_id: str, on_event: EventSink) -> None:
        self._call_id = call_id
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self.core: MediaCore | None = None
        self._browser: BrowserTransport | None = None
        self._trunk: TrunkSocket | None = None
        self._trunk_rtcp: TrunkSocket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._srtp = sdes.OFF
        self.crypto: tuple[sdes.Crypto, ...] = ()
        "Our SDES keys (our offer, or our answer's); empty without SRTP toward the trunk."
        self._keyed: sdes.Crypto | None = None
        "The trunk's key in force."

    async def open(self, rtp: socket.socket, rtcp: socket.socket) -> None:
        """Serve the trunk sockets the port allocator bound (``close`` closes them)."""
        self._trunk = await TrunkSocket.open(rtp, self.from_trunk)
        self._trunk_rtcp = await TrunkSocket.open(rtcp, self.from_trunk_rtcp, rtcp=True)

    def start(
        self,
        core: MediaCore,
        browser: BrowserTransport,
        srtp: str,
        crypto: tuple[sdes.Crypto, ...] | None = None,
    ) -> None:
        """The browser leg is answered: packets flow through ``core`` from now on.

        ``crypto``: our SDES keys when they are not a fresh offer (the answer to a
        trunk's offer: the one key of our answer, or none)."""
        self.core, self._browser = core, browser
        self._srtp = srtp
        if crypto is None:
            crypto = sdes.offer() if srtp != sdes.OFF else ()
        self.crypto = crypto

    def key(self, media: TrunkMedia, update: bool) -> bool:
        """Apply the SDES keys of the trunk's SDP; False when the call cannot go on."""
        if not self.crypto:
            return True
        if not media.crypto:
            if self._srtp == sdes.REQUIRED or self._keyed is not None:
                log.warning("call %s: the trunk's SDP has no usable SRTP key", self._call_id)
                return update and self._keyed is not None  # keep the keys we have
            log.info("call %s: the trunk answered plain RTP (SRTP optional)", self._call_id)
            return True
        if media.crypto[0] == self._keyed:
            return True
        try:
            # One pair per socket: each transform has its own buffer.
            rtp_keys = sdes.transforms(self.crypto, media.crypto)
            rtcp_keys = sdes.transforms(self.crypto, media.crypto)
        except sdes.SdesError as exc:
            log.warning("call %s: %s", self._call_id, exc)
            return update and self._keyed is not None
        assert self._trunk is not None and self._trunk_rtcp is not None
        self._trunk.secure(*rtp_keys)
        self._trunk_rtcp.secure(*rtcp_keys)
        self._keyed = media.crypto[0]
        # The suite, never the key.
        log.info("call %s: SRTP to the trunk keyed (%s)", self._call_id, self._keyed.suite)
        return True

    # -- packets: one synchronous call each, no task, no queue -----------------------

    def from_browser(self, packet: memoryview) -> None:
        core, trunk = self.core, self._trunk
        if core is None or trunk is None:
            return
        out = core.receive_browser(packet, self._loop.time())
        if out:
            remote = core.trunk_remote
            for data in out:
                trunk.sendto(data, remote)

    def from_browser_rtcp(self, packet: memoryview) -> None:
        if self.core is not None:
            self.core.receive_browser_rtcp(packet, self._loop.time())

    def from_trunk(self, data: bytes | memoryview, addr: tuple[str, int]) -> None:
        core, browser = self.core, self._browser
        if core is None or browser is None:
            return
        send = browser.send_rtp
        for packet in core.receive_trunk(data, addr, self._loop.time()):
            send(packet)
        if core.has_events:
            self._take_events()

    def from_trunk_rtcp(self, data: bytes | memoryview, addr: tuple[str, int]) -> None:
        if self.core is not None:
            self.core.receive_trunk_rtcp(data, addr, self._loop.time())

    # -- the core's timer and events ---------------------------------------------------

    def arm_timer(self) -> None:
        """Wake at the core's next timer (call after anything that may move it)."""
        core = self.core
        when = core.get_timer() if core is not None and not self._closed else None
        if self._timer is not None and (when is None or self._timer.when() != when):
            self._timer.cancel()
            self._timer = None
        if when is not None and self._timer is None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        core, trunk, browser = self.core, self._trunk, self._browser
        if core is None or trunk is None or browser is None or self._closed:
            return
        for where, packet in core.handle_timer(self._loop.time()):
            if where == TRUNK:
                trunk.sendto(packet, core.trunk_remote)
            elif where == TRUNK_RTCP and self._trunk_rtcp is not None:
                self._trunk_rtcp.sendto(packet, core.trunk_rtcp_remote)
            elif where == BROWSER_RTCP:
                browser.send_rtcp(packet)
        self._take_events()
        self.arm_timer()

    def _take_events(self) -> None:
        core = self.core
        while core is not None and (event := core.next_event()) is not None:
            self._on_event(event)

    def close(self) -> None:
        """Stop the timer and close the trunk sockets (the core stays readable)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for leg in (self._trunk, self._trunk_rtcp):
            if leg is not None:
                leg.close()
