"""The one poller, through wait(): shared by every waiter, driven by eta, slowed by 429s."""

from __future__ import annotations

import math
import statistics
from typing import Any

import anyio
import pytest

from novita_video import (
    Client,
    ClientClosedError,
    Clock,
    NotFoundError,
    PollSchedule,
    ScaledClock,
    SystemClock,
    TaskStatus,
    TaskTimeoutError,
)
from novita_video.testing import RateLimit
from tests.support import in_memory, simulated

pytestmark = [pytest.mark.anyio, pytest.mark.load]  # mostly virtual time: quick tier


async def test_a_failed_task_is_returned_not_raised() -> None:
    async with simulated(task_duration=(0.2, 0.4), failure_rate=1.0) as (_, client):
        result = await client.wait(await client.submit("a cat"))
    assert result.status is TaskStatus.FAILED
    assert result.reason
    assert not result.ok


@pytest.mark.virtual_time
async def test_many_concurrent_waits_share_one_poller() -> None:
    results: dict[str, TaskStatus] = {}
    late: list[float] = []
    clock = SystemClock()  # the virtual loop's time, which the simulator also reads
    defaults = {"poll_schedule": PollSchedule()}  # the bounds hold at the defaults
    async with in_memory(task_duration=(20, 60), seed=2, client=defaults) as (fake, client):
        ids = [await client.submit(f"clip {n}") for n in range(40)]

        async def wait_thrice(task_id: str) -> None:
            # Three waiters on one task id: still one watch, one set of polls.
            async with anyio.create_task_group() as group:
                for _ in range(2):
                    group.start_soon(client.wait, task_id)
                results[task_id] = (await client.wait(task_id)).status
                late.append(clock.now() - fake.task(task_id).finishes_at)

        async with anyio.create_task_group() as group:
            for task_id in ids:
                group.start_soon(wait_thrice, task_id)
            await anyio.sleep(0.1)
            snapshot = client.statistics()
            # 120 waits, one poller, one watch a task id.
            assert snapshot.pollers == 1
            assert snapshot.outstanding == 40
        assert client.statistics().outstanding == 0
    assert set(results.values()) == {TaskStatus.SUCCEED}
    polls = [fake.stats.polls[task_id] for task_id in ids]
    # Shared: a task's three waiters cost what one would, within the bounds for
    # tasks of 20-60 s (<= 6 polls; a wait() on a task nobody watched yet checks at once,
    # then its cold eta is believed only as far as it could cost progress_lead). The old
    # bounds (4 a task at most, 3.2 on average) held while a cold eta of up to 30 s was
    # believed whole (trusted_eta): a scale of seconds the issue removes, which noticed
    # ends 5-10 s late whenever such an eta ran out early.
    assert max(polls) <= 6
    assert statistics.mean(polls) <= 5.0
    # Noticed within the 2 s at p95 (virtual time: no machine noise to allow for).
    late.sort()
    assert min(late) >= 0
    assert late[int(0.95 * (len(late) - 1))] <= 2.0


async def _wait_all(client: Client, prompts: list[str], clock: Clock) -> dict[str, float]:
    """Submit ``prompts`` and wait for each; when (clock time) each wait returned."""
    handed: dict[str, float] = {}
    async with anyio.create_task_group() as group:
        for prompt in prompts:
            task_id = await client.submit(prompt)

            async def wait(task_id: str = task_id) -> None:
                await client.wait(task_id, timeout=3600)
                handed[task_id] = clock.now()

            group.start_soon(wait)
    return handed


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


QUEUE = {"queue_time": (0, 30), "eta_rounding": "round"}


@pytest.mark.parametrize(
    ("knobs", "max_mean_polls", "max_p95"),
    [
        # The server's eta is right: once a few tasks proved it, check as it runs out.
        ({"eta_error": 0.0}, 5.0, 4.0),
        # Real servers: a queue first, the eta rounded (0 a moment before the end).
        (QUEUE, 5.5, 4.0),
        # ... and each task's eta off by its own factor of 0.6-1.5: progress decides.
        (QUEUE | {"eta_bias": (0.6, 1.5)}, 6.5, 4.0),
        # No eta at all: two progress readings give the speed.
        ({"eta_error": None, "queue_time": (0, 30)}, 6.0, 4.0),
        # Nothing but durations: once a task runs, checks a tenth of its age apart
        # (blind_share), so at most 15 s late at 2.5 min, as blind_max's 15 s allowed at
        # any age, and 12.3 polls on virtual time (9 while every look came 15 s after the
        # last: a scale the issue removes; a 20-min task took 80 polls that way, 37 now).
        ({"eta_error": None, "report_progress": False}, 13.0, 15.0 + 4.0),
    ],
    ids=["accurate-eta", "rounded-eta-queue", "biased-eta", "progress-only", "nothing"],
)
@pytest.mark.virtual_time
async def test_minutes_long_tasks_cost_few_polls_and_little_lateness(
    knobs: dict[str, Any], max_mean_polls: float, max_p95: float
) -> None:
    # Tasks of 1-2.5 minutes play out on virtual time, in no real time. A few end first,
    # so the poller has learned what it will (as in any long batch); the next 24 are
    # measured. The lateness bound is the benchmark's 3 s target plus 1 s (what it was on
    # a scaled clock, for a machine whose CPU other processes compete for); the flaw this
    # guards against noticed ends 20 s late (benchmarks/README.md holds the 3 s target).
    clock = SystemClock()
    defaults = {"poll_schedule": PollSchedule()}  # as users get it
    async with in_memory(task_duration=(60, 150), seed=3, client=defaults, **knobs) as (
        fake,
        client,
    ):
        await _wait_all(client, [f"warm-up {n}" for n in range(8)], clock)
        handed = await _wait_all(client, [f"clip {n}" for n in range(24)], clock)
    polls = [fake.stats.polls[task_id] for task_id in handed]
    lateness = [handed[task_id] - fake.task(task_id).finishes_at for task_id in handed]
    assert len(handed) == 24
    assert min(lateness) >= 0
    assert statistics.mean(polls) <= max_mean_polls, polls
    assert max(polls) <= max_mean_polls + 5, polls  # no task runs away
    assert _p95(lateness) <= max_p95, sorted(lateness)


@pytest.mark.virtual_time
async def test_overdue_tasks_are_noticed_soon_whatever_their_age() -> None:
    # Each eta runs out halfway through the task's run, and progress says nothing: from
    # then on the task is overdue, for 20 to 200 seconds. Checks come at most
    # overdue_max (4 s) apart, so the end is noticed that soon, however long the task
    # (a backoff on the age would notice a 400 s task minutes late).
    schedule = PollSchedule()
    clock = SystemClock()  # the virtual loop's time
    async with in_memory(
        task_duration=(40, 400),
        queue_time=(0, 0),
        eta_bias=(0.5, 0.5),
        eta_rounding="floor",
        report_progress=False,
        seed=11,
    ) as (fake, client):
        handed = await _wait_all(client, [f"clip {n}" for n in range(20)], clock)
    lateness = {task_id: handed[task_id] - fake.task(task_id).finishes_at for task_id in handed}
    longest = sorted(handed, key=lambda task_id: fake.task(task_id).duration)[-5:]
    assert fake.task(longest[0]).duration > 250
    slack = 6.0  # as on the scaled clock it ran on before: loop and HTTP delays (150 ms), x40
    assert max(lateness.values()) <= schedule.overdue_max + slack, lateness
    assert max(lateness[task_id] for task_id in longest) <= schedule.overdue_max + slack


async def test_wait_times_out_on_the_injected_clock() -> None:
    clock = ScaledClock(speed=100)
    async with simulated(task_duration=(600, 600), clock=clock) as (_, client):
        task_id = await client.submit("a slow one")
        with anyio.fail_after(5), pytest.raises(TaskTimeoutError) as caught:
            await client.wait(task_id, timeout=100)  # 100 clock seconds: one real second
        assert caught.value.task_id == task_id
        assert caught.value.last_result is not None
        assert not caught.value.last_result.is_final
        assert client.statistics().outstanding == 0


async def test_wait_raises_what_retrying_cannot_mend() -> None:
    async with simulated() as (_, client):
        with pytest.raises(NotFoundError):
            await client.wait("no-such-task")


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    async with simulated(task_duration=(60, 60)) as (_, client):
        task_id = await client.submit("a cat")
        with anyio.move_on_after(0.2):
            await client.wait(task_id)
        assert client.statistics().outstanding == 0


@pytest.mark.virtual_time
async def test_429s_slow_the_whole_poller() -> None:
    limit = RateLimit(10, per=10.0)
    async with in_memory(task_duration=(5, 10), result_limit=limit) as (fake, client):
        ids = [await client.submit(f"clip {n}") for n in range(20)]
        async with anyio.create_task_group() as group:
            for task_id in ids:
                group.start_soon(client.wait, task_id)
        stats = client.statistics()
    assert stats.rate_limited == fake.stats.rate_limited["task_result"]
    assert stats.rate_limited > 0
    assert stats.poll_rpm is not None
    assert stats.poll_rpm < 600  # slowed down
    # Pausing the whole poller keeps 429s a minority of polls, not a storm.
    assert fake.stats.rate_limited["task_result"] <= fake.stats.requests["task_result"] // 2


async def test_the_client_closing_ends_every_wait() -> None:
    errors: list[BaseException] = []
    async with anyio.create_task_group() as outside:
        async with simulated(task_duration=(60, 60)) as (_, client):
            task_id = await client.submit("a cat")

            async def waiter() -> None:
                with pytest.raises(ClientClosedError) as caught:
                    await client.wait(task_id)
                errors.append(caught.value)

            outside.start_soon(waiter)
            await anyio.sleep(0.1)
    assert len(errors) == 1


@pytest.mark.virtual_time
async def test_wait_reports_progress_on_the_way() -> None:
    seen: list[tuple[TaskStatus, int]] = []
    async with in_memory(task_duration=(60, 60), eta_error=None) as (_, client):
        task_id = await client.submit("a cat")
        result = await client.wait(
            task_id, on_progress=lambda r: seen.append((r.status, r.progress))
        )
    assert result.ok
    assert len(seen) >= 2
    assert all(status in (TaskStatus.QUEUED, TaskStatus.PROCESSING) for status, _ in seen)
    progresses = [progress for _, progress in seen]
    assert progresses == sorted(progresses)
    assert progresses[-1] > 0
