"""DTLS-SRTP of the lean peer: the RFC 5764 key split, record packing, an in-memory handshake."""

from __future__ import annotations

import pytest

from bench.dtls_srtp import (
    HANDSHAKE_TIMEOUT,
    DtlsSession,
    fingerprint_matches,
    local_identity,
    pack_records,
    split_srtp_keys,
)

MATERIAL = bytes(range(60))  # 16 + 16 + 14 + 14


def test_client_sends_with_the_client_write_key_and_salt() -> None:
    tx, rx = split_srtp_keys(MATERIAL, "client")
    assert tx == MATERIAL[0:16] + MATERIAL[32:46]  # client_write_key + client_write_salt
    assert rx == MATERIAL[16:32] + MATERIAL[46:60]  # server_write_key + server_write_salt
    assert len(tx) == len(rx) == 30


def test_server_keys_mirror_the_client() -> None:
    client = split_srtp_keys(MATERIAL, "client")
    server = split_srtp_keys(MATERIAL, "server")
    assert server == (client[1], client[0])


def test_key_split_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        split_srtp_keys(MATERIAL[:-1], "client")
    with pytest.raises(ValueError):
        split_srtp_keys(MATERIAL, "auto")


def record(length: int, kind: int = 22) -> bytes:
    return bytes([kind, 0xFE, 0xFD]) + bytes(8) + length.to_bytes(2, "big") + b"x" * length


def test_pack_records_keeps_records_whole() -> None:
    a, b, c = record(500), record(600), record(300)
    assert pack_records(a + b + c, limit=1200) == [a + b, c]
    assert pack_records(a, limit=100) == [a]  # one record too long goes alone
    assert pack_records(b"") == []
    assert pack_records(a + b"\x16\xfe") == [a, b"\x16\xfe"]  # a stray tail goes as is


def test_identity_is_made_once() -> None:
    one, two = local_identity(), local_identity()
    assert one is two
    assert len(one.fingerprint.split(":")) == 32
    assert fingerprint_matches(one.certificate, [("sha-256", one.fingerprint.lower())])
    assert not fingerprint_matches(one.certificate, [("sha-256", "AA:BB")])
    assert not fingerprint_matches(one.certificate, [("md5", "AA:BB")])  # none we know
    # every known algorithm must match
    assert not fingerprint_matches(
        one.certificate, [("sha-256", one.fingerprint), ("sha-384", "AA")]
    )


def handshake(client: DtlsSession, server: DtlsSession) -> None:
    """Carry datagrams both ways until neither side has anything to say."""
    to_server = client.start(0.0)
    server.start(0.0)
    for _ in range(10):
        to_client = [d for data in to_server for d in server.receive(data, 0.0)]
        to_server = [d for data in to_client for d in client.receive(data, 0.0)]
        if not to_server and not to_client:
            break


def test_in_memory_handshake_gives_crossed_keys() -> None:
    fingerprint = [("sha-256", local_identity().fingerprint)]
    client = DtlsSession("client", fingerprint)
    server = DtlsSession("server", fingerprint)
    handshake(client, server)
    assert client.state == server.state == "connected"
    assert client.keys is not None and server.keys is not None
    assert client.keys == (server.keys[1], server.keys[0])
    # a close_notify ends the other side
    for data in client.close():
        server.receive(data, 0.0)
    assert server.state == "closed"


def test_fingerprint_mismatch_fails_the_handshake() -> None:
    good = [("sha-256", local_identity().fingerprint)]
    client = DtlsSession("client", [("sha-256", "00:" * 31 + "00")])
    server = DtlsSession("server", good)
    handshake(client, server)
    assert client.state == "failed"
    assert "fingerprint" in client.failure
    assert client.keys is None


def test_client_hello_timer_and_handshake_timeout() -> None:
    client = DtlsSession("client", [("sha-256", local_identity().fingerprint)])
    first = client.start(0.0)
    assert first and first[0][0] == 22  # a handshake record
    # OpenSSL's retransmission timer (its own clock) is armed: about a second
    assert 0 < client.next_timer <= 1.5
    # Before OpenSSL's own timer runs out, a poll sends nothing and re-arms.
    assert client.poll(client.next_timer) == []
    assert client.state == "handshaking"
    assert client.poll(HANDSHAKE_TIMEOUT) == []
    assert client.state == "failed"
    assert "timed out" in client.failure


def test_server_waits_for_the_client() -> None:
    server = DtlsSession("server", [("sha-256", local_identity().fingerprint)])
    assert server.start(0.0) == []
    assert server.state == "handshaking"
    assert server.next_timer == HANDSHAKE_TIMEOUT


def test_a_session_refuses_an_unknown_role() -> None:
    with pytest.raises(ValueError):
        DtlsSession("auto", [])
