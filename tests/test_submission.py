"""A submit's fate (accepted, not sent, refused, in doubt) is decided at the wire and
carried to the batch's Outcome unchanged: a doom's cancellation, a retry cut short or a
stopped batch never turn a POST that may have created a task into "not submitted".

The servers here are scripted on loopback, and the order of events is forced by the
test's own hand (a handler waits on an event the consumer sets), not by sleeps.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from aiohttp import web

from novita_video import (
    APIConnectionError,
    AsyncRequest,
    BatchAbortedError,
    Client,
    InsufficientBalanceError,
    NotFoundError,
    Outcome,
    PollSchedule,
    RetryPolicy,
    ServerError,
    Submission,
    SubmissionUnknownError,
    VideoRequest,
)
from novita_video.testing import FakeNovita, MemoryTransport
from tests.support import Unreporting, serve_app

pytestmark = pytest.mark.anyio

KEY = "sk-fate"
SUBMIT = "/v3/async/minimax-video-01"
FAST = PollSchedule(progress_lead=0.25)  # test tasks take a tenth of a second


def _answer(status: int, reason: str) -> web.Response:
    body = {"code": status, "reason": reason, "message": reason.lower()}
    return web.json_response(body, status=status)


class Orchestrated:
    """A server whose answer to each prompt the test decides, and when."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        self.release = anyio.Event()  # set by the test: the held answers may go

    async def submit(self, request: web.Request) -> web.StreamResponse:
        prompt = (await request.json())["prompt"]
        self.posts.append(prompt)
        if prompt == "doom":
            return _answer(400, "BILLING_BALANCE_NOT_ENOUGH")
        if prompt.startswith("held"):
            await self.release.wait()  # on the wire until the batch has been doomed
            if prompt == "held-500":
                return _answer(500, "CREATE_TASK_FAILED")  # a task may exist
            if prompt == "held-503":
                return _answer(503, "SERVICE_UNAVAILABLE")  # created nothing
            return web.json_response({"task_id": f"task-{prompt}"})
        return web.json_response({"task_id": f"task-{prompt}"})

    async def result(self, request: web.Request) -> web.StreamResponse:
        task_id = request.query["task_id"]
        video = {"video_url": "http://127.0.0.1:9/clip.mp4", "video_url_ttl": "3600"}
        task = {"task_id": task_id, "status": "TASK_STATUS_SUCCEED"}
        return web.json_response({"task": task, "videos": [video]})


async def _batch(
    prompts: list[str], *, concurrency: int, **options: Any
) -> tuple[Orchestrated, dict[str, Outcome]]:
    server = Orchestrated()
    app = web.Application()
    app.router.add_post(SUBMIT, server.submit)
    app.router.add_get("/v3/async/task-result", server.result)
    outcomes: dict[str, Outcome] = {}
    async with serve_app(app) as url:
        async with Client(KEY, base_url=url, submit_rpm=None, **options) as client:
            with anyio.fail_after(30):
                async for outcome in client.generate(prompts, concurrency=concurrency):
                    assert outcome.request is not None
                    outcomes[outcome.request.prompt] = outcome
                    if outcome.request.prompt == "doom":
                        server.release.set()  # the batch is doomed: now answer the rest
    return server, outcomes


async def test_a_post_in_doubt_when_the_batch_is_doomed_stays_in_doubt() -> None:
    # Issue 20, case 2: the doom cancelled the in-doubt submit's wait, and the
    # cancellation was read as "nothing was sent"; the command then paid again.
    server, outcomes = await _batch(["held-500", "doom", "later"], concurrency=2)
    held = outcomes["held-500"]
    assert held.submission is Submission.IN_DOUBT
    assert isinstance(held.error, SubmissionUnknownError)
    assert isinstance(held.error.__cause__, ServerError)
    assert held.task_id is None
    assert server.posts.count("held-500") == 1  # never sent again

    doom = outcomes["doom"]
    assert doom.submission is Submission.REFUSED
    assert isinstance(doom.error, InsufficientBalanceError)
    later = outcomes["later"]
    assert later.submission is Submission.NOT_SENT
    assert isinstance(later.error, BatchAbortedError)
    assert "later" not in server.posts


async def test_an_accepted_post_finishing_after_the_doom_is_accepted() -> None:
    _server, outcomes = await _batch(["held-ok", "doom"], concurrency=2)
    held = outcomes["held-ok"]
    assert held.submission is Submission.ACCEPTED
    assert held.task_id == "task-held-ok"
    assert held.ok


async def test_a_refused_try_whose_retry_was_stopped_is_refused_not_in_doubt() -> None:
    # 503 created nothing, so the submit would be tried again; the doom stops that.
    policy = RetryPolicy(initial_delay=5.0, max_delay=5.0, jitter=0)
    server, outcomes = await _batch(["held-503", "doom"], concurrency=2, retry=policy)
    held = outcomes["held-503"]
    assert held.submission is Submission.REFUSED
    assert isinstance(held.error, BatchAbortedError)
    assert "503" in str(held.error)
    assert server.posts.count("held-503") == 1


async def test_every_outcome_of_a_healthy_batch_says_accepted() -> None:
    async with FakeNovita(task_duration=(0.05, 0.1)) as fake:
        async with Client(
            fake.api_key, base_url=fake.url, submit_rpm=None, poll_schedule=FAST
        ) as client:
            outcomes = [o async for o in client.generate(["a", "b", "c"])]
    assert {o.submission for o in outcomes} == {Submission.ACCEPTED}
    # An outcome made by hand keeps the old shape: its fate follows the task id.
    assert Outcome(0, None).submission is Submission.NOT_SENT
    assert Outcome(0, None, "t-1").submission is Submission.ACCEPTED


# A wrong base path, or a retired model: 404 API_NOT_FOUND on every submit.


async def test_a_submit_answered_api_not_found_stops_that_endpoints_submits() -> None:
    # Issue 20, case 10: all 30 prompts were sent to a path that is not there.
    async with FakeNovita(task_duration=(0.05, 0.1)) as fake:
        async with Client(
            fake.api_key, base_url=fake.url, submit_rpm=None, poll_schedule=FAST
        ) as client:
            gone = [AsyncRequest("no-such-model", {"prompt": f"gone {i}"}) for i in range(30)]
            fine = [VideoRequest(f"fine {i}") for i in range(5)]
            items: list[AsyncRequest | VideoRequest] = []
            for i, request in enumerate(gone):  # the other model's prompts among them
                items += [request, fine[i // 6]] if i % 6 == 0 else [request]
            outcomes = [o async for o in client.generate(items, concurrency=1)]
    lost = [o for o in outcomes if isinstance(o.request, AsyncRequest)]
    made = [o for o in outcomes if isinstance(o.request, VideoRequest)]
    assert len(lost) == 30
    refused = [o for o in lost if o.submission is Submission.REFUSED]
    assert len(refused) == 1  # one POST, one concurrency slot: no second one
    assert isinstance(refused[0].error, NotFoundError)
    unsent = [o for o in lost if o.submission is Submission.NOT_SENT]
    assert len(unsent) == 29
    assert all(isinstance(o.error, BatchAbortedError) for o in unsent)
    assert "no-such-model" in str(unsent[0].error)
    # The other model of the batch went on: every one of its prompts was made.
    assert all(o.ok for o in made)
    assert fake.stats.errors.get("API_NOT_FOUND") == 1


# A transport of the user's own that never says when a request leaves.


async def test_a_transport_that_never_reports_sending_leaves_failures_in_doubt() -> None:
    async with FakeNovita(task_duration=(0.05, 0.1)) as fake:
        broken = Unreporting(MemoryTransport(fake), fail=ZeroDivisionError("proxy bug"))
        async with Client(
            fake.api_key, transport=broken, submit_rpm=None, poll_schedule=FAST
        ) as client:
            outcomes = [o async for o in client.generate(["a"])]
            with pytest.raises(SubmissionUnknownError) as raised:
                await client.submit("b")
    [outcome] = outcomes
    assert outcome.submission is Submission.IN_DOUBT
    assert isinstance(outcome.error, SubmissionUnknownError)
    cause = outcome.error.__cause__
    assert isinstance(cause, APIConnectionError)
    assert cause.maybe_sent
    assert isinstance(cause.__cause__, ZeroDivisionError)
    assert isinstance(raised.value.__cause__, APIConnectionError)
    # The server made each task once: nothing was sent again.
    assert len(fake.stats.tasks) == 2


async def test_a_transport_that_never_reports_sending_still_submits() -> None:
    async with FakeNovita(task_duration=(0.05, 0.1)) as fake:
        quiet = Unreporting(MemoryTransport(fake))
        async with Client(
            fake.api_key, transport=quiet, submit_rpm=None, poll_schedule=FAST
        ) as client:
            outcomes = [o async for o in client.generate(["a", "b"])]
    assert [o.submission for o in outcomes] == [Submission.ACCEPTED] * 2
    assert all(o.ok for o in outcomes)


def test_submission_words_are_stable() -> None:
    # The command's ledger and users' own records store these words.
    assert {s.value for s in Submission} == {"accepted", "not_sent", "refused", "in_doubt"}
    assert [s.name for s in Submission if s.may_exist] == ["ACCEPTED", "IN_DOUBT"]
    assert json.dumps(Submission.IN_DOUBT.value) == '"in_doubt"'
