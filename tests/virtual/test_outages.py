"""Waits against an API that is away or pausing us, on virtual time.

A wait outlasts an outage of task-result (its own deadline ends it, not a count of
attempts), and its deadline holds whatever the poll limiter is doing: the client at its
defaults, the simulator's handlers in memory, minutes of outage played in milliseconds.
"""

from __future__ import annotations

import anyio
import pytest

from novita_video import (
    Client,
    Outcome,
    RetryPolicy,
    ServerError,
    TaskResult,
    TaskTimeoutError,
)
from novita_video.testing import Chaos, FakeNovita, MemoryTransport
from tests.virtual.meddling import Answer, Meddling, Response

pytestmark = pytest.mark.anyio

OUTAGE = Chaos(result_server_errors=1.0, server_error_statuses=(503,))


def polls(transport: MemoryTransport) -> int:
    return sum(1 for _, path in transport.sent if path.endswith("task-result"))


async def test_waits_and_batches_outlast_a_25_second_outage_of_task_result() -> None:
    # Tasks end 15-25 s after their submit, in the middle of 25 s of 503s (from 10 s to
    # 35 s): their checks fail for up to 25 s, more than six attempts' worth (about 14 s
    # of backoff), and every wait and every outcome still ends with the clip.
    fake = FakeNovita(task_duration=(15, 25), seed=4)
    transport = MemoryTransport(fake)
    policy = RetryPolicy()
    ended: dict[str, tuple[TaskResult, float]] = {}
    outcomes: list[tuple[Outcome, float]] = []
    async with Client(transport=transport, submit_rpm=None) as client:
        start = anyio.current_time()
        ids = [await client.submit(f"waited {n}") for n in range(5)]

        async def wait(task_id: str) -> None:
            ended[task_id] = (await client.wait(task_id, timeout=120), anyio.current_time())

        async def batch() -> None:
            async for outcome in client.generate([f"batched {n}" for n in range(5)]):
                outcomes.append((outcome, anyio.current_time()))

        async def outage() -> None:
            await anyio.sleep(10)
            fake.chaos = OUTAGE
            await anyio.sleep(1)
            # A single get_result is still one request's worth of attempts.
            with pytest.raises(ServerError):
                await client.get_result(ids[0])
            assert anyio.current_time() < start + 35
            await anyio.sleep_until(start + 35)
            fake.chaos = Chaos()

        async with anyio.create_task_group() as group:
            for task_id in ids:
                group.start_soon(wait, task_id)
            group.start_soon(batch)
            group.start_soon(outage)
        statistics = client.statistics()
    assert len(ended) == 5
    assert len(outcomes) == 5
    assert all(outcome.ok for outcome, _ in outcomes), [o.error for o, _ in outcomes]
    made = [(result.task_id, at) for result, at in ended.values() if result.ok]
    made += [(outcome.task_id or "", at) for outcome, at in outcomes]
    assert len(made) == 10
    for task_id, at in made:
        # Seen after its end and after the outage, within one capped backoff of both.
        end = max(fake.task(task_id).finishes_at, start + 35)
        assert end <= at <= end + policy.max_delay + 1
    # Every failed check was retried and counted, but for get_result's last attempt.
    failed = fake.stats.chaos["server_error_503"]["task_result"]
    assert failed > 6
    assert statistics.retries == failed - 1


async def test_a_wait_an_outage_outlasts_ends_at_its_timeout_naming_the_outage() -> None:
    fake = FakeNovita(task_duration=(30, 30), chaos=OUTAGE)
    transport = MemoryTransport(fake)
    async with Client(transport=transport, submit_rpm=None) as client:
        task_id = await client.submit("a cat")
        start = anyio.current_time()
        with pytest.raises(TaskTimeoutError) as caught:
            await client.wait(task_id, timeout=100)
        assert anyio.current_time() - start == pytest.approx(100, abs=0.5)
    assert isinstance(caught.value.__cause__, ServerError)
    assert "503" in str(caught.value)
    assert caught.value.task_id == task_id
    # Capped backoff: about 15 s of doubling, then one check every 30 s at most.
    assert 7 <= polls(transport) <= 14


async def test_a_retry_after_holds_back_polls_not_deadlines() -> None:
    # The first poll is answered 429 with Retry-After: 20, which pauses every poll for
    # 20 s. A wait of 2 s and a batch's task_timeout of 3 s end on time regardless.
    fake = FakeNovita(task_duration=(300, 300))

    async def first_one_limited(task_id: str, answer: Answer) -> Response:
        if fake.stats.requests.get("task_result", 0) == 0:
            fake.set_chaos(result_rate_limits=1.0, rate_limit_retry_after=20)
        try:
            return await answer()
        finally:
            fake.chaos = Chaos()

    ends: dict[str, float] = {}
    async with Client(transport=Meddling(fake, first_one_limited), submit_rpm=None) as client:
        first, second = await client.submit("a cat"), await client.submit("a dog")
        async with anyio.create_task_group() as group:
            group.start_soon(client.wait, first, 3600)  # its check draws the 429
            while client.statistics().rate_limited == 0:
                await anyio.sleep(0.1)
            paused_at = anyio.current_time()

            async def wait() -> None:
                with pytest.raises(TaskTimeoutError):
                    await client.wait(second, timeout=2)
                ends["wait"] = anyio.current_time() - paused_at

            async def batch() -> None:
                async for outcome in client.generate(["a bird"], task_timeout=3):
                    assert isinstance(outcome.error, TaskTimeoutError)
                    assert outcome.task_id is not None
                    submitted = fake.task(outcome.task_id).submitted_at
                    ends["batch"] = anyio.current_time() - submitted

            group.start_soon(wait)
            group.start_soon(batch)
            while len(ends) < 2:
                await anyio.sleep(0.1)
            group.cancel_scope.cancel()
    assert ends["wait"] == pytest.approx(2, abs=1.0)
    assert ends["batch"] == pytest.approx(3, abs=1.0)
