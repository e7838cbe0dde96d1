"""Network peers of the transport tests: dnsmasq as the DNS server, stunnel as a TLS
front of sipp (or, in client mode, sipp's TLS way out), and a throw-away CA issuing the
trunk's certificate."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.certs import make_tls
from tests.integration.harness import Process, free_port, free_udp_port, port_taken, require_tool


@dataclass
class Dnsmasq:
    """dnsmasq on a free port of 127.0.0.1 serving only the records given.

    ``srv``: ``(name, target, port, priority, weight)``; ``hosts``: ``(name, ip)``;
    ``naptr``: ``(name, order, preference, flags, service, replacement)``.
    """

    tmp: Path
    srv: list[tuple[str, str, int, int, int]] = field(default_factory=list)
    hosts: list[tuple[str, str]] = field(default_factory=list)
    naptr: list[tuple[str, int, int, str, str, str]] = field(default_factory=list)
    port: int = 0
    process: Process | None = None

    @property
    def server(self) -> str:
        """The ``SIP_DNS_SERVERS`` value."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> Dnsmasq:
        dnsmasq = require_tool("dnsmasq")
        self.port = free_udp_port()
        argv = [
            dnsmasq,
            "-k",
            "-p",
            str(self.port),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--log-queries",
            "--log-facility=-",
        ]
        argv += [f"--srv-host={n},{t},{p},{prio},{w}" for n, t, p, prio, w in self.srv]
        argv += [f"--host-record={name},{ip}" for name, ip in self.hosts]
        argv += [
            f"--naptr-record={n},{o},{pref},{f},{s},,{r}" for n, o, pref, f, s, r in self.naptr
        ]
        log = self.tmp / f"dnsmasq-{self.port}.log"
        self.process = Process("dnsmasq", argv, {}, log).start()
        _wait_port(self.process, self.port, socket.SOCK_DGRAM)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class Pki:
    """A CA and a server certificate it signed, as PEM files in ``tmp``."""

    ca: Path
    cert: Path
    key: Path


def make_pki(tmp: Path, name: str, *, prefix: str = "") -> Pki:
    """A fresh CA and a certificate for ``name`` and 127.0.0.1 (``CN=<name>``)."""
    files = make_tls(tmp, [name], name=f"{prefix}trunk", common_name=name)
    return Pki(files.ca, files.certificate, files.key)


@dataclass
class Stunnel:
    """stunnel in the foreground: TLS on a free port of 127.0.0.1, plain TCP to ``target``.

    ``client``: the other way round: plain TCP on the free port, TLS to ``target``, whose
    certificate must chain to ``pki.ca`` and name 127.0.0.1.
    """

    tmp: Path
    pki: Pki
    target: int
    client: bool = False
    port: int = 0
    process: Process | None = None

    def start(self) -> Stunnel:
        stunnel = require_tool("stunnel4")
        self.port = free_port()
        config = self.tmp / f"stunnel-{self.port}.conf"
        config.write_text(
            "foreground = yes\n"
            "pid =\n"
            "debug = 5\n"
            "[sip]\n"
            f"accept = 127.0.0.1:{self.port}\n"
            f"connect = 127.0.0.1:{self.target}\n"
        )
        if self.client:
            config.write_text(
                config.read_text()
                + f"client = yes\nCAfile = {self.pki.ca}\nverifyChain = yes\ncheckIP = 127.0.0.1\n"
            )
        else:
            config.write_text(
                config.read_text() + f"cert = {self.pki.cert}\nkey = {self.pki.key}\n"
            )
        log = self.tmp / f"stunnel-{self.port}.log"
        self.process = Process("stunnel", [stunnel, str(config)], {}, log).start()
        _wait_port(self.process, self.port, socket.SOCK_STREAM)
        return self

    def servers(self) -> int:
        """How many TLS connections it opened to ``target`` (client mode), certificate checked."""
        log = self.process.log() if self.process is not None else ""
        return log.count("Certificate accepted at depth=0")

    def clients(self) -> set[str]:
        """The distinct ``ip:port`` that opened a TLS connection."""
        log = self.process.log() if self.process is not None else ""
        return set(re.findall(r"accepted connection from (\S+)", log))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def _wait_port(process: Process, port: int, kind: int) -> None:
    deadline = time.monotonic() + 5
    while not port_taken(port, kind):
        if time.monotonic() > deadline or not process.alive():
            raise RuntimeError(f"{process.name} did not start:\n{process.log()}")
        time.sleep(0.05)
