"""Encoding of events on the wire (JSON, tagged by ``type``)."""

from __future__ import annotations

import msgspec

from proto.events import AnyEvent

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


class DecodeError(ValueError):
    """A message on the bus is not a valid event."""


def encode(event: AnyEvent) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> AnyEvent:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc
