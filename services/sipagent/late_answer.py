"""A 2xx to one of our INVITEs after its call was over, sans-I/O: ACK it, then BYE.

The trunk may answer as our CANCEL crosses it, after Timer B, after a
failover moved on, or to a transfer attempt that already gave up. Without an
ACK and a BYE its dialog would stay up (and billing). ``LateAnswers``
remembers the Call-IDs no longer hosted for ``LATE_ANSWER_WINDOW`` seconds
(``forget``); a 2xx for one of them gets its ACK (RFC 3261 13.2.2.4) and a
dialog record for the host to end with a BYE (``end``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeGuard

from sipmessage import Response

from proto.fleet import SipDialogRecord
from services.common.sip.message import SipMessage, summary
from services.sipagent.agent_ports import SentBy
from services.sipagent.hosted import Addr
from services.sipagent.no_call import Expiring
from services.sipagent.recovery import RecoveryError, answered_record, late_ack

log = logging.getLogger(__name__)

LATE_ANSWER_WINDOW = 300.0
"Seconds after a call is forgotten during which a 2xx to its INVITE is still ACKed and BYEd."
MAX_FORGOTTEN = 10000
"Forgotten Call-IDs (and INVITEs answered without a call) remembered at most."


@dataclass(frozen=True)
class LateAnswer:
    """What to do with a late 2xx of ours: send ``ack``, then end ``record`` with a BYE."""

    call_id: str
    "The bridge's call id the 2xx was for."
    ack: bytes = b""
    record: SipDialogRecord | None = None
    "None: the 2xx makes no dialog to end (logged); it is dropped."


def is_invite_2xx(message: SipMessage) -> TypeGuard[Response]:
    """Whether ``message`` is a 2xx to an INVITE."""
    return (
        isinstance(message, Response)
        and 200 <= message.code < 300
        and message.cseq.method == "INVITE"
    )


class LateAnswers:
    """SIP Call-IDs no longer hosted, for a while: a 2xx to their INVITE is ended."""

    def __init__(self, sent_by: SentBy, limit: int = MAX_FORGOTTEN) -> None:
        self._sent_by = sent_by
        self._forgotten: Expiring[str, str] = Expiring(limit)
        "By SIP Call-ID: the bridge call id, until ``LATE_ANSWER_WINDOW`` is over."

    def __contains__(self, sip_call_id: object) -> bool:
        """Whether ``sip_call_id`` was forgotten (window over or not, until pruned)."""
        return sip_call_id in self._forgotten

    def forget(self, sip_call_id: str, call_id: str, now: float) -> None:
        """``sip_call_id`` is no longer hosted: remember it for ``LATE_ANSWER_WINDOW``."""
        self._forgotten.put(sip_call_id, call_id, now + LATE_ANSWER_WINDOW, now)

    def recent(self, sip_call_id: str, now: float) -> bool:
        """Whether ``sip_call_id`` was forgotten within ``LATE_ANSWER_WINDOW``."""
        return self._forgotten.get(sip_call_id, now) is not None

    def end(self, response: Response, addr: Addr, transport: str, now: float) -> LateAnswer | None:
        """The ACK and the dialog to BYE for a 2xx that came late.

        None if the 2xx is none of ours or came after ``LATE_ANSWER_WINDOW``.
        """
        call_id = self._forgotten.pop(response.call_id, now)
        if call_id is None:
            return None
        try:
            record = answered_record(response, transport=transport, trunk=addr)
            ack = late_ack(response, record, sent_by=self._sent_by(addr, transport))
        except RecoveryError as exc:
            log.warning("%s: cannot end a late 2xx: %s", call_id, exc)
            return LateAnswer(call_id)
        log.info("%s: %s after the call ended: ACK and BYE", call_id, summary(response))
        return LateAnswer(call_id, bytes(ack), record)
