"""How ``bridge media --workers N`` shares one host's media settings among N workers.

Pure: settings in, one ``WorkerSpec`` per worker out. Worker ``i`` (from 0)
is a fleet member of its own:

- instance id ``<INSTANCE_ID>-w<i>``: its heartbeats, its work subject and its
  call records; a restarted worker keeps it, and ends what its predecessor left;
- RTP ports: slice ``i`` of ``RTP_PORT_MIN..RTP_PORT_MAX``. The range's
  RTP/RTCP pairs (an even port and the next odd one) are dealt out in
  disjoint, even-aligned slices, one pair more to the first ones when they do
  not divide evenly. Each slice must hold ``MAX_CALLS`` pairs: a worker takes
  that many calls, each needs a pair;
- its ops endpoint on ``OPS_PORT + i`` (with ``OPS_PORT`` 0, each a free port);
- ``MAX_CALLS`` is each worker's own.

One worker is the single process of before: its settings are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.settings import Settings, SettingsError


@dataclass(frozen=True)
class WorkerSpec:
    """What makes one worker different from the others."""

    index: int
    instance_id: str
    rtp_port_min: int
    rtp_port_max: int
    ops_port: int
    "0: a free port of its own."

    def environ(self) -> dict[str, str]:
        """The settings the worker gets over the parent's environment."""
        return {
            "INSTANCE_ID": self.instance_id,
            "RTP_PORT_MIN": str(self.rtp_port_min),
            "RTP_PORT_MAX": str(self.rtp_port_max),
            "OPS_PORT": str(self.ops_port),
        }


def rtp_slices(port_min: int, port_max: int, workers: int, max_calls: int) -> list[range]:
    """``workers`` disjoint slices of ``port_min..port_max``, each ``range(first, last + 1)``.

    Each starts on an even port and ends on an odd one, so every RTP port of
    a slice has its RTCP port in the same slice. Raises ``SettingsError``
    (naming RTP_PORT_MIN and RTP_PORT_MAX) when a slice would hold fewer than
    ``max_calls`` pairs.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    first = port_min + (port_min & 1)
    pairs = max(0, (port_max - first + 1) // 2)
    each, extra = divmod(pairs, workers)
    if each < max(max_calls, 1):
        raise SettingsError(
            f"RTP_PORT_MIN..RTP_PORT_MAX ({port_min}-{port_max}) holds {pairs} RTP/RTCP "
            f"port pairs: {each} for each of {workers} media workers, fewer than "
            f"MAX_CALLS ({max_calls}); widen the range, lower MAX_CALLS, or run fewer "
            "workers (MEDIA_WORKERS, --workers)"
        )
    slices = []
    start = first
    for index in range(workers):
        size = 2 * (each + (1 if index < extra else 0))
        slices.append(range(start, start + size))
        start += size
    return slices


def plan_workers(settings: Settings, workers: int) -> list[WorkerSpec]:
    """The specs of ``workers`` media workers; ``SettingsError`` when they do not fit."""
    if workers == 1:
        whole = WorkerSpec(
            0, settings.instance_id, settings.rtp_port_min, settings.rtp_port_max, settings.ops_port
        )
        return [whole]
    slices = rtp_slices(settings.rtp_port_min, settings.rtp_port_max, workers, settings.max_calls)
    ops = settings.ops_port
    if ops and ops + workers - 1 > 65535:
        raise SettingsError(
            f"OPS_PORT {ops} leaves no room for {workers} media workers' ops ports "
            f"(OPS_PORT + 0 to {workers - 1}); set OPS_PORT to at most {65536 - workers}"
        )
    return [
        WorkerSpec(
            index=index,
            instance_id=f"{settings.instance_id}-w{index}",
            rtp_port_min=ports.start,
            rtp_port_max=ports.stop - 1,
            ops_port=ops + index if ops else 0,
        )
        for index, ports in enumerate(slices)
    ]
