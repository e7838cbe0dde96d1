"""``bridge registrations`` output: one line per trunk per instance, or JSON."""

from __future__ import annotations

import io
import json
import time

from proto.registrations import RegistrationsReply, TrunkRegistration
from services.sipagent.registrations_cli import show

NOW = time.time()
REPLIES = [
    RegistrationsReply(
        instance_id="sipagent-a",
        registrations=[
            TrunkRegistration(
                trunk="main",
                state="registered",
                registrar="sip.example.com:5060",
                aor="sip:alice@example.com",
                expires_at=NOW + 300,
                status_code=200,
                reason="OK",
                next_attempt_at=NOW + 270,
            ),
            TrunkRegistration(
                trunk="backup",
                state="failed",
                registrar="10.0.0.2:5080",
                aor="sip:bob@10.0.0.2",
                status_code=403,
                reason="Forbidden",
                next_attempt_at=NOW + 60,
            ),
        ],
    ),
    RegistrationsReply(instance_id="sipagent-b"),
]


def test_one_line_per_trunk_per_instance() -> None:
    out = io.StringIO()
    show(REPLIES, False, out, now=NOW)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    main, backup, other = lines
    assert main.startswith("sipagent-a  main  registered  registrar=sip.example.com:5060")
    assert "expires in 300 s" in main and "(last: 200 OK)" in main
    assert backup.startswith("sipagent-a  backup  failed")
    assert "next attempt in 60 s" in backup
    assert "(last: 403 Forbidden)" in backup
    assert other == "sipagent-b  (no trunk registers)"


def test_json_is_one_array_of_replies() -> None:
    out = io.StringIO()
    show(REPLIES, True, out)
    data = json.loads(out.getvalue())
    assert [reply["instance_id"] for reply in data] == ["sipagent-a", "sipagent-b"]
    assert data[0]["registrations"][0]["state"] == "registered"
    assert data[0]["registrations"][1]["status_code"] == 403
