"""Reaching a trunk the way providers publish it: DNS SRV/NAPTR with failover, TLS, an
outbound proxy. dnsmasq serves the DNS, stunnel puts TLS in front of sipp."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.client import BridgeClient
from tests.integration.conftest import SipagentFactory, Stack, TrunkFactory
from tests.integration.dns_tls import Dnsmasq, Pki, Stunnel, make_pki
from tests.integration.harness import Sipp, free_udp_port
from tests.integration.test_call import CHALLENGE_401

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def peers() -> Iterator[list[Dnsmasq | Stunnel | Sipp]]:
    """Peers a test starts; stopped after it."""
    started: list[Dnsmasq | Stunnel | Sipp] = []
    yield started
    for peer in reversed(started):
        peer.stop()


def dns(tmp: Path, peers: list[Dnsmasq | Stunnel | Sipp], **records: object) -> Dnsmasq:
    server = Dnsmasq(tmp, **records).start()  # type: ignore[arg-type]
    peers.append(server)
    return server


async def call_connects(stack: Stack, sipp: Sipp) -> None:
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(codec="PCMU")
        await client.accept_answer()
        await client.expect("connected")
        await client.hangup()
        await client.expect("ended")
        assert await sipp.wait(10) == 0, f"trunk did not get the BYE:\n{sipp.messages()}"
    finally:
        await client.close()


async def test_srv_503_with_retry_after_fails_over_to_the_next_target(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, peers: list[Dnsmasq]
) -> None:
    busy = trunk("unavailable.xml")
    good = trunk("challenge_echo_bye.xml", **CHALLENGE_401)
    server = dns(
        stack.tmp,
        peers,
        srv=[
            ("_sip._udp.trunk.test", "a.trunk.test", busy.port, 10, 0),
            ("_sip._udp.trunk.test", "b.trunk.test", good.port, 20, 0),
        ],
        hosts=[("a.trunk.test", "127.0.0.1"), ("b.trunk.test", "127.0.0.1")],
    )
    agent = sipagent(
        0, SIP_TRUNK_HOST="trunk.test", SIP_TRUNK_PORT="", SIP_DNS_SERVERS=server.server
    )
    await call_connects(stack, good)
    assert await busy.wait(10) == 0, f"the 503 was not acknowledged:\n{busy.messages()}"
    assert "Retry-After" in busy.messages()
    assert f"trying 127.0.0.1:{good.port}/udp" in agent.log(), agent.log()


async def test_naptr_picks_tcp_and_a_refused_connection_fails_over_at_once(
    stack: Stack, sipagent: SipagentFactory, trunk: TrunkFactory, peers: list[Dnsmasq]
) -> None:
    good = trunk("challenge_echo_bye.xml", transport="t1", **CHALLENGE_401)
    closed = free_udp_port()  # nothing listens there: the connection is refused
    server = dns(
        stack.tmp,
        peers,
        naptr=[("trunk.test", 10, 10, "S", "SIP+D2T", "_sip._tcp.trunk.test")],
        srv=[
            ("_sip._tcp.trunk.test", "a.trunk.test", closed, 10, 0),
            ("_sip._tcp.trunk.test", "b.trunk.test", good.port, 20, 0),
        ],
        hosts=[("a.trunk.test", "127.0.0.1"), ("b.trunk.test", "127.0.0.1")],
    )
    # No SIP_TRANSPORT: NAPTR chooses (TCP here).
    agent = sipagent(
        0,
        SIP_TRUNK_HOST="trunk.test",
        SIP_TRUNK_PORT="",
        SIP_TRANSPORT="",
        SIP_DNS_SERVERS=server.server,
    )
    await call_connects(stack, good)
    assert "SIP/2.0/TCP" in good.messages()
    assert f"tcp connection to 127.0.0.1:{closed} failed" in agent.log(), agent.log()


# --- TLS -------------------------------------------------------------------------------


@pytest.fixture
def tls_trunk(
    stack: Stack, trunk: TrunkFactory, peers: list[Dnsmasq | Stunnel | Sipp]
) -> tuple[Sipp, Stunnel, Dnsmasq, Pki]:
    """sipp over TCP behind stunnel, whose certificate names trunk.test; DNS for trunk.test."""
    pki = make_pki(stack.tmp, "trunk.test", prefix=f"{free_udp_port()}-")
    sipp = trunk("challenge_echo_bye.xml", transport="t1", **CHALLENGE_401)
    tunnel = Stunnel(stack.tmp, pki, sipp.port).start()
    peers.append(tunnel)
    server = dns(stack.tmp, peers, hosts=[("trunk.test", "127.0.0.1")])
    return sipp, tunnel, server, pki


def tls_settings(tunnel: Stunnel, server: Dnsmasq, **extra: str) -> dict[str, str]:
    return {
        "SIP_TRUNK_HOST": "trunk.test",
        "SIP_TRUNK_PORT": str(tunnel.port),
        "SIP_DNS_SERVERS": server.server,
        **extra,
    }


async def test_tls_call_with_the_trunk_ca_uses_sips(
    stack: Stack, sipagent: SipagentFactory, tls_trunk: tuple[Sipp, Stunnel, Dnsmasq, Pki]
) -> None:
    sipp, tunnel, server, pki = tls_trunk
    sipagent(0, transport="tls", **tls_settings(tunnel, server, SIP_TLS_CA=str(pki.ca)))
    await call_connects(stack, sipp)
    messages = sipp.messages()
    assert "INVITE sips:+15551234567@trunk.test SIP/2.0" in messages, messages
    assert "SIP/2.0/TLS" in messages and "From: <sips:" in messages
    # INVITE, challenge, INVITE again, ACK, BYE: all over one reused connection.
    assert len(tunnel.clients()) == 1, tunnel.clients()


async def test_tls_with_an_unknown_ca_fails_the_call_with_a_clear_reason(
    stack: Stack, sipagent: SipagentFactory, tls_trunk: tuple[Sipp, Stunnel, Dnsmasq, Pki]
) -> None:
    sipp, tunnel, server, _ = tls_trunk
    other = make_pki(stack.tmp, "trunk.test", prefix="other-")
    sipagent(0, transport="tls", **tls_settings(tunnel, server, SIP_TLS_CA=str(other.ca)))
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(codec="PCMU")
        error = await client.expect("error", 10)
        assert error["code"] == "unreachable", error
        ended = await client.expect("ended", 10)
        assert ended["cause"] == "unreachable", ended
        assert "certificate refused" in ended["reason"], ended
        assert "INVITE" not in sipp.messages()  # nothing reached the trunk
    finally:
        await client.close()


async def test_tls_name_mismatch_is_refused(
    stack: Stack, sipagent: SipagentFactory, tls_trunk: tuple[Sipp, Stunnel, Dnsmasq, Pki]
) -> None:
    _, tunnel, _, pki = tls_trunk
    # The certificate names trunk.test; the trunk is called by another name.
    server = Dnsmasq(stack.tmp, hosts=[("other.test", "127.0.0.1")]).start()
    try:
        sipagent(
            0,
            transport="tls",
            SIP_TRUNK_HOST="other.test",
            SIP_TRUNK_PORT=str(tunnel.port),
            SIP_DNS_SERVERS=server.server,
            SIP_TLS_CA=str(pki.ca),
        )
        client = await BridgeClient(stack.base_url).connect()
        try:
            await client.offer(codec="PCMU")
            ended = await client.expect("ended", 10)
            assert "certificate refused" in ended["reason"], ended
            assert "other.test" in ended["reason"], ended
        finally:
            await client.close()
    finally:
        server.stop()


async def test_tls_without_verification_connects_and_warns(
    stack: Stack, sipagent: SipagentFactory, tls_trunk: tuple[Sipp, Stunnel, Dnsmasq, Pki]
) -> None:
    sipp, tunnel, server, _ = tls_trunk
    agent = sipagent(0, transport="tls", **tls_settings(tunnel, server, SIP_TLS_VERIFY="false"))
    assert "SIP_TLS_VERIFY=false" in agent.log() and "WARNING" in agent.log()
    await call_connects(stack, sipp)


# --- outbound proxy -----------------------------------------------------------------------


async def test_outbound_proxy_gets_the_invite_with_a_preloaded_route(
    stack: Stack, sipagent: SipagentFactory, peers: list[Sipp]
) -> None:
    port = free_udp_port()
    keys = {"proxy_port": str(port), "trunk_domain": r"sip\.provider\.test"}
    proxy = Sipp("proxy_route.xml", stack.tmp, keys=keys, port=port).start()
    peers.append(proxy)
    # The trunk's own name does not resolve here: only the proxy is looked up.
    sipagent(
        0,
        SIP_TRUNK_HOST="sip.provider.test",
        SIP_TRUNK_PORT="",
        SIP_DOMAIN="",
        SIP_OUTBOUND_PROXY=f"sip:127.0.0.1:{port};transport=udp",
    )
    client = await BridgeClient(stack.base_url).connect()
    try:
        await client.offer(codec="PCMU")
        ended = await client.expect("ended", 15)
        assert ended["status"] == 486, ended
    finally:
        await client.close()
    assert await proxy.wait(10) == 0, f"Route or Request-URI wrong:\n{proxy.messages()}"
