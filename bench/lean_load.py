"""LeanPeer load through a comparison gateway (rtpengine, Janus): ``measure_lean``.

The gateway is any ``call(offer_sdp)`` that returns an object with
``answer_sdp`` and ``hangup()`` (``bench.rtpengine.WebrtcGateway.call``,
``bench.janus.JanusGateway.call``). Each call is a ``LeanPeer`` on one
``Endpoint``: offer → gateway → answer → ICE/DTLS → media; the far end
echoes, so PCMU round trips are measured as with ``bench.loadgen``. The
gateway process's CPU (``pid``, less ``idle``) is sampled over the hold.
Every wait is bounded; every call placed is hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from bench.endpoint import Endpoint
from bench.load_report import CallResult, CpuWindow, summarize
from bench.peers import PACKETS_PER_CALL, Gateway
from bench.webrtc_sdp import codec_named

WARMUP = 1.0
ECHO_GRACE = 1.0


async def measure_lean(
    gateway: Gateway,
    pid: int,
    calls: int,
    hold: float,
    idle: float = 0.0,
    *,
    codec: str = "PCMU",
    rate: float = 25.0,
    concurrency: int = 10,
    setup_timeout: float = 20.0,
) -> dict[str, Any]:
    """``calls`` LeanPeers through ``gateway`` (at most ``concurrency`` set-ups at once)."""
    endpoint = Endpoint(slots=4)
    await endpoint.start()
    results = [CallResult(i) for i in range(calls)]
    peers: dict[int, Any] = {}
    placed: list[Any] = []
    gate = asyncio.Semaphore(concurrency)
    audio = codec_named(codec)

    async def one(i: int) -> None:
        r = results[i]
        async with gate:
            peer = await endpoint.open_peer(audio, i)
            peers[i] = peer
            started = time.monotonic()
            try:
                call = await asyncio.wait_for(gateway(peer.offer()), setup_timeout)
            except Exception as exc:
                r.failure = f"gateway: {type(exc).__name__}: {str(exc)[:80]}"
                return
            placed.append(call)
            r.answer_s = time.monotonic() - started
            endpoint.accept_answer(peer, call.answer_sdp)
        deadline = started + setup_timeout
        while peer.state not in ("media", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if peer.state == "media":
            r.media_s = peer.times["media"] - started
            r.connected_s = r.media_s
            r.phase = "media"
        else:
            r.failure = f"{peer.state}: {peer.failure or 'timeout'}"[:100]

    try:
        tasks = []
        for i in range(calls):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(1.0 / rate)
        await asyncio.wait(tasks, timeout=setup_timeout + calls / rate + 10)
        await asyncio.sleep(WARMUP)
        live = {i: p for i, p in peers.items() if p.state == "media"}
        for peer in live.values():
            peer.stream.open_window()
        cpu = CpuWindow(watch=[pid])
        cpu.begin()
        start = time.monotonic()
        await asyncio.sleep(hold)
        wall = time.monotonic() - start
        for peer in live.values():
            peer.stream.close_window()
        window = cpu.end(wall)
        await asyncio.sleep(ECHO_GRACE)
        for i, peer in live.items():
            r = results[i]
            counts = peer.stream.window_counts()
            r.sent, r.echoed = counts.sent, counts.echoed
            r.received, r.expected = counts.received, counts.expected
            r.bytes_received = counts.bytes
            r.jitter_ms, r.jitter_max_ms = counts.jitter_ms, counts.jitter_max_ms
            r.rtts = peer.stream.rtts
            if counts.received == 0:
                r.failure = "no audio during hold"
            else:
                r.phase = "held"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for call in placed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.hangup(), 10)
        endpoint.close()
    summary = summarize(results, {"calls": calls, "codec": codec}, {})
    held = summary["calls"]["held"]
    share = sum(window.get("watched_pct", {}).values()) / 100.0
    per_call = (share - idle) / held if held else float("nan")
    return {
        "calls": calls,
        "held": held,
        "failures": summary["calls"]["failures"],
        "idle_core_pct": idle * 100,
        "core_pct": share * 100,
        "core_pct_per_call": per_call * 100,
        "us_per_packet": per_call * 1e6 / PACKETS_PER_CALL,
        "loadgen_core_pct": window["loadgen_pct"],
        "machine_busy_pct": window["machine_busy_pct"],
        "rx_loss_pct": summary["media"]["rx_loss_pct"],
        "echo_loss_pct": summary["media"].get("echo_loss_pct"),
        "rtt_ms": summary["media"].get("rtt_ms"),
        "setup_ms": summary["setup_ms"]["offer_to_answer"],
    }
