"""NATS subjects and queue groups, built only here.

New work goes to a queue group so that any number of replicas share it.
Everything about one call then travels on per-call subjects, one per
producing service, so the instances that own the call subscribe to exactly
the events they need.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

PREFIX = "bridge.v1"

MEDIA_QUEUE = "media"
"Queue group of media workers taking new calls."
SIPAGENT_QUEUE = "sipagent"
"Queue group of SIP agents taking new dials."

Source = Literal["signaling", "media", "sipagent"]

_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check_call_id(call_id: str) -> str:
    # A dot or wildcard in a call id would address other calls' subjects.
    if not _CALL_ID.match(call_id):
        raise ValueError(f"invalid call id {call_id!r}")
    return call_id


def media_work() -> str:
    """Where signaling sends ``CallRequested`` (queue group ``media``)."""
    return f"{PREFIX}.work.media"


def sipagent_work() -> str:
    """Where signaling sends ``DialRequested`` (queue group ``sipagent``)."""
    return f"{PREFIX}.work.sipagent"


def call_events(call_id: str, source: Source) -> str:
    """Where ``source`` publishes the events of one call."""
    return f"{PREFIX}.call.{_check_call_id(call_id)}.{source}"


def user_token(user: str) -> str:
    """An identity as one subject token: the first 32 hex digits of its SHA-256.

    A hash rather than an escape: ``a.b`` and ``a_b`` must never share a
    subject, or one user's calls would ring another.
    """
    if not user:
        raise ValueError("empty user")
    return hashlib.sha256(user.encode()).hexdigest()[:32]


def inbound_calls(user: str) -> str:
    """Where SIP agents publish ``CallArrived`` for ``user`` (no queue group: every
    signaling instance with a browser listening as ``user`` rings it)."""
    return f"{PREFIX}.inbound.{user_token(user)}"


def ready(service: Source) -> str:
    """Where instances of ``service`` answer once they take work (empty reply)."""
    return f"{PREFIX}.ready.{service}"


def registrations() -> str:
    """Where ``bridge registrations`` asks; every SIP agent answers (no queue group)."""
    return f"{PREFIX}.registrations.sipagent"


def call_stats_query() -> str:
    """Where ``bridge calls`` asks for the media of live calls; every media worker
    answers with a ``proto.calls.CallStatsReply`` (no queue group)."""
    return f"{PREFIX}.calls.media"


def operator_hangup() -> str:
    """Where ``bridge calls hangup`` sends ``HangupRequested(cause="operator")``: every
    signaling instance listens (no queue group); the one holding the call ends it and
    answers with a ``proto.calls.HangupAnswer``."""
    return f"{PREFIX}.calls.hangup"


# --- the fleet: liveness and placement ------------------------------------------

_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def instance_token(instance_id: str) -> str:
    """``instance_id`` as one subject token: anything but ``[A-Za-z0-9_-]`` becomes ``_``.

    Default instance ids hold the host name, whose dots would split the token.
    """
    if not instance_id or len(instance_id) > 128:
        raise ValueError(f"invalid instance id {instance_id!r}")
    return _TOKEN_UNSAFE.sub("_", instance_id)


def heartbeat(service: Source) -> str:
    """Where instances of ``service`` publish their ``Heartbeat`` (plain NATS, no queue)."""
    return f"{PREFIX}.heartbeat.{service}"


def heartbeats() -> str:
    """Wildcard over every service's heartbeats, for lease tables."""
    return f"{PREFIX}.heartbeat.*"


def media_work_for(instance_id: str) -> str:
    """Where signaling sends ``CallRequested`` meant for one chosen media worker.

    Distinct from ``media_work()``: a worker subscribes to both, this one
    without a queue group.
    """
    return f"{PREFIX}.work.media.{instance_token(instance_id)}"
