"""Child processes of a supervising process: ``bridge up`` and ``bridge media --workers``.

A child runs in a session of its own, so a terminal's Ctrl-C reaches the
supervisor only and the supervisor decides what each child gets. It also dies
with the supervisor: on Linux it receives SIGINT (stop now) when the
supervisor is gone, even after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """One started child process."""

    name: str
    process: asyncio.subprocess.Process
    started_at: float
    "Loop time of the start."

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def send(self, sig: int) -> None:
        """Send ``sig`` unless the child has already exited."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)


def die_with_parent() -> None:
    """In the child: stop now (SIGINT) if the supervisor dies, even by SIGKILL (Linux)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


async def spawn(name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
    """Start ``argv`` in a session of its own, set to die with this process."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=dict(env), start_new_session=True, preexec_fn=die_with_parent
    )
    return Child(name, process, asyncio.get_running_loop().time())


async def stop(children: Iterable[Child], sig: int, timeout: float) -> None:
    """Send ``sig`` to every child, wait up to ``timeout`` for each, then kill it."""
    group = list(children)
    for child in group:
        child.send(sig)
    for child in group:
        try:
            await asyncio.wait_for(child.process.wait(), timeout)
        except TimeoutError:
            child.send(signal.SIGKILL)
            await child.process.wait()


async def first_exit(children: Iterable[Child]) -> Child:
    """The first of ``children`` to exit."""
    waits = {asyncio.ensure_future(c.process.wait()): c for c in children}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return waits[done.pop()]
