"""The registry's record of each call this SIP agent holds (``services.common.fleet``).

A survivor reads these records to end a dead agent's calls: the INVITE while
it is sent or ringing, the dialog once confirmed (and again after a transfer,
which moves the call to a new dialog). Without a fleet (tests, one process)
every write is a no-op.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from services.common.fleet import records
from services.common.fleet.member import FleetMember
from services.common.sip.dialog import Dialog
from services.sipagent import recovery
from services.sipagent.handle import CallHandle
from services.sipagent.inbound import Arrival, answering_record, ringing_record


@runtime_checkable
class _InDialog(Protocol):
    """A call that holds a confirmed dialog once answered (outbound or inbound)."""

    @property
    def dialog(self) -> Dialog | None: ...


class CallRecords:
    """Writes the records of one SIP agent's calls (wall clock: ``time.time()``)."""

    def __init__(self, instance_id: str, default_transport: str) -> None:
        """``default_transport``: the agent's configured one, for a handle that names none."""
        self._instance_id = instance_id
        self._default_transport = default_transport
        self.fleet: FleetMember | None = None
        "Where the records go; None: nowhere."

    async def ringing(self, arrival: Arrival) -> None:
        """An admitted inbound call starts ringing: its INVITE is the record."""
        if self.fleet is None:
            return
        dialog = recovery.invite_record(
            arrival.sip_call_id, transport=arrival.transport, trunk=arrival.source
        )
        await self.fleet.create(ringing_record(arrival, self._instance_id, dialog, time.time()))

    async def answering(self, call_id: str, claimed_by: str, identity: str, media_id: str) -> None:
        """A browser won the inbound call; the 200 is on its way."""
        if self.fleet is None:
            return
        await self.fleet.update(
            call_id,
            lambda r: answering_record(r, claimed_by, identity, media_id, time.time()),
        )

    async def inviting(self, call_id: str, handle: CallHandle) -> None:
        """An outbound INVITE went out."""
        if self.fleet is None:
            return
        dialog = recovery.invite_record(
            handle.call.sip_call_id, transport=self._transport_of(handle), trunk=handle.trunk
        )
        instance_id = self._instance_id
        await self.fleet.update(
            call_id, lambda r: records.inviting(r, instance_id, dialog, time.time())
        )

    async def confirmed(self, call_id: str, handle: CallHandle) -> None:
        """The call's dialog is confirmed (answered, or transferred to a new dialog)."""
        call = handle.call
        if self.fleet is None or not isinstance(call, _InDialog) or call.dialog is None:
            return
        transport, trunk = self._transport_of(handle), handle.trunk
        if handle.inbound:  # where a survivor's BYE reaches the trunk
            trunk = recovery.uas_trunk(call.dialog, transport=transport, source=trunk)
        dialog = recovery.dialog_record(call.dialog, transport=transport, trunk=trunk)
        await self.fleet.update(call_id, lambda r: records.confirmed(r, dialog, time.time()))

    async def delete(self, call_id: str) -> None:
        """The call ended: nobody owes it a BYE any more."""
        if self.fleet is not None:
            await self.fleet.delete(call_id)

    def _transport_of(self, handle: CallHandle) -> str:
        return handle.transport_name or self._default_transport
