"""A surviving SIP agent ends a dead one's inbound call: a dialog the bridge answered (UAS)."""

from sipmessage import Request

from proto import errors, fleet
from services.common.sip.dialog import Dialog
from services.common.sip.message import parse_message, tag_of
from services.sipagent.events import Ended
from services.sipagent.recovery import (
    CSEQ_GAP,
    RecoveredBye,
    build_bye,
    dialog_from_record,
    dialog_record,
    uas_trunk,
)
from tests.unit.fleet.test_recovery import Driver
from tests.unit.sipagent.trunk import respond

SOURCE = ("198.51.100.7", 5060)
SURVIVOR = "192.0.2.9:5080"
OUR_TAG = "bridge-tag"
TRUNK_CONTACT = "sip:trunk@198.51.100.8:5070;transport=udp"
INVITE = (
    "INVITE sip:+15550001111@192.0.2.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-in-1\r\n"
    "Record-Route: <sip:edge.trunk.test;lr>, <sip:core.trunk.test;lr>\r\n"
    "Record-Route: <sip:198.51.100.1:5062;lr>\r\n"
    'From: "Ada" <sip:+15557654321@trunk.test>;tag=trunk-tag\r\n'
    "To: <sip:+15550001111@192.0.2.1>\r\n"
    "Call-ID: in-dialog-1@trunk.test\r\n"
    "CSeq: 4711 INVITE\r\n"
    f"Contact: <{TRUNK_CONTACT}>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def trunk_invite(text: str = INVITE) -> Request:
    invite = parse_message(text.encode())
    assert isinstance(invite, Request)
    return invite


def answered(invite: Request | None = None) -> Dialog:
    """The dialog the dead agent made by answering the trunk's INVITE."""
    return Dialog.from_request(invite or trunk_invite(), OUR_TAG)


def stored(dialog: Dialog) -> fleet.SipDialogRecord:
    """The record as the dead agent wrote it and a survivor reads it back."""
    record = fleet.CallRecord(
        call_id="in-1",
        state="confirmed",
        updated_at=0.0,
        sipagent_id="s1",
        direction="inbound",
        dialog=dialog_record(dialog, transport="UDP", trunk=SOURCE),
    )
    back = fleet.decode_record(fleet.encode(record))
    assert back == record and back.dialog is not None
    return back.dialog


def test_the_record_of_an_answered_dialog_is_whole() -> None:
    dialog = answered()
    record = stored(dialog)
    assert record.confirmed
    assert record.local_tag == OUR_TAG
    assert record.remote_tag == "trunk-tag"
    assert record.local_cseq == 0
    assert dialog_from_record(record) == Dialog(
        call_id=dialog.call_id,
        local_tag=dialog.local_tag,
        remote_tag=dialog.remote_tag,
        local_from=dialog.local_from,
        remote_to=dialog.remote_to,
        remote_target=dialog.remote_target,
        local_cseq=dialog.local_cseq,
        route_set=dialog.route_set,
    )  # all but the trunk's CSeq, which a survivor never needs


def test_the_survivors_bye_is_the_uas_side_of_the_dialog() -> None:
    invite = trunk_invite()
    bye = build_bye(stored(answered(invite)), sent_by=SURVIVOR)
    assert bye.method == "BYE"
    assert bye.call_id == invite.call_id
    # Tags the other way round from the INVITE: ours in From, the trunk's in To.
    assert bye.headers["From"] == f"{invite.headers['To']};tag={OUR_TAG}"
    assert bye.headers["To"] == invite.headers["From"]
    assert tag_of(bye.headers["From"]) == OUR_TAG
    assert tag_of(bye.headers["To"]) == "trunk-tag"
    # Our own CSeq space, nothing to do with the trunk's 4711.
    assert bye.headers["CSeq"] == f"{CSEQ_GAP} BYE"
    # The INVITE's Contact is the target; its Record-Route, in order, the route.
    assert str(bye.uri) == TRUNK_CONTACT
    assert bye.headers.getlist("Route") == [
        "<sip:edge.trunk.test;lr>",
        "<sip:core.trunk.test;lr>",
        "<sip:198.51.100.1:5062;lr>",
    ]
    assert bye.headers["Via"].startswith(f"SIP/2.0/UDP {SURVIVOR};rport;branch=z9hG4bK")


def test_a_recovered_bye_in_an_answered_dialog_ends_once() -> None:
    recovered = RecoveredBye("in-1", stored(answered()), sent_by=SURVIVOR)
    driver = Driver(recovered)
    recovered.start(driver.now)
    (bye,) = driver.pump()
    assert isinstance(bye, Request)
    assert recovered.trunk == SOURCE
    driver.feed(respond(bye, 200, to_tag=None))
    assert driver.events == [Ended(errors.INTERNAL, 200, "SIP agent lost")]
    driver.advance(10)
    assert recovered.finished


def test_the_trunks_own_bye_crossing_ours_gets_200() -> None:
    recovered = RecoveredBye("in-1", stored(answered()), sent_by=SURVIVOR)
    driver = Driver(recovered)
    recovered.start(driver.now)
    driver.pump()
    theirs = trunk_invite(
        INVITE.replace("INVITE sip:", "BYE sip:", 1)
        .replace("4711 INVITE", "4712 BYE")
        .replace("z9hG4bK-in-1", "z9hG4bK-in-2")
        .replace(
            "To: <sip:+15550001111@192.0.2.1>", f"To: <sip:+15550001111@192.0.2.1>;tag={OUR_TAG}"
        )
    )
    (reply,) = driver.feed(theirs)
    assert not isinstance(reply, Request) and reply.code == 200
    assert tag_of(reply.headers["To"]) == OUR_TAG


def test_where_a_survivor_sends_the_bye_of_an_answered_dialog() -> None:
    dialog = answered()
    # UDP: where the INVITE came from, as the live agent answered it.
    assert uas_trunk(dialog, transport="udp", source=SOURCE) == SOURCE
    # TCP: the trunk's connection died with the agent; the next hop listens.
    proxied = answered(
        trunk_invite(INVITE.replace("Record-Route: <sip:edge", "X-Was-Route: <sip:edge"))
    )
    assert uas_trunk(proxied, transport="tcp", source=("198.51.100.7", 40123)) == (
        "198.51.100.1",
        5062,
    )
    # A next hop by name is not resolved here: the source then.
    assert uas_trunk(dialog, transport="tcp", source=("198.51.100.7", 40123)) == (
        "198.51.100.7",
        40123,
    )
    direct = answered(trunk_invite(INVITE.replace("Record-Route", "X-Was-Route")))
    assert uas_trunk(direct, transport="TCP", source=("198.51.100.7", 40123)) == (
        "198.51.100.8",
        5070,
    )
    secure = answered(
        trunk_invite(
            INVITE.replace("Record-Route", "X-Was-Route").replace(
                TRUNK_CONTACT, "sips:trunk@[2001:db8::8]"
            )
        )
    )
    assert uas_trunk(secure, transport="tls", source=("2001:db8::8", 40123)) == (
        "2001:db8::8",
        5061,
    )
    named = answered(
        trunk_invite(
            INVITE.replace("Record-Route", "X-Was-Route").replace(
                TRUNK_CONTACT, "sip:trunk@pbx.trunk.test;transport=tcp"
            )
        )
    )
    assert uas_trunk(named, transport="tcp", source=("198.51.100.7", 40123)) == (
        "198.51.100.7",
        40123,
    )
