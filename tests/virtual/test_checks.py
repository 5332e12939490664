"""What happens around one check of the poller, through the client, on virtual time.

A webhook event that comes while its task is being checked is acted on when the check
returns; whatever one check raises ends that task's waits alone; and a task nobody
waits for any more costs the poller no memory.
"""

from __future__ import annotations

import gc
import json
import json as json_module
import logging
import tracemalloc
from collections.abc import Mapping
from typing import Any, BinaryIO, Literal

import anyio
import pytest

from novita_video import Client, NovitaError, Outcome, ProtocolError, Response, Sending, TaskResult
from novita_video.testing import FakeNovita
from tests.virtual.meddling import Answer, Meddling

pytestmark = pytest.mark.anyio

HOOK = "http://127.0.0.1:9/novita/webhook"  # never called: events are handed over by hand


@pytest.mark.parametrize("trust", [False, True], ids=["hint", "trusted"])
async def test_an_event_during_a_check_is_acted_on_when_it_returns(trust: bool) -> None:
    # The first check's answer (the task still running) is computed at once but
    # delivered 12 s late; the task ends at 10 s and its event comes at 11 s, while that
    # check is in flight. The wait ends when the check returns, not at a fallback poll
    # (30 s later by default).
    fake = FakeNovita(task_duration=(10, 10), queue_fraction=0.0)
    first: list[str] = []

    async def slow_first(task_id: str, answer: Answer) -> Response:
        response = await answer()
        if not first:
            first.append(task_id)
            await anyio.sleep(12)
        return response

    transport = Meddling(fake, slow_first)
    options = {"webhook_url": HOOK, "trust_webhooks": trust, "submit_rpm": None}
    results: list[tuple[TaskResult, float]] = []
    async with Client(transport=transport, **options) as client:
        task_id = await client.submit("a cat")
        start = anyio.current_time()

        async def wait() -> None:
            results.append((await client.wait(task_id, timeout=600), anyio.current_time()))

        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await anyio.sleep(11)
            assert first == [task_id]  # its check is in flight
            final = await transport.inner.request(
                "GET", "/v3/async/task-result", params={"task_id": task_id}
            )
            event = {"event_type": "ASYNC_TASK_RESULT", "payload": json.loads(final.body)}
            polls = fake.stats.polls[task_id]
            assert client.handle_webhook(json.dumps(event).encode())
    result, at = results[0]
    assert result.ok
    assert at - start == pytest.approx(12, abs=0.5)
    # A trusted event is the answer; a hint costs one more check, at once.
    assert fake.stats.polls[task_id] - polls == (0 if trust else 1)


async def test_what_one_check_raises_ends_that_tasks_waits_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A custom transport with a bug: its request raises ZeroDivisionError for one task.
    caplog.set_level(logging.ERROR, logger="novita_video")
    fake = FakeNovita(task_duration=(20, 40), seed=8)
    broken: set[str] = set()

    async def buggy(task_id: str, answer: Answer) -> Response:
        if task_id in broken:
            raise ZeroDivisionError("a bug in the transport")
        return await answer()

    errors: list[NovitaError] = []
    results: list[TaskResult] = []
    outcomes: list[Outcome] = []
    async with Client(transport=Meddling(fake, buggy), submit_rpm=None) as client:
        bad = await client.submit("a broken one")
        broken.add(bad)
        good = [await client.submit(f"a fine one {n}") for n in range(3)]

        async def wait_bad() -> None:
            with pytest.raises(ProtocolError) as caught:
                await client.wait(bad, timeout=600)
            errors.append(caught.value)

        async def wait_good(task_id: str) -> None:
            results.append(await client.wait(task_id, timeout=600))

        async def batch() -> None:
            async for outcome in client.generate([f"batched {n}" for n in range(3)]):
                outcomes.append(outcome)

        async with anyio.create_task_group() as group:
            group.start_soon(wait_bad)
            group.start_soon(wait_bad)
            for task_id in good:
                group.start_soon(wait_good, task_id)
            group.start_soon(batch)
        # The client goes on: the broken task's waits ended, nothing else did.
        assert client.statistics().pollers == 1
        assert (await client.wait(good[0])).ok
    assert len(errors) == 2
    for error in errors:
        assert bad in str(error)
        assert "ZeroDivisionError" in str(error)
        assert isinstance(error.__cause__, ZeroDivisionError)
    assert [result.ok for result in results] == [True] * 3
    assert [outcome.ok for outcome in outcomes] == [True] * 3
    logged = [record for record in caplog.records if record.name == "novita_video"]
    assert len(logged) == 1  # once for the task, not once per waiter
    assert bad in logged[0].getMessage()
    assert logged[0].exc_info is not None


class Answering:
    """A transport of one's own that answers every task-result at once: ids that
    start with ``ended`` are done, the others have ten minutes to go."""

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        sending: Sending | None = None,
    ) -> Response:
        assert (method, path) == ("GET", "/v3/async/task-result")
        assert params is not None
        task_id = params["task_id"]
        done = task_id.startswith("ended")
        task = {
            "task_id": task_id,
            "task_type": "MINIMAX_VIDEO_01",
            "status": "TASK_STATUS_SUCCEED" if done else "TASK_STATUS_PROCESSING",
            "eta": 0 if done else 600,
            "progress_percent": 100 if done else 0,
        }
        video = {"video_url": f"https://storage.example/{task_id}.mp4", "video_url_ttl": "3600"}
        body = {"task": task, "videos": [video] if done else []}
        return Response(200, json_module.dumps(body).encode(), {})

    async def download(self, url: str, file: BinaryIO) -> Response:
        raise AssertionError("no downloads here")


def held_by_the_poller() -> int:
    """Bytes allocated by novita_video/_poller.py since tracemalloc started, still held."""
    gc.collect()  # cancelled waits leave cycles behind: garbage, not held
    snapshot = tracemalloc.take_snapshot()
    poller = snapshot.filter_traces([tracemalloc.Filter(True, "*novita_video*_poller.py")])
    return sum(stat.size for stat in poller.statistics("filename"))


async def test_a_task_nobody_waits_for_costs_the_poller_no_memory() -> None:
    # A long-lived client: tasks that ended, waits given up on while their tasks run
    # (their next check minutes away), and waits that came and went on one long task
    # someone still waits for. Their deadlines (30 min) are all far off. A first round
    # takes the poller to its size; tracemalloc then sees what a second round leaves.
    count = 1000
    held = 0
    async with Client(transport=Answering()) as client:
        for lap in range(2):
            if lap:
                tracemalloc.start()
            try:
                async with anyio.create_task_group() as group:
                    for n in range(count):
                        group.start_soon(client.wait, f"ended-{lap}-{n}", 1800)
                async with anyio.create_task_group() as group:
                    for n in range(count):
                        group.start_soon(client.wait, f"running-{lap}-{n}", 1800)
                    await anyio.sleep(1)  # each checked once: the next checks are far
                    group.cancel_scope.cancel()
                async with anyio.create_task_group() as group:
                    group.start_soon(client.wait, "running", 1800)  # someone still waits
                    async with anyio.create_task_group() as passing:
                        for _ in range(count):
                            passing.start_soon(client.wait, "running", 1800)
                        await anyio.sleep(1)
                        passing.cancel_scope.cancel()
                    assert client.statistics().outstanding == 1
                    if lap:
                        held = held_by_the_poller()
                    group.cancel_scope.cancel()
            finally:
                tracemalloc.stop()
            assert client.statistics().outstanding == 0
    # A hundred bytes for each of these 3000 would be 300 KB.
    assert held < 30_000, held
