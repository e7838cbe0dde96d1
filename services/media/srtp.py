"""SRTP and SRTCP per packet without a copy we could avoid: pylibsrtp's C functions, one buffer.

pylibsrtp's public ``Session.protect`` takes ``bytes`` only and allocates a
length cell and a result per call. ``SrtpTransform`` drives the same libsrtp
session through pylibsrtp's cffi binding with a buffer and a length cell
made once per call leg: the packet is copied in, transformed in place, and
returned as a view of that buffer (valid until the next call, so send it at
once). It relies on pylibsrtp's private ``_binding`` module and
``Session._srtp``; the version is pinned in ``pyproject.toml`` and
``tests/unit/media/test_private_names.py`` fails loudly if they change.
"""

from __future__ import annotations

from typing import Any

import pylibsrtp
from pylibsrtp import _binding

_ffi: Any = _binding.ffi
_lib: Any = _binding.lib
_OK = _lib.srtp_err_status_ok
_REPLAY_FAIL = 9
"srtp_err_status_replay_fail in libsrtp 2 (pylibsrtp does not export it)."
_BUFFER = 1500 + 128
"An MTU-sized packet plus the longest SRTP/SRTCP trailer (auth tag, MKI, index)."
_TRAILER = 16 + 4 + 16
"The most a transform adds: SRTCP index, MKI and the longest tag (AEAD: 16)."


class SrtpError(ValueError):
    """A packet failed authentication, was a replay, or could not be protected."""


class SrtpTransform:
    """One direction of an SRTP session (protect or unprotect), RTP and RTCP."""

    __slots__ = ("_buffer", "_cdata", "_length", "_session", "_srtp", "_view")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session  # keeps the libsrtp context alive
        self._srtp = session._srtp[0]
        self._cdata = _ffi.new("char[]", _BUFFER)
        self._view = memoryview(_ffi.buffer(self._cdata))
        self._length = _ffi.new("int *")

    def _run(self, func: Any, data: bytes | memoryview, room: int) -> memoryview:
        size = len(data)
        if size + room > _BUFFER:
            raise SrtpError(f"packet of {size} bytes is too long")
        self._view[:size] = data
        self._length[0] = size
        status = func(self._srtp, self._cdata, self._length)
        if status != _OK:
            raise SrtpError("replayed packet" if status == _REPLAY_FAIL else f"srtp {status}")
        return self._view[: self._length[0]]

    def protect(self, packet: bytes | memoryview) -> memoryview:
        return self._run(_lib.srtp_protect, packet, _TRAILER)

    def protect_rtcp(self, packet: bytes | memoryview) -> memoryview:
        return self._run(_lib.srtp_protect_rtcp, packet, _TRAILER)

    def unprotect(self, packet: bytes | memoryview) -> memoryview:
        return self._run(_lib.srtp_unprotect, packet, 0)

    def unprotect_rtcp(self, packet: bytes | memoryview) -> memoryview:
        return self._run(_lib.srtp_unprotect_rtcp, packet, 0)
