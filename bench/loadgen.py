"""Hold many WebRTC calls against the bridge and measure them: ``python -m bench.loadgen``.

    python -m bench.loadgen --url http://127.0.0.1:8080 --calls 300 --codec PCMU \\
        --ramp 20/s --hold 30

Each call is a ``LeanPeer`` (``bench.webrtc_peer``) on one ``Endpoint``
(one uvloop event loop, one 20 ms tick for all peers, spread over
``--slots`` sub-ticks) and a WebSocket of the bridge's protocol
(``bench.signaling_call``). The run: start calls at the ramp rate; wait until
each has media or failed; measure for ``--hold`` seconds (loss, jitter, round
trips of the echoed PCMU tags, CPU); hang all up. It prints one JSON summary
(``bench.load_report``) and exits 0, or 1 when no call held. Every wait is
bounded; only the given URL is contacted.

Round trips need a trunk that echoes: ``bridge up`` without a trunk starts the
demo echo peer, which takes at most 200 calls; ``bench.echo_trunk`` is the
same peer without that limit. A 300-call run takes about 50 s (15 s ramp,
1 s warm-up, 30 s hold, 1 s for late echoes, 1-2 s of hang-ups).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import aiohttp

from bench.endpoint import Endpoint
from bench.load_report import CallResult, CpuWindow, summarize
from bench.signaling_call import SignalingCall
from bench.webrtc_peer import LeanPeer
from bench.webrtc_sdp import AudioCodec, codec_named

SETUP_TIMEOUT = 20.0
"Offer to media, at most; a call slower than this fails (``timeout: ...``)."
SETTLE_POLL = 0.05
ECHO_GRACE = 1.0
"After the window closes, echoes of packets sent in it still count this long."
WARMUP = 1.0
"Media time every call gets before the window opens."


def parse_rate(text: str) -> float:
    """``20/s``, ``20`` or ``5/min`` → calls per second."""
    value, _, unit = text.partition("/")
    rate = float(value)
    unit = unit.strip().lower() or "s"
    if unit in ("s", "sec", "second"):
        return rate
    if unit in ("m", "min", "minute"):
        return rate / 60.0
    raise ValueError(f"bad rate {text!r}: use 20/s")


class LoadGenerator:
    """Ramps up, holds and ends ``calls`` calls; ``run`` returns the summary."""

    def __init__(
        self,
        url: str,
        calls: int,
        codec: AudioCodec,
        rate: float,
        hold: float,
        *,
        destination: str | None = None,
        shared_sockets: int = 0,
        slots: int = 4,
        watch: list[int] | None = None,
        setup_timeout: float = SETUP_TIMEOUT,
    ) -> None:
        self.url = url
        self.calls = calls
        self.codec = codec
        self.rate = rate
        self.hold = hold
        self.destination = destination
        self.setup_timeout = setup_timeout
        self.endpoint = Endpoint(shared=shared_sockets, slots=slots)
        self.cpu = CpuWindow(watch=list(watch or []))
        self.results = [CallResult(i) for i in range(calls)]
        self._peers: dict[int, LeanPeer] = {}
        self._signaling: dict[int, SignalingCall] = {}
        self._settled: list[asyncio.Future[None]] = []
        self._stop: asyncio.Event | None = None
        self._config = {
            "url": url,
            "calls": calls,
            "codec": codec.name,
            "ramp_per_s": rate,
            "hold_s": hold,
            "sockets": f"shared x{shared_sockets}" if shared_sockets else "one per call",
            "slots": slots,
        }

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._settled = [loop.create_future() for _ in range(self.calls)]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            await self.endpoint.start()
            tasks: list[asyncio.Task[None]] = []
            try:
                for i in range(self.calls):
                    tasks.append(asyncio.create_task(self._call(http, i)))
                    await asyncio.sleep(1.0 / self.rate)
                ramped = time.monotonic()
                await asyncio.wait(self._settled, timeout=self.setup_timeout + 5)
                settled = time.monotonic()
                window = await self._measure()
                self._stop.set()
                ending = time.monotonic()
                await asyncio.wait(tasks, timeout=15.0)
                ended = time.monotonic()
            finally:
                self._stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.endpoint.close()
        scheduled = window["wall"] / self.endpoint.period
        sent = [r.sent for r in self.results if r.phase == "held"]
        extra = {
            "sent_vs_schedule_pct": (
                round(100.0 * sum(sent) / len(sent) / scheduled, 1) if sent else None
            ),
            "cpu": window["cpu"],
            "loadgen_cpu_pct_per_call": window["per_call"],
            "ticks": {
                "count": self.endpoint.ticks,
                "late_over_5ms": self.endpoint.late_ticks,
                "max_late_ms": round(1000 * self.endpoint.max_late, 1),
                "resyncs": self.endpoint.resyncs,
            },
            "timing_s": {
                "ramp": round(ramped - started, 1),
                "settle": round(settled - ramped, 1),
                "hold": round(window["wall"], 1),
                "hangup": round(ended - ending, 1),
                "total": round(ended - started, 1),
            },
        }
        if self.endpoint.shared:
            extra["unknown_datagrams"] = self.endpoint.unknown_datagrams
        return summarize(self.results, self._config, extra)

    async def _measure(self) -> dict[str, Any]:
        """Open every held call's window, wait ``hold``, close them, wait for late echoes."""
        await asyncio.sleep(WARMUP)
        live = {i: p for i, p in self._peers.items() if p.state == "media"}
        for peer in live.values():
            peer.stream.open_window()
        self.cpu.begin()
        start = time.monotonic()
        await asyncio.sleep(self.hold)
        wall = time.monotonic() - start
        for peer in live.values():
            peer.stream.close_window()
        cpu = self.cpu.end(wall)
        await asyncio.sleep(ECHO_GRACE)
        for i, peer in live.items():
            r = self.results[i]
            if peer.state != "media" or r.failure:
                if not r.failure:
                    r.failure = f"during hold: {peer.failure or peer.state}"
                continue
            counts = peer.stream.window_counts()
            r.sent, r.echoed = counts.sent, counts.echoed
            r.received, r.expected = counts.received, counts.expected
            r.bytes_received = counts.bytes
            r.jitter_ms, r.jitter_max_ms = counts.jitter_ms, counts.jitter_max_ms
            r.rtts = peer.stream.rtts
            r.misrouted = peer.stream.misrouted
            r.srtp_errors = peer.srtp_error_kinds
            if counts.received == 0:
                r.failure = "no audio from the bridge during hold"
            else:
                r.phase = "held"
        for r in self.results:
            if r.index not in live and not r.failure:
                r.failure = "not up when the hold began"
        per_call = round(cpu["loadgen_pct"] / len(live), 3) if live else None
        return {"cpu": cpu, "wall": wall, "per_call": per_call}

    async def _call(self, http: aiohttp.ClientSession, i: int) -> None:
        r = self.results[i]
        settled = self._settled[i]
        signaling = SignalingCall(http, self.url)
        self._signaling[i] = signaling
        peer: LeanPeer | None = None
        deadline = time.monotonic() + self.setup_timeout
        try:
            r.phase = "ws"
            try:
                await asyncio.wait_for(signaling.open(), self.setup_timeout)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                r.failure = f"ws: {type(exc).__name__}"
                return
            peer = await self.endpoint.open_peer(self.codec, i)
            self._peers[i] = peer
            r.phase = "offer"
            await signaling.offer(peer.offer(), self.destination)
            offered = signaling.times["offer"]
            try:
                answer = await asyncio.wait_for(signaling.answer, deadline - time.monotonic())
            except TimeoutError:
                r.failure = "timeout: no answer"
                return
            except (RuntimeError, ConnectionError) as exc:
                r.failure = str(exc)
                return
            r.answer_s = signaling.times["answer"] - offered
            self.endpoint.accept_answer(peer, answer)
            r.phase = "answer"
            failure = await self._until_media(peer, signaling, deadline)
            if peer.state == "media":
                r.media_s = peer.times["media"] - offered
            if signaling.connected.done() and signaling.connected.exception() is None:
                r.connected_s = signaling.times["connected"] - offered
            if failure:
                r.failure = failure
                return
            r.phase = "media"
            settled.set_result(None)
            assert self._stop is not None
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stop, signaling.ended], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if signaling.ended.done() and not self._stop.is_set():
                ended = signaling.ended.result()
                r.failure = f"ended during hold: {ended.get('cause') or ended.get('code')}"
        finally:
            if not settled.done():
                settled.set_result(None)
            if peer is not None:
                self.endpoint.close_peer(peer)
            with contextlib.suppress(Exception):
                ended = await signaling.hangup()
                if ended:
                    r.end_cause = str(ended.get("cause") or ended.get("code") or ended["type"])
            await signaling.close()

    async def _until_media(self, peer: LeanPeer, signaling: SignalingCall, deadline: float) -> str:
        """Wait for both ``connected`` and SRTP keys; the failure, or ``""``."""
        while time.monotonic() < deadline:
            if signaling.connected.done():
                if signaling.connected.exception() is not None:
                    return str(signaling.connected.exception())
                if peer.state == "media":
                    return ""
            if peer.state == "failed":
                return f"{'dtls' if peer.dtls and peer.dtls.failure else 'ice'}: {peer.failure}"
            await asyncio.sleep(SETTLE_POLL)
        if not signaling.connected.done():
            return "timeout: no connected"
        return f"timeout: media not up (peer {peer.state})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", required=True, help="the bridge's page, http://127.0.0.1:PORT")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--codec", default="PCMU", help="PCMU or opus")
    parser.add_argument("--ramp", default="20/s", help="calls started per second: 20/s")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--destination", default=None)
    parser.add_argument(
        "--shared-sockets", type=int, default=0, help="N shared UDP sockets (0: one per call)"
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=4,
        help="peers spread over this many sub-ticks of the 20 ms tick (1: all in one burst)",
    )
    parser.add_argument(
        "--watch-pid", type=int, action="append", default=[], help="report CPU of this tree"
    )
    parser.add_argument("--setup-timeout", type=float, default=SETUP_TIMEOUT)
    args = parser.parse_args(argv)
    generator = LoadGenerator(
        args.url,
        args.calls,
        codec_named(args.codec),
        parse_rate(args.ramp),
        args.hold,
        destination=args.destination,
        shared_sockets=args.shared_sockets,
        slots=args.slots,
        watch=args.watch_pid,
        setup_timeout=args.setup_timeout,
    )
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    summary = runner(generator.run())
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if summary["calls"]["held"] else 1


if __name__ == "__main__":
    sys.exit(main())
