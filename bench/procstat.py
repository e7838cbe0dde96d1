"""CPU time of processes from /proc, and a sampler of one process over a window."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat_cpu(stat: str) -> float:
    """utime + stime, in seconds, from the text of /proc/PID/stat (all the process's threads)."""
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    return parse_stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class Window:
    """CPU of ``pid``, of this process and of the machine between ``start()`` and ``stop()``."""

    pid: int
    wall: float = 0.0
    pid_cpu: float = 0.0
    own_cpu: float = 0.0
    machine_busy: float = 0.0

    def start(self) -> Window:
        self._t = time.monotonic()
        self._pid = cpu_seconds(self.pid)
        self._own = own_cpu_seconds()
        self._machine = machine_ticks()
        return self

    def stop(self) -> Window:
        self.wall = time.monotonic() - self._t
        self.pid_cpu = cpu_seconds(self.pid) - self._pid
        self.own_cpu = own_cpu_seconds() - self._own
        busy, total = machine_ticks()
        self.machine_busy = (busy - self._machine[0]) / max(1, total - self._machine[1])
        return self

    @property
    def pid_share(self) -> float:
        """Share of one core the process used."""
        return self.pid_cpu / self.wall if self.wall else 0.0

    @property
    def own_share(self) -> float:
        return self.own_cpu / self.wall if self.wall else 0.0
