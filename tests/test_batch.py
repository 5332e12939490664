"""generate(): one Outcome per prompt, lazily, in finishing order, stopping cleanly."""

from __future__ import annotations

import gc
import itertools
import math
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from novita_video import (
    AuthenticationError,
    BadRequestError,
    BatchAbortedError,
    ClientClosedError,
    InsufficientBalanceError,
    InvalidRequestError,
    Outcome,
    TaskFailedError,
    TaskStatus,
    TaskTimeoutError,
    VideoRequest,
)
from tests.support import in_memory, simulated

pytestmark = pytest.mark.anyio


def check_one_per_prompt(outcomes: list[Outcome], count: int) -> None:
    assert sorted(outcome.index for outcome in outcomes) == list(range(count))


async def test_every_prompt_gets_exactly_one_outcome() -> None:
    prompts: list[object] = [
        "a cat",
        VideoRequest("a dog", image_url="https://x.example/dog.png"),
        {"prompt": "a fox", "enable_prompt_expansion": False},
        "",  # invalid: empty
        42,  # invalid: not a prompt at all
        {"prompt": "a cow", "colour": "red"},  # invalid: unknown field
        "a [illegal] prompt",  # refused by the server
        *[f"clip {n}" for n in range(20)],
    ]
    async with simulated(task_duration=(0.2, 1.0), failure_rate=0.3, seed=4) as (fake, client):
        outcomes = [outcome async for outcome in client.generate(prompts, concurrency=8)]
    check_one_per_prompt(outcomes, len(prompts))
    by_index = {outcome.index: outcome for outcome in outcomes}
    for index in (3, 4, 5):
        assert isinstance(by_index[index].error, InvalidRequestError)
        assert by_index[index].task_id is None
        assert by_index[index].request is None
    assert isinstance(by_index[6].error, BadRequestError)
    assert by_index[6].error.reason == "ILLEGAL_PROMPT"
    assert by_index[1].request == prompts[1]
    succeeded = [outcome for outcome in outcomes if outcome.ok]
    failed = [outcome for outcome in outcomes if outcome.status is TaskStatus.FAILED]
    assert succeeded
    assert failed
    for outcome in succeeded:
        assert outcome.video_url
        assert outcome.task_id in fake.stats.tasks
    for outcome in failed:
        # The result is the data; the error says why in words (the README prints it).
        assert isinstance(outcome.error, TaskFailedError)
        assert outcome.result is not None
        assert outcome.result.reason
        assert outcome.result.reason in str(outcome.error)
    assert fake.stats.task_count == len(prompts) - 4  # nothing invalid was sent
    assert fake.stats.duplicate_submissions == 0


@pytest.mark.virtual_time
async def test_outcomes_come_in_the_order_tasks_finish() -> None:
    # Tasks longer than the first check (2 s): from then on the eta times each notice.
    async with in_memory(task_duration=(2.5, 6.0), seed=5) as (fake, client):
        outcomes = [
            o async for o in client.generate([f"clip {n}" for n in range(30)], concurrency=30)
        ]
    finishes = [fake.task(outcome.task_id).finishes_at for outcome in outcomes if outcome.task_id]
    # Out of order only within the poller's notice latency, never by whole seconds.
    inversions = [earlier - later for earlier, later in itertools.pairwise(finishes)]
    assert len(finishes) == 30
    assert max(inversions) <= 1.0, inversions


async def test_input_is_read_lazily_with_bounded_outstanding_tasks() -> None:
    pulled = 0

    def endless() -> Iterator[str]:
        nonlocal pulled
        while True:
            pulled += 1
            yield f"clip {pulled}"

    starts: list[bool] = []  # one per POST begun: had the consumer left by then?
    gone = False
    async with simulated(task_duration=(0.1, 0.2)) as (fake, client):
        taken = 0
        async with client.generate(
            endless(),
            max_outstanding=5,
            concurrency=2,
            before_submit=lambda *_: starts.append(gone),
        ) as outcomes:
            async for outcome in outcomes:
                assert outcome.ok
                taken += 1
                assert pulled - taken <= 5  # never more than max_outstanding ahead
                assert client.statistics().outstanding <= 5
                if taken == 20:
                    break
        gone = True
        await anyio.sleep(0.5)
        # Nothing began after the consumer left; POSTs already on the wire may land after
        # it, and every one that reached the server was one of those begun before.
        assert not any(starts)
        assert fake.stats.requests["submit"] == len(starts)
        assert client.statistics().outstanding == 0
    assert len(starts) <= 25


async def test_breaking_out_of_a_plain_async_for_stops_the_batch() -> None:
    starts: list[bool] = []  # one per POST begun: was the consumer gone by then?
    gone = False
    async with simulated(task_duration=(0.1, 0.3), client={"submit_rpm": 600}) as (fake, client):
        prompts = [f"clip {n}" for n in range(1000)]
        async for _ in client.generate(prompts, before_submit=lambda *_: starts.append(gone)):
            break
        gone = True
        gc.collect()  # CPython frees the batch at once; this makes the test say so anywhere
        await anyio.sleep(0.5)
        assert client.statistics().outstanding == 0
    assert not any(starts)  # no POST began after the consumer left
    assert fake.stats.requests["submit"] <= len(starts) < 20


async def test_a_cancelled_consumer_stops_the_batch() -> None:
    starts: list[bool] = []
    gone = False
    async with simulated(task_duration=(5, 6)) as (fake, client):
        prompts = [f"clip {n}" for n in range(1000)]
        with anyio.CancelScope() as consumer:

            def before_submit(*_: object) -> None:
                starts.append(gone)
                if len(starts) == 20:  # the consumer goes mid-batch (not after a time:
                    consumer.cancel()  # a quick machine sent all 1,000 in 0.3 s)

            async with client.generate(prompts, before_submit=before_submit) as outcomes:
                async for _ in outcomes:
                    pass
        gone = True
        await anyio.sleep(0.3)
        received = fake.stats.requests["submit"]
        await anyio.sleep(0.3)
        assert fake.stats.requests["submit"] == received
        assert client.statistics().outstanding == 0
    assert not any(starts)
    assert 0 < received <= len(starts) < 1000


async def test_no_balance_stops_every_later_submit() -> None:
    prompts = [f"clip {n}" for n in range(12)]
    async with simulated(task_duration=(0.2, 0.4), balance=3) as (fake, client):
        outcomes = [o async for o in client.generate(prompts, concurrency=1)]
    check_one_per_prompt(outcomes, 12)
    assert sorted(o.index for o in outcomes if o.ok) == [0, 1, 2]
    (broke,) = [o for o in outcomes if isinstance(o.error, InsufficientBalanceError)]
    aborted = [o for o in outcomes if isinstance(o.error, BatchAbortedError)]
    assert broke.index == 3
    assert sorted(o.index for o in aborted) == list(range(4, 12))
    assert all(
        o.error.cause is broke.error for o in aborted if isinstance(o.error, BatchAbortedError)
    )
    assert all(o.error.dooms_batch for o in aborted if o.error is not None)
    assert fake.stats.requests["submit"] == 4  # zero POSTs after the first fatal answer


@pytest.mark.virtual_time
async def test_a_fatal_answer_cancels_waiting_submitters_at_once() -> None:
    # 1 submit every 2 s: without cancellation the aborted prompts would still take
    # their turns; with it, the batch ends as soon as the submitted tasks do.
    async with in_memory(task_duration=(0.2, 0.3), balance=2) as (fake, client):
        with anyio.fail_after(10):
            outcomes = [
                o
                async for o in client.generate(
                    [f"clip {n}" for n in range(20)], concurrency=8, submit_rpm=30
                )
            ]
    check_one_per_prompt(outcomes, 20)
    assert fake.stats.requests["submit"] == 3
    assert sum(isinstance(o.error, BatchAbortedError) for o in outcomes) == 17


@pytest.mark.virtual_time
async def test_a_revoked_key_stops_submitting_and_accounts_for_everything() -> None:
    async with in_memory(task_duration=(2, 3)) as (fake, client):
        outcomes: list[Outcome] = []
        async for outcome in client.generate([f"clip {n}" for n in range(10)], submit_rpm=300):
            outcomes.append(outcome)
        assert len(outcomes) == 10  # nothing revoked yet
        async with client.generate([f"more {n}" for n in range(10)], submit_rpm=300) as batch:
            await anyio.sleep(0.5)
            fake.revoke_key()
            after = [o async for o in batch]
    check_one_per_prompt(after, 10)
    sent = [o for o in after if o.task_id]
    assert sent  # some tasks were submitted before the revocation ...
    assert all(isinstance(o.error, AuthenticationError) for o in sent)  # ... and cannot be polled
    unsent = [o for o in after if not o.task_id]
    assert isinstance(unsent[0].error, AuthenticationError)
    assert all(isinstance(o.error, BatchAbortedError) for o in unsent[1:])


async def test_async_iterables_and_input_errors() -> None:
    async def prompts() -> AsyncIterator[str]:
        for n in range(3):
            yield f"clip {n}"
            await anyio.sleep(0)
        raise OSError("the prompt file went away")

    async with simulated(task_duration=(0.1, 0.2)) as (_, client):
        seen: list[Outcome] = []

        async def drain() -> None:
            async for outcome in client.generate(prompts()):
                seen.append(outcome)

        with pytest.raises(OSError, match="went away"):
            await drain()
    check_one_per_prompt(seen, 3)  # the tasks it did submit were all delivered first
    assert all(outcome.ok for outcome in seen)


@pytest.mark.virtual_time
async def test_task_timeouts_are_outcomes() -> None:
    async with in_memory(task_duration=(1, 1000), seed=6) as (_, client):
        outcomes = [
            o async for o in client.generate([f"c{n}" for n in range(10)], task_timeout=300)
        ]
    check_one_per_prompt(outcomes, 10)
    late = [o for o in outcomes if isinstance(o.error, TaskTimeoutError)]
    assert late
    assert all(o.task_id and not o.ok for o in late)
    assert any(o.ok for o in outcomes)


async def test_batches_and_waits_share_one_poller() -> None:
    async with simulated(task_duration=(0.3, 0.8)) as (fake, client):
        results: list[int] = []

        async def batch(name: str) -> None:
            outs = [o async for o in client.generate([f"{name} {n}" for n in range(15)])]
            results.append(sum(o.ok for o in outs))

        async def waits() -> None:
            ids = [await client.submit(f"single {n}") for n in range(5)]
            for task_id in ids:
                assert (await client.wait(task_id)).ok
            results.append(len(ids))

        async with anyio.create_task_group() as group:
            for name in ("a", "b"):
                group.start_soon(batch, name)
            group.start_soon(waits)
            await anyio.sleep(0.2)
            assert client.statistics().pollers == 1
    assert sorted(results) == [5, 15, 15]
    assert fake.stats.task_count == 35


async def test_the_ledger_hooks_see_every_submit() -> None:
    events: list[tuple[str, int, str]] = []
    async with simulated(task_duration=(0.1, 0.2)) as (fake, client):
        outcomes = [
            o
            async for o in client.generate(
                ["a", "b", "", "c"],
                before_submit=lambda i, r: events.append(("before", i, r.prompt)),
                after_submit=lambda i, t: events.append(("after", i, t)),
            )
        ]
    check_one_per_prompt(outcomes, 4)
    for index in (0, 1, 3):
        mine = [kind for kind, i, _ in events if i == index]
        assert mine == ["before", "after"]
    after = {i: value for kind, i, value in events if kind == "after"}
    assert set(after.values()) == set(fake.stats.tasks)


@pytest.mark.virtual_time
async def test_the_submit_rate_is_kept() -> None:
    from novita_video.testing import RateLimit

    async with in_memory(
        task_duration=(0.1, 0.2), submit_limit=RateLimit(5, per=1.0), client={"submit_rpm": 300}
    ) as (fake, client):
        started = anyio.current_time()
        outcomes = [o async for o in client.generate([f"c{n}" for n in range(10)], concurrency=10)]
        elapsed = anyio.current_time() - started
    assert all(o.ok for o in outcomes)
    assert fake.stats.rate_limited["submit"] == 0
    assert elapsed >= 9 * 0.2


async def test_closing_the_client_mid_batch_says_so() -> None:
    async with simulated(task_duration=(30, 40)) as (_, client):
        batch = client.generate([f"c{n}" for n in range(5)])
        await anyio.sleep(0.2)
    with pytest.raises(ClientClosedError):
        async for _ in batch:
            pass


async def test_bad_batch_limits_are_refused_before_anything_runs() -> None:
    async with simulated() as (fake, client):
        for bad in (
            {"concurrency": 0},
            {"max_outstanding": -1},
            {"task_timeout": math.nan},
            {"submit_rpm": 0},
        ):
            with pytest.raises(InvalidRequestError):
                client.generate(["a"], **bad)  # type: ignore[arg-type]
    assert fake.stats.requests["submit"] == 0


@pytest.mark.virtual_time
async def test_a_fatal_answer_to_a_poll_dooms_the_batch_too() -> None:
    # The key is revoked right after the second submit; its task's first check (0.25 s
    # later) comes long before the third submit (2 s later): a poll hears the 403 first,
    # and no submit may follow it.
    async with in_memory(task_duration=(3, 3.5), client={"submit_rpm": 30}) as (fake, client):

        async def revoke_after_two_submits() -> None:
            while fake.stats.requests["submit"] < 2:
                await anyio.sleep(0.01)
            fake.revoke_key()

        async with anyio.create_task_group() as group:
            group.start_soon(revoke_after_two_submits)
            outcomes = [o async for o in client.generate([f"clip {n}" for n in range(10)])]
    check_one_per_prompt(outcomes, 10)
    denied = [o for o in outcomes if isinstance(o.error, AuthenticationError)]
    assert len(denied) == 2
    assert all(o.task_id is not None for o in denied)  # heard on polls, not on a submit
    aborted = [o for o in outcomes if isinstance(o.error, BatchAbortedError)]
    assert len(aborted) == 8
    assert fake.stats.requests["submit"] == 2  # no POST after the poll heard it
