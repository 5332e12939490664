"""Review of issue 20: waits against outages, deadlines, slow answers and a task that is
gone, on virtual time (the simulator in memory, a hand in its task-result answers)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from novita_video import Client, NotFoundError, TaskTimeoutError
from novita_video.testing import FakeNovita, VirtualTimeLoop
from tests.virtual.meddling import Answer, Meddling, Response

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"loop_factory": VirtualTimeLoop})


def _unavailable() -> Response:
    body = {"code": 503, "reason": "SERVICE_UNAVAILABLE", "message": "busy"}
    return Response(503, json.dumps(body).encode(), {"content-type": "application/json"})


def _gone() -> Response:
    body = {"code": 404, "reason": "TASK_NOT_FOUND", "message": "no such task"}
    return Response(404, json.dumps(body).encode(), {"content-type": "application/json"})


async def test_an_endless_wait_ends_at_a_404_after_an_outage() -> None:
    fake = FakeNovita(task_duration=(500, 600))
    start = 0.0

    async def meddle(task_id: str, answer: Answer) -> Response:
        now = anyio.current_time() - start
        if now < 100:
            return _unavailable()
        return _gone()

    async with Client(transport=Meddling(fake, meddle), submit_rpm=None) as client:
        task_id = await client.submit("a")
        start = anyio.current_time()
        with pytest.raises(NotFoundError):
            await client.wait(task_id, timeout=None)
        ended = anyio.current_time() - start
    assert 100 <= ended <= 100 + 61  # one capped backoff after the outage ends


async def test_many_waits_on_one_task_each_keep_their_own_deadline() -> None:
    fake = FakeNovita(task_duration=(60, 60))
    start = 0.0

    async def meddle(task_id: str, answer: Answer) -> Response:
        if 10 <= anyio.current_time() - start < 40:
            return _unavailable()  # an outage in the middle
        return await answer()

    ended: dict[str, float] = {}
    async with Client(transport=Meddling(fake, meddle), submit_rpm=None) as client:
        task_id = await client.submit("a")
        start = anyio.current_time()

        async def wait(name: str, timeout: float | None) -> None:
            try:
                result = await client.wait(task_id, timeout=timeout)
                assert result.ok
                ended[name] = anyio.current_time() - start
            except TaskTimeoutError:
                ended[name] = -(anyio.current_time() - start)

        async with anyio.create_task_group() as group:
            for name, timeout in [("5", 5.0), ("25", 25.0), ("45", 45.0), ("none", None)]:
                group.start_soon(wait, name, timeout)
            group.start_soon(wait, "200", 200.0)
    # A deadline fires within a second of its time, in or out of the outage (never
    # before it, but for the float rounding of loop times: 25 s read as 24.999999999998).
    tick = 1e-6
    assert -6 <= ended["5"] <= -5 + tick
    assert -26 <= ended["25"] <= -25 + tick
    assert -46 <= ended["45"] <= -45 + tick
    assert 60 <= ended["none"] <= 80
    assert 60 <= ended["200"] <= 80


async def test_a_slow_dripping_check_does_not_hold_a_deadline_back() -> None:
    fake = FakeNovita(task_duration=(30, 30))

    async def meddle(task_id: str, answer: Answer) -> Response:
        await anyio.sleep(1000)  # an answer that takes its time
        return await answer()

    async with Client(transport=Meddling(fake, meddle), submit_rpm=None) as client:
        task_id = await client.submit("a")
        start = anyio.current_time()
        with pytest.raises(TaskTimeoutError):
            await client.wait(task_id, timeout=10)
        assert anyio.current_time() - start <= 11
        # The client is still usable, and closes without waiting out the slow answer.
        start = anyio.current_time()
    assert anyio.current_time() - start <= 60
