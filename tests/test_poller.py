"""The one poller, through wait(): shared by every waiter, driven by eta, slowed by 429s."""

from __future__ import annotations

import statistics
from typing import Any

import anyio
import pytest
from support import simulated

from novita_video import (
    ClientClosedError,
    NotFoundError,
    PollSchedule,
    ScaledClock,
    TaskStatus,
    TaskTimeoutError,
)
from novita_video.testing import RateLimit

pytestmark = pytest.mark.anyio


async def test_a_failed_task_is_returned_not_raised() -> None:
    async with simulated(task_duration=(0.2, 0.4), failure_rate=1.0) as (_, client):
        result = await client.wait(await client.submit("a cat"))
    assert result.status is TaskStatus.FAILED
    assert result.reason
    assert not result.ok


async def test_many_concurrent_waits_share_one_poller() -> None:
    clock = ScaledClock(speed=20)
    results: dict[str, TaskStatus] = {}
    async with simulated(task_duration=(20, 60), clock=clock, seed=2) as (fake, client):
        ids = [await client.submit(f"clip {n}") for n in range(40)]

        async def wait_thrice(task_id: str) -> None:
            # Three waiters on one task id: still one watch, one set of polls.
            async with anyio.create_task_group() as group:
                for _ in range(2):
                    group.start_soon(client.wait, task_id)
                results[task_id] = (await client.wait(task_id)).status

        async with anyio.create_task_group() as group:
            for task_id in ids:
                group.start_soon(wait_thrice, task_id)
            await anyio.sleep(0.1)
            snapshot = client.statistics()
            assert snapshot.pollers == 1
            assert snapshot.outstanding == 40
        assert client.statistics().outstanding == 0
    assert set(results.values()) == {TaskStatus.SUCCEED}
    polls = [fake.stats.polls[task_id] for task_id in ids]
    # A wait() on a task nobody watched yet checks at once; then the eta is known, and
    # one or two more polls catch the end.
    assert max(polls) <= 4
    assert statistics.mean(polls) <= 3.2


@pytest.mark.parametrize(
    ("knobs", "max_mean_polls"),
    [
        # The server's eta is right: learn it, then check as it runs out (in jumps of at
        # most max_interval, two minutes, in case a real server's eta is wrong).
        ({"eta_error": 0.0}, 4.0),
        # No eta: progress extrapolation. The target; these 30 tasks take about 12
        # (the benchmark measures 8 on its 200).
        ({"eta_error": None}, 15.0),
        ({"eta_error": None, "report_progress": False}, 20.0),  # nothing: backoff
    ],
    ids=["accurate-eta", "progress-only", "nothing"],
)
async def test_minutes_long_tasks_cost_few_polls(
    knobs: dict[str, Any], max_mean_polls: float
) -> None:
    clock = ScaledClock(speed=60)  # 2-5 minute tasks in 5 real seconds, as in the benchmark
    handed: dict[str, float] = {}
    defaults = {"poll_schedule": PollSchedule()}  # the real schedule, first check at 2 s
    async with simulated(
        task_duration=(120, 300), clock=clock, seed=3, client=defaults, **knobs
    ) as (fake, client):
        async with anyio.create_task_group() as group:
            for n in range(30):
                task_id = await client.submit(f"clip {n}")

                async def wait(task_id: str = task_id) -> None:
                    await client.wait(task_id, timeout=600)
                    handed[task_id] = clock.now()

                group.start_soon(wait)
    polls = list(fake.stats.polls.values())
    latencies = sorted(handed[t] - fake.task(t).finishes_at for t in handed)
    assert len(handed) == 30
    assert statistics.mean(polls) <= max_mean_polls, polls
    assert max(polls) <= max_mean_polls + 5, polls  # no task runs away
    assert min(latencies) >= 0
    if knobs.get("eta_error") == 0.0:
        assert latencies[int(0.95 * len(latencies)) - 1] <= 3.0, latencies


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


async def test_429s_slow_the_whole_poller() -> None:
    clock = ScaledClock(speed=10)
    limit = RateLimit(10, per=10.0)
    async with simulated(task_duration=(5, 10), clock=clock, result_limit=limit) as (fake, client):
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


async def test_wait_reports_progress_on_the_way() -> None:
    seen: list[tuple[TaskStatus, int]] = []
    clock = ScaledClock(speed=20)
    async with simulated(task_duration=(60, 60), clock=clock, eta_error=None) as (_, client):
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
