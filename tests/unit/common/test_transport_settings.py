"""TLS, DNS servers and the outbound proxy in settings and in the providers file."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.providers import ProvidersError, parse_providers
from services.common.settings import SettingsError, load_settings
from services.common.sipaddr import OutboundProxy, parse_dns_servers, parse_outbound_proxy


def test_tls_is_accepted_and_its_port_defaults_to_5061(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings(
        {"SIP_TRUNK_HOST": "sip.example.com", "SIP_TRANSPORT": "tls", "SIP_TLS_CA": str(ca)}, None
    )
    trunk = settings.default_trunk
    assert trunk is not None and trunk.transport == "tls" and trunk.transport_explicit
    assert trunk.port == 0 and trunk.default_port == 5061
    assert trunk.tls_ca == str(ca)
    assert settings.sip_tls_verify


def test_trunk_port_is_unset_by_default() -> None:
    settings = load_settings({"SIP_TRUNK_HOST": "sip.example.com"}, None)
    assert settings.sip_trunk_port == 0 and not settings.sip_transport_explicit
    assert settings.default_trunk is not None and settings.default_trunk.default_port == 5060


def test_a_missing_ca_file_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(SettingsError, match=r"^SIP_TLS_CA .*nope\.pem is not a readable file"):
        load_settings({"SIP_TRANSPORT": "tls", "SIP_TLS_CA": str(missing)}, None)


@pytest.mark.parametrize(
    ("raw", "expected"), [("", True), ("true", True), ("false", False), ("0", False)]
)
def test_tls_verify_parsing(raw: str, expected: bool) -> None:
    assert load_settings({"SIP_TLS_VERIFY": raw}, None).sip_tls_verify is expected


def test_tls_verify_refuses_other_words() -> None:
    with pytest.raises(SettingsError, match=r"^SIP_TLS_VERIFY must be true or false"):
        load_settings({"SIP_TLS_VERIFY": "maybe"}, None)


def test_transport_errors_name_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"^SIP_TRANSPORT must be udp, tcp or tls, got 'sctp'"):
        load_settings({"SIP_TRANSPORT": "sctp"}, None)


def test_dns_servers() -> None:
    assert parse_dns_servers("10.0.0.2, 127.0.0.1:5353,[::1]:53,::1") == (
        ("10.0.0.2", 53),
        ("127.0.0.1", 5353),
        ("::1", 53),
        ("::1", 53),
    )
    settings = load_settings({"SIP_DNS_SERVERS": "127.0.0.1:5353"}, None)
    assert settings.sip_dns_servers == (("127.0.0.1", 5353),)
    for bad in ("dns.example.com", "127.0.0.1:0", "127.0.0.1:x", "[::1]x"):
        with pytest.raises(SettingsError, match=r"^SIP_DNS_SERVERS: "):
            load_settings({"SIP_DNS_SERVERS": bad}, None)


def test_outbound_proxy_forms() -> None:
    assert parse_outbound_proxy("proxy.example.com") == OutboundProxy("proxy.example.com")
    assert parse_outbound_proxy("sip:proxy.example.com:5070;transport=tcp;lr") == OutboundProxy(
        "proxy.example.com", 5070, "tcp"
    )
    assert parse_outbound_proxy("sips:proxy.example.com") == OutboundProxy(
        "proxy.example.com", 0, "tls", sips=True
    )
    assert parse_outbound_proxy("[2001:db8::1]:5070") == OutboundProxy("2001:db8::1", 5070)
    proxy = parse_outbound_proxy("sip:10.0.0.5:5070;transport=tcp")
    assert proxy.route("tcp") == "<sip:10.0.0.5:5070;transport=tcp;lr>"
    assert parse_outbound_proxy("proxy.test").route("udp") == "<sip:proxy.test;lr>"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("sip:user@proxy.test", "no user part"),
        ("sip:proxy.test;transport=sctp", "transport must be udp, tcp or tls"),
        ("sip:proxy.test:99999", "port must be between 1 and 65535"),
        ("sip:proxy.test;maddr=x", "unknown parameter 'maddr'"),
        ("http://proxy.test", "expected sip:host"),
    ],
)
def test_bad_outbound_proxy_names_the_setting(raw: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=f"^SIP_OUTBOUND_PROXY: .*{problem}"):
        load_settings({"SIP_OUTBOUND_PROXY": raw}, None)


def test_providers_trunk_takes_tls_ca_and_outbound_proxy(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    data = {
        "trunks": {
            "secure": {
                "host": "sip.example.com",
                "transport": "tls",
                "tls_ca": str(ca),
                "outbound_proxy": "sip:edge.example.com:5070;transport=tcp",
            },
            "plain": {"host": "sip.example.org"},
        },
        "fallback": "secure",
    }
    providers = parse_providers(data, {})
    secure = providers.trunks["secure"]
    assert secure.transport == "tls" and secure.transport_explicit and secure.default_port == 5061
    assert secure.tls_ca == str(ca)
    assert secure.outbound_proxy == OutboundProxy("edge.example.com", 5070, "tcp")
    plain = providers.trunks["plain"]
    assert plain.port == 0 and not plain.transport_explicit and plain.outbound_proxy is None


def test_providers_errors_for_tls_ca_and_proxy(tmp_path: Path) -> None:
    bad_ca = {"trunks": {"a": {"host": "h", "tls_ca": str(tmp_path / "no.pem")}}, "fallback": "a"}
    with pytest.raises(ProvidersError, match=r"trunk 'a': tls_ca .*no\.pem is not a readable file"):
        parse_providers(bad_ca, {})
    bad_proxy = {"trunks": {"a": {"host": "h", "outbound_proxy": "sip:u@p"}}, "fallback": "a"}
    with pytest.raises(ProvidersError, match="trunk 'a': outbound_proxy: a proxy address"):
        parse_providers(bad_proxy, {})
