"""The rate limiter on a manual clock: even spacing, pauses and slow-downs after 429s."""

from __future__ import annotations

import math

import anyio
import pytest

from novita_video import AdaptiveRate
from novita_video._limits import RateLimiter
from tests.support import ManualClock

pytestmark = pytest.mark.anyio


async def times_of(limiter: RateLimiter, clock: ManualClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        await limiter.acquire()
        times.append(clock.now())
    return times


async def test_requests_are_spaced_evenly_with_a_margin() -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(60, clock=clock, adaptive=AdaptiveRate(margin=0.02))
    times = await times_of(limiter, clock, 5)
    assert times == pytest.approx([0.0, 1.02, 2.04, 3.06, 4.08])


async def test_no_limit_never_waits() -> None:
    clock = ManualClock(start=0.0)
    for unlimited in (None, math.inf):
        limiter = RateLimiter(unlimited, clock=clock)
        assert await times_of(limiter, clock, 100) == [0.0] * 100
        assert limiter.per_minute is None


async def test_an_idle_spell_saves_nothing_up() -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(60, clock=clock, adaptive=AdaptiveRate(margin=0.0))
    await limiter.acquire()
    clock.time = 100.0
    assert await times_of(limiter, clock, 3) == pytest.approx([100.0, 101.0, 102.0])


async def test_a_429_pauses_everyone_and_slows_down_then_recovers() -> None:
    clock = ManualClock(start=0.0)
    adaptive = AdaptiveRate(
        decrease=0.5, increase=2.0, recover_after=3, recover_interval=30.0, margin=0.0
    )
    limiter = RateLimiter(60, clock=clock, adaptive=adaptive)
    ticket = await limiter.acquire()
    limiter.throttled(10.0, ticket)
    assert limiter.per_minute == pytest.approx(30)
    await limiter.acquire()
    assert clock.now() == pytest.approx(10.0)  # the pause held
    await limiter.acquire()
    assert clock.now() == pytest.approx(12.0)  # half the rate: twice the interval
    for _ in range(3):
        limiter.accepted()
    assert limiter.per_minute == pytest.approx(30)  # clean, but within a minute of the 429
    clock.time = 40.0
    for _ in range(3):
        limiter.accepted()
    # Earned back, but short of the rate that was answered 429 (60 * 0.95).
    assert limiter.per_minute == pytest.approx(57)
    for _ in range(3):
        limiter.accepted()
    assert limiter.per_minute == pytest.approx(57)


async def test_a_probe_too_far_goes_back_to_the_last_good_rate() -> None:
    clock = ManualClock(start=0.0)
    adaptive = AdaptiveRate(decrease=0.5, increase=1.5, recover_after=2, recover_interval=0.0)
    limiter = RateLimiter(100, clock=clock, adaptive=adaptive)
    limiter.throttled(0.0, await limiter.acquire())  # 100 is too fast
    assert limiter.per_minute == pytest.approx(50)
    for _ in range(2):
        limiter.accepted()  # 50 ran clean: good; probe 75
    assert limiter.per_minute == pytest.approx(75)
    limiter.throttled(0.0, await limiter.acquire())
    assert limiter.per_minute == pytest.approx(50)  # not 37.5: 50 is known to work
    for _ in range(2):
        limiter.accepted()
    assert limiter.per_minute == pytest.approx(71.25)  # a smaller step: short of 75
    limiter.throttled(0.0, await limiter.acquire())
    assert limiter.per_minute == pytest.approx(50)
    for _ in range(4):
        limiter.accepted()
    assert limiter.per_minute == pytest.approx(67.6875)  # closing in on the limit from below


async def test_one_overload_slows_down_once() -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(60, clock=clock, adaptive=AdaptiveRate(decrease=0.5))
    tickets = [await limiter.acquire() for _ in range(3)]
    for ticket in tickets:  # three requests in flight at the old rate all get 429
        limiter.throttled(1.0, ticket)
    assert limiter.per_minute == pytest.approx(30)
    later = await limiter.acquire()
    limiter.throttled(1.0, later)  # sent at the new rate: news, slower again
    assert limiter.per_minute == pytest.approx(15)


async def test_the_ceiling_is_forgotten_after_a_long_clean_run() -> None:
    adaptive = AdaptiveRate(
        decrease=0.5, increase=2.0, recover_after=2, recover_interval=0.0, forget_after=10
    )
    limiter = RateLimiter(60, clock=ManualClock(), adaptive=adaptive)
    limiter.throttled(0.0, await limiter.acquire())
    for _ in range(8):
        limiter.accepted()
    assert limiter.per_minute == pytest.approx(57)
    for _ in range(2):
        limiter.accepted()
    assert limiter.per_minute == pytest.approx(60)


async def test_the_rate_never_drops_below_its_floor() -> None:
    limiter = RateLimiter(100, clock=ManualClock(), adaptive=AdaptiveRate(decrease=0.1, floor=0.2))
    for _ in range(10):
        limiter.throttled(0.0)
    assert limiter.per_minute == pytest.approx(20)


async def test_a_pause_applies_even_without_a_limit() -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(None, clock=clock)
    limiter.throttled(5.0)
    await limiter.acquire()
    assert clock.now() == pytest.approx(5.0)


async def test_waiters_go_first_come_first_served() -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(60, clock=clock, adaptive=AdaptiveRate(margin=0.0))
    order: list[int] = []

    async def take(n: int) -> None:
        await limiter.acquire()
        order.append(n)

    async with anyio.create_task_group() as group:
        for n in range(5):
            group.start_soon(take, n)
            await anyio.lowlevel.checkpoint()
    assert order == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("bad", [0, -1, math.nan])
async def test_nonsense_rates_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(bad, clock=ManualClock())


async def test_a_plain_unlimited_limiter_only_pauses_on_a_429() -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(None, clock=clock)
    for _ in range(3):
        limiter.throttled(1.0, await limiter.acquire())
    assert limiter.per_minute is None  # no limit, as asked: each 429 paused, that is all
    assert await times_of(limiter, clock, 3) == pytest.approx([clock.now()] * 3)


async def test_an_adaptive_unlimited_limiter_halves_the_pace_that_drew_a_429() -> None:
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(None, clock=clock, adapt_unlimited=True)
    assert "adapt_unlimited=True" in repr(limiter)
    # 40 requests a second for two seconds, with no limit at all ...
    for _ in range(80):
        ticket = await limiter.acquire()
        limiter.accepted()
        clock.time += 1 / 40
    assert limiter.per_minute is None
    # ... then a 429: half that pace, after the pause.
    limiter.throttled(0.5, ticket)
    assert limiter.per_minute == pytest.approx(20 * 60, rel=0.05)
    times = await times_of(limiter, clock, 3)
    assert times[0] == pytest.approx(2.5)
    assert times[2] - times[1] == pytest.approx(1.02 / 20, rel=0.05)
    # Another 429 for a request sent at the new pace halves it again ...
    limiter.throttled(0.0, await limiter.acquire())
    assert limiter.per_minute == pytest.approx(10 * 60, rel=0.05)
    # ... never below one request a second ...
    for _ in range(20):
        limiter.throttled(0.0, await limiter.acquire())
    assert limiter.per_minute == pytest.approx(60)
    # ... and a minute with no 429 lifts the limit again.
    clock.time += 61.0
    limiter.accepted()
    assert limiter.per_minute is None
    assert await times_of(limiter, clock, 3) == pytest.approx([clock.now()] * 3)


async def test_a_burst_then_a_429_is_measured_over_the_window() -> None:
    # 100 requests in the same instant are 50 a second over the two-second window, not
    # an infinite rate: half of that is 25.
    clock = ManualClock(start=0.0)
    limiter = RateLimiter(None, clock=clock, adapt_unlimited=True)
    for _ in range(100):
        ticket = await limiter.acquire()
    limiter.throttled(0.0, ticket)
    assert limiter.per_minute == pytest.approx(25 * 60)
