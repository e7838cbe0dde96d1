"""Write the RFC 4475 torture corpus: ``python -m tests.unit.sipagent.torture.build_corpus``.

The messages are ours, written from the descriptions of RFC 4475 ("SIP Torture Test
Messages"); the section numbers in ``manifest.toml`` point at the case each one follows.
Built here rather than typed into the ``.sip`` files so CRLFs, NULs, control and
non-UTF-8 octets are exact, and Content-Length values are right where they should be.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent

SDP = (
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.3\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.4\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)


def message(lines: list[str | bytes], body: bytes = b"") -> bytes:
    """Lines joined by CRLF, the empty line, the body; ``{len}`` becomes the body length."""
    raw = [line.encode("utf-8") if isinstance(line, str) else line for line in lines]
    head = b"\r\n".join(raw).replace(b"{len}", str(len(body)).encode())
    return head + b"\r\n\r\n" + body


def invite(
    *,
    start: str = "INVITE sip:user@example.com SIP/2.0",
    extra: list[str | bytes] | None = None,
    body: bytes = SDP,
    length: str = "{len}",
    name: str = "torture",
) -> bytes:
    """A plain INVITE to vary one thing at a time."""
    return message(
        [
            start,
            "To: sip:j.user@example.com",
            "From: sip:caller@example.net;tag=134161461246",
            "Max-Forwards: 7",
            f"Call-ID: {name}.0ha0isndaksdjasdf3234nas",
            "CSeq: 8 INVITE",
            "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234",
            *(extra or []),
            "Content-Type: application/sdp",
            f"Content-Length: {length}",
        ],
        body,
    )


def options(*, start: str, extra: list[str | bytes] | None = None, name: str = "opt") -> bytes:
    return message(
        [
            start,
            "Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bK23ab1",
            "To: sip:user@example.com",
            "From: sip:caller@example.org;tag=33242",
            "Max-Forwards: 70",
            f"Call-ID: {name}.kjh234lkjh",
            "CSeq: 3882340 OPTIONS",
            *(extra or []),
            "l: 0",
        ]
    )


WSINV_BODY = SDP.replace(b"v=0", b"v=0 ")
LONG = "extremely" * 40
LONG_VIAS = [f"Via: SIP/2.0/TCP sip{i}.example.com;branch=z9hG4bK{LONG[:60]}{i}" for i in range(60)]
MPART_BODY = (
    b"--7a9cbec02ceef655\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n"
    b"Hello\r\n"
    b"--7a9cbec02ceef655\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n" + bytes(range(256)) + b"\r\n\r\n\x00\x00\xff\r\n"
    b"--7a9cbec02ceef655--\r\n"
)

CASES: dict[str, bytes] = {
    # 3.1.1.1: short forms, any-case names, SP around colons, folding, odd but legal values.
    "wsinv": message(
        [
            "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0",
            "TO :",
            " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
            'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>',
            "  ;",
            "  tag = 98asjd8",
            "MaXfOrWaRdS: 0068",
            "Call-ID",
            " : wsinv.ndaksdj@192.0.2.1",
            "Content-Length   : {len}",
            "cseq: 0009",
            "  INVITE",
            "Via  : SIP  /   2.0",
            " /UDP",
            "    192.0.2.2;branch=390skdjuw",
            "s :",
            "NewFangledHeader:   newfangled value",
            " continued newfangled value",
            "UnknownHeaderWithUnusualValue: ;;,,;;,;",
            "Content-Type: application/sdp",
            "Route:",
            " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>",
            "v:  SIP  / 2.0  / TCP     spindle.example.com   ;",
            "  branch  =   z9hG4bK9ikj8  ,",
            " SIP  /    2.0   / UDP  192.168.255.111   ; branch=",
            " z9hG4bK30239",
            'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =',
            "      newvalue ;",
            "  secondparam ; q = 0.33",
        ],
        WSINV_BODY,
    ),
    # 3.1.1.2: every token character in the method, URI user and password, Call-ID;
    # BEL, NUL and DEL as quoted-pairs in a display name; UTF-8 in an extension header.
    "intmeth": message(
        [
            "!interesting-Method0123456789_*+`.%indeed'~ "
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,"
            "weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0",
            "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
            b'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" '
            b"<sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>",
            "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>"
            ";fromParam''~+*_!.-%=\"\xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd1\x8e"
            "\xd1\x89\xd0\xb8\xd0\xb9\";tag=_token~1'+`*%!-.",
            "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
            "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~",
            "Max-Forwards: 255",
            "extensionHeader-!.%*+_`'~: \ufeff大停電",
            "Content-Length: 0",
        ]
    ),
    # 3.1.1.3: % escapes in the Request-URI, To, From and Contact.
    "esc01": message(
        [
            "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0",
            "To: sip:%75se%72@example.com",
            "From: <sip:I%20have%20spaces@example.net>;tag=938",
            "Max-Forwards: 87",
            "i: esc01.239409asdfakjkn23onasd0-3234",
            "CSeq: 234234 INVITE",
            "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw",
            "C: application/sdp",
            "Contact:",
            "  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>",
            "Content-Length: {len}",
        ],
        SDP,
    ),
    # 3.1.1.4: escaped NULs in URIs, To and From in addr-spec form, two Contacts.
    "escnull": message(
        [
            "REGISTER sip:example.com SIP/2.0",
            "To: sip:null-%00-null@example.com",
            "From: sip:null-%00-null@example.com;tag=839923423",
            "Max-Forwards: 70",
            "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
            "CSeq: 14398234 REGISTER",
            "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw",
            "Contact: <sip:%00@host5.example.com>",
            "Contact: <sip:%00%00@host5.example.com>",
            "L:0",
        ]
    ),
    # 3.1.1.5: % that is not an escape, in the method and a display name.
    "esc02": message(
        [
            "RE%47IST%45R sip:registrar.example.com SIP/2.0",
            'To: "%Z%45" <sip:resource@example.com>',
            'From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23',
            "Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
            "Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234",
            "CSeq: 29344 RE%47IST%45R",
            "Max-Forwards: 70",
            "Contact: <sip:alias1@host1.example.com>",
            "C%6Fntact: <sip:alias2@host2.example.com>",
            "Contact: <sip:alias3@host3.example.com>",
            "l: 0",
        ]
    ),
    # 3.1.1.6: no LWS between a token display name and <.
    "lwsdisp": message(
        [
            "OPTIONS sip:user@example.com SIP/2.0",
            "To: sip:user@example.com",
            "From: caller<sip:caller@example.com>;tag=323",
            "Max-Forwards: 70",
            "Call-ID: lwsdisp.1234abcd@funky.example.com",
            "CSeq: 60 OPTIONS",
            "Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw",
            "l: 0",
        ]
    ),
    # 3.1.1.7: very long values: display name, tags, Call-ID, branch, many Vias, unknown header.
    "longreq": message(
        [
            "INVITE sip:user@example.com SIP/2.0",
            f'To: "I have a user name of {LONG} proportion" <sip:user@example.com:6000;'
            f"unknownparam1=very{LONG}longvalue;longparam{LONG}name=shortvalue>",
            f"F: sip:amazinglylongcallername{LONG}@example.net;tag=12{LONG}982;unknownheaderparam"
            f"{LONG}name=unknowheaderparam{LONG}value;unknownValueless{LONG}paramname",
            f"Call-ID: longreq.one{LONG}really{LONG}longcallid",
            "CSeq: 3882340 INVITE",
            f"Unknown-{LONG}-Name: unknown-{LONG}-value; unknown-{LONG}-parameter-name = "
            f"unknown-{LONG}-parameter-value",
            f"Via: SIP/2.0/TCP sip33.example.com;branch=z9hG4bK{LONG}",
            *LONG_VIAS,
            "Max-Forwards: 70",
            f"Contact: <sip:amazinglylongcallername{LONG}@host5.example.net>",
            "Content-Type: application/sdp",
            "l: {len}",
        ],
        SDP,
    ),
    # 3.1.1.8: a second message after Content-Length in one datagram: ignored.
    "dblreq": message(
        [
            "REGISTER sip:example.com SIP/2.0",
            "To: sip:j.user@example.com",
            "From: sip:j.user@example.com;tag=43251j3j324",
            "Max-Forwards: 8",
            "I: dblreq.0ha0isndaksdj99sdfafnl3lk233412",
            "Contact: sip:j.user@host.example.com",
            "CSeq: 8 REGISTER",
            "Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492",
            "Content-Length: 0",
        ]
    )
    + invite(start="INVITE sip:joe@example.com SIP/2.0", name="dblreq"),
    # 3.1.1.9: ; parameters inside the user part of the Request-URI.
    "semiuri": options(start="OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0"),
    # 3.1.1.10: SCTP, TLS and an unknown transport in Vias.
    "transports": message(
        [
            "OPTIONS sip:user@example.com SIP/2.0",
            "To: sip:user@example.com",
            "From: <sip:caller@example.com>;tag=323",
            "Max-Forwards: 70",
            "Call-ID: transports.kijh4akdnaqjkwendsasfdj",
            "Accept: application/sdp",
            "CSeq: 60 OPTIONS",
            "Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw",
            "Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf",
            "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj",
            "Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
            "Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee",
            "l: 0",
        ]
    ),
    # 3.1.1.11: a multipart body with binary octets, NULs and blank lines in it.
    "mpart01": message(
        [
            "MESSAGE sip:kumiko@example.org SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.2:5061;branch=z9hG4bK0e9e8e",
            "Max-Forwards: 70",
            "From: <sip:test@example.com>;tag=3ab6a78c",
            "To: <sip:kumiko@example.org>",
            "Call-ID: mpart01.d7e9be32c6a4ea0d@192.0.2.2",
            "CSeq: 1 MESSAGE",
            "Content-Type: multipart/mixed;boundary=7a9cbec02ceef655",
            "MIME-Version: 1.0",
            "Content-Length: {len}",
        ],
        MPART_BODY,
    ),
    # 3.1.1.12: a UTF-8 reason phrase with digits and symbols.
    "unreason": message(
        [
            "SIP/2.0 200 = 2**3 * 5**2 но сто девяносто девять - простое",
            "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923",
            "Call-ID: unreason.1234ksdfak3j2erwedfsASdf",
            "CSeq: 35 INVITE",
            "From: sip:user@example.com;tag=11141343",
            "To: sip:user@example.edu;tag=2229",
            "Content-Type: application/sdp",
            "Contact: <sip:user@host198.example.com>",
            "Content-Length: {len}",
        ],
        SDP,
    ),
    # 3.1.1.13: an empty reason phrase (the SP after the code is still there).
    "noreason": message(
        [
            "SIP/2.0 100 ",
            "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe",
            "Call-ID: noreason.asndj203insdf99223ndf",
            "CSeq: 35 INVITE",
            "From: <sip:user@example.com>;tag=39ansfi3",
            "To: <sip:user@example.edu>;tag=902jndnke3",
            "Content-Length: 0",
        ]
    ),
    # 3.1.2.1: empty parameters and elements in Via and Contact.
    "badinv01": invite(
        extra=["Via: SIP/2.0/UDP 192.0.2.15;;,;,,", 'Contact: "Joe" <sip:joe@example.org>;;;;'],
        name="badinv01",
    ),
    # 3.1.2.2: Content-Length larger than the body.
    "clerr": invite(length="9999", name="clerr"),
    # 3.1.2.3: negative Content-Length.
    "scalar02": invite(length="-999", name="scalar02"),
    # 3.1.2.4: CSeq over 2**32, Max-Forwards over 255, Expires over 2**32.
    "scalarlg": message(
        [
            "REGISTER sip:example.com SIP/2.0",
            "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3",
            "To: <sip:user@example.com>",
            "From: <sip:user@example.com>;tag=239232jh3",
            "CSeq: 36893488147419103232 REGISTER",
            "Call-ID: scalar1.09i21kjsdf8sdf9sdd",
            "Max-Forwards: 300",
            "Expires: 1000000000000000000000",
            "Contact: <sip:user@host129.example.com>;expires=280297596632815",
            "l: 0",
        ]
    ),
    # 3.1.2.5: a response with an overlarge Retry-After and a four-digit warn-code.
    "scalar1": message(
        [
            "SIP/2.0 503 Service Unavailable",
            "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129",
            "To: <sip:user@example.com>",
            "From: <sip:other@example.net>;tag=2easdjfejw",
            "CSeq: 9292394834772304023312 OPTIONS",
            "Call-ID: scalar1.sdf09ask3jedwwe",
            "Retry-After: 949302838503028349304023988",
            'Warning: 1812 overture "In Progress"',
            "Content-Length: 0",
        ]
    ),
    # 3.1.2.6: unterminated quoted string in a display name.
    "quotbal": invite(extra=[], name="quotbal").replace(
        b"To: sip:j.user@example.com", b'To: "Mr. J. User <sip:j.user@example.com>'
    ),
    # 3.1.2.7: Request-URI in <>.
    "ltgtruri": invite(start="INVITE <sip:user@example.com> SIP/2.0", name="ltgtruri"),
    # 3.1.2.8: LWS inside the Request-URI.
    "lwsruri": invite(start="INVITE sip:user@example.com; lr SIP/2.0", name="lwsruri"),
    # 3.1.2.9: several SPs between the Request-Line elements.
    "lwsstart": invite(start="INVITE  sip:user@example.com  SIP/2.0", name="lwsstart"),
    # 3.1.2.10: SPs after the SIP version.
    "trws": options(start="OPTIONS sip:remote-target@example.com SIP/2.0  ", name="trws"),
    # 3.1.2.11: escaped headers in the Request-URI.
    "escruri": invite(
        start="INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0", name="escruri"
    ),
    # 3.1.2.12: Date in a time zone other than GMT: wrong, but nothing here reads Date.
    "baddate": invite(extra=["Date: Fri, 01 Jan 2010 16:00:00 EST"], name="baddate"),
    # 3.1.2.13: a Contact URI with escaped headers not enclosed in <>.
    "regbadct": message(
        [
            "REGISTER sip:example.com SIP/2.0",
            "To: sip:user@example.com",
            "From: sip:user@example.com;tag=998332",
            "Max-Forwards: 70",
            "Call-ID: regbadct.k345asrl3fdbv@10.0.0.1",
            "CSeq: 1 REGISTER",
            "Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw",
            "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "l: 0",
        ]
    ),
    # 3.1.2.14: spaces inside <> around an addr-spec.
    "badaspec": options(
        start="OPTIONS sip:user@example.org SIP/2.0",
        extra=['Contact: "Watson, Thomas" < sip:t.watson@example.org >'],
        name="badaspec",
    ).replace(b"To: sip:user@example.com", b'To: "Watson, Thomas" < sip:t.watson@example.org >'),
    # 3.1.2.15: a comma in an unquoted display name.
    "baddn": options(start="OPTIONS sip:t.watson@example.org SIP/2.0", name="baddn").replace(
        b"From: sip:caller@example.org;tag=33242",
        b"From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
    ),
    # 3.1.2.16: SIP/7.0 in the Request-Line and the Via.
    "badvers": options(start="OPTIONS sip:t.watson@example.org SIP/7.0", name="badvers").replace(
        b"Via: SIP/2.0/UDP", b"Via: SIP/7.0/UDP"
    ),
    # 3.1.2.17: Request-Line method and CSeq method differ.
    "mismatch01": options(start="OPTIONS sip:user@example.com SIP/2.0", name="mismatch01").replace(
        b"CSeq: 3882340 OPTIONS", b"CSeq: 8 INVITE"
    ),
    # 3.1.2.18: an unknown method whose CSeq says INVITE.
    "mismatch02": invite(start="NEWMETHOD sip:user@example.com SIP/2.0", name="mismatch02"),
    # 3.1.2.19: a status code of more than three digits.
    "bigcode": message(
        [
            "SIP/2.0 4294967301 better not break the receiver",
            "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe",
            "Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3",
            "CSeq: 3882340 OPTIONS",
            "From: <sip:user@example.com>;tag=39ansfi3",
            "To: <sip:user@example.edu>;tag=902jndnke3",
            "Content-Length: 0",
        ]
    ),
    # 3.2.1: a branch that is only the magic cookie: a transaction matter, not a parse error.
    "badbranch": options(start="OPTIONS sip:user@example.com SIP/2.0", name="badbranch").replace(
        b"branch=z9hG4bK23ab1", b"branch=z9hG4bK"
    ),
    # 3.3.1: no Call-ID, From or To.
    "insuf": message(
        [
            "INVITE sip:user@example.com SIP/2.0",
            "CSeq: 193942 INVITE",
            "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf",
            "Content-Type: application/sdp",
            "l: {len}",
        ],
        SDP,
    ),
    # 3.3.2: an unknown scheme in the Request-URI (a UAS would say 416).
    "unkscm": options(
        start="OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0", name="unkscm"
    ),
    # 3.3.3: a known but unsupported scheme in the Request-URI.
    "novelsc": options(start="OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0", name="novelsc"),
    # 3.3.4: unknown URI schemes in To, From and Contact.
    "unksm2": message(
        [
            "REGISTER sip:example.com SIP/2.0",
            "To: isbn:2983792873",
            "From: <http://www.example.com>;tag=3234233",
            "Call-ID: unksm2.daksdj@hyphenated-host.example.com",
            "CSeq: 234902 REGISTER",
            "Max-Forwards: 70",
            "Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw",
            "Contact: <name:John_Smith>",
            "l: 0",
        ]
    ),
    # 3.3.5: Require and Proxy-Require with unknown extensions: the application answers 420.
    "bext01": options(
        start="OPTIONS sip:user@example.com SIP/2.0",
        extra=[
            "Require: nothingSupportedHere",
            "Proxy-Require: noProxiesSupportThis, nothingSupportedHere",
        ],
        name="bext01",
    ),
    # 3.3.6: an unknown Content-Type: the application answers 415.
    "invut": invite(name="invut").replace(
        b"Content-Type: application/sdp", b"Content-Type: application/unknownformat"
    ),
    # 3.3.8: two To, two From, two Call-ID, two CSeq.
    "multi01": invite(
        extra=[
            "To: sip:another.user@example.com",
            "From: sip:caller2@example.net;tag=2",
            "Call-ID: multi01.second",
            "CSeq: 9 INVITE",
        ],
        name="multi01",
    ),
    # 3.3.9: two Content-Length values that disagree.
    "mcl01": options(start="OPTIONS sip:user@example.com SIP/2.0", name="mcl01").replace(
        b"l: 0", b"Content-Length: 0\r\ns: foo\r\nContent-Length: 2"
    )
    + b"ab",
    # 3.3.10: a 200 sent to a broadcast address: the transport decides, the parser accepts.
    "bcast": message(
        [
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923;received=255.255.255.255",
            "Call-ID: bcast.1234ksdfak3j2erwedfsASdf",
            "CSeq: 35 INVITE",
            "From: sip:user@example.com;tag=11141343",
            "To: sip:user@example.edu;tag=2229",
            "Contact: <sip:user@host28.example.com>",
            "Content-Length: 0",
        ]
    ),
    # 3.3.12: Max-Forwards of 0 at a UAS: answered normally.
    "zeromf": options(start="OPTIONS sip:user@example.com SIP/2.0", name="zeromf").replace(
        b"Max-Forwards: 70", b"Max-Forwards: 0"
    ),
    # 3.3.13: a Contact with an expires parameter and a q value.
    "cparam01": message(
        [
            "REGISTER sip:example.com SIP/2.0",
            "Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw",
            "Max-Forwards: 70",
            "From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe",
            "To: sip:watson@example.com",
            "Call-ID: cparam01.70710@saturn.example.com",
            "CSeq: 2 REGISTER",
            "Contact: sip:+19725552222@gw1.example.net;unknownparam",
            "l: 0",
        ]
    ),
    # 3.3.15: an Accept that excludes what the body is: the application answers 415.
    "sdp01": invite(extra=["Accept: text/nobodyKnowsThis"], name="sdp01"),
    # 3.4.1: an RFC 2543 INVITE: no branch cookie, no tags.
    "inv2543": message(
        [
            "INVITE sip:UserB@example.com SIP/2.0",
            "Via: SIP/2.0/UDP iftgw.example.com",
            "From: <sip:+13035551111@ift.client.example.net;user=phone>",
            "Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>",
            "To: sip:+16505552222@ss1.example.net;user=phone",
            "Call-ID: inv2543.1717@ift.client.example.com",
            "CSeq: 56 INVITE",
            "Content-Type: application/sdp",
            "Content-Length: {len}",
        ],
        SDP,
    ),
    # Ours, on the same lines: a body without Content-Length over UDP is the rest of the datagram.
    "nolength": options(start="OPTIONS sip:user@example.com SIP/2.0", name="nolength").replace(
        b"l: 0\r\n", b"Subject: rest of datagram\r\n"
    )
    + b"tail",
    # Ours: CRLFs before the start line are ignored (RFC 3261 section 7.5).
    "leadcrlf": b"\r\n\r\n"
    + options(start="OPTIONS sip:user@example.com SIP/2.0", name="leadcrlf"),
    # Ours: non-UTF-8 octets in a header nobody reads: kept, not fatal.
    "latin1": options(
        start="OPTIONS sip:user@example.com SIP/2.0",
        extra=[b"Subject: caf\xe9 cr\xe8me", b"Organization: \xff\xfe"],
        name="latin1",
    ),
    # Ours: non-UTF-8 octets in a Via: refused.
    "badutf8via": options(start="OPTIONS sip:user@example.com SIP/2.0", name="badutf8via").replace(
        b"host1.example.com", b"host1.ex\xe9mple.com"
    ),
    # Ours: a body of NULs, exactly Content-Length long.
    "nulbody": invite(body=b"\x00" * 64, name="nulbody"),
    # Ours: a header line without a colon.
    "nocolon": options(
        start="OPTIONS sip:user@example.com SIP/2.0", extra=["This is not a header"], name="nocolon"
    ),
    # Ours: a bare LF inside a header value (header injection shape).
    "barelf": options(
        start="OPTIONS sip:user@example.com SIP/2.0",
        extra=["Subject: a\nVia: injected"],
        name="barelf",
    ),
}


def main() -> None:
    for name, data in CASES.items():
        (HERE / f"{name}.sip").write_bytes(data)


if __name__ == "__main__":
    main()
