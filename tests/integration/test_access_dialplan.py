"""The dial plan on the real stack: a token's ``dst``, ``DIAL_DENY`` and a providers file.

Signaling and the SIP agent read one providers file whose trunk is the
module's sipp: a ``uk`` route with an ``allow`` and a ``deny`` list, a US
route, and a trunk ``deny`` list; no fallback. Every destination is tried in
the spellings an attacker would use to slip past a prefix rule; each refusal
carries its code, leaves nothing on NATS and no INVITE at sipp. A permitted
call, spelled oddly, reaches sipp as E.164.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.integration.test_access_support import (
    TOKEN_SECRETS,
    AccessStack,
    BusWatch,
    Signaling,
    assert_nothing_left,
    fresh,
    hang_up,
    hs256,
    open_socket,
    place_call,
    refused_offer,
    refused_total,
    start_access_stack,
)

pytestmark = pytest.mark.timeout(60)

UK = "+442079460958"
SPELLINGS_OF_UK = [
    "+44 20 7946 0958",
    "0044 20 7946 0958",
    "011-44-20-7946-0958",
    "%2B442079460958",
    "%252B442079460958",
    "tel:+44-20-7946-0958",
    "sip:+442079460958@x;user=phone",
    "SIP:+442079460958@trunk.test",
    "\uff0b\uff14\uff14\uff12\uff10\uff17\uff19\uff14\uff16\uff10\uff19\uff15\uff18",
    "(+44) 20.7946.0958",
    "+44\u200b20\u200b7946\u200b0958",
    "\u202e+442079460958",
    "\t+44 20 7946 0958 ",
]
"+44 20 7946 0958 as a page could send it: full-width, percent-encoded, URIs, invisible marks."


def providers(port: int) -> str:
    return f"""
[trunks.main]
host = "127.0.0.1"
port = {port}
domain = "trunk.test"
deny = ["+1 555 000*"]

[[routes]]
name = "uk"
match = "^\\\\+44"
pattern = true
trunk = "main"
allow = ["+44 20*"]
deny = ["+44 20 7946 0999"]

[[routes]]
match = "^\\\\+1"
pattern = true
trunk = "main"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccessStack]:
    settings = {
        "AUTH": "required",
        "CLIENT_TOKEN_SECRET": TOKEN_SECRETS,
        "DIAL_DENY": "+1900",
    }
    yield from start_access_stack(
        tmp_path_factory.mktemp("dialplan"), {"plan": settings}, providers=providers
    )


@pytest.fixture
def signaling(stack: AccessStack) -> Signaling:
    stack.ensure_trunk()
    return stack.signalings["plan"]


@pytest.fixture
async def bus(stack: AccessStack) -> AsyncIterator[BusWatch]:
    async with BusWatch(stack.nats_url) as watch:
        yield watch


async def refusals(signaling: Signaling, token: str, destinations: list[str]) -> list[str]:
    """What each offer got, as ``code: message``, on one socket."""
    client = await open_socket(signaling.base_url, token)
    try:
        got = []
        for destination in destinations:
            error = await refused_offer(client, destination)
            got.append(f"{error['code']}: {error['message']}")
        return got
    finally:
        await client.close()


async def test_a_token_for_plus_1_cannot_reach_the_uk_in_any_spelling(
    stack: AccessStack, signaling: Signaling, bus: BusWatch
) -> None:
    before = await refused_total(signaling, "forbidden_destination")
    invites = stack.invites()
    got = await refusals(signaling, hs256(fresh("us-only"), dst=["+1*"]), SPELLINGS_OF_UK)
    wanted = f"forbidden_destination: {UK} is not allowed by your token"
    wrong = {s: g for s, g in zip(SPELLINGS_OF_UK, got, strict=True) if g != wanted}
    assert not wrong, wrong
    # A national spelling cannot be judged without DIAL_COUNTRY_CODE: refused as written.
    (national,) = await refusals(signaling, hs256(fresh("anyone")), ["19005550100"])
    assert national.startswith("bad_destination: "), national
    await assert_nothing_left(stack, bus, signaling, invites)
    after = await refused_total(signaling, "forbidden_destination")
    assert after - before == len(SPELLINGS_OF_UK)


async def test_the_same_token_reaches_plus_1_and_a_route_name_token_reaches_the_uk(
    stack: AccessStack, signaling: Signaling
) -> None:
    for token, destination, user in (
        (hs256(fresh("us-only"), dst=["+1*"]), "+1-555-123-4567", "+15551234567"),
        (hs256(fresh("uk-route"), dst=["uk"]), "0044 (20) 7946-0958", UK),
    ):
        invites = len(re.findall(rf"^INVITE sip:{re.escape(user)}@", stack.trunk_messages(), re.M))
        client = await open_socket(signaling.base_url, token)
        try:
            await place_call(client, destination)
            await hang_up(client)
        finally:
            await client.close()
        after = len(re.findall(rf"^INVITE sip:{re.escape(user)}@", stack.trunk_messages(), re.M))
        assert after == invites + 1, stack.trunk_messages()[-3000:]


async def test_dial_deny_refuses_premium_numbers_however_spelled(
    stack: AccessStack, signaling: Signaling, bus: BusWatch
) -> None:
    spellings = [
        "+1 900 555 0100",
        "+1-900-555-0100",
        "001 900 555 0100",
        "011 1 900 555 0100",
        "tel:+1-900-555-0100",
        "%2B19005550100",
    ]
    invites = stack.invites()
    # A token with no dst at all: only the dial plan stands in the way.
    got = await refusals(signaling, hs256(fresh("anyone")), spellings)
    wrong = {
        s: g
        for s, g in zip(spellings, got, strict=True)
        if not g.startswith("forbidden_destination: ") or "dial plan" not in g
    }
    assert not wrong, wrong
    await assert_nothing_left(stack, bus, signaling, invites)


async def test_route_and_trunk_lists_of_the_providers_file(
    stack: AccessStack, signaling: Signaling, bus: BusWatch
) -> None:
    cases = {
        "+44 161 496 0000": "forbidden_destination: +441614960000 is not allowed by its route",
        "0044 20 7946 0999": "forbidden_destination: +442079460999 is not allowed by its route",
        "+1 555 000 1234": "forbidden_destination: +15550001234 is not allowed by its trunk",
        "001 555 000 9999": "forbidden_destination: +15550009999 is not allowed by its trunk",
        "+33 1 23 45 67 89": "unknown_destination",
        "support": "unknown_destination",
    }
    invites = stack.invites()
    got = await refusals(signaling, hs256(fresh("anyone")), list(cases))
    wrong = {
        given: result
        for (given, wanted), result in zip(cases.items(), got, strict=True)
        if not (result == wanted or result.split(":")[0] == wanted)
    }
    assert not wrong, wrong
    await assert_nothing_left(stack, bus, signaling, invites)


async def test_what_is_neither_a_number_nor_a_name_is_a_bad_destination(
    stack: AccessStack, signaling: Signaling, bus: BusWatch
) -> None:
    nonsense = [
        "+1 555 CALL NOW",
        "+15551234567,,9011442079460958",
        "../../etc/passwd",
        "+1555\r\nVia: SIP/2.0/UDP evil.example",
        "*67+442079460958",
        "1" * 21,
    ]
    invites = stack.invites()
    got = await refusals(signaling, hs256(fresh("anyone")), nonsense)
    wrong = {
        d: g for d, g in zip(nonsense, got, strict=True) if g.split(":")[0] != "bad_destination"
    }
    assert not wrong, wrong
    await assert_nothing_left(stack, bus, signaling, invites)
