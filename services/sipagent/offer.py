"""The trunk's SDP offer narrowed to the codecs a trunk accepts, in its order. Pure."""

from __future__ import annotations

from services.common import sdp

_CODECS = frozenset(("PCMU", "PCMA", "G722", "OPUS"))
"The audio codecs a trunk may be offered (SIP_CODECS)."


def restrict_codecs(text: str, codecs: tuple[str, ...]) -> str:
    """The offer in ``text`` with its audio m-line offering only ``codecs`` (in that order).

    Formats that are not audio codecs (``telephone-event``) are kept after
    them; the ``a=rtpmap``/``a=fmtp`` lines of removed formats go too.
    ``ValueError`` (``sdp.SdpError`` for an SDP we cannot read) if none of
    ``codecs`` is in the offer. Empty ``codecs``: the offer unchanged.
    """
    if not codecs:
        return text
    description = sdp.parse(text)
    index = description.audio_index()
    if index is None:
        raise ValueError("the offer has no audio")
    audio = description.media[index]
    names: dict[str, str] = {}
    for pt in audio.payload_types:
        rtpmap = audio.rtpmap(pt)
        if rtpmap is not None:
            names[str(pt)] = rtpmap.encoding.upper()
    kept = [fmt for codec in codecs for fmt in audio.formats if names.get(fmt) == codec.upper()]
    if not kept:
        raise ValueError(f"the offer has none of the trunk's codecs ({', '.join(codecs)})")
    kept += [fmt for fmt in audio.formats if names.get(fmt) not in _CODECS]
    return description.with_media(index, audio.with_formats(kept)).serialize()
