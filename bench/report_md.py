"""The Markdown text of docs/benchmarks.md (see ``bench.report``)."""

from __future__ import annotations

import math
from typing import Any

from bench.report import SATURATED_PCT, at, calls_per_core, evaluate, num, ok, ratio


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def _rtt(p: dict[str, Any], q: str) -> str:
    rtt = p.get("rtt_ms") or {}
    return num(rtt.get(q), ".2f", " ms") if rtt.get("n") else "–"


def _failures(points: list[dict[str, Any]]) -> list[str]:
    lines = []
    for p in points:
        if "error" in p:
            lines.append(f"- {p.get('calls', p.get('rate'))}: failed — `{p['error'][:300]}`")
        elif p.get("failures"):
            lines.append(f"- {p['calls']} calls: call failures {p['failures']}")
    return [*lines, ""] if lines else []


def _load_rows(points: list[dict[str, Any]], bridge: bool) -> list[list[str]]:
    rows = []
    for p in points:
        if "error" in p:
            rows.append([str(p.get("calls")), "failed", *["–"] * (10 if bridge else 8)])
            continue
        row = [
            str(p["calls"]),
            str(p.get("held", "–")),
            num(p["core_pct_per_call"], ".3f", " %"),
            num(calls_per_core(p), ".0f"),
            num(p["us_per_packet"], ".1f"),
            num(p["core_pct"], ".1f", " %")
            + (" (saturated)" if bridge and p["core_pct"] >= SATURATED_PCT else ""),
            num(p.get("rx_loss_pct"), ".3f", " %"),
            _rtt(p, "p50") + " / " + _rtt(p, "p99"),
        ]
        if bridge:
            row.append(num(p.get("rss_kib_per_call"), ".0f", " KiB"))
            row.append(
                num((p.get("rss_before_kib") or math.nan) / 1024, ".0f")
                + " → "
                + num((p.get("rss_peak_kib") or math.nan) / 1024, ".0f", " MB")
            )
        row += [
            num(p.get("loadgen_core_pct"), ".0f", " %"),
            num(p.get("machine_busy_pct"), ".0f", " %"),
        ]
        rows.append(row)
    return rows


def notes(results: dict[str, Any]) -> list[str]:
    """What a reader should know before trusting a number, found in the figures."""
    bridge, rtpe = results.get("bridge", {}), results.get("rtpengine", {})
    found = [
        "The load generator, the echo trunk (Python), sipp and the system measured share the"
        " same 2 cores: at high N the machine is busy and round trips grow for every system"
        " (see `machine`); CPU per call is the measured process alone.",
    ]
    for key, label in (("pcmu", "PCMU"), ("opus", "Opus")):
        for p in ok(bridge.get(key, [])):
            if p["core_pct"] >= SATURATED_PCT:
                found.append(
                    f"Our {label} point at {p['calls']} calls saturated the one media worker"
                    f" ({num(p['core_pct'], '.1f')} % of a core): its per-call CPU is capped,"
                    " not a cost."
                )
            if (p.get("rx_loss_pct") or 0) > 0.1:
                found.append(
                    f"Our {label} point at {p['calls']} calls lost"
                    f" {num(p['rx_loss_pct'], '.2f')} % of packets."
                )
    for p in ok(rtpe.get("plain", [])):
        if (p.get("added_forward_p50_ms") or 0) < 0:
            found.append(
                f"rtpengine plain at {p['calls']} calls: added one-way p50 is negative"
                f" ({num(p['added_forward_p50_ms'], '.3f')} ms): the direct baseline and the"
                " relayed run are separate runs, so sub-millisecond differences are noise."
            )
    for s in bridge.get("setup", []):
        a = s.get("offer_to_answer") or {}
        if a.get("p99", 0) > 5 * max(a.get("p50", 0), 1):
            found.append(
                f"Set-up at {num(s['rate'], '.0f')}/s: p99 {num(a['p99'], '.0f')} ms against p50"
                f" {num(a['p50'], '.0f')} ms — a tail while calls pile up (the loadgen and the"
                " bridge share the cores)."
            )
    return found


LOAD_HEAD = [
    "calls",
    "held",
    "% core/call",
    "calls/core",
    "µs/packet",
    "total % core",
    "rx loss",
    "RTT p50 / p99",
]


def markdown(results: dict[str, Any], png: str) -> str:
    meta = results.get("meta", {})
    cfg = results.get("config", {})
    bridge, rtpe, janus = (results.get(k, {}) for k in ("bridge", "rtpengine", "janus"))
    libs = ", ".join(f"{k} {v}" for k, v in meta.get("libraries", {}).items())
    out = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench.calls`; `bench/report.py`). One run measures",
        "our bridge, rtpengine and the Janus SIP plugin on the same machine with the same",
        "load generator. Numbers are information, never test assertions.",
        "",
        f"- Date: {meta.get('date')}; the run took {num(meta.get('duration_s'), '.0f', ' s')}",
        f"- Machine: {meta.get('cores')} cores ({meta.get('cpu')}), {meta.get('os')}",
        f"- Python {meta.get('python')}; {libs}",
        f"- rtpengine {meta.get('rtpengine')}; Janus {meta.get('janus')}; {meta.get('sipp')}",
        "- Everything on loopback (127.0.0.1). **The load generator runs on the same cores**",
        "  as the system measured; its CPU is shown beside each point (`loadgen`), and",
        "  `machine` is all cores busy (100 % = both cores).",
        "- Media CPU is busy minus idle, over the hold, divided by the calls held; calls per",
        "  core = 100 / (% core per call); µs/packet = per-call CPU / 100 packets a second",
        "  (50 each way at 20 ms). Streams: `LeanPeer`s (`bench/webrtc_peer.py`), PCMU or Opus,",
        "  one packet every 20 ms, echoed at the far end (PCMU packets carry tags, so PCMU",
        "  gets round trips; Opus does not).",
        f"- Holds: our bridge {num(cfg.get('hold'), '.0f', ' s')}, rtpengine and Janus"
        f" {num(cfg.get('compare_hold'), '.0f', ' s')} per point. Scale with the flags of"
        " `python -m bench.calls --help` (`--pcmu-calls`, `--opus-calls`, `--hold`,"
        " `--rtpengine-calls`, `--janus-calls`, `--compare-hold`, `--setup-calls`).",
        "",
        f"![media CPU per call]({png})",
        "",
        "## Targets",
        "",
    ]
    out += _table(["target", "measured", "verdict", "note"], [list(r) for r in evaluate(results)])

    # Comparison at matching N.
    pcmu, opus = bridge.get("pcmu", []), bridge.get("opus", [])
    plain, web, jan = rtpe.get("plain", []), rtpe.get("webrtc", []), janus.get("runs", [])
    ns = sorted({p["calls"] for group in (pcmu, opus, plain, web, jan) for p in ok(group)})
    rows = []
    for n in ns:
        ours_p, ours_o = calls_per_core(at(pcmu, n)), calls_per_core(at(opus, n))
        pl, wr, ja = (calls_per_core(at(g, n)) for g in (plain, web, jan))
        rows.append(
            [
                str(n),
                num(ours_p, ".0f"),
                num(ours_o, ".0f"),
                num(pl, ".0f"),
                num(wr, ".0f"),
                num(ja, ".0f"),
                num(ratio(ours_p, pl), ".2f", "×"),
                num(ratio(ours_p, wr), ".2f", "×"),
                num(ratio(ours_p, ja), ".2f", "×"),
                num(ratio(ours_o, ja), ".2f", "×"),
            ]
        )
    out += [
        "## Comparison: calls per media core at matching N",
        "",
        "Calls one core carries at this load (100 / % core per call). Ratios are ours / theirs",
        "(above 1: we carry more per core). rtpengine plain is RTP ↔ RTP (no WebRTC);",
        "rtpengine WebRTC and Janus do the same job as our PCMU path (DTLS-SRTP ↔ RTP).",
        "",
    ]
    out += _table(
        [
            "calls",
            "ours PCMU",
            "ours Opus↔PCMU",
            "rtpengine plain",
            "rtpengine WebRTC",
            "Janus",
            "PCMU / rtpe plain",
            "PCMU / rtpe WebRTC",
            "PCMU / Janus",
            "Opus / Janus",
        ],
        rows,
    )

    # Our bridge.
    out += ["## Our bridge", ""]
    if "error" in bridge:
        out += [f"**Failed:** `{bridge['error'][:500]}`", ""]
    out += [
        "`bridge up` with `MEDIA_WORKERS=1` (one media process, so calls per core is direct),",
        "`bench.echo_trunk` as the SIP trunk, loopback media; `python -m bench.loadgen` as a",
        f"subprocess. Media idle: {num(bridge.get('idle_core_pct'), '.2f', ' %')} of a core,"
        f" {num((bridge.get('idle_rss_kib') or math.nan) / 1024, '.0f', ' MB')} RSS. RSS per call:",
        "peak media RSS (VmRSS, sampled every 0.5 s) during the point minus the RSS just",
        "before it, / calls held. Points run in the order shown (PCMU, then Opus); Python keeps",
        "freed memory, so a point may reuse what an earlier one left (reads low) — the",
        "`RSS before → peak` column shows the process's memory across the run.",
        "",
    ]
    head = [*LOAD_HEAD, "RSS/call", "RSS before → peak", "loadgen", "machine"]
    for title, points in (("PCMU ↔ PCMU (relayed as is)", pcmu), ("Opus ↔ PCMU (converted)", opus)):
        out += [f"### {title}", ""]
        out += _table(head, _load_rows(points, True)) + _failures(points)
    out += ["### Call set-up (offer → answer at the browser)", ""]
    srows = []
    for s in bridge.get("setup", []):
        if "error" in s:
            srows.append([num(s.get("rate"), ".0f", "/s"), "failed", "–", "–", "–", "–"])
            continue
        a, m = s["offer_to_answer"], s["offer_to_media"]
        srows.append(
            [
                num(s["rate"], ".0f", "/s"),
                f"{s['answered']} of {s['calls']}",
                num(a["p50"], ".1f", " ms"),
                num(a["p99"], ".1f", " ms"),
                num(m["p50"], ".1f", " ms"),
                num(m["p99"], ".1f", " ms"),
            ]
        )
    out += _table(
        ["attempts", "answered", "answer p50", "answer p99", "media p50", "media p99"], srows
    )
    out += _failures(bridge.get("setup", []))
    pesq = bridge.get("pesq", {})
    out += [
        "### Speech quality (PESQ-NB, round trip)",
        "",
        "espeak-ng speech from an aiortc client, echoed by the trunk, scored by P.862 on",
        "what came back (both directions, so each leg's conversion twice).",
        "",
    ]
    out += _table(
        ["browser codec", "PESQ-NB"],
        [
            [c, num(v, ".2f") if not isinstance(v, str) else f"failed: `{v[:200]}`"]
            for c, v in pesq.items()
        ]
        or [["–", "not run"]],
    )

    # rtpengine.
    out += ["## rtpengine (userspace)", ""]
    if "error" in rtpe:
        out += [f"**Failed:** `{rtpe['error'][:500]}`", ""]
    out += [
        f"`rtpengine` with no kernel table (`table = -1`), {rtpe.get('threads', '?')} threads,"
        f" idle {num(rtpe.get('idle_core_pct'), '.2f', ' %')} of a core.",
        "",
        "### Plain RTP ↔ RTP (`measure_plain`)",
        "",
        "Raw RTP streams from `bench/rtpstream.py`, echoed; added latency is one way, relay",
        "minus the same streams sent directly (`measure_direct`).",
        "",
    ]
    prow = []
    for p in plain:
        if "error" in p:
            prow.append([str(p.get("calls")), "failed", *["–"] * 5])
            continue
        prow.append(
            [
                str(p["calls"]),
                num(p["core_pct_per_call"], ".3f", " %"),
                num(calls_per_core(p), ".0f"),
                num(p["us_per_packet"], ".1f"),
                num(p.get("forward_loss_pct"), ".3f", " %")
                + " / "
                + num(p.get("back_loss_pct"), ".3f", " %"),
                num(p.get("added_forward_p50_ms"), ".3f", " ms")
                + " / "
                + num(p.get("added_forward_p99_ms"), ".3f", " ms"),
                num(p.get("client_core_pct"), ".0f", " %"),
            ]
        )
    out += _table(
        [
            "calls",
            "% core/call",
            "calls/core",
            "µs/packet",
            "loss fwd / back",
            "added one-way p50 / p99",
            "loadgen",
        ],
        prow,
    ) + _failures(plain)
    out += [f"### WebRTC ↔ RTP ({rtpe.get('webrtc_peers', 'LeanPeer')} peers)", ""]
    if rtpe.get("webrtc_lean_failures"):
        out += ["LeanPeer glue failed; fell back to aiortc peers:", ""]
        out += _failures(rtpe["webrtc_lean_failures"])
    out += _table([*LOAD_HEAD, "loadgen", "machine"], _load_rows(web, False)) + _failures(web)

    # Janus.
    out += ["## Janus SIP plugin", ""]
    if "error" in janus:
        out += [f"**Failed:** `{janus['error'][:500]}`", ""]
    out += [
        "Janus with the SIP plugin and HTTP transport only;"
        f" {janus.get('peers', 'LeanPeer')} peers;",
        "sipp (`answer_echo_long_call.xml`) answers and echoes RTP (sipp's CPU is not",
        f"counted). Idle {num(janus.get('idle_core_pct'), '.2f', ' %')} of a core.",
        "",
    ]
    if janus.get("lean_failures"):
        out += ["LeanPeer glue failed; fell back to aiortc peers:", ""]
        out += _failures(janus["lean_failures"])
    out += _table([*LOAD_HEAD, "loadgen", "machine"], _load_rows(jan, False)) + _failures(jan)
    out += ["## Notes", "", *(f"- {note}" for note in notes(results)), ""]
    if meta.get("plot_error"):
        out += [f"Plot failed: `{meta['plot_error']}`", ""]
    return "\n".join(out)
