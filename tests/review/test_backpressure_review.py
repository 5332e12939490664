"""Review of issue 24: back-pressure on submits (``max_wait``), tried against servers on
loopback. A ``BackPressureError`` tells a web service to answer 503 with ``Retry-After``,
inviting its caller to send again: it must never follow a POST that may have made a task."""

from __future__ import annotations

import anyio
import pytest

from examples import clips
from novita_video import (
    BackPressureError,
    Client,
    ClientClosedError,
    NovitaError,
    RetryPolicy,
    SubmissionUnknownError,
)
from novita_video.testing import FakeNovita, MemoryTransport
from tests.support import scripted_server

pytestmark = pytest.mark.anyio

SUBMIT = "/v3/async/minimax-video-01"


async def test_a_maybe_landed_post_never_ends_in_back_pressure() -> None:
    async with scripted_server() as server:
        # The server reads the POST (it may have made the task) and cuts the connection.
        server.script(SUBMIT, ("drop",))
        async with Client(
            "sk-review",
            base_url=server.url,
            submit_rpm=None,
            retry_unsafe_submits=True,
            retry=RetryPolicy(initial_delay=30, max_delay=30, jitter=0),
        ) as client:
            with anyio.fail_after(20), pytest.raises(NovitaError) as raised:
                await client.submit("a cat", max_wait=1.0)
    assert server.count("POST", SUBMIT) == 1
    status, _, headers = clips.error_answer(raised.value)
    # A task may exist: not "come back later", which pays for a second one.
    assert not isinstance(raised.value, BackPressureError), raised.value
    assert status != 503
    assert "Retry-After" not in headers
    assert isinstance(raised.value, SubmissionUnknownError)


async def test_a_429_then_a_long_retry_after_is_back_pressure_and_paid_nothing() -> None:
    # Holds: a 429 made no task, so the 503 it turns into is safe to retry.
    async with scripted_server() as server:
        server.script(SUBMIT, ("json", 429, {"reason": "RATE_LIMIT"}, {"Retry-After": "40"}))
        async with Client("sk-review", base_url=server.url, submit_rpm=None) as client:
            with anyio.fail_after(20), pytest.raises(BackPressureError) as raised:
                await client.submit("a cat", max_wait=2.0)
    assert server.count("POST", SUBMIT) == 1
    assert raised.value.retry_after == pytest.approx(40, abs=1)


async def test_a_slow_answer_past_max_wait_is_awaited_not_refused() -> None:
    # Holds: once the POST left, max_wait does not cut it short (real time: the server
    # sleeps 1.5 s past a max_wait of 0.2 s; no tight bound).
    async with scripted_server() as server:
        server.script(SUBMIT, ("sleep", 1.5))
        async with Client("sk-review", base_url=server.url, submit_rpm=None) as client:
            with anyio.fail_after(20), pytest.raises(NovitaError) as raised:
                await client.submit("a cat", max_wait=0.2)
    # The scripted sleep answers {} (no task id): an answer without an id, not a 503.
    assert not isinstance(raised.value, BackPressureError)
    assert server.count("POST", SUBMIT) == 1


async def test_a_submit_waiting_for_its_turn_ends_when_the_client_closes() -> None:
    ended: list[BaseException | str] = []
    async with FakeNovita() as fake:
        client = Client(fake.api_key, base_url=fake.url, submit_rpm=1)  # one a minute
        opened = anyio.Event()
        close = anyio.Event()

        async def owner() -> None:
            async with client:
                opened.set()
                await close.wait()

        async def caller() -> None:
            await opened.wait()
            await client.submit("first")
            try:
                ended.append(await client.submit("second"))  # ~61 s away
            except Exception as error:
                ended.append(error)

        # Real time: the second submit waits a minute for its turn; 10 s is ample.
        with anyio.move_on_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(owner)
                group.start_soon(caller)
                await anyio.sleep(1.0)
                close.set()
        assert fake.stats.task_count == 1
    assert len(ended) == 1, ended
    assert isinstance(ended[0], ClientClosedError), ended


@pytest.mark.virtual_time
async def test_a_caller_cancelled_while_queued_under_max_wait_sent_nothing() -> None:
    # Holds: a caller that leaves while its submit waits for a turn stops it unsent.
    fake = FakeNovita()
    async with Client(transport=MemoryTransport(fake), submit_rpm=20) as client:
        await client.submit("first")
        with anyio.move_on_after(0.5):
            await client.submit("second", max_wait=5.0)
        await anyio.sleep(3.5)  # past its turn (3 s at 20 a minute)
    assert fake.stats.task_count == 1


async def test_hooks_that_raise_or_stall_leave_a_submit_on_an_unreporting_transport() -> None:
    # Holds: a user's transport with no reports_sending, a request hook that stalls past
    # its bound and a response hook that raises: the task is made once, its id returned.
    from novita_video.testing import MemoryTransport
    from tests.support import Unreporting

    async def stall(event: object) -> None:
        await anyio.sleep(30)

    def explode(event: object) -> None:
        raise RuntimeError("the exporter broke")

    async with FakeNovita() as fake:
        async with Client(
            fake.api_key,
            transport=Unreporting(MemoryTransport(fake)),
            submit_rpm=None,
            event_hooks={"request": [stall], "response": [explode]},
        ) as client:
            with anyio.fail_after(10):  # real time: the stalled hook is cut after 1 s
                task_id = await client.submit("a cat", max_wait=0.0)
        assert list(fake.stats.tasks) == [task_id]
