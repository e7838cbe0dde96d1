"""rtpengine (userspace) as a comparison point: its process, an ng client, two call modes.

``Rtpengine`` runs Debian's ``rtpengine`` in the foreground as a child with a
generated config: no kernel forwarding (``table = -1``), media on 127.0.0.1
only, the ng control port on a free 127.0.0.1 port, a port range, log to a
file. ``NgClient`` speaks the ng protocol (``<cookie> <bencoded dict>`` over
UDP). Two modes, each an offer then an answer on one call:

- ``PLAIN``: RTP/AVP on both sides, the relay's passthrough cost.
- ``WEBRTC``: the offerer is a WebRTC peer (ICE, DTLS-SRTP, rtcp-mux); the far
  side gets plain RTP/AVP and the answer goes back as UDP/TLS/RTP/SAVPF with
  ICE. This is the same job the bridge's media tier does for a PCMU call.

``python -m bench.rtpengine`` measures plain relaying at N concurrent calls
(CPU per call and per packet, loss, one-way delay against a direct baseline)
and proves the WebRTC mode end to end with aiortc peers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import bencode
from bench.daemon import Daemon
from bench.peers import describe_webrtc, idle_share, measure_webrtc
from bench.ports import free_port, free_port_range
from bench.procstat import Window
from bench.rtpstream import (
    PTIME,
    EchoProtocol,
    RtpLoad,
    audio_address,
    describe,
    open_echo,
    plain_sdp,
)

BINARY = "rtpengine"
NG_TIMEOUT = 2.0
NG_ATTEMPTS = 3

# Offer/answer options by mode. PLAIN passes RTP/AVP through untouched.
PLAIN_OFFER: dict[str, Any] = {"replace": ["origin", "session-connection"]}
PLAIN_ANSWER: dict[str, Any] = {"replace": ["origin", "session-connection"]}
# WebRTC offerer → plain RTP far end; the answer back is WebRTC again.
WEBRTC_OFFER: dict[str, Any] = {
    "ICE": "remove",
    # The WebRTC side's DTLS starts with the offer (ICE checks run at once): passive from
    # then on, or rtpengine sends a ClientHello that the browser, a client too, rejects.
    "DTLS": "passive",
    "SDES": ["off"],
    "transport-protocol": "RTP/AVP",
    "rtcp-mux": ["demux"],
    "replace": ["origin", "session-connection"],
}
WEBRTC_ANSWER: dict[str, Any] = {
    "ICE": "force",
    "DTLS": "passive",
    "SDES": ["off"],
    "transport-protocol": "UDP/TLS/RTP/SAVPF",
    "rtcp-mux": ["require"],
    "replace": ["origin", "session-connection"],
}
MODES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "plain": (PLAIN_OFFER, PLAIN_ANSWER),
    "webrtc": (WEBRTC_OFFER, WEBRTC_ANSWER),
}


def config_text(
    *,
    ng_port: int,
    port_min: int,
    port_max: int,
    interface: str = "127.0.0.1",
    threads: int | None = None,
    log_level: int = 5,
) -> str:
    """An rtpengine config file (section ``[rtpengine]``) for a userspace-only loopback relay."""
    lines = [
        "[rtpengine]",
        "table = -1",  # no kernel forwarding table: every packet goes through userspace
        f"interface = {interface}",
        f"listen-ng = {interface}:{ng_port}",
        f"port-min = {port_min}",
        f"port-max = {port_max}",
        "foreground = true",
        "log-stderr = true",
        f"log-level = {log_level}",
        "timeout = 60",
        "silent-timeout = 3600",
        "delete-delay = 0",
        # A WebRTC offer's ICE checks start at once, before the answer: in the default
        # active DTLS role rtpengine then sends a ClientHello that the browser, which
        # becomes the client once it has the answer, takes for an unexpected message.
        "dtls-passive = true",
    ]
    if threads is not None:
        lines.append(f"num-threads = {threads}")
    return "\n".join(lines) + "\n"


class NgError(RuntimeError):
    """rtpengine answered ``result: error`` (its ``error-reason`` is the message)."""


def encode_message(cookie: str, message: Mapping[str, Any]) -> bytes:
    return cookie.encode() + b" " + bencode.encode(message)


def decode_message(data: bytes) -> tuple[str, dict[str, Any]]:
    """(cookie, dictionary) of an ng datagram; strings decoded as UTF-8."""
    cookie, sep, body = data.partition(b" ")
    if not sep:
        raise bencode.BencodeError("no space after the cookie")
    value = bencode.decode(body, text=True)
    if not isinstance(value, dict):
        raise bencode.BencodeError("the body is not a dictionary")
    return cookie.decode(errors="replace"), value


class NgClient(asyncio.DatagramProtocol):
    """The ng protocol over UDP: one request per cookie, resent on silence.

    rtpengine remembers the reply to a cookie for a while, so a resent request
    is answered, not done twice.
    """

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._cookies = itertools.count(1)
        self._prefix = f"{os.getpid()}-{uuid.uuid4().hex[:6]}-"

    @classmethod
    async def open(cls, host: str, port: int) -> NgClient:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(cls, remote_addr=(host, port))
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            cookie, reply = decode_message(data)
        except bencode.BencodeError:
            return
        future = self._pending.get(cookie)
        if future is not None and not future.done():
            future.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)

    async def request(
        self,
        command: str,
        params: Mapping[str, Any] | None = None,
        timeout: float = NG_TIMEOUT,
        attempts: int = NG_ATTEMPTS,
    ) -> dict[str, Any]:
        assert self.transport is not None, "open() first"
        cookie = f"{self._prefix}{next(self._cookies)}"
        data = encode_message(cookie, {"command": command, **(params or {})})
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[cookie] = future
        try:
            for _ in range(attempts):
                self.transport.sendto(data)
                with contextlib.suppress(TimeoutError):
                    reply = await asyncio.wait_for(asyncio.shield(future), timeout)
                    break
            else:
                raise TimeoutError(f"no ng reply to {command} after {attempts} tries")
        finally:
            del self._pending[cookie]
        if reply.get("result") == "error":
            raise NgError(f"{command}: {reply.get('error-reason', reply)}")
        return reply

    async def ping(self) -> None:
        reply = await self.request("ping", timeout=0.5, attempts=1)
        if reply.get("result") != "pong":
            raise NgError(f"ping: {reply}")

    async def offer(
        self, call_id: str, from_tag: str, sdp: str, options: Mapping[str, Any] | None = None
    ) -> str:
        params = {**(options or {}), "call-id": call_id, "from-tag": from_tag, "sdp": sdp}
        return str((await self.request("offer", params))["sdp"])

    async def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: str,
        options: Mapping[str, Any] | None = None,
    ) -> str:
        params = {
            **(options or {}),
            "call-id": call_id,
            "from-tag": from_tag,
            "to-tag": to_tag,
            "sdp": sdp,
        }
        return str((await self.request("answer", params))["sdp"])

    async def delete(self, call_id: str, from_tag: str | None = None) -> dict[str, Any]:
        params = {"call-id": call_id}
        if from_tag is not None:
            params["from-tag"] = from_tag
        return await self.request("delete", params)

    async def query(self, call_id: str) -> dict[str, Any]:
        return await self.request("query", {"call-id": call_id})

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Rtpengine(Daemon):
    """``rtpengine`` as a child process, configured by ``config_text``."""

    workdir: Path
    port_min: int = 0
    port_max: int = 0
    "Media port range; 0: a free range of ``ports`` ports found at start."
    ports: int = 2000
    threads: int | None = None
    log_level: int = 5
    ng_port: int = 0
    popen: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "rtpengine.log"

    def start(self, timeout: float = 10.0) -> Rtpengine:
        if self.popen is not None:
            raise RuntimeError("already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port_min:
            self.port_min, self.port_max = free_port_range(self.ports)
        self.ng_port = self.ng_port or free_port(socket.SOCK_DGRAM)
        config = self.workdir / "rtpengine.conf"
        config.write_text(
            config_text(
                ng_port=self.ng_port,
                port_min=self.port_min,
                port_max=self.port_max,
                threads=self.threads,
                log_level=self.log_level,
            )
        )
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [BINARY, f"--config-file={config}", "--config-section=rtpengine"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                log_text = self.log()
                self.stop()
                raise RuntimeError(f"rtpengine did not start:\n{log_text}")
            time.sleep(0.05)
        return self

    def _answers_ping(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(
                    encode_message("start", {"command": "ping"}), ("127.0.0.1", self.ng_port)
                )
                _, reply = decode_message(sock.recv(4096))
            except (OSError, bencode.BencodeError):
                return False
        return reply.get("result") == "pong"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def client(self, timeout: float = 5.0) -> NgClient:
        """An ng client, once rtpengine answers ping."""
        ng = await NgClient.open("127.0.0.1", self.ng_port)
        deadline = time.monotonic() + timeout
        while True:
            try:
                await ng.ping()
                return ng
            except (TimeoutError, OSError, NgError):
                if time.monotonic() > deadline:
                    ng.close()
                    raise
                await asyncio.sleep(0.1)

    def __enter__(self) -> Rtpengine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def version() -> str:
    out = subprocess.run([BINARY, "--version"], capture_output=True, text=True, check=False)
    text = (out.stdout + out.stderr).strip()
    match = re.search(r"Version:\s*(\S+)", text)
    return match.group(1) if match else text


FarEnd = Callable[[str], Awaitable[str]]
"Takes the SDP rtpengine offers the far side; returns the far side's answer SDP."


@dataclass
class RelayCall:
    """One call through rtpengine: offer and answer done, ``hangup()`` deletes it."""

    ng: NgClient
    call_id: str
    from_tag: str
    to_tag: str
    far_offer_sdp: str
    "What rtpengine offered the far side."
    answer_sdp: str
    "What rtpengine answered the offerer."
    far_end: Any = None
    totals: dict[str, Any] = field(default_factory=dict)

    async def hangup(self) -> dict[str, Any]:
        """Delete the call; rtpengine's counters of it (its ``totals``) are kept."""
        reply = await self.ng.delete(self.call_id, self.from_tag)
        self.totals = reply.get("totals", {})
        if isinstance(self.far_end, EchoProtocol) and self.far_end.transport is not None:
            self.far_end.transport.close()
        return reply


async def relay_call(
    ng: NgClient, offer_sdp: str, far_end: FarEnd, mode: str = "webrtc"
) -> RelayCall:
    """Offer ``offer_sdp`` through rtpengine, let ``far_end`` answer, answer back."""
    offer_options, answer_options = MODES[mode]
    call_id = f"bench-{uuid.uuid4().hex}"
    from_tag, to_tag = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    far_offer = await ng.offer(call_id, from_tag, offer_sdp, offer_options)
    try:
        far_answer = await far_end(far_offer)
        answer = await ng.answer(call_id, from_tag, to_tag, far_answer, answer_options)
    except BaseException:
        with contextlib.suppress(Exception):
            await ng.delete(call_id, from_tag)
        raise
    return RelayCall(ng, call_id, from_tag, to_tag, far_offer, answer)


class WebrtcGateway:
    """rtpengine in WEBRTC mode with an RTP echo as every call's far end.

    ``call(offer_sdp)`` takes a WebRTC peer's offer and returns a ``RelayCall``
    whose ``answer_sdp`` the peer applies; the peer hears its own audio back.
    With ``far_end`` (e.g. the SDP of an echo elsewhere) that answers instead
    of an echo socket in this process.
    """

    def __init__(self, ng: NgClient, far_end: FarEnd | None = None) -> None:
        self.ng = ng
        self.far_end = far_end

    async def call(self, offer_sdp: str) -> RelayCall:
        if self.far_end is not None:
            return await relay_call(self.ng, offer_sdp, self.far_end, "webrtc")
        echo = await open_echo()
        assert echo.transport is not None
        port = int(echo.transport.get_extra_info("sockname")[1])

        async def answer(_far_offer: str) -> str:
            return plain_sdp(port)

        try:
            call = await relay_call(self.ng, offer_sdp, answer, "webrtc")
        except BaseException:
            echo.transport.close()
            raise
        call.far_end = echo
        return call


async def setup_plain_calls(ng: NgClient, load: RtpLoad) -> list[RelayCall]:
    """Every stream pair of ``load`` as a PLAIN call: A offers, B answers, A sends to rtpengine."""
    calls = []
    for pair in load.pairs:

        async def far(far_offer: str, port: int = pair.echo_port) -> str:
            return plain_sdp(port)

        call = await relay_call(ng, plain_sdp(pair.caller_port), far, "plain")
        pair.target = audio_address(call.answer_sdp)
        calls.append(call)
    return calls


async def measure_plain(
    engine: Rtpengine, ng: NgClient, calls: int, hold: float, idle: float = 0.0
) -> dict[str, Any]:
    """``calls`` concurrent PCMU streams relayed by rtpengine, echoed, for ``hold`` seconds.

    ``idle``: rtpengine's share of a core with no calls, subtracted.
    """
    load = await RtpLoad().open(calls)
    relayed: list[RelayCall] = []
    try:
        relayed = await setup_plain_calls(ng, load)
        window = Window(engine.pid)
        run = asyncio.create_task(load.run(hold + 1.0, warmup=1.0))
        await asyncio.sleep(1.5)  # warm-up plus half a second
        window.start()
        await asyncio.sleep(hold)
        window.stop()
        await run
        silent = [
            {
                "pair": (pair.caller_port, pair.echo_port, pair.target),
                "query": await ng.query(c.call_id),
            }
            for pair, c in zip(load.pairs, relayed, strict=True)
            if load.stats.per_call[pair.index] == 0
        ]
    finally:
        totals = 0
        for call in relayed:
            await call.hangup()
            totals += _packets(call.totals)
        load.close()
    per_second = calls * 2 / PTIME  # both directions
    busy = window.pid_share
    result: dict[str, Any] = {
        "calls": calls,
        "idle_core_pct": idle * 100,
        "core_pct": busy * 100,
        "core_pct_per_call": (busy - idle) / calls * 100,
        "us_per_packet": (busy - idle) * 1e6 / per_second,
        "client_core_pct": window.own_share * 100,
        "machine_busy_pct": window.machine_busy * 100,
        "rtpengine_counted_packets": totals,
        **load.stats.summary(),
    }
    if silent:
        result["silent_detail"] = silent[:3]
    return result


async def measure_direct(calls: int, hold: float) -> dict[str, Any]:
    """The same streams with no relay (A sends to B): the generator's own delay and CPU."""
    load = await RtpLoad().open(calls)
    try:
        for pair in load.pairs:
            pair.target = pair.echo_address
        window = Window(os.getpid())
        run = asyncio.create_task(load.run(hold + 1.0, warmup=1.0))
        await asyncio.sleep(1.5)
        window.start()
        await asyncio.sleep(hold)
        window.stop()
        await run
    finally:
        load.close()
    return {
        "calls": calls,
        "client_core_pct": window.own_share * 100,
        "machine_busy_pct": window.machine_busy * 100,
        **load.stats.summary(),
    }


def _packets(totals: Mapping[str, Any]) -> int:
    rtp = totals.get("RTP", {}) if isinstance(totals, Mapping) else {}
    return int(rtp.get("packets", 0)) if isinstance(rtp, Mapping) else 0


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument(
        "--webrtc-calls", type=int, nargs="*", default=[4, 8, 16], help="aiortc calls (none: skip)"
    )
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle CPU is sampled")
    parser.add_argument("--threads", type=int, default=None, help="rtpengine num-threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"version": version(), "plain": [], "direct": [], "webrtc": []}
    with tempfile.TemporaryDirectory(prefix="bench-rtpengine-") as tmp:
        engine = Rtpengine(Path(tmp), threads=args.threads, ports=max(2000, 8 * max(args.calls)))
        with engine:
            ng = await engine.client()
            results["threads"] = engine.threads_now()
            idle = await idle_share(engine.pid, args.idle)
            results["idle_core_pct"] = idle * 100
            try:
                for calls in args.calls:
                    direct = await measure_direct(calls, args.hold)
                    plain = await measure_plain(engine, ng, calls, args.hold, idle)
                    plain["added_forward_p50_ms"] = (
                        plain["forward_p50_ms"] - direct["forward_p50_ms"]
                    )
                    plain["added_back_p50_ms"] = plain["back_p50_ms"] - direct["back_p50_ms"]
                    results["direct"].append(direct)
                    results["plain"].append(plain)
                    print(
                        f"{calls} calls: rtpengine {plain['core_pct_per_call']:.3f} %/call,"
                        f" {plain['us_per_packet']:.2f} µs/packet ({plain['core_pct']:.1f} % total,"
                        f" idle {plain['idle_core_pct']:.2f} %), client"
                        f" {plain['client_core_pct']:.0f} %, machine"
                        f" {plain['machine_busy_pct']:.0f} %\n  relayed: {describe(plain)}"
                        f"\n  direct:  {describe(direct)}",
                        flush=True,
                    )
                for calls in args.webrtc_calls:
                    run = await measure_webrtc(
                        WebrtcGateway(ng).call, engine.pid, calls, args.hold, idle
                    )
                    results["webrtc"].append(run)
                    print(f"rtpengine webrtc ↔ rtp (aiortc) {describe_webrtc(run)}", flush=True)
            except Exception:
                print(engine.log()[-4000:], file=sys.stderr)
                raise
            finally:
                ng.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def run(argv: list[str] | None = None) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main(argv))


if __name__ == "__main__":
    sys.exit(run())
