"""The poller's check workers and grouped wakeups, on virtual time, without a network.

Checks run on a few worker tasks the poller starts once and reuses (a task per check
cost more than the check's own bookkeeping), and the checks due within a short window
are taken together (one wakeup of the loop for many polls). What must still hold: never
more than ``concurrency`` checks in flight, a check that raises ends its own task's
waits alone, a slow check frees its place without leaving extra tasks behind, nothing
outlives the poller, and no deadline is taken early.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import attrs
import pytest

from novita_video import (
    NovitaError,
    PollSchedule,
    ProtocolError,
    RetryPolicy,
    SystemClock,
    TaskResult,
    TaskStatus,
    TaskTimeoutError,
)
from novita_video._limits import RateLimiter
from novita_video._poller import Poller
from novita_video._retrier import Retrier
from novita_video._stats import Counters

pytestmark = pytest.mark.anyio


@attrs.define
class Server:
    """Answers checks: each task ends at ``ends[task_id]`` (loop time); records which
    task made each check, when, and how many were in flight at most."""

    ends: dict[str, float] = attrs.Factory(dict)
    took: Callable[[str], float] = lambda _: 0.2
    raises: set[str] = attrs.Factory(set)
    in_flight: int = 0
    most_in_flight: int = 0
    workers: set[int] = attrs.Factory(set)
    checked_at: list[tuple[str, float]] = attrs.Factory(list)

    async def fetch(self, task_id: str, attempt: int = 1) -> TaskResult:
        now = anyio.current_time()
        self.checked_at.append((task_id, now))
        self.workers.add(anyio.get_current_task().id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await anyio.sleep(self.took(task_id))
        finally:
            self.in_flight -= 1
        if task_id in self.raises:
            raise RuntimeError(f"a transport's bug while checking {task_id}")
        if now >= self.ends.get(task_id, 0.0):
            return TaskResult(task_id, TaskStatus.SUCCEED, task_type="T")
        return TaskResult(task_id, TaskStatus.PROCESSING, progress=1, task_type="T")


@attrs.define
class Ended:
    at: float
    result: TaskResult | None
    error: NovitaError | None


def _poller(server: Server, concurrency: int) -> Poller:
    clock = SystemClock()
    return Poller(
        server.fetch,
        clock=clock,
        schedule=PollSchedule(),
        limiter=RateLimiter(None, clock=clock, adapt_unlimited=True),
        concurrency=concurrency,
        retrier=Retrier(RetryPolicy(), clock=clock, counters=Counters()),
    )


@asynccontextmanager
async def running(server: Server, concurrency: int) -> AsyncIterator[Poller]:
    poller = _poller(server, concurrency)
    async with anyio.create_task_group() as group:
        group.start_soon(poller.run)
        yield poller
        group.cancel_scope.cancel()


def listen(
    poller: Poller,
    task_id: str,
    ended: dict[str, Ended],
    *,
    deadline: float = math.inf,
    submitted_at: float | None = None,
) -> None:
    def on_done(result: TaskResult | None, error: NovitaError | None) -> None:
        ended[task_id] = Ended(anyio.current_time(), result, error)

    poller.listen(task_id, deadline=deadline, on_done=on_done, submitted_at=submitted_at)


async def until(done: Callable[[], bool]) -> None:
    while not done():
        await anyio.sleep(0.5)


def alive(before: int) -> int:
    """Tasks of the loop started since there were ``before`` (the test's runner's own)."""
    return len(asyncio.all_tasks()) - before


async def test_ten_thousand_due_at_once_run_on_at_most_concurrency_tasks() -> None:
    server = Server()
    ended: dict[str, Ended] = {}
    before = len(asyncio.all_tasks())
    async with running(server, concurrency=16) as poller:
        for n in range(10_000):
            listen(poller, f"t{n}", ended)
        # The poller's loop, its dispatcher and its workers: not a task per check.
        await anyio.sleep(1)
        assert alive(before) <= 2 + 16
        await until(lambda: len(ended) == 10_000)
    assert all(end.result is not None and end.result.is_final for end in ended.values())
    assert server.most_in_flight == 16
    assert len(server.workers) <= 16  # started once, reused for every check


async def test_a_check_that_raises_while_others_are_in_flight_ends_its_task_alone() -> None:
    # "bad" is the second of the first four checks: three others are in flight when it
    # raises, and sixteen more wait in the queue.
    server = Server(raises={"bad"}, took=lambda task_id: 0.1 if task_id == "bad" else 0.3)
    ended: dict[str, Ended] = {}
    ids = ["t0", "bad", *(f"t{n}" for n in range(1, 19))]
    async with running(server, concurrency=4) as poller:
        for task_id in ids:
            listen(poller, task_id, ended)
        await until(lambda: len(ended) == len(ids))
        assert poller.outstanding == 0
    bad = ended.pop("bad")
    assert isinstance(bad.error, ProtocolError)
    assert isinstance(bad.error.__cause__, RuntimeError)
    assert all(end.error is None and end.result is not None for end in ended.values())
    assert server.most_in_flight == 4
    # The worker whose check raised went on to the next one: no task was lost or added.
    assert len(server.workers) <= 4


async def test_slow_checks_free_their_places_and_leave_no_extra_task_behind() -> None:
    # Two checks hang for 60 s (a dripping answer): after slow_check (1 s) they stop
    # holding their places, so the forty others go on beside them. Once the stragglers
    # return, at most `concurrency` idle workers stay.
    server = Server(took=lambda task_id: 60.0 if task_id in {"s0", "s1"} else 0.2)
    ended: dict[str, Ended] = {}
    ids = ["s0", "s1", *(f"t{n}" for n in range(40))]
    before, start = len(asyncio.all_tasks()), anyio.current_time()
    async with running(server, concurrency=2) as poller:
        for task_id in ids:
            listen(poller, task_id, ended)
        await until(lambda: len(ended) == 40)
        assert set(ended) == set(ids[2:])  # the quick ones did not wait for the slow
        assert anyio.current_time() - start < 30
        await until(lambda: len(ended) == len(ids))
        await anyio.sleep(1)
        assert alive(before) <= 2 + 2  # the loop, the dispatcher, two idle workers
    # The two stragglers' tasks, and the two that went on beside them.
    assert len(server.workers) <= 4


async def test_leaving_early_leaves_no_task_and_no_wait_behind() -> None:
    server = Server(ends={f"t{n}": math.inf for n in range(100)})
    ended: dict[str, Ended] = {}
    before = len(asyncio.all_tasks())
    async with anyio.create_task_group() as group:
        poller = _poller(server, concurrency=8)
        group.start_soon(poller.run)
        for n in range(100):
            listen(poller, f"t{n}", ended)
        await anyio.sleep(2.1)  # some checks in flight, others queued, workers idle between
        assert server.in_flight > 0
        assert len(server.workers) <= 8
        group.cancel_scope.cancel()
    assert alive(before) == 0
    assert not poller.running
    assert ended == {}  # cancelling the poller is not an answer to anyone


async def test_checks_due_close_together_share_a_wakeup_and_no_deadline_comes_early() -> None:
    # Two hundred tasks submitted 10 ms apart: their checks fall due 10 ms apart too,
    # and each wakeup of the poller takes those due within half min_interval after it.
    # A listener's deadline is kept to the instant, whatever the window.
    server = Server()
    ended: dict[str, Ended] = {}
    start = anyio.current_time()
    async with running(server, concurrency=256) as poller:
        for n in range(200):
            ends = start + 5 + n * 0.01
            server.ends[f"t{n}"] = ends
            listen(poller, f"t{n}", ended, submitted_at=anyio.current_time())
            await anyio.sleep(0.01)
        deadline = anyio.current_time() + 0.3
        server.ends["late"] = math.inf
        listen(poller, "late", ended, deadline=deadline, submitted_at=anyio.current_time())
        await until(lambda: len(ended) == 201)
    assert isinstance(ended["late"].error, TaskTimeoutError)
    assert ended["late"].at >= deadline
    instants = {at for _, at in server.checked_at}
    # Without the window, nearly every check had an instant of its own.
    assert len(instants) <= len(server.checked_at) / 4
    assert all(ended[f"t{n}"].error is None for n in range(200))
    # Taken early or not, every end is noticed within the schedule's bound (this
    # server's answers say nothing of when they end).
    lateness = [ended[f"t{n}"].at - 0.2 - server.ends[f"t{n}"] for n in range(200)]
    assert max(lateness) <= PollSchedule().overdue_max
