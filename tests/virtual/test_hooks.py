"""``Client(event_hooks=...)``, on virtual time: every request is a pair of events.

The hooks are called above the transport, so a user's own transport (here a
``MockTransport``) emits them too, with the attempt number (the retry driver's, the
poller's, a download's) and the task id. A hook that raises harms nothing; a slow
async one is cut off after ``HOOK_TIMEOUT``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from novita_video import (
    Client,
    InvalidRequestError,
    MockTransport,
    RequestEvent,
    Response,
    ResponseEvent,
    RetryPolicy,
    TransportRequest,
)
from novita_video._observe import HOOK_TIMEOUT

pytestmark = pytest.mark.anyio

QUICK = RetryPolicy(initial_delay=0.5, max_delay=0.5, jitter=0.0)


def result(task_id: str) -> dict[str, Any]:
    return {
        "task": {"task_id": task_id, "status": "TASK_STATUS_SUCCEED"},
        "videos": [
            {
                "video_url": f"https://storage.example/{task_id}.mp4?X-Amz-Signature=s3cr3t",
                "video_url_ttl": "3600",
            }
        ],
    }


class Server:
    """One answer per request; each path's first request fails once, where asked."""

    def __init__(self, *, fail_first: set[str]) -> None:
        self.fail_first = fail_first
        self.submits = 0

    def __call__(self, request: TransportRequest) -> Response:
        key = "download" if request.is_download else request.method
        if key in self.fail_first:
            self.fail_first.discard(key)
            return Response.of_json(503, {"code": 503, "reason": "SERVICE_UNAVAILABLE"})
        if request.is_download:
            return Response(200, b"clip")
        if request.method == "POST":
            self.submits += 1
            return Response.of_json(200, {"task_id": f"t-{self.submits}"})
        return Response.of_json(200, result(request.params["task_id"]))


def summary(event: RequestEvent | ResponseEvent) -> tuple[Any, ...]:
    if isinstance(event, RequestEvent):
        return ("request", event.method, event.path, event.attempt, event.task_id)
    return ("response", event.method, event.path, event.attempt, event.task_id, event.status)


async def test_every_request_is_told_with_its_attempt_and_task(tmp_path: Path) -> None:
    events: list[RequestEvent | ResponseEvent] = []

    async def on_response(event: ResponseEvent) -> None:
        await anyio.sleep(0.01)  # an async hook, awaited in order
        events.append(event)

    hooks = {"request": [events.append], "response": [on_response]}
    server = Server(fail_first={"GET", "download"})
    transport = MockTransport(server)
    async with Client(transport=transport, event_hooks=hooks, retry=QUICK) as client:
        first = await client.submit("a cat")
        done = await client.get_result(first)  # 503, then a retry
        await client.download(done, tmp_path / "cat.mp4")  # 503, then a retry
        server.fail_first.add("GET")
        second = await client.submit("a dog")
        await client.wait(second, timeout=60)  # the poller's check fails once too
    submit, result_path = "/v3/async/minimax-video-01", "/v3/async/task-result"
    assert [summary(event) for event in events] == [
        ("request", "POST", submit, 1, None),
        ("response", "POST", submit, 1, "t-1", 200),
        ("request", "GET", result_path, 1, "t-1"),
        ("response", "GET", result_path, 1, "t-1", 503),
        ("request", "GET", result_path, 2, "t-1"),
        ("response", "GET", result_path, 2, "t-1", 200),
        ("request", "GET", "/t-1.mp4", 1, "t-1"),
        ("response", "GET", "/t-1.mp4", 1, "t-1", 503),
        ("request", "GET", "/t-1.mp4", 2, "t-1"),
        ("response", "GET", "/t-1.mp4", 2, "t-1", 200),
        ("request", "POST", submit, 1, None),
        ("response", "POST", submit, 1, "t-2", 200),
        ("request", "GET", result_path, 1, "t-2"),
        ("response", "GET", result_path, 1, "t-2", 503),
        ("request", "GET", result_path, 2, "t-2"),
        ("response", "GET", result_path, 2, "t-2", 200),
    ]
    # Each response names its request; numbers count the client's requests.
    numbers = [event.number for event in events]
    assert numbers == [n for n in range(1, 9) for _ in (0, 1)]
    downloads = [event for event in events if event.download]
    assert len(downloads) == 4
    # A clip link's query is a signature: no event holds it.
    assert not any("s3cr3t" in repr(event) for event in events)
    responses = [event for event in events if isinstance(event, ResponseEvent)]
    assert all(event.elapsed >= 0 and event.error is None for event in responses)
    assert [event.ok for event in responses].count(False) == 3


async def test_a_hook_that_raises_is_logged_and_harms_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[int] = []

    def broken(event: RequestEvent) -> None:
        raise RuntimeError("a bug in the user's hook")

    async def broken_async(event: ResponseEvent) -> None:
        raise ValueError("another")

    hooks = {
        "request": [broken, lambda event: seen.append(event.number)],
        "response": [broken_async, lambda event: seen.append(-event.number)],
    }
    with caplog.at_level(logging.WARNING, logger="novita_video"):
        async with Client(
            transport=MockTransport(Server(fail_first=set())), event_hooks=hooks
        ) as c:
            task_id = await c.submit("a cat")
            assert (await c.wait(task_id, timeout=60)).ok
    assert task_id == "t-1"
    assert seen == [1, -1, 2, -2]  # the hooks after a broken one still ran
    raised = [r for r in caplog.records if "raised; ignored" in r.getMessage()]
    assert len(raised) == 4
    assert raised[0].exc_info is not None
    assert "a bug in the user's hook" in str(raised[0].exc_info[1])


async def test_a_slow_async_hook_is_cut_off_after_its_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ended: list[int] = []

    async def exporter_down(event: RequestEvent) -> None:
        try:
            await anyio.sleep(3600)  # an exporter whose collector does not answer
        finally:
            ended.append(event.number)

    async with Client(
        transport=MockTransport(Server(fail_first=set())),
        event_hooks={"request": [exporter_down]},
    ) as client:
        started = anyio.current_time()
        with caplog.at_level(logging.WARNING, logger="novita_video"):
            task_id = await client.submit("a cat")
        took = anyio.current_time() - started
    assert task_id == "t-1"
    assert ended == [1]  # cancelled, not left running
    assert took == pytest.approx(HOOK_TIMEOUT, abs=0.01)
    assert any("was cancelled" in record.getMessage() for record in caplog.records)


async def test_a_cancelled_request_still_ends_its_span() -> None:
    # A request event is always followed by one response event, so a span opened on
    # one is always closed: here the caller gives up on a check that never answers.
    events: list[ResponseEvent] = []

    async def never(request: TransportRequest) -> Response:
        await anyio.sleep(3600)
        raise AssertionError("unreachable")

    async def on_response(event: ResponseEvent) -> None:
        await anyio.sleep(0.01)  # even awaiting, inside the cancelled request
        events.append(event)

    async with Client(transport=MockTransport(never), event_hooks={"response": [on_response]}) as c:
        with anyio.move_on_after(5):
            await c.get_result("t-1")
    assert len(events) == 1
    assert events[0].cancelled
    assert events[0].status is None
    assert events[0].elapsed == pytest.approx(5, abs=0.01)


@pytest.mark.parametrize(
    ("hooks", "says"),
    [
        ({"requests": []}, "unknown event 'requests'"),
        ({"request": print}, "must be a list of callables"),
        ({"response": ["print"]}, "is not callable"),
        ([print], "must be a mapping"),
    ],
)
async def test_event_hooks_are_checked_when_the_client_is_made(hooks: Any, says: str) -> None:
    with pytest.raises(InvalidRequestError, match=says) as raised:
        Client(transport=MockTransport(Server(fail_first=set())), event_hooks=hooks)
    assert raised.value.field == "event_hooks"
