"""A listener on the bus for integration tests: every call event, and a way to inject some."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, TypeVar

import nats

from proto import codec, subjects
from proto.events import AnyEvent, Event, InviteSent

E = TypeVar("E", bound=Event)


class BusSpy:
    """Subscribes to every call subject; ``wait_for`` an event of a type, ``publish`` one."""

    def __init__(self, nats_url: str) -> None:
        self._url = nats_url
        self._nc: Any = None
        self.events: list[tuple[str, AnyEvent]] = []

    async def __aenter__(self) -> BusSpy:
        self._nc = await nats.connect(self._url.split(","), connect_timeout=2)

        async def on_message(msg: Any) -> None:
            # Another kind of message on a call subject is not ours to check.
            with contextlib.suppress(Exception):
                self.events.append((msg.subject, codec.decode(msg.data)))

        await self._nc.subscribe(f"{subjects.PREFIX}.call.>", cb=on_message)
        await self._nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._nc.close()

    async def wait_for(
        self, kind: type[E], timeout: float = 15.0, source: str = "sipagent", **fields: object
    ) -> E:
        """The first event of ``kind`` from ``source`` whose ``fields`` match."""
        deadline = time.monotonic() + timeout
        while True:
            for subject, event in self.events:
                if (
                    isinstance(event, kind)
                    and subject.endswith(f".{source}")
                    and all(getattr(event, k) == v for k, v in fields.items())
                ):
                    return event
            if time.monotonic() > deadline:
                seen = [type(e).__name__ for _, e in self.events]
                raise AssertionError(f"no {kind.__name__} {fields} on the bus; saw {seen}")
            await asyncio.sleep(0.05)

    async def call_id(self) -> str:
        """The call id of the (only) call, from its ``InviteSent``."""
        return (await self.wait_for(InviteSent)).call_id

    async def publish(self, event: AnyEvent, source: subjects.Source = "signaling") -> None:
        await self._nc.publish(subjects.call_events(event.call_id, source), codec.encode(event))
        await self._nc.flush()
