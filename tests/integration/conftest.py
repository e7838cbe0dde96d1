"""The bridge as real processes: nats-server, media and signaling per module,
a SIP agent per test pointed at that test's sipp trunk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import (
    TRUNK_PASSWORD,
    TRUNK_USER,
    Process,
    Sipp,
    free_port,
    free_rtp_range,
    service_env,
    start_nats,
    start_service,
    wait_ready,
)


@dataclass
class Stack:
    nats_url: str
    base_url: str
    tmp: Path
    processes: list[Process]

    def full_logs(self) -> str:
        return "\n".join(p.log() for p in self.processes)

    def logs(self) -> str:
        return "\n".join(f"----- {p.name}\n{p.log()[-6000:]}" for p in self.processes)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("stack"))


def start_stack(tmp: Path, **overrides: str) -> Iterator[Stack]:
    """nats-server, media and signaling with ``overrides`` in their environment."""
    nats, nats_url = start_nats(tmp)
    rtp_min, rtp_max = free_rtp_range()
    http_port = free_port()
    env = service_env(
        nats_url,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(http_port),
        RTP_PORT_MIN=str(rtp_min),
        RTP_PORT_MAX=str(rtp_max),
        RTP_BIND_HOST="127.0.0.1",
        PUBLIC_IP="127.0.0.1",
        INVITE_TIMEOUT="3",
        **overrides,
    )
    media = start_service("media", env, tmp)
    signaling = start_service("signaling", env, tmp)
    processes = [nats, media, signaling]
    stack = Stack(nats_url, f"http://127.0.0.1:{http_port}", tmp, processes)
    if not wait_ready(nats_url, "media", "signaling"):
        pytest.fail(f"media or signaling did not start:\n{stack.logs()}")
    yield stack
    for process in reversed(processes):
        process.stop()


SipagentFactory = Callable[..., Process]
TrunkFactory = Callable[..., Sipp]


@pytest.fixture
def sipagent(stack: Stack, tmp_path: Path) -> Iterator[SipagentFactory]:
    """Start a SIP agent toward ``port``; stopped (SIGTERM) after the test."""
    started: list[Process] = []

    def start(port: int, transport: str = "udp", **overrides: str) -> Process:
        settings = {
            "SIP_TRUNK_HOST": "127.0.0.1",
            "SIP_TRUNK_PORT": str(port),
            "SIP_USERNAME": TRUNK_USER,
            "SIP_PASSWORD": TRUNK_PASSWORD,
            "SIP_DOMAIN": "trunk.test",
            "SIP_TRANSPORT": transport,
            "SIP_BIND_HOST": "127.0.0.1",
            "PUBLIC_IP": "127.0.0.1",
            "INVITE_TIMEOUT": "3",
        }
        settings.update(overrides)
        process = start_service("sipagent", service_env(stack.nats_url, **settings), tmp_path)
        started.append(process)
        stack.processes.append(process)
        if not wait_ready(stack.nats_url, "sipagent"):
            pytest.fail(f"sipagent did not start:\n{process.log()}")
        return process

    yield start
    for process in started:
        process.stop()
        stack.processes.remove(process)


@pytest.fixture
def trunk(tmp_path: Path) -> Iterator[Callable[..., Sipp]]:
    """Start sipp with a scenario as the SIP trunk; killed after the test."""
    started: list[Sipp] = []

    def start(scenario: str, transport: str = "u1", **keys: str) -> Sipp:
        sipp = Sipp(scenario, tmp_path, keys=dict(keys), transport=transport).start()
        started.append(sipp)
        return sipp

    yield start
    for sipp in started:
        sipp.stop()
