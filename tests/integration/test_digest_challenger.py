"""Our digest challenger answered by sipp's own digest code (``[authentication]``).

A UDP server in the test challenges each OPTIONS with ``DigestChallenger`` and
answers 200 only to one whose credentials it accepts; sipp (the peer) must see
the 200 with the right password and a 401 again with a wrong one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import cast

import pytest
from sipmessage import Request

from services.common.sip.challenge import DigestChallenger
from services.common.sip.message import make_response, parse_message
from tests.integration.harness import free_port, require_tool

pytestmark = pytest.mark.timeout(30)

REALM = "bridge.test"
PASSWORD = "s3cr:t#p@ss"

# sipp hashes ``sip:[remote_ip]:[remote_port]`` as the digest uri: the Request-URI is that.
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="digest answer">
  <send retrans="500">
    <![CDATA[

      OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:trunk@[local_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:bridge@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <recv response="401" auth="true" />

  <send retrans="500">
    <![CDATA[

      OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:trunk@[local_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:bridge@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 OPTIONS
      Max-Forwards: 70
      [authentication username=trunk password=@password@]
      Content-Length: 0

    ]]>
  </send>

  <recv response="@expected@" />
</scenario>
"""


class _Challenging(asyncio.DatagramProtocol):
    def __init__(self, challenger: DigestChallenger) -> None:
        self.challenger = challenger
        self.transport: asyncio.DatagramTransport | None = None
        self.authorization = ""
        self.verdicts: list[str] = []
        "The reason of each refusal, or accepted."

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_message(data)
        assert isinstance(request, Request) and self.transport is not None
        now = time.time()
        if request.headers.get("Authorization") is None:
            response = make_response(request, 401, headers=self.challenger.challenge(now))
        else:
            verdict = self.challenger.verify(request, now)
            self.verdicts.append(verdict.reason or "accepted")
            self.authorization = request.headers["Authorization"]
            if verdict.accepted:
                response = make_response(request, 200, to_tag="b1")
            else:
                headers = self.challenger.challenge(now, stale=verdict.stale)
                response = make_response(request, 401, headers=headers)
        self.transport.sendto(bytes(response), addr)


@pytest.mark.parametrize(("password", "expected"), [(PASSWORD, 200), ("wrong", 401)])
async def test_sipp_answers_our_challenge(tmp_path: Path, password: str, expected: int) -> None:
    sipp = require_tool("sipp")
    # sipp 3.6 answers MD5 only.
    challenger = DigestChallenger(
        REALM, {"trunk": PASSWORD}, b"a shared secret of the replicas", algorithms=("MD5",)
    )
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: _Challenging(challenger), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    scenario = tmp_path / "digest.xml"
    scenario.write_text(
        SCENARIO.replace("@password@", password).replace("@expected@", str(expected))
    )
    try:
        process = await asyncio.create_subprocess_exec(
            sipp,
            f"127.0.0.1:{port}",
            "-sf",
            str(scenario),
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-timeout",
            "10",
            "-timeout_error",
            "-nostdin",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 20)
    finally:
        transport.close()
    refusal = "wrong username or password"
    assert server.verdicts == ["accepted" if expected == 200 else refusal], server.authorization
    assert process.returncode == 0, output.decode(errors="replace")
