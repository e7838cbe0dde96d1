"""An inbound call: ``CallArrived`` announced, the users rung, one claims it, the trunk answered.

``InboundDoor`` admitted and routed the trunk's INVITE (``inbound.py``); here
its ``Arrival`` is announced on each user's subject and the ``Ringing`` core
(``ringing.py``) decides on 180, 480/486/603, the claim and the 200, fed the
bus's events from the call's inbox and the SIP call's events. Once the 200
is sent the call is ``follow``'s, like an outbound one.

``answer_operator_hangups``: ``bridge calls hangup ID`` of a call still
ringing here (no signaling session holds it yet) is answered by this agent:
480 to the trunk, ``CallEnded`` cause ``operator`` to every ringing browser.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from proto import calls, codec, errors, subjects
from proto.calls import HangupAnswer
from proto.events import CallEnded, HangupRequested
from services.common.bus import Bus
from services.sipagent.call_records import CallRecords
from services.sipagent.call_reports import CallReports
from services.sipagent.follow import follow
from services.sipagent.handle import CallHandle
from services.sipagent.inbound import Arrival
from services.sipagent.live_calls import Inbox, LiveCalls
from services.sipagent.ringing import Answer, Publish, Reject, Ring, Ringing
from services.sipagent.ringing import BusEvent as RingEvent
from services.sipagent.spans import SipSpans

log = logging.getLogger(__name__)


class Answerer:
    """Rings the users of admitted calls until one answers, then follows the call."""

    def __init__(
        self,
        bus: Bus,
        instance_id: str,
        calls: LiveCalls,
        reports: CallReports,
        records: CallRecords,
    ) -> None:
        self._bus = bus
        self._instance_id = instance_id
        self._calls = calls
        self._reports = reports
        self._records = records

    def attributes(self, arrival: Arrival) -> dict[str, str]:
        """The call's span attributes."""
        return {
            "bridge.call_id": arrival.call_id,
            "bridge.direction": "inbound",
            "bridge.called": arrival.called,
            "bridge.trunk": arrival.trunk,
            "bridge.sipagent_id": self._instance_id,
        }

    async def answer(
        self, arrival: Arrival, handle: CallHandle, inbox: Inbox, spans: SipSpans
    ) -> CallEnded:
        """Ring the users of an admitted call until one answers, then follow it to its end."""
        call_id = arrival.call_id
        loop = asyncio.get_running_loop()
        await self._records.ringing(arrival)
        # Subscribed to the call's signaling subject already (the service): announce it now.
        event = arrival.event(self._instance_id)
        for user in arrival.route.users:
            try:
                await self._bus.publish(subjects.inbound_calls(user), event)
            except Exception as exc:  # nobody hears it: the ring ends with 480
                log.warning("%s: cannot announce the call: %s", call_id, exc)
        route = arrival.route
        ringing = Ringing(
            call_id,
            loop.time(),
            ring_timeout=route.ring_timeout,
            reject_status=route.reject_status,
            answer_wait=arrival.answer_wait,
        )
        ended = await self._ring(ringing, handle, inbox)
        if ended is not None:
            return ended
        # Answered: from here on it is a call like an outbound one.
        spans.call.add_event("answering", {"bridge.signaling_id": ringing.claimed_by})
        self._calls.answered(call_id, ringing.claimed_by)
        # What came after the answer: a hang-up, say, or a slow instance's late ring
        # (told the claim again).
        while not inbox.empty():
            await self._calls.on_peer_event(inbox.get_nowait())
        await self._records.answering(
            call_id, ringing.claimed_by, ringing.identity, ringing.media_id
        )
        return await follow(call_id, handle, spans, self._reports, self._records)

    async def _ring(self, ringing: Ringing, handle: CallHandle, inbox: Inbox) -> CallEnded | None:
        """Run the ``Ringing`` core: the ``CallEnded`` of a call that ended unanswered, or
        None once it answered the trunk."""
        loop = asyncio.get_running_loop()
        from_bus = asyncio.ensure_future(inbox.get())
        from_sip = asyncio.ensure_future(handle.events.get())
        try:
            while True:
                ended: CallEnded | None = None
                while (action := ringing.next_action()) is not None:
                    if isinstance(action, Ring):
                        handle.ring()
                    elif isinstance(action, Reject):
                        handle.reject(action.status, action.reason)
                    elif isinstance(action, Answer):
                        handle.answer(action.sdp)
                    elif isinstance(action, Publish) and isinstance(action.event, CallEnded):
                        ended = action.event  # published by the service with the call's end
                    elif isinstance(action, Publish):
                        await self._reports.publish(action.event)
                if ended is not None:
                    return ended
                if ringing.answering:
                    return None
                timer = ringing.get_timer()
                timeout = None if timer is None else max(timer - loop.time(), 0.0)
                done, _ = await asyncio.wait(
                    {from_bus, from_sip}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                now = loop.time()
                if from_bus in done:
                    event = from_bus.result()
                    if isinstance(event, RingEvent):
                        ringing.receive(event, now)
                    from_bus = asyncio.ensure_future(inbox.get())
                if from_sip in done:
                    ringing.sip_event(from_sip.result(), now)
                    from_sip = asyncio.ensure_future(handle.events.get())
                timer = ringing.get_timer()
                if timer is not None and timer <= now:
                    ringing.handle_timer(now)
        finally:
            # A cancelled get takes nothing: what is queued stays for ``follow``.
            from_bus.cancel()
            from_sip.cancel()


EndRinging = Callable[[str, str], bool]
"Ends a call ringing here with a cause (``LiveCalls.end_ringing``); whether one was."


async def answer_operator_hangups(
    bus: Bus, instance_id: str, end_ringing: EndRinging
) -> Subscription:
    """Listen on ``subjects.operator_hangup()`` (no queue group: every instance hears it);
    end and answer the requests for calls ringing here, stay silent on the others."""

    async def on_request(msg: Msg) -> None:
        try:
            event = codec.decode(msg.data)
        except codec.DecodeError:
            log.info("operator hangup: not an event, ignored")
            return
        if not isinstance(event, HangupRequested):
            return
        if not end_ringing(event.call_id, errors.OPERATOR):
            return
        log.info("%s: hangup of the ringing call requested by an operator", event.call_id)
        if msg.reply:
            answer = HangupAnswer(call_id=event.call_id, signaling_id="", sipagent_id=instance_id)
            try:
                await msg.respond(calls.encode(answer))
            except Exception as exc:  # the asker may be gone; the call ends anyway
                log.debug("operator hangup answer not sent: %s", exc)

    return await bus.client.subscribe(subjects.operator_hangup(), cb=on_request)
