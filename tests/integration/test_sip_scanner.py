"""A SIP scanner against a running bridge: refused, rate-limited, and the call goes on.

The trunk (sipp) is on 127.0.0.1; the scanner sends from 127.0.0.2 (Linux
routes all of 127/8 to the loopback interface), an address no trunk has.
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from pathlib import Path

import nats
import pytest

from tests.integration.client import BridgeClient
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory
from tests.integration.harness import free_port, free_udp_port
from tests.integration.test_call import CHALLENGE_401, assert_tone_returns
from tests.integration.test_ops import metric

pytestmark = pytest.mark.timeout(90)

SCANNER_IP = "127.0.0.2"
METHODS = ("OPTIONS", "INVITE", "REGISTER")
SOURCE_RATE = 50
"The default SIP_SOURCE_RATE, per second (and its burst)."
RSS_GROWTH_LIMIT_KB = 20 * 1024


def scan_request(method: str, number: int, tag: str, source: tuple[str, int]) -> bytes:
    """What SIPVicious and friends send: a call to an international number, a REGISTER..."""
    host, port = source
    user = "100" if method == "REGISTER" else "9011441234567"
    body = (
        f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\n"
        if method == "INVITE"
        else ""
    )
    head = (
        f"{method} sip:{user}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{tag}{number};rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "scanner" <sip:100@{host}>;tag={tag}{number}\r\n'
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: {tag}-{number}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:100@{host}:{port}>\r\n"
        "User-Agent: friendly-scanner\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode()


def drain(sock: socket.socket, answers: dict[int, int], tag: str) -> None:
    """Read every answer waiting: the status code by request number."""
    while True:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return
        status = re.match(rb"SIP/2\.0 (\d{3}) ", data)
        call_id = re.search(rf"\r\nCall-ID: {tag}-(\d+)\r\n".encode(), data)
        if status and call_id:
            answers[int(call_id.group(1))] = int(status.group(1))


async def scan(
    port: int, count: int, per_second: float, source: str = SCANNER_IP, tag: str = ""
) -> dict[int, int]:
    """Send ``count`` requests at ``per_second`` from ``source``; the answers by number."""
    tag = tag or f"scan{uuid.uuid4().hex[:8]}"
    answers: dict[int, int] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.setblocking(False)
        here = sock.getsockname()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for number in range(count):
            request = scan_request(METHODS[number % len(METHODS)], number, tag, here)
            sock.sendto(request, ("127.0.0.1", port))
            if number % 25 == 24:
                drain(sock, answers, tag)
                await asyncio.sleep(max(0.0, start + (number + 1) / per_second - loop.time()))
        await asyncio.sleep(1.0)  # the last answers
        drain(sock, answers, tag)
    return answers


async def scan_from_many(port: int, sources: list[str]) -> dict[int, int]:
    """One INVITE from each of ``sources``; the answers by source index."""
    tag = f"spread{uuid.uuid4().hex[:8]}"
    answers: dict[int, int] = {}
    sockets = []
    try:
        for number, source in enumerate(sources):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.bind((source, 0))
            sock.setblocking(False)
            sock.sendto(
                scan_request("INVITE", number, tag, sock.getsockname()), ("127.0.0.1", port)
            )
            if number % 25 == 24:
                await asyncio.sleep(0.025)  # within the agent's socket buffer
        await asyncio.sleep(1.0)
        for sock in sockets:
            drain(sock, answers, tag)
    finally:
        for sock in sockets:
            sock.close()
    return answers


async def flood_from_many(port: int, count: int, per_second: float) -> None:
    """One INVITE from each of ``count`` loopback addresses (127.0.10.1 on), answers unread."""
    tag = f"many{uuid.uuid4().hex[:8]}"
    loop = asyncio.get_running_loop()
    start = loop.time()
    for number in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((f"127.0.{10 + number // 250}.{1 + number % 250}", 0))
            sock.sendto(
                scan_request("INVITE", number, tag, sock.getsockname()), ("127.0.0.1", port)
            )
        if number % 25 == 24:
            await asyncio.sleep(max(0.0, start + (number + 1) / per_second - loop.time()))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def test_a_scanner_is_refused_then_ignored_and_the_call_goes_on(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory
) -> None:
    sip_port, ops_port = free_udp_port(), free_port()
    sipp = trunk("challenge_echo_bye.xml", **CHALLENGE_401)
    agent = sipagent(sipp.port, SIP_LOCAL_PORT=str(sip_port), OPS_PORT=str(ops_port))
    assert agent.popen is not None
    bus = await nats.connect(stack.nats_url)
    events: list[tuple[str, bytes]] = []

    async def on_event(msg: nats.aio.msg.Msg) -> None:
        events.append((msg.subject, msg.data))

    await bus.subscribe("bridge.v1.call.*.sipagent", cb=on_event)
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(codec="PCMU")
        await client.accept_answer()
        await client.expect("connected")
        await assert_tone_returns(client, stack)
        ours = {subject.split(".")[3] for subject, _ in events}
        assert len(ours) == 1, events
        rss_before = rss_kb(agent.popen.pid)

        # A few thousand OPTIONS/INVITE/REGISTER in three seconds from one address.
        count, per_second = 3000, 1000.0
        answers = await scan(sip_port, count, per_second)
        # Then one request from each of 200 other addresses: each gets its 403.
        spread = await scan_from_many(sip_port, [f"127.0.3.{host}" for host in range(1, 201)])
        # And from 3000 more, for the memory: each source has a bucket, for a while.
        await flood_from_many(sip_port, 3000, 2000.0)
        rss_after = rss_kb(agent.popen.pid)
        print(  # shown with -s: the numbers docs/security.md quotes
            f"scanner: {count} sent at {per_second:g}/s, {len(answers)} answered;"
            f" {len(spread)}/200 sources answered, then 3000 more sources;"
            f" RSS {rss_before} -> {rss_after} kB"
        )

        assert agent.alive(), agent.log()
        assert set(answers.values()) == {403}, answers
        # The first requests were told 403, then the source's rate silenced it:
        # only its burst and what refilled during the scan were answered.
        assert all(answers.get(n) == 403 for n in range(SOURCE_RATE - 5)), sorted(answers)
        budget = SOURCE_RATE + SOURCE_RATE * count / per_second * 1.5 + 10
        assert SOURCE_RATE <= len(answers) <= budget, len(answers)
        assert len(spread) == 200 and set(spread.values()) == {403}, sorted(
            set(range(200)) - set(spread)
        )
        assert rss_after - rss_before < RSS_GROWTH_LIMIT_KB, (rss_before, rss_after)

        # No scanner request reached call handling: no call event, nothing at the trunk.
        assert {subject.split(".")[3] for subject, _ in events} == ours, events
        assert "friendly-scanner" not in sipp.messages() and "9011441234567" not in sipp.messages()
        assert "friendly-scanner" not in agent.log() and "9011441234567" not in agent.log()
        # One line about the source per minute at most, whatever it sent.
        lines = [line for line in agent.log().splitlines() if SCANNER_IP in line]
        assert 1 <= len(lines) <= 2, lines
        assert await metric(ops_port, "bridge_sip_refused_total", reason="unknown_source") >= len(
            answers
        ) + len(spread)
        assert await metric(ops_port, "bridge_sip_refused_total", reason="rate") >= count / 2

        # The call still has its audio, and ends cleanly.
        await assert_tone_returns(client, stack)
        await client.hangup()
        assert (await client.expect("ended"))["cause"] == "normal"
        assert await sipp.wait(10) == 0, sipp.messages()
    finally:
        await client.close()
        await bus.close()


async def test_drop_mode_gives_a_scanner_no_answer_at_all(
    stack: Stack, sipagent: SipagentFactory
) -> None:
    sip_port, ops_port = free_udp_port(), free_port()
    agent = sipagent(
        free_udp_port(),
        SIP_LOCAL_PORT=str(sip_port),
        OPS_PORT=str(ops_port),
        SIP_UNKNOWN_SOURCES="drop",
    )
    answers = await scan(sip_port, 300, 1000.0)
    assert answers == {}
    assert agent.alive(), agent.log()
    # The agent does answer its trunk's address (the trunk here is on 127.0.0.1).
    assert await scan(sip_port, 1, 1e6, "127.0.0.1") == {0: 200}
    assert await metric(ops_port, "bridge_sip_refused_total", reason="unknown_source") >= 1
