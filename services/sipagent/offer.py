"""The trunk's SDP offer narrowed to the codecs a trunk accepts, in its order. Pure."""

from __future__ import annotations

from services.common.digits import number

# RFC 3551 static payload types of the codecs a trunk may be offered.
_STATIC = {0: "PCMU", 8: "PCMA", 9: "G722"}
_CODECS = frozenset((*_STATIC.values(), "OPUS"))


def restrict_codecs(sdp: str, codecs: tuple[str, ...]) -> str:
    """``sdp`` with its audio m-line offering only ``codecs`` (in that order).

    Formats that are not audio codecs (``telephone-event``) are kept after
    them; the ``a=rtpmap``/``a=fmtp`` lines of removed formats go too.
    ``ValueError`` if none of ``codecs`` is in the offer. Empty ``codecs``:
    the offer unchanged.
    """
    if not codecs:
        return sdp
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(newline)
    wanted = [c.upper() for c in codecs]
    audio = next((i for i, line in enumerate(lines) if line.startswith("m=audio ")), None)
    if audio is None:
        raise ValueError("the offer has no audio")
    end = next((i for i in range(audio + 1, len(lines)) if lines[i].startswith("m=")), len(lines))
    names: dict[str, str] = {}
    for line in lines[audio + 1 : end]:
        if line.startswith("a=rtpmap:"):
            pt, _, encoding = line[len("a=rtpmap:") :].partition(" ")
            names[pt] = encoding.split("/", 1)[0].upper()
    fields = lines[audio].split()
    formats = fields[3:]
    for pt in formats:
        if pt not in names and number(pt) in _STATIC:
            names[pt] = _STATIC[int(pt)]
    kept = [pt for codec in wanted for pt in formats if names.get(pt) == codec]
    if not kept:
        raise ValueError(f"the offer has none of the trunk's codecs ({', '.join(codecs)})")
    kept += [pt for pt in formats if names.get(pt) not in _CODECS]
    dropped = set(formats) - set(kept)

    def keep(line: str) -> bool:
        for prefix in ("a=rtpmap:", "a=fmtp:"):
            if line.startswith(prefix):
                return line[len(prefix) :].split(" ", 1)[0] not in dropped
        return True

    body = [line for line in lines[audio + 1 : end] if keep(line)]
    m_line = " ".join([*fields[:3], *kept])
    return newline.join([*lines[:audio], m_line, *body, *lines[end:]])
