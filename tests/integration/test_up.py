"""`bridge up`, the embedded default: NATS, three services and the demo peer."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from services.common import nats_auth
from tests.integration.client import BridgeClient
from tests.integration.harness import Process, free_port, free_rtp_range, wait_tcp

pytestmark = pytest.mark.timeout(90)

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def up_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIP_", "RTP_", "HTTP_", "NATS_", "PUBLIC_IP"))
    }
    rtp_min, rtp_max = free_rtp_range()
    env.update(
        HTTP_PORT=str(free_port()),
        NATS_URL=f"nats://127.0.0.1:{free_port()}",
        DATA_DIR=str(tmp / "data"),
        RTP_PORT_MIN=str(rtp_min),
        RTP_PORT_MAX=str(rtp_max),
        # Two media workers, whatever the cores: 10 RTP port pairs each, room for 5 calls.
        MEDIA_WORKERS="2",
        MAX_CALLS="5",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


async def test_demo_call_hears_itself_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = up_env(tmp_path)
    # cwd without a .env: the test must not read the developer's settings.
    up = Process("bridge-up", [BRIDGE, "up"], env, tmp_path / "up.log", cwd=tmp_path).start()
    port = int(env["HTTP_PORT"])
    try:
        # The supervisor prints the URL once every service takes work.
        deadline = time.monotonic() + 60
        while f"http://localhost:{port}" not in up.log():
            assert up.alive() and time.monotonic() < deadline, up.log()
            await asyncio.sleep(0.1)
        client = await BridgeClient(f"http://127.0.0.1:{port}").connect()
        try:
            await client.offer(codec="opus", destination=None)
            await client.accept_answer()
            await client.expect("connected", 20)
            await asyncio.sleep(1.0)
            client.clear_audio()
            await asyncio.sleep(2.0)
            peak, _ = client.dominant_frequency()
            assert abs(peak - 1000) < 40, f"no echo from the demo peer:\n{up.log()}"
            await client.hangup()
            await client.expect("ended")
        finally:
            await client.close()
        assert "demo" in up.log()
        assert re.search(r"media worker \S+-w1 ready", up.log()), up.log()
        await assert_the_bus_is_locked(up.popen.pid, env, tmp_path)  # type: ignore[union-attr]
        # The call went through on each service's own permissions, none refused,
        # and no password reached a log.
        assert "violation" not in up.log().lower(), up.log()
        for path in (Path(env["DATA_DIR"]) / nats_auth.EMBEDDED_DIR).glob("*.password"):
            assert path.read_text().strip() not in up.log(), path.name
    finally:
        code = up.stop(signal.SIGINT, timeout=20)
    assert code == 0, up.log()
    # Nothing left behind: the NATS port is free again.
    with pytest.raises(OSError):
        wait_tcp(int(env["NATS_URL"].rsplit(":", 1)[1]), 0.5)


def test_bad_setting_gives_one_line_and_non_zero_exit(tmp_path: Path) -> None:
    env = up_env(tmp_path, SIP_TRUNK_HOST="sip.example.com", SIP_TRUNK_PORT="fifty")
    result = subprocess.run(
        [BRIDGE, "up"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SIP_TRUNK_PORT" in lines[0], result.stderr


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"HTTP_HOST": "0.0.0.0", "AUTH": "off"}, "ALLOW_UNAUTHENTICATED"),
        ({"HTTP_HOST": "0.0.0.0"}, "CLIENT_TOKEN_SECRET"),
    ],
)
def test_an_open_bridge_beyond_loopback_does_not_start(
    tmp_path: Path, settings: dict[str, str], named: str
) -> None:
    env = up_env(tmp_path, **settings)
    result = subprocess.run(
        [BRIDGE, "up"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


def child_environments(pid: int) -> dict[str, dict[str, str]]:
    """The environment of each child process of ``pid``, by service name."""
    names = {
        "nats-server": "nats",
        "services.demo": "demo",
        "services.cli": "media",
        "services.sipagent": "sipagent",
        "services.signaling": "signaling",
    }
    found: dict[str, dict[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != pid:
                continue
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
            pairs = (entry / "environ").read_bytes().decode().split("\0")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        name = next((n for key, n in names.items() if any(key in a for a in argv)), None)
        if name is not None:
            found[name] = dict(p.split("=", 1) for p in pairs if "=" in p)
    return found


async def assert_the_bus_is_locked(pid: int, env: dict[str, str], tmp: Path) -> None:
    """Per-service users and passwords, private files, no anonymous client, no violation."""
    auth = Path(env["DATA_DIR"]) / nats_auth.EMBEDDED_DIR
    assert stat.S_IMODE(auth.stat().st_mode) == 0o700
    files = sorted(p.name for p in auth.iterdir())
    assert files == [
        "admin.password",
        "auth.conf",
        "media.password",
        "signaling.password",
        "sipagent.password",
    ]
    for path in auth.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    environments = child_environments(pid)
    assert set(environments) == {"nats", "demo", "media", "sipagent", "signaling"}
    passwords = set()
    for service in ("media", "sipagent", "signaling"):
        child = environments[service]
        assert child["NATS_USER"] == service
        password = (auth / f"{service}.password").read_text().strip()
        assert child["NATS_PASSWORD"] == password
        passwords.add(password)
    assert len(passwords) == 3
    assert not environments["demo"].get("NATS_PASSWORD")  # the demo peer has no NATS use

    async def quiet(exc: Exception) -> None:
        pass

    with pytest.raises(Exception) as caught:
        await nats.connect(
            env["NATS_URL"], connect_timeout=2, allow_reconnect=False, error_cb=quiet
        )
    assert nats_auth.refused(caught.value), repr(caught.value)

    # The operator's command finds the admin user of this bridge up on its own.
    result = subprocess.run(
        [BRIDGE, "registrations"],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "(no trunk registers)" in result.stdout, result.stdout
    for password in passwords:
        assert password not in result.stdout + result.stderr
