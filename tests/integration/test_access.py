"""Client tokens on the real stack: who may open a WebSocket and place a call.

nats-server, media, a SIP agent and a signaling process with ``AUTH=required``
run for the whole module, with one long-lived sipp as the trunk (it answers
every call, echoes RTP and expects the BYE). Each refusal is tried the way an
attacker would and must carry its code; for each, nothing reaches the work
queues on NATS and no INVITE reaches sipp.

The stack, the bus watch, tokens and socket moves come from
``test_access_support.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.client import BridgeClient
from tests.integration.harness import TRUNK_PASSWORD
from tests.integration.test_access_support import (
    FAKE_SDP,
    ISSUED,
    SECRET_NEW,
    SECRET_OLD,
    SECRET_OTHER,
    TOKEN_SECRETS,
    AccessStack,
    BusWatch,
    Signaling,
    accepted,
    assert_nothing_left,
    b64url,
    claims,
    fresh,
    hang_up,
    hs256,
    issued,
    jws,
    open_socket,
    place_call,
    refusal,
    refused_offer,
    refused_total,
    start_access_stack,
    until,
)
from tests.integration.test_call import assert_tone_returns

pytestmark = pytest.mark.timeout(60)


@dataclass
class Keys:
    private: rsa.RSAPrivateKey
    public_pem: bytes
    path: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The RSA key whose public half the bridge trusts (CLIENT_TOKEN_PUBLIC_KEY)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path_factory.mktemp("keys") / "client-tokens.pub.pem"
    path.write_bytes(pem)
    return Keys(private, pem, path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[AccessStack]:
    settings = {
        "AUTH": "required",
        "CLIENT_TOKEN_SECRET": TOKEN_SECRETS,
        "CLIENT_TOKEN_PUBLIC_KEY": f"rsa:{keys.path}",
        "DIAL_DENY": "+1900",
    }
    yield from start_access_stack(tmp_path_factory.mktemp("access"), {"auth": settings})


@pytest.fixture
def signaling(stack: AccessStack) -> Signaling:
    stack.ensure_trunk()
    return stack.signalings["auth"]


@pytest.fixture
async def bus(stack: AccessStack) -> AsyncIterator[BusWatch]:
    async with BusWatch(stack.nats_url) as watch:
        yield watch


async def test_sockets_without_a_valid_token_are_refused_with_4401(
    stack: AccessStack, signaling: Signaling, bus: BusWatch, keys: Keys
) -> None:
    now = time.time()
    good = claims(fresh("mallory"))
    genuine = hs256(fresh("mallory"))
    head, _, signature = genuine.split(".")
    forged_payload = b64url(json.dumps(claims("admin", ttl=86400)).encode())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    old_key = SECRET_OLD.encode()
    # name: (token, how it is sent: "query", "bearer" or "basic")
    cases: dict[str, tuple[str | None, str]] = {
        "no token": (None, "query"),
        "an empty token": ("", "query"),
        "not a JWT": ("not-a-jwt", "query"),
        "Basic credentials": (None, "basic"),
        "signed with another secret": (hs256(fresh("m"), secret=SECRET_OTHER), "query"),
        "another secret, no kid": (hs256(fresh("m"), kid=None, secret=SECRET_OTHER), "query"),
        "another secret, as Bearer": (hs256(fresh("m"), secret=SECRET_OTHER), "bearer"),
        "a changed payload": (issued(f"{head}.{forged_payload}.{signature}"), "query"),
        "kid old, signed by new": (hs256(fresh("m"), kid="old", secret=SECRET_NEW), "query"),
        "an unknown kid": (hs256(fresh("m"), kid="retired"), "query"),
        "alg none": (jws({"alg": "none", "kid": "old"}, good, None), "query"),
        "alg None, no kid": (jws({"alg": "None"}, good, None), "bearer"),
        "alg none, a signature kept": (jws({"alg": "none"}, good, None) + signature, "query"),
        "HS512 with a bridge secret": (
            issued(jwt.encode(good, SECRET_OLD, algorithm="HS512", headers={"kid": "old"})),
            "query",
        ),
        "expired an hour ago": (hs256(fresh("m"), now=now - 3600, ttl=60), "query"),
        "expired beyond the leeway": (hs256(fresh("m"), now=now - 300, ttl=300 - 45), "query"),
        "not valid for an hour": (hs256(fresh("m"), nbf=int(now + 3600)), "query"),
        "another audience": (hs256(fresh("m"), aud="another-service"), "query"),
        "no exp": (jws({"alg": "HS256", "kid": "old"}, _without(good, "exp"), old_key), "query"),
        "no sub": (jws({"alg": "HS256", "kid": "old"}, _without(good, "sub"), old_key), "query"),
        # Algorithm confusion: the RSA public key, which anyone may hold, as an HMAC secret.
        "HS256 keyed with the public key PEM, kid rsa": (
            jws({"alg": "HS256", "kid": "rsa"}, good, keys.public_pem),
            "query",
        ),
        "HS256 keyed with the public key PEM, no kid": (
            jws({"alg": "HS256"}, good, keys.public_pem),
            "bearer",
        ),
        "RS256 signed by another private key": (
            issued(jwt.encode(good, other_key, algorithm="RS256", headers={"kid": "rsa"})),
            "query",
        ),
    }
    before = await refused_total(signaling, "unauthorized")
    invites = stack.invites()
    got = {}
    for name, (token, how) in cases.items():
        if how == "basic":
            client = BridgeClient(signaling.base_url)
            await client.connect(headers={"Authorization": "Basic bWFsbG9yeTpzZWNyZXQ="})
        else:
            client = await open_socket(signaling.base_url, token, bearer=how == "bearer")
        try:
            # What an attacker pipelines right after the upgrade: never read.
            await _try_send(client, {"type": "offer", "sdp": FAKE_SDP, "destination": "+1555"})
            got[name] = await refusal(client)
        finally:
            await client.close()
    wrong = {name: result for name, result in got.items() if result != ("unauthorized", 4401)}
    assert not wrong, f"not refused with unauthorized + 4401: {wrong}"
    await assert_nothing_left(stack, bus, signaling, invites)
    assert await refused_total(signaling, "unauthorized") - before == len(cases)


def _without(payload: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != name}


async def _try_send(client: BridgeClient, message: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):  # the server closed first
        await client.send(message)


async def test_a_token_in_the_query_places_a_call(stack: AccessStack, signaling: Signaling) -> None:
    client = await open_socket(signaling.base_url, hs256(fresh("alice"), kid="old"))
    try:
        await place_call(client)
        byes = stack.byes()
        await hang_up(client)
        await until(lambda: stack.byes() > byes, 10, "sipp got the BYE")
    finally:
        await client.close()


async def test_bridge_token_cli_token_as_bearer_places_a_call(
    stack: AccessStack, signaling: Signaling
) -> None:
    # The operator's way: `bridge token`, with the rotated-in key first in the setting.
    env = dict(stack.env, CLIENT_TOKEN_SECRET=f"new:{SECRET_NEW},old:{SECRET_OLD}")
    minted = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "token", "--sub", fresh("bob"), "--ttl", "5m"],
        env=env,
        cwd=stack.tmp,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert minted.returncode == 0, minted.stderr
    token = issued(minted.stdout.strip())
    assert jwt.get_unverified_header(token)["kid"] == "new"
    client = await open_socket(signaling.base_url, token, bearer=True)
    try:
        await place_call(client)
        await hang_up(client)
    finally:
        await client.close()


async def test_rotated_keys_and_the_public_key_are_all_accepted(
    signaling: Signaling, keys: Keys
) -> None:
    rs256 = issued(
        jwt.encode(claims(fresh("carol")), keys.private, algorithm="RS256", headers={"kid": "rsa"})
    )
    tokens = {
        "kid old": hs256(fresh("carol"), kid="old", secret=SECRET_OLD),
        "kid new": hs256(fresh("carol"), kid="new", secret=SECRET_NEW),
        "no kid, new key": hs256(fresh("carol"), kid=None, secret=SECRET_NEW),
        "RS256, kid rsa": rs256,
        "exp within the leeway": hs256(fresh("carol"), now=time.time() - 300, ttl=300 - 10),
    }
    for name, token in tokens.items():
        client = await open_socket(signaling.base_url, token, bearer=name.startswith("RS"))
        try:
            await accepted(client)
        except (AssertionError, TimeoutError) as exc:
            raise AssertionError(f"{name}: refused: {client.messages}") from exc
        finally:
            await client.close()


async def test_a_token_that_expires_mid_call_does_not_end_it(
    stack: AccessStack, signaling: Signaling, bus: BusWatch
) -> None:
    # Valid at connect, expired (leeway included) a few seconds into the call.
    leeway = 30
    exp = int(time.time()) - leeway + 6
    token = hs256(fresh("dave"), now=exp - 60, ttl=60)
    client = await open_socket(signaling.base_url, token)
    try:
        await place_call(client)
        assert time.time() < exp + leeway, "the call connected after the token expired"
        await until(lambda: time.time() > exp + leeway + 0.5, 15, "the token expired")
        # Past expiry the call goes on: the tone still comes back through sipp's echo.
        await assert_tone_returns(client, stack)
        assert not [m for m in client.messages if m["type"] in ("ended", "error")], client.messages
        byes = stack.byes()
        await hang_up(client)
        await until(lambda: stack.byes() > byes, 10, "sipp got the BYE")
        # A new call on the same socket: the token has expired now.
        invites = stack.invites()
        work = len(bus.work(signaling))
        error = await refused_offer(client, "+15551234567")
        assert error["code"] == "unauthorized", error
        await bus.settle()
        assert len(bus.work(signaling)) == work and stack.invites() == invites
    finally:
        await client.close()


async def test_audit_lines_and_no_secret_in_any_log(
    stack: AccessStack, signaling: Signaling
) -> None:
    sub = fresh("erin")
    token = hs256(sub, dst=["+1*"])
    digits = "A*7#3D9B"
    client = await open_socket(signaling.base_url, token)
    try:
        refused = await refused_offer(client, "0044 20 7946 0958")
        assert refused["code"] == "forbidden_destination", refused
        await place_call(client, "+1 (555) 123-4567")
        await client.send({"type": "dtmf", "digits": digits})

        def echoed() -> str:
            return "".join(m["digit"] for m in client.messages if m["type"] == "dtmf")

        # The digits went out: sipp echoes the RFC 4733 events, and they come back.
        await until(lambda: echoed() == digits, 10, "the digits echoed")
        await hang_up(client)
    finally:
        await client.close()
    await until(lambda: len(signaling.audit_of(sub)) >= 2, 5, "two audit lines")
    lines = signaling.audit_of(sub)
    assert len(lines) == 2, lines
    first, second = lines
    assert first["source"] == second["source"] == "127.0.0.1"
    assert (first["outcome"], first["cause"]) == ("refused", "forbidden_destination"), first
    assert first["destination_given"] == "0044 20 7946 0958", first
    assert first["destination"] == "+442079460958", first
    assert first["duration"] is None, first
    assert (second["outcome"], second["cause"]) == ("answered", "normal"), second
    assert second["destination_given"] == "+1 (555) 123-4567", second
    assert second["destination"] == "+15551234567", second
    assert second["trunk"] == "default", second
    assert isinstance(second["duration"], float) and second["duration"] > 0, second
    assert first["call_id"] != second["call_id"]
    for line in lines:
        assert line["time"].endswith("Z") and line["event"] == "call_attempt", line
    # Nothing secret in the audit file or in any process's output (all at DEBUG).
    places = {"the audit file": signaling.audit_path.read_text() if signaling.audit_path else ""}
    places.update({p.name: p.log() for p in stack.processes})
    secret_things = {
        "a client token": ISSUED,
        "a token signature": [t.rsplit(".", 1)[1] for t in ISSUED if t.rsplit(".", 1)[1]],
        "a token secret": [SECRET_OLD, SECRET_NEW],
        "the DTMF digits": [digits, json.dumps(digits)],
        "the trunk password": [TRUNK_PASSWORD],
    }
    leaks = [
        f"{what} in {place}"
        for place, text in places.items()
        for what, values in secret_things.items()
        if any(value in text for value in values)
    ]
    assert not leaks, leaks


async def test_a_premium_number_in_national_format_is_not_dialled(
    stack: AccessStack, signaling: Signaling, bus: BusWatch
) -> None:
    # The seed's single-trunk set-up (every destination to the trunk), DIAL_DENY=+1900:
    # a US trunk dials 900 555 0100 as +1 900 555 0100. Without DIAL_COUNTRY_CODE a
    # national number cannot be judged, so it is refused as written.
    invites = stack.invites()
    client = await open_socket(signaling.base_url, hs256(fresh("national")))
    try:
        await client.offer(codec="PCMU", destination="900-555-0100")
        with contextlib.suppress(AssertionError):  # an `error` came instead of the answer
            await client.accept_answer(10)
        errors = [m["code"] for m in client.messages if m["type"] == "error"]
        assert errors == ["bad_destination"], client.messages
    finally:
        await client.close()
    await assert_nothing_left(stack, bus, signaling, invites)
