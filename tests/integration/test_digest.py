"""Digest challenges a trunk may send besides plain MD5: SHA-256 (RFC 7616) and a
second challenge with ``stale=true`` after the nonce expired.

The digests are checked here from sipp's message log, independently of the
bridge's own digest code.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory
from tests.integration.harness import TRUNK_PASSWORD, TRUNK_USER
from tests.integration.test_call import assert_tone_returns, connected_call

pytestmark = pytest.mark.timeout(90)

SCENARIO = "digest_challenges.xml"

# The second challenge: a fresh nonce, stale=true (the credentials were right).
STALE_ROUND = """
  <send>
    <![CDATA[

      SIP/2.0 401 Unauthorized
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag02[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      WWW-Authenticate: Digest realm="trunk.test", nonce="[pid]second[call_number]", algorithm=@algorithm@, qop="auth", stale=true
      Content-Length: 0

    ]]>
  </send>

  <recv request="ACK" />

  <recv request="INVITE">
    <action>
      <ereg regexp="Digest .*" search_in="hdr" header="Authorization:" check_it="true"
            assign_to="second" />
    </action>
  </recv>
  <Reference variables="second" />
"""  # noqa: E501

HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def authorizations(messages: str) -> list[dict[str, str]]:
    """The fields of the ``Authorization`` of each INVITE the trunk received, in order."""
    found = []
    # sipp's log separates messages with a line of dashes and a timestamp.
    for message in re.split(r"^-{20,}.*$", messages, flags=re.M):
        start = re.search(r"^(\S+) \S+ SIP/2\.0$", message, re.M)
        header = re.search(r"^Authorization: Digest (.*)$", message, re.M)
        if start is not None and start[1] == "INVITE" and header is not None:
            pairs = re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', header[1])
            found.append({k: a or b for k, a, b in pairs})
    return found


def check_digest(fields: dict[str, str], algorithm: str, method: str = "INVITE") -> None:
    """Recompute a qop=auth digest as the trunk would (RFC 7616 section 3.4.1)."""

    def h(text: str) -> str:
        return HASHES[algorithm](text.encode()).hexdigest()

    assert fields["algorithm"] == algorithm, fields
    assert fields["username"] == TRUNK_USER
    ha1 = h(f"{TRUNK_USER}:{fields['realm']}:{TRUNK_PASSWORD}")
    ha2 = h(f"{method}:{fields['uri']}")
    expected = h(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:{fields['qop']}:{ha2}")
    assert fields["response"] == expected, f"wrong {algorithm} digest: {fields}"


async def test_sha256_challenge_is_answered(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sipp = trunk(SCENARIO, algorithm="SHA-256", stale_round="")
    client = await connected_call(stack, sipagent, sipp, "PCMU")
    try:
        await assert_tone_returns(client, stack)
        await client.hangup()
        assert (await client.expect("ended"))["cause"] == "normal"
        assert await sipp.wait(10) == 0, f"trunk did not get BYE:\n{sipp.messages()}"
        (answer,) = authorizations(sipp.messages())
        check_digest(answer, "SHA-256")
    finally:
        await client.close()


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_stale_nonce_is_answered_and_the_call_connects(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, algorithm: str
) -> None:
    # stale_round first: its @algorithm@ is filled by the next key.
    sipp = trunk(SCENARIO, stale_round=STALE_ROUND, algorithm=algorithm)
    client = await connected_call(stack, sipagent, sipp, "PCMU")
    try:
        await assert_tone_returns(client, stack)
        await client.hangup()
        assert (await client.expect("ended"))["cause"] == "normal"
        assert await sipp.wait(10) == 0, f"trunk did not get BYE:\n{sipp.messages()}"
        first, second = authorizations(sipp.messages())
        assert "first" in first["nonce"] and "second" in second["nonce"], (first, second)
        check_digest(first, algorithm)
        check_digest(second, algorithm)
        # A fresh nonce starts its count again.
        assert second["nc"] == "00000001", second
    finally:
        await client.close()
