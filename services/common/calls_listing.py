"""What a live call looks like to an operator: the registry and the media tier, merged.

``bridge calls`` and signaling's ``GET /calls`` show the same list: each call
of the registry (``bridge_calls``: who holds it, who calls whom, through which
trunk, since when) joined with what its media worker last measured (codecs of
both legs, passthrough or transcoding, loss, MOS). A call only one side knows
(its record was not written, or its media is gone) is still shown with what is
known, and ``registered``/``measured`` say which side knew it. Pure functions:
the bus and the registry are read in ``calls_query``.
"""

from __future__ import annotations

import msgspec

from proto.calls import CallStatsReply, MediaCallStats
from proto.events import LegQuality
from proto.fleet import CallRecord

PASSTHROUGH = "passthrough"
TRANSCODE = "transcode"


class LiveCall(msgspec.Struct, frozen=True, kw_only=True):
    """One live call as ``bridge calls --json`` and ``GET /calls`` show it."""

    call_id: str
    "The bridge's call id (what ``bridge calls hangup`` takes)."
    state: str = ""
    "The registry's state (``setup``, ``ringing``, ``inviting``, ``confirmed``, ``reaping``)."
    direction: str = ""
    "``outbound`` (the browser called) or ``inbound`` (the trunk called); empty without a record."
    identity: str = ""
    "The browser's identity; empty: anonymous, or no record."
    caller: str = ""
    "Who calls (the identity outbound, the trunk's From user inbound)."
    callee: str = ""
    "Who is called (the destination outbound, the DID inbound)."
    trunk: str = ""
    "The trunk's name (``default`` for ``.env``)."
    started_at: float | None = None
    "Wall clock (seconds since the epoch) the call started; None when not known."
    answered_at: float | None = None
    "Wall clock the call was answered; None before, or when not known."
    duration: float | None = None
    "Seconds since the call started; None when not known."
    talking: float | None = None
    "Seconds since the call was answered; None before."
    signaling_id: str = ""
    "Signaling instance holding the browser."
    media_id: str = ""
    "Media worker carrying the media."
    sipagent_id: str = ""
    "SIP agent holding the dialog."
    path: str = ""
    "``passthrough`` (both legs share the codec) or ``transcode``; empty before a measurement."
    browser_codec: str = ""
    "The browser leg's codec; empty before a measurement."
    trunk_codec: str = ""
    "The trunk leg's codec; empty until the trunk's SDP is known and measured."
    browser: LegQuality | None = None
    "The browser leg's figures (loss, jitter, round trip, MOS)."
    trunk_leg: LegQuality | None = None
    "The trunk leg's figures."
    measured_at: float | None = None
    "Wall clock of the media worker's latest measurement."
    registered: bool = False
    "The registry has a record of the call."
    measured: bool = False
    "A media worker answered that it carries the call."


def merge(records: list[CallRecord], replies: list[CallStatsReply], now: float) -> list[LiveCall]:
    """Every call of ``records`` and of the media workers' ``replies``, oldest first.

    ``now``: the wall clock durations count to.
    """
    media: dict[str, tuple[str, MediaCallStats]] = {}
    for reply in replies:
        for stats in reply.calls:
            known = media.get(stats.call_id)
            if known is None or stats.measured_at >= known[1].measured_at:
                media[stats.call_id] = (reply.instance_id, stats)
    calls: dict[str, LiveCall] = {}
    for record in records:
        calls[record.call_id] = _from_record(record, now)
    for call_id, (media_id, stats) in media.items():
        call = calls.get(call_id) or LiveCall(call_id=call_id)
        calls[call_id] = _with_media(call, media_id, stats)
    return sorted(calls.values(), key=_order)


def _order(call: LiveCall) -> tuple[bool, float, str]:
    return (call.started_at is None, call.started_at or 0.0, call.call_id)


def _from_record(record: CallRecord, now: float) -> LiveCall:
    started = record.started_at or None
    answered = record.answered_at or None
    return LiveCall(
        call_id=record.call_id,
        state=record.state,
        direction=record.direction,
        identity=record.identity,
        caller=record.caller,
        callee=record.callee,
        trunk=record.trunk,
        started_at=started,
        answered_at=answered,
        duration=max(now - started, 0.0) if started is not None else None,
        talking=max(now - answered, 0.0) if answered is not None else None,
        signaling_id=record.signaling_id,
        media_id=record.media_id,
        sipagent_id=record.sipagent_id,
        registered=True,
    )


def _with_media(call: LiveCall, media_id: str, stats: MediaCallStats) -> LiveCall:
    path = ""
    if stats.passthrough is not None:
        path = PASSTHROUGH if stats.passthrough else TRANSCODE
    return msgspec.structs.replace(
        call,
        media_id=media_id,
        path=path,
        browser_codec=stats.browser.codec if stats.browser is not None else "",
        trunk_codec=stats.trunk.codec if stats.trunk is not None else "",
        browser=stats.browser,
        trunk_leg=stats.trunk,
        measured_at=stats.measured_at or None,
        measured=True,
    )


# --- for people ------------------------------------------------------------------------

COLUMNS = (
    "CALL",
    "IDENTITY",
    "DIR",
    "FROM",
    "TO",
    "TRUNK",
    "STATE",
    "DURATION",
    "CODECS B/T",
    "PATH",
    "MEDIA",
    "LOSS B/T",
    "MOS B/T",
)
NONE = "-"


def format_duration(seconds: float | None) -> str:
    """``1:05``, ``1:02:03``; ``-`` when not known."""
    if seconds is None:
        return NONE
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _loss(leg: LegQuality | None) -> str:
    return f"{leg.loss * 100:.1f}%" if leg is not None else NONE


def _mos(leg: LegQuality | None) -> str:
    return f"{leg.mos:.1f}" if leg is not None else NONE


def _state(call: LiveCall) -> str:
    if not call.registered:
        return "(no record)"
    return call.state


def row(call: LiveCall) -> tuple[str, ...]:
    """One call's cells, in ``COLUMNS`` order."""
    codecs = f"{call.browser_codec or NONE}/{call.trunk_codec or NONE}"
    return (
        call.call_id,
        call.identity or NONE,
        call.direction[:3] or NONE,
        call.caller or NONE,
        call.callee or NONE,
        call.trunk or NONE,
        _state(call),
        format_duration(call.duration),
        codecs if call.measured else NONE,
        call.path or NONE,
        call.media_id or NONE,
        f"{_loss(call.browser)}/{_loss(call.trunk_leg)}" if call.measured else NONE,
        f"{_mos(call.browser)}/{_mos(call.trunk_leg)}" if call.measured else NONE,
    )


def format_table(calls: list[LiveCall]) -> str:
    """An aligned table, a header and one line per call; a line saying so when none."""
    if not calls:
        return "no live calls"
    rows = [COLUMNS, *(row(call) for call in calls)]
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in rows]
    return "\n".join(line.rstrip() for line in lines)


_encoder = msgspec.json.Encoder()


def to_json(calls: list[LiveCall]) -> bytes:
    """The JSON array of ``bridge calls --json`` and ``GET /calls``."""
    return _encoder.encode(calls)
