"""`VirtualTimeLoop`: an asyncio event loop whose time jumps instead of passing.

With :class:`MemoryTransport`, a client and the simulator do no real I/O: every wait is a
timer. On this loop, a wait with nothing else to do moves the loop's clock straight to
the next timer, so an hour of tasks takes as long as the code takes to run, and runs the
same way every time. The client's default clock reads the loop's time
(:func:`anyio.current_time`), so nothing else needs changing.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any

__all__ = ["VirtualTimeLoop"]


class _JumpingSelector(selectors.BaseSelector):
    """The default selector, except that a wait with nothing ready jumps the loop's time
    to the next timer instead of sleeping through it."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._selector = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._selector.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._selector.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._selector.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._selector.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only I/O can wake the loop
            return self._selector.select(None)
        self._loop.jump(timeout)
        return []

    def close(self) -> None:
        self._selector.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._selector.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time (trio's autojump ``MockClock`` for asyncio): when
    every task waits for a timer, time jumps to it. ``anyio.current_time()`` reads it, so
    the client's default clock, the poller, the limiters, the simulator and every
    deadline follow: minutes of tasks play out in milliseconds, in a repeatable order.
    Only for code that does no real I/O: a client with a :class:`MemoryTransport`
    instead of sockets (a socket's wait would be skipped like a timer).

    With pytest and anyio's plugin::

        @pytest.fixture
        def anyio_backend():
            return ("asyncio", {"loop_factory": VirtualTimeLoop})

    or ``asyncio.run(main(), loop_factory=VirtualTimeLoop)`` (Python 3.12+), or
    ``anyio.run(main, backend_options={"loop_factory": VirtualTimeLoop})``.
    """

    #: Where every loop's time starts. A fixed origin, not ``time.monotonic()``: times
    #: that far apart round differently as floats, so a run's figures (and a test's
    #: margins) would change with the machine's uptime.
    ORIGIN = 100_000.0

    def __init__(self) -> None:
        self._virtual = self.ORIGIN
        self.started = self._virtual
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        """The loop's virtual time (it starts at :attr:`ORIGIN`)."""
        return self._virtual

    def jump(self, seconds: float) -> None:
        """Move the loop's time ``seconds`` ahead (the selector does, when all wait)."""
        self._virtual += max(0.0, seconds)

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the loop was made."""
        return self._virtual - self.started
