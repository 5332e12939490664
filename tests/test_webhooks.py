"""Webhook events end waits at once; polls stay the fallback; unsigned events are checked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from novita_video import Client, PollSchedule, ProtocolError, ScaledClock, TaskStatus
from novita_video.testing import Chaos, FakeNovita
from novita_video.webhooks import aiohttp_handler, asgi_app
from tests.support import scripted_server, serve_app, simulated

pytestmark = pytest.mark.anyio

HOOK = "http://127.0.0.1:9/novita/webhook"  # never called in these tests: events are posted by hand


async def final_body(fake: FakeNovita, task_id: str) -> bytes:
    """The task-result body the simulator gives once the task is over (an event's payload)."""
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    async with aiohttp.ClientSession() as http:
        while True:
            url = f"{fake.url}/v3/async/task-result?task_id={task_id}"
            async with http.get(url, headers=headers) as answer:
                payload = await answer.json()
            if payload["task"]["status"] == "TASK_STATUS_SUCCEED":
                return json.dumps({"event_type": "ASYNC_TASK_RESULT", "payload": payload}).encode()
            await anyio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[Client]]]:
    """An aiohttp.web server on loopback serving aiohttp_handler for the client put in the list."""
    clients: list[Client] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        return await aiohttp_handler(clients[0])(request)

    app = web.Application()
    app.router.add_post("/novita/webhook", handle)
    async with serve_app(app) as url:
        yield f"{url}/novita/webhook", clients


async def post(url: str, body: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body) as answer:
        return answer.status, await answer.json()


async def test_an_event_ends_a_wait_at_once_after_one_check(
    receiver: tuple[str, list[Client]],
) -> None:
    url, clients = receiver
    options = {"webhook_url": url, "webhook_fallback": 600.0}
    lost = Chaos(webhook_loss=1.0)  # the simulator's own event is lost: this test posts one
    async with simulated(task_duration=(1.0, 1.2), chaos=lost, client=options) as (fake, client):
        clients.append(client)
        task_id = await client.submit("a cat")
        results = []
        with anyio.fail_after(5):  # without the event, the next poll would come in 10 minutes
            async with anyio.create_task_group() as group:

                async def wait() -> None:
                    results.append(await client.wait(task_id, timeout=1200))

                group.start_soon(wait)  # its first check finds the task running
                event = await final_body(fake, task_id)
                polls_before = fake.stats.polls[task_id]
                assert await post(url, event) == (200, {"used": True})
        assert results[0].status is TaskStatus.SUCCEED
        # The unsigned event was not trusted: one check confirmed it.
        assert fake.stats.polls[task_id] == polls_before + 1
        assert client.statistics().webhooks == 1
        # A duplicate, or an event for a task nobody waits for, is ignored.
        assert await post(url, event) == (200, {"used": False})
        assert (await post(url, b'{"event_type": "SOMETHING_ELSE"}'))[0] == 200
        assert (await post(url, b"<html>not an event</html>"))[0] == 400


async def test_the_simulator_delivers_events_end_to_end(
    receiver: tuple[str, list[Client]],
) -> None:
    url, clients = receiver
    clock = ScaledClock(speed=20)
    options = {"webhook_url": url, "webhook_fallback": 600.0, "poll_schedule": PollSchedule()}
    async with simulated(task_duration=(60, 120), clock=clock, client=options) as (fake, client):
        clients.append(client)
        with anyio.fail_after(10):  # the fallback polls alone would take 10 virtual minutes
            outcomes = [o async for o in client.generate([f"clip {n}" for n in range(10)])]
        handed = clock.now()
    assert all(outcome.ok for outcome in outcomes)
    assert client.statistics().webhooks == 10
    assert fake.stats.webhook_totals["delivered"] == 10
    # One check at 2 + 600 s never came; each task was checked once, when its event came.
    assert all(fake.stats.polls[o.task_id] == 1 for o in outcomes if o.task_id)
    assert handed - max(fake.task(o.task_id).finishes_at for o in outcomes if o.task_id) < 5


async def test_a_lost_event_is_caught_by_the_fallback_poll(
    receiver: tuple[str, list[Client]],
) -> None:
    url, clients = receiver
    options = {"webhook_url": url, "webhook_fallback": 1.0}
    half_lost = Chaos(webhook_loss=0.5)
    async with simulated(task_duration=(0.5, 1.0), chaos=half_lost, seed=9, client=options) as (
        fake,
        client,
    ):
        clients.append(client)
        outcomes = [o async for o in client.generate([f"clip {n}" for n in range(10)])]
    assert all(outcome.ok for outcome in outcomes)
    totals = fake.stats.webhook_totals
    assert totals["lost"] > 0
    assert totals["delivered"] > 0
    assert client.statistics().webhooks == totals["delivered"]


async def test_trusted_events_need_no_check() -> None:
    options = {"webhook_url": HOOK, "webhook_fallback": 600.0, "trust_webhooks": True}
    async with simulated(task_duration=(1.0, 1.2), client=options) as (fake, client):
        task_id = await client.submit("a cat")
        results = []
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:

                async def wait() -> None:
                    results.append(await client.wait(task_id))

                group.start_soon(wait)
                event = await final_body(fake, task_id)
                polls_before = fake.stats.polls[task_id]
                assert client.handle_webhook(event)
        assert results[0].ok
        assert fake.stats.polls[task_id] == polls_before


async def test_a_lost_event_is_recovered_by_the_poller() -> None:
    options = {
        "webhook_url": HOOK,
        "webhook_fallback": 1.0,
        "poll_schedule": PollSchedule(progress_lead=0.25),
    }
    async with simulated(task_duration=(0.3, 0.5), client=options) as (_, client):
        outcomes = [o async for o in client.generate(["a cat", "a dog"])]
    assert all(outcome.ok for outcome in outcomes)


async def test_submits_ask_for_the_webhook() -> None:
    async with scripted_server() as server:
        async with Client("sk-x", base_url=server.url, webhook_url=HOOK) as client:
            await client.submit("a cat")
        body = json.loads(server.bodies[0])
    assert body["extra"] == {"webhook": {"url": HOOK}}


def test_a_webhook_url_must_be_a_url() -> None:
    with pytest.raises(ValueError, match="webhook_url"):
        Client("sk-x", webhook_url="/relative")


async def test_the_asgi_app() -> None:
    options = {"webhook_url": HOOK, "webhook_fallback": 600.0}
    async with simulated(task_duration=(1.0, 1.2), client=options) as (fake, client):
        app = asgi_app(client)
        task_id = await client.submit("a cat")

        async def call(method: str, body: bytes) -> tuple[int, Any]:
            sent: list[dict[str, Any]] = []
            chunks = [
                {"type": "http.request", "body": body[:10], "more_body": True},
                {"type": "http.request", "body": body[10:], "more_body": False},
            ]

            async def receive() -> dict[str, Any]:
                return chunks.pop(0)

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await app({"type": "http", "method": method, "path": "/"}, receive, send)
            return sent[0]["status"], json.loads(sent[1]["body"])

        results = []
        async with anyio.create_task_group() as group:

            async def wait() -> None:
                results.append(await client.wait(task_id, timeout=1200))

            group.start_soon(wait)
            event = await final_body(fake, task_id)
            assert await call("POST", event) == (200, {"used": True})
        assert results[0].ok
        assert (await call("GET", b""))[0] == 405
        assert (await call("POST", b"[1, 2]"))[0] == 400


def test_events_that_are_not_events() -> None:
    client = Client("sk-x")
    with pytest.raises(ProtocolError):
        client.handle_webhook(b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": 3}}')
    nobody_waits = {"task": {"task_id": "t", "status": "TASK_STATUS_SUCCEED"}}
    event = {"event_type": "ASYNC_TASK_RESULT", "payload": nobody_waits}
    assert not client.handle_webhook(json.dumps(event).encode())
