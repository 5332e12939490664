"""Helpers shared by the tests (imported as ``support``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import anyio


class ManualClock:
    """A clock whose sleeps return at once, having moved time forward (like trio's
    autojump clock, for logic that only one task drives)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def wall(self) -> float:
        return 1_700_000_000.0 + self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()
