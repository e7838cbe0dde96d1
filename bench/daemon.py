"""What the benchmark's child daemons (rtpengine, Janus) share: pid, CPU, threads, stop."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from bench.procstat import cpu_seconds


class Daemon:
    """A started ``popen``; ``stop_signal`` asks it to exit, a kill follows ``timeout`` later."""

    popen: subprocess.Popen[bytes] | None = None
    stop_signal: signal.Signals = signal.SIGTERM

    @property
    def pid(self) -> int:
        assert self.popen is not None, "not started"
        return self.popen.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def threads_now(self) -> int:
        return len(list(Path(f"/proc/{self.pid}/task").iterdir()))

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode
