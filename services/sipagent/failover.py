"""One outbound call placed on its targets in turn, sans-I/O: which target, when to move on.

``Failover`` builds the first attempt of a call (``first``) and, when an
attempt ends, decides whether the call moves to its next target instead of
ending (``next_target``, then ``move_on``):
- no response at all (Timer B, a connection that could not be opened) or a
  503 before any provisional response but 100, unless the caller hung up
  (``fails_over``), and only while targets are left and ``INVITE_TIMEOUT``
  (counted from the first INVITE) is not over;
- a 503's Retry-After keeps that target aside for every call (``Backoff``),
  until every target of a call is resting.

Each attempt is a new INVITE with a Call-ID of its own. ``AgentCore`` hosts
the attempts; this module only decides and fills in the ``HostedCall``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sipmessage import Response

from services.common.providers import Trunk
from services.common.sipaddr import OutboundProxy
from services.sipagent.agent_ports import Connect, SentBy
from services.sipagent.attempt import DialPlan, fails_over, invite_for, request_uri_for
from services.sipagent.call import CallState, OutboundCall
from services.sipagent.config import AgentConfig, DialError, UnreachableError
from services.sipagent.events import Ended
from services.sipagent.hosted import Addr, HostedCall, SipObserver, hops_for
from services.sipagent.resolve import Backoff, Target, retry_after
from services.sipagent.transfer import TransferringCall

log = logging.getLogger(__name__)


class Failover:
    """The attempts of outbound calls: the first target, and the next when one fails."""

    def __init__(
        self,
        config: AgentConfig,
        sent_by: SentBy,
        backoff: Backoff,
        latest_input: Callable[[], float],
    ) -> None:
        """``latest_input()``: the time of the host's latest input (a transfer places its
        INVITE from within a call, without a ``now`` of its own)."""
        self.config = config
        self.backoff = backoff
        "Targets that answered 503 with Retry-After, for every call of the process."
        self._sent_by = sent_by
        self._latest_input = latest_input

    def usable(self, targets: Sequence[Target], now: float) -> list[Target]:
        """``targets`` but those resting after a 503's Retry-After (all if every one is)."""
        return self.backoff.usable(targets, now)

    def first(
        self,
        call_id: str,
        trunk: Trunk,
        destination: str,
        offer_sdp: str,
        targets: Sequence[Target],
        now: float,
        *,
        headers: Sequence[tuple[str, str]] = (),
        proxy: OutboundProxy | None = None,
        observer: SipObserver | None = None,
    ) -> tuple[HostedCall, Connect]:
        """The record of a new call aimed at the first usable one of ``targets``, unstarted.

        ``DialError`` for a destination that cannot be a SIP user part,
        ``UnreachableError`` without any target.
        """
        try:
            request_uri_for(destination, trunk.realm_domain)
        except ValueError as exc:
            raise DialError(f"invalid destination: {exc}") from None
        usable = self.usable(targets, now)
        if not usable:
            raise UnreachableError(f"no address for trunk {trunk.name!r}")
        timeout = self.config.invite_timeout
        plan = DialPlan(
            trunk,
            destination,
            offer_sdp,
            list(headers),
            usable,
            now + timeout,
            proxy,
            invite_timeout=timeout,
        )
        target = plan.targets.pop(0)
        call = self._call_for(call_id, plan, target, now)
        hosted = HostedCall(call, target.addr, target.transport, dial=plan, observer=observer)
        return hosted, self._aim(hosted, target)

    def note_response(self, hosted: HostedCall, response: Response, now: float) -> None:
        """Remember a provisional response to the INVITE; honour a 503's Retry-After."""
        if 100 < response.code < 200:
            # A 100 is only the next hop's; ringing or early media may have reached the caller.
            hosted.provisional = True
        elif response.code == 503 and hosted.target is not None:
            seconds = retry_after(response.headers.get("Retry-After"))
            if seconds:
                call_id = hosted.call.call_id
                log.info("%s: %s asks for %g s of rest", call_id, hosted.target, seconds)
                self.backoff.hold(hosted.target, seconds, now)

    def waits_on(self, hosted: HostedCall, transport: str, addr: Addr) -> bool:
        """Whether ``hosted``'s INVITE has not left yet for want of a connection to ``addr``."""
        if hosted.retired or hosted.closed or hosted.transport != transport:
            return False
        if hosted.trunk != addr:
            return False
        call = hosted.call
        invite = call.call if isinstance(call, TransferringCall) else call
        return isinstance(invite, OutboundCall) and invite.state is CallState.CALLING

    def next_target(
        self, hosted: HostedCall, ended: Ended, now: float, reason: str = ""
    ) -> Target | None:
        """The target the call moves to instead of ending with ``ended``; None if it ends.

        ``reason``: why a connection could not be opened (empty: ``ended`` came
        from the call itself).
        """
        plan = hosted.dial
        if plan is None:
            return None
        if not fails_over(
            ended,
            provisional=hosted.provisional,
            hung_up=hosted.hung_up,
            transport_failed=bool(reason),
        ):
            return None
        if not plan.targets or now >= plan.deadline:
            return None
        why = reason or ("no response" if ended.status == 408 else f"{ended.status} {ended.reason}")
        target = plan.targets.pop(0)
        log.info("%s: %s (%s): trying %s", hosted.call.call_id, hosted.target, why, target)
        return target

    def move_on(self, hosted: HostedCall, target: Target, now: float) -> Connect:
        """Replace the call's attempt with a new, unstarted INVITE to ``target``."""
        plan = hosted.dial
        assert plan is not None, "only a dialed call moves on"
        hosted.call = self._call_for(hosted.call.call_id, plan, target, now)
        return self._aim(hosted, target)

    def _aim(self, hosted: HostedCall, target: Target) -> Connect:
        """Make ``target`` the call's current one; what the transport needs first."""
        hosted.target = target
        hosted.trunk = target.addr
        hosted.transport = target.transport
        hosted.provisional = False
        plan = hosted.dial
        hosted.hops = hops_for(
            target.addr, target.transport, proxied=plan is not None and plan.proxy is not None
        )
        # The trunk's ``tls_ca``, else SIP_TLS_CA.
        return Connect(target, plan.trunk.tls_ca if plan else "")

    def _call_for(
        self, call_id: str, plan: DialPlan, target: Target, now: float
    ) -> TransferringCall:
        """The call toward ``target``, able to follow the trunk's REFER through it."""

        def place(uri: str) -> OutboundCall:
            return self._invite_for(call_id, plan, target, self._latest_input(), uri)

        return TransferringCall(self._invite_for(call_id, plan, target, now), place)

    def _invite_for(
        self, call_id: str, plan: DialPlan, target: Target, now: float, uri: str = ""
    ) -> OutboundCall:
        return invite_for(
            call_id,
            plan,
            target,
            target.transport,
            self._sent_by(target.addr, target.transport),
            self.config.t1,
            now,
            keepalive=self.config.keepalive_interval,
            request_uri=uri,
        )
