"""Review of issue 20: a submit's fate at the wire, tried against misbehaving transports
and servers on loopback."""

from __future__ import annotations

import asyncio
import logging

import anyio
import pytest

from novita_video import (
    APIConnectionError,
    Client,
    PollSchedule,
    RetryPolicy,
    Submission,
    SubmissionUnknownError,
)
from novita_video.testing import FakeNovita, MemoryTransport
from tests.support import Unreporting, serve_app

pytestmark = pytest.mark.anyio

FAST = PollSchedule(progress_lead=0.25)


async def test_an_unreporting_transports_connection_error_is_in_doubt_not_retried() -> None:
    async with FakeNovita(task_duration=(0.05, 0.1)) as fake:
        transport = Unreporting(
            MemoryTransport(fake),
            fail=APIConnectionError("proxy: the upstream connection broke", maybe_sent=False),
        )
        async with Client(
            fake.api_key, transport=transport, submit_rpm=None, poll_schedule=FAST
        ) as client:
            outcomes = [o async for o in client.generate(["a"])]
    [outcome] = outcomes
    assert len(fake.stats.tasks) == 1, f"paid {len(fake.stats.tasks)} times"
    assert outcome.submission is Submission.IN_DOUBT
    assert isinstance(outcome.error, SubmissionUnknownError)


# A server on loopback whose submit answers misbehave, one way per prompt.

from aiohttp import web  # noqa: E402

SUBMIT = "/v3/async/minimax-video-01"


class Odd:
    def __init__(self) -> None:
        self.posts: list[str] = []

    async def submit(self, request: web.Request) -> web.StreamResponse:
        prompt = (await request.json())["prompt"]
        self.posts.append(prompt)
        if prompt == "cut":  # the task made, its answer cut mid-way
            response = web.StreamResponse(headers={"Content-Length": "200"})
            response.content_type = "application/json"
            await response.prepare(request)
            await response.write(b'{"task_id": "task-c')
            assert request.transport is not None
            request.transport.close()
            return response
        if prompt == "no-id":
            return web.json_response({"ok": True})
        if prompt == "empty-id":
            return web.json_response({"task_id": ""})
        if prompt == "html":
            return web.Response(text="<html>ok</html>", content_type="text/html")
        if prompt == "redirect":
            raise web.HTTPTemporaryRedirect("http://127.0.0.1:9/v3/async/minimax-video-01")
        if prompt == "503-then-500":
            if self.posts.count(prompt) == 1:
                return web.json_response({"reason": "SERVICE_UNAVAILABLE"}, status=503)
            return web.json_response({"reason": "CREATE_TASK_FAILED"}, status=500)
        return web.json_response({"task_id": f"task-{prompt}"})

    async def result(self, request: web.Request) -> web.StreamResponse:
        task = {"task_id": request.query["task_id"], "status": "TASK_STATUS_SUCCEED"}
        video = {"video_url": "http://127.0.0.1:9/clip.mp4", "video_url_ttl": "3600"}
        return web.json_response({"task": task, "videos": [video]})


async def test_odd_submit_answers_have_the_fates_they_should() -> None:
    server = Odd()
    app = web.Application()
    app.router.add_post(SUBMIT, server.submit)
    app.router.add_get("/v3/async/task-result", server.result)
    prompts = ["cut", "no-id", "empty-id", "html", "redirect", "503-then-500"]
    policy = RetryPolicy(initial_delay=0.01, max_delay=0.01, jitter=0)
    async with serve_app(app) as url:
        async with Client("sk-odd", base_url=url, submit_rpm=None, retry=policy) as client:
            with anyio.fail_after(30):
                outcomes = {
                    o.request.prompt: o  # type: ignore[union-attr]
                    async for o in client.generate(prompts, concurrency=1)
                }
    fates = {prompt: outcome.submission for prompt, outcome in outcomes.items()}
    assert fates == {
        "cut": Submission.IN_DOUBT,
        "no-id": Submission.IN_DOUBT,
        "empty-id": Submission.IN_DOUBT,
        "html": Submission.IN_DOUBT,
        "redirect": Submission.REFUSED,
        "503-then-500": Submission.IN_DOUBT,
    }
    # Each POST that may have made a task was sent once; the 503 once more.
    assert {p: server.posts.count(p) for p in prompts} == dict.fromkeys(prompts, 1) | {
        "503-then-500": 2
    }


# asyncio's own cancellation (task.cancel(): asyncio.timeout, wait_for, an aiohttp
# handler whose client went away) of a submit whose POST is on the wire.


async def test_a_natively_cancelled_submit_does_not_lose_its_task_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    arrived, release = anyio.Event(), anyio.Event()
    made: list[str] = []

    async def submit(request: web.Request) -> web.StreamResponse:
        await request.read()
        arrived.set()
        await release.wait()
        made.append("task-made")
        return web.json_response({"task_id": "task-made"})

    app = web.Application()
    app.router.add_post(SUBMIT, submit)
    caplog.set_level(logging.DEBUG, logger="novita_video")
    async with serve_app(app) as url:
        async with Client("sk-native", base_url=url, submit_rpm=None) as client:
            task = asyncio.ensure_future(client.submit("a"))
            with anyio.fail_after(10):
                await arrived.wait()
            task.cancel()  # as an aiohttp handler's cancellation does
            await asyncio.sleep(0.1)
            release.set()
            try:
                with anyio.fail_after(10):
                    got: str | None = await task
            except asyncio.CancelledError:
                got = None
            with anyio.fail_after(10):
                while not made:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.3)
    assert made == ["task-made"]
    told = got == "task-made" or any(
        "task-made" in record.getMessage() and record.levelno >= logging.WARNING
        for record in caplog.records
    )
    assert told, "the server made a task whose id the caller never got, nor any log"
