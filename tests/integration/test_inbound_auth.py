"""A trunk that calls in from an address the bridge does not know proves itself by digest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import SipagentFactory, Stack
from tests.integration.test_call import assert_tone_returns
from tests.integration.test_inbound import DID, Inbound, answered, listener

pytestmark = pytest.mark.timeout(90)

USERNAME = "bridge_in"
PASSWORD = "in:b0und#s3cret"


@pytest.fixture
def inbound(sipagent: SipagentFactory, tmp_path: Path) -> Iterator[Inbound]:
    setup = Inbound(sipagent, tmp_path)
    yield setup
    setup.stop()


def providers_file(tmp: Path, inbound: Inbound) -> Path:
    path = tmp / "providers.toml"
    secret = tmp / "inbound-password"
    secret.write_text(PASSWORD + "\n")
    # The trunk's host is elsewhere (127.0.0.2): sipp on 127.0.0.1 must prove who it is.
    # sipp reads only the first challenge and knows no SHA-256: MD5 alone.
    path.write_text(
        f"""
[trunks.carrier]
host = "127.0.0.2"
port = {inbound.trunk_port}
transport = "udp"
inbound_auth = {{ username = "{USERNAME}", password_file = "{secret}", algorithms = ["MD5"] }}

[[inbound]]
number = "{DID}"
user = "alice"
"""
    )
    return path


async def test_a_trunk_that_answers_the_challenge_rings_alice(
    stack: Stack, inbound: Inbound, tmp_path: Path
) -> None:
    agent = inbound.start_agent(
        PROVIDERS_FILE=str(providers_file(tmp_path, inbound)),
        INBOUND_USER="",
        SIP_TRUNK_HOST="127.0.0.2",
    )
    client = await listener(stack)
    try:
        sipp = inbound.call("call_in_digest.xml", username=USERNAME, password=PASSWORD)
        await answered(client)
        await assert_tone_returns(client, stack)
        await client.hangup()
        await client.expect("ended")
        assert await sipp.wait(10) == 0, sipp.messages()
        messages = sipp.messages()
        assert "SIP/2.0 401 Unauthorized" in messages, messages
        assert "WWW-Authenticate: Digest" in messages, messages
        assert PASSWORD not in agent.log() + stack.full_logs()
    finally:
        await client.close()


async def test_a_wrong_password_is_refused_and_nobody_rings(
    stack: Stack, inbound: Inbound, tmp_path: Path
) -> None:
    inbound.start_agent(
        PROVIDERS_FILE=str(providers_file(tmp_path, inbound)),
        INBOUND_USER="",
        SIP_TRUNK_HOST="127.0.0.2",
    )
    client = await listener(stack)
    try:
        sipp = inbound.call("call_in_digest.xml", username=USERNAME, password="not-the-password")
        # The retry is refused (401 again or 403): sipp fails its scenario, nobody rings.
        assert await sipp.wait(20) != 0
        assert "SIP/2.0 200" not in sipp.messages()
        assert not [m for m in client.messages if m["type"] == "incoming"], client.messages
    finally:
        await client.close()
