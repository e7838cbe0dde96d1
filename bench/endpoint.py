"""Many ``LeanPeer``s on one event loop: their UDP sockets and the one 20 ms tick.

No task and no queue per peer. Datagrams go from the loop's datagram callback
straight into ``LeanPeer.datagram_received``; one timer sends every peer's
audio packet each 20 ms and runs the peers' due timers. With ``slots`` > 1
the peers are spread over that many evenly spaced sub-ticks (a timer every
20/slots ms, each sending for its share), so the bridge sees a steady stream
rather than one burst per 20 ms; every peer still sends one packet each 20 ms.

Sockets, ``shared`` = 0: one per peer (its own port, the loop demultiplexes).
``shared`` = N: N sockets, peers spread over them; a datagram finds its peer
by its source address, learnt from the answer's candidates and from the
USERNAME of STUN requests (``remote ufrag:our ufrag``) for checks that come
from an address the answer did not name.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from aioice import stun

from bench.ice_agent import Address
from bench.webrtc_peer import LeanPeer
from bench.webrtc_sdp import AudioCodec, check_addresses

PERIOD = 0.020
LATE = 0.005
"A sub-tick this late (s) is counted as late."
RESYNC = 0.100
"A sub-tick this late is not caught up: the schedule restarts from now."
SHARED_RCVBUF = 4 << 20
now = time.monotonic


class _PeerProtocol(asyncio.DatagramProtocol):
    """One peer's own socket."""

    __slots__ = ("peer", "transport")

    def __init__(self) -> None:
        self.peer: LeanPeer | None = None
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        peer = self.peer
        if peer is not None:
            peer.datagram_received(data, addr, now())

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable: a candidate that does not answer, or a call gone


class _SharedProtocol(asyncio.DatagramProtocol):
    """A socket many peers share, demultiplexed by source address."""

    def __init__(self) -> None:
        self.by_addr: dict[Address, LeanPeer] = {}
        self.by_ufrag: dict[str, LeanPeer] = {}
        self.transport: Any = None
        self.unknown = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        peer = self.by_addr.get(addr)
        if peer is None:
            peer = self._by_username(data)
            if peer is None:
                self.unknown += 1
                return
            self.by_addr[addr] = peer
        peer.datagram_received(data, addr, now())

    def _by_username(self, data: bytes) -> LeanPeer | None:
        if not data or data[0] > 3:
            return None
        try:
            username = stun.parse_message(data).attributes.get("USERNAME")
        except ValueError:
            return None
        if not isinstance(username, str):
            return None
        return self.by_ufrag.get(username.partition(":")[0])

    def error_received(self, exc: Exception) -> None:
        pass


class Endpoint:
    """Opens peers, owns their sockets, ticks them. Start with ``start``, end with ``close``."""

    def __init__(
        self, host: str = "127.0.0.1", shared: int = 0, slots: int = 1, period: float = PERIOD
    ) -> None:
        if slots < 1 or shared < 0:
            raise ValueError("slots must be >= 1 and shared >= 0")
        self.host = host
        self.shared = shared
        self.slots = slots
        self.period = period
        self.peers: set[LeanPeer] = set()
        self._groups: list[list[LeanPeer]] = [[] for _ in range(slots)]
        self._own: dict[LeanPeer, _PeerProtocol] = {}
        self._shared: list[_SharedProtocol] = []
        self._home: dict[LeanPeer, _SharedProtocol] = {}
        self._opened = 0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._slot = 0
        self.ticks = 0
        self.late_ticks = 0
        self.resyncs = 0
        self.max_late = 0.0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.shared):
            sock = self._socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SHARED_RCVBUF)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SHARED_RCVBUF)
            protocol = _SharedProtocol()
            await loop.create_datagram_endpoint(lambda p=protocol: p, sock=sock)
            self._shared.append(protocol)
        self._due = now()
        self._handle = loop.call_later(0, self._tick)

    def _socket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def open_peer(self, codec: AudioCodec, peer_id: int) -> LeanPeer:
        """A new peer with its port; it is ticked from now on until ``close_peer``."""
        index = self._opened
        self._opened += 1
        if self._shared:
            shared = self._shared[index % len(self._shared)]
            port = shared.transport.get_extra_info("sockname")[1]
            peer = LeanPeer(codec, self.host, port, shared.transport.sendto, peer_id)
            shared.by_ufrag[peer.ice.local_ufrag] = peer
            self._home[peer] = shared
        else:
            sock = self._socket()
            own = _PeerProtocol()
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(lambda: own, sock=sock)
            peer = LeanPeer(codec, self.host, sock.getsockname()[1], transport.sendto, peer_id)
            own.peer = peer
            self._own[peer] = own
        self.peers.add(peer)
        self._groups[index % self.slots].append(peer)
        return peer

    def accept_answer(self, peer: LeanPeer, sdp: str) -> None:
        """``peer.accept_answer``, and route the answer's addresses to it on a shared socket."""
        shared = self._home.get(peer)
        peer.accept_answer(sdp, now())
        if shared is not None and peer.remote is not None:
            for address in check_addresses(peer.remote.candidates):
                shared.by_addr[address] = peer

    def close_peer(self, peer: LeanPeer) -> None:
        """Stop ticking ``peer``, send its DTLS close_notify, close its socket."""
        if peer not in self.peers:
            return
        peer.close()
        self.peers.discard(peer)
        for group in self._groups:
            if peer in group:
                group.remove(peer)
                break
        own = self._own.pop(peer, None)
        if own is not None and own.transport is not None:
            own.transport.close()
        shared = self._home.pop(peer, None)
        if shared is not None:
            shared.by_ufrag.pop(peer.ice.local_ufrag, None)
            for address in [a for a, p in shared.by_addr.items() if p is peer]:
                del shared.by_addr[address]

    def _tick(self) -> None:
        start = now()
        late = start - self._due
        self.ticks += 1
        if late > self.max_late:
            self.max_late = late
        if late > LATE:
            self.late_ticks += 1
        for peer in self._groups[self._slot]:
            peer.tick(now())
        self._slot = (self._slot + 1) % self.slots
        step = self.period / self.slots
        self._due += step
        if now() - self._due > RESYNC:
            self.resyncs += 1
            self._due = now()
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(max(0.0, self._due - now()), self._tick)

    @property
    def unknown_datagrams(self) -> int:
        return sum(s.unknown for s in self._shared)

    def close(self) -> None:
        """Close every peer and socket, stop the tick."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for peer in list(self.peers):
            self.close_peer(peer)
        for shared in self._shared:
            if shared.transport is not None:
                shared.transport.close()
        self._shared.clear()
