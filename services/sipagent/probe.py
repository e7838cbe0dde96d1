"""``bridge probe``: check a trunk without placing a call.

Four steps, each one ``✓ step: detail`` or ``✗ step: reason`` line (``–`` for
a step the far end gives no way to check), stopping after a step that makes
the rest meaningless:

1. ``DNS``: resolve the trunk host as a call would (RFC 3263: NAPTR, SRV,
   A/AAAA; the outbound proxy instead when one is set); the first target is
   probed.
2. ``connect``: UDP has no connection; TCP opens one (timed); TLS also shows
   the certificate's subject and expiry, or why it was refused.
3. ``OPTIONS``: one OPTIONS round trip through the client transaction.
4. ``credentials``: ``REGISTER`` with ``Expires: 0`` (no binding, no billable
   call), the digest challenge answered with the agent's own code.

Every wait is under the step timeout. The password is only ever hashed.
Exit code: 0 when every step passed, 1 otherwise, 2 for bad settings.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TextIO

from sipmessage import Request, Response

from services.common import sdp
from services.common.providers import DEFAULT_TRUNK, Trunk
from services.common.settings import (
    Settings,
    SettingsError,
    load_settings,
    local_address_toward,
)
from services.common.sip.auth import CHALLENGE_HEADERS, AuthError, DigestAuthenticator
from services.common.sip.message import (
    SipParseError,
    make_request,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from services.common.sip.transaction import (
    T1,
    NonInviteClientTransaction,
    ResponseReceived,
    TransactionTimedOut,
)
from services.common.sipaddr import OutboundProxy, host_literal
from services.sipagent.probe_channel import (
    Channel,
    TcpChannel,
    UdpChannel,
    certificate_summary,
    tls_failure,
)
from services.sipagent.sipdns import ResolveError, SipResolver
from services.sipagent.transport import client_context

USER_AGENT = "webrtc-sip-bridge/0.1 (probe)"
DEFAULT_TIMEOUT = 5.0
"Seconds allowed to each step."

Addr = tuple[str, int]


@dataclass
class Step:
    """The outcome of one step."""

    name: str
    ok: bool
    detail: str
    ms: float | None = None
    "How long the step took, in milliseconds (None: not timed)."
    checked: bool = True
    "False: the far end gave no way to check this step; it passes, marked ``–``."


@dataclass
class Report:
    """Every step run against one trunk."""

    trunk: str
    host: str
    port: int
    transport: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_json(self) -> str:
        data = {
            "trunk": self.trunk,
            "host": self.host,
            "port": self.port,
            "transport": self.transport,
            "ok": self.ok,
            "steps": [asdict(step) for step in self.steps],
        }
        return json.dumps(data, ensure_ascii=False)

    def to_text(self) -> str:
        return "\n".join(format_step(step) for step in self.steps)


def format_step(step: Step) -> str:
    """``✓ name: detail``, ``✗ name: reason`` or ``– name: why not checked``, on one line."""
    mark = ("✓" if step.checked else "–") if step.ok else "✗"
    detail = " ".join(step.detail.split())  # never more than one line
    return f"{mark} {step.name}: {detail}"


def codecs_of(text: str) -> list[str]:
    """The encoding names an SDP's audio sections offer, in order (rtpmap names, RFC 3551
    static types), read by the shared model; empty when it cannot be read."""
    try:
        description = sdp.parse(text)
    except sdp.SdpError:
        return []
    codecs: list[str] = []
    for media in description.media:
        if media.media != "audio":
            continue
        for pt in media.payload_types:
            rtpmap = media.rtpmap(pt)
            if rtpmap is not None and rtpmap.encoding not in codecs:
                codecs.append(rtpmap.encoding)
    return codecs


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _status(response: Response) -> str:
    return f"{response.code} {response.phrase}".strip()


# --- the probe --------------------------------------------------------------------


class ProbeError(Exception):
    """A round trip without a final response; the message says why."""


class Probe:
    """The steps against one trunk. ``run()`` returns the report."""

    def __init__(
        self,
        trunk: Trunk,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        bind_host: str = "0.0.0.0",
        public_ip: str = "",
        t1: float = T1,
        on_step: Callable[[Step], None] | None = None,
        dns_servers: Sequence[tuple[str, int]] = (),
        tls_ca: str = "",
        tls_verify: bool = True,
        outbound_proxy: OutboundProxy | None = None,
    ) -> None:
        """``tls_ca``, ``outbound_proxy``: the settings', unless the trunk has its own."""
        self.trunk = trunk
        self.timeout = timeout
        self.bind_host = bind_host
        self.public_ip = public_ip
        self.t1 = t1
        self.report = Report(trunk.name, trunk.host, trunk.default_port, trunk.transport)
        self._on_step = on_step
        self._channel: Channel | None = None
        self._address: Addr = ("", 0)
        self._transport = trunk.transport
        self._server_name = trunk.host
        self._resolver = SipResolver(dns_servers, ipv6=":" in bind_host, timeout=timeout)
        self._tls_ca = trunk.tls_ca or tls_ca
        self._tls_verify = tls_verify
        self._proxy = trunk.outbound_proxy or outbound_proxy
        self._call_id = new_call_id()
        self._from_tag = new_tag()
        self._cseq = 0
        self._unanswered = False
        "OPTIONS got no final response (timeout, closed connection)."

    def _add(self, step: Step) -> bool:
        self.report.steps.append(step)
        if self._on_step is not None:
            self._on_step(step)
        return step.ok

    async def run(self) -> Report:
        try:
            if not self._add(await self.dns()):
                return self.report
            if not self._add(await self.connect()):
                return self.report
            if not self._add(await self.options()) and self._unanswered:
                return self.report  # REGISTER would meet the same silence
            self._add(await self.credentials())
            return self.report
        finally:
            if self._channel is not None:
                await self._channel.close()

    # --- 1. DNS

    async def dns(self) -> Step:
        trunk, proxy = self.trunk, self._proxy
        host, port = trunk.host, trunk.port
        transport, explicit = trunk.transport, trunk.transport_explicit
        if proxy is not None:
            host, port = proxy.host, proxy.port
            transport = proxy.transport or transport
            explicit = bool(proxy.transport) or explicit
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            resolution = await self._resolver.resolve(host, port, transport, explicit=explicit)
        except ResolveError as exc:
            return Step("DNS", False, str(exc))
        elapsed = _ms(loop.time() - started)
        first = resolution.targets[0]
        self._address = first.addr
        self._transport = first.transport
        self._server_name = first.server_name
        self.report.port, self.report.transport = first.port, first.transport
        found = ", ".join(str(target) for target in resolution.targets)
        via = f"outbound proxy {host}: " if proxy is not None else ""
        detail = "; ".join([*resolution.trail, f"{via}{host} → {found}"])
        return Step("DNS", True, detail, elapsed)

    # --- 2. connect

    async def connect(self) -> Step:
        transport = self._transport
        address = self._address
        if transport == "udp":
            channel = UdpChannel(address)
            try:
                await channel.open(self.bind_host)
            except OSError as exc:
                return Step("connect", False, f"cannot open a UDP socket: {exc.strerror or exc}")
            self._channel = channel
            return Step("connect", True, "udp (no connection)")
        loop = asyncio.get_running_loop()
        started = loop.time()
        where = f"{transport} {host_literal(address[0])}:{address[1]}"
        tls: dict[str, object] = {}
        if transport == "tls":
            # RFC 5922: the certificate must name the host that was resolved.
            context = client_context(self._tls_ca, self._tls_verify)
            tls = {"ssl": context, "server_hostname": self._server_name}
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address[0], address[1], **tls),  # type: ignore[arg-type]
                self.timeout,
            )
        except TimeoutError:
            return Step("connect", False, f"{where}: no connection in {self.timeout:g} s")
        except ssl.SSLError as exc:
            return Step("connect", False, f"{where}: {tls_failure(exc)}")
        except OSError as exc:
            return Step("connect", False, f"{where}: {exc.strerror or exc}")
        elapsed = _ms(loop.time() - started)
        stream = TcpChannel(reader, writer, transport)
        self._channel = stream
        detail = f"{where} connected in {elapsed:g} ms"
        if transport == "tls":
            detail += f"; certificate {certificate_summary(stream)}"
            if not self._tls_verify:
                detail += " (not verified: SIP_TLS_VERIFY=false)"
        return Step("connect", True, detail, elapsed)

    # --- requests

    @property
    def domain(self) -> str:
        return host_literal(self.trunk.realm_domain)

    @property
    def scheme(self) -> str:
        return "sips" if self._transport == "tls" else "sip"

    def _sent_by(self) -> str:
        assert self._channel is not None
        local_ip = self.public_ip or local_address_toward(*self._address)
        return f"{host_literal(local_ip)}:{self._channel.local_port}"

    def request(
        self, method: str, uri: str, to: str, headers: Sequence[tuple[str, str]] = ()
    ) -> Request:
        """A new request of the probe's one Call-ID, its own branch and the next CSeq."""
        assert self._channel is not None
        self._cseq += 1
        user = self.trunk.username or "anonymous"
        via = f"SIP/2.0/{self._channel.name.upper()} {self._sent_by()};branch={new_branch()};rport"
        if self._proxy is not None:
            headers = [("Route", self._proxy.route(self._transport)), *headers]
        return make_request(
            method,
            uri,
            [
                ("Via", via),
                ("Max-Forwards", "70"),
                ("From", f"<{self.scheme}:{user}@{self.domain}>;tag={self._from_tag}"),
                ("To", to),
                ("Call-ID", self._call_id),
                ("CSeq", f"{self._cseq} {method}"),
                *headers,
                ("User-Agent", USER_AGENT),
            ],
        )

    async def round_trip(self, request: Request, deadline: float) -> Response:
        """The final response to ``request``; ``ProbeError`` by ``deadline`` or Timer F."""
        channel = self._channel
        assert channel is not None
        loop = asyncio.get_running_loop()
        transaction = NonInviteClientTransaction(request, reliable=channel.reliable, t1=self.t1)
        transaction.start(loop.time())
        while True:
            for message in transaction.messages_to_send():
                channel.send(bytes(message))
            while (event := transaction.next_event()) is not None:
                if isinstance(event, TransactionTimedOut):
                    raise ProbeError("no answer (Timer F)")
                if isinstance(event, ResponseReceived) and event.response.code >= 200:
                    return event.response
            now = loop.time()
            if now >= deadline:
                raise ProbeError(f"no answer in {self.timeout:g} s (timeout)")
            timer = transaction.get_timer()
            wake = deadline if timer is None else min(timer, deadline)
            try:
                data = await asyncio.wait_for(channel.incoming.get(), max(wake - now, 0.0))
            except TimeoutError:
                if timer is not None and timer <= deadline:
                    transaction.handle_timer(max(loop.time(), timer))
                continue
            if not data:
                raise ProbeError("connection closed by the far end")
            try:
                message = parse_message(data)
            except SipParseError:
                continue
            if isinstance(message, Response) and transaction.matches(message):
                transaction.receive(message, loop.time())

    # --- 3. OPTIONS

    async def options(self) -> Step:
        loop = asyncio.get_running_loop()
        uri = f"{self.scheme}:{self.domain}"
        request = self.request("OPTIONS", uri, f"<{uri}>", [("Accept", "application/sdp")])
        started = loop.time()
        try:
            response = await self.round_trip(request, started + self.timeout)
        except ProbeError as exc:
            self._unanswered = True
            return Step("OPTIONS", False, str(exc))
        elapsed = _ms(loop.time() - started)
        parts = [f"{_status(response)} in {elapsed:g} ms"]
        for name in ("Allow", "Supported"):
            values = response.headers.getlist(name)
            if values:
                parts.append(f"{name}: {', '.join(values)}")
        agent = response.headers.get("Server") or response.headers.get("User-Agent")
        if agent:
            parts.append(f"Server: {agent}")
        content_type = (response.headers.get("Content-Type") or "").lower()
        codecs = codecs_of(response.body.decode("utf-8", "replace")) if response.body else []
        if codecs and content_type.startswith("application/sdp"):
            parts.append(f"codecs: {', '.join(codecs)}")
        else:
            parts.append("codecs: unknown (no SDP in the answer)")
        # Any answer below 500 proves the trunk is there; 5xx/6xx is a failing trunk.
        return Step("OPTIONS", response.code < 500, "; ".join(parts), elapsed)

    # --- 4. credentials

    async def credentials(self) -> Step:
        trunk = self.trunk
        if not trunk.username:
            return Step("credentials", True, "no username configured (nothing to check)")
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.timeout
        uri = f"{self.scheme}:{self.domain}"
        aor = f"<{self.scheme}:{trunk.username}@{self.domain}>"
        assert self._channel is not None
        contact = f"<sip:{trunk.username}@{self._sent_by()};transport={self._channel.name}>"
        if self.scheme == "sips":
            contact = f"<sips:{trunk.username}@{self._sent_by()}>"
        extra = [("Contact", contact), ("Expires", "0")]
        authenticator = DigestAuthenticator(trunk.username, trunk.password)
        try:
            response = await self.round_trip(self.request("REGISTER", uri, aor, extra), deadline)
            challenged = response.code in CHALLENGE_HEADERS
            if challenged:
                try:
                    header = authenticator.authorize(response, "REGISTER", uri)
                except AuthError as exc:
                    return Step("credentials", False, f"cannot answer the challenge: {exc}")
                request = self.request("REGISTER", uri, aor, [*extra, header])
                response = await self.round_trip(request, deadline)
        except ProbeError as exc:
            return Step("credentials", False, f"REGISTER: {exc}")
        elapsed = _ms(loop.time() - started)
        status = _status(response)
        if 200 <= response.code < 300:
            if challenged:
                return Step("credentials", True, f"accepted ({status})", elapsed)
            return Step(
                "credentials", True, f"no challenge (registrar did not ask): {status}", elapsed
            )
        if response.code in (405, 501):
            # Trunks that authenticate each INVITE (or by source address) refuse REGISTER:
            # nothing is wrong, but only a call would check the credentials.
            reason = "not checked: REGISTER not supported; the first call's challenge checks them"
            return Step("credentials", True, f"{reason} ({status})", elapsed, checked=False)
        if challenged:
            return Step("credentials", False, f"refused ({status})", elapsed)
        return Step("credentials", False, f"REGISTER answered {status}", elapsed)


# --- the command ------------------------------------------------------------------


def pick_trunk(settings: Settings, name: str | None) -> Trunk:
    """The trunk to probe; ``SettingsError`` naming the setting when there is none."""
    if name is None or name == DEFAULT_TRUNK:
        if settings.providers_config is not None and DEFAULT_TRUNK in settings.providers.trunks:
            trunk = settings.providers.trunks[DEFAULT_TRUNK]
        elif settings.default_trunk is not None:
            trunk = settings.default_trunk
        else:
            raise SettingsError("SIP_TRUNK_HOST is not set (or give --trunk NAME)")
    else:
        if settings.providers_config is None:
            raise SettingsError(f"--trunk {name}: PROVIDERS_FILE is not set")
        trunks = settings.providers_config.trunks
        if name not in trunks:
            known = ", ".join(sorted(trunks)) or "none"
            raise SettingsError(f"--trunk {name}: no such trunk in PROVIDERS_FILE (known: {known})")
        trunk = trunks[name]
    if trunk.missing_secret:
        raise SettingsError(f"trunk {trunk.name!r}: password_env {trunk.password_env} is not set")
    return trunk


def main(
    trunk_name: str | None = None,
    as_json: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the probe; print lines (or one JSON object); return the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not 0 < timeout <= 300:
        print(
            f"bridge probe: --timeout must be between 0 and 300 seconds, got {timeout:g}", file=err
        )
        return 2
    try:
        settings = load_settings()
        trunk = pick_trunk(settings, trunk_name)
    except SettingsError as exc:
        print(f"bridge probe: {exc}", file=err)
        return 2

    def show(step: Step) -> None:
        if not as_json:
            print(format_step(step), file=out, flush=True)

    probe = Probe(
        trunk,
        timeout=timeout,
        bind_host=settings.sip_bind_host,
        public_ip=settings.public_ip,
        on_step=show,
        dns_servers=settings.sip_dns_servers,
        tls_ca=settings.sip_tls_ca,
        tls_verify=settings.sip_tls_verify,
        outbound_proxy=settings.sip_outbound_proxy,
    )
    report = asyncio.run(probe.run())
    if as_json:
        print(report.to_json(), file=out)
    return report.exit_code
