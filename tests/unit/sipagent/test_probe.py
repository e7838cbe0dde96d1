"""``bridge probe``: output, JSON shape and the step logic against a local UDP trunk."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sipmessage import Request, Response

from services.common.providers import Trunk
from services.common.settings import SettingsError, load_settings
from services.common.sip.auth import DigestAuthenticator, parse_challenge
from services.common.sip.message import parse_message
from services.sipagent import probe as probe_module
from services.sipagent.probe import (
    Probe,
    Report,
    Step,
    codecs_of,
    format_step,
    pick_trunk,
)
from tests.unit.sipagent.trunk import PASSWORD, USERNAME, auth_params, respond

SDP = (
    "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)
CHALLENGE = 'Digest realm="trunk.test", nonce="abc123", algorithm=MD5, qop="auth"'

Handler = Callable[[Request], list[Response]]


class FakeTrunk(asyncio.DatagramProtocol):
    """A UDP trunk on 127.0.0.1 answering each request with what ``handler`` returns."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.received: list[Request] = []
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        request = parse_message(data)
        assert isinstance(request, Request)
        self.received.append(request)
        assert self.transport is not None
        for response in self.handler(request):
            self.transport.sendto(bytes(response), addr)


async def run_probe(handler: Handler, **trunk: object) -> tuple[Report, FakeTrunk]:
    loop = asyncio.get_running_loop()
    fake = FakeTrunk(handler)
    transport, _ = await loop.create_datagram_endpoint(lambda: fake, local_addr=("127.0.0.1", 0))
    fake.transport = transport
    port = int(transport.get_extra_info("sockname")[1])
    params: dict[str, object] = {
        "name": "default",
        "host": "127.0.0.1",
        "port": port,
        "username": USERNAME,
        "password": PASSWORD,
        "domain": "trunk.test",
    }
    params.update(trunk)
    probe = Probe(
        Trunk(**params),  # type: ignore[arg-type]
        timeout=0.5,
        bind_host="127.0.0.1",
        public_ip="127.0.0.1",
        t1=0.05,
    )
    try:
        report = await probe.run()
    finally:
        transport.close()
    return report, fake


def good_trunk(request: Request) -> list[Response]:
    """OPTIONS 200 with SDP; REGISTER 401, then 200 when the digest is right."""
    if request.method == "OPTIONS":
        return [
            respond(
                request,
                200,
                body=SDP,
                headers=[("Allow", "INVITE, OPTIONS, REGISTER"), ("Server", "fake/1")],
            )
        ]
    if not request.headers.getlist("Authorization"):
        return [respond(request, 401, "Unauthorized", headers=[("WWW-Authenticate", CHALLENGE)])]
    params = auth_params(request)
    expected = DigestAuthenticator(USERNAME, PASSWORD, lambda: params["cnonce"]).credentials(
        parse_challenge(CHALLENGE), "REGISTER", str(request.uri)
    )
    if request.headers["Authorization"] == expected:
        return [respond(request, 200)]
    return [respond(request, 403, "Forbidden")]


# --- formatting -------------------------------------------------------------------


def test_format_step_one_line() -> None:
    assert format_step(Step("DNS", True, "a → 1.2.3.4")) == "✓ DNS: a → 1.2.3.4"
    assert format_step(Step("OPTIONS", False, "no\r\nanswer")) == "✗ OPTIONS: no answer"


def test_report_json_shape_and_exit_code() -> None:
    report = Report("default", "sip.example", 5060, "udp")
    assert report.exit_code == 1  # nothing ran: nothing passed
    report.steps = [Step("DNS", True, "ok", 1.5), Step("connect", True, "udp (no connection)")]
    assert report.exit_code == 0
    data = json.loads(report.to_json())
    assert data == {
        "trunk": "default",
        "host": "sip.example",
        "port": 5060,
        "transport": "udp",
        "ok": True,
        "steps": [
            {"name": "DNS", "ok": True, "detail": "ok", "ms": 1.5, "checked": True},
            {
                "name": "connect",
                "ok": True,
                "detail": "udp (no connection)",
                "ms": None,
                "checked": True,
            },
        ],
    }
    report.steps.append(Step("OPTIONS", False, "no answer"))
    assert report.exit_code == 1
    assert json.loads(report.to_json())["ok"] is False
    assert report.to_text().splitlines()[-1] == "✗ OPTIONS: no answer"


def test_codecs_of() -> None:
    assert codecs_of(SDP) == ["PCMU", "PCMA", "telephone-event"]
    opus = "v=0\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 96\r\n"
    assert codecs_of(opus + "a=rtpmap:96 opus/48000/2\r\n") == ["opus"]
    assert codecs_of("v=0\r\na=rtpmap:96 opus/48000/2\r\n") == []  # no audio section
    assert codecs_of("not sdp") == []
    assert codecs_of("v=0\r\n") == []


# --- steps against a local UDP trunk ---------------------------------------------------


async def test_every_step_passes() -> None:
    report, fake = await run_probe(good_trunk)
    assert [s.name for s in report.steps] == ["DNS", "connect", "OPTIONS", "credentials"]
    assert report.ok, report.to_text()
    options = report.steps[2].detail
    assert "200 OK" in options
    assert "Allow: INVITE, OPTIONS, REGISTER" in options
    assert "Server: fake/1" in options
    assert "codecs: PCMU, PCMA, telephone-event" in options
    assert report.steps[3].detail == "accepted (200 OK)"
    opt, reg1, reg2 = fake.received
    # One Call-ID and From tag, CSeq counting up, each request its own branch.
    assert {r.call_id for r in fake.received} == {opt.call_id}
    assert [r.cseq.sequence for r in fake.received] == [1, 2, 3]
    assert opt.headers["Max-Forwards"] == "70"
    assert opt.headers["Accept"] == "application/sdp"
    assert "rport" in opt.headers["Via"] and "branch=z9hG4bK" in opt.headers["Via"]
    assert ";tag=" in opt.headers["From"]
    assert reg1.headers["Expires"] == "0"
    assert reg1.headers["To"] == f"<sip:{USERNAME}@trunk.test>"
    assert str(reg1.uri) == "sip:trunk.test"
    assert reg2.headers["Expires"] == "0"
    assert PASSWORD not in report.to_text() + report.to_json()


async def test_wrong_password_is_refused() -> None:
    report, _ = await run_probe(good_trunk, password="wrong")
    assert report.exit_code == 1
    assert report.steps[-1] == Step(
        "credentials", False, "refused (403 Forbidden)", report.steps[-1].ms
    )


async def test_challenge_again_is_refused() -> None:
    def handler(request: Request) -> list[Response]:
        if request.method == "OPTIONS":
            return [respond(request, 200)]
        return [respond(request, 401, "Unauthorized", headers=[("WWW-Authenticate", CHALLENGE)])]

    report, fake = await run_probe(handler)
    assert report.steps[-1].detail == "refused (401 Unauthorized)"
    assert len(fake.received) == 3  # one answer to the challenge, no loop
    assert "codecs: unknown" in report.steps[2].detail


async def test_no_challenge() -> None:
    report, _ = await run_probe(lambda request: [respond(request, 200)])
    assert report.ok
    assert report.steps[-1].detail.startswith("no challenge (registrar did not ask)")


@pytest.mark.parametrize("code", [405, 501])
async def test_register_not_supported(code: int) -> None:
    def handler(request: Request) -> list[Response]:
        return [respond(request, 200 if request.method == "OPTIONS" else code)]

    report, _ = await run_probe(handler)
    # Not a failure: the trunk authenticates calls, not registrations.
    assert report.ok and report.exit_code == 0
    step = report.steps[-1]
    assert not step.checked and step.detail.startswith("not checked: REGISTER not supported")
    assert format_step(step).startswith("– credentials: not checked")


async def test_options_timeout_stops() -> None:
    report, fake = await run_probe(lambda request: [])
    assert [s.name for s in report.steps] == ["DNS", "connect", "OPTIONS"]
    assert not report.steps[-1].ok
    assert "timeout" in report.steps[-1].detail
    assert len(fake.received) > 1  # retransmitted over UDP
    assert all(r.cseq.sequence == 1 for r in fake.received)


async def test_provisional_then_final_and_failing_options_continue() -> None:
    def handler(request: Request) -> list[Response]:
        if request.method == "OPTIONS":
            return [respond(request, 100, "Trying", to_tag=None), respond(request, 503)]
        return [respond(request, 200)]

    report, _ = await run_probe(handler)
    assert not report.steps[2].ok and report.steps[2].detail.startswith("503")
    assert report.steps[3].ok  # the trunk answered: credentials still checked


async def test_no_username_skips_credentials() -> None:
    report, fake = await run_probe(
        lambda request: [respond(request, 200)], username="", password=""
    )
    assert report.ok
    assert report.steps[-1].detail == "no username configured (nothing to check)"
    assert [r.method for r in fake.received] == ["OPTIONS"]


async def test_dns_failure_stops() -> None:
    report, _ = await run_probe(good_trunk, host="no-such-host.invalid")
    assert [s.name for s in report.steps] == ["DNS"]
    assert report.steps[0].detail.startswith("cannot resolve no-such-host.invalid")


async def test_tls_refused_connection() -> None:
    report, _ = await run_probe(good_trunk, transport="tls")  # the fake listens on UDP only
    last = report.steps[-1]
    assert last.name == "connect" and not last.ok
    assert last.detail.startswith("tls 127.0.0.1:")


async def test_tcp_refused() -> None:
    report, _ = await run_probe(good_trunk, transport="tcp")  # the fake listens on UDP only
    assert report.steps[-1].name == "connect"
    assert not report.steps[-1].ok


# --- settings -------------------------------------------------------------------------


def test_pick_trunk(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SIP_TRUNK_HOST"):
        pick_trunk(load_settings({}, dotenv=None), None)
    settings = load_settings({"SIP_TRUNK_HOST": "sip.example"}, dotenv=None)
    assert pick_trunk(settings, None).host == "sip.example"
    with pytest.raises(SettingsError, match="PROVIDERS_FILE is not set"):
        pick_trunk(settings, "other")
    file = tmp_path / "providers.toml"
    file.write_text(
        '[trunks.a]\nhost = "a.example"\nusername = "u"\npassword_env = "A_PASS"\n'
        '[trunks.b]\nhost = "b.example"\n'
        '[[routes]]\nmatch = "1"\ntrunk = "b"\n'
    )
    env = {"SIP_TRUNK_HOST": "sip.example", "PROVIDERS_FILE": str(file)}
    settings = load_settings(env, dotenv=None)
    assert pick_trunk(settings, "b").host == "b.example"
    assert pick_trunk(settings, None).host == "sip.example"
    with pytest.raises(SettingsError, match="known: a, b, default"):
        pick_trunk(settings, "c")
    with pytest.raises(SettingsError, match="A_PASS"):
        pick_trunk(settings, "a")


def test_main_bad_settings_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIP_TRUNK_HOST", "sip.example")
    monkeypatch.setenv("SIP_TRUNK_PORT", "99999")
    out, err = io.StringIO(), io.StringIO()
    assert probe_module.main(out=out, err=err) == 2
    assert out.getvalue() == ""
    assert "SIP_TRUNK_PORT" in err.getvalue()
    assert len(err.getvalue().splitlines()) == 1
    assert probe_module.main(timeout=0, out=out, err=err) == 2
