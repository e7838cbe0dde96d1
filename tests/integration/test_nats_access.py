"""The locked bus against a real nats-server running the rendered config.

Who may connect, publish and subscribe what: a denied publish never reaches
the subscriber and the publisher hears a permissions violation; what each
service must do (work queues, call subjects, readiness, registrations, the
call registry in JetStream KV) goes through. Also NATS over mutual TLS with
the settings' certificates. The whole stack with a user per service runs in
``test_up.py`` (``bridge up``).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from proto import codec, subjects
from proto import registrations as registrations_proto
from proto.events import AnyEvent, CallRequested, DialRequested, HangupRequested
from proto.fleet import CallRecord
from services.common import nats_access, nats_auth
from services.common.bus import Bus, CredentialsRefused, wait_ready
from services.common.fleet import records
from services.common.fleet.registry import CallRegistry, RegistryError
from services.common.nats_access import User
from services.common.settings import Settings
from services.sipagent.registrations_cli import gather
from tests.integration.harness import Process, _nats_binary, free_port, wait_tcp

pytestmark = pytest.mark.timeout(30)

SETTLE = 0.3
"Seconds a message that was going to arrive has had to arrive (loopback)."


@dataclass
class Server:
    url: str
    passwords: dict[User, str]
    process: Process

    def options(self, user: User) -> dict[str, Any]:
        return {"user": user, "password": self.passwords[user]}


def start_locked_nats(tmp: Path, extra_config: str = "") -> tuple[Process, str, Path]:
    """nats-server with ``extra_config`` and a fresh locked-bus config; (process, url, dir)."""
    directory = tmp / "nats-auth"
    passwords = nats_access.new_passwords()
    config = nats_access.write_embedded(directory, passwords)
    if extra_config:
        config.write_text(config.read_text() + extra_config)
    port = free_port()
    store = tmp / "store"
    store.mkdir(exist_ok=True)
    argv = [str(_nats_binary()), "-c", str(config), "-a", "127.0.0.1", "-p", str(port)]
    process = Process("nats", [*argv, "-js", "-sd", str(store)], {}, tmp / "nats.log").start()
    wait_tcp(port)
    return process, f"nats://127.0.0.1:{port}", directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process, url, directory = start_locked_nats(tmp_path_factory.mktemp("locked"))
    passwords = {
        user: nats_access.password_file(directory, user).read_text().strip()
        for user in nats_access.USERS
    }
    yield Server(url, passwords, process)
    process.stop()


@dataclass
class Peer:
    """One connection as one user, with the errors the server sent it."""

    nc: NatsClient
    errors: list[str] = field(default_factory=list)

    async def publish(self, subject: str, event: AnyEvent) -> None:
        await self.nc.publish(subject, codec.encode(event))
        await self.nc.flush(timeout=2)

    async def violation(self, text: str) -> None:
        """Wait for the server's permissions violation naming ``text``."""
        async with asyncio.timeout(3):
            while not any("permissions violation" in e and text in e for e in self.errors):
                await asyncio.sleep(0.02)


@pytest.fixture
async def connect(server: Server) -> AsyncIterator[Any]:
    opened: list[NatsClient] = []

    async def open_as(user: User) -> Peer:
        peer = Peer(None)  # type: ignore[arg-type]

        async def on_error(exc: Exception) -> None:
            peer.errors.append(str(exc).lower())

        peer.nc = await nats.connect(
            server.url,
            connect_timeout=2,
            allow_reconnect=False,
            error_cb=on_error,
            **server.options(user),
        )
        opened.append(peer.nc)
        return peer

    yield open_as
    for nc in opened:
        await nc.close()


class Inbox:
    """Events received on one subscription."""

    def __init__(self) -> None:
        self.events: list[AnyEvent] = []

    async def on_msg(self, msg: Msg) -> None:
        self.events.append(codec.decode(msg.data))

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(3):
            while len(self.events) < count:
                await asyncio.sleep(0.02)


def dial(call_id: str) -> DialRequested:
    return DialRequested(
        call_id=call_id,
        destination="+15551234567",
        offer_sdp="v=0\r\n",
        media_id="m1",
        signaling_id="g1",
    )


# --- (a) who may connect ---------------------------------------------------------------


async def test_no_credentials_or_a_wrong_password_cannot_connect(server: Server) -> None:
    for options in ({}, {"user": "signaling", "password": server.passwords["media"]}):
        with pytest.raises(Exception) as caught:
            await nats.connect(
                server.url, connect_timeout=2, allow_reconnect=False, error_cb=_quiet, **options
            )
        assert nats_auth.refused(caught.value), repr(caught.value)


async def test_a_service_refused_says_so_at_once(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(CredentialsRefused):
        await Bus.connect(server.url, "signaling-test", options={"user": "signaling"})
    assert time.monotonic() - started < 5  # not the 15 s of an unreachable server
    bus = await Bus.connect(server.url, "signaling-test", options=server.options("signaling"))
    assert bus.connected
    await bus.close()


async def _quiet(exc: Exception) -> None:
    pass


# --- (b) nobody but signaling dials --------------------------------------------------------


@pytest.mark.parametrize("user", ["media", "sipagent", "admin"])
async def test_only_signaling_can_publish_a_dial(connect: Any, user: User) -> None:
    sipagent = await connect("sipagent")
    inbox = Inbox()
    await sipagent.nc.subscribe(subjects.sipagent_work(), subjects.SIPAGENT_QUEUE, cb=inbox.on_msg)
    await sipagent.nc.flush()

    intruder = await connect(user)
    await intruder.publish(subjects.sipagent_work(), dial("forged"))
    await intruder.violation(subjects.sipagent_work())

    signaling = await connect("signaling")
    await signaling.publish(subjects.sipagent_work(), dial("genuine"))
    await inbox.wait_for(1)
    await asyncio.sleep(SETTLE)
    assert [e.call_id for e in inbox.events] == ["genuine"]
    assert not signaling.errors


async def test_no_one_else_can_take_the_dials(connect: Any) -> None:
    for user in ("signaling", "media", "admin"):
        peer = await connect(user)
        await peer.nc.subscribe(
            subjects.sipagent_work(), subjects.SIPAGENT_QUEUE, cb=Inbox().on_msg
        )
        await peer.nc.flush()
        await peer.violation(subjects.sipagent_work())
    # Not even the SIP agent outside its queue group.
    peer = await connect("sipagent")
    await peer.nc.subscribe(subjects.sipagent_work(), cb=Inbox().on_msg)
    await peer.nc.flush()
    await peer.violation(subjects.sipagent_work())


# --- (c) what each service must do, and no more ----------------------------------------


async def test_signaling_hands_media_its_work(connect: Any) -> None:
    media = await connect("media")
    queue, direct = Inbox(), Inbox()
    await media.nc.subscribe(subjects.media_work(), subjects.MEDIA_QUEUE, cb=queue.on_msg)
    await media.nc.subscribe(subjects.media_work_for("host-1-w0"), cb=direct.on_msg)
    await media.nc.flush()
    signaling = await connect("signaling")
    request = CallRequested(call_id="c1", offer_sdp="v=0\r\n", destination="1", signaling_id="g1")
    await signaling.publish(subjects.media_work(), request)
    await signaling.publish(subjects.media_work_for("host-1-w0"), request)
    await queue.wait_for(1)
    await direct.wait_for(1)
    assert not media.errors and not signaling.errors

    sipagent = await connect("sipagent")
    await sipagent.publish(subjects.media_work(), request)
    await sipagent.violation(subjects.media_work())
    await asyncio.sleep(SETTLE)
    assert len(queue.events) == 1


@pytest.mark.parametrize(
    ("source", "intruder"),
    [
        ("media", "sipagent"),
        ("media", "signaling"),
        ("sipagent", "signaling"),
        ("sipagent", "media"),
        ("signaling", "media"),
        ("signaling", "sipagent"),
    ],
)
async def test_a_call_subject_has_one_publisher(connect: Any, source: User, intruder: User) -> None:
    listener_user: User = "signaling" if source != "signaling" else "sipagent"
    listener = await connect(listener_user)
    inbox = Inbox()
    subject = subjects.call_events("c7", source)  # type: ignore[arg-type]
    await listener.nc.subscribe(subject, cb=inbox.on_msg)
    await listener.nc.flush()

    forger = await connect(intruder)
    await forger.publish(subject, HangupRequested(call_id="c7", cause="forged"))
    await forger.violation(subject)

    owner = await connect(source)
    await owner.publish(subject, HangupRequested(call_id="c7", cause="genuine"))
    await inbox.wait_for(1)
    await asyncio.sleep(SETTLE)
    assert [e.cause for e in inbox.events] == ["genuine"]  # type: ignore[attr-defined]
    assert not listener.errors and not owner.errors


async def test_readiness_answers_reach_the_admin_only(server: Server) -> None:
    buses = [
        await Bus.connect(server.url, f"{s}-test", options=server.options(s))
        for s in nats_access.SERVICES
    ]
    try:
        for bus, service in zip(buses, nats_access.SERVICES, strict=True):
            await bus.announce_ready(service)
        assert await wait_ready(server.url, nats_access.SERVICES, 5, server.options("admin"))
        # A service may not probe the others.
        assert not await wait_ready(server.url, ("sipagent",), 1, server.options("media"))
    finally:
        for bus in buses:
            await bus.close()


async def test_the_sip_agent_answers_bridge_registrations(server: Server, connect: Any) -> None:
    sipagent = await connect("sipagent")

    async def answer(msg: Msg) -> None:
        reply = registrations_proto.RegistrationsReply(instance_id="s1")
        await msg.respond(registrations_proto.encode(reply))

    await sipagent.nc.subscribe(subjects.registrations(), cb=answer)
    await sipagent.nc.flush()
    replies = await gather(server.url, 0.5, server.options("admin"))
    assert [r.instance_id for r in replies] == ["s1"]
    assert not sipagent.errors
    # Media may not ask.
    assert await gather(server.url, 0.3, server.options("media")) == []


def _record(call_id: str) -> CallRecord:
    return CallRecord(call_id=call_id, state="inviting", updated_at=1.0, signaling_id="g1")


async def test_each_service_keeps_the_call_registry(server: Server) -> None:
    clients = []
    try:
        for user in nats_access.SERVICES:
            nc = await nats.connect(server.url, error_cb=_quiet, **server.options(user))
            clients.append(nc)
            registry = await CallRegistry.open(nc, op_timeout=2.0)
            call_id = f"kv-{user}"
            revision = await registry.create(_record(call_id))
            assert revision is not None
            updated = await registry.update(call_id, lambda r: records.media_prepared(r, "m1", 2.0))
            assert updated is not None and updated.record.media_id == "m1"
            listed = [e.record.call_id for e in await registry.list_all()]
            assert call_id in listed
            assert await registry.delete(call_id, revision=updated.revision)
            assert await registry.get(call_id) is None
        # The limits bucket is signaling's alone.
        signaling, sipagent, _ = clients
        limits = await CallRegistry.open(signaling, bucket=nats_access.LIMITS_BUCKET)
        await limits.put(_record("limits-probe"))
        with pytest.raises(RegistryError):
            await CallRegistry.open(sipagent, bucket=nats_access.LIMITS_BUCKET, op_timeout=0.5)
        # Nobody may delete a bucket (its stream).
        with pytest.raises(nats.errors.TimeoutError):
            await signaling.jetstream(timeout=0.5).delete_stream(f"KV_{nats_access.LIMITS_BUCKET}")
    finally:
        for nc in clients:
            await nc.close()


# --- TLS ------------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path.with_suffix(".pem")), str(path.with_suffix(".key"))


def _issue(
    name: str, key: ec.EllipticCurvePrivateKey, ca: x509.Certificate | None, ca_key: Any
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if ca is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, False)
    return builder.sign(ca_key if ca else key, hashes.SHA256())


async def test_mutual_tls_with_the_settings_certificates(tmp_path: Path) -> None:
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca = _issue("bridge-test-ca", ca_key, None, None)
    ca_pem, _ = _write(tmp_path / "ca", ca, ca_key)
    server_pem, server_pem_key = _write(
        tmp_path / "server", _issue("nats", server_key, ca, ca_key), server_key
    )
    client_pem, client_pem_key = _write(
        tmp_path / "client", _issue("signaling", client_key, ca, ca_key), client_key
    )
    tls = (
        f'\ntls {{\n  cert_file: "{server_pem}"\n  key_file: "{server_pem_key}"\n'
        f'  ca_file: "{ca_pem}"\n  verify: true\n}}\n'
    )
    process, url, directory = start_locked_nats(tmp_path, tls)
    password = nats_access.password_file(directory, "signaling").read_text().strip()
    try:
        settings = Settings(
            nats_url=url,
            nats_user="signaling",
            nats_password=password,
            nats_tls_ca=ca_pem,
            nats_tls_cert=client_pem,
            nats_tls_key=client_pem_key,
        )
        bus = await Bus.connect(url, "signaling-tls", options=nats_auth.connect_options(settings))
        assert bus.client.connected_url is not None
        await bus.publish(
            subjects.call_events("c1", "signaling"), HangupRequested(call_id="c1", cause="x")
        )
        await bus.flush()
        await bus.close()
        # Without a client certificate the server hangs up.
        no_cert = Settings(nats_user="signaling", nats_password=password, nats_tls_ca=ca_pem)
        with pytest.raises((OSError, nats.errors.Error)):
            await nats.connect(
                url,
                connect_timeout=2,
                allow_reconnect=False,
                error_cb=_quiet,
                **nats_auth.connect_options(no_cert),
            )
    finally:
        process.stop()
