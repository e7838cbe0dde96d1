"""An outbound call: ``DialRequested`` checked, routed to a trunk, dialed, then followed.

Signaling checks the destination and the dial plan first; this checks them
again (a signaling that does not must not reach a trunk), restricts the
browser's offer to the trunk's codecs, adds the route's custom headers and
sends the INVITE. From ``InviteSent`` on the call is ``follow``'s.
"""

from __future__ import annotations

import logging

from proto import errors
from proto.events import CallEnded, DialRequested, InviteSent
from services.common.custom_headers import HeaderError
from services.common.dialplan import DestinationError, Pattern, denied_by, normalize
from services.common.providers import Providers, Target
from services.sipagent.agent import DialError, SipAgent, UnreachableError, check_destination
from services.sipagent.call_records import CallRecords
from services.sipagent.call_reports import CallReports
from services.sipagent.follow import follow
from services.sipagent.live_calls import LiveCalls
from services.sipagent.offer import restrict_codecs
from services.sipagent.spans import SipSpans

log = logging.getLogger(__name__)


class Dialer:
    """Places the calls of ``DialRequested`` events through the agent's trunks."""

    def __init__(
        self,
        agent: SipAgent,
        instance_id: str,
        providers: Providers,
        dial_deny: tuple[Pattern, ...],
        calls: LiveCalls,
        reports: CallReports,
        records: CallRecords,
    ) -> None:
        self._agent = agent
        self._instance_id = instance_id
        self._providers = providers
        self._dial_deny = dial_deny
        self._calls = calls
        self._reports = reports
        self._records = records

    def attributes(self, dial: DialRequested) -> dict[str, str]:
        """The call's span attributes."""
        target = self._providers.route(dial.destination)
        return {
            "bridge.call_id": dial.call_id,
            "bridge.destination": dial.destination,
            "bridge.trunk": target.trunk.name if target else "",
            "bridge.trunk_host": target.trunk.host if target else "",
            "bridge.sipagent_id": self._instance_id,
        }

    async def place(self, dial: DialRequested, spans: SipSpans) -> CallEnded:
        """Run the call until it ends; the ``CallEnded`` to publish."""
        call_id = dial.call_id
        try:
            check_destination(dial.destination)
        except ValueError as exc:
            log.info("%s: rejected destination %r", call_id, dial.destination)
            return CallEnded(
                call_id=call_id, cause=errors.REJECTED, reason=f"Invalid destination: {exc}"
            )
        target = self._providers.route(dial.destination)
        if target is None:
            # Signaling checks the same routes; this is for a signaling that does not.
            log.info("%s: no route to %r", call_id, dial.destination)
            return CallEnded(
                call_id=call_id,
                cause=errors.REJECTED,
                reason="Unknown destination",
                code=errors.UNKNOWN_DESTINATION,
            )
        if self._denied(dial.destination, target):
            log.warning("%s: destination refused by the dial plan", call_id)
            return CallEnded(
                call_id=call_id,
                cause=errors.REJECTED,
                reason="Destination not allowed",
                code=errors.FORBIDDEN_DESTINATION,
            )
        try:
            target.check_headers(dial.headers)
            offer_sdp = restrict_codecs(dial.offer_sdp, target.trunk.codecs)
        except HeaderError as exc:
            log.info("%s: headers refused: %s", call_id, exc)
            return CallEnded(
                call_id=call_id, cause=errors.REJECTED, reason=str(exc), code=errors.BAD_HEADERS
            )
        except ValueError as exc:
            log.info("%s: %s", call_id, exc)
            return CallEnded(
                call_id=call_id,
                cause=errors.REJECTED,
                reason=str(exc),
                code=errors.NO_COMMON_CODEC,
            )
        if self._calls.hung_up_early(call_id):
            return CallEnded(call_id=call_id, cause=errors.CANCELLED, reason="Cancelled")

        headers = target.invite_headers(dial.headers)
        log.info(
            "%s: %s via trunk %s (headers: %s)",
            call_id,
            target.user,
            target.trunk.name,
            ", ".join(name for name, _ in headers) or "none",
        )
        log.debug("%s: custom headers %r", call_id, headers)
        spans.start_invite()
        try:
            handle = await self._agent.dial(
                call_id,
                target.user,
                offer_sdp,
                spans.observe,
                trunk=target.trunk,
                headers=headers,
            )
        except UnreachableError as exc:
            log.warning("%s: cannot place the call: %s", call_id, exc)
            return CallEnded(
                call_id=call_id,
                cause=errors.UNREACHABLE,
                reason=str(exc),
                code=errors.UNREACHABLE,
            )
        except DialError as exc:
            log.warning("%s: cannot place the call: %s", call_id, exc)
            return CallEnded(call_id=call_id, cause=errors.INTERNAL, reason=str(exc))
        self._calls.dialing(call_id, handle)
        await self._records.inviting(call_id, handle)
        await self._reports.publish(
            InviteSent(
                call_id=call_id,
                sipagent_id=self._instance_id,
                request_uri=handle.request_uri,
                dtmf=target.trunk.dtmf,
            )
        )
        early = self._calls.early_hangup(call_id)
        if early is not None:
            handle.hangup(early)
        return await follow(call_id, handle, spans, self._reports, self._records)

    def _denied(self, destination: str, target: Target) -> bool:
        """Whether a deny list refuses ``destination`` (normalized as signaling does)."""
        try:
            number = normalize(destination)
        except DestinationError:
            number = destination
        lists = [self._dial_deny, target.trunk.deny]
        if target.route is not None:
            lists.append(target.route.deny)
        return any(denied_by(patterns, number) is not None for patterns in lists)
