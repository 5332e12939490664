"""An aiohttp.web service that makes clips with novita_video: submit, wait, stream progress.

Run it against the local simulator (two shells, from the repository root)::

    python -m novita_video.testing --port 8001
    NOVITA_BASE_URL=http://127.0.0.1:8001 NOVITA_API_KEY=sk-simulated \\
        python -m examples.aiohttp_app            # listens on 127.0.0.1:8080 ($PORT)

The same endpoints as ``examples/fastapi_app.py``, with the same answers:

* ``POST /clips`` with ``{"prompt": ..., "image_url": ..., "enable_prompt_expansion": ...}``
  submits one clip and answers 202 with its ``task_id``.
* ``GET /clips/{task_id}?timeout=30`` waits up to ``timeout`` seconds (at most 300) for the
  clip and answers its state: ``status``, ``final``, ``video_url``, ``reason``.
* ``GET /clips/{task_id}/events?every=1&timeout=900`` streams the clip's progress as
  server-sent events: ``progress`` every ``every`` seconds, then one ``final`` (or
  ``timeout``, or ``error``) event, and the stream ends.
* ``GET /stats``: the client's :meth:`~novita_video.Client.statistics`, the requests
  waiting, and how late the event loop runs (a blocked loop shows there first).

The whole app shares one :class:`novita_video.Client`, opened in a ``cleanup_ctx``: one
connection pool, one submit rate limit, and one poller for every clip anyone waits for.
The part that knows no web framework (from ``LoopLag`` to ``sse_event``) is the same
text in both examples, so that each file stands alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any, Final

import anyio
import attrs
from aiohttp import web

from novita_video import (
    APITimeoutError,
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

__all__ = ["AppState", "LoopLag", "create_app", "error_answer", "follow_clip"]

logger = logging.getLogger(__name__)

#: The longest a ``GET /clips/{id}`` may hold its connection; past it, ask again.
MAX_WAIT: Final = 300.0
#: The longest an event stream may run; the SDK gives a task 1800 s by default.
MAX_STREAM: Final = 1800.0

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]


# -- What the app keeps for its lifetime ------------------------------------------------


def _cpu_wait() -> float:
    """Seconds this thread has spent waiting for a CPU, where the OS says (Linux); else 0."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:  # memory, not disk: instant
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class LoopLag:
    """How late the event loop wakes a sleeper, the first sign of blocking code.

    A task sleeps ``every`` seconds in a loop and records how much later than asked it
    woke up: a handler that blocks the loop (a synchronous call, heavy CPU work) delays
    every request, and shows here as lateness. So does a machine too busy to give the
    loop a CPU: the ``blocked_`` figures leave out the time the loop waited for one
    (known on Linux), to tell the app's fault from its neighbours'. ``slow_ticks`` count
    wake-ups at least ``slow`` late: counters, so a monitor (or a test) can tell what
    happened between two reads.
    """

    def __init__(self, every: float, slow: float = 0.05) -> None:
        self.every = every
        self.slow = slow
        self.ticks = 0
        self.max = self.blocked_max = 0.0
        self.slow_ticks = self.blocked_slow_ticks = 0
        # The latest wake-ups' blocked lateness, for a percentile: one wake-up the kernel
        # delayed on a busy machine is noise; a loop blocked again and again is not.
        self.recent: deque[float] = deque(maxlen=4096)

    async def run(self) -> None:
        """Measure until cancelled."""
        while True:
            # Real time, not the client's clock: this is about the loop, not the tasks.
            start, waited = time.perf_counter(), _cpu_wait()
            await anyio.sleep(self.every)
            late = max(0.0, time.perf_counter() - start - self.every)
            blocked = max(0.0, late - (_cpu_wait() - waited))
            self.ticks += 1
            self.max = max(self.max, late)
            self.blocked_max = max(self.blocked_max, blocked)
            self.recent.append(blocked)
            self.slow_ticks += late >= self.slow
            self.blocked_slow_ticks += blocked >= self.slow

    def as_json(self) -> dict[str, float | int]:
        """The worst lateness in milliseconds, and how many wake-ups were slow."""
        return {
            "ticks": self.ticks,
            "slow_ms": round(self.slow * 1000, 2),
            "max_ms": round(self.max * 1000, 2),
            "slow_ticks": self.slow_ticks,
            "blocked_max_ms": round(self.blocked_max * 1000, 2),
            "blocked_slow_ticks": self.blocked_slow_ticks,
            "blocked_p95_ms": round(self.blocked_p95() * 1000, 2),
        }

    def blocked_p95(self) -> float:
        """The 95th percentile of the latest wake-ups' blocked lateness (seconds)."""
        if len(self.recent) < 2:
            return max(self.recent, default=0.0)
        return statistics.quantiles(self.recent, n=100)[94]


@attrs.define
class AppState:
    """The app's one client and its gauges, made in the lifespan."""

    client: Client
    lag: LoopLag
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
        return {
            "client": client,
            "requests": {"waiting": self.waiting, "streams": self.streams},
            "loop_lag": self.lag.as_json(),
        }


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


# -- The app --------------------------------------------------------------------------------

STATE: Final = web.AppKey("novita", AppState)
_FIELDS: Final = frozenset({"prompt", "image_url", "enable_prompt_expansion"})


def _seconds(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    """A query parameter of seconds in ``[low, high]``; 422 (naming it) otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails too
        raise InvalidRequestError(f"{name}: must be seconds in [{low}, {high}], not {raw!r}", name)
    return value


async def submit_clip(request: web.Request) -> web.Response:
    """``POST /clips``: submit one clip; answers its task id at once (the clip takes minutes).

    Only the body's shape is checked here; the SDK checks every value (types, prompt
    length, URL shape) and names the field, before anything is sent.
    """
    client = request.app[STATE].client
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise InvalidRequestError("body: must be a JSON object", "body")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:  # a misspelt field is an error, not silently ignored
        raise InvalidRequestError(
            f"{unknown[0]}: unknown field; expected {sorted(_FIELDS)}", unknown[0]
        )
    if "prompt" not in body:
        raise InvalidRequestError("prompt: required", "prompt")
    try:
        task_id = await client.submit(
            body["prompt"],
            image_url=body.get("image_url"),
            enable_prompt_expansion=body.get("enable_prompt_expansion", True),
        )
    except SubmissionUnknownError:
        # The one error an operator must reconcile by hand: log what was asked for.
        logger.warning("submit outcome unknown, not retried: %r", str(body["prompt"])[:80])
        raise
    answer = {
        "task_id": task_id,
        "status_url": f"/clips/{task_id}",
        "events_url": f"/clips/{task_id}/events",
    }
    return web.json_response(answer, status=202, headers={"Location": f"/clips/{task_id}"})


async def get_clip(request: web.Request) -> web.Response:
    """``GET /clips/{task_id}?timeout=30``: wait up to ``timeout`` seconds, answer the state.

    ``final`` is false when the clip was not done in time: ask again. The wait goes
    through the client's one poller, however many requests wait at once.
    """
    state = request.app[STATE]
    task_id = request.match_info["task_id"]
    wait_for = _seconds(request, "timeout", 30.0, 0.001, MAX_WAIT)
    state.waiting += 1
    try:
        result = await state.client.wait(task_id, timeout=wait_for)
    except TaskTimeoutError as pending:
        return web.json_response(clip_state(task_id, pending.last_result))
    finally:
        state.waiting -= 1
    return web.json_response(clip_state(task_id, result))


async def clip_events(request: web.Request) -> web.StreamResponse:
    """``GET /clips/{task_id}/events``: the clip's progress as server-sent events.

    The status line waits for the first event, so an unknown task id is a plain 404.
    Browsers' ``EventSource`` reconnects when a stream ends: close it on ``final``.
    """
    state = request.app[STATE]
    task_id = request.match_info["task_id"]
    every = _seconds(request, "every", 1.0, 0.1, 60.0)
    at_most = _seconds(request, "timeout", 900.0, 0.001, MAX_STREAM)
    # no-cache and X-Accel-Buffering: proxies must pass each event on at once.
    response = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.content_type = "text/event-stream"
    refusal: web.Response | None = None
    with anyio.CancelScope() as stream:

        async def emit(event: str, data: dict[str, Any]) -> None:
            nonlocal refusal
            if not response.prepared and event == "error":
                # Nothing sent yet: answer with a plain HTTP error instead of a stream.
                status = data.pop("status")
                refusal = web.json_response(data, status=status)
                stream.cancel()
                return
            try:
                if not response.prepared:
                    await response.prepare(request)
                await response.write(sse_event(event, data))
            except OSError:
                stream.cancel()  # the caller hung up: stop following (and holding) the clip

        state.streams += 1
        try:
            await follow_clip(state.client, task_id, every=every, at_most=at_most, emit=emit)
        finally:
            state.streams -= 1
    if refusal is not None:
        return refusal
    if response.prepared:
        with suppress(OSError):
            await response.write_eof()
    return response


async def stats(request: web.Request) -> web.Response:
    """``GET /stats``: the client's statistics (one poller, however many waits), loop lag."""
    return web.json_response(request.app[STATE].as_json())


@web.middleware
async def novita_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer every :class:`NovitaError` a handler lets through as :func:`error_answer` says."""
    try:
        return await handler(request)
    except NovitaError as error:
        status, body, headers = error_answer(error)
        return web.json_response(body, status=status, headers=headers)


def create_app(
    make_client: Callable[[], Client] = Client, *, lag_probe_every: float = 0.1
) -> web.Application:
    """The app; ``make_client`` makes its one client (by default from ``NOVITA_API_KEY``
    and ``NOVITA_BASE_URL``: a missing key stops the server at startup, not at the first
    request). Pass your own to set limits, e.g. ``partial(Client, submit_rpm=60)``."""

    # aiohttp enters a cleanup_ctx at startup and resumes it at cleanup from the same task
    # (the one running the app), which is what lets the client's task group (and this one)
    # span its `yield`, unlike a generator driven by `async for`.
    async def novita_client(app: web.Application) -> AsyncIterator[None]:
        lag = LoopLag(lag_probe_every)
        async with make_client() as client, anyio.create_task_group() as probes:
            probes.start_soon(lag.run)
            app[STATE] = AppState(client, lag)
            yield
            probes.cancel_scope.cancel()

    app = web.Application(middlewares=[novita_errors])
    app.cleanup_ctx.append(novita_client)
    app.router.add_post("/clips", submit_clip)
    app.router.add_get("/clips/{task_id}", get_clip)
    app.router.add_get("/clips/{task_id}/events", clip_events)
    app.router.add_get("/stats", stats)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)  # aiohttp's access log, and our warnings
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
