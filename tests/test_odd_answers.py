"""Answers Novita documents (or may send) that are odd but must cost no clip, over HTTP.

Each test serves scripted task-result answers on 127.0.0.1 (``support.Scripted``): a
status in another case or spelling, a cancelled task, a status no client knows, a
``video_url_ttl`` left empty, an answer about another task.
"""

from __future__ import annotations

from typing import Any

import pytest

from novita_video import (
    APIConnectionError,
    APIUnreachableError,
    BadRequestError,
    Client,
    PollSchedule,
    ProtocolError,
    RetryPolicy,
    TaskFailedError,
    TaskStatus,
)
from tests.support import scripted_server

pytestmark = pytest.mark.anyio

RESULT = "/v3/async/task-result"
# The key "sk" also stands inside "task": redacting the key must not mangle answers.
QUICK = PollSchedule(progress_lead=0.05, min_interval=0.05, overdue_interval=0.1, overdue_max=0.1)
RETRY = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.01)


def answer(task_id: str, status: str, **fields: Any) -> tuple[Any, ...]:
    video = fields.pop("videos", [])
    return (
        "json",
        200,
        {"task": {"task_id": task_id, "status": status, **fields}, "videos": video},
    )


def clip(url: str, ttl: Any) -> list[dict[str, Any]]:
    return [{"video_url": url, "video_url_ttl": ttl, "video_type": "mp4"}]


@pytest.mark.parametrize("ttl", ["", None])
async def test_a_clip_whose_ttl_is_empty_or_null_is_still_the_result(ttl: Any) -> None:
    async with scripted_server() as server:
        url = server.url + "/storage/t1.mp4"
        server.script(RESULT, answer("t1", "TASK_STATUS_SUCCEED", videos=clip(url, ttl)))
        async with Client("sk", base_url=server.url, poll_schedule=QUICK) as client:
            result = await client.wait("t1", timeout=10)
    assert result.ok
    assert result.videos[0].ttl == 3600  # Novita's documented hour, assumed
    assert server.count("GET", RESULT) == 1  # taken at once: no retries of a good answer


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("task_status_succeed", TaskStatus.SUCCEED),
        ("TASK_STATUS_CANCELLED", TaskStatus.CANCELLED),
        ("TASK_STATUS_CANCELED", TaskStatus.CANCELLED),
        ("Task_Status_Failed", TaskStatus.FAILED),
    ],
)
async def test_final_statuses_in_any_case_or_spelling_end_the_wait(
    raw: str, status: TaskStatus
) -> None:
    async with scripted_server() as server:
        url = server.url + "/storage/t1.mp4"
        videos = clip(url, "3600") if status is TaskStatus.SUCCEED else []
        server.script(
            RESULT,
            answer("t1", "task_status_processing", progress_percent=12.5, eta=0.25),
            answer("t1", raw, reason="" if videos else "moderation", videos=videos),
        )
        async with Client("sk", base_url=server.url, poll_schedule=QUICK) as client:
            result = await client.wait("t1", timeout=10)
    assert result.status is status
    assert result.raw_status == raw
    assert server.count("GET", RESULT) == 2
    if status is TaskStatus.SUCCEED:
        assert result.raise_for_status().ok
    else:
        with pytest.raises(TaskFailedError, match="moderation"):
            result.raise_for_status()


async def test_a_status_nobody_knows_ends_the_wait_with_an_error_quoting_it() -> None:
    schedule = PollSchedule(
        progress_lead=0.05,
        min_interval=0.05,
        overdue_interval=0.1,
        overdue_max=0.1,
        unknown_status_limit=0.5,
    )
    async with scripted_server() as server:
        server.script(RESULT, *[answer("t1", "TASK_STATUS_HIBERNATING")] * 200)
        async with Client("sk", base_url=server.url, poll_schedule=schedule) as client:
            with pytest.raises(ProtocolError, match="'TASK_STATUS_HIBERNATING'") as raised:
                await client.wait("t1", timeout=60)
            # Bounded: it gave up after about half a second of polls, not after 60 s.
            assert 3 <= server.count("GET", RESULT) <= 40
            assert "does not know" in str(raised.value)
            # A known status in between starts the count again; the client stays usable.
            server.scripts[RESULT].clear()
            url = server.url + "/storage/t2.mp4"
            server.script(RESULT, answer("t2", "SUCCEED", videos=clip(url, "60")))
            assert (await client.wait("t2", timeout=10)).ok


async def test_get_result_refuses_an_answer_about_another_task() -> None:
    async with scripted_server() as server:
        server.script(RESULT, *[answer("someone-else", "TASK_STATUS_SUCCEED")] * 2)
        async with Client("sk", base_url=server.url, retry=RETRY) as client:
            with pytest.raises(ProtocolError, match=r"asked for task t1.*someone-else"):
                await client.get_result("t1")
    assert server.count("GET", RESULT) == 2  # retried once (a confused cache may mend)


async def test_every_outcome_that_is_not_ok_says_why() -> None:
    async with scripted_server() as server:
        server.script("/v3/async/minimax-video-01", ("json", 200, {"task_id": "t1"}))
        server.script("/v3/async/minimax-video-01", ("json", 200, {"task_id": "t2"}))
        server.script(
            RESULT,
            answer("t1", "TASK_STATUS_FAILED", reason="ILLEGAL_PROMPT"),
            answer("t2", "TASK_STATUS_SUCCEED"),  # a success without a video
        )
        options: dict[str, Any] = {"poll_schedule": QUICK, "concurrency": 1, "submit_rpm": None}
        async with Client("sk", base_url=server.url, **options) as client:
            outcomes = [o async for o in client.generate(["a cat", "a dog"])]
    by_task = {o.task_id: o for o in outcomes}
    failed, empty = by_task["t1"], by_task["t2"]
    assert not failed.ok
    assert isinstance(failed.error, TaskFailedError)
    assert "ILLEGAL_PROMPT" in str(failed.error)
    assert failed.error.reason == "ILLEGAL_PROMPT"
    assert isinstance(empty.error, TaskFailedError)
    assert "without a video" in str(empty.error)


async def test_an_api_never_reached_fails_fast_and_says_nothing_was_sent() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    retry = RetryPolicy(initial_delay=0.01, max_delay=0.01)
    async with Client("sk", base_url=url, retry=retry, submit_rpm=None) as client:
        with pytest.raises(APIUnreachableError, match="refused; nothing was sent") as raised:
            await client.submit("a cat")
        assert raised.value.maybe_sent is False
        assert raised.value.host == "127.0.0.1"
        outcomes = [o async for o in client.generate(["a", "b", "c"])]
    assert all(o.task_id is None for o in outcomes)
    for outcome in outcomes:  # the first says why; the rest were never sent
        assert outcome.error is not None
        assert "cannot reach the Novita API" in str(outcome.error)


async def test_once_the_api_answered_a_lost_connection_is_retried_not_called_unreachable() -> None:
    async with scripted_server() as server:
        url = server.url
        client = Client("sk", base_url=url, retry=RETRY, submit_rpm=None)
        await client.__aenter__()
        await client.get_result("t1")  # the API answered once
    try:  # the server is gone now: its port refuses
        with pytest.raises(APIConnectionError, match="could not") as raised:
            await client.submit("a cat")
    finally:
        await client.__aexit__(None, None, None)
    assert not isinstance(raised.value, APIUnreachableError)
    assert raised.value.maybe_sent is False


async def test_a_server_that_sends_fractions_is_followed_to_the_end() -> None:
    from novita_video.testing import FakeNovita

    seen: list[tuple[float | None, float]] = []
    async with FakeNovita(task_duration=(1.0, 1.0), eta_rounding="none") as fake:
        async with Client(fake.api_key, base_url=fake.url, poll_schedule=QUICK) as client:
            task_id = await client.submit("a cat")
            result = await client.wait(
                task_id, timeout=30, on_progress=lambda r: seen.append((r.eta, r.progress))
            )
    assert result.ok
    # The simulator sent tenths; the client kept them.
    assert any(eta is not None and eta != int(eta) for eta, _ in seen)
    assert any(progress != int(progress) for _, progress in seen)


async def test_an_error_keeps_the_servers_own_message() -> None:
    refusal = {"code": 400, "reason": "ILLEGAL_PROMPT", "message": "prompt breaks the policy"}
    async with scripted_server() as server:
        server.script("/v3/async/minimax-video-01", ("json", 400, refusal))
        async with Client("sk", base_url=server.url) as client:
            with pytest.raises(BadRequestError) as raised:
                await client.submit("a cat")
    assert raised.value.message == "prompt breaks the policy"
    assert raised.value.reason == "ILLEGAL_PROMPT"
    assert "HTTP 400" in str(raised.value)  # str() still says where it came from


def test_a_resolver_that_fails_for_now_is_counted_not_believed() -> None:
    import socket

    from novita_video._http import UNREACHABLE_AFTER, HTTPTransport
    from novita_video._settings import HTTPSettings

    def transport() -> HTTPTransport:
        return HTTPTransport(
            base_url="https://api.example.invalid",
            api_key="sk",
            settings=HTTPSettings(timeout=1, connect_timeout=1, deadline=2),
            user_agent="t",
        )

    unsent = APIConnectionError("could not send", False)
    gone = transport()._unreachable(socket.gaierror(socket.EAI_NONAME, "Name unknown"), unsent)
    assert isinstance(gone, APIUnreachableError)  # no such name: said at once
    later = transport()
    again = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    tries = [later._unreachable(again, unsent) for _ in range(UNREACHABLE_AFTER)]
    assert [isinstance(t, APIUnreachableError) for t in tries] == [False, False, True]
