"""``bridge probe`` against a trunk found through SRV, and one behind TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import TrunkFactory
from tests.integration.dns_tls import Dnsmasq, Stunnel, make_pki
from tests.integration.test_probe import SCENARIO, lines, probe


@pytest.fixture
def peers() -> Iterator[list[Dnsmasq | Stunnel]]:
    started: list[Dnsmasq | Stunnel] = []
    yield started
    for peer in reversed(started):
        peer.stop()


def test_probe_shows_the_srv_targets(
    trunk: TrunkFactory, tmp_path: Path, peers: list[Dnsmasq | Stunnel]
) -> None:
    sipp = trunk(SCENARIO)
    server = Dnsmasq(
        tmp_path,
        srv=[("_sip._udp.trunk.test", "edge.trunk.test", sipp.port, 10, 0)],
        hosts=[("edge.trunk.test", "127.0.0.1")],
    ).start()
    peers.append(server)
    result = probe(
        tmp_path, 0, SIP_TRUNK_HOST="trunk.test", SIP_TRUNK_PORT="", SIP_DNS_SERVERS=server.server
    )
    steps = lines(result)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{sipp.messages()}"
    dns = steps["DNS"]
    assert f"SRV _sip._udp.trunk.test: edge.trunk.test:{sipp.port}" in dns, dns
    assert f"trunk.test → 127.0.0.1:{sipp.port}/udp" in dns, dns


@pytest.fixture
def tls_front(
    trunk: TrunkFactory, tmp_path: Path, peers: list[Dnsmasq | Stunnel]
) -> tuple[Stunnel, Dnsmasq, Path]:
    pki = make_pki(tmp_path, "trunk.test")
    sipp = trunk(SCENARIO, transport="t1")
    tunnel = Stunnel(tmp_path, pki, sipp.port).start()
    server = Dnsmasq(tmp_path, hosts=[("trunk.test", "127.0.0.1")]).start()
    peers += [tunnel, server]
    return tunnel, server, pki.ca


def test_probe_over_tls_shows_the_certificate(
    tmp_path: Path, tls_front: tuple[Stunnel, Dnsmasq, Path]
) -> None:
    tunnel, server, ca = tls_front
    result = probe(
        tmp_path,
        tunnel.port,
        transport="tls",
        SIP_TRUNK_HOST="trunk.test",
        SIP_DNS_SERVERS=server.server,
        SIP_TLS_CA=str(ca),
    )
    steps = lines(result)
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"
    connect = steps["connect"]
    assert connect.startswith(f"✓ connect: tls 127.0.0.1:{tunnel.port} connected in"), connect
    assert "subject CN=trunk.test, expires " in connect, connect
    assert "200 OK" in steps["OPTIONS"]


def test_probe_over_tls_refuses_an_unknown_certificate(
    tmp_path: Path, tls_front: tuple[Stunnel, Dnsmasq, Path]
) -> None:
    tunnel, server, _ = tls_front
    result = probe(
        tmp_path,
        tunnel.port,
        transport="tls",
        SIP_TRUNK_HOST="trunk.test",
        SIP_DNS_SERVERS=server.server,
    )
    assert result.returncode == 1, f"{result.stdout}{result.stderr}"
    connect = lines(result)["connect"]
    assert connect.startswith(f"✗ connect: tls 127.0.0.1:{tunnel.port}: certificate refused:")
    assert "unable to get local issuer certificate" in connect, connect
    assert "OPTIONS" not in lines(result)
