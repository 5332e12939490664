"""How late an event loop wakes a sleeper: the tests' probe of the example apps.

``serve_example.py`` runs it in the app's own process and serves its figures at
``GET /_test/loop-lag``, so that the load tests can tell whether anything blocked the
app's event loop while hundreds of requests waited.
"""

from __future__ import annotations

import statistics
import time
from collections import deque

import anyio


def _cpu_wait() -> float:
    """Seconds this thread has spent waiting for a CPU, where the OS says (Linux); else 0."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:  # memory, not disk: instant
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class LoopLag:
    """How late the event loop wakes a sleeper, the first sign of blocking code.

    A task sleeps ``every`` seconds in a loop and records how much later than asked it
    woke up: a handler that blocks the loop (a synchronous call, heavy CPU work) delays
    every request, and shows here as lateness. So does a machine too busy to give the
    loop a CPU: the ``blocked_`` figures leave out the time the loop waited for one
    (known on Linux), to tell the app's fault from its neighbours'. ``slow_ticks`` count
    wake-ups at least ``slow`` late: counters, so a monitor (or a test) can tell what
    happened between two reads.
    """

    def __init__(self, every: float, slow: float = 0.05) -> None:
        self.every = every
        self.slow = slow
        self.ticks = 0
        self.max = self.blocked_max = 0.0
        self.slow_ticks = self.blocked_slow_ticks = 0
        # The latest wake-ups' blocked lateness, for a percentile: one wake-up the kernel
        # delayed on a busy machine is noise; a loop blocked again and again is not.
        self.recent: deque[float] = deque(maxlen=4096)

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            # Real time, not the client's clock: this is about the loop, not the tasks.
            start, waited = time.perf_counter(), _cpu_wait()
            await anyio.sleep(self.every)
            late = max(0.0, time.perf_counter() - start - self.every)
            blocked = max(0.0, late - (_cpu_wait() - waited))
            self.ticks += 1
            self.max = max(self.max, late)
            self.blocked_max = max(self.blocked_max, blocked)
            self.recent.append(blocked)
            self.slow_ticks += late >= self.slow
            self.blocked_slow_ticks += blocked >= self.slow

    def as_json(self) -> dict[str, float | int]:
        """The worst lateness in milliseconds, and how many wake-ups were slow."""
        return {
            "ticks": self.ticks,
            "slow_ms": round(self.slow * 1000, 2),
            "max_ms": round(self.max * 1000, 2),
            "slow_ticks": self.slow_ticks,
            "blocked_max_ms": round(self.blocked_max * 1000, 2),
            "blocked_slow_ticks": self.blocked_slow_ticks,
            "blocked_p95_ms": round(self.blocked_p95() * 1000, 2),
        }

    def blocked_p95(self) -> float:
        """The 95th percentile of the latest wake-ups' blocked lateness (seconds)."""
        if len(self.recent) < 2:
            return max(self.recent, default=0.0)
        return statistics.quantiles(self.recent, n=100)[94]
