"""Network peers of the transport tests: dnsmasq as the DNS server, stunnel as a TLS
front of sipp, and a throw-away CA issuing the trunk's certificate."""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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
    """A fresh CA (``<prefix>ca.pem``) and a certificate for ``name`` and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{prefix}Test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(tmp / f"{prefix}ca.pem", tmp / f"{prefix}server.pem", tmp / f"{prefix}server.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


@dataclass
class Stunnel:
    """stunnel in the foreground: TLS on a free port of 127.0.0.1, plain TCP to ``target``."""

    tmp: Path
    pki: Pki
    target: int
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
            f"cert = {self.pki.cert}\n"
            f"key = {self.pki.key}\n"
        )
        log = self.tmp / f"stunnel-{self.port}.log"
        self.process = Process("stunnel", [stunnel, str(config)], {}, log).start()
        _wait_port(self.process, self.port, socket.SOCK_STREAM)
        return self

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
