"""Asking the fleet about live calls over NATS: the registry, the media workers, a hangup.

Used by ``bridge calls`` (as the operator's NATS user) and by signaling's
``GET /calls`` (as signaling): both read the ``bridge_calls`` registry, ask
every media worker on ``subjects.call_stats_query()`` and merge the two with
``calls_listing.merge``. ``request_hangup`` asks the signaling instance holding
a call to end it. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg

from proto import calls, codec, errors, subjects
from proto.calls import CallStatsReply, HangupAnswer
from proto.events import HangupRequested
from proto.fleet import CallRecord
from services.common.calls_listing import LiveCall, merge
from services.common.fleet.registry import CallRegistry, RegistryError

GATHER_TIMEOUT = 1.0
"Seconds media workers' answers are gathered (several workers answer)."
HANGUP_TIMEOUT = 2.0
"Seconds to wait for the signaling instance holding a call to answer."


@dataclass
class Listing:
    """The merged calls, and what could not be read (said to the operator, not fatal)."""

    calls: list[LiveCall]
    problems: list[str] = field(default_factory=list)
    registry_read: bool = False
    "The registry's records are part of it."
    media_answered: int = 0
    "How many media workers answered."


async def media_stats(
    nc: Client, timeout: float = GATHER_TIMEOUT, expected: int = 0
) -> list[CallStatsReply]:
    """Every media worker's answer within ``timeout`` seconds, by instance id.

    ``expected``: how many workers are known to be alive; the wait ends as soon
    as that many answered (0: always wait the whole ``timeout``).
    """
    replies: dict[str, CallStatsReply] = {}
    enough = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        with contextlib.suppress(calls.DecodeError):  # not a media worker's answer
            reply = calls.decode_stats(msg.data)
            replies[reply.instance_id] = reply
        if expected and len(replies) >= expected:
            enough.set()

    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, cb=on_reply)
    try:
        await nc.publish(subjects.call_stats_query(), b"", reply=inbox)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await nc.flush()
                await enough.wait()
    finally:
        await subscription.unsubscribe()
    return [replies[key] for key in sorted(replies)]


async def registry_records(registry: CallRegistry) -> list[CallRecord]:
    """Every record of the registry (raises ``RegistryError``)."""
    return [entry.record for entry in await registry.list_all()]


async def collect(
    nc: Client,
    registry: CallRegistry | None,
    *,
    timeout: float = GATHER_TIMEOUT,
    expected_media: int = 0,
    now: float | None = None,
) -> Listing:
    """The live calls: the registry's records and the media workers' figures, merged.

    ``registry`` None: the registry could not be opened; the media side is still shown.
    """
    problems: list[str] = []
    records: list[CallRecord] = []
    read_ok: list[bool] = []

    async def read() -> None:
        if registry is None:
            problems.append("the call registry is not available: calls are shown from media only")
            return
        try:
            records.extend(await registry_records(registry))
        except RegistryError as exc:
            problems.append(f"the call registry could not be read ({exc})")
            return
        read_ok.append(True)

    _, replies = await asyncio.gather(read(), media_stats(nc, timeout, expected_media))
    if not replies:
        problems.append(f"no media worker answered in {timeout:g} s: no codecs or quality")
    calls = merge(records, replies, time.time() if now is None else now)
    return Listing(calls, problems, registry_read=bool(read_ok), media_answered=len(replies))


async def request_hangup(
    nc: Client, call_id: str, timeout: float = HANGUP_TIMEOUT
) -> HangupAnswer | None:
    """Ask every signaling instance to end ``call_id`` with cause ``operator``.

    The answer of the instance holding it, or None when none did in ``timeout``.
    Raises ``ValueError`` for a malformed call id.
    """
    subject = subjects.operator_hangup()
    subjects.call_events(call_id, "signaling")  # the call id check of every call subject
    answered: asyncio.Future[HangupAnswer] = asyncio.get_running_loop().create_future()

    async def on_reply(msg: Msg) -> None:
        with contextlib.suppress(calls.DecodeError):
            answer = calls.decode_hangup(msg.data)
            if answer.call_id == call_id and not answered.done():
                answered.set_result(answer)

    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, cb=on_reply)
    try:
        request = HangupRequested(call_id=call_id, cause=errors.OPERATOR)
        await nc.publish(subject, codec.encode(request), reply=inbox)
        try:
            async with asyncio.timeout(timeout):
                await nc.flush()
                return await answered
        except TimeoutError:
            return None
    finally:
        await subscription.unsubscribe()
