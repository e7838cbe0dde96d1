"""One benchmark run: our bridge beside rtpengine and the Janus SIP plugin.

``make bench`` (``python -m bench.calls``) measures, on this machine, in one run
and with the same LeanPeer streams (PCMU, 20 ms, echoed at the far end):

1. our bridge (``bridge up``, one media worker, ``bench.echo_trunk`` as the
   trunk): media CPU per call, µs per packet, loss, RTT, RSS per call for
   PCMU (relayed as is) and Opus (converted to PCMU); offer → answer at two
   call-attempt rates; PESQ-NB round trips (aiortc client);
2. rtpengine (userspace): plain RTP ↔ RTP relay (``measure_plain``) and
   WebRTC ↔ RTP with LeanPeers;
3. the Janus SIP plugin with LeanPeers and sipp echoing.

It writes docs/benchmarks.md and docs/benchmarks.png (``bench.report``) and the
raw figures to a JSON file (``--json``); ``--report-only JSON`` rewrites the
report from such a file. A system that fails gets a section saying why; the
exit status is 0 whenever the report was written. Numbers are information,
never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import report
from bench.bridge_bench import Bridge, load_point, setup_point
from bench.lean_load import measure_lean
from bench.peers import idle_share, measure_webrtc

REPO = Path(__file__).resolve().parents[1]
AIORTC_FALLBACK = [4, 8, 16]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def failed(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1500]


async def run_bridge(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"pcmu": [], "opus": [], "setup": [], "pesq": {}}
    largest = max([*args.pcmu_calls, *args.opus_calls, args.setup_calls, 1])
    bridge = Bridge(tmp / "bridge", max_calls=largest + 50)
    try:
        await bridge.start()
        out["media_processes"] = len(bridge.media_pids)
        await asyncio.sleep(2.0)
        idle = await bridge.media_idle_share(args.idle)
        idle_rss = bridge.media_rss_kib()
        out["idle_core_pct"], out["idle_rss_kib"] = idle * 100, idle_rss
        for codec, key, points in (
            ("PCMU", "pcmu", args.pcmu_calls),
            ("opus", "opus", args.opus_calls),
        ):
            for calls in points:
                log(f"bridge {codec} {calls} calls")
                try:
                    point = await load_point(bridge, calls, codec, args.hold, idle, idle_rss)
                except Exception as exc:
                    point = {"calls": calls, "error": failed(exc)}
                out[key].append(point)
                log(f"  -> {report.brief(point)}")
                await asyncio.sleep(2.0)
        for rate in args.setup_rates:
            log(f"bridge set-up {args.setup_calls} calls at {rate}/s")
            try:
                out["setup"].append(await setup_point(bridge, args.setup_calls, rate))
            except Exception as exc:
                out["setup"].append({"rate": rate, "error": failed(exc)})
            await asyncio.sleep(2.0)
        if not args.no_pesq:
            from bench.speech import pesq_round_trip, speak

            speech = speak()
            for codec in ("PCMU", "opus"):
                log(f"bridge PESQ {codec}")
                try:
                    score = await asyncio.wait_for(pesq_round_trip(bridge.url, codec, speech), 90)
                    out["pesq"][codec] = score
                except Exception as exc:
                    out["pesq"][codec] = failed(exc)
    except Exception as exc:
        out["error"] = failed(exc)
        out["log_tail"] = bridge.log()[-2000:]
        traceback.print_exc()
    finally:
        bridge.stop()
    return out


async def run_rtpengine(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from bench.rtpengine import Rtpengine, WebrtcGateway, measure_direct, measure_plain, version

    out: dict[str, Any] = {"plain": [], "webrtc": [], "webrtc_peers": "LeanPeer"}
    try:
        out["version"] = version()
        ports = max(2000, 8 * max([*args.rtpengine_calls, 1]))
        with Rtpengine(tmp / "rtpengine", ports=ports) as engine:
            ng = await engine.client()
            try:
                out["threads"] = engine.threads_now()
                idle = await idle_share(engine.pid, args.idle)
                out["idle_core_pct"] = idle * 100
                for calls in args.rtpengine_calls:
                    log(f"rtpengine plain {calls} calls")
                    try:
                        direct = await measure_direct(calls, args.compare_hold)
                        plain = await measure_plain(engine, ng, calls, args.compare_hold, idle)
                        for q in ("p50", "p99"):
                            plain[f"added_forward_{q}_ms"] = (
                                plain[f"forward_{q}_ms"] - direct[f"forward_{q}_ms"]
                            )
                            plain[f"added_back_{q}_ms"] = (
                                plain[f"back_{q}_ms"] - direct[f"back_{q}_ms"]
                            )
                        plain.pop("silent_detail", None)
                    except Exception as exc:
                        plain = {"calls": calls, "error": failed(exc)}
                    out["plain"].append(plain)
                    log(f"  -> {report.brief(plain)}")
                for calls in args.rtpengine_calls:
                    log(f"rtpengine WebRTC (LeanPeer) {calls} calls")
                    try:
                        run = await measure_lean(
                            WebrtcGateway(ng).call, engine.pid, calls, args.compare_hold, idle
                        )
                    except Exception as exc:
                        run = {"calls": calls, "error": failed(exc)}
                    out["webrtc"].append(run)
                    log(f"  -> {report.brief(run)}")
                if not any(r.get("held") for r in out["webrtc"]):
                    out["webrtc_peers"] = "aiortc (LeanPeer glue failed)"
                    out["webrtc_lean_failures"] = out["webrtc"]
                    out["webrtc"] = []
                    for calls in AIORTC_FALLBACK:
                        log(f"rtpengine WebRTC (aiortc) {calls} calls")
                        try:
                            run = await measure_webrtc(
                                WebrtcGateway(ng).call, engine.pid, calls, args.compare_hold, idle
                            )
                        except Exception as exc:
                            run = {"calls": calls, "error": failed(exc)}
                        out["webrtc"].append(run)
            finally:
                ng.close()
    except Exception as exc:
        out["error"] = failed(exc)
        traceback.print_exc()
    return out


async def _janus_point(janus: Any, tmp: Path, calls: int, hold: float, idle: float, lean: bool):  # type: ignore[no-untyped-def]
    from bench.janus import JanusClient, JanusGateway
    from tests.integration.harness import Sipp

    sipp = Sipp("answer_echo_long_call.xml", tmp, calls=calls).start()
    client = await JanusClient(janus.url).connect()
    try:
        gateway = JanusGateway(client, sipp.port).call
        if lean:
            return await measure_lean(gateway, janus.pid, calls, hold, idle, rate=20.0)
        return await measure_webrtc(gateway, janus.pid, calls, hold, idle)
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await sipp.wait(5)
        sipp.stop()


async def run_janus(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from bench.janus import Janus, version

    out: dict[str, Any] = {"runs": [], "peers": "LeanPeer"}
    try:
        out["version"] = version()
        ports = max(400, 4 * max([*args.janus_calls, 1]))
        with Janus(tmp / "janus", ports=ports) as janus:
            idle = await idle_share(janus.pid, args.idle)
            out["idle_core_pct"] = idle * 100
            for calls in args.janus_calls:
                log(f"janus (LeanPeer) {calls} calls")
                try:
                    run = await _janus_point(janus, tmp, calls, args.compare_hold, idle, True)
                except Exception as exc:
                    run = {"calls": calls, "error": failed(exc)}
                out["runs"].append(run)
                log(f"  -> {report.brief(run)}")
            if not any(r.get("held") for r in out["runs"]):
                out["peers"] = "aiortc (LeanPeer glue failed)"
                out["lean_failures"] = out["runs"]
                out["runs"] = []
                for calls in AIORTC_FALLBACK:
                    log(f"janus (aiortc) {calls} calls")
                    try:
                        run = await _janus_point(janus, tmp, calls, args.compare_hold, idle, False)
                    except Exception as exc:
                        run = {"calls": calls, "error": failed(exc)}
                    out["runs"].append(run)
    except Exception as exc:
        out["error"] = failed(exc)
        traceback.print_exc()
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__.split("\n\n")[0])
    p.add_argument("--pcmu-calls", type=int, nargs="*", default=[50, 100, 200, 300])
    p.add_argument("--opus-calls", type=int, nargs="*", default=[25, 50, 100])
    p.add_argument("--hold", type=float, default=20.0, help="seconds each bridge point is held")
    p.add_argument("--setup-calls", type=int, default=100)
    p.add_argument("--setup-rates", type=float, nargs="*", default=[10.0, 50.0])
    p.add_argument("--rtpengine-calls", type=int, nargs="*", default=[50, 100, 200])
    p.add_argument("--janus-calls", type=int, nargs="*", default=[50, 100, 200])
    p.add_argument("--compare-hold", type=float, default=10.0, help="seconds, rtpengine/Janus")
    p.add_argument("--idle", type=float, default=3.0, help="seconds idle CPU is sampled")
    p.add_argument("--no-pesq", action="store_true")
    p.add_argument("--skip", nargs="*", default=[], choices=["bridge", "rtpengine", "janus"])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "bench-calls.json")
    p.add_argument("--report-only", type=Path, help="write the report from this JSON, no run")
    return p.parse_args(argv)


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": report.environment(), "config": vars(args).copy()}
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as tmp_name:
        tmp = Path(tmp_name)
        for name, runner in (
            ("bridge", run_bridge),
            ("rtpengine", run_rtpengine),
            ("janus", run_janus),
        ):
            if name in args.skip:
                results[name] = {"error": "skipped (--skip)"}
                continue
            log(f"== {name}")
            results[name] = await runner(args, tmp)
    results["meta"]["duration_s"] = round(time.monotonic() - started)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        results = json.loads(args.report_only.read_text())
    else:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(run_all(args))
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2, default=str))
            log(f"raw results in {args.json}")
        except OSError as exc:
            log(f"raw results not written: {exc}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.write(results, args.out)
    log(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
