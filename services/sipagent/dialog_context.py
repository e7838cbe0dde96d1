"""What the parts of a confirmed dialog share, sans-I/O.

``DialogContext`` holds the dialog, the in-dialog transactions in flight,
and the outbox and event queue of the call; it builds requests and
responses and runs their transactions, each with a handler for its events.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Iterable

from sipmessage import Request, Response

from services.common.sip.auth import AuthError, DigestAuthenticator
from services.common.sip.dialog import Dialog
from services.common.sip.message import SipMessage, make_response, summary, top_branch
from services.common.sip.transaction import (
    T1,
    InviteClientTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    TransactionEvent,
)
from services.sipagent.events import CallEvent

log = logging.getLogger(__name__)

USER_AGENT = "webrtc-sip-bridge/0.1"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY"

ClientTx = InviteClientTransaction | NonInviteClientTransaction
Handler = Callable[[TransactionEvent, float], None]


class DialogContext:
    """The dialog's shared plumbing: build requests and responses, run their transactions."""

    def __init__(
        self,
        *,
        call_id: str,
        dialog: Dialog,
        via: Callable[[], str],
        contact: str,
        outbox: list[SipMessage],
        events: deque[CallEvent],
        dead: Callable[[str, float], None],
        authenticator: DigestAuthenticator | None = None,
        reliable: bool = False,
        t1: float = T1,
        user_agent: str = USER_AGENT,
        rng: random.Random | None = None,
        secure: bool = False,
    ) -> None:
        """``dead(reason, now)``: end the call because the dialog is gone (BYE attempted).

        ``secure``: the dialog runs over TLS, so a ``sips:`` URI may be called from it.
        """
        self.call_id = call_id
        self.dialog = dialog
        self.via = via
        self.contact = contact
        self.outbox = outbox
        self.events = events
        self.dead = dead
        self.authenticator = authenticator
        self.reliable = reliable
        self.t1 = t1
        self.user_agent = user_agent
        self.rng = rng or random.Random()
        self.secure = secure
        self._client: list[tuple[ClientTx, Handler]] = []
        self._server: list[NonInviteServerTransaction] = []

    # --- building ----------------------------------------------------------------

    def request(
        self,
        method: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        cseq: int | None = None,
    ) -> Request:
        """A request in the dialog (a new CSeq unless ``cseq``), with our User-Agent."""
        extra = [*headers, ("User-Agent", self.user_agent)]
        if method in ("INVITE", "UPDATE", "NOTIFY"):
            extra.insert(0, ("Contact", self.contact))  # target refresh requests
        return self.dialog.create_request(
            method, self.via(), cseq=cseq, headers=extra, body=body, content_type=content_type
        )

    def response(
        self,
        request: Request,
        code: int,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        phrase: str | None = None,
    ) -> Response:
        response = make_response(
            request,
            code,
            phrase,
            to_tag=self.dialog.local_tag,
            headers=[("User-Agent", self.user_agent), *headers],
        )
        if body:
            response.body = body
            response.headers.set("Content-Type", content_type or "application/sdp")
            response.headers.set("Content-Length", str(len(body)))
        return response

    def authorize(self, response: Response, request: Request) -> tuple[str, str] | None:
        """The credentials header answering ``response`` to ``request``; None if we have none."""
        if self.authenticator is None:
            return None
        try:
            return self.authenticator.authorize(
                response, request.method, str(request.uri), request.body
            )
        except AuthError as exc:
            log.info("%s: cannot answer the challenge to %s: %s", self.call_id, request.method, exc)
            return None

    # --- transactions ------------------------------------------------------------

    def respond(
        self,
        request: Request,
        code: int,
        now: float,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        """Answer a non-INVITE request (or refuse an INVITE) and absorb its retransmissions."""
        response = self.response(
            request, code, headers=headers, body=body, content_type=content_type
        )
        server_tx = NonInviteServerTransaction(request, reliable=self.reliable, t1=self.t1)
        server_tx.respond(response, now)
        self._server.append(server_tx)
        self.outbox.extend(server_tx.messages_to_send())
        log.info("%s: > %s (%s)", self.call_id, summary(response), request.method)

    def start(self, tx: ClientTx, now: float, handler: Handler) -> None:
        log.info("%s: > %s", self.call_id, tx.request.method)
        self._client.append((tx, handler))
        tx.start(now)
        self._drain(tx, handler, now)

    def absorb(self, request: Request, now: float) -> bool:
        """Whether ``request`` is a retransmission we answered already (re-sent)."""
        for server_tx in self._server:
            if server_tx.matches(request):
                server_tx.receive(request, now)
                self.outbox.extend(server_tx.messages_to_send())
                return True
        return False

    def serves(self, cancel: Request) -> bool:
        """Whether ``cancel`` names a request we answered (same top Via branch)."""
        branch = top_branch(cancel)
        return any(top_branch(tx.request) == branch for tx in self._server)

    def receive_response(self, response: Response, now: float) -> bool:
        """Pass ``response`` to its transaction; False when none of ours matches."""
        for tx, handler in self._client:
            if tx.matches(response):
                tx.receive(response, now)
                self._drain(tx, handler, now)
                self._prune()
                return True
        return False

    def handle_timer(self, now: float) -> None:
        for tx, handler in list(self._client):
            deadline = tx.get_timer()
            if deadline is not None and deadline <= now:
                tx.handle_timer(now)
                self._drain(tx, handler, now)
        for server_tx in self._server:
            deadline = server_tx.get_timer()
            if deadline is not None and deadline <= now:
                server_tx.handle_timer(now)
        self._prune()

    def get_timer(self) -> float | None:
        timers = [tx.get_timer() for tx, _ in self._client]
        timers += [tx.get_timer() for tx in self._server]
        return min((t for t in timers if t is not None), default=None)

    def _drain(self, tx: ClientTx, handler: Handler, now: float) -> None:
        self.outbox.extend(tx.messages_to_send())
        while (event := tx.next_event()) is not None:
            handler(event, now)

    def _prune(self) -> None:
        self._client = [(tx, h) for tx, h in self._client if not tx.terminated]
        self._server = [tx for tx in self._server if not tx.terminated]


def timers_of(*timers: float | None) -> float | None:
    return min((t for t in timers if t is not None), default=None)
