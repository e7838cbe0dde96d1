"""``bridge calls``: the live calls of the fleet; ``bridge calls hangup ID`` ends one.

The list merges the call registry (``bridge_calls``) with what every media
worker answers on ``subjects.call_stats_query()`` (``calls_query``): a table
for people, one JSON array with ``--json`` (the same as signaling's
``GET /calls``). ``hangup`` sends ``HangupRequested(cause="operator")`` on
``subjects.operator_hangup()``; the signaling instance holding the call ends
it (BYE to the trunk, ``ended`` cause ``operator`` to the browser) and answers,
or the SIP agent holding an inbound call still ringing does (480 to the trunk,
``ended`` cause ``operator`` to every ringing browser).

It connects as the operator's NATS user: ``NATS_USER``/``NATS_PASSWORD`` or
``NATS_CREDS`` when set (``admin`` on the locked bus), else the ``admin`` user
of a ``bridge up`` on this machine.

Exit codes: 0 done; 1 NATS or the fleet could not be asked, or no instance
holds the call; 2 bad settings or a malformed call id.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from proto import subjects
from services.common import calls_listing, calls_query, nats_auth
from services.common.fleet.registry import OP_TIMEOUT, CallRegistry, RegistryError
from services.common.settings import Settings, SettingsError, load_settings, nats_urls, redact_url

CONNECT_TIMEOUT = 5.0
"Seconds allowed to reach NATS."
PROG = "bridge calls"


class _Failed(Exception):
    """What was asked could not be done; the message says why."""


async def _connect(settings: Settings, options: dict[str, Any]) -> Client:
    async def quiet(exc: Exception) -> None:
        pass  # a failed connection is reported once, by the caller

    connecting = nats.connect(
        nats_urls(settings.nats_url),
        connect_timeout=CONNECT_TIMEOUT,
        allow_reconnect=False,
        error_cb=quiet,
        **options,
    )
    return await asyncio.wait_for(connecting, CONNECT_TIMEOUT)


async def _list(settings: Settings, options: dict[str, Any], timeout: float) -> tuple[bytes, str]:
    """The JSON array and the table of the live calls, with any problem on stderr."""
    nc = await _connect(settings, options)
    try:
        registry: CallRegistry | None
        try:
            registry = await CallRegistry.open(nc, op_timeout=OP_TIMEOUT)
        except RegistryError:
            registry = None
        listing = await calls_query.collect(nc, registry, timeout=timeout)
    finally:
        await nc.close()
    for problem in listing.problems:
        print(f"{PROG}: {problem}", file=sys.stderr)
    if not listing.registry_read and not listing.media_answered:
        raise _Failed("neither the call registry nor any media worker could be asked")
    return calls_listing.to_json(listing.calls), calls_listing.format_table(listing.calls)


async def _hangup(settings: Settings, options: dict[str, Any], call_id: str, timeout: float) -> str:
    nc = await _connect(settings, options)
    try:
        answer = await calls_query.request_hangup(nc, call_id, timeout)
        if answer is not None:
            if answer.sipagent_id and not answer.signaling_id:
                return f"call {call_id}: ending (ringing at SIP agent {answer.sipagent_id})"
            return f"call {call_id}: ending (held by signaling {answer.signaling_id})"
        try:
            registry = await CallRegistry.open(nc, op_timeout=OP_TIMEOUT)
            entry = await registry.get(call_id)
        except RegistryError:
            raise _Failed(f"no signaling instance holds call {call_id}") from None
    finally:
        await nc.close()
    if entry is None:
        raise _Failed(f"no live call {call_id}")
    holder = entry.record.signaling_id or "none"
    raise _Failed(
        f"call {call_id} is in the registry (signaling {holder}, state {entry.record.state}) "
        "but no signaling instance holds it: its signaling may have died, and a survivor "
        "ends the call once the instance's lease runs out"
    )


def main(as_json: bool, timeout: float | None = None, hangup: str | None = None) -> int:
    """``bridge calls [--json]``, or ``bridge calls hangup ID`` when ``hangup`` is given."""
    if timeout is None:
        timeout = calls_query.GATHER_TIMEOUT if hangup is None else calls_query.HANGUP_TIMEOUT
    if not 0 < timeout <= 60:
        print(f"{PROG}: --timeout must be above 0 and at most 60", file=sys.stderr)
        return 2
    if hangup is not None:
        try:
            subjects.call_events(hangup, "signaling")
        except ValueError:
            print(f"{PROG}: {hangup!r} is not a call id", file=sys.stderr)
            return 2
    try:
        settings = load_settings()
        # Without credentials of its own: the admin user of a `bridge up` on this machine.
        embedded = nats_auth.embedded_admin(settings)
        options = {**nats_auth.connect_options(settings), **(embedded or {})}
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    where = redact_url(settings.nats_url)
    try:
        if hangup is not None:
            print(asyncio.run(_hangup(settings, options, hangup, timeout)))
            return 0
        data, table = asyncio.run(_list(settings, options, timeout))
    except _Failed as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        if nats_auth.refused(exc):
            who = "the admin user of `bridge up`" if embedded else nats_auth.describe(settings)
            print(f"{PROG}: NATS at {where} refused {who}", file=sys.stderr)
            return 1
        detail = f" ({exc})" if str(exc) else ""
        print(f"{PROG}: cannot reach NATS at {where}{detail}", file=sys.stderr)
        return 1
    if as_json:
        sys.stdout.write(data.decode() + "\n")
    else:
        print(table)
    return 0
