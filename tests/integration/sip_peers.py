"""Real SIP software as the bridge's far end: baresip as a phone, kamailio as a
registrar and authenticating proxy.

Each runs as a child process on free ports, its configuration written into the
test's tmp dir, stopped by its PID; ``logs()`` is what a failing test prints.
Nothing here reaches the internet: no STUN, no DNS, loopback only.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.integration.certs import TlsFiles
from tests.integration.harness import (
    Process,
    free_port,
    free_rtp_range,
    free_udp_port,
    port_taken,
    require_tool,
    wait_tcp,
)

PHONE_TONE_HZ = 600
"""What baresip plays into a call (``ausine``): not the client's 1000 Hz, so a tone
that arrives at the client came from the phone, not an echo."""

TCP = socket.SOCK_STREAM

REALM = "interop.test"
"The digest realm kamailio challenges with."

BARESIP_MODULES = Path("/usr/lib/baresip/modules")


def _wait(check: Any, what: str, timeout: float, process: Process) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not process.alive():
            raise RuntimeError(f"{process.name} exited while waiting for {what}:\n{process.log()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout}s:\n{process.log()[-6000:]}")
        time.sleep(0.05)


# --- baresip -----------------------------------------------------------------------


def _netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


class BaresipControl:
    """baresip's ``ctrl_tcp`` socket: netstring JSON commands out, events and
    responses in (read by a thread into ``messages``)."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._sock.settimeout(None)
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._token = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b":" in buffer:
                length, _, rest = buffer.partition(b":")
                size = int(length)
                if len(rest) < size + 1:
                    break
                message = json.loads(rest[:size])
                buffer = rest[size + 1 :]
                with self._lock:
                    self.messages.append(message)

    def command(self, command: str, params: str = "") -> None:
        self._token += 1
        body = {"command": command, "params": params, "token": str(self._token)}
        self._sock.sendall(_netstring(json.dumps(body).encode()))

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m.get("event")]

    def event_types(self) -> list[str]:
        return [str(m.get("type")) for m in self.events()]

    def close(self) -> None:
        self._sock.close()


@dataclass
class Baresip:
    """baresip as a phone: answers every call, plays a ``PHONE_TONE_HZ`` sine.

    Without ``registrar`` it listens and is called directly at ``port``; with it
    it registers ``user`` there with ``password`` (digest) over ``transport``.
    """

    tmp: Path
    user: str = "alice"
    registrar: str | None = None
    "``host:port`` of a registrar, or None for no registration."
    password: str = ""
    transport: str = "udp"
    "How it reaches the registrar."
    port: int = 0
    "SIP (UDP and TCP) listening port; 0: a free one chosen at start."
    tls: TlsFiles | None = None
    "With a certificate it also listens for TLS, on ``port + 1`` (baresip's choice)."
    ctrl_port: int = 0
    mediaenc: str = ""
    "baresip's media encryption for its account (``srtp-mand``: SDES SRTP or nothing)."
    process: Process | None = None
    control: BaresipControl | None = None
    home: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home = self.tmp / f"baresip-{self.user}"

    @property
    def tls_port(self) -> int:
        return self.port + 1

    @property
    def recordings(self) -> Path:
        return self.home / "recordings"

    def heard(self) -> tuple[np.ndarray, int]:
        """(samples, rate) of what the phone received in its last call (``sndfile``)."""
        files = sorted(self.recordings.glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)
        if not files:
            return np.zeros(0), 0
        with wave.open(str(files[-1])) as wav:
            frames = wav.readframes(wav.getnframes())
            channels, rate = wav.getnchannels(), wav.getframerate()
        pcm = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)[:, 0]
        return pcm.astype(np.float64), rate

    def _config(self) -> str:
        rtp_min, rtp_max = free_rtp_range(20)
        certificate = []
        if self.tls is not None:
            # baresip wants the certificate and its key in one file.
            both = self.home / "certificate.pem"
            both.write_bytes(self.tls.certificate.read_bytes() + self.tls.key.read_bytes())
            certificate = [f"sip_certificate {both}"]
        return "\n".join(
            [
                *certificate,
                "poll_method epoll",
                f"sip_listen 127.0.0.1:{self.port}",
                # Media on loopback, not the host's first interface.
                "net_interface 127.0.0.1",
                "call_local_timeout 120",
                "call_max_calls 4",
                f"audio_source ausine,{PHONE_TONE_HZ}",
                # What it hears goes nowhere (a bridge device no source reads).
                "audio_player aubridge,nowhere",
                "audio_alert aubridge,nowhere",
                # ausine makes 48 kHz stereo only; baresip resamples to the codec.
                "ausrc_srate 48000",
                "ausrc_channels 2",
                "audio_buffer 20-160",
                f"rtp_ports {rtp_min}-{rtp_max}",
                "jitter_buffer_delay 1-10",
                f"module_path {BARESIP_MODULES}",
                "module g711.so",
                *(["module srtp.so"] if self.mediaenc else []),
                "module ausine.so",
                "module aubridge.so",
                # An audio filter that writes what the phone heard to a WAV file.
                "module sndfile.so",
                f"snd_path {self.recordings}",
                "module_tmp account.so",
                # menu holds the call commands (hangup) ctrl_tcp runs.
                "module_app menu.so",
                "statmode_default off",
                "module_app ctrl_tcp.so",
                f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
                "",
            ]
        )

    def _account(self) -> str:
        params = ";answermode=auto;audio_codecs=pcmu,pcma"
        if self.mediaenc:
            params += f";mediaenc={self.mediaenc}"
        if self.registrar is None:
            return f"<sip:{self.user}@127.0.0.1>;regint=0{params}\n"
        return (
            f"<sip:{self.user}@{self.registrar};transport={self.transport}>"
            f";auth_pass={self.password};regint=60{params}\n"
        )

    def start(self, timeout: float = 15.0) -> Baresip:
        binary = require_tool("baresip")
        while not self.port or (self.tls is not None and port_taken(self.tls_port, TCP)):
            self.port = free_udp_port()
        self.ctrl_port = self.ctrl_port or free_port()
        self.recordings.mkdir(parents=True, exist_ok=True)
        (self.home / "config").write_text(self._config())
        (self.home / "accounts").write_text(self._account())
        (self.home / "contacts").write_text("")
        self.process = Process(
            f"baresip-{self.user}",
            [binary, "-f", str(self.home), "-v"],
            os.environ,
            self.tmp / f"baresip-{self.user}.log",
            cwd=self.home,
        )
        self.process.start()
        _wait(lambda: port_taken(self.port), "baresip's SIP port", timeout, self.process)
        wait_tcp(self.ctrl_port, timeout)
        if self.tls is not None:
            wait_tcp(self.tls_port, timeout)
        # A registration may finish before this connects: the registrar is asked instead.
        self.control = BaresipControl(self.ctrl_port)
        return self

    def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first ctrl_tcp event of ``kind`` (e.g. ``CALL_CLOSED``), waiting for it."""
        assert self.control is not None and self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            for event in self.control.events():
                if event.get("type") == kind:
                    return event
            if time.monotonic() > deadline or not self.process.alive():
                raise TimeoutError(
                    f"baresip: no {kind} after {timeout}s; events {self.control.event_types()}\n"
                    f"{self.logs()}"
                )
            time.sleep(0.05)

    def hangup(self) -> None:
        """Hang up the current call, as the person at the phone would."""
        assert self.control is not None
        self.control.command("hangup")

    def calls_seen(self) -> int:
        """How many calls reached the phone (incoming ones it was offered)."""
        assert self.control is not None
        return self.control.event_types().count("CALL_INCOMING")

    def logs(self) -> str:
        return "" if self.process is None else f"----- {self.process.name}\n{self.process.log()}"

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.process is not None:
            self.process.stop()


# --- kamailio ----------------------------------------------------------------------

KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"

_KAMAILIO_ROUTES = r"""
request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {
        sl_send_reply("200", "OK");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    if (has_totag()) {
        # In a dialog: follow the Route set this proxy put there.
        if (loose_route()) {
            xlog("L_NOTICE", "interop: in-dialog $rm relayed via $pr\n");
            t_relay();
            exit;
        }
        if (is_method("ACK") && t_check_trans()) {
            t_relay();
        }
        exit;
    }
    t_check_trans();
    if (is_method("REGISTER")) {
        route(PASSWORD);
        if (!pv_www_authenticate("$td", "$var(password)", "0")) {
            xlog("L_NOTICE", "interop: 401 to $rm of $tU via $pr\n");
            www_challenge("$td", "0");
            exit;
        }
        xlog("L_NOTICE", "interop: $rm authorized as $au via $pr\n");
        consume_credentials();
        if (!save("location")) {
            sl_reply_error();
        }
        exit;
    }
    if (is_method("INVITE|MESSAGE|OPTIONS|SUBSCRIBE|REFER")) {
        route(PASSWORD);
        if (!pv_proxy_authenticate("$fd", "$var(password)", "0")) {
            xlog("L_NOTICE", "interop: 407 to $rm from $fU via $pr\n");
            proxy_challenge("$fd", "0");
            exit;
        }
        xlog("L_NOTICE", "interop: $rm authorized as $au via $pr\n");
        consume_credentials();
    }
    record_route();
    if (!lookup("location")) {
        xlog("L_NOTICE", "interop: $rm to $rU: not registered\n");
        sl_send_reply("404", "Not Found");
        exit;
    }
    xlog("L_NOTICE", "interop: $rm relayed to $ru\n");
    t_relay();
}
"""


@dataclass
class Kamailio:
    """kamailio as a registrar (usrloc in memory) and an authenticating proxy.

    It challenges REGISTER with 401 and INVITE with 407 (realm ``REALM``), the
    passwords in ``users`` (plaintext, written into its config), and proxies
    a call to the registered contact of its Request-URI's user, record-routing
    so the dialog's BYE passes through it too. UDP and TCP share ``port``;
    with ``tls`` it also listens for TLS on ``tls_port``.
    """

    tmp: Path
    users: dict[str, str]
    tls: TlsFiles | None = None
    port: int = 0
    tls_port: int = 0
    process: Process | None = None
    home: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home = self.tmp / "kamailio"
        for user, password in self.users.items():
            # Plain kamailio string literals: none of these may appear.
            if any(c in user + password for c in '"\\$\n'):
                raise ValueError(f"kamailio config cannot hold the password of {user}")

    @property
    def ctl_socket(self) -> Path:
        return self.home / "ctl.sock"

    def _password_route(self) -> str:
        # An unknown user gets a password nobody knows (an empty one is a config error).
        lines = ["route[PASSWORD] {", f'    $var(password) = "{secrets.token_hex(16)}";']
        for user, password in self.users.items():
            lines.append(f'    if ($au == "{user}") {{ $var(password) = "{password}"; }}')
        lines.append("}")
        return "\n".join(lines)

    def _config(self) -> str:
        listen = [
            f"listen=udp:127.0.0.1:{self.port}",
            f"listen=tcp:127.0.0.1:{self.port}",
        ]
        modules = [
            "tm",
            "sl",
            "rr",
            "pv",
            "maxfwd",
            "textops",
            "siputils",
            "usrloc",
            "registrar",
            "auth",
            "ctl",
            "xlog",
            "kex",
            "corex",
        ]
        params = [
            'modparam("usrloc", "db_mode", 0)',
            'modparam("rr", "enable_full_lr", 1)',
            f'modparam("ctl", "binrpc", "unix:{self.ctl_socket}")',
        ]
        if self.tls is not None:
            listen.append(f"listen=tls:127.0.0.1:{self.tls_port}")
            modules.insert(0, "tls")
            params += [
                f'modparam("tls", "certificate", "{self.tls.certificate}")',
                f'modparam("tls", "private_key", "{self.tls.key}")',
                'modparam("tls", "tls_method", "TLSv1.2+")',
                'modparam("tls", "verify_certificate", 0)',
                'modparam("tls", "require_certificate", 0)',
            ]
        return "\n".join(
            [
                "#!KAMAILIO",
                "debug=2",
                "log_stderror=yes",
                "children=2",
                "tcp_children=2",
                "auto_aliases=no",
                "dns=no",
                "rev_dns=no",
                "use_dns_cache=no",
                f'alias="{REALM}"',
                f"enable_tls={'yes' if self.tls is not None else 'no'}",
                *listen,
                f'mpath="{KAMAILIO_MODULES}"',
                *(f'loadmodule "{name}.so"' for name in modules),
                *params,
                self._password_route(),
                _KAMAILIO_ROUTES,
            ]
        )

    def start(self, timeout: float = 20.0) -> Kamailio:
        binary = require_tool("kamailio")
        self.port = self.port or free_udp_port()
        if self.tls is not None:
            self.tls_port = self.tls_port or free_port()
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "kamailio.cfg"
        config.write_text(self._config())
        argv = [binary, "-DD", "-E", "-f", str(config), "-Y", str(self.home), "-a", "no"]
        argv += ["-m", "32", "-M", "8", "-w", str(self.home)]
        self.process = Process("kamailio", argv, os.environ, self.tmp / "kamailio.log").start()
        _wait(lambda: port_taken(self.port), "kamailio's UDP port", timeout, self.process)
        wait_tcp(self.port, timeout)
        if self.tls is not None:
            wait_tcp(self.tls_port, timeout)
        _wait(self.ctl_socket.exists, "kamailio's control socket", timeout, self.process)
        return self

    def rpc(self, *command: str) -> str:
        """A kamailio RPC command's output (``kamcmd``) over its control socket."""
        kamcmd = require_tool("kamcmd")
        result = subprocess.run(
            [kamcmd, "-s", f"unix:{self.ctl_socket}", *command],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kamcmd {' '.join(command)}: {result.stderr}\n{self.logs()}")
        return result.stdout

    def registered(self, user: str) -> list[str]:
        """The contacts in kamailio's location table for ``user``."""
        dump = self.rpc("ul.dump")
        contacts: list[str] = []
        current = None
        for line in dump.splitlines():
            stripped = line.strip()
            if stripped.startswith("AoR:"):
                current = stripped.split(":", 1)[1].strip()
            elif stripped.startswith("Address:") and current == user:
                contacts.append(stripped.split(":", 1)[1].strip())
        return contacts

    def wait_registered(self, user: str, timeout: float = 10.0) -> list[str]:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while not (contacts := self.registered(user)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{user} not registered at kamailio:\n{self.rpc('ul.dump')}")
            time.sleep(0.2)
        return contacts

    def notices(self) -> list[str]:
        """What the routing script logged (``interop: ...`` lines), in order."""
        assert self.process is not None
        return [
            line.split("interop: ", 1)[1]
            for line in self.process.log().splitlines()
            if "interop: " in line
        ]

    def logs(self) -> str:
        return "" if self.process is None else f"----- kamailio\n{self.process.log()[-12000:]}"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
