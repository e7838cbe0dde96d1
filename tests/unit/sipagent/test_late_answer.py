"""A 2xx that comes after its call was over still gets its ACK, then a BYE: no dialog left up."""

from __future__ import annotations

import asyncio

from proto import errors
from services.common.sip.message import make_request
from tests.unit.sipagent.test_failover import FIRST, SECOND, _agent, until
from tests.unit.sipagent.trunk import ANSWER, OFFER, respond


async def test_a_2xx_after_the_cancel_window_is_acked_and_hung_up() -> None:
    agent, transport = await _agent((FIRST,), t1=0.005)
    handle = await agent.dial("c1", "100", OFFER)
    [invite] = transport.requests("INVITE", FIRST.addr)
    agent.receive(bytes(respond(invite, 180)), FIRST.addr)
    handle.hangup(errors.CANCELLED)
    [cancel] = transport.requests("CANCEL", FIRST.addr)
    agent.receive(bytes(respond(cancel, 200)), FIRST.addr)
    # No 487 follows: the CANCEL window ends the call, and once the CANCEL's
    # transaction is done (Timer K, T4 = 5 s) the agent forgets it.
    async with asyncio.timeout(10):
        while agent.active_calls:
            await asyncio.sleep(0.01)
    agent.receive(bytes(respond(invite, 200, body=ANSWER)), FIRST.addr)
    [ack] = transport.requests("ACK", FIRST.addr)
    assert ack.call_id == invite.call_id and ack.cseq.sequence == invite.cseq.sequence
    assert ";tag=trunk-tag" in ack.headers["To"]
    [bye] = transport.requests("BYE", FIRST.addr)
    assert bye.call_id == invite.call_id and ";tag=trunk-tag" in bye.headers["To"]
    agent.receive(bytes(respond(bye, 200)), FIRST.addr)
    assert len(transport.requests("BYE", FIRST.addr)) == 1  # answered: not sent again
    await agent.close()


async def test_a_late_2xx_from_a_target_failed_over_is_ended() -> None:
    agent, transport = await _agent((FIRST, SECOND), t1=0.005)
    handle = await agent.dial("c1", "100", OFFER)
    [first] = transport.requests("INVITE", FIRST.addr)
    await until(lambda: bool(transport.requests("INVITE", SECOND.addr)))  # Timer B
    [second] = transport.requests("INVITE", SECOND.addr)
    agent.receive(bytes(respond(second, 180)), SECOND.addr)
    await until(lambda: agent.active_calls == 1)  # the first attempt's clean-up is over
    agent.receive(bytes(respond(first, 200, body=ANSWER)), FIRST.addr)
    assert len(transport.requests("ACK", FIRST.addr)) == 1
    assert len(transport.requests("BYE", FIRST.addr)) == 1
    # The call itself goes on with the second target.
    assert handle.trunk == SECOND.addr and not transport.requests("CANCEL", SECOND.addr)
    await agent.close()


async def test_a_2xx_of_no_invite_of_ours_is_ignored() -> None:
    agent, transport = await _agent((FIRST,))
    stranger = make_request(
        "INVITE",
        "sip:100@trunk.test",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKstranger"),
            ("From", "<sip:x@trunk.test>;tag=a"),
            ("To", "<sip:100@trunk.test>"),
            ("Call-ID", "not-ours"),
            ("CSeq", "1 INVITE"),
        ],
    )
    agent.receive(bytes(respond(stranger, 200, body=ANSWER)), FIRST.addr)
    assert transport.sent == []
    await agent.close()
