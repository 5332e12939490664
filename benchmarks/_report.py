"""What every contender process shares: its command line, the shared clock, its report.

A contender is a script run in its own process (``python -m benchmarks.contender_...``)
so that its CPU time and peak memory are its own. It drives ``--n`` tasks against the
simulator at ``--url``, notes the shared virtual wall time at which it handed each
task's result over to its caller, and prints one JSON object on stdout.

This module imports only the standard library (no novita_video, no aiohttp), so it
costs every contender the same and does not tilt the peak-memory comparison.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

SUBMIT_PATH = "/v3/async/minimax-video-01"
RESULT_PATH = "/v3/async/task-result"
FINAL_STATUSES = frozenset({"TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED"})


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every contender takes; each adds its own knobs."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", required=True, help="the simulator's base URL")
    p.add_argument("--api-key", required=True)
    p.add_argument("--n", type=int, required=True, help="how many tasks to run")
    p.add_argument("--speed", type=float, default=1.0, help="ScaledClock speed (1: real time)")
    p.add_argument("--origin", type=float, help="ScaledClock origin shared with the simulator")
    return p


def prompts(n: int, prefix: str = "benchmark clip") -> Iterator[str]:
    """``n`` distinct prompts: the simulator flags equal ones as double billing."""
    return (f"{prefix} {i}: a lighthouse at dusk, slow pan" for i in range(n))


class SharedWall:
    """The virtual wall time the simulator also reads (the formula of ``ScaledClock.wall``).

    Contenders that must not import novita_video use this instead of a ScaledClock.
    """

    def __init__(self, speed: float, origin: float | None) -> None:
        self.speed = speed
        self.origin = time.time() if origin is None else origin

    def __call__(self) -> float:
        return self.origin + (time.time() - self.origin) * self.speed


def _peak_rss_kib() -> int:
    """This process's peak resident set size since it was exec'd, in KiB (Linux only).

    Not ``ru_maxrss``: Linux carries the parent's peak over into a child's
    ``ru_maxrss`` across fork and exec, so every contender would read at least the
    harness's own size. ``VmHWM`` belongs to the new program image alone.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: these benchmarks need Linux")


class Meter:
    """Times one contender's work and collects what it handed over.

    Wall and CPU time run from :meth:`start` (after imports, before the first
    connection) to :meth:`stop`; interpreter start-up and imports are a one-off cost
    that would blur a per-task figure. Peak memory is the whole process's peak
    resident set (:func:`_peak_rss_kib`), imports included.
    """

    def __init__(self) -> None:
        self.handed: dict[str, float] = {}
        self.failures: list[str] = []
        self._wall0 = self._cpu0 = 0.0
        self._wall = self._cpu = 0.0
        self._rss_at_start = 0
        self._rss_peak = 0
        self._ru_maxrss = 0
        self._cpu_process = 0.0

    def start(self) -> None:
        self._rss_at_start = _peak_rss_kib()
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()

    def hand_over(self, task_id: str, wall: float) -> None:
        """The caller got this task's final result at virtual wall time ``wall``."""
        self.handed[task_id] = wall

    def fail(self, what: str) -> None:
        """Something other than a final result came back for one task."""
        self.failures.append(what)

    def stop(self) -> None:
        self._wall = time.perf_counter() - self._wall0
        self._cpu = time.process_time() - self._cpu0
        # Read before the report is built: a large JSON string must not count.
        self._rss_peak = _peak_rss_kib()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._ru_maxrss = usage.ru_maxrss
        self._cpu_process = usage.ru_utime + usage.ru_stime

    def report(self, contender: str, **extra: Any) -> None:
        """Print the one JSON line the harness reads."""
        body = {
            "contender": contender,
            "wall_s": self._wall,
            "cpu_s": self._cpu,
            # Start-up and imports included: context for the per-task figure above.
            "cpu_process_s": self._cpu_process,
            "peak_rss_kib": self._rss_peak,
            "peak_rss_at_start_kib": self._rss_at_start,
            # For reference only: floored by the harness's size (see _peak_rss_kib).
            "ru_maxrss_kib": self._ru_maxrss,
            "handed": self.handed,
            "failures": len(self.failures),
            "failure_examples": self.failures[:5],
            **extra,
        }
        json.dump(body, sys.stdout)
        sys.stdout.write("\n")
        sys.stdout.flush()
