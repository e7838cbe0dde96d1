"""A surviving SIP agent ends a dead one's dialog from the stored record."""

import msgspec
import pytest
from sipmessage import Request, Response

from proto import errors, fleet
from services.common.sip.auth import DigestAuthenticator
from services.common.sip.dialog import Dialog
from services.common.sip.message import parse_message
from services.sipagent.events import Ended
from services.sipagent.recovery import (
    CSEQ_GAP,
    RecoveredBye,
    RecoveryError,
    build_bye,
    dialog_from_record,
    dialog_record,
    invite_record,
)
from tests.unit.sipagent.trunk import (
    PASSWORD,
    USERNAME,
    Harness,
    auth_params,
    make_call,
    parse_response,
    respond,
    trunk_request,
)

TRUNK = ("198.51.100.7", 5060)
SURVIVOR = "192.0.2.9:5080"


def answered() -> tuple[Request, Response, Dialog]:
    """A call placed and answered through a Record-Route proxy, as the dead agent had it."""
    h = Harness(make_call())
    invite = h.start()
    ok = parse_response(
        bytes(respond(invite, 200, headers=[("Record-Route", "<sip:proxy.test;lr>")]))
    )
    h.feed(ok)
    return invite, ok, Dialog.from_response(invite, ok)


def stored(dialog: Dialog | None = None) -> fleet.SipDialogRecord:
    """The record as a survivor reads it back from the KV bucket."""
    if dialog is None:
        _, _, dialog = answered()
    record = fleet.CallRecord(
        call_id="c1",
        state="confirmed",
        updated_at=0.0,
        sipagent_id="s1",
        dialog=dialog_record(dialog, transport="UDP", trunk=TRUNK),
    )
    back = fleet.decode_record(fleet.encode(record))
    assert back == record
    assert back.dialog is not None
    return back.dialog


def test_the_record_holds_the_whole_dialog() -> None:
    invite, ok, dialog = answered()
    record = dialog_record(dialog, transport="UDP", trunk=TRUNK)
    assert record.confirmed
    assert record.transport == "udp"
    assert (record.trunk_host, record.trunk_port) == TRUNK
    assert record.local_from == invite.headers["From"]
    assert record.remote_to == ok.headers["To"]
    assert record.route_set == ("<sip:proxy.test;lr>",)
    assert dialog_from_record(record) == dialog


def test_an_invite_record_is_not_enough_for_a_bye() -> None:
    record = invite_record("abc", transport="tcp", trunk=TRUNK)
    assert not record.confirmed
    with pytest.raises(RecoveryError):
        dialog_from_record(record)


def test_the_bye_is_built_in_the_stored_dialog() -> None:
    invite, ok, dialog = answered()
    bye = build_bye(stored(dialog), sent_by=SURVIVOR)
    assert bye.method == "BYE"
    assert str(bye.uri) == "sip:trunk@198.51.100.7:5060"
    assert bye.headers["Route"] == "<sip:proxy.test;lr>"
    assert bye.call_id == invite.call_id
    assert bye.headers["From"] == invite.headers["From"]
    assert bye.headers["To"] == ok.headers["To"]
    assert bye.headers["CSeq"] == f"{1 + CSEQ_GAP} BYE"
    assert bye.headers["Via"].startswith(f"SIP/2.0/UDP {SURVIVOR};rport;branch=z9hG4bK")


class Driver:
    """Drives a RecoveredBye with a fake clock, through the wire."""

    def __init__(self, bye: RecoveredBye) -> None:
        self.bye = bye
        self.now = 0.0
        self.events: list[object] = []

    def pump(self) -> list[Request | Response]:
        out = [parse_message(bytes(m)) for m in self.bye.messages_to_send()]
        while (event := self.bye.next_event()) is not None:
            self.events.append(event)
        return out

    def feed(self, message: Request | Response) -> list[Request | Response]:
        self.bye.receive(parse_message(bytes(message)), self.now)
        return self.pump()

    def advance(self, to: float) -> list[Request | Response]:
        out: list[Request | Response] = []
        while (deadline := self.bye.get_timer()) is not None and deadline <= to:
            self.now = max(self.now, deadline)
            self.bye.handle_timer(self.now)
            out += self.pump()
        self.now = to
        return out


def started(dialog: Dialog | None = None, **options: object) -> tuple[Driver, Request]:
    recovered = RecoveredBye("c1", stored(dialog), sent_by=SURVIVOR, **options)  # type: ignore[arg-type]
    driver = Driver(recovered)
    driver.bye.start(driver.now)
    (bye,) = driver.pump()
    assert isinstance(bye, Request) and bye.method == "BYE"
    return driver, bye


def test_bye_answered_ends_once_then_finishes() -> None:
    driver, bye = started()
    assert driver.bye.sip_call_id == bye.call_id
    assert driver.bye.trunk == TRUNK
    assert [bytes(m) for m in driver.advance(0.5)] == [bytes(bye)]  # Timer E, over UDP
    driver.feed(respond(bye, 200))
    assert driver.events == [Ended(errors.INTERNAL, 200, "SIP agent lost")]
    assert not driver.bye.finished  # Timer K absorbs retransmissions
    driver.advance(10)
    assert driver.bye.finished
    assert driver.events == [Ended(errors.INTERNAL, 200, "SIP agent lost")]


def test_bye_without_an_answer_ends_at_timer_f() -> None:
    driver, _ = started()
    driver.advance(64 * 0.5)
    assert driver.events == [Ended(errors.INTERNAL, None, "SIP agent lost")]
    assert driver.bye.finished


def test_a_challenged_bye_is_sent_again_with_credentials_once() -> None:
    driver, bye = started(authenticator=DigestAuthenticator(USERNAME, PASSWORD))
    value = 'Digest realm="trunk.test", nonce="n0nce", qop="auth"'
    (again,) = driver.feed(respond(bye, 407, headers=[("Proxy-Authenticate", value)]))
    assert isinstance(again, Request)
    assert again.headers["CSeq"] == f"{2 + CSEQ_GAP} BYE"
    assert auth_params(again, "Proxy-Authorization")["uri"] == "sip:trunk@198.51.100.7:5060"
    assert driver.feed(respond(again, 407, headers=[("Proxy-Authenticate", value)])) == []
    assert driver.events == [Ended(errors.INTERNAL, 407, "SIP agent lost")]


def test_the_trunks_own_bye_is_answered_and_strangers_get_481() -> None:
    invite, ok, dialog = answered()
    driver, _ = started(dialog)
    (reply,) = driver.feed(trunk_request("BYE", invite, ok, cseq=7, branch="z9hG4bKx"))
    assert isinstance(reply, Response) and reply.code == 200
    other = respond(invite, 200, to_tag="someone-else")
    (reply,) = driver.feed(trunk_request("INFO", invite, other, cseq=8, branch="z9hG4bKy"))
    assert isinstance(reply, Response) and reply.code == 481
    driver.bye.hangup("normal", driver.now)  # nothing to do
    assert driver.pump() == []


def test_records_are_plain_json() -> None:
    record = stored()
    data = msgspec.json.decode(
        fleet.encode(fleet.CallRecord(call_id="c", state="setup", updated_at=1.0, dialog=record))
    )
    assert data["dialog"]["sip_call_id"] == record.sip_call_id
    with pytest.raises(fleet.DecodeError):
        fleet.decode_record(b'{"call_id":"c"}')
