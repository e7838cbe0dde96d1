"""The audit log: one JSON line per call attempt.

Time, identity, source address, the destination as given and as normalized,
the trunk, the outcome and cause, and the duration. Never a token, a password
or a digit sequence: the record is built from these fields only. Lines go to
``AUDIT_LOG`` (a file, appended) or, without one, to the ``bridge.audit``
logger, so they leave with the service's log stream.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TextIO

log = logging.getLogger("bridge.audit")

MAX_GIVEN = 128
"Characters of the destination as given kept in a line (it is whatever a client sent)."

# Outcomes of a call attempt.
REFUSED = "refused"
"Refused before any work: dial plan, limits, an expired token."
FAILED = "failed"
"Set up but never answered: rejected, cancelled, timed out, failed."
ANSWERED = "answered"
"Answered; ``duration`` says for how long."


def record(
    *,
    call_id: str,
    identity: str | None,
    source: str,
    given: str,
    destination: str,
    trunk: str,
    outcome: str,
    cause: str,
    status: int | None = None,
    duration: float | None = None,
    direction: str = "outbound",
    caller: str = "",
) -> dict[str, object]:
    """One attempt's line; an inbound one (a call from the trunk) also names its caller."""
    extra: dict[str, object] = {"caller": caller} if direction == "inbound" else {}
    return {
        "event": "call_attempt",
        "direction": direction,
        "call_id": call_id,
        "identity": identity,
        "source": source,
        "destination_given": given[:MAX_GIVEN],
        "destination": destination,
        "trunk": trunk,
        "outcome": outcome,
        "cause": cause,
        "status": status,
        "duration": None if duration is None else round(duration, 3),
        **extra,
    }


class AuditLog:
    """Writes records, each with its wall-clock ``time``."""

    def __init__(self, path: str = "") -> None:
        self._file: TextIO | None = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def write(self, entry: dict[str, object]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        line = json.dumps({"time": f"{stamp}Z", **entry}, ensure_ascii=False)
        if self._file is not None:
            self._file.write(line + "\n")
        else:
            log.info("%s", line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
