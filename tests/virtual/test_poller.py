"""The one poller on virtual time: tasks of minutes, the poller's own logic, no network.

A :class:`Tasks` plays the server as a function of the loop's time; the poller under
test is the client's own :class:`~novita_video._poller.Poller` with the default clock,
schedule and retry policy, so what is measured here is what users get.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import attrs
import pytest

from novita_video import (
    AuthenticationError,
    NotFoundError,
    NovitaError,
    PollSchedule,
    RateLimitError,
    RetryPolicy,
    ServerError,
    SystemClock,
    TaskResult,
    TaskStatus,
    TaskTimeoutError,
)
from novita_video._limits import RateLimiter
from novita_video._poller import Poller
from novita_video._retrier import Retrier
from novita_video._stats import Counters
from novita_video.testing import VirtualTimeLoop

pytestmark = pytest.mark.anyio


@attrs.define
class Task:
    """One task's future: queued until ``starts``, done at ``ends``; ``bias`` scales the
    time left the server's eta states (1: exact)."""

    starts: float
    ends: float
    bias: float = 1.0


@attrs.define
class Tasks:
    """The server's side: answers a check from the tasks' futures and the loop's time."""

    tasks: dict[str, Task] = attrs.Factory(dict)
    checks: Counter[str] = attrs.Factory(Counter)
    checked_at: list[tuple[str, float]] = attrs.Factory(list)
    #: Errors to raise, in order, per task id, before answering.
    errors: dict[str, list[NovitaError]] = attrs.Factory(dict)

    async def fetch(self, task_id: str, attempt: int = 1) -> TaskResult:
        now = anyio.current_time()
        self.checks[task_id] += 1
        self.checked_at.append((task_id, now))
        await anyio.sleep(0.2)  # a request takes a moment
        pending = self.errors.get(task_id)
        if pending:
            raise pending.pop(0)
        task = self.tasks[task_id]
        if now >= task.ends:
            return TaskResult(task_id, TaskStatus.SUCCEED, task_type="T")
        eta = math.ceil((task.ends - now) * task.bias)
        if now < task.starts:
            return TaskResult(task_id, TaskStatus.QUEUED, eta=eta, task_type="T")
        progress = int(99 * (now - task.starts) / (task.ends - task.starts))
        return TaskResult(task_id, TaskStatus.PROCESSING, eta=eta, progress=progress, task_type="T")


@attrs.define
class Ended:
    task_id: str
    at: float
    result: TaskResult | None
    error: NovitaError | None


@asynccontextmanager
async def running(
    tasks: Tasks, *, concurrency: int = 8, limiter: RateLimiter | None = None
) -> AsyncIterator[tuple[Poller, Counters]]:
    clock = SystemClock()
    counters = Counters()
    poller = Poller(
        tasks.fetch,
        clock=clock,
        schedule=PollSchedule(),
        limiter=limiter or RateLimiter(None, clock=clock, adapt_unlimited=True),
        concurrency=concurrency,
        retrier=Retrier(RetryPolicy(), clock=clock, counters=counters),
    )
    async with anyio.create_task_group() as group:
        group.start_soon(poller.run)
        yield poller, counters
        group.cancel_scope.cancel()


def listen(poller: Poller, task_id: str, ended: list[Ended], *, deadline: float = math.inf) -> None:
    def on_done(result: TaskResult | None, error: NovitaError | None) -> None:
        ended.append(Ended(task_id, anyio.current_time(), result, error))

    poller.listen(task_id, deadline=deadline, on_done=on_done, submitted_at=anyio.current_time())


async def until(ended: list[Ended], count: int) -> None:
    while len(ended) < count:
        await anyio.sleep(1)


async def test_minutes_of_tasks_end_in_order_each_noticed_within_seconds(
    loop: VirtualTimeLoop,
) -> None:
    # The real regime: queued for a varying time, then minutes of work; etas that run
    # out early or late by up to 30 %.
    rng = random.Random(7)
    now = anyio.current_time()
    tasks = Tasks()
    for number in range(200):
        starts = now + rng.uniform(5, 120)
        tasks.tasks[f"t{number}"] = Task(
            starts, starts + rng.uniform(90, 400), bias=rng.uniform(0.7, 1.3)
        )
    ended: list[Ended] = []
    async with running(tasks) as (poller, _):
        for task_id in tasks.tasks:
            listen(poller, task_id, ended)
        await until(ended, len(tasks.tasks))
    assert loop.elapsed > 400  # minutes of virtual time...
    lateness = sorted(end.at - tasks.tasks[end.task_id].ends for end in ended)
    assert lateness[0] >= 0  # ...never noticed before the end,
    assert lateness[len(lateness) // 2] < 3.0  # typically within seconds,
    assert lateness[-1] < 6.0  # and never later than the overdue bound allows
    # Handed over in the order they ended, but for ends closer than that bound.
    for before, after in itertools.pairwise(ended):
        assert tasks.tasks[before.task_id].ends < tasks.tasks[after.task_id].ends + 6.0
    # Tasks of minutes cost a handful of polls each, not one every few seconds.
    assert sum(tasks.checks.values()) / len(tasks.tasks) < 12
    assert poller.outstanding == 0


async def test_a_deadline_ends_its_own_listener_at_that_time_only() -> None:
    now = anyio.current_time()
    tasks = Tasks({"slow": Task(now + 10, now + 300)})
    ended: list[Ended] = []
    async with running(tasks) as (poller, _):
        listen(poller, "slow", ended, deadline=now + 100)
        listen(poller, "slow", ended)
        await until(ended, 1)
        assert ended[0].at == pytest.approx(now + 100, abs=0.01)
        assert isinstance(ended[0].error, TaskTimeoutError)
        assert ended[0].error.task_id == "slow"
        await until(ended, 2)
    assert ended[1].error is None
    assert ended[1].result is not None
    assert ended[1].result.status is TaskStatus.SUCCEED
    assert now + 300 <= ended[1].at < now + 306


async def test_a_forgotten_task_is_never_checked_again() -> None:
    now = anyio.current_time()
    tasks = Tasks({"gone": Task(now + 10, now + 600), "kept": Task(now + 10, now + 600)})
    ended: list[Ended] = []
    async with running(tasks) as (poller, _):
        listen(poller, "kept", ended)
        listener = poller.listen(
            "gone", deadline=math.inf, on_done=lambda *_: pytest.fail("forgotten"), submitted_at=now
        )
        await anyio.sleep(50)
        checks = tasks.checks["gone"]
        poller.forget(listener)
        await until(ended, 1)
    assert tasks.checks["gone"] == checks
    assert tasks.checks["kept"] >= 2


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("bad key", 403, "INVALID_API_KEY"),
        NotFoundError("no such task", 404, "TASK_NOT_FOUND"),
    ],
    ids=["bad-key", "not-found"],
)
async def test_an_error_retrying_cannot_mend_ends_the_wait_at_its_first_check(
    error: NovitaError,
) -> None:
    now = anyio.current_time()
    tasks = Tasks({"t": Task(now, now + 60)}, errors={"t": [error]})
    ended: list[Ended] = []
    async with running(tasks) as (poller, _):
        listen(poller, "t", ended)
        await until(ended, 1)
    assert ended[0].error is error
    assert tasks.checks["t"] == 1


async def test_transient_failures_are_retried_on_the_policy_backoff() -> None:
    now = anyio.current_time()
    flaky = [ServerError("bad gateway", 502, "") for _ in range(3)]
    tasks = Tasks({"t": Task(now, now + 1)}, errors={"t": flaky})
    ended: list[Ended] = []
    async with running(tasks) as (poller, counters):
        listen(poller, "t", ended)
        await until(ended, 1)
    assert ended[0].error is None
    assert ended[0].result is not None
    assert counters.retries == 3
    times = [at for _, at in tasks.checked_at]
    gaps = [after - before - 0.2 for before, after in itertools.pairwise(times)]
    policy = RetryPolicy()
    for attempt, gap in enumerate(gaps, start=1):
        full = policy.initial_delay * policy.multiplier ** (attempt - 1)
        assert full * (1 - policy.jitter) - 0.01 <= gap <= full + 0.01


async def test_a_429_on_one_task_pauses_the_checks_of_every_task() -> None:
    now = anyio.current_time()
    tasks = Tasks(
        {f"t{n}": Task(now, now + 1000) for n in range(20)},
        errors={"t0": [RateLimitError("slow down", 429, "RATE_LIMIT_EXCEEDED", None, 30.0)]},
    )
    ended: list[Ended] = []
    async with running(tasks) as (poller, counters):
        for task_id in tasks.tasks:
            listen(poller, task_id, ended)
        while counters.rate_limited == 0:
            await anyio.sleep(0.1)
        throttled_at = anyio.current_time() - 0.2  # the 429 was answered to a check sent then
        await anyio.sleep(60)
    assert counters.rate_limited == 1
    during = [at for _, at in tasks.checked_at if throttled_at + 0.2 < at < throttled_at + 29.9]
    assert during == []
    assert any(at >= throttled_at + 30 for _, at in tasks.checked_at)


async def test_two_thousand_waits_share_one_poller_and_all_end(loop: VirtualTimeLoop) -> None:
    now = anyio.current_time()
    rng = random.Random(3)
    tasks = Tasks({f"t{n}": Task(now + 5, now + rng.uniform(60, 300)) for n in range(2000)})
    ended: list[Ended] = []
    async with running(tasks, concurrency=32) as (poller, _):
        for task_id in tasks.tasks:
            listen(poller, task_id, ended)
        assert poller.outstanding == 2000
        await until(ended, 2000)
    assert {end.task_id for end in ended} == set(tasks.tasks)
    assert all(end.error is None for end in ended)
    assert loop.elapsed < 400


async def test_an_outage_of_any_length_costs_one_check_per_max_delay() -> None:
    # More failures than a float's power of the multiplier survives (2.0 ** 1100
    # overflows): the backoff stays at max_delay, and the task's answer still ends it.
    now = anyio.current_time()
    outage = [ServerError("unavailable", 503, "") for _ in range(1100)]
    tasks = Tasks({"t": Task(now, now + 1)}, errors={"t": outage})
    ended: list[Ended] = []
    async with running(tasks) as (poller, counters):
        listen(poller, "t", ended)
        await until(ended, 1)
    assert ended[0].error is None
    assert counters.retries == 1100
    times = [at for _, at in tasks.checked_at]
    gaps = [after - before - 0.2 for before, after in itertools.pairwise(times)]
    policy = RetryPolicy()
    assert max(gaps) <= policy.max_delay + 0.01
    assert sum(gap >= policy.max_delay * (1 - policy.jitter) for gap in gaps) > 1000
