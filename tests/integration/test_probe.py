"""``bridge probe`` as a subprocess against sipp as the trunk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import TrunkFactory
from tests.integration.harness import (
    TRUNK_PASSWORD,
    TRUNK_USER,
    free_udp_port,
    service_env,
)

SCENARIO = "probe_options_register.xml"


def probe(
    tmp_path: Path, port: int, *args: str, transport: str = "udp", **overrides: str
) -> subprocess.CompletedProcess[str]:
    """Run ``bridge probe`` with the trunk settings the sipagent fixture uses."""
    settings = {
        "SIP_TRUNK_HOST": "127.0.0.1",
        "SIP_TRUNK_PORT": str(port),
        "SIP_USERNAME": TRUNK_USER,
        "SIP_PASSWORD": TRUNK_PASSWORD,
        "SIP_DOMAIN": "trunk.test",
        "SIP_TRANSPORT": transport,
        "SIP_BIND_HOST": "127.0.0.1",
        "PUBLIC_IP": "127.0.0.1",
    }
    settings.update(overrides)
    env = service_env("nats://127.0.0.1:1", **settings)
    return subprocess.run(
        [str(Path(sys.executable).with_name("bridge")), "probe", *args],
        env=env,
        cwd=tmp_path,  # no .env of the repository
        capture_output=True,
        text=True,
        timeout=60,
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Each output line by its step name."""
    steps = {}
    for line in result.stdout.splitlines():
        name = line[2:].split(":", 1)[0]
        steps[name] = line
    return steps


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_probe_passes_against_a_good_trunk(
    trunk: TrunkFactory, tmp_path: Path, transport: str
) -> None:
    sipp = trunk(SCENARIO, transport="u1" if transport == "udp" else "t1")
    result = probe(tmp_path, sipp.port, transport=transport)
    messages = sipp.messages()
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{messages}"
    steps = lines(result)
    assert list(steps) == ["DNS", "connect", "OPTIONS", "credentials"]
    assert all(line.startswith("✓ ") for line in steps.values()), result.stdout
    assert "200 OK" in steps["OPTIONS"]
    assert "codecs: PCMU, PCMA, telephone-event" in steps["OPTIONS"]
    assert "Server: sipp-trunk/1.0" in steps["OPTIONS"]
    assert "accepted (200 OK)" in steps["credentials"]
    if transport == "tcp":
        assert "connected in" in steps["connect"]
    else:
        assert "udp (no connection)" in steps["connect"]
    assert TRUNK_PASSWORD not in result.stdout + result.stderr
    # No binding is created: the REGISTER asks for none.
    assert "Expires: 0" in messages
    assert "INVITE sip:" not in messages


def test_probe_json_against_a_good_trunk(trunk: TrunkFactory, tmp_path: Path) -> None:
    sipp = trunk(SCENARIO)
    result = probe(tmp_path, sipp.port, "--json")
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{sipp.messages()}"
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [step["name"] for step in report["steps"]] == [
        "DNS",
        "connect",
        "OPTIONS",
        "credentials",
    ]
    assert all(set(step) == {"name", "ok", "detail", "ms", "checked"} for step in report["steps"])
    assert TRUNK_PASSWORD not in result.stdout


def test_probe_wrong_password_fails_credentials(trunk: TrunkFactory, tmp_path: Path) -> None:
    sipp = trunk(SCENARIO)
    result = probe(tmp_path, sipp.port, SIP_PASSWORD="wrong:password")
    assert result.returncode == 1, f"{result.stdout}{result.stderr}\n{sipp.messages()}"
    steps = lines(result)
    assert steps["OPTIONS"].startswith("✓ ")
    assert steps["credentials"].startswith("✗ credentials: refused (403 Forbidden)")
    assert "wrong:password" not in result.stdout + result.stderr


def test_probe_nothing_listening_times_out(tmp_path: Path) -> None:
    result = probe(tmp_path, free_udp_port(), "--timeout", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    steps = lines(result)
    assert list(steps) == ["DNS", "connect", "OPTIONS"]
    assert steps["OPTIONS"].startswith("✗ OPTIONS: ")
    assert "timeout" in steps["OPTIONS"]


def test_probe_bad_settings_exit_2(tmp_path: Path) -> None:
    result = probe(tmp_path, 5060, SIP_TRUNK_PORT="not-a-port")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "SIP_TRUNK_PORT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
