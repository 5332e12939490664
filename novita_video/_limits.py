"""Request rates: how fast submits and polls may go, and how they slow down on 429.

:class:`RateLimiter` spaces requests evenly (a leaky bucket with no burst), which keeps
under any of the ways a server may count "N per minute" (fixed window, sliding window,
token bucket), and adapts when the server says 429 anyway: it pauses for the
``Retry-After`` (or a backoff), lowers its rate, and earns the rate back slowly after a
run of accepted requests. All timing goes through an injected :class:`Clock`.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

import anyio
import attrs

from ._clock import Clock
from ._errors import BackPressureError
from ._settings import above, at_least, at_most, below, whole

__all__ = ["AdaptiveRate", "Limiter", "RateLimiter", "too_far", "within"]

#: An unlimited limiter measures the pace it sent at over this many seconds before a 429
#: (remembering up to _RECENT_KEPT requests of it).
_RECENT_WINDOW = 2.0
_RECENT_KEPT = 2048
#: The slowest an unlimited limiter goes after 429s: one request a second. Lower limits
#: are the caller's to configure; the pauses of Retry-After still apply.
_LOWEST = 1.0


class Limiter(Protocol):
    """What the submitter, the poller and the retry driver need of a rate limit:
    :class:`RateLimiter` in one process, ``_shared.SharedLimiter`` across many."""

    @property
    def per_minute(self) -> float | None:
        """The rate in force now (``None``: no limit)."""
        ...

    async def acquire(self, max_wait: float | None = None) -> int:
        """Wait for a request's turn; a ticket to report a 429 with. A turn further off
        than ``max_wait`` seconds raises :class:`BackPressureError` (with how long until
        a turn is likely), and nothing is reserved."""
        ...

    def accepted(self) -> None:
        """The server accepted a request."""
        ...

    def throttled(self, pause: float, ticket: int | None = None) -> None:
        """The server answered 429 to the request sent with ``ticket``."""
        ...


@attrs.frozen
class AdaptiveRate:
    """How a limiter reacts to 429s (the same for submits and polls unless set apart).

    A 429 for a request sent at the current rate means the rate is too high: if a lower
    rate ran clean lately, the limiter goes back to it, else it multiplies the rate by
    ``decrease`` (never below ``floor`` of the configured rate). 429s for requests sent
    before that slow-down answer the same overload and change nothing more.

    A rate that ran ``recover_after`` accepted requests in a row is known good; if no
    429 came for ``recover_interval`` seconds either (rate limits are counted per
    minute), the limiter tries ``increase`` times faster, up to the configured rate but
    short (``probe_margin``) of any rate answered 429. That ceiling is forgotten after
    ``forget_after`` accepted requests in a row: the account's limit may have been raised.

    ``margin`` spaces requests that much wider than the rate, so that network jitter
    does not push two requests into one of the server's windows.
    """

    decrease: float = attrs.field(default=0.5, validator=[above(0), below(1)])
    increase: float = attrs.field(default=1.25, validator=at_least(1))
    recover_after: int = attrs.field(default=20, validator=whole(1))
    recover_interval: float = attrs.field(default=60.0, validator=at_least(0))
    floor: float = attrs.field(default=0.05, validator=[above(0), at_most(1)])
    margin: float = attrs.field(default=0.02, validator=at_least(0))
    probe_margin: float = attrs.field(default=0.95, validator=[above(0), at_most(1)])
    forget_after: int = attrs.field(default=500, validator=whole(1))


def too_far(wait: float, max_wait: float) -> BackPressureError:
    """The error for a turn ``wait`` seconds away, more than ``max_wait`` allows."""
    return BackPressureError(
        f"no turn to send within max_wait={max_wait:g} s under the rate limit (the next "
        f"is about {wait:.1f} s away); nothing was sent",
        wait,
    )


@contextlib.asynccontextmanager
async def within(clock: Clock, seconds: float | None) -> AsyncIterator[anyio.CancelScope]:
    """A scope cancelled after ``seconds`` of ``clock``'s time (``None``: never), for a
    wait that does not sleep on the clock itself (a queue behind a lock). Read
    ``cancelled_caught`` after the block."""
    if seconds is None:
        with anyio.CancelScope() as scope:
            yield scope
        return

    async def alarm(scope: anyio.CancelScope) -> None:
        await clock.sleep(seconds)
        scope.cancel()

    async with anyio.create_task_group() as watch:
        with anyio.CancelScope() as scope:
            watch.start_soon(alarm, scope)
            yield scope
        watch.cancel_scope.cancel()


class RateLimiter:
    """At most ``per_minute`` requests a minute, evenly spaced; ``None`` (or inf): no limit
    (a 429 pauses everyone, that is all). With ``adapt_unlimited``, no limit until the
    server says 429, then half the rate the requests were going at (never below one a
    second), slowed further by more 429s (:class:`AdaptiveRate`), and no limit again once
    ``recover_interval`` passed without one.

    ``ticket = await limiter.acquire()`` before each request; then report the answer with
    :meth:`accepted` or :meth:`throttled` (with the ticket). Waiters are served first
    come, first served.
    """

    def __init__(
        self,
        per_minute: float | None,
        *,
        clock: Clock,
        adaptive: AdaptiveRate | None = None,
        adapt_unlimited: bool = False,
    ) -> None:
        if per_minute == math.inf:
            per_minute = None
        if per_minute is not None and not (per_minute > 0 and math.isfinite(per_minute)):
            raise ValueError(f"a rate must be a positive number per minute, not {per_minute!r}")
        self._clock = clock
        self._adaptive = adaptive or AdaptiveRate()
        self._configured = None if per_minute is None else per_minute / 60.0
        self._adapt_unlimited = adapt_unlimited and self._configured is None
        self._rate = self._configured
        self._next_at = -math.inf
        self._paused_until = -math.inf
        self._streak = 0
        self._generation = 0  # how many slow-downs so far: a request's ticket
        self._too_fast: float | None = None  # the lowest rate answered 429 lately
        self._good: float | None = None  # the last rate that ran recover_after clean
        self._throttled_at = -math.inf
        # Without a configured rate, when the last requests went: the pace a 429 halves.
        self._recent: deque[float] = deque(maxlen=_RECENT_KEPT)
        self._lock = anyio.Lock()
        self._waiting = 0  # requests inside acquire(), each to take a turn

    def __repr__(self) -> str:
        adapting = ", adapt_unlimited=True" if self._adapt_unlimited else ""
        return f"RateLimiter(per_minute={self.per_minute!r}{adapting})"

    @property
    def per_minute(self) -> float | None:
        """The rate in force now (lower than configured after 429s)."""
        return None if self._rate is None else self._rate * 60.0

    def expected_wait(self) -> float:
        """Seconds until a request asking now would get its turn, counting the ones
        already waiting (each a full interval), unless a 429 comes in between."""
        now = self._clock.now()
        start = max(self._next_at, self._paused_until, now)
        if self._rate is not None:
            start += self._waiting * (1.0 + self._adaptive.margin) / self._rate
        return start - now

    async def acquire(self, max_wait: float | None = None) -> int:
        """Wait for this request's turn; the ticket says which rate it was sent at.

        With ``max_wait``, a turn further off than that (by :meth:`expected_wait`, or
        because a 429's pause came while this request waited) raises
        :class:`BackPressureError` and takes no turn.
        """
        if self._configured is None:
            now = self._clock.now()
            if self._adapt_unlimited:
                self._recent.append(now)
            if self._rate is None and self._paused_until <= now:
                return self._generation  # no limit and no pause: not even a checkpoint
        if max_wait is not None:
            wait = self.expected_wait()
            if wait > max_wait:
                raise too_far(wait, max_wait)
        turn: int | float | None = None
        self._waiting += 1
        try:
            if max_wait is None:
                turn = await self._turn(math.inf)
            else:
                # Waiting behind the others (the lock) is bounded too: a 429's pause
                # may hold the queue longer than the estimate said.
                async with within(self._clock, max_wait):
                    turn = await self._turn(self._clock.now() + max_wait)
        finally:
            self._waiting -= 1
        if isinstance(turn, int):
            return turn
        assert max_wait is not None
        raise too_far(self.expected_wait() if turn is None else turn, max_wait)

    async def _turn(self, deadline: float) -> int | float:
        """The ticket once this request's turn came, or (a float) the seconds to a turn
        that would come after ``deadline``, when nothing was taken."""
        async with self._lock:
            while True:
                now = self._clock.now()
                start = max(self._next_at, self._paused_until)
                if start <= now:
                    break
                if start > deadline:
                    return float(start - now)
                await self._clock.sleep(start - now)
            if self._rate is not None:
                interval = (1.0 + self._adaptive.margin) / self._rate
                # No saving up: after an idle spell the next request goes at once, but
                # the one after it still waits a full interval.
                self._next_at = now + interval
            return self._generation

    def accepted(self) -> None:
        """The server accepted a request: after a run of them, earn some rate back."""
        adaptive = self._adaptive
        self._streak += 1
        if self._configured is None:
            if self._rate is None:
                return  # no limit now, nothing to earn back (every poll passes here)
            if self._clock.now() - self._throttled_at >= adaptive.recover_interval:
                self._rate = self._too_fast = self._good = None  # no limit again
            return
        if self._streak % adaptive.forget_after == 0:
            self._too_fast = None
        if self._streak % adaptive.recover_after or self._rate is None:
            return
        self._good = self._rate
        if self._clock.now() - self._throttled_at < adaptive.recover_interval:
            return
        ceiling = self._configured
        if self._too_fast is not None:
            ceiling = min(ceiling, self._too_fast * adaptive.probe_margin)
        self._rate = max(self._rate, min(ceiling, self._rate * adaptive.increase))

    def throttled(self, pause: float, ticket: int | None = None) -> None:
        """The server answered 429 to a request sent with ``ticket``: nobody goes for
        ``pause`` seconds, and unless this overload was already answered, slower."""
        now = self._clock.now()
        self._streak = 0
        self._throttled_at = now
        self._paused_until = max(self._paused_until, now + pause)
        if ticket is not None and ticket != self._generation:
            return  # sent before the last slow-down: not news
        self._generation += 1
        if self._configured is None and not self._adapt_unlimited:
            return  # no limit, as asked: the pause is all
        if self._rate is None:
            # No rate configured: the pace the requests went at was too fast.
            self._rate = self._recent_rate()
        self._too_fast = self._rate if self._too_fast is None else min(self._too_fast, self._rate)
        if self._good is not None and self._good < self._rate:
            self._rate = self._good  # a probe too far: back to what ran clean
        else:
            configured = self._configured
            lowest = _LOWEST if configured is None else configured * self._adaptive.floor
            self._rate = max(lowest, self._rate * self._adaptive.decrease)
            self._good = None

    def _recent_rate(self) -> float:
        """Requests a second sent lately (for a limiter with no configured rate)."""
        now = self._clock.now()
        recent = self._recent
        while recent and recent[0] < now - _RECENT_WINDOW:
            recent.popleft()
        if len(recent) == recent.maxlen:
            return len(recent) / max(now - recent[0], 1e-3)
        return len(recent) / _RECENT_WINDOW
