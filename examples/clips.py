"""What both example apps share, knowing no web framework: a clip's state as JSON, an SDK
error as an HTTP answer, and a clip's progress as server-sent events.

``examples/fastapi_app.py`` and ``examples/aiohttp_app.py`` differ only in how they
route, parse and stream; everything that talks to :class:`novita_video.Client` is here.
Import it as ``examples.clips`` (run the apps from the repository root).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, Final

import anyio
import attrs

from novita_video import (
    APITimeoutError,
    BackPressureError,
    BadRequestError,
    Client,
    ClientClosedError,
    InvalidRequestError,
    NotFoundError,
    NovitaError,
    PermissionDeniedError,
    RateLimitError,
    SubmissionUnknownError,
    TaskResult,
    TaskTimeoutError,
)

__all__ = [
    "MAX_STREAM",
    "MAX_SUBMIT_WAIT",
    "MAX_WAIT",
    "AppState",
    "clip_state",
    "default_client",
    "error_answer",
    "follow_clip",
    "sse_event",
    "stream_clip",
    "submit_clip",
    "wait_for_clip",
]

logger = logging.getLogger("examples.clips")

#: The longest a ``GET /clips/{id}`` may hold its connection; past it, ask again.
MAX_WAIT: Final = 300.0
#: The longest an event stream may run; the SDK gives a task 1800 s by default.
MAX_STREAM: Final = 1800.0
#: The longest ``POST /clips`` waits for its turn under the submit rate (Novita's 20 a
#: minute: one every 3 s, so the next turn is within reach) before it answers 503 with
#: ``Retry-After`` (``CLIPS_MAX_SUBMIT_WAIT`` overrides it). A POST that left is always
#: awaited, however long its answer takes.
MAX_SUBMIT_WAIT: Final = 5.0

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]


def default_client(**settings: Any) -> Client:
    """The client from the environment: ``NOVITA_API_KEY``, ``NOVITA_BASE_URL`` and
    ``NOVITA_REDIS_URL`` (read by the SDK), and ``CLIPS_WEBHOOK_URL``, the address where
    this app receives Novita's webhooks (``POST /webhooks/novita``), if it has one;
    ``settings`` go to the :class:`Client` as they are (``event_hooks=...``)."""
    return Client(webhook_url=os.environ.get("CLIPS_WEBHOOK_URL") or None, **settings)


@attrs.define
class AppState:
    """The app's one client and its gauges, made when the app starts."""

    client: Client
    #: Seconds ``POST /clips`` may wait for its turn (see :data:`MAX_SUBMIT_WAIT`).
    max_submit_wait: float = attrs.field(
        factory=lambda: float(os.environ.get("CLIPS_MAX_SUBMIT_WAIT", MAX_SUBMIT_WAIT))
    )
    #: ``GET /clips/{id}`` requests waiting for their clip right now.
    waiting: int = 0
    #: Event streams open right now.
    streams: int = 0

    def as_json(self) -> dict[str, Any]:
        """What ``GET /stats`` answers."""
        stats = attrs.asdict(self.client.statistics())
        # An unlimited rate may be math.inf, which JSON cannot carry: None says "no limit".
        client = {
            key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in stats.items()
        }
        return {"client": client, "requests": {"waiting": self.waiting, "streams": self.streams}}


# -- SDK answers as HTTP answers ----------------------------------------------------------

# Where a field the SDK names lives in the request, in FastAPI's own 422 shape.
_LOCATIONS: Final = {"task_id": "path", "timeout": "query", "every": "query"}


def error_answer(error: NovitaError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The HTTP status, JSON body and headers that tell a caller about ``error``.

    The order matters: narrow classes first, then whether the error dooms every
    request (a bad key, no balance), which no caller of this app can mend.
    """
    if isinstance(error, InvalidRequestError):
        field = error.field
        loc = ["body"] if field in (None, "body") else [_LOCATIONS.get(field, "body"), field]
        return 422, {"detail": [{"type": "value_error", "loc": loc, "msg": str(error)}]}, {}
    if isinstance(error, SubmissionUnknownError):
        # 502: the upstream gave no usable answer. No Retry-After on purpose: a retry may
        # pay for a second clip, so a person should look before anyone submits again.
        detail = (
            "the submit may have created (and billed) a task, but no task id came back; "
            "it was not retried, to avoid paying twice: check the Novita dashboard before "
            "submitting this prompt again"
        )
        return 502, {"detail": detail, "task_may_exist": True}, {}
    if isinstance(error, BackPressureError):
        # Nothing was sent: the caller may come back when a turn is likely.
        retry_after = math.ceil(error.retry_after)
        body = {"detail": str(error), "retry_after": retry_after}
        return 503, body, {"Retry-After": str(retry_after)}
    if isinstance(error, NotFoundError):
        return 404, {"detail": str(error), "reason": error.reason}, {}
    if isinstance(error, PermissionDeniedError):
        # The account may not use this API or feature (image-to-video, say): no retry helps.
        return 403, {"detail": str(error), "reason": error.reason}, {}
    if error.dooms_batch:
        # A bad key or no balance: this service is down until its operator acts.
        reason = getattr(error, "reason", "")
        detail = f"the video service is unavailable: Novita refused its account ({error})"
        return 503, {"detail": detail, "reason": reason}, {}
    if isinstance(error, RateLimitError):
        headers = {}
        if error.retry_after is not None:
            headers["Retry-After"] = str(math.ceil(error.retry_after))
        return 503, {"detail": str(error), "reason": error.reason}, headers
    if isinstance(error, ClientClosedError):
        return 503, {"detail": "the service is shutting down"}, {}
    if isinstance(error, APITimeoutError):
        return 504, {"detail": str(error)}, {}
    if isinstance(error, BadRequestError):
        # Novita refused this one request (ILLEGAL_PROMPT, a bad image, ...).
        return 400, {"detail": str(error), "reason": error.reason}, {}
    # No answer, a 5xx, an answer of the wrong shape: the upstream failed.
    return 502, {"detail": str(error), "reason": getattr(error, "reason", "")}, {}


def clip_state(task_id: str, result: TaskResult | None) -> dict[str, Any]:
    """What ``GET /clips/{id}`` answers: the last known state (``status`` None: unchecked)."""
    return {
        "task_id": task_id,
        "status": None if result is None else result.status.name,
        "final": result is not None and result.is_final,
        "progress": 0 if result is None else result.progress,
        "eta": None if result is None else result.eta,
        "video_url": None if result is None else result.video_url,
        "reason": "" if result is None else result.reason,
    }


# -- Following one clip, for the event stream ----------------------------------------------


class _EtaCountdown:
    """The server's eta, counted down since the answer that carried it was first seen.

    The poller checks a task when its eta says it should be nearly done, not every
    second, so between checks the eta is extrapolated here rather than polled for.
    """

    def __init__(self, client: Client) -> None:
        self._clock = client.clock
        self._seen: TaskResult | None = None
        self._since = 0.0

    def __call__(self, result: TaskResult | None) -> float | None:
        if result is None or result.eta is None:
            return None
        if result is not self._seen:  # a new check: the eta is fresh
            self._seen, self._since = result, self._clock.now()
        return round(max(0.0, result.eta - (self._clock.now() - self._since)), 1)


async def _hold(client: Client, task_id: str) -> None:
    # Keeps a listener on the task's watch for the whole stream (see follow_clip).
    with suppress(NovitaError):  # the progress loop sees the same error and reports it
        await client.wait(task_id, timeout=None)


async def follow_clip(
    client: Client, task_id: str, *, every: float, at_most: float, emit: Emit
) -> None:
    """Emit ``progress`` every ``every`` seconds, then one ``final``, ``timeout`` or ``error``.

    Why ``wait`` and not ``get_result`` every ``every`` seconds: ``get_result`` is one
    request each time, so a hundred open streams would send a hundred polls a second
    and eat the client's shared poll rate, slowing every other clip. Instead:

    * a *hold* (``wait(task_id, timeout=None)``, in a task) keeps the task in the
      client's single poller for as long as the stream is open, so the poller checks it
      on its usual schedule (driven by the server's eta) and the stream adds no polls;
    * the loop calls ``wait(task_id, timeout=every)``: it returns the final result the
      moment the poller sees it, or raises :class:`~novita_video.TaskTimeoutError`,
      whose ``last_result`` is the last answer the poller got; listeners of one task
      share its watch, so this short wait costs no request either.

    Progress therefore changes as often as the poller looks (rarely, by design), and
    the ``eta`` in between is counted down locally. Never raises :class:`NovitaError`:
    an error becomes an ``error`` event (its data is ``error_answer``'s body plus
    ``status``). The stream ends with ``timeout`` after ``at_most`` seconds; ``at_most`` and
    ``every`` are seconds of the client's clock.
    """
    clock = client.clock
    deadline = clock.now() + at_most
    countdown = _EtaCountdown(client)
    last: TaskResult | None = None
    # The task group lives in this coroutine, which the caller awaits to the end; never
    # in an async generator, which a server may abandon at any `yield`.
    async with anyio.create_task_group() as holder:
        holder.start_soon(_hold, client, task_id)
        try:
            while True:
                left = deadline - clock.now()
                if left <= 0:
                    await emit("timeout", clip_state(task_id, last))
                    return
                try:
                    result = await client.wait(task_id, timeout=min(every, left))
                except TaskTimeoutError as pending:
                    last = pending.last_result
                    await emit("progress", clip_state(task_id, last) | {"eta": countdown(last)})
                except NovitaError as error:
                    status, body, _ = error_answer(error)
                    await emit("error", {"status": status, **body})
                    return
                else:
                    await emit("final", clip_state(task_id, result))
                    return
        finally:
            holder.cancel_scope.cancel()


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event: its name and a one-line JSON payload."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


#: Headers of an event stream: proxies must pass each event on at once.
STREAM_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def stream_clip(
    state: AppState,
    task_id: str,
    *,
    every: float,
    at_most: float,
    start: Callable[[], Awaitable[None]],
    write: Callable[[bytes], Awaitable[None]],
    refuse: Callable[[int, dict[str, Any]], Awaitable[None]],
) -> bool:
    """Follow one clip as server-sent events (see :func:`follow_clip`); whether the
    stream started. The framework sends: ``start`` the status line and headers (before
    the first event), ``write`` each event, ``refuse`` a plain HTTP error instead, when
    the very first event is one (an unknown task id is a 404, not a stream). A caller
    that hung up (``OSError``) ends the stream, and the clip is no longer followed."""
    started = False
    with anyio.CancelScope() as stream:

        async def emit(event: str, data: dict[str, Any]) -> None:
            nonlocal started
            if not started and event == "error":
                status = data.pop("status")
                await refuse(status, data)
                stream.cancel()
                return
            try:
                if not started:
                    await start()
                    started = True
                await write(sse_event(event, data))
            except OSError:
                stream.cancel()

        state.streams += 1
        try:
            await follow_clip(state.client, task_id, every=every, at_most=at_most, emit=emit)
        finally:
            state.streams -= 1
    return started


async def submit_clip(state: AppState, fields: dict[str, Any]) -> dict[str, str]:
    """Submit one clip (the fields of ``POST /clips``); the answer: its task id and where
    to follow it. The SDK checks every value, naming the field, before anything is sent.

    Back-pressure: the submit waits for its turn under the rate limit (shared by every
    request, and every worker with Redis) at most ``state.max_submit_wait`` seconds; a
    turn further off raises :class:`BackPressureError` at once, nothing sent, which
    ``error_answer`` turns into 503 with ``Retry-After``. Once the POST has left, it
    waits for Novita's answer however long it takes: a 503 then could make the caller
    retry a task that exists, and pay twice."""
    try:
        task_id = await state.client.submit(
            fields["prompt"],
            image_url=fields.get("image_url"),
            enable_prompt_expansion=fields.get("enable_prompt_expansion", True),
            max_wait=state.max_submit_wait,
        )
    except SubmissionUnknownError:
        # The one error an operator must reconcile by hand: log what was asked for.
        logger.warning("submit outcome unknown, not retried: %r", str(fields["prompt"])[:80])
        raise
    status_url = f"/clips/{task_id}"
    return {"task_id": task_id, "status_url": status_url, "events_url": f"{status_url}/events"}


async def wait_for_clip(state: AppState, task_id: str, seconds: float) -> dict[str, Any]:
    """The clip's state once it is final, or after ``seconds`` (``final`` false: ask
    again). The wait goes through the client's one poller, however many wait."""
    state.waiting += 1
    try:
        result = await state.client.wait(task_id, timeout=seconds)
    except TaskTimeoutError as pending:
        return clip_state(task_id, pending.last_result)
    finally:
        state.waiting -= 1
    return clip_state(task_id, result)
