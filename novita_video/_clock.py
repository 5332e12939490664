"""Time, injectable.

Everything that schedules (the poller, the rate limiter, task deadlines) and the
simulator read time through a :class:`Clock`, never through :mod:`time` directly,
so that their logic can be tested and benchmarked without real waiting (the idea
of trio's ``MockClock`` and aiolimiter's ``MockLoopTime``).

Two clocks ship:

* :class:`SystemClock`, real time, the default.
* :class:`ScaledClock`, time that runs ``speed`` times faster than real time.
  Give the same ``speed`` and ``origin`` to the client and the simulator (even
  in two processes) and minutes-long tasks play out in seconds, with every
  delay, eta and deadline scaled alike.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "ScaledClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the client and the simulator need to know about time."""

    def now(self) -> float:
        """Seconds on a monotonic scale, for deadlines and schedules."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, for times shown to people (URL expiry)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of this clock's time (a checkpoint even for 0)."""
        ...


class SystemClock:
    """The event loop's time: :func:`anyio.current_time` and :func:`anyio.sleep`.

    On a real event loop that is :func:`time.monotonic`; on a loop whose time is virtual
    (trio's ``MockClock``, the tests' jumping asyncio loop) the poller, the limiters and
    every deadline follow it, and a task of minutes plays out at once.
    """

    def now(self) -> float:
        """:func:`anyio.current_time` (:func:`time.monotonic` outside an event loop)."""
        # The poller reads the time several times a check: asyncio's own loop clock
        # directly (50 ns) rather than through anyio's backend lookup (1.5 us).
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            pass
        try:
            return anyio.current_time()  # another backend (trio, with its MockClock)
        except RuntimeError:  # no event loop running at all
            return time.monotonic()

    def wall(self) -> float:
        """:func:`time.time`, moved by as much as the event loop's time ran ahead of real
        time (nothing, on a real loop)."""
        return time.time() + (self.now() - time.monotonic())

    async def sleep(self, seconds: float) -> None:
        """:func:`anyio.sleep` (nothing for a negative time)."""
        await anyio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


class ScaledClock:
    """Time that runs ``speed`` times faster than real time.

    ``origin`` is the Unix time at which the scaled clock and real time agree.
    Two processes that share ``speed`` and ``origin`` read the same scaled wall
    time, which is how a benchmark compares when the simulator finished a task
    with when the client handed it over.

    >>> clock = ScaledClock(speed=60)   # a 5-minute task takes 5 real seconds
    """

    def __init__(self, speed: float, *, origin: float | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be a positive number, not {speed!r}")
        self.speed = float(speed)
        self.origin = time.time() if origin is None else float(origin)

    def now(self) -> float:
        """The scaled wall time: shared by every process with the same speed and origin."""
        return self.wall()

    def wall(self) -> float:
        """Unix time that runs ``speed`` times faster since ``origin``."""
        return self.origin + (time.time() - self.origin) * self.speed

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of scaled time: ``seconds / speed`` of real time."""
        await anyio.sleep(max(0.0, seconds) / self.speed)

    def __repr__(self) -> str:
        return f"ScaledClock(speed={self.speed!r}, origin={self.origin!r})"
