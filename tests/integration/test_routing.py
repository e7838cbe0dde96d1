"""Several providers: a providers file routes destinations to two sipp trunks.

Signaling and the SIP agent read the same file (signaling for the route check,
the SIP agent to pick the trunk). The trunks' ports are chosen before the
stack starts so the file can name them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.client import BridgeClient
from tests.integration.conftest import SipagentFactory, Stack, start_stack
from tests.integration.harness import Sipp, free_port, free_udp_port

pytestmark = pytest.mark.timeout(90)

CONTEXT = {"user_id": "cust-7f3a9c", "language": "en", "context": "customer_support"}


@dataclass
class Trunks:
    support_port: int
    us_port: int
    file: Path


@pytest.fixture(scope="module")
def trunks(tmp_path_factory: pytest.TempPathFactory) -> Trunks:
    tmp = tmp_path_factory.mktemp("providers")
    support_port, us_port = free_udp_port(), free_port()
    path = tmp / "providers.toml"
    path.write_text(
        f"""
[trunks.support]
host = "127.0.0.1"
port = {support_port}
username = "support_user"
password_env = "SUPPORT_SIP_PASSWORD"
domain = "support.test"
headers = {{ X-Customer = "acme" }}

[trunks.us]
host = "127.0.0.1"
port = {us_port}
transport = "tcp"
codecs = ["PCMA"]
domain = "us.test"
headers = {{ X-Customer = "globex" }}
allow_headers = ["X-Agent-Context"]

[[routes]]
match = "support"
trunk = "support"
user = "1000"

[[routes]]
match = "^\\\\+1"
pattern = true
trunk = "us"
"""
    )
    return Trunks(support_port, us_port, path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, trunks: Trunks) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("stack"), PROVIDERS_FILE=str(trunks.file))


@pytest.fixture
def sipps(tmp_path: Path, trunks: Trunks) -> Iterator[tuple[Sipp, Sipp]]:
    support = Sipp(
        "headers_answer_bye.xml",
        tmp_path,
        keys={
            "context": "user_id.:.cust-7f3a9c",
            "customer": "^ ?acme$",
            "pt": "0",
            "codec": "PCMU",
        },
        port=trunks.support_port,
    )
    us = Sipp(
        "headers_answer_bye.xml",
        tmp_path,
        keys={"context": "customer_support", "customer": "^ ?globex$", "pt": "8", "codec": "PCMA"},
        transport="t1",
        port=trunks.us_port,
    )
    try:
        yield support.start(), us.start()
    finally:
        support.stop()
        us.stop()


def start_agent(sipagent: SipagentFactory, trunks: Trunks) -> None:
    # The .env trunk (the factory's) exists but no route names it: no fallback.
    sipagent(
        free_udp_port(),
        PROVIDERS_FILE=str(trunks.file),
        SUPPORT_SIP_PASSWORD="not-used-by-sipp",
    )


async def call(stack: Stack, destination: str, sipp: Sipp) -> None:
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(
            codec="PCMU", destination=destination, headers={"X-Agent-Context": CONTEXT}
        )
        await client.accept_answer()
        await client.expect("connected")
        await asyncio.sleep(0.5)
        await client.hangup()
        ended = await client.expect("ended")
        assert ended["cause"] == "normal", ended
        assert await sipp.wait(10) == 0, f"{sipp.messages()}\n{stack.logs()}"
    finally:
        await client.close()


async def test_each_destination_reaches_its_trunk_with_its_headers(
    stack: Stack, sipagent: SipagentFactory, trunks: Trunks, sipps: tuple[Sipp, Sipp]
) -> None:
    support, us = sipps
    start_agent(sipagent, trunks)
    await call(stack, "support", support)
    invite = support.messages().split("INVITE sip:", 1)[1]
    assert invite.startswith("1000@support.test"), invite[:200]
    assert "INVITE" not in us.messages()

    await call(stack, "+15551234567", us)
    invite = us.messages().split("INVITE sip:", 1)[1].split("\n\n", 1)[0]
    assert invite.startswith("+15551234567@us.test"), invite[:200]
    assert "m=audio" in us.messages()
    # The trunk's codecs: PCMA only (and telephone-event).
    m_line = us.messages().split("m=audio ", 1)[1].split("\n", 1)[0]
    assert m_line.split()[2:] == ["8", "101"], m_line
    # Header values stay out of the logs above DEBUG: these processes log at DEBUG,
    # so check that INFO lines name the header only.
    info = [line for line in stack.full_logs().splitlines() if " INFO " in line]
    assert any("X-Agent-Context" in line for line in info)
    assert not any("cust-7f3a9c" in line for line in info)


async def test_unknown_destination_is_refused_and_no_invite_leaves(
    stack: Stack, sipagent: SipagentFactory, trunks: Trunks, sipps: tuple[Sipp, Sipp]
) -> None:
    support, us = sipps
    start_agent(sipagent, trunks)
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(codec="PCMU", destination="sales")
        error = await client.expect("error")
        assert error["code"] == "unknown_destination", error
        await asyncio.sleep(1.0)
        assert "INVITE" not in support.messages() and "INVITE" not in us.messages()
    finally:
        await client.close()


async def test_header_injection_is_refused(
    stack: Stack, sipagent: SipagentFactory, trunks: Trunks, sipps: tuple[Sipp, Sipp]
) -> None:
    support, _ = sipps
    start_agent(sipagent, trunks)
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(
            codec="PCMU",
            destination="support",
            headers={"X-Agent-Context": "x\r\nVia: SIP/2.0/UDP evil.example"},
        )
        error = await client.expect("error")
        assert error["code"] == "bad_headers", error
        await asyncio.sleep(0.5)
        assert "INVITE" not in support.messages()
    finally:
        await client.close()
