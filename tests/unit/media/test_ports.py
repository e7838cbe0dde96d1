import random
import socket

import pytest

from proto import errors
from services.media.ports import NoPortsError, PortAllocator


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def free_range(count: int) -> tuple[int, int]:
    """A range of ``count`` even ports that are free right now (no fixed ports in tests)."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 2)
        socks = []
        try:
            for port in range(base, base + 2 * count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base, base + 2 * count - 1
    raise RuntimeError("no free port range")


def make(count: int, quarantine: float = 5.0) -> tuple[PortAllocator, Clock]:
    low, high = free_range(count)
    clock = Clock()
    return PortAllocator(low, high, host="127.0.0.1", quarantine=quarantine, clock=clock), clock


def test_even_ports_actually_bound() -> None:
    allocator, _ = make(3)
    taken = [allocator.allocate() for _ in range(3)]
    try:
        for port, sock, rtcp in taken:
            assert port % 2 == 0
            assert sock.getsockname()[1] == port
            assert rtcp.getsockname()[1] == port + 1
        assert len({port for port, _, _ in taken}) == 3
        assert allocator.in_use == 3
    finally:
        for _, sock, rtcp in taken:
            sock.close()
            rtcp.close()


def test_odd_minimum_rounds_up() -> None:
    low, high = free_range(2)
    allocator = PortAllocator(low + 1, high, host="127.0.0.1")
    port, sock, rtcp = allocator.allocate()
    sock.close()
    rtcp.close()
    assert port == low + 2
    with pytest.raises(NoPortsError):
        allocator.allocate()


def test_range_without_a_pair_is_refused() -> None:
    with pytest.raises(ValueError):
        PortAllocator(10000, 10000)


def test_exhaustion() -> None:
    allocator, _ = make(1)
    _port, sock, rtcp = allocator.allocate()
    try:
        with pytest.raises(NoPortsError) as info:
            allocator.allocate()
        assert info.value.code == errors.NO_PORTS
    finally:
        sock.close()
        rtcp.close()


def test_quarantine() -> None:
    allocator, clock = make(1, quarantine=5.0)
    port, sock, rtcp = allocator.allocate()
    sock.close()
    rtcp.close()
    allocator.release(port)
    assert allocator.in_use == 0
    clock.now += 4.9
    with pytest.raises(NoPortsError):
        allocator.allocate()
    clock.now += 0.2
    again, sock, rtcp = allocator.allocate()
    sock.close()
    rtcp.close()
    assert again == port


def test_released_port_is_reused_last() -> None:
    allocator, clock = make(2, quarantine=0.0)
    first, sock, rtcp = allocator.allocate()
    sock.close()
    rtcp.close()
    allocator.release(first)
    clock.now += 1
    second, sock, rtcp = allocator.allocate()
    sock.close()
    rtcp.close()
    assert second != first


def test_port_held_by_another_socket_is_skipped() -> None:
    low, high = free_range(2)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", low))
    try:
        allocator = PortAllocator(low, high, host="127.0.0.1")
        port, sock, rtcp = allocator.allocate()
        sock.close()
        rtcp.close()
        assert port == low + 2
    finally:
        squatter.close()


def test_double_release_is_harmless() -> None:
    allocator, _ = make(1)
    port, sock, rtcp = allocator.allocate()
    sock.close()
    rtcp.close()
    allocator.release(port)
    allocator.release(port)
    assert allocator.in_use == 0


def test_port_whose_rtcp_port_is_taken_is_skipped() -> None:
    low, high = free_range(2)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", low + 1))
    try:
        allocator = PortAllocator(low, high, host="127.0.0.1")
        port, sock, rtcp = allocator.allocate()
        sock.close()
        rtcp.close()
        assert port == low + 2
    finally:
        squatter.close()
