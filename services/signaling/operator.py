"""What signaling does for operators: ``bridge calls hangup`` and ``GET /calls``.

Every signaling instance listens on ``subjects.operator_hangup()`` (no queue
group). A ``HangupRequested`` there names a call; the instance whose browser
session holds it ends it as if the browser had hung up, with cause
``operator`` (the SIP agent sends BYE, the browser gets ``ended``), and
answers the asker with a ``HangupAnswer``. The others stay silent, so an
asker that hears nothing knows no live instance holds the call.

``GET /calls`` on the ops port serves the list of ``bridge calls --json``:
the registry and the media workers' figures, merged (``calls_query``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from proto import calls, codec, subjects
from proto.calls import HangupAnswer
from proto.events import HangupRequested
from services.common import calls_query
from services.common.bus import Bus
from services.common.calls_listing import LiveCall
from services.common.fleet.member import FleetMember

log = logging.getLogger(__name__)

PAGE_GATHER_TIMEOUT = 1.0
"Seconds ``GET /calls`` waits for media workers that are alive but slow to answer."

EndCall = Callable[[str], bool]
"Ends the call if a session of this instance holds it; whether one did."


async def answer_hangups(bus: Bus, instance_id: str, end_call: EndCall) -> Subscription:
    """Listen for operators' hangups; end and answer those of calls held here."""

    async def on_request(msg: Msg) -> None:
        try:
            event = codec.decode(msg.data)
        except codec.DecodeError:
            log.info("operator hangup: not an event, ignored")
            return
        if not isinstance(event, HangupRequested) or not end_call(event.call_id):
            return
        log.info("call %s: hangup requested by an operator", event.call_id)
        if msg.reply:
            answer = HangupAnswer(call_id=event.call_id, signaling_id=instance_id)
            try:
                await msg.respond(calls.encode(answer))
            except Exception as exc:  # the asker may be gone; the call ends anyway
                log.debug("operator hangup answer not sent: %s", exc)

    return await bus.client.subscribe(subjects.operator_hangup(), cb=on_request)


def calls_page(bus: Bus, fleet: FleetMember) -> Callable[[], Awaitable[list[LiveCall]]]:
    """The provider of ``GET /calls``: the same list as ``bridge calls --json``.

    It waits for as many media workers as the leases say are alive, at most
    ``PAGE_GATHER_TIMEOUT`` seconds.
    """

    async def live_calls() -> list[LiveCall]:
        alive = len(fleet.leases.alive("media", asyncio.get_running_loop().time()))
        listing = await calls_query.collect(
            bus.client, fleet.registry, timeout=PAGE_GATHER_TIMEOUT, expected_media=alive
        )
        for problem in listing.problems:
            log.info("GET /calls: %s", problem)
        return listing.calls

    return live_calls
