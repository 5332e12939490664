"""Batches on virtual time: the client at its defaults, the simulator's own handlers in
memory (:class:`~novita_video.testing.MemoryTransport`), tasks as long as real ones.

Each test plays many minutes of a batch in well under a second, the same way every run.
"""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest

from novita_video import (
    BatchAbortedError,
    Client,
    InsufficientBalanceError,
    Outcome,
    RetryPolicy,
    ServerError,
    TaskTimeoutError,
)
from novita_video.testing import FakeNovita, MemoryTransport, RateLimit, VirtualTimeLoop

pytestmark = pytest.mark.anyio

#: Novita's regime: queued for a varying time, minutes of work, etas off by up to 30 %.
REAL: dict[str, Any] = {
    "queue_time": (10.0, 120.0),
    "task_duration": (120.0, 300.0),
    "eta_bias": (0.7, 1.3),
    "submit_limit": RateLimit(20, per=60),
    "seed": 11,
}


def submits(transport: MemoryTransport) -> int:
    return sum(1 for method, _ in transport.sent if method == "POST")


def polls(transport: MemoryTransport) -> int:
    return sum(1 for method, path in transport.sent if path.endswith("task-result"))


async def test_at_the_defaults_every_clip_comes_in_the_order_it_ended(
    loop: VirtualTimeLoop,
) -> None:
    fake = FakeNovita(**REAL)
    transport = MemoryTransport(fake)
    outcomes: list[tuple[Outcome, float]] = []
    async with Client(transport=transport) as client:
        async for outcome in client.generate([f"prompt {n}" for n in range(40)]):
            outcomes.append((outcome, anyio.current_time()))
    assert sorted(outcome.index for outcome, _ in outcomes) == list(range(40))
    assert all(outcome.ok for outcome, _ in outcomes)
    # Never a 429: the default limiter keeps to Novita's 20 a minute.
    assert fake.stats.rate_limited.get("submit", 0) == 0
    assert submits(transport) == 40
    ends = [fake.task(outcome.task_id or "").finishes_at for outcome, _ in outcomes]
    for (outcome, seen), end in zip(outcomes, ends, strict=True):
        assert 0 <= seen - end < 6.0, outcome.index  # noticed within seconds of its end
    for before, after in itertools.pairwise(ends):
        assert before < after + 6.0  # in the order they ended, but for near ties
    # 40 submits at 20 a minute, then the last task's minutes: about that long.
    last_submit = max(fake.task(o.task_id or "").submitted_at for o, _ in outcomes)
    assert last_submit - loop.started == pytest.approx(39 * 3.06, rel=0.05)
    assert loop.elapsed < last_submit - loop.started + 420 + 6
    assert polls(transport) / 40 < 12


async def test_a_fatal_answer_stops_every_later_submit_at_once() -> None:
    fake = FakeNovita(**{**REAL, "balance": 5})
    transport = MemoryTransport(fake)
    async with Client(transport=transport) as client:
        outcomes = [outcome async for outcome in client.generate([f"p{n}" for n in range(30)])]
    assert len(outcomes) == 30
    made = [outcome for outcome in outcomes if outcome.ok]
    refused = [o for o in outcomes if isinstance(o.error, InsufficientBalanceError)]
    aborted = [o for o in outcomes if isinstance(o.error, BatchAbortedError)]
    assert len(made) == 5
    assert len(refused) == 1
    assert len(aborted) == 24
    # One POST past the balance, and not one more: the rest were never sent.
    assert submits(transport) == 6
    assert all(isinstance(o.error.cause, InsufficientBalanceError) for o in aborted)  # type: ignore[union-attr]


async def test_leaving_the_loop_stops_submits_and_polls_for_good() -> None:
    fake = FakeNovita(**REAL)
    transport = MemoryTransport(fake)
    async with Client(transport=transport) as client:
        async for _outcome in client.generate([f"p{n}" for n in range(100)]):
            break
        sent = len(transport.sent)
        await anyio.sleep(3600)  # an hour of virtual time
        assert len(transport.sent) == sent
        assert client.statistics().outstanding == 0
    assert submits(transport) < 100


async def test_a_cancelled_consumer_stops_the_batch_where_it_stood() -> None:
    fake = FakeNovita(**REAL)
    transport = MemoryTransport(fake)
    async with Client(transport=transport) as client:
        with anyio.move_on_after(60):
            async for _outcome in client.generate([f"p{n}" for n in range(100)]):
                pytest.fail("no task of minutes ends within a minute")
        sent = submits(transport)
        assert sent == pytest.approx(60 / 3.06, abs=2)  # what 20 a minute allows in 60 s
        await anyio.sleep(600)
        assert submits(transport) == sent


async def test_a_task_timeout_ends_each_task_at_its_own_deadline() -> None:
    fake = FakeNovita(**{**REAL, "queue_time": (200.0, 300.0)})
    transport = MemoryTransport(fake)
    async with Client(transport=transport) as client:
        batch = client.generate([f"p{n}" for n in range(10)], task_timeout=100)
        async with batch as outcomes:
            async for outcome in outcomes:
                assert isinstance(outcome.error, TaskTimeoutError)
                assert outcome.task_id is not None
                submitted = fake.task(outcome.task_id).submitted_at
                # Ended at its deadline (the check in flight then took 0 time here).
                assert anyio.current_time() - submitted == pytest.approx(100, abs=0.5)


async def test_a_wait_on_a_long_task_reports_progress_and_ends_on_time() -> None:
    fake = FakeNovita(**{**REAL, "seed": 5})
    transport = MemoryTransport(fake)
    seen: list[float] = []
    async with Client(transport=transport) as client:
        task_id = await client.submit("a long one")
        result = await client.wait(
            task_id, timeout=3600, on_progress=lambda r: seen.append(r.progress)
        )
        assert result.ok
        assert 0 <= anyio.current_time() - fake.task(task_id).finishes_at < 6.0
    assert seen == sorted(seen)
    assert len(seen) >= 2


async def test_a_download_whose_renewal_fails_asks_no_more_than_one_retry_budget(
    tmp_path: Any,
) -> None:
    fake = FakeNovita(**REAL)
    transport = MemoryTransport(fake)
    async with Client(transport=transport) as client:
        result = await client.wait(await client.submit("a clip"), timeout=3600)
        await anyio.sleep(2 * 3600)  # its link expired an hour ago
        fake.set_chaos(result_server_errors=1.0)  # and the API answers only 5xx now
        asked = polls(transport)
        with pytest.raises(ServerError):
            await client.download(result, tmp_path / "clip.mp4")
    # One renewal, retried by its own policy; the download did not retry it again.
    assert polls(transport) - asked == RetryPolicy().max_attempts
    assert not (tmp_path / "clip.mp4").exists()
