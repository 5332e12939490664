"""The public transport seam: a test double written from public names alone.

``MockTransport(handler)`` takes a plain or an async handler (as httpx's does); what
its handler raises decides what the client believes a submit came to; the simulator's
``MemoryTransport`` is written on the same public names.
"""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

import novita_video
import novita_video.testing
import novita_video.webhooks
from novita_video import (
    APIConnectionError,
    Client,
    MockTransport,
    Response,
    Sending,
    Submission,
    SubmissionUnknownError,
    Transport,
    TransportRequest,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


def result_body(task_id: str, status: str = "TASK_STATUS_SUCCEED") -> dict[str, Any]:
    return {
        "task": {"task_id": task_id, "status": status, "progress_percent": 100},
        "videos": [
            {
                "video_url": f"https://storage.example/{task_id}.mp4?signature=s3cr3t",
                "video_url_ttl": "3600",
                "video_type": "mp4",
            }
        ],
    }


def answer(request: TransportRequest) -> Response:
    """A server of three lines: one task, always done, and its clip."""
    if request.is_download:
        return Response(200, b"clip bytes")
    if request.method == "POST":
        return Response.of_json(200, {"task_id": "t-1"})
    return Response.of_json(200, result_body(request.params["task_id"]))


async def answer_later(request: TransportRequest) -> Response:
    await anyio.sleep(0)
    return answer(request)


@pytest.mark.parametrize("handler", [answer, answer_later], ids=["sync", "async"])
async def test_a_mock_transport_takes_a_plain_or_an_async_handler(
    handler: Any, tmp_path: Path
) -> None:
    transport = MockTransport(handler)
    assert isinstance(transport, Transport)
    async with Client(transport=transport) as client:
        task_id = await client.submit("a cat")
        result = await client.wait(task_id, timeout=30)
        path = await client.download(result, tmp_path / "cat.mp4")
    assert task_id == "t-1"
    assert result.ok
    assert path.read_bytes() == b"clip bytes"
    sent = [(r.method, r.path, r.is_download) for r in transport.requests]
    assert sent == [
        ("POST", "/v3/async/minimax-video-01", False),
        ("GET", "/v3/async/task-result", False),
        ("GET", "/t-1.mp4", True),
    ]
    assert transport.requests[0].json == {"prompt": "a cat", "enable_prompt_expansion": True}
    assert transport.requests[2].params == {"signature": "s3cr3t"}


async def test_what_the_handler_raises_decides_what_a_submit_came_to() -> None:
    # A connection that never opened is retried (nothing was created); one dropped after
    # the request left leaves the submit in doubt, and it is never sent again.
    posts: list[TransportRequest] = []

    def flaky(request: TransportRequest) -> Response:
        if request.method == "POST":
            posts.append(request)
            if len(posts) == 1:
                raise APIConnectionError("refused", maybe_sent=False)
            if request.json["prompt"] == "dropped":
                raise APIConnectionError("dropped after sending", maybe_sent=True)
            return Response.of_json(200, {"task_id": f"t-{len(posts)}"})
        return Response.of_json(200, result_body(request.params["task_id"]))

    retry_at_once = novita_video.RetryPolicy(initial_delay=0.01, max_delay=0.01)
    async with Client(
        transport=MockTransport(flaky), submit_rpm=None, retry=retry_at_once
    ) as client:
        assert await client.submit("retried") == "t-2"
        with pytest.raises(SubmissionUnknownError):
            await client.submit("dropped")
        outcomes = [o async for o in client.generate(["dropped"])]
    assert [p.json["prompt"] for p in posts] == ["retried", "retried", "dropped", "dropped"]
    assert outcomes[0].submission is Submission.IN_DOUBT


async def test_a_handler_that_returns_no_response_is_named() -> None:
    def wrong(request: TransportRequest) -> Any:
        return {"task_id": "t-1"}

    async with Client(transport=MockTransport(wrong)) as client:
        with pytest.raises(SubmissionUnknownError) as raised:
            await client.submit("a cat")
    assert "must return a novita_video.Response" in str(raised.value.__cause__)


def test_response_headers_are_case_blind_and_json_answers_are_one_call() -> None:
    response = Response.of_json(429, {"code": 429}, headers={"Retry-After": "2"})
    assert response.headers == {"retry-after": "2"}
    assert json.loads(response.body) == {"code": 429}
    error = response.error("submit", now_wall=0.0)
    assert isinstance(error, novita_video.RateLimitError)
    assert error.retry_after == 2.0


def test_sending_says_once_when_a_request_left() -> None:
    told: list[str] = []
    sending = Sending(on_sent=lambda: told.append("left"))
    assert not sending.sent
    sending.mark_sent()
    assert sending.sent
    assert told == ["left"]


def test_the_memory_transport_is_written_on_the_public_seam() -> None:
    source = Path(inspect.getfile(novita_video.testing.MemoryTransport))
    tree = ast.parse(source.read_text(encoding="utf-8"))
    seam = {"Response", "Sending", "Transport", "APIConnectionError"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and {a.name for a in node.names} & seam:
            assert node.module == "novita_video", ast.unparse(node)
            assert not node.level, ast.unparse(node)


def test_every_public_name_comes_from_a_public_module() -> None:
    # What the docs and the tests of users import: each name of each public namespace,
    # and the seam's names are the ones its private module defines (one class, one home).
    for module in (novita_video, novita_video.testing, novita_video.webhooks):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
    from novita_video import _transport

    for name in _transport.__all__:
        assert getattr(novita_video, name) is getattr(_transport, name), name


def test_the_testing_guide_writes_its_double_from_public_names() -> None:
    guide = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    marker = "## A test double of your own"
    assert marker in guide
    section = guide.split(marker, 1)[1].split("\n## ", 1)[0]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    assert "MockTransport" in code or "Transport" in code
    tree = ast.parse(code.split("\n", 1)[1])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").split(".")[-1].startswith("_"), ast.unparse(node)
