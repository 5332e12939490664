"""The schedule at every scale and in every regime, as a table, on virtual time.

A cold client (every task submitted at once, nothing learned) runs the client's own
:class:`~novita_video._poller.Poller` with the default :class:`PollSchedule` against
tasks drawn as the simulator draws them (its :class:`TaskRecord`: a queue, then a run,
progress in whole percent that stops at 99, an eta rounded to whole seconds). Each cell
asserts how late ends are noticed (p95, virtual seconds) and the polls per task.
"""

from __future__ import annotations

import math
import random

import anyio
import pytest

from novita_video import PollSchedule, RetryPolicy, SystemClock, TaskResult, TaskStatus
from novita_video._limits import RateLimiter
from novita_video._poller import Poller
from novita_video._retrier import Retrier
from novita_video._stats import Counters
from novita_video.testing._tasks import (
    PROCESSING,
    QUEUED,
    SUCCEED,
    SubmitRequest,
    TaskRecord,
    draw_task,
)

pytestmark = pytest.mark.anyio

_STATUS = {
    QUEUED: TaskStatus.QUEUED,
    PROCESSING: TaskStatus.PROCESSING,
    SUCCEED: TaskStatus.SUCCEED,
}
#: How the regimes' etas relate to the real end.
_BIAS = {"exact": None, "early": (0.6, 0.8), "late": (1.3, 1.5), "biased": (0.6, 1.5)}


async def _cold_burst(
    n: int,
    duration: tuple[float, float],
    queue: tuple[float, float] | None,
    regime: str,
    *,
    rounding: str = "round",
    seed: int = 21,
) -> tuple[float, float]:
    """(p95 notice latency, polls per task) of ``n`` tasks submitted at once."""
    rng = random.Random(seed)
    start = anyio.current_time()
    records: dict[str, TaskRecord] = {}
    for _ in range(n):
        record = draw_task(
            rng,
            SubmitRequest("minimax-video-01", {"prompt": "a cat"}),
            now=start,
            wall=start,
            task_duration=duration,
            queue_fraction=0.1,
            failure_rate=0.0,
            eta_error=None,
            queue_time=queue,
            eta_bias=_BIAS.get(regime),
        )
        records[record.task_id] = record
    polls = dict.fromkeys(records, 0)

    async def fetch(task_id: str, attempt: int = 1) -> TaskResult:
        now = anyio.current_time()
        polls[task_id] += 1
        await anyio.sleep(0.01)  # a request takes a moment
        state = records[task_id].state_at(
            now,
            give_eta=regime not in ("absent", "nothing"),
            report_progress=regime != "nothing",
            eta_rounding=rounding,
        )
        return TaskResult(
            task_id,
            _STATUS[state.status],
            eta=state.eta or None,
            progress=state.progress_percent,
            task_type="ONE_TYPE_FOR_ALL",
        )

    clock = SystemClock()
    poller = Poller(
        fetch,
        clock=clock,
        schedule=PollSchedule(),
        limiter=RateLimiter(None, clock=clock, adapt_unlimited=True),
        concurrency=16,
        retrier=Retrier(RetryPolicy(), clock=clock, counters=Counters()),
    )
    late: list[float] = []
    async with anyio.create_task_group() as group:
        group.start_soon(poller.run)
        for task_id, record in records.items():

            def done(*_: object, record: TaskRecord = record) -> None:
                late.append(anyio.current_time() - record.finishes_at)

            poller.listen(
                task_id,
                deadline=math.inf,
                on_done=done,
                submitted_at=start,
                model="minimax-video-01",
            )
        while len(late) < n:
            await anyio.sleep(1)
        group.cancel_scope.cancel()
    late.sort()
    assert late[0] >= 0  # never before the end
    return late[int(0.95 * (n - 1))], sum(polls.values()) / n


SCALES = {
    "8-15 s": ((8.0, 15.0), (0.0, 3.0)),
    "20-45 s": ((20.0, 45.0), (0.0, 8.0)),
    "2-5 min": ((120.0, 300.0), (0.0, 60.0)),
    "20 min": ((1150.0, 1250.0), (0.0, 60.0)),
}


#: The issue's bounds for tasks of 8 s to 5 minutes, in every regime: ends noticed at p95
#: within 2 s, at most 6 polls a task.
ISSUE = (2.0, 6.0)


@pytest.mark.parametrize(
    ("scale", "regime", "p95", "polls"),
    [
        # Scale, regime, then the bounds: p95 notice latency (s) and polls per task.
        ("8-15 s", "exact", *ISSUE),
        ("8-15 s", "early", *ISSUE),
        ("8-15 s", "late", *ISSUE),
        ("8-15 s", "biased", *ISSUE),
        ("8-15 s", "absent", *ISSUE),
        ("20-45 s", "exact", *ISSUE),
        ("20-45 s", "early", *ISSUE),
        ("20-45 s", "late", *ISSUE),
        ("20-45 s", "biased", *ISSUE),
        ("20-45 s", "absent", *ISSUE),
        ("2-5 min", "exact", *ISSUE),
        ("2-5 min", "early", *ISSUE),
        ("2-5 min", "late", *ISSUE),
        ("2-5 min", "biased", *ISSUE),
        ("2-5 min", "absent", *ISSUE),
        # Twenty minutes: the end still within 2 s; the polls grow with the run's length
        # only as the progress readings need (measured, seeds 21-23: exact 6.3-6.8, early
        # 10.0-10.9, late 9.1-10.1, biased 9.7-10.5, absent 12.1-12.4).
        ("20 min", "exact", 2.0, 8.0),
        ("20 min", "early", 2.0, 12.0),
        ("20 min", "late", 2.0, 12.0),
        ("20 min", "biased", 2.0, 12.0),
        ("20 min", "absent", 2.0, 14.0),
        # Nothing at all (no eta, no progress): blind looks, once the task runs every
        # blind_share (a tenth) of its age, or overdue_max (4 s) when longer. So an end
        # is noticed at most a tenth of the task's age late (4 s for short tasks), and the
        # looks grow with the logarithm of its length (measured: 8-15 s 3.8 s / 3.9 polls,
        # 2-5 min 25-26 s / 18.2-18.5, 20 min 107-119 s / 36-37).
        ("8-15 s", "nothing", 4.0 + 0.1, 5.0),
        ("2-5 min", "nothing", 0.1 * 360, 20.0),
        ("20 min", "nothing", 0.1 * 1310, 40.0),
    ],
)
async def test_a_cold_burst_notices_ends_within_its_bounds(
    scale: str, regime: str, p95: float, polls: float
) -> None:
    duration, queue = SCALES[scale]
    n = 50 if scale == "20 min" else 200
    latency, per_task = await _cold_burst(n, duration, queue, regime)
    assert latency <= p95
    assert per_task <= polls


async def test_short_tasks_with_exact_etas_cost_two_polls_within_a_second() -> None:
    # Benchmark scenario 1's tasks: 2-6 s, a tenth of it queued, etas rounded up.
    latency, per_task = await _cold_burst(1000, (2.0, 6.0), None, "exact", rounding="ceil")
    assert latency <= 1.0
    assert per_task <= 2.0
    # (measured, seeds 21-23: p95 0.82 s, 1.83 polls: the first look, 2.4 s after
    # submission, reads an eta short enough to be believed whole, the second the end)
