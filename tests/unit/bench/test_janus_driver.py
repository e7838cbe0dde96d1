"""The Janus driver without Janus: its config files and its HTTP API flow against a fake."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bench import janus as janus_mod
from bench.janus import (
    JanusClient,
    JanusError,
    JanusGateway,
    build_loopback_shim,
    core_config,
    http_config,
    plugin_result,
    sip_config,
    sip_event,
    write_config,
)


def test_core_config_loads_only_its_own_module_folders(tmp_path: Path) -> None:
    text = core_config(tmp_path, rtp_range=(20000, 20399), debug_level=3)
    assert f'plugins_folder = "{tmp_path / "plugins"}"' in text
    assert f'transports_folder = "{tmp_path / "transports"}"' in text
    assert f'events_folder = "{tmp_path / "events"}"' in text
    assert 'rtp_port_range = "20000-20399"' in text
    assert 'ice_enforce_list = "127.0.0.1"' in text
    assert "debug_level = 3" in text
    assert "broadcast = false" in text
    for name in ("libjanus_websockets.so", "libjanus_rabbitmq.so", "libjanus_mqtt.so"):
        assert name in text
    assert "libjanus_pfunix.so" in text and "libjanus_nanomsg.so" in text
    assert "stun_server" not in text and "nat_1_1_mapping" not in text


def test_http_config_is_loopback_without_admin() -> None:
    text = http_config(18088)
    assert "port = 18088" in text
    assert 'ip = "127.0.0.1"' in text
    assert "admin_http = false" in text
    assert "https = false" in text


def test_sip_config() -> None:
    text = sip_config((30000, 30399))
    assert 'local_ip = "127.0.0.1"' in text
    assert 'rtp_port_range = "30000-30399"' in text
    assert "sdp_ip" not in text


def test_write_config_links_only_sip_and_http(tmp_path: Path, monkeypatch: Any) -> None:
    fake = tmp_path / "lib"
    for sub, names in {
        "plugins": ["libjanus_sip.so", "libjanus_echotest.so"],
        "transports": ["libjanus_http.so", "libjanus_websockets.so"],
    }.items():
        (fake / sub).mkdir(parents=True)
        for name in names:
            (fake / sub / name).write_bytes(b"")
    monkeypatch.setattr(janus_mod, "LIB_DIR", fake)
    core = write_config(
        tmp_path / "conf", http_port=1, ice_range=(2, 3), sip_rtp_range=(4, 5), debug_level=2
    )
    conf = tmp_path / "conf"
    assert core == conf / "janus.jcfg"
    assert sorted(p.name for p in (conf / "plugins").iterdir()) == ["libjanus_sip.so"]
    assert sorted(p.name for p in (conf / "transports").iterdir()) == ["libjanus_http.so"]
    assert list((conf / "events").iterdir()) == []
    assert (conf / "janus.plugin.sip.jcfg").exists()
    assert (conf / "janus.transport.http.jcfg").exists()


def _event(result: dict[str, Any] | None = None, **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"sip": "event", **data}
    if result is not None:
        body["result"] = result
    return {"janus": "event", "plugindata": {"plugin": "janus.plugin.sip", "data": body}}


def test_event_parsing() -> None:
    assert sip_event(_event({"event": "accepted"})) == "accepted"
    assert sip_event({"janus": "webrtcup"}) is None
    assert sip_event(_event(error_code=448, error="Invalid element")) == "error"
    assert plugin_result(_event({"event": "registered", "username": "a"}))["username"] == "a"
    with pytest.raises(JanusError, match="448"):
        plugin_result(_event(error_code=448, error="Invalid element"))


class FakeJanus:
    """Enough of Janus's HTTP API and SIP plugin for one call: events by long poll."""

    def __init__(self, reject: bool = False) -> None:
        self.reject = reject
        self.requests: list[dict[str, Any]] = []
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.next_id = 1000

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/janus", self.create)
        app.router.add_post("/janus/{session}", self.session)
        app.router.add_get("/janus/{session}", self.poll)
        app.router.add_post("/janus/{session}/{handle}", self.handle)
        return app

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        return web.json_response({"janus": "success", "data": {"id": 1}})

    async def session(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if body["janus"] == "attach":
            assert body["plugin"] == "janus.plugin.sip"
            return web.json_response({"janus": "success", "data": {"id": self._id()}})
        return web.json_response({"janus": "ack"})

    async def poll(self, request: web.Request) -> web.Response:
        assert request.query.get("maxev")
        try:
            event = await asyncio.wait_for(self.events.get(), 1.0)
        except TimeoutError:
            return web.json_response([{"janus": "keepalive"}])
        return web.json_response([event])

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        handle = int(request.match_info["handle"])
        if body["janus"] == "message":
            message = body["body"]
            send = {"sender": handle, "transaction": body["transaction"]}
            if message["request"] == "register":
                self.events.put_nowait({**_event({"event": "registered"}), **send})
            elif message["request"] == "call":
                self.events.put_nowait({**_event({"event": "calling"}), **send})
                if self.reject:
                    self.events.put_nowait({**_event(error_code=486, error="Busy"), **send})
                else:
                    answer = {"type": "answer", "sdp": body["jsep"]["sdp"] + "a=answer\r\n"}
                    accepted = {**_event({"event": "accepted"}), **send, "jsep": answer}
                    self.events.put_nowait(accepted)
            elif message["request"] == "hangup":
                self.events.put_nowait({"janus": "hangup", "sender": handle})
                self.events.put_nowait({**_event({"event": "hangup"}), **send})
        return web.json_response({"janus": "ack"})


async def _serve(fake: FakeJanus) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/janus"


async def test_call_registers_as_guest_calls_and_hangs_up() -> None:
    fake = FakeJanus()
    runner, url = await _serve(fake)
    client = await JanusClient(url).connect()
    try:
        call = await JanusGateway(client, 5090).call("v=0\r\n")
        assert call.answer_sdp == "v=0\r\na=answer\r\n"
        await call.hangup()
        messages = [r["body"] for r in fake.requests if r["janus"] == "message"]
        register, invite, hangup = messages
        assert register["type"] == "guest"
        assert register["proxy"] == "sip:127.0.0.1:5090"
        assert register["username"].startswith("sip:bench")
        assert invite["request"] == "call" and invite["uri"] == "sip:echo@127.0.0.1:5090"
        assert hangup == {"request": "hangup"}
        kinds = [r["janus"] for r in fake.requests]
        assert kinds[:2] == ["create", "attach"] and "detach" in kinds
        assert len({r["transaction"] for r in fake.requests}) == len(fake.requests)
    finally:
        await client.close()
        await runner.cleanup()
    assert fake.requests[-1]["janus"] == "destroy"


async def test_a_rejected_call_raises_and_detaches() -> None:
    fake = FakeJanus(reject=True)
    runner, url = await _serve(fake)
    client = await JanusClient(url).connect()
    try:
        with pytest.raises(JanusError, match="486"):
            await JanusGateway(client, 5090).call("v=0\r\n")
        assert fake.requests[-1]["janus"] == "detach"
    finally:
        await client.close()
        await runner.cleanup()


def test_loopback_shim_clears_the_loopback_flag(tmp_path: Path) -> None:
    shim = build_loopback_shim(tmp_path)
    probe = """
import ctypes, json, socket
class SockAddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16), ("addr", ctypes.c_uint32)]
class IfAddrs(ctypes.Structure):
    pass
IfAddrs._fields_ = [("next", ctypes.POINTER(IfAddrs)), ("name", ctypes.c_char_p),
    ("flags", ctypes.c_uint), ("addr", ctypes.POINTER(SockAddr))]
libc = ctypes.CDLL(None)  # the global scope, where LD_PRELOAD's symbols come first
head = ctypes.POINTER(IfAddrs)()
assert libc.getifaddrs(ctypes.byref(head)) == 0
found = {}
node = head
while node:
    entry = node.contents
    if entry.addr and entry.addr.contents.family == socket.AF_INET:
        ip = socket.inet_ntoa(entry.addr.contents.addr.to_bytes(4, "little"))
        found[ip] = bool(entry.flags & 0x8)
    node = entry.next
libc.freeifaddrs(head)
print(json.dumps(found))
"""
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    shimmed = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={"LD_PRELOAD": str(shim)},
    )
    assert plain.returncode == 0, plain.stderr
    assert shimmed.returncode == 0, shimmed.stderr
    assert json.loads(plain.stdout)["127.0.0.1"] is True
    assert json.loads(shimmed.stdout)["127.0.0.1"] is False
