"""Cause and error codes shared by events, the WebSocket protocol and logs."""

from __future__ import annotations

# Why a call ended (``CallEnded.cause``, ``HangupRequested.cause``).
NORMAL = "normal"
"One side hung up after the call was answered."
CANCELLED = "cancelled"
"The caller hung up before the trunk answered."
REJECTED = "rejected"
"The trunk answered with a final 4xx/5xx/6xx response."
TIMEOUT = "timeout"
"No final answer within INVITE_TIMEOUT, or the SIP transaction timed out."
BROWSER_GONE = "browser_gone"
"The browser's WebSocket closed during the call."
MEDIA_FAILED = "media_failed"
"The media worker could not set up or keep the call's media."
SETUP_FAILED = "setup_failed"
"No service took a step of call set-up in time."
REMOTE_HANGUP = "remote_hangup"
"The trunk sent BYE."
INTERNAL = "internal"
"A bug or an unexpected failure inside the bridge."

# Codes of ``MediaFailed.code`` and of WebSocket ``error`` messages.
BAD_SDP = "bad_sdp"
NO_COMMON_CODEC = "no_common_codec"
NO_PORTS = "no_ports"
AT_CAPACITY = "at_capacity"
DRAINING = "draining"
"A media worker is draining (SIGTERM) and takes no new call."
NO_MEDIA_WORKER = "no_media_worker"
NO_SIP_AGENT = "no_sip_agent"
