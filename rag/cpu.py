"""CPU sensing: physical cores, how busy other processes keep them, and how many threads that leaves.

llama.cpp picks its threads from this per request (rag.generators); `rag bench` records the other
processes' load next to every measurement (OtherLoad), so a number taken on a busy machine says so.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path


def physical_cores() -> int:
    """Cores this process may use, counting SMT siblings once: a second hyperthread on a core adds
    nothing to memory-bound decoding and makes llama.cpp's thread barriers slower."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for c in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("?", str(c)))
    return max(1, len(cores))


def cpu_busy_seconds() -> float | None:
    """CPU time all processes have spent busy since boot (Linux /proc/stat), in core-seconds."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(v[:8]) - v[3] - (v[4] if len(v) > 4 else 0)) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(children: bool = False) -> float:
    t = os.times()
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


class CpuWatch:
    """Cores other processes kept busy since the previous call (busy time minus our own)."""

    MIN_WINDOW = 0.25  # shorter windows hold too few clock ticks (10 ms each) to say anything

    def __init__(self):
        self._measured = False
        self._mark()

    def _mark(self) -> None:
        self.t, self.busy, self.own = time.monotonic(), cpu_busy_seconds(), own_cpu_seconds()

    def others(self) -> float | None:
        """None when the window is too short or /proc/stat is unavailable (then keep the last choice).
        The first call waits out the minimum window: a model loaded for the first question has no
        other estimate, and a wrong guess there costs seconds."""
        left = self.MIN_WINDOW - (time.monotonic() - self.t)
        if left > 0:
            if self._measured:
                return None
            time.sleep(left)
        self._measured = True
        t, busy, own = self.t, self.busy, self.own
        self._mark()
        if busy is None or self.busy is None:
            return None
        return max(0.0, (self.busy - busy) - (self.own - own)) / (self.t - t)


def choose_threads(cores: int, others: float | None, current: int) -> int:
    """Threads for the next request. llama.cpp's threads meet at a barrier after every operation; when
    another process holds a core, one thread waits for a descheduled partner at each of them.
    Measured with 2 threads on 2 cores: ~28 tok/s idle, but 1-4 tok/s with another busy process,
    where 1 thread still made 12-19 tok/s. So leave every core another process is using."""
    if others is None:
        return current
    return max(1, min(cores, cores - math.ceil(others - 0.5)))


# ---------------------------------------------------------------- decoding helpers (pure, unit-tested)


class OtherLoad:
    """CPU time used by *other* processes while measuring (in cores): /proc/stat busy time minus ours
    (our subprocesses included)."""

    def __enter__(self):
        self._busy, self._own = cpu_busy_seconds, lambda: own_cpu_seconds(children=True)
        self.t, self.busy, self.own = time.monotonic(), self._busy(), self._own()
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t
        busy, own = self._busy(), self._own()
        self.cores = (None if busy is None or self.busy is None or wall <= 0
                      else max(0.0, ((busy - self.busy) - (own - self.own)) / wall))
        return False
