from __future__ import annotations

from sipmessage import Request

from services.common.sip.dialog import Dialog
from services.common.sip.message import make_request
from tests.unit.sipagent.trunk import parse_response, respond, trunk_request


def _invite() -> Request:
    return make_request(
        "INVITE",
        "sip:1@trunk.test",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5070;rport;branch=z9hG4bKabc"),
            ("From", "<sip:bridge@trunk.test>;tag=mine"),
            ("To", "<sip:1@trunk.test>"),
            ("Call-ID", "cid"),
            ("CSeq", "2 INVITE"),
        ],
    )


def test_dialog_from_2xx_builds_ack_and_bye() -> None:
    invite = _invite()
    ok = respond(
        invite,
        200,
        headers=[
            ("Record-Route", "<sip:p1.test;lr>, <sip:p2.test;lr>"),
            ("Record-Route", "<sip:p3.test;lr>"),
        ],
    )
    dialog = Dialog.from_response(invite, parse_response(bytes(ok)))
    assert (dialog.local_tag, dialog.remote_tag) == ("mine", "trunk-tag")
    assert str(dialog.remote_target) == "sip:trunk@198.51.100.7:5060"
    assert dialog.route_set == ["<sip:p3.test;lr>", "<sip:p2.test;lr>", "<sip:p1.test;lr>"]

    ack = dialog.create_request("ACK", "SIP/2.0/UDP h;branch=z9hG4bK1", cseq=2)
    assert ack.headers["CSeq"] == "2 ACK"
    assert str(ack.uri) == "sip:trunk@198.51.100.7:5060"
    assert ack.headers.getlist("Route") == dialog.route_set
    bye = dialog.create_request("BYE", "SIP/2.0/UDP h;branch=z9hG4bK2")
    assert bye.headers["CSeq"] == "3 BYE"
    assert bye.headers["To"].endswith("tag=trunk-tag")
    assert bye.headers["From"].endswith("tag=mine")


def test_dialog_matches_and_orders_requests() -> None:
    invite = _invite()
    ok = parse_response(bytes(respond(invite, 200)))
    dialog = Dialog.from_response(invite, ok)
    bye = trunk_request("BYE", invite, ok, cseq=5)
    assert dialog.matches(bye)
    assert dialog.accept_remote_cseq(bye)
    assert not dialog.accept_remote_cseq(trunk_request("BYE", invite, ok, cseq=4))
    stranger = trunk_request("BYE", invite, parse_response(bytes(respond(invite, 200, to_tag="x"))))
    assert not dialog.matches(stranger)


def test_strict_router_takes_the_request_uri() -> None:
    invite = _invite()
    ok = respond(invite, 200, headers=[("Record-Route", "<sip:strict.test>")])
    dialog = Dialog.from_response(invite, parse_response(bytes(ok)))
    bye = dialog.create_request("BYE", "SIP/2.0/UDP h;branch=z9hG4bK2")
    assert str(bye.uri) == "sip:strict.test"
    assert bye.headers.getlist("Route") == ["<sip:trunk@198.51.100.7:5060>"]
