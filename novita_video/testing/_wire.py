"""The JSON edge: submit bodies in, task-result and error bodies out.

Inbound, :func:`parse_submit` turns raw bytes into a frozen :class:`SubmitRequest`
(each endpoint's fields are checked in ``_endpoints``) or raises :class:`ApiError`;
outbound, a :class:`TaskRecord` and its :class:`TaskState` become the documented
task-result body, which is also the payload of a webhook event (:func:`event_body`).
"""

from __future__ import annotations

import json
from typing import Any, Final

from ._endpoints import parse_body
from ._errors import ApiError
from ._tasks import FINAL_STATUSES, QUEUED, SUCCEED, SubmitRequest, TaskRecord, TaskState

__all__ = [
    "WEBHOOK_EVENT_TYPE",
    "ApiError",
    "error_body",
    "event_body",
    "parse_submit",
    "proxy_page",
    "server_error",
    "task_result_body",
]

#: The ``event_type`` of the event a webhook receives when a task ends.
WEBHOOK_EVENT_TYPE: Final = "ASYNC_TASK_RESULT"


def error_body(status: int, reason: str, message: str) -> bytes:
    """``{"code", "reason", "message", "metadata"}``, as Novita documents its errors."""
    body = {"code": status, "reason": reason, "message": message, "metadata": {}}
    return json.dumps(body).encode()


# Novita documents reasons for its own 500s only; the rest stand for what a proxy or
# the surge protection in front of it would say.
_SERVER_ERRORS = {
    502: ("BAD_GATEWAY", "bad gateway: the upstream answer was lost"),
    503: ("SERVICE_UNAVAILABLE", "surge protection: the service is overloaded, retry later"),
    504: ("GATEWAY_TIMEOUT", "gateway timeout: the upstream did not answer in time"),
}
_PROXY_TITLES = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def server_error(status: int, endpoint: str) -> ApiError:
    """A 5xx in Novita's JSON shape; a 500 names what failed (creating or reading a task)."""
    if status == 500:
        if endpoint == "submit":
            return ApiError(500, "CREATE_TASK_FAILED", "failed to create the task")
        return ApiError(500, "GET_RESULT_FAILED", "failed to get the task result")
    reason, message = _SERVER_ERRORS[status]
    return ApiError(status, reason, message)


def proxy_page(status: int) -> str:
    """The HTML a reverse proxy answers with when the API behind it fails (502/503/504)."""
    title = f"{status} {_PROXY_TITLES[status]}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n"
        f"<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    )


def parse_submit(raw: bytes, endpoint: str = "minimax-video-01") -> SubmitRequest:
    """Validate a submit body for ``endpoint`` (see ``_endpoints``); unknown fields are ignored."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError.invalid_body("request body is not valid JSON") from None
    return parse_body(endpoint, body)


def event_body(task_result: bytes) -> bytes:
    """The webhook event for a finished task: ``{"event_type", "payload"}``, as Novita sends."""
    event = {"event_type": WEBHOOK_EVENT_TYPE, "payload": json.loads(task_result)}
    return json.dumps(event).encode()


# What a poll answered with an odd status also carries: fields no client was told about.
_UNKNOWN_TASK_FIELDS = {"sub_status": "WAITING_FOR_WORKER", "queue_position": 7}
_UNKNOWN_TOP_FIELDS = {"notices": [{"level": "info", "text": "scheduled maintenance"}]}


def task_result_body(
    task: TaskRecord,
    state: TaskState,
    *,
    video_url: str | None,
    video_ttl: int,
    omit_eta: bool = False,
    unknown_fields: bool = False,
) -> bytes:
    """The documented task-result answer; ``videos`` is filled only once SUCCEED.

    Chaos bends it: ``omit_eta`` leaves ``eta`` out (a stuck task), ``unknown_fields``
    adds fields to ``task`` and to the body that no client knows.
    """
    started = state.status != QUEUED
    finished = state.status in FINAL_STATUSES
    body: dict[str, Any] = {
        "task": {
            "task_id": task.task_id,
            "task_type": task.request.task_type,
            "status": state.status,
            "reason": state.reason,
            "eta": state.eta,
            "progress_percent": state.progress_percent,
        },
        "images": [],
        "videos": [],
        "audios": [],
        "extra": {
            # What the submit's own extra said comes back (its webhook, its NSFW check).
            **task.request.extra,
            "enable_nsfw_detection": task.request.extra.get("enable_nsfw_detection", False),
            "seed": str(task.seed),
            "debug_info": {
                "request_info": "",
                "submit_time_ms": _ms(task.wall_at(task.submitted_at)),
                "execute_time_ms": _ms(task.wall_at(task.processing_at) if started else None),
                "complete_time_ms": _ms(task.wall_at(task.finishes_at) if finished else None),
            },
        },
    }
    if omit_eta:
        del body["task"]["eta"]
    if unknown_fields:
        body["task"].update(_UNKNOWN_TASK_FIELDS)
        body.update(_UNKNOWN_TOP_FIELDS)
    if state.status == SUCCEED and video_url is not None:
        body["videos"].append(
            {"video_url": video_url, "video_url_ttl": str(video_ttl), "video_type": "mp4"}
        )
    return json.dumps(body).encode()


def _ms(wall: float | None) -> str:
    # Novita sends these as strings of epoch milliseconds; "" while not yet reached.
    return "" if wall is None else str(int(wall * 1000))
