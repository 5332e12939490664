"""VideoRequest validation (before anything is sent), statuses, and derived Outcome fields."""

from __future__ import annotations

from datetime import UTC, datetime

import attrs
import pytest

from novita_video import (
    InvalidRequestError,
    Outcome,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    TaskTimeoutError,
    Video,
    VideoRequest,
)


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"prompt": ""}, "prompt", "empty"),
        ({"prompt": "   \n\t"}, "prompt", "empty"),
        ({"prompt": "x" * 2001}, "prompt", "2001"),
        ({"prompt": None}, "prompt", "NoneType"),
        ({"prompt": 42}, "prompt", "int"),
        ({"prompt": b"bytes"}, "prompt", "bytes"),
        ({"prompt": "a\x00b"}, "prompt", "NUL"),
        ({"prompt": "a cat \ud800"}, "prompt", "lone surrogate"),
        ({"prompt": "ok", "image_url": "https://x.example/\udc80.png"}, "image_url", "surrogate"),
        ({"prompt": "ok", "image_url": "cat.png"}, "image_url", "scheme is none"),
        ({"prompt": "ok", "image_url": "/images/cat.png"}, "image_url", "scheme is none"),
        ({"prompt": "ok", "image_url": "file:///etc/passwd"}, "image_url", "'file'"),
        ({"prompt": "ok", "image_url": "ftp://host/cat.png"}, "image_url", "'ftp'"),
        ({"prompt": "ok", "image_url": "https://"}, "image_url", "host"),
        ({"prompt": "ok", "image_url": "https://a b.com/x.png"}, "image_url", "white space"),
        ({"prompt": "ok", "image_url": "https://h:99999/x"}, "image_url", "not a valid URL"),
        ({"prompt": "ok", "image_url": "https://h/" + "x" * 9000}, "image_url", "8192"),
        ({"prompt": "ok", "image_url": 7}, "image_url", "int"),
        (
            {"prompt": "ok", "enable_prompt_expansion": "yes"},
            "enable_prompt_expansion",
            "true or false",
        ),
        (
            {"prompt": "ok", "enable_prompt_expansion": 1},
            "enable_prompt_expansion",
            "true or false",
        ),
    ],
)
def test_bad_requests_name_the_field_and_rule(
    kwargs: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(InvalidRequestError, match=words) as caught:
        VideoRequest(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": "x"},
        {"prompt": "x" * 2000},
        {"prompt": "熊猫在竹林里散步 🐼"},
        {"prompt": "line one\nline two"},
        {"prompt": "ok", "image_url": "https://example.com/cat.png?size=large"},
        {"prompt": "ok", "image_url": "http://127.0.0.1:8000/a.png"},
        {"prompt": "ok", "image_url": "https://bücher.example/ü.png"},
        {"prompt": "ok", "enable_prompt_expansion": False},
    ],
)
def test_good_requests_pass(kwargs: dict[str, object]) -> None:
    request = VideoRequest(**kwargs)  # type: ignore[arg-type]
    assert request.prompt == kwargs["prompt"]


def test_requests_are_frozen_and_comparable() -> None:
    request = VideoRequest("a cat")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.prompt = "a dog"  # type: ignore[misc]
    assert request == VideoRequest("a cat", enable_prompt_expansion=True)
    assert VideoRequest.endpoint == "minimax-video-01"


@pytest.mark.parametrize(
    ("raw", "status", "final"),
    [
        ("TASK_STATUS_QUEUED", TaskStatus.QUEUED, False),
        ("TASK_STATUS_PROCESSING", TaskStatus.PROCESSING, False),
        ("TASK_STATUS_SUCCEED", TaskStatus.SUCCEED, True),
        ("TASK_STATUS_FAILED", TaskStatus.FAILED, True),
        ("TASK_STATUS_UNKNOWN", TaskStatus.UNKNOWN, False),
        ("TASK_STATUS_CANCELLED", TaskStatus.CANCELLED, True),
        ("TASK_STATUS_CANCELED", TaskStatus.CANCELLED, True),
        ("task_status_succeed", TaskStatus.SUCCEED, True),
        (" Task_Status_Failed ", TaskStatus.FAILED, True),
        ("processing", TaskStatus.PROCESSING, False),
        ("TASK_STATUS_PAUSED", TaskStatus.UNKNOWN, False),
        ("TASK_STATUS_", TaskStatus.UNKNOWN, False),
        ("", TaskStatus.UNKNOWN, False),
        (None, TaskStatus.UNKNOWN, False),
        (3, TaskStatus.UNKNOWN, False),
    ],
)
def test_status_parsing_never_raises(raw: object, status: TaskStatus, final: bool) -> None:
    assert TaskStatus.parse(raw) is status
    assert status.is_final is final


EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
VIDEO = Video(
    url="https://s.example/v.mp4?X-Amz-Signature=secret", type="mp4", ttl=3600, expires_at=EXPIRES
)
DONE = TaskResult(task_id="t", status=TaskStatus.SUCCEED, progress=100, videos=(VIDEO,))
FAILED = TaskResult(task_id="t", status=TaskStatus.FAILED, reason="moderation")


def test_results_and_outcomes_derive_their_fields() -> None:
    assert DONE.ok
    assert DONE.video_url == VIDEO.url
    assert DONE.raise_for_status() is DONE
    with pytest.raises(TaskFailedError, match="moderation") as caught:
        FAILED.raise_for_status()
    assert caught.value.result is FAILED
    request = VideoRequest("a cat")
    good = Outcome(0, request, "t", DONE)
    assert (good.ok, good.status, good.video_url) == (True, TaskStatus.SUCCEED, VIDEO.url)
    bad = Outcome(1, request, "t", FAILED)
    assert (bad.ok, bad.status, bad.video_url) == (False, TaskStatus.FAILED, None)
    late = Outcome(2, request, "t", DONE, TaskTimeoutError("late", "t"))
    assert not late.ok
    assert late.video_url is None
    unsent = Outcome(3, None)
    assert (unsent.ok, unsent.status, unsent.task_id) == (False, None, None)


def test_video_repr_hides_the_signature() -> None:
    assert "secret" not in repr(VIDEO)
    assert "secret" not in repr(DONE)
