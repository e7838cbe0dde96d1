"""Dialogs in the call registry, and the BYE a surviving SIP agent sends for a dead one.

``invite_record``/``dialog_record`` turn what the SIP agent knows into the
``SipDialogRecord`` it stores (at the INVITE, then at the 2xx);
``dialog_from_record`` and ``build_bye`` rebuild the dialog elsewhere with
``sip.dialog.Dialog``. A dialog we answered (an inbound call,
``Dialog.from_request``) is stored the same way from our side: our tag is
the To tag of the trunk's INVITE, the remote target its Contact, the route
set its Record-Route as is, and our CSeq space starts at 0; ``uas_trunk``
says where a survivor sends its BYE. ``RecoveredBye`` is the sans-I/O BYE transaction of an
adopted dialog: it is driven exactly like ``OutboundCall`` (``start``,
``receive``, ``handle_timer``, ``get_timer``, ``messages_to_send``,
``next_event``, ``finished``), so ``SipAgent`` hosts it among its calls, and
reports one ``Ended`` when the trunk answered or Timer F fired.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import deque

from sipmessage import URI, Address, Request, Response

from proto import errors
from proto.fleet import SipDialogRecord
from services.common.sip.auth import AuthError, DigestAuthenticator
from services.common.sip.dialog import Dialog
from services.common.sip.message import (
    SipMessage,
    make_response,
    new_branch,
    summary,
    tag_of,
)
from services.common.sip.transaction import (
    T1,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ResponseReceived,
)
from services.sipagent.call import USER_AGENT
from services.sipagent.events import CallEvent, Ended

log = logging.getLogger(__name__)

CSEQ_GAP = 10
"""Added to the stored CSeq for the survivor's BYE.

The dead agent may have sent requests after its last write (its own BYE,
say); RFC 3261 12.2.1.1 lets the CSeq grow by more than one, and a lower
one would be refused as out of order.
"""
SIPAGENT_LOST = "SIP agent lost"


class RecoveryError(ValueError):
    """The record does not hold a whole dialog: no BYE can be built from it."""


def invite_record(sip_call_id: str, *, transport: str, trunk: tuple[str, int]) -> SipDialogRecord:
    """What is known once the INVITE is sent (``records.inviting``)."""
    host, port = trunk
    return SipDialogRecord(
        sip_call_id=sip_call_id, transport=transport.lower(), trunk_host=host, trunk_port=port
    )


def dialog_record(dialog: Dialog, *, transport: str, trunk: tuple[str, int]) -> SipDialogRecord:
    """The confirmed ``dialog`` as stored (``records.confirmed``)."""
    host, port = trunk
    return SipDialogRecord(
        sip_call_id=dialog.call_id,
        transport=transport.lower(),
        trunk_host=host,
        trunk_port=port,
        local_tag=dialog.local_tag,
        local_from=dialog.local_from,
        local_cseq=dialog.local_cseq,
        remote_tag=dialog.remote_tag,
        remote_to=dialog.remote_to,
        remote_target=str(dialog.remote_target),
        route_set=tuple(dialog.route_set),
    )


def uas_trunk(dialog: Dialog, *, transport: str, source: tuple[str, int]) -> tuple[str, int]:
    """Where a survivor sends the BYE of a dialog we answered (an inbound call).

    Over UDP: the INVITE's ``source``, where this agent answered too. Over TCP
    or TLS the source is usually the trunk's end of a connection that dies
    with this agent, at a port nothing listens on: then the dialog's next hop
    (the first route, else the remote target) when it names an IP address
    (RFC 3263 resolution of a name is left to the live agent), else ``source``.
    """
    if transport.lower() == "udp":
        return source
    hop = dialog.remote_target
    if dialog.route_set:
        try:
            hop = Address.parse(dialog.route_set[0]).uri
        except ValueError:
            return source
    host = hop.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return source
    secure = hop.scheme == "sips" or transport.lower() == "tls"
    return host, hop.port or (5061 if secure else 5060)


def answered_record(
    response: Response, *, transport: str, trunk: tuple[str, int]
) -> SipDialogRecord:
    """The dialog a 2xx made, from the 2xx alone: its INVITE is no longer known.

    For a 2xx that comes after its call was forgotten: From is ours as we sent
    it, To carries the trunk's tag. ``RecoveryError`` if it cannot make a dialog.
    """
    try:
        local_from = response.headers["From"]
        remote_to = response.headers["To"]
        contacts = response.contact
        routes = [
            str(address)
            for value in response.headers.getlist("Record-Route")
            for address in Address.parse_many(value)
        ]
    except (KeyError, ValueError) as exc:
        raise RecoveryError(f"unusable 2xx: {exc}") from None
    if not contacts or not tag_of(remote_to):
        raise RecoveryError("unusable 2xx: no Contact or no To tag")
    host, port = trunk
    return SipDialogRecord(
        sip_call_id=response.call_id,
        transport=transport.lower(),
        trunk_host=host,
        trunk_port=port,
        local_tag=tag_of(local_from),
        local_from=local_from,
        local_cseq=response.cseq.sequence,
        remote_tag=tag_of(remote_to),
        remote_to=remote_to,
        remote_target=str(contacts[0].uri),
        route_set=tuple(reversed(routes)),
    )


def late_ack(response: Response, record: SipDialogRecord, *, sent_by: str) -> Request:
    """The ACK of a 2xx whose call was forgotten (RFC 3261 13.2.2.4: every 2xx is ACKed)."""
    dialog = dialog_from_record(record)
    return dialog.create_request("ACK", via(sent_by, record.transport), cseq=response.cseq.sequence)


def dialog_from_record(record: SipDialogRecord) -> Dialog:
    """The ``Dialog`` a stored record describes; ``RecoveryError`` unless confirmed."""
    if not record.confirmed:
        raise RecoveryError(f"dialog {record.sip_call_id} is not confirmed")
    try:
        target = URI.parse(record.remote_target)
    except ValueError as exc:
        raise RecoveryError(f"bad remote target {record.remote_target!r}: {exc}") from None
    return Dialog(
        call_id=record.sip_call_id,
        local_tag=record.local_tag,
        remote_tag=record.remote_tag,
        local_from=record.local_from,
        remote_to=record.remote_to,
        remote_target=target,
        local_cseq=record.local_cseq,
        route_set=list(record.route_set),
    )


def via(sent_by: str, transport: str) -> str:
    """A fresh Via of this agent (``sent_by`` is its host:port)."""
    return f"SIP/2.0/{transport.upper()} {sent_by};rport;branch={new_branch()}"


def build_bye(
    record: SipDialogRecord,
    *,
    sent_by: str,
    cseq_gap: int = CSEQ_GAP,
    headers: list[tuple[str, str]] | None = None,
) -> Request:
    """The BYE this agent sends in the stored dialog, replies coming to ``sent_by``."""
    dialog = dialog_from_record(record)
    dialog.local_cseq += cseq_gap - 1  # create_request adds the last one
    return _bye(dialog, sent_by, record.transport, headers or [])


def _bye(dialog: Dialog, sent_by: str, transport: str, headers: list[tuple[str, str]]) -> Request:
    return dialog.create_request(
        "BYE", via(sent_by, transport), headers=[*headers, ("User-Agent", USER_AGENT)]
    )


class RecoveredBye:
    """One BYE in a dialog adopted from a dead SIP agent, sans-I/O."""

    def __init__(
        self,
        call_id: str,
        record: SipDialogRecord,
        *,
        sent_by: str,
        authenticator: DigestAuthenticator | None = None,
        t1: float = T1,
    ) -> None:
        self.call_id = call_id
        "The bridge's call id, for logs."
        self.sip_call_id = record.sip_call_id
        self.request_uri = record.remote_target
        self.trunk = (record.trunk_host, record.trunk_port)
        "Where the BYE goes (as ``CallHandle.trunk``)."
        self._record = record
        self._dialog = dialog_from_record(record)
        self._dialog.local_cseq += CSEQ_GAP - 1  # the BYE adds the last one
        self._sent_by = sent_by
        self._auth = authenticator
        self._reliable = record.transport != "udp"
        self._t1 = t1
        self._bye_tx: NonInviteClientTransaction | None = None
        self._server_txs: list[NonInviteServerTransaction] = []
        self._challenged = False
        self._ended = False
        self._outbox: list[SipMessage] = []
        self._events: deque[CallEvent] = deque()

    def start(self, now: float) -> None:
        """Send the BYE."""
        self._send_bye(now, [])

    def hangup(self, cause: str, now: float) -> None:
        """Nothing to do: the BYE is already the end."""

    def receive(self, message: SipMessage, now: float) -> None:
        if isinstance(message, Response):
            tx = self._bye_tx
            if tx is not None and tx.matches(message):
                tx.receive(message, now)
                self._drain(now)
            return
        self._receive_request(message, now)

    def handle_timer(self, now: float) -> None:
        if self._bye_tx is not None:
            deadline = self._bye_tx.get_timer()
            if deadline is not None and deadline <= now:
                self._bye_tx.handle_timer(now)
                self._drain(now)
        for server_tx in self._server_txs:
            deadline = server_tx.get_timer()
            if deadline is not None and deadline <= now:
                server_tx.handle_timer(now)
                self._outbox.extend(server_tx.messages_to_send())
        self._server_txs = [tx for tx in self._server_txs if not tx.terminated]

    def get_timer(self) -> float | None:
        timers = [tx.get_timer() for tx in self._server_txs]
        if self._bye_tx is not None:
            timers.append(self._bye_tx.get_timer())
        return min((t for t in timers if t is not None), default=None)

    def messages_to_send(self) -> list[SipMessage]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> CallEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def finished(self) -> bool:
        """The BYE got its answer (or timed out) and no transaction is left."""
        return self._ended and self.get_timer() is None

    # --- internals ------------------------------------------------------------------

    def _send_bye(self, now: float, headers: list[tuple[str, str]]) -> None:
        bye = _bye(self._dialog, self._sent_by, self._record.transport, headers)
        log.info("%s: > BYE for a dead SIP agent's dialog %s", self.call_id, self.sip_call_id)
        self._bye_tx = NonInviteClientTransaction(bye, reliable=self._reliable, t1=self._t1)
        self._bye_tx.start(now)
        self._outbox.extend(self._bye_tx.messages_to_send())

    def _drain(self, now: float) -> None:
        tx = self._bye_tx
        assert tx is not None
        self._outbox.extend(tx.messages_to_send())
        while (event := tx.next_event()) is not None:
            if not isinstance(event, ResponseReceived):
                log.info("%s: recovered BYE timed out", self.call_id)
                self._end(None)
                continue
            response = event.response
            if response.code < 200:
                continue
            log.info("%s: < %s (recovered BYE)", self.call_id, summary(response))
            if response.code in (401, 407) and self._retry(response, now):
                continue
            self._end(response.code)

    def _retry(self, response: Response, now: float) -> bool:
        if self._auth is None or self._challenged:
            return False
        self._challenged = True
        try:
            header = self._auth.authorize(response, "BYE", str(self._dialog.remote_target))
        except AuthError:
            return False
        self._send_bye(now, [header])
        return True

    def _end(self, status: int | None) -> None:
        if not self._ended:
            self._ended = True
            self._events.append(Ended(errors.INTERNAL, status, SIPAGENT_LOST))

    def _receive_request(self, request: Request, now: float) -> None:
        if request.method == "ACK":
            return
        for server_tx in self._server_txs:
            if server_tx.matches(request):
                server_tx.receive(request, now)
                self._outbox.extend(server_tx.messages_to_send())
                return
        # The trunk's own BYE crossing ours ends the dialog just as well.
        code = 200 if request.method == "BYE" and self._dialog.matches(request) else 481
        response = make_response(
            request, code, to_tag=self._dialog.local_tag, headers=[("User-Agent", USER_AGENT)]
        )
        server_tx = NonInviteServerTransaction(request, reliable=self._reliable, t1=self._t1)
        server_tx.respond(response, now)
        self._server_txs.append(server_tx)
        self._outbox.extend(server_tx.messages_to_send())
