"""Fails loudly when aiortc, aioice or pylibsrtp change a private name the media tier uses.

``services/media/browser_transport.py`` and ``srtp.py`` take the browser's
SRTP off aioice's connection and drive libsrtp through pylibsrtp's binding;
the versions are pinned in ``pyproject.toml``. Upgrading one of them means
running this file first.
"""

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pylibsrtp
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import RTCConfiguration, RTCPeerConnection
from pylibsrtp import _binding

from services.media.browser_transport import PRIVATE_NAMES, check_private_names

ROOT = Path(__file__).resolve().parents[3]


def test_the_versions_we_read_are_the_pinned_ones() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = {}
    for requirement in project["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.]+)", requirement)
        if match:
            pins[match[1].lower()] = match[2]
    for package in ("aiortc", "aioice", "pylibsrtp"):
        assert package in pins, f"{package} must be pinned (==) in pyproject.toml"
        assert importlib.metadata.version(package) == pins[package], (
            f"{package} {importlib.metadata.version(package)} is installed but "
            f"{pins[package]} is pinned: check services/media/browser_transport.py first"
        )


async def test_the_private_names_exist_on_live_objects() -> None:
    check_private_names()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("audio")
        dtls = transceiver.receiver.transport
        connection = dtls.transport._connection
        assert isinstance(connection, Connection)
        assert isinstance(connection._nominated, dict)
        assert callable(connection.data_received)
        assert hasattr(dtls, "_rx_srtp") and hasattr(dtls, "_tx_srtp")
        assert isinstance(transceiver.sender._ssrc, int)
    finally:
        await pc.close()
    assert isinstance(CandidatePair.remote_addr, property)
    assert "protocol" in CandidatePair.__init__.__code__.co_varnames
    assert "transport" in StunProtocol.connection_made.__code__.co_names
    assert "_srtp" in pylibsrtp.Session.__init__.__code__.co_names
    for name in ("srtp_protect", "srtp_unprotect", "srtp_protect_rtcp", "srtp_unprotect_rtcp"):
        assert hasattr(_binding.lib, name), name
    assert _binding.lib.srtp_err_status_ok == 0
    assert len(PRIVATE_NAMES) >= 10


def test_aioice_hands_datagrams_to_data_received() -> None:
    """Our hook replaces ``Connection.data_received``: aioice must still call it per datagram."""
    assert "data_received" in StunProtocol.datagram_received.__code__.co_names
