"""DTLS-SRTP for one lean peer: the handshake over memory BIOs, then SRTP keys (RFC 5764).

One ECDSA P-256 certificate and one ``SSL.Context`` serve every peer of the
process (``local_identity``): making a key per peer would cost more than the
handshake. ``DtlsSession`` is sans I/O: ``start``, ``receive`` and ``poll``
take the time and return the datagrams to send. Once the handshake is done
it checks the remote certificate against the answer's fingerprints, that
``SRTP_AES128_CM_SHA1_80`` was negotiated, exports ``EXTRACTOR-dtls_srtp``
and splits it into our send and receive keys (``split_srtp_keys``).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

SRTP_PROFILE = b"SRTP_AES128_CM_SHA1_80"
KEY_LENGTH = 16
SALT_LENGTH = 14
DATAGRAM_LIMIT = 1200
"Largest datagram we send: whole DTLS records packed up to this size."
HANDSHAKE_TIMEOUT = 10.0
_RECORD_HEADER = 13
_DIGESTS = {"sha-256": hashes.SHA256, "sha-384": hashes.SHA384, "sha-512": hashes.SHA512}


def format_fingerprint(digest: bytes) -> str:
    """``AB:CD:…``: the SDP form of a certificate digest."""
    return ":".join(f"{b:02X}" for b in digest)


@dataclass(frozen=True)
class LocalIdentity:
    """The process's certificate, its SHA-256 fingerprint and the DTLS context using it."""

    certificate: x509.Certificate
    fingerprint: str
    context: SSL.Context


@functools.cache
def local_identity() -> LocalIdentity:
    """Made once per process and shared by every peer."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, secrets.token_hex(8))])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .sign(key, hashes.SHA256())
    )
    context = SSL.Context(SSL.DTLS_METHOD)
    context.set_options(SSL.OP_NO_TICKET)
    # Self-signed on both sides: accept any certificate here, check the fingerprint after.
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
    context.use_certificate(certificate)
    context.use_privatekey(key)
    context.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA")
    context.set_tlsext_use_srtp(SRTP_PROFILE)
    digest = certificate.fingerprint(hashes.SHA256())
    return LocalIdentity(certificate, format_fingerprint(digest), context)


def split_srtp_keys(
    material: bytes, role: str, key_length: int = KEY_LENGTH, salt_length: int = SALT_LENGTH
) -> tuple[bytes, bytes]:
    """(send key+salt, receive key+salt) for ``role`` from the exported material.

    RFC 5764 section 4.2: client_write_key, server_write_key, client_write_salt,
    server_write_salt. The client sends with the client's key and salt.
    """
    if len(material) != 2 * (key_length + salt_length):
        raise ValueError(f"keying material of {len(material)} bytes")
    client_key = material[:key_length]
    server_key = material[key_length : 2 * key_length]
    salts = material[2 * key_length :]
    client = client_key + salts[:salt_length]
    server = server_key + salts[salt_length:]
    if role == "client":
        return client, server
    if role == "server":
        return server, client
    raise ValueError(f"DTLS role {role!r}")


def pack_records(data: bytes, limit: int = DATAGRAM_LIMIT) -> list[bytes]:
    """Cut what OpenSSL wrote into datagrams of whole records, each at most ``limit`` bytes.

    A memory BIO is a byte stream: a whole flight comes out at once. A record
    longer than ``limit`` goes alone; trailing bytes that are not a whole
    record go as they are.
    """
    out: list[bytes] = []
    start = pos = 0
    size = len(data)
    while pos + _RECORD_HEADER <= size:
        end = pos + _RECORD_HEADER + int.from_bytes(data[pos + 11 : pos + 13], "big")
        if end > size:
            break
        if end - start > limit and pos > start:
            out.append(data[start:pos])
            start = pos
        pos = end
    if pos > start:
        out.append(data[start:pos])
    if pos < size:
        out.append(data[pos:])
    return out


def fingerprint_matches(certificate: x509.Certificate, expected: list[tuple[str, str]]) -> bool:
    """Every fingerprint of an algorithm we know matches, and there is at least one."""
    known = [(a, v) for a, v in expected if a in _DIGESTS]
    return bool(known) and all(
        format_fingerprint(certificate.fingerprint(_DIGESTS[a]())) == v.upper() for a, v in known
    )


class DtlsSession:
    """One DTLS association; ``state``: new, handshaking, connected, failed, closed."""

    def __init__(self, role: str, remote_fingerprints: list[tuple[str, str]]) -> None:
        if role not in ("client", "server"):
            raise ValueError(f"DTLS role {role!r}")
        self.role = role
        self.state = "new"
        self.failure = ""
        self.keys: tuple[bytes, bytes] | None = None
        "(send, receive) SRTP key+salt once connected."
        self.next_timer = float("inf")
        self._fingerprints = remote_fingerprints
        self._ssl = SSL.Connection(local_identity().context, None)
        self._deadline = float("inf")

    def start(self, now: float) -> list[bytes]:
        """Begin: a client sends its ClientHello, a server waits for one."""
        self.state = "handshaking"
        self._deadline = now + HANDSHAKE_TIMEOUT
        self.next_timer = self._deadline
        if self.role == "client":
            self._ssl.set_connect_state()
            return self._step(now)
        self._ssl.set_accept_state()
        return []

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """One DTLS datagram (first byte 20-63) from the peer."""
        if self.state == "new":
            return []  # before the answer: the peer retransmits
        if self.state == "handshaking":
            self._ssl.bio_write(data)
            return self._step(now)
        if self.state == "connected":
            self._ssl.bio_write(data)
            try:
                self._ssl.recv(1500)
            except SSL.ZeroReturnError:
                self.state = "closed"
                self.failure = "DTLS closed by the peer"
            except SSL.Error:
                pass  # retransmitted handshake records, and the like
            return self._flush()
        return []

    def poll(self, now: float) -> list[bytes]:
        """Handshake retransmission and time-out."""
        if self.state != "handshaking" or now < self.next_timer:
            return []
        if now >= self._deadline:
            self._fail("DTLS handshake timed out")
            return []
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(f"DTLS error: {exc}")
            return []
        out = self._flush()
        self._arm(now)
        return out

    def _step(self, now: float) -> list[bytes]:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            out = self._flush()
            self._arm(now)
            return out
        except SSL.Error as exc:
            self._fail(f"DTLS handshake failed: {exc}")
            return self._flush()
        out = self._flush()
        self._finish()
        return out

    def _arm(self, now: float) -> None:
        timeout = self._ssl.DTLSv1_get_timeout()
        self.next_timer = min(self._deadline, now + timeout if timeout is not None else 1.0)

    def _finish(self) -> None:
        certificate = self._ssl.get_peer_certificate(as_cryptography=True)
        if certificate is None or not fingerprint_matches(certificate, self._fingerprints):
            self._fail("DTLS fingerprint mismatch")
            return
        if self._ssl.get_selected_srtp_profile() != SRTP_PROFILE:
            self._fail("no SRTP profile negotiated")
            return
        material = self._ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (KEY_LENGTH + SALT_LENGTH)
        )
        self.keys = split_srtp_keys(material, self.role)
        self.state = "connected"
        # The server's last flight may need resending if it is lost; the client then
        # retransmits its Finished, which ``receive`` answers through OpenSSL.
        self.next_timer = float("inf")

    def _flush(self) -> list[bytes]:
        try:
            data = self._ssl.bio_read(65536)
        except SSL.WantReadError:
            return []
        return pack_records(data)

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.failure = reason
        self.next_timer = float("inf")

    def close(self) -> list[bytes]:
        """A close_notify alert to send, when connected."""
        out: list[bytes] = []
        if self.state == "connected":
            with contextlib.suppress(SSL.Error):
                self._ssl.shutdown()
            out = self._flush()
        self.state = "closed"
        self.next_timer = float("inf")
        return out
