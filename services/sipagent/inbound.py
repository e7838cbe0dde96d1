"""What happens when an INVITE arrives from outside any dialog. Sans I/O.

``InboundDoor.on_invite`` is the agent core's callback for an INVITE that
belongs to no call, and takes every decision before anything rings:

1. Draining (SIGTERM): 503, the trunk tries elsewhere.
2. Which trunk sends it? One whose host (or outbound proxy) resolves to the
   source address (``trunks_at``, from ``SourceScreen``), or whose
   ``inbound_from`` networks hold it. Else, when some trunk has
   ``inbound_auth``, a digest challenge: 401 first, then the retry's
   ``Authorization`` names the trunk by its username and must verify.
   Anything else: 403 (or nothing, ``SIP_UNKNOWN_SOURCES=drop``), counted in
   ``bridge_sip_refused_total`` and logged within the screen's budget; nothing rings.
   The digest nonces are signed with ``SIP_NONCE_SECRET`` (shared by the
   replicas), else a random per-process secret; never with the passwords.
3. What the call cannot answer (``InboundCall.refusal``: no SDP offer, a
   Require we lack...): its 4xx.
4. The called number (the Request-URI's user, else the To user: a registrar
   rewrites the Request-URI to the binding) against ``[[inbound]]`` and
   ``INBOUND_USER``, first match wins: none, 404.
5. The SDP offer, read by the shared model (``services.common.sdp``): an
   audio stream with a port, a codec media takes (PCMU, PCMA, G722, opus),
   RTP/AVP, or RTP/SAVP when the trunk's ``srtp`` is not off; else (or an
   unreadable SDP) 488 with a ``Warning`` saying why.
6. Already ``max_ringing`` calls unanswered here (``INBOUND_MAX_RINGING``):
   486, counted in ``bridge_sip_refused_total`` (``too_many_ringing``).
7. Otherwise a bridge call id is drawn, the SIP call is built (its server
   transaction says 100 at once) and handed to the core to host, and the
   call's ``Arrival`` waits in ``next_arrival()`` for the service, which
   subscribes to the call, publishes ``CallArrived`` for each user and runs
   the ring (``ringing.Ringing``).
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec
from sipmessage import Address, Request, Response

from proto.events import CallArrived
from proto.fleet import CallRecord, SipDialogRecord
from services.common import sdp
from services.common.dialplan import DestinationError, National
from services.common.inbound_routes import InboundRoute, in_networks, normalize_did, route_inbound
from services.common.providers import Trunk
from services.common.sip.message import make_response, new_tag
from services.common.sip.transaction import T1
from services.sipagent.hosted import SipCall
from services.sipagent.inbound_call import InboundCall
from services.sipagent.ringing import ANSWER_WAIT
from services.sipagent.trunk_auth import TrunkAuth

log = logging.getLogger(__name__)

Addr = tuple[str, int]

MAX_NAME = 64
"Characters of the caller's display name passed on at most."
MAX_CALLER = 64
"Characters of the caller's user part passed on at most."
UNANSWERED_MARGIN = 10.0
"Seconds past the ring and the answer wait before an unanswered call ends itself (a backstop)."
MAX_RINGING = 100
"Calls one agent lets ring (not answered yet) at once, by default: beyond, 486."
MEDIA_CODECS = frozenset({"PCMU/8000", "PCMA/8000", "G722/8000", "OPUS/48000"})
"``NAME/RATE`` of the codecs media relays or converts (``services/media/sdp.py``)."
RTP_PROFILES = frozenset({"RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF"})


NewCall = Callable[[Request, str, Addr, str, Trunk, float], SipCall]
"""Builds the SIP call of an admitted INVITE: ``(invite, call_id, source, transport, trunk,
max_unanswered)``; the last: seconds after which the call ends itself unanswered (480)."""
SentBy = Callable[[Addr, str], str]
"This agent's host:port as ``addr`` sees it over a transport (by name): for Via and Contact."
Refused = Callable[[Addr, float], bool]
"Told of an INVITE refused for its source (count, log); True: answer it 403, False: drop it."
Busy = Callable[[], None]
"Told of an INVITE refused because ``max_ringing`` calls ring already (count it)."
Unanswered = Callable[[SipCall], bool]
"Whether a call the door admitted still waits for its answer (rings)."


def unanswered(call: SipCall) -> bool:
    """The default ``Unanswered``: an ``InboundCall`` before its final response."""
    return isinstance(call, InboundCall) and call.unanswered


@dataclass(frozen=True)
class Arrival:
    """An admitted, routed INVITE: what the service needs to ring it."""

    call_id: str
    "The bridge's call id, drawn here."
    sip_call_id: str
    trunk: str
    "The trunk it came from (a providers file name, ``default`` for ``.env``)."
    route: InboundRoute
    caller: str
    "The From user part, normalized when it is a number."
    caller_name: str
    called: str
    "The DID, as the entry matched it."
    offer_sdp: str
    source: Addr
    transport: str
    answer_wait: float = ANSWER_WAIT
    "Seconds a claimed call waits for media's answer (``ringing.answer_wait_for``)."

    def event(self, sipagent_id: str) -> CallArrived:
        """The ``CallArrived`` to publish on ``subjects.inbound_calls(user)`` for each user."""
        return CallArrived(
            call_id=self.call_id,
            sipagent_id=sipagent_id,
            caller=self.caller,
            caller_name=self.caller_name,
            called=self.called,
            trunk=self.trunk,
            users=self.route.users,
            offer_sdp=self.offer_sdp,
            ring_timeout=self.route.ring_timeout,
        )


def ringing_record(
    arrival: Arrival, sipagent_id: str, dialog: SipDialogRecord, wall: float
) -> CallRecord:
    """The registry's record of an admitted call, as it starts ringing (``wall``: time.time())."""
    return CallRecord(
        call_id=arrival.call_id,
        state="ringing",
        updated_at=wall,
        sipagent_id=sipagent_id,
        dialog=dialog,
        direction="inbound",
        caller=arrival.caller,
        callee=arrival.called,
        trunk=arrival.trunk,
        started_at=wall,
    )


def answering_record(
    record: CallRecord, signaling_id: str, identity: str, media_id: str, wall: float
) -> CallRecord:
    """The record once a browser won the call and media is ready (the 200 is on its way)."""
    return msgspec.structs.replace(
        record, signaling_id=signaling_id, identity=identity, media_id=media_id, updated_at=wall
    )


def inbound_calls(sent_by: SentBy, *, t1: float = T1, keepalive: float = 0.0) -> NewCall:
    """The ``NewCall`` of the agent: an ``InboundCall`` whose Via and Contact name this
    agent as the trunk sees it (``sips:`` over TLS), with the trunk's DTMF and REFER modes."""

    def new_call(
        invite: Request,
        call_id: str,
        source: Addr,
        transport: str,
        trunk: Trunk,
        max_unanswered: float,
    ) -> SipCall:
        address = sent_by(source, transport)
        user = f"{trunk.username}@" if trunk.username else ""
        contact = f"<sip:{user}{address};transport={transport}>"
        if transport == "tls":
            contact = f"<sips:{user}{address}>"
        return InboundCall(
            invite,
            call_id=call_id,
            contact=contact,
            sent_by=address,
            transport=transport,
            dtmf=trunk.dtmf,
            keepalive=keepalive,
            transfer=trunk.transfer,
            t1=t1,
            max_unanswered=max_unanswered,
        )

    return new_call


def new_call_id() -> str:
    """A bridge call id: URL-safe, no dots (``subjects.call_events`` accepts it)."""
    return "in-" + secrets.token_urlsafe(12)


class InboundDoor:
    """Admission and routing of the INVITEs that reach the agent outside any dialog."""

    def __init__(
        self,
        trunks: Mapping[str, Trunk],
        routes: Sequence[InboundRoute],
        new_call: NewCall,
        *,
        trunks_at: Callable[[str], Iterable[str]] = lambda host: (),
        auth: TrunkAuth | None = None,
        refused: Refused = lambda source, now: True,
        national: National | None = None,
        call_ids: Callable[[], str] = new_call_id,
        max_ringing: int = MAX_RINGING,
        busy: Busy = lambda: None,
        is_unanswered: Unanswered = unanswered,
        answer_wait: float = ANSWER_WAIT,
    ) -> None:
        """``trunks_at(host)``: the trunks whose addresses ``host`` is one of.
        ``auth``: the digest check of the trunks with ``inbound_auth`` (``DigestTrunks``).
        ``max_ringing``: calls let ring at once (``INBOUND_MAX_RINGING``); ``busy`` is told
        of each INVITE refused beyond. ``answer_wait``: passed on in each ``Arrival``."""
        self._trunks = trunks
        self._routes = routes
        self._new_call = new_call
        self._trunks_at = trunks_at
        self._auth = auth
        self._refused = refused
        self._national = national
        self._call_ids = call_ids
        self._max_ringing = max_ringing
        self._busy = busy
        self._is_unanswered = is_unanswered
        self._answer_wait = answer_wait
        self._ringing: list[SipCall] = []
        "The calls admitted and not answered yet (pruned at each INVITE)."
        self._arrivals: deque[Arrival] = deque()
        self.open = True
        "False once draining: new INVITEs get 503."

    def next_arrival(self) -> Arrival | None:
        """The next admitted call, for the service to ring."""
        return self._arrivals.popleft() if self._arrivals else None

    # --- the decisions ---------------------------------------------------------------------

    def on_invite(
        self, request: Request, source: Addr, transport: str, now: float
    ) -> SipCall | Response | None:
        """The agent core's callback: host this call, send this response, or drop the INVITE."""
        if not self.open:
            return _reply(request, 503, headers=[("Retry-After", "5")])
        trunks = self._trunks_from(source[0])
        if not trunks:
            decided = self._authenticate(request, source, now)
            if not isinstance(decided, str):
                return decided
            trunks = [decided]
        refusal = InboundCall.refusal(request)
        if refusal is not None:
            log.info(
                "INVITE from trunk %s refused: %d %s", trunks[0], refusal.status, refusal.reason
            )
            return _reply(request, refusal.status, refusal.reason, refusal.headers)
        routed = self._route(request, trunks)
        if routed is None:
            log.info("INVITE from trunk %s to a number no [[inbound]] entry takes: 404", trunks[0])
            return _reply(request, 404)
        route, trunk, called = routed
        offer = _offer(request)
        problem = _offer_problem(offer, self._trunks[trunk].srtp)
        if problem:
            log.info(
                "INVITE from trunk %s with an offer we cannot answer: 488 (%s)", trunk, problem
            )
            return _reply(request, 488, headers=[("Warning", _warning(problem))])
        self._ringing = [call for call in self._ringing if self._is_unanswered(call)]
        if len(self._ringing) >= self._max_ringing:
            log.info(
                "INVITE from trunk %s refused: %d calls ring already: 486",
                trunk,
                len(self._ringing),
            )
            self._busy()
            return _reply(request, 486)
        caller, caller_name = _caller(request, self._national)
        arrival = Arrival(
            call_id=self._call_ids(),
            sip_call_id=request.call_id,
            trunk=trunk,
            route=route,
            caller=caller,
            caller_name=caller_name,
            called=called,
            offer_sdp=offer,
            source=source,
            transport=transport,
            answer_wait=self._answer_wait,
        )
        log.info(
            "%s: INVITE from trunk %s to %s (%s) rings %s",
            arrival.call_id,
            trunk,
            called,
            route.name or "inbound",
            ", ".join(route.users),
        )
        # The ring's own deadlines end it first; this one holds should the host never decide.
        limit = route.ring_timeout + self._answer_wait + UNANSWERED_MARGIN
        call = self._new_call(
            request, arrival.call_id, source, transport, self._trunks[trunk], limit
        )
        self._ringing.append(call)
        self._arrivals.append(arrival)
        return call

    def _trunks_from(self, host: str) -> list[str]:
        """The trunks ``host`` is an address of, or in the ``inbound_from`` of."""
        found = [name for name in self._trunks_at(host) if name in self._trunks]
        for name, trunk in self._trunks.items():
            if name not in found and trunk.inbound_from and in_networks(host, trunk.inbound_from):
                found.append(name)
        return found

    def _authenticate(self, request: Request, source: Addr, now: float) -> str | Response | None:
        """The trunk a digest answer proves, or the 401 / 403 to send (None: say nothing)."""
        if self._auth is not None:
            decided = self._auth.check(request)
            if isinstance(decided, Response) or (decided is not None and decided in self._trunks):
                return decided
        if self._refused(source, now):
            return _reply(request, 403)
        return None

    def _route(self, request: Request, trunks: list[str]) -> tuple[InboundRoute, str, str] | None:
        """The entry, trunk and called number: the Request-URI's user, else the To user."""
        tried: list[str] = []
        for user in (request.uri.user, _to_user(request)):
            if not user:
                continue
            try:
                did = normalize_did(user, self._national)
            except DestinationError:
                continue
            if did in tried:
                continue
            tried.append(did)
            found = route_inbound(self._routes, did, trunks)
            if found is not None:
                return found[0], found[1], did
        return None


# --- reading the INVITE ----------------------------------------------------------------------


def _reply(
    request: Request,
    status: int,
    phrase: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    return make_response(request, status, phrase, to_tag=new_tag(), headers=headers)


def _offer(request: Request) -> str:
    """The INVITE's body as SDP text; empty when it carries none as ``application/sdp``."""
    try:
        content_type = request.content_type
    except ValueError:
        return ""
    if content_type is None or not request.body:
        return ""
    if content_type.mime_type.lower() != "application/sdp":
        return ""
    try:
        return request.body.decode("utf-8")
    except UnicodeDecodeError:
        return ""


def _offer_problem(offer: str, srtp: str) -> str:
    """Why media could not answer ``offer`` for a trunk with this ``srtp`` setting; empty
    when it can. Media answers the first audio stream with a port (``trunk_answer``): it
    must speak RTP/AVP (RTP/SAVP with keys, when SRTP is not off) and offer a codec media
    relays or converts."""
    if not offer.strip():
        return "no SDP offer"
    try:
        description = sdp.parse(offer)
    except sdp.SdpError as exc:
        return f"unreadable SDP: {exc}"
    index = description.audio_index()
    if index is None or description.media[index].port == 0:
        return "no audio stream"
    media = description.media[index]
    if media.proto.upper() not in RTP_PROFILES:
        return "audio is not RTP/AVP or RTP/SAVP"
    if description.connection_of(media) is None:
        return "no c= line for the audio stream"
    if media.secure and srtp == "off":
        return "SRTP (RTP/SAVP) only, and SRTP is off for this trunk"
    if (media.secure or srtp == "required") and not media.crypto:
        return "SRTP without an a=crypto key"
    for pt in media.payload_types:
        rtpmap = media.rtpmap(pt)
        if rtpmap is not None and rtpmap.key in MEDIA_CODECS:
            return ""
    return "no codec of PCMU, PCMA, G722, opus"


def _warning(text: str) -> str:
    """A ``Warning`` value (RFC 3261 20.43): code 399, no agent name, ``text`` quoted."""
    quoted = _printable(text, 120).replace("\\", "").replace('"', "'")
    return f'399 - "{quoted}"'


def _to_user(request: Request) -> str:
    try:
        return request.to_address.uri.user or ""
    except ValueError:
        return ""


def _caller(request: Request, national: National | None) -> tuple[str, str]:
    """The From user part (normalized when a number) and display name, printable and short."""
    try:
        address: Address | None = request.from_address
    except ValueError:
        address = None
    user = (address.uri.user or "") if address is not None else ""
    try:
        caller = normalize_did(user, national) if user else ""
    except DestinationError:
        caller = user
    name = address.name if address is not None else ""
    return _printable(caller, MAX_CALLER), _printable(name, MAX_NAME)


def _printable(text: str, limit: int) -> str:
    return "".join(c for c in text if c.isprintable())[:limit].strip()
