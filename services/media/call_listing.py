"""The media worker's answer to ``bridge calls``: the latest figures of each of its calls.

Nothing is measured here: the worker's periodic report (``MediaCall.report``,
every few seconds) hands each call's ``CallStatsReported`` to ``LatestStats``,
which keeps the latest one per call. A request on
``subjects.call_stats_query()`` is answered from it with one
``CallStatsReply``; a call not measured yet is listed by its id alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from proto import calls, subjects
from proto.calls import CallStatsReply, MediaCallStats
from proto.events import CallStatsReported
from services.common.bus import Bus

log = logging.getLogger(__name__)


class LatestStats:
    """The latest report of each call, with the wall clock it was made at."""

    def __init__(self) -> None:
        self._latest: dict[str, MediaCallStats] = {}

    def keep(self, event: CallStatsReported, wall: float) -> None:
        """``event`` is the call's newest report."""
        self._latest[event.call_id] = MediaCallStats(
            call_id=event.call_id,
            passthrough=event.passthrough,
            browser=event.browser,
            trunk=event.trunk,
            measured_at=wall,
        )

    def forget(self, call_id: str) -> None:
        """The call's media is released."""
        self._latest.pop(call_id, None)

    def reply(self, instance_id: str, call_ids: Iterable[str], wall: float) -> CallStatsReply:
        """Every call of ``call_ids``, with its latest figures where it has some."""
        return CallStatsReply(
            instance_id=instance_id,
            calls=[
                self._latest.get(call_id) or MediaCallStats(call_id=call_id)
                for call_id in sorted(call_ids)
            ],
            sent_at=wall,
        )


async def answer_call_stats(
    bus: Bus, instance_id: str, latest: LatestStats, call_ids: Callable[[], Iterable[str]]
) -> Subscription:
    """Answer ``bridge calls`` on the bus (every worker answers); ``call_ids()``: the
    calls this worker carries now."""

    async def on_request(msg: Msg) -> None:
        if not msg.reply:
            return
        reply = latest.reply(instance_id, call_ids(), time.time())
        try:
            await msg.respond(calls.encode(reply))
        except Exception as exc:  # the asker may be gone; the worker carries on
            log.debug("call stats answer not sent: %s", exc)

    return await bus.client.subscribe(subjects.call_stats_query(), cb=on_request)
