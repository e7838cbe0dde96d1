"""RFC 3263 target selection: NAPTR, SRV order, back-off after a 503; the lookups with fake DNS."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.sipagent.resolve import (
    Backoff,
    Naptr,
    Srv,
    Target,
    naptr_choices,
    needs_srv,
    retry_after,
    srv_order,
    srv_queries,
)
from services.sipagent.sipdns import ResolveError, SipResolver


def test_srv_order_lowest_priority_first() -> None:
    records = [Srv(20, 0, 5060, "c."), Srv(10, 0, 5060, "a."), Srv(10, 0, 5062, "b.")]
    ordered = srv_order(records, random.Random(1))
    assert [r.priority for r in ordered] == [10, 10, 20]
    assert ordered[-1].target == "c."


def test_srv_weighted_order_is_deterministic_under_a_seed_and_follows_the_weights() -> None:
    records = [Srv(10, 90, 5060, "heavy."), Srv(10, 10, 5060, "light.")]
    first = srv_order(records, random.Random(42))
    assert srv_order(records, random.Random(42)) == first
    firsts = Counter(srv_order(records, random.Random(seed))[0].target for seed in range(1000))
    assert firsts["heavy."] > 800 and firsts["light."] > 50


def test_srv_dot_target_means_no_service() -> None:
    assert srv_order([Srv(0, 0, 0, ".")], random.Random(0)) == []


def test_naptr_picks_sip_services_by_order_then_preference() -> None:
    records = [
        Naptr(20, 10, "s", "SIP+D2U", "_sip._udp.example.com."),
        Naptr(10, 20, "s", "SIP+D2T", "_sip._tcp.example.com."),
        Naptr(10, 10, "s", "SIPS+D2T", "_sips._tcp.example.com."),
        Naptr(5, 10, "s", "SIP+D2S", "_sip._sctp.example.com."),  # sctp: not ours
        Naptr(5, 10, "u", "E2U+sip", "!^.*$!sip:x@y!"),  # not an SRV pointer
    ]
    assert naptr_choices(records, ("udp", "tcp", "tls")) == [
        ("tls", "_sips._tcp.example.com"),
        ("tcp", "_sip._tcp.example.com"),
        ("udp", "_sip._udp.example.com"),
    ]
    assert naptr_choices(records, ("udp",)) == [("udp", "_sip._udp.example.com")]


def test_srv_names_without_naptr() -> None:
    assert srv_queries("example.com", "tls", explicit=True) == [("tls", "_sips._tcp.example.com")]
    assert [t for t, _ in srv_queries("example.com", "udp", explicit=False)] == [
        "udp",
        "tcp",
        "tls",
    ]


def test_srv_applies_only_to_names_without_a_port() -> None:
    assert needs_srv("example.com", 0)
    assert not needs_srv("example.com", 5060)
    assert not needs_srv("192.0.2.1", 0)
    assert not needs_srv("::1", 0)


def test_retry_after_keeps_a_target_aside_until_it_expires() -> None:
    backoff = Backoff()
    a = Target("192.0.2.1", 5060, "udp", "example.com")
    b = Target("192.0.2.2", 5060, "udp", "example.com")
    backoff.hold(a, 30, now=100.0)
    assert backoff.usable([a, b], now=110.0) == [b]
    assert backoff.usable([a, b], now=130.0) == [a, b]
    # Every target resting: try them all the same, rather than no call at all.
    backoff.hold(a, 30, now=200.0)
    backoff.hold(b, 30, now=200.0)
    assert backoff.usable([a, b], now=201.0) == [a, b]


def test_retry_after_parsing() -> None:
    assert retry_after("120") == 120
    assert retry_after("18000;duration=3600") == 18000
    assert retry_after("120 (I'm in a meeting)") == 120
    assert retry_after("soon") is None
    assert retry_after(None) is None


class FakeDns(SipResolver):
    """``SipResolver`` over a dict of records: no sockets."""

    def __init__(self, records: dict[tuple[str, str], list[object] | ResolveError]) -> None:
        super().__init__(rng=random.Random(7))
        self.records = records
        self.asked: list[tuple[str, str]] = []

    async def _query(self, name: str, rdtype: str) -> list:  # type: ignore[type-arg]
        self.asked.append((rdtype, name))
        found = self.records.get((rdtype, name), [])
        if isinstance(found, ResolveError):
            raise found
        return list(found)

    async def _naptr(self, host: str) -> list[Naptr]:
        return [r for r in await self._query(host, "NAPTR") if isinstance(r, Naptr)]

    async def _srv(self, name: str) -> list[Srv]:
        return [r for r in await self._query(name, "SRV") if isinstance(r, Srv)]

    async def _addresses(self, name: str) -> list[str]:
        found = [str(r) for r in await self._query(name, "A")]
        if not found:
            raise ResolveError(f"cannot resolve {name}")
        return found


RECORDS: dict[tuple[str, str], list[object] | ResolveError] = {
    ("NAPTR", "example.com"): [Naptr(10, 10, "s", "SIP+D2T", "_sip._tcp.example.com.")],
    ("SRV", "_sip._tcp.example.com"): [
        Srv(20, 0, 5080, "b.example.com."),
        Srv(10, 0, 5070, "a.example.com."),
    ],
    ("SRV", "_sip._udp.example.com"): [Srv(10, 0, 5090, "u.example.com.")],
    ("A", "a.example.com"): ["192.0.2.1"],
    ("A", "b.example.com"): ["192.0.2.2"],
    ("A", "u.example.com"): ["192.0.2.3"],
    ("A", "example.com"): ["192.0.2.9"],
}


async def test_naptr_then_srv_then_addresses() -> None:
    dns = FakeDns(RECORDS)
    resolution = await dns.resolve("example.com", 0, "udp", explicit=False)
    assert [str(t) for t in resolution.targets] == ["192.0.2.1:5070/tcp", "192.0.2.2:5080/tcp"]
    # RFC 5922: the certificate is checked against the name resolved, not the SRV target.
    assert {t.server_name for t in resolution.targets} == {"example.com"}
    assert resolution.trail[0].startswith("NAPTR example.com: _sip._tcp.example.com (tcp)")
    assert (
        resolution.trail[1] == "SRV _sip._tcp.example.com: a.example.com:5070, b.example.com:5080"
    )


async def test_an_explicit_transport_skips_naptr() -> None:
    dns = FakeDns(RECORDS)
    resolution = await dns.resolve("example.com", 0, "udp", explicit=True)
    assert [str(t) for t in resolution.targets] == ["192.0.2.3:5090/udp"]
    assert ("NAPTR", "example.com") not in dns.asked


async def test_an_explicit_port_or_an_ip_skips_srv() -> None:
    dns = FakeDns(RECORDS)
    resolution = await dns.resolve("example.com", 5099, "udp", explicit=False)
    assert [str(t) for t in resolution.targets] == ["192.0.2.9:5099/udp"]
    assert dns.asked == [("A", "example.com")]
    literal = await dns.resolve("192.0.2.5", 0, "tls")
    assert [str(t) for t in literal.targets] == ["192.0.2.5:5061/tls"]


async def test_no_srv_falls_back_to_the_default_port() -> None:
    dns = FakeDns({("A", "plain.test"): ["192.0.2.7"]})
    resolution = await dns.resolve("plain.test", 0, "tls", explicit=True)
    assert [str(t) for t in resolution.targets] == ["192.0.2.7:5061/tls"]


async def test_a_name_without_address_is_an_error() -> None:
    with pytest.raises(ResolveError, match=r"cannot resolve nowhere\.test"):
        await FakeDns({}).resolve("nowhere.test", 5060, "udp")


async def test_an_srv_target_without_address_is_skipped() -> None:
    records: dict[tuple[str, str], list[object] | ResolveError] = {
        ("SRV", "_sip._udp.example.com"): [
            Srv(10, 0, 5060, "gone.example.com."),
            Srv(20, 0, 5060, "a.example.com."),
        ],
        ("A", "a.example.com"): ["192.0.2.1"],
    }
    resolution = await FakeDns(records).resolve("example.com", 0, "udp", explicit=True)
    assert [str(t) for t in resolution.targets] == ["192.0.2.1:5060/udp"]
    assert "cannot resolve gone.example.com" in resolution.trail


async def test_a_dns_server_failing_naptr_still_gives_the_address() -> None:
    records: dict[tuple[str, str], list[object] | ResolveError] = {
        ("NAPTR", "example.com"): ResolveError("NAPTR example.com: timed out"),
        ("A", "example.com"): ["192.0.2.9"],
    }
    resolution = await FakeDns(records).resolve("example.com", 0, "udp", explicit=False)
    assert [str(t) for t in resolution.targets] == ["192.0.2.9:5060/udp"]
    assert resolution.trail == ["NAPTR example.com: timed out; using the address of example.com"]
