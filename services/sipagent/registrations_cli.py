"""``bridge registrations``: every SIP agent's REGISTER bindings, asked over NATS.

One request on ``subjects.registrations()``; every SIP agent replica answers
with a ``RegistrationsReply``, gathered for ``--timeout`` seconds. One line
per trunk per instance, or one JSON array with ``--json``. Exit code: 0 when
at least one SIP agent answered, 1 when none did or NATS cannot be reached,
2 for bad settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import TextIO

import msgspec
import nats
import nats.errors
from nats.aio.msg import Msg

from proto import subjects
from proto.registrations import DecodeError, RegistrationsReply, TrunkRegistration, decode
from services.common import nats_auth
from services.common.settings import SettingsError, load_settings, nats_urls, redact_url

DEFAULT_TIMEOUT = 1.0
"Seconds replies are gathered (several replicas may answer)."
CONNECT_TIMEOUT = 5.0
"Seconds allowed to reach NATS."


async def gather(
    nats_url: str, timeout: float, options: nats_auth.ConnectOptions | None = None
) -> list[RegistrationsReply]:
    """Every reply that arrives within ``timeout`` seconds, by instance id.

    ``options``: credentials and TLS (``nats_auth``); the user must be allowed to
    ask (``admin`` on the locked bus).
    """

    async def quiet(exc: Exception) -> None:
        pass  # a failed connection is reported once, below, not as a traceback per attempt

    connecting = nats.connect(
        nats_urls(nats_url),
        connect_timeout=CONNECT_TIMEOUT,
        allow_reconnect=False,
        error_cb=quiet,
        **(options or {}),
    )
    nc = await asyncio.wait_for(connecting, CONNECT_TIMEOUT)
    replies: list[RegistrationsReply] = []

    async def on_reply(msg: Msg) -> None:
        with contextlib.suppress(DecodeError):  # not a SIP agent's answer
            replies.append(decode(msg.data))

    try:
        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=on_reply)
        await nc.publish(subjects.registrations(), b"", reply=inbox)
        await nc.flush(timeout=max(int(timeout), 1))
        await asyncio.sleep(timeout)
    finally:
        await nc.close()
    return sorted(replies, key=lambda reply: reply.instance_id)


def _in(when: float | None, now: float) -> str:
    return f"{max(when - now, 0.0):.0f} s" if when is not None else ""


def format_registration(instance_id: str, registration: TrunkRegistration, now: float) -> str:
    """``<instance> <trunk> <state> registrar=<host:port> ...`` on one line."""
    parts = [instance_id, registration.trunk, registration.state]
    parts.append(f"registrar={registration.registrar}")
    if registration.state == "registered" and registration.expires_at is not None:
        parts.append(f"expires in {_in(registration.expires_at, now)}")
    elif registration.next_attempt_at is not None:
        parts.append(f"next attempt in {_in(registration.next_attempt_at, now)}")
    if registration.status_code is not None or registration.reason:
        last = f"{registration.status_code or ''} {registration.reason}".strip()
        parts.append(f"(last: {' '.join(last.split())})")
    return "  ".join(parts)


def show(
    replies: list[RegistrationsReply], as_json: bool, out: TextIO, now: float | None = None
) -> None:
    """Print ``replies``; ``now``: the wall clock the remaining times count from."""
    if as_json:
        print(json.dumps(msgspec.to_builtins(replies), ensure_ascii=False), file=out)
        return
    now = time.time() if now is None else now
    for reply in replies:
        if not reply.registrations:
            print(f"{reply.instance_id}  (no trunk registers)", file=out)
        for registration in reply.registrations:
            print(format_registration(reply.instance_id, registration, now), file=out)


def main(as_json: bool, timeout: float = DEFAULT_TIMEOUT) -> int:
    if not 0 < timeout <= 60:
        print("bridge registrations: --timeout must be above 0 and at most 60", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"bridge registrations: {exc}", file=sys.stderr)
        return 2
    where = redact_url(settings.nats_url)
    # Without credentials of its own: the admin user of a `bridge up` on this machine.
    embedded = nats_auth.embedded_admin(settings)
    try:
        options = {**nats_auth.connect_options(settings), **(embedded or {})}
    except SettingsError as exc:
        print(f"bridge registrations: {exc}", file=sys.stderr)
        return 2
    try:
        replies = asyncio.run(gather(settings.nats_url, timeout, options))
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        if nats_auth.refused(exc):
            who = "the admin user of `bridge up`" if embedded else nats_auth.describe(settings)
            print(f"bridge registrations: NATS at {where} refused {who}", file=sys.stderr)
            return 1
        detail = f" ({exc})" if str(exc) else ""
        print(f"bridge registrations: cannot reach NATS at {where}{detail}", file=sys.stderr)
        return 1
    show(replies, as_json, sys.stdout)
    if not replies:
        print(f"bridge registrations: no SIP agent answered in {timeout:g} s", file=sys.stderr)
        return 1
    return 0
