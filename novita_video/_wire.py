"""JSON in and out, through the SDK's one private cattrs converter.

Reading the server is lenient where the API may grow (unknown keys and statuses are
accepted) and strict where it matters (a body that is not the documented shape is a
:class:`~novita_video.ProtocolError` quoting a short, key-free snippet of it).
The converter is configured here and nowhere else (cattrs advises against its global one).
It is made on first use, not on import: the commonest bodies (a running task, a task
id, an error, a typed request) are read and written by the small functions below, which
give what the converter gives, so cattrs is imported only for the rest.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import ProtocolError
from ._models import TaskResult, TaskStatus, Video
from ._requests import MODELS, AsyncRequest, CatalogRequest, Lora, Request

if TYPE_CHECKING:
    import cattrs

logger = logging.getLogger("novita_video")

SNIPPET_LENGTH = 200
#: Ten years: anything longer is not a presigned link's lifetime but a broken answer.
MAX_TTL = 10 * 365 * 24 * 3600
#: Novita's documented lifetime of a video URL, assumed when an answer does not say.
DEFAULT_TTL = 3600


@attrs.frozen
class _WireTask:
    task_id: str
    status: str
    reason: str = ""
    # Estimates are hints: read leniently in from_wire, never a reason to refuse an answer.
    eta: Any = None
    progress_percent: Any = None
    task_type: str = ""


@attrs.frozen
class _WireVideo:
    video_url: str = ""
    # Documented as a string of seconds; "" or null (or nonsense) means the documented hour.
    video_url_ttl: Any = None
    video_type: str = ""


@attrs.frozen
class _WireTaskResult:
    task: _WireTask
    videos: list[_WireVideo] | None = None


@attrs.frozen
class _WireSubmitted:
    task_id: str


@attrs.frozen
class _WireError:
    reason: str = ""
    message: str = ""


def _structure_str(value: Any, _: type) -> str:
    # cattrs' default str() would accept {"a": 1} as "{'a': 1}": a task id must be text.
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _structure_number(value: Any, _: type) -> float:
    # Novita sends numbers; some proxies and SDKs send them as strings ("3600").
    if isinstance(value, bool):
        raise TypeError("expected a number, got a boolean")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        number = float(value.strip())
    else:
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def hint(value: Any) -> float | None:
    """A number the server gives as a hint (``eta``, ``progress_percent``), or ``None``
    when it cannot be read as a finite number >= 0: a hint that cannot be read is a
    missing hint, not a broken answer about a healthy task."""
    if type(value) is int and 0 <= value < 1 << 53:  # the usual eta and progress
        return float(value)
    try:
        number = _structure_number(value, float)
    except (TypeError, ValueError, OverflowError):  # an int of 400 digits is no hint
        return None
    return number if number >= 0 else None


def _typed_body(request: attrs.AttrsInstance) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, value in attrs.asdict(request, recurse=False).items():
        if value is None:
            continue
        if isinstance(value, tuple) and all(isinstance(item, Lora) for item in value):
            value = [{"path": lora.path, "scale": lora.scale} for lora in value]
        body[key] = value
    return body


#: How each kind of request becomes its JSON body: the converter's unstructure hooks,
#: also called directly by :func:`dump_request` (a submit need not import cattrs).
_BODIES: dict[type, Callable[[Any], dict[str, Any]]] = {
    # Unset optional fields are left out, so the server applies its own defaults.
    **dict.fromkeys(MODELS.values(), _typed_body),
    AsyncRequest: lambda request: dict(request.body),
    CatalogRequest: lambda request: {"model": request.model, **request.body},
}


@cache
def _converter() -> cattrs.Converter:
    """The one converter, made on first use (see the module docstring)."""
    import cattrs

    # Unknown keys are ignored: Novita adds fields (``extra``, ``audios``) and must not break users.
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(float, _structure_number)
    converter.register_structure_hook(int, lambda v, t: int(_structure_number(v, t)))
    for kind, body in _BODIES.items():
        converter.register_unstructure_hook(kind, body)
    # Every field of a video may be missing, but a video is still an object.
    structure_video = converter.get_structure_hook(_WireVideo)

    def _structure_video(value: Any, cls: type) -> _WireVideo:
        if not isinstance(value, dict):
            raise TypeError(f"a video must be an object, not {type(value).__name__}")
        video: _WireVideo = structure_video(value, cls)
        return video

    converter.register_structure_hook(_WireVideo, _structure_video)
    return converter


def snippet(body: bytes | str) -> str:
    """A short, printable quote of a body, for error messages."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_LENGTH else text[:SNIPPET_LENGTH] + "..."


def load_json(body: bytes, what: str) -> Any:
    """Decode a JSON body or raise :class:`ProtocolError`."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError(f"{what}: the answer is not JSON", snippet(body)) from err
    except RecursionError as err:  # nested deeper than any task result
        raise ProtocolError(f"{what}: the answer is nested too deeply", snippet(body)) from err


def _structure(data: Any, cls: type[Any], what: str, body: bytes) -> Any:
    import cattrs  # imported by _converter() anyway: a lookup by now

    try:
        return _converter().structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as err:
        raise ProtocolError(
            f"{what}: the answer is not the documented shape ({_explain(err)})", snippet(body)
        ) from err


def _explain(err: BaseException) -> str:
    import cattrs

    if isinstance(err, cattrs.BaseValidationError):
        notes = cattrs.transform_error(err)
        return "; ".join(notes[:3]) if notes else err.message
    return str(err)


def dump_request(request: Request) -> dict[str, Any]:
    """The JSON body of ``POST /v3/async/<endpoint>`` for ``request``."""
    dump = _BODIES.get(type(request))
    if dump is not None:
        return dump(request)
    body: dict[str, Any] = _converter().unstructure(request)  # a subclass of the user's
    return body


def parse_submitted(body: bytes) -> str:
    """The task id of a submit answer ``{"task_id": "..."}``."""
    data = load_json(body, "submit")
    if type(data) is dict and type(task_id := data.get("task_id")) is str and task_id:
        return task_id  # the documented answer, read without the converter
    if isinstance(data, dict) and "task_id" not in data and isinstance(data.get("data"), dict):
        data = data["data"]  # the unified endpoint's answer may be wrapped (unconfirmed)
    submitted: _WireSubmitted = _structure(data, _WireSubmitted, "submit", body)
    if not submitted.task_id:
        raise ProtocolError("submit: the answer has an empty task_id", snippet(body))
    return submitted.task_id


def parse_task_result(body: bytes, *, wall: float) -> TaskResult:
    """A :class:`TaskResult` from a task-result body; ``wall`` (Unix time) dates the video URLs."""
    data = load_json(body, "task-result")
    wire = _running_task(data)
    if wire is None:
        wire = _structure(data, _WireTaskResult, "task-result", body)
    return from_wire(wire, wall=wall, body=body)


def _text(value: Any) -> str | None:
    """``_structure_str``'s reading of a str field, or ``None`` where it would raise."""
    if type(value) is str:
        return value
    return "" if value is None else None


def _running_task(data: Any) -> _WireTaskResult | None:
    """The converter's reading of the commonest answer (a task still running: no
    videos, every field of the documented type) without the converter, or ``None`` for
    anything else, which the converter reads (and explains when it must refuse it).
    A poll is the hot path: thousands a batch, nearly all of them this answer."""
    if type(data) is not dict:
        return None
    task, videos = data.get("task"), data.get("videos")
    if type(task) is not dict or not (videos is None or (type(videos) is list and not videos)):
        return None
    task_id, status = task.get("task_id"), task.get("status")
    reason, task_type = _text(task.get("reason")), _text(task.get("task_type"))
    if type(task_id) is not str or type(status) is not str or reason is None or task_type is None:
        return None
    wire_task = _WireTask(
        task_id, status, reason, task.get("eta"), task.get("progress_percent"), task_type
    )
    return _WireTaskResult(wire_task, None)


def from_wire(wire: _WireTaskResult, *, wall: float, body: bytes) -> TaskResult:
    task = wire.task
    if not task.task_id:
        raise ProtocolError("task-result: the answer has an empty task_id", snippet(body))
    videos = tuple(
        _video(video, wall=wall, task_id=task.task_id)
        for video in wire.videos or ()
        if video.video_url
    )
    eta = hint(task.eta)
    progress = hint(task.progress_percent)
    return TaskResult(
        task_id=task.task_id,
        status=TaskStatus.parse(task.status),
        raw_status=task.status,
        reason=task.reason,
        eta=eta if eta is not None and eta > 0 else None,
        progress=0 if progress is None else min(100.0, progress),
        videos=videos,
        task_type=task.task_type,
    )


def _video(video: _WireVideo, *, wall: float, task_id: str) -> Video:
    # A finished, paid-for clip is never lost to a field the client can do without.
    ttl = hint(video.video_url_ttl)
    if ttl is None or ttl > MAX_TTL:
        logger.info(
            "task %s: video_url_ttl %r is not a number of seconds; assuming Novita's documented %d",
            task_id,
            video.video_url_ttl,
            DEFAULT_TTL,
        )
        ttl = DEFAULT_TTL
    return Video(
        url=video.video_url,
        type=video.video_type or "mp4",
        ttl=int(ttl),
        expires_at=datetime.fromtimestamp(wall + ttl, UTC),
    )


@attrs.frozen
class _WireEvent:
    event_type: str
    payload: _WireTaskResult


def parse_webhook(body: bytes, *, wall: float) -> TaskResult | None:
    """The task result a webhook event carries; ``None`` for other kinds of event."""
    data = load_json(body, "webhook")
    if isinstance(data, dict) and data.get("event_type") != "ASYNC_TASK_RESULT":
        return None
    event: _WireEvent = _structure(data, _WireEvent, "webhook", body)
    return from_wire(event.payload, wall=wall, body=body)


def parse_error(body: bytes) -> tuple[str, str]:
    """``(reason, message)`` of an error body; empty strings for HTML or other shapes."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "", snippet(body)
    if not isinstance(data, dict):
        return "", snippet(body)
    reason, message = _text(data.get("reason")), _text(data.get("message"))
    if reason is not None and message is not None:
        return reason, message  # the converter's reading, without it
    import cattrs

    try:
        error: _WireError = _converter().structure(data, _WireError)
    except (cattrs.BaseValidationError, TypeError, ValueError):
        return "", snippet(body)
    return error.reason, error.message
