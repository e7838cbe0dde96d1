"""The trunk's SDP on a running call: its answer, early media, and each re-INVITE or UPDATE.

The first answer (early or final) starts the trunk leg; a later one may move
it to a new address or codec. An update (``SessionUpdated``) also puts the
media on hold or resumes it, and keeps the old address for an RFC 2543 hold
(``c=0.0.0.0``). An unusable answer fails the call's media; an unusable
update keeps the media as it was, since the SIP agent has accepted it.
The caller runs ``apply`` under the call's lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentelemetry import trace

from proto.events import SessionUpdated
from services.media.addresses import is_unspecified, resolve
from services.media.path import MediaPath
from services.media.sdp import Codec, SdpError, parse_answer
from services.media.transcode import UnsupportedCodecError

log = logging.getLogger("services.media.call")


class TrunkUpdates:
    """Applies each SDP the SIP agent reports for the trunk to one call's path."""

    def __init__(self, call_id: str, path: MediaPath, clock: Callable[[], float]) -> None:
        self.call_id = call_id
        self._path = path
        self._clock = clock

    async def apply(
        self,
        sdp: str,
        offered: tuple[Codec, ...],
        browser_codec: str,
        span: trace.Span,
        *,
        early: bool,
        update: SessionUpdated | None,
    ) -> bool:
        """Apply the trunk's answer (``update`` None) or update; False when the media must fail.

        ``offered``: the codecs we offered the trunk; ``browser_codec`` only goes
        into the log and ``span``.
        """
        core = self._path.core
        if core is None:
            return True
        try:
            media = parse_answer(sdp, offered)
            host = await resolve(media.address, media.port)
        except (SdpError, OSError) as exc:
            if update is not None:
                # The SIP agent accepted it; keep the media as it was.
                log.warning("call %s: unusable updated trunk SDP: %s", self.call_id, exc)
                return True
            log.warning("call %s: unusable trunk SDP: %s", self.call_id, exc)
            return False
        if not self._path.key(media, update is not None):
            return update is not None
        first = core.trunk_codec is None
        remote = (host, media.port)
        now = self._clock()
        if update is not None:
            answered = core.answered_remote
            if answered is not None and is_unspecified(host):
                # RFC 2543 hold (c=0.0.0.0): no new address, keep the old one.
                remote = answered
            held = update.local_hold or update.remote_hold
            if held != core.held:
                log.info(
                    "call %s media %s (local hold %s, remote hold %s)",
                    self.call_id,
                    "on hold" if held else "resumed",
                    update.local_hold,
                    update.remote_hold,
                )
            core.set_hold(held, now)
        try:
            moved = core.apply_trunk_answer(remote, media.codec, media.dtmf_pt, now)
        except UnsupportedCodecError as exc:
            log.warning("call %s: %s", self.call_id, exc)
            return update is not None
        moved = moved and not first
        self._path.arm_timer()
        span.set_attribute("bridge.codec", media.codec.name)
        span.set_attribute("bridge.browser_codec", browser_codec)
        span.set_attribute("bridge.passthrough", bool(core.passthrough))
        if first:
            log.info(
                "call %s media started: trunk %s/%d at %s:%d%s, browser %s, %s",
                self.call_id,
                media.codec.name,
                media.codec.payload_type,
                host,
                media.port,
                " (early)" if early else "",
                browser_codec,
                "passthrough" if core.passthrough else "transcoding",
            )
        elif moved:
            log.info(
                "call %s media moved: trunk %s/%d at %s:%d",
                self.call_id,
                media.codec.name,
                media.codec.payload_type,
                host,
                media.port,
            )
        return True
