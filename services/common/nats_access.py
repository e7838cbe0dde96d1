"""The locked bus: who may publish and subscribe what on NATS, sans-I/O.

Each service connects as a NATS user of its own (``signaling``, ``sipagent``,
``media``) and ``admin`` is the operator's (``bridge registrations``,
``bridge calls``, the readiness probe of ``bridge up``). Their permissions are derived here from
``proto/subjects.py``, the only place subjects are built, so a subject that
changes there changes here. What they say:

- only signaling publishes new work (``work.media``, ``work.media.<worker>``,
  ``work.sipagent``): no other user can place a call or hand media a call;
- each service publishes the events of a call on its own call subject only
  (``call.*.signaling``, ``call.*.sipagent``, ``call.*.media``) and its own
  heartbeat; it subscribes to the call subjects of the others, every heartbeat
  and its own readiness probe;
- only the SIP agent publishes arrived calls (``inbound.<user>``) and only
  signaling subscribes to them;
- the SIP agent answers ``registrations.sipagent``, media workers answer
  ``calls.media`` (asked by ``admin`` and signaling's ``GET /calls``) and
  signaling answers ``calls.hangup`` (asked by ``admin`` only: the operator's
  ``bridge calls hangup``); replies go out through ``allow_responses``, so no
  service may publish on another's ``_INBOX``;
- JetStream: every service reads and writes the call registry (KV bucket
  ``bridge_calls``) through the KV API of that bucket only, and signaling the
  ``bridge-limits`` bucket as well; ``admin`` only reads the call registry
  (``kv_read``: no write, no create); nobody may delete a bucket.

``render_authorization`` turns the table into the ``authorization`` block of a
nats-server config: with the passwords written in (the embedded server of
``bridge up``) or as ``$NATS_<USER>_PASSWORD`` variables the server reads
from its environment (``k8s/``, ``compose.yaml``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, cast

from proto import subjects
from proto.subjects import Source
from services.common.fleet.registry import BUCKET as CALLS_BUCKET

User = Literal["signaling", "sipagent", "media", "admin"]

SERVICES: Final[tuple[Source, ...]] = ("signaling", "sipagent", "media")
USERS: Final[tuple[User, ...]] = ("signaling", "sipagent", "media", "admin")
ADMIN: Final[User] = "admin"

LIMITS_BUCKET = "bridge-limits"
"KV bucket of signaling's limits store (signaling only)."

INBOX = "_INBOX.>"
"Where replies arrive: requests, JetStream API answers and KV watchers (nats.py's default prefix)."

_ANY = "ANYTOKEN"
"A token the subject builders accept, replaced by ``*`` in the permissions."


def _wildcard(subject: str) -> str:
    return ".".join("*" if token == _ANY else token for token in subject.split("."))


def _call(source: Source) -> str:
    """``bridge.v1.call.*.<source>``."""
    return _wildcard(subjects.call_events(_ANY, source))


def _inbound() -> str:
    """``bridge.v1.inbound.*``: the arrived calls of every user (the token is a hash)."""
    head, _, _ = subjects.inbound_calls(_ANY).rpartition(".")
    return f"{head}.*"


def kv_publish(bucket: str) -> tuple[str, ...]:
    """What a client of one JetStream KV bucket publishes (nats.py's KeyValue).

    Its own bucket's API only: bind or create it, read, watch (an ordered
    consumer: create, info, delete, flow control) and write its keys. Not
    STREAM.DELETE, PURGE or UPDATE, and no other stream.
    """
    stream = f"KV_{bucket}"
    return (
        f"$KV.{bucket}.>",
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    )


def kv_read(bucket: str) -> tuple[str, ...]:
    """What a reader of one JetStream KV bucket publishes: ``kv_publish`` without
    writing keys (``$KV.<bucket>.>``) or creating the bucket."""
    writes = (f"$KV.{bucket}.>", f"$JS.API.STREAM.CREATE.KV_{bucket}")
    return tuple(subject for subject in kv_publish(bucket) if subject not in writes)


@dataclass(frozen=True)
class Permissions:
    """One user's rights: NATS subjects (``*`` and ``>`` wildcards)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    "Each a subject, or ``<subject> <queue>``: only in that queue group."
    responses: bool = False
    "May answer a request it received (``allow_responses``)."


def _service(source: Source, publish: tuple[str, ...], subscribe: tuple[str, ...]) -> Permissions:
    """What every service has, plus ``publish`` and ``subscribe`` of its own."""
    return Permissions(
        publish=(
            *publish,
            _call(source),
            subjects.heartbeat(source),
            *kv_publish(CALLS_BUCKET),
        ),
        subscribe=(
            *subscribe,
            *(_call(other) for other in SERVICES if other != source),
            subjects.heartbeats(),
            subjects.ready(source),
            INBOX,
        ),
        responses=True,
    )


PERMISSIONS: Final[Mapping[User, Permissions]] = {
    "signaling": _service(
        "signaling",
        publish=(
            subjects.media_work(),
            _wildcard(subjects.media_work_for(_ANY)),
            subjects.sipagent_work(),
            *kv_publish(LIMITS_BUCKET),
            subjects.call_stats_query(),
        ),
        subscribe=(_inbound(), subjects.operator_hangup()),
    ),
    "sipagent": _service(
        "sipagent",
        publish=(_inbound(),),
        subscribe=(
            f"{subjects.sipagent_work()} {subjects.SIPAGENT_QUEUE}",
            subjects.registrations(),
            subjects.operator_hangup(),
        ),
    ),
    "media": _service(
        "media",
        publish=(),
        subscribe=(
            f"{subjects.media_work()} {subjects.MEDIA_QUEUE}",
            _wildcard(subjects.media_work_for(_ANY)),
            subjects.call_stats_query(),
        ),
    ),
    ADMIN: Permissions(
        publish=(
            subjects.registrations(),
            *(subjects.ready(s) for s in SERVICES),
            subjects.call_stats_query(),
            subjects.operator_hangup(),
            *kv_read(CALLS_BUCKET),
        ),
        subscribe=(INBOX,),
    ),
}


# --- matching, as nats-server does ---------------------------------------------------


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``pattern`` covers ``subject``: ``*`` one token, ``>`` one or more at the end."""
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


def may_publish(user: str, subject: str) -> bool:
    """Whether ``user`` may publish on ``subject`` (replies to requests aside)."""
    permissions = PERMISSIONS.get(cast(User, user))
    if permissions is None:
        return False
    return any(subject_matches(pattern, subject) for pattern in permissions.publish)


def may_subscribe(user: str, subject: str, queue: str = "") -> bool:
    """Whether ``user`` may subscribe to ``subject`` (in queue group ``queue``, if any)."""
    permissions = PERMISSIONS.get(cast(User, user))
    if permissions is None:
        return False
    for entry in permissions.subscribe:
        pattern, _, only_queue = entry.partition(" ")
        if subject_matches(pattern, subject) and (not only_queue or only_queue == queue):
            return True
    return False


# --- passwords and the server's config ------------------------------------------------

PASSWORD_LENGTH = 43
"Letters and digits: 43 of them hold 256 bits."
_ALPHANUMERIC = string.ascii_letters + string.digits
_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9]{15,}$")
"""What a password must look like: nats-server parses the value of an environment
variable as a config value, so ``-x``, ``12-3``, ``123`` or ``yes`` would not be
strings; a letter, then letters and digits, always is."""


def new_password() -> str:
    """A random password of PASSWORD_LENGTH letters and digits, a letter first."""
    first = secrets.choice(string.ascii_letters)
    return first + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(PASSWORD_LENGTH - 1))


def new_passwords() -> dict[User, str]:
    """A fresh random password per user."""
    return {user: new_password() for user in USERS}


def valid_password(password: str) -> bool:
    """Whether ``password`` may go into the server's config or environment (16+ characters)."""
    return bool(_PASSWORD.match(password))


def password_env(user: User) -> str:
    """The variable the server reads ``user``'s password from: ``NATS_SIGNALING_PASSWORD``."""
    return f"NATS_{user.upper()}_PASSWORD"


def _list(items: tuple[str, ...], indent: str) -> str:
    lines = "".join(f"{indent}  {json.dumps(item)}\n" for item in items)
    return f"[\n{lines}{indent}]"


def render_authorization(passwords: Mapping[User, str] | None = None) -> str:
    """The ``authorization`` block of a nats-server config, one user per entry of ``USERS``.

    ``passwords``: each user's password, written in the config (keep the file
    private); None: ``$NATS_<USER>_PASSWORD``, read by the server from its
    environment, so the config itself holds no secret.
    """
    users = []
    for user in USERS:
        if passwords is None:
            password = f"${password_env(user)}"
        else:
            given = passwords.get(user, "")
            if not valid_password(given):
                # Never echo it: it is a secret.
                raise ValueError(
                    f"the password of NATS user {user} must be 16 or more letters and "
                    "digits, a letter first"
                )
            password = json.dumps(given)
        permissions = PERMISSIONS[user]
        indent = " " * 8
        lines = [
            f'      user: "{user}"',
            f"      password: {password}",
            "      permissions: {",
            f"        publish: {{allow: {_list(permissions.publish, indent)}}}",
            f"        subscribe: {{allow: {_list(permissions.subscribe, indent)}}}",
        ]
        if permissions.responses:
            lines.append("        allow_responses: true")
        lines.append("      }")
        users.append("    {\n" + "\n".join(lines) + "\n    }\n")
    return (
        "# The locked bus: one user per service (services/common/nats_access.py).\n"
        "authorization {\n"
        "  users = [\n" + "".join(users) + "  ]\n"
        "}\n"
    )


def render_env(passwords: Mapping[User, str]) -> str:
    """``NATS_<USER>_PASSWORD=...`` lines: an env file for compose, or for a Kubernetes Secret."""
    return "".join(f"{password_env(user)}={passwords[user]}\n" for user in USERS)


# --- files (the embedded server of ``bridge up``) ----------------------------------


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only (0600), even if it existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user may enter (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def password_file(directory: Path, user: User) -> Path:
    return directory / f"{user}.password"


CONFIG_FILE = "auth.conf"


def write_embedded(directory: Path, passwords: Mapping[User, str]) -> Path:
    """The nats-server config and each user's password file in ``directory`` (0700, files 0600).

    Returns the config's path.
    """
    private_dir(directory)
    config = directory / CONFIG_FILE
    write_private(config, render_authorization(passwords))
    for user in USERS:
        write_private(password_file(directory, user), passwords[user] + "\n")
    return config
