"""The JSON edge: submit bodies in, task-result and error bodies out.

Dicts live only here. Inbound, :func:`parse_submit` turns raw bytes into a frozen
:class:`SubmitRequest` or raises :class:`ApiError`; outbound, a :class:`TaskRecord`
and its :class:`TaskState` become the documented task-result body.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from ._tasks import FINAL_STATUSES, QUEUED, SUCCEED, SubmitRequest, TaskRecord, TaskState

__all__ = ["TASK_TYPE", "ApiError", "error_body", "parse_submit", "task_result_body"]

TASK_TYPE = "MINIMAX_VIDEO_01"
PROMPT_MAX_CHARS = 2000


class ApiError(Exception):
    """An answer in Novita's error shape; handlers raise it, the server renders it."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, reason, message, headers)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}

    @classmethod
    def invalid_body(cls, message: str) -> ApiError:
        """400 ``INVALID_REQUEST_BODY``, the answer to every malformed request."""
        return cls(400, "INVALID_REQUEST_BODY", message)


def error_body(status: int, reason: str, message: str) -> bytes:
    """``{"code", "reason", "message", "metadata"}``, as Novita documents its errors."""
    body = {"code": status, "reason": reason, "message": message, "metadata": {}}
    return json.dumps(body).encode()


def _is_absolute_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_submit(raw: bytes) -> SubmitRequest:
    """Validate a Minimax Video-01 submit body; unknown extra fields are ignored."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError.invalid_body("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError.invalid_body("request body must be a JSON object")

    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError.invalid_body("prompt is required")
    if not isinstance(prompt, str):
        raise ApiError.invalid_body("prompt must be a string")
    if not 1 <= len(prompt) <= PROMPT_MAX_CHARS:
        raise ApiError.invalid_body(
            f"prompt must be 1 to {PROMPT_MAX_CHARS} characters, not {len(prompt)}"
        )

    image_url = None
    if "image_url" in body:
        image_url = body["image_url"]
        if not isinstance(image_url, str):
            raise ApiError.invalid_body("image_url must be a string")
        if not _is_absolute_http_url(image_url):
            raise ApiError.invalid_body("image_url must be an absolute http(s) URL")

    expansion = body.get("enable_prompt_expansion", True)
    if not isinstance(expansion, bool):
        raise ApiError.invalid_body("enable_prompt_expansion must be a boolean")

    return SubmitRequest(prompt, image_url, expansion)


def task_result_body(
    task: TaskRecord, state: TaskState, *, video_url: str | None, video_ttl: int
) -> bytes:
    """The documented task-result answer; ``videos`` is filled only once SUCCEED."""
    started = state.status != QUEUED
    finished = state.status in FINAL_STATUSES
    body: dict[str, Any] = {
        "task": {
            "task_id": task.task_id,
            "task_type": TASK_TYPE,
            "status": state.status,
            "reason": state.reason,
            "eta": state.eta,
            "progress_percent": state.progress_percent,
        },
        "images": [],
        "videos": [],
        "audios": [],
        "extra": {
            "seed": str(task.seed),
            "debug_info": {
                "request_info": "",
                "submit_time_ms": _ms(task.wall_at(task.submitted_at)),
                "execute_time_ms": _ms(task.wall_at(task.processing_at) if started else None),
                "complete_time_ms": _ms(task.wall_at(task.finishes_at) if finished else None),
            },
        },
    }
    if state.status == SUCCEED and video_url is not None:
        body["videos"].append(
            {"video_url": video_url, "video_url_ttl": str(video_ttl), "video_type": "mp4"}
        )
    return json.dumps(body).encode()


def _ms(wall: float | None) -> str:
    # Novita sends these as strings of epoch milliseconds; "0" while not yet reached.
    return "0" if wall is None else str(int(wall * 1000))
