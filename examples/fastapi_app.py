"""A FastAPI service that makes clips with novita_video: submit, wait, stream progress.

Run it against the local simulator (two shells, from the repository root)::

    python -m novita_video.testing --port 8001
    NOVITA_BASE_URL=http://127.0.0.1:8001 NOVITA_API_KEY=sk-simulated \\
        uvicorn examples.fastapi_app:app

Endpoints:

* ``POST /clips`` with ``{"prompt": ..., "image_url": ..., "enable_prompt_expansion": ...}``
  submits one clip and answers 202 with its ``task_id``.
* ``GET /clips/{task_id}?timeout=30`` waits up to ``timeout`` seconds (at most 300) for the
  clip and answers its state: ``status``, ``final``, ``video_url``, ``reason``.
* ``GET /clips/{task_id}/events?every=1&timeout=900`` streams the clip's progress as
  server-sent events: ``progress`` every ``every`` seconds, then one ``final`` (or
  ``timeout``, or ``error``) event, and the stream ends.
* ``GET /stats``: the client's :meth:`~novita_video.Client.statistics`, the requests
  waiting, and how late the event loop runs (a blocked loop shows there first).

The whole app shares one :class:`novita_video.Client`, opened in the lifespan: one
connection pool, one submit rate limit, and one poller for every clip anyone waits for.
A thousand waiting requests cost a thousand entries in the poller's heap, not a thousand
polling loops. The same app on aiohttp.web is ``examples/aiohttp_app.py``; the part that
knows no web framework (from ``LoopLag`` to ``sse_event``) is the same text in both, so
that each file stands alone.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any, Final

import anyio
import attrs
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.types import Receive, Scope, Send

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

__all__ = ["AppState", "LoopLag", "app", "create_app", "error_answer", "follow_clip"]

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


class ClipEvents(Response):
    """The ``text/event-stream`` of one clip (see :func:`follow_clip`).

    A plain ASGI response rather than a ``StreamingResponse`` over a generator, because
    :func:`follow_clip` runs a task group, which must not live in a generator. The
    status line waits for the first event, so an unknown task id is a plain 404.
    Browsers' ``EventSource`` reconnects when a stream ends: close it on ``final``.
    """

    media_type = "text/event-stream"

    def __init__(self, state: AppState, task_id: str, *, every: float, at_most: float) -> None:
        # Not Response.__init__: it would render an empty body with Content-Length: 0.
        self.status_code = 200
        self.background = None
        # no-cache and X-Accel-Buffering: proxies must pass each event on at once.
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._state = state
        self._task_id = task_id
        self._every = every
        self._at_most = at_most

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        with anyio.CancelScope() as stream:

            async def emit(event: str, data: dict[str, Any]) -> None:
                nonlocal started
                if not started and event == "error":
                    # Nothing sent yet: answer with a plain HTTP error instead of a stream.
                    status = data.pop("status")
                    await JSONResponse(data, status_code=status)(scope, receive, send)
                    stream.cancel()
                    return
                try:
                    if not started:
                        start = {"type": "http.response.start", "status": 200}
                        await send(start | {"headers": self.raw_headers})
                        started = True
                    chunk = sse_event(event, data)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except OSError:
                    stream.cancel()  # the caller hung up: stop following (and holding) the clip

            async def until_disconnect() -> None:
                # A server may drop what is sent to a gone client without a word (uvicorn
                # does), so the stream listens for the caller leaving, as Starlette does.
                while (await receive())["type"] != "http.disconnect":
                    pass
                stream.cancel()

            self._state.streams += 1
            try:
                async with anyio.create_task_group() as watcher:
                    watcher.start_soon(until_disconnect)
                    await follow_clip(
                        self._state.client,
                        self._task_id,
                        every=self._every,
                        at_most=self._at_most,
                        emit=emit,
                    )
                    watcher.cancel_scope.cancel()
            finally:
                self._state.streams -= 1
            if started:
                with suppress(OSError):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})


# -- The app --------------------------------------------------------------------------------


class ClipRequest(BaseModel):
    """The body of ``POST /clips``. Pydantic checks the types; the SDK checks the rules
    (prompt length, URL shape), so the two can never disagree about what Novita takes."""

    # strict: "yes" is not a bool; forbid: a misspelt field is an error, not ignored.
    model_config = ConfigDict(strict=True, extra="forbid")

    prompt: str
    image_url: str | None = None
    enable_prompt_expansion: bool = True


class Submitted(BaseModel):
    """The answer to ``POST /clips``."""

    task_id: str
    status_url: str
    events_url: str


class ClipState(BaseModel):
    """The answer to ``GET /clips/{task_id}``.

    ``status`` is QUEUED, PROCESSING, SUCCEED, FAILED or UNKNOWN (None: not checked yet);
    ``final`` says whether it can still change; ``reason`` says why a clip FAILED.
    """

    task_id: str
    status: str | None
    final: bool
    progress: int
    eta: float | None
    video_url: str | None
    reason: str


def app_state(request: Request) -> AppState:
    """The app's state, from the lifespan."""
    state: AppState = request.state.novita
    return state


State = Annotated[AppState, Depends(app_state)]
router = APIRouter()


@router.post("/clips", status_code=202, response_model=Submitted)
async def submit_clip(body: ClipRequest, state: State, response: Response) -> Submitted:
    """Submit one clip; answers its task id at once (the clip takes minutes)."""
    try:
        task_id = await state.client.submit(
            body.prompt,
            image_url=body.image_url,
            enable_prompt_expansion=body.enable_prompt_expansion,
        )
    except SubmissionUnknownError:
        # The one error an operator must reconcile by hand: log what was asked for.
        logger.warning("submit outcome unknown, not retried: %r", body.prompt[:80])
        raise
    response.headers["Location"] = f"/clips/{task_id}"
    return Submitted(
        task_id=task_id, status_url=f"/clips/{task_id}", events_url=f"/clips/{task_id}/events"
    )


@router.get("/clips/{task_id}", response_model=ClipState)
async def get_clip(
    task_id: str,
    state: State,
    # Named `timeout` in the URL; `wait_for` here, as async functions take no `timeout`
    # argument (ruff ASYNC109): this one is passed on to the SDK, never slept on.
    wait_for: Annotated[float, Query(alias="timeout", gt=0, le=MAX_WAIT)] = 30.0,
) -> dict[str, Any]:
    """Wait up to ``timeout`` seconds for the clip, then answer its state.

    ``final`` is false when the clip was not done in time: ask again. The wait goes
    through the client's one poller, however many requests wait at once.
    """
    state.waiting += 1
    try:
        result = await state.client.wait(task_id, timeout=wait_for)
    except TaskTimeoutError as pending:
        return clip_state(task_id, pending.last_result)
    finally:
        state.waiting -= 1
    return clip_state(task_id, result)


@router.get(
    "/clips/{task_id}/events",
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description": "progress events"}},
)
async def clip_events(
    task_id: str,
    state: State,
    every: Annotated[float, Query(ge=0.1, le=60)] = 1.0,
    at_most: Annotated[float, Query(alias="timeout", gt=0, le=MAX_STREAM)] = 900.0,
) -> Response:
    """Stream the clip's progress as server-sent events until it is final."""
    return ClipEvents(state, task_id, every=every, at_most=at_most)


@router.get("/stats")
async def stats(state: State) -> dict[str, Any]:
    """The client's statistics (one poller, however many waits), waits and loop lag."""
    return state.as_json()


async def _novita_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, NovitaError)
    status, body, headers = error_answer(error)
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(
    make_client: Callable[[], Client] = Client, *, lag_probe_every: float = 0.1
) -> FastAPI:
    """The app; ``make_client`` makes its one client (by default from ``NOVITA_API_KEY``
    and ``NOVITA_BASE_URL``: a missing key stops the server at startup, not at the first
    request). Pass your own to set limits, e.g. ``partial(Client, submit_rpm=60)``."""

    # The lifespan is entered and left by the same task, which is what lets the client's
    # task group (and this one) span its `yield`, unlike a generator driven by `async for`.
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        lag = LoopLag(lag_probe_every)
        async with make_client() as client, anyio.create_task_group() as probes:
            probes.start_soon(lag.run)
            yield {"novita": AppState(client, lag)}
            probes.cancel_scope.cancel()

    app = FastAPI(title="novita_video clips", lifespan=lifespan)
    app.include_router(router)
    app.add_exception_handler(NovitaError, _novita_error)
    return app


app = create_app()
