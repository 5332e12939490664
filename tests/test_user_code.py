"""User code never takes the client down, and a batch costs only while it is being read.

* A batch starts submitting when it is entered or first iterated, not when it is made.
* Leaving the loop (break, an exception, a cancellation) stops submitting at once, even
  while the batch object is still referenced.
* A callback of the user's that raises (``on_progress``, ``before_submit``,
  ``after_submit``) harms only the call that passed it: that wait or that batch gets the
  error; other waits and batches go on, and the client stays usable.

Over real HTTP against the simulator.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from novita_video import Outcome, Request, TaskResult
from tests.support import simulated

pytestmark = pytest.mark.anyio

PROMPTS = [f"clip {n}" for n in range(40)]


class Boom(Exception):
    """The user's own error."""


async def test_a_batch_made_but_never_read_submits_nothing() -> None:
    async with simulated(task_duration=(0.2, 0.2)) as (fake, client):
        batch = client.generate(PROMPTS)
        await anyio.sleep(0.5)
        assert fake.stats.task_count == 0
        async with batch as outcomes:  # entering starts it
            first = await anext(aiter(outcomes))
        assert first.ok or first.error is not None
        assert fake.stats.task_count >= 1


# Ten submits a second: a batch that went on would show it within a second.
PACED = {"concurrency": 2, "submit_rpm": 600.0}


async def test_a_break_stops_submitting_though_the_batch_is_still_referenced() -> None:
    async with simulated(task_duration=(0.3, 0.3), client=PACED) as (fake, client):
        outcomes = client.generate(PROMPTS)
        async for _ in outcomes:
            break
        at_break = fake.stats.task_count
        await anyio.sleep(1.0)
        # At most the POSTs already on the wire when the loop was left.
        assert fake.stats.task_count <= at_break + 2
        assert outcomes is not None  # still referenced all along


async def test_an_exception_in_the_loop_body_stops_submitting() -> None:
    async def read(outcomes: Any) -> None:
        async for _ in outcomes:
            raise Boom

    async with simulated(task_duration=(0.3, 0.3), client=PACED) as (fake, client):
        outcomes = client.generate(PROMPTS)
        with pytest.raises(Boom):
            await read(outcomes)
        at_raise = fake.stats.task_count
        await anyio.sleep(1.0)
        assert fake.stats.task_count <= at_raise + 2
        assert outcomes is not None


async def test_an_on_progress_that_raises_fails_only_its_own_wait() -> None:
    def boom(_: TaskResult) -> None:
        raise Boom("my progress bar broke")

    async with simulated(task_duration=(1.0, 1.0)) as (_, client):
        doomed = await client.submit("a cat")
        fine = await client.submit("a dog")
        results: dict[str, Any] = {}

        async def wait(name: str, task_id: str, **kwargs: Any) -> None:
            try:
                results[name] = await client.wait(task_id, timeout=30, **kwargs)
            except Boom as error:
                results[name] = error

        async with anyio.create_task_group() as group:
            group.start_soon(lambda: wait("doomed", doomed, on_progress=boom))
            group.start_soon(wait, "fine", fine)
        assert isinstance(results["doomed"], Boom)
        assert results["fine"].ok
        # The client is still usable.
        assert (await client.wait(await client.submit("a cow"), timeout=30)).ok


@pytest.mark.parametrize("hook", ["before_submit", "after_submit"])
async def test_a_submit_hook_that_raises_ends_only_its_own_batch(hook: str) -> None:
    def boom(index: int, _: Request | str) -> None:
        if index == 2:
            raise Boom(f"{hook} broke at {index}")

    async with simulated(task_duration=(0.3, 0.3), client={"concurrency": 1}) as (_, client):
        other: list[Outcome] = []
        raised: list[BaseException] = []

        async def doomed() -> None:
            try:
                async with client.generate(PROMPTS[:10], **{hook: boom}) as outcomes:
                    async for _ in outcomes:
                        pass
            except Boom as error:
                raised.append(error)

        async def healthy() -> None:
            async with client.generate(PROMPTS[:5]) as outcomes:
                other.extend([outcome async for outcome in outcomes])

        async with anyio.create_task_group() as group:
            group.start_soon(doomed)
            group.start_soon(healthy)
        assert [str(error) for error in raised] == [f"{hook} broke at 2"]
        assert sorted(o.index for o in other if o.ok) == [0, 1, 2, 3, 4]
        assert (await client.wait(await client.submit("a cow"), timeout=30)).ok
