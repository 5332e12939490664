"""`FakeNovita`: a real HTTP server that behaves like Novita's video API.

Every request goes through one pipeline, :meth:`FakeNovita._dispatch`:

1. route it to an endpoint (``submit``, ``task_result``, ``video``, ``catalog``,
   ``balance``, ``other``) and count it;
2. draw its chaos :class:`Fault` (none unless a :class:`Chaos` knob is on); a fault that
   comes *before* the API (a dropped connection, a 503, a 429 storm) answers here;
3. for API endpoints, *admit* it: revoked key, then bearer auth, then the rate limit;
4. run the endpoint (validate, draw or look up the task, answer);
5. a fault that comes *after* spoils the endpoint's 200 (drop, 502, broken JSON, delay,
   cut download); for a submit the task exists by then, and is recorded as unanswered.

Any step may raise :class:`ApiError`, which becomes Novita's JSON error body.
Faults that live in a task's answers (stuck tasks, unknown statuses, expired
links) are drawn by the endpoints themselves, from the same :class:`Saboteur`.

Task state is computed from the clock on each poll (see ``_tasks``), so tasks run
no code. The one background task is the webhook dispatcher (``_webhooks``), started
with the server and stopped, with its HTTP session, when the server closes.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Self

import attrs
from aiohttp import web

from .._clock import Clock, SystemClock
from ._account import Account
from ._chaos import Chaos, Fault, Saboteur
from ._config import SimulatorConfig
from ._endpoints import ENDPOINTS
from ._ratelimit import RateLimit, SlidingWindowLog
from ._stats import Counters, SimulatorStats
from ._storage import STORAGE_PREFIX, LinkCheck, Presigner, clip_bytes, s3_error_body
from ._tasks import (
    FINAL_STATUSES,
    QUEUED,
    SUCCEED,
    SubmitRequest,
    TaskRecord,
    TaskState,
    draw_task,
)
from ._unified import catalog_body, models_of, parse_unified
from ._webhooks import WebhookDispatcher
from ._wire import (
    ApiError,
    error_body,
    event_body,
    parse_submit,
    proxy_page,
    server_error,
    task_result_body,
)

__all__ = ["FakeNovita"]

ASYNC_PREFIX: Final = "/v3/async/"
#: The default model's submit path; every key of ``ENDPOINTS`` has one like it.
SUBMIT_PATH: Final = ASYNC_PREFIX + "minimax-video-01"
RESULT_PATH: Final = ASYNC_PREFIX + "task-result"
#: Every catalogue model's submit, its catalogue, and the account's balance.
UNIFIED_PATH: Final = "/v3/video/create"
CATALOG_PATH: Final = "/v3/admin/video-unify-api/config"
BALANCE_PATH: Final = "/openapi/v1/billing/balance/detail"
STATS_PATH: Final = "/_simulator/stats"
CHAOS_PATH: Final = "/_simulator/chaos"
_API_ENDPOINTS: Final = frozenset({"submit", "task_result", "balance"})

# Bigger than aiohttp's 128 so a benchmark opening hundreds of connections at
# once is not refused by the kernel before the simulator sees it.
_BACKLOG: Final = 1024
# A request still in flight at close gets this long; idle keep-alive sockets close at once.
_SHUTDOWN_TIMEOUT: Final = 2.0

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeNovita:
    """A local simulator of Novita's async video API, on a real socket.

    >>> async with FakeNovita(task_duration=(0.5, 1.0)) as fake:   # doctest: +SKIP
    ...     print(fake.url, fake.api_key)
    http://127.0.0.1:54321 sk-simulated

    It serves the submit endpoints ``POST /v3/async/minimax-video-01``,
    ``minimax-hailuo-02``, ``kling-v1.6-i2v`` and ``wan-t2v`` (each validates its own
    fields, see ``_endpoints``; the task records which one made it, and task-result
    answers carry its ``task_type``), ``GET /v3/async/task-result``,
    presigned video links under ``/storage/``, and its own statistics at
    ``POST /v3/video/create`` for every model of its catalogue (``GET
    /v3/admin/video-unify-api/config``, served without auth as Novita's docs page fetches
    it; each body checked against its model's JSON Schema, see ``_unified``), the
    account's balance at ``GET /openapi/v1/billing/balance/detail`` (see ``_account``),
    and its own statistics at
    ``GET /_simulator/stats`` (no auth, not rate limited, not counted;
    ``?tasks=0`` leaves out the per-task records). ``GET /_simulator/chaos`` shows
    the chaos in force and ``PUT`` changes some of its knobs (a JSON object of them),
    for a simulator running in another process.

    Knobs (all keyword-only):

    * ``api_key``: the only accepted bearer key.
    * ``host``, ``port``: where to listen; port 0 picks a free one.
    * ``task_duration=(lo, hi)``: each task takes U(lo, hi) seconds of simulator time.
    * ``queue_fraction``: share of that time spent QUEUED (progress 0) before PROCESSING.
    * ``eta_error``: 0.0 gives exact etas (ceil of the seconds left); ``e`` multiplies the
      time left by a per-task factor from U(1-e, 1+e); ``None`` answers eta 0 throughout.
    * ``report_progress``: False keeps ``progress_percent`` at 0 until the task ends.
    * ``queue_time=(lo, hi)``: each task is QUEUED U(lo, hi) seconds, then runs for its
      ``task_duration`` (instead of ``queue_fraction`` of it).
    * ``eta_rounding``: ``"ceil"`` (default; never 0 before the end), ``"round"`` or
      ``"floor"`` (0 up to a second before the end), as a real server's whole seconds;
      ``"none"`` sends fractions (tenths of a second, and of a percent of progress).
    * ``eta_bias=(lo, hi)``: the server believes each task runs ``b`` times its real
      running time, ``b`` from U(lo, hi): its eta runs out early (0 while the task is
      still PROCESSING) or late (the task ends while the eta counts down).
    * ``progress_curve``: ``"linear"`` (default), ``"slow-start"`` (quadratic) or
      ``"stall"`` (95 % at 70 % of the running time, then a crawl to the end).
    * ``failure_rate``: probability that a task ends FAILED (reason "content moderation failed").
    * ``submit_limit``, ``result_limit``: a :class:`RateLimit` per endpoint, or None; over it
      the answer is 429 ``RATE_LIMIT_EXCEEDED``, with ``Retry-After`` if ``retry_after``.
      Like Novita's limits, ``submit_limit`` applies to each model's submit endpoint
      separately: 20 a minute is 20 Minimax and 20 Kling submits.
    * ``video_ttl``: seconds a video link stays valid after the answer that carried it.
    * ``clock``: simulator time (default :class:`SystemClock`); share a ``ScaledClock``
      with the client to play minutes-long tasks in seconds.
    * ``seed``: replay the same task ids, durations and failures.
    * ``illegal_marker``: a prompt containing it is refused with 400 ``ILLEGAL_PROMPT``.
    * ``balance``: after this many accepted tasks, submits get 400 ``BILLING_BALANCE_NOT_ENOUGH``.
    * ``starting_balance``: the account's dollars at start (``None``: bottomless); each
      accepted task costs its model's price (``prices``, dollars by model name, over the
      made-up ``PRICES`` of ``_account``), and a submit the available balance cannot pay
      for gets 400 ``BILLING_BALANCE_NOT_ENOUGH``. ``charge_at`` says when a task is
      charged: ``"submit"`` (default), ``"end"`` (nothing shows until it ends) or
      ``"end-pending"`` (held in ``pendingCharges`` until it ends).
    * ``catalog``: catalogue entries to serve instead of the simulator's own (a test's
      odd ones); the unified endpoint takes the models among them that have a schema.
    * ``bare_key``: what an ``Authorization`` header with the key but without ``Bearer ``
      gets (Novita's JS SDK sends that; the real API's answer is unconfirmed):
      ``"refuse"`` (default) answers 401 ``INVALID_API_KEY`` saying so, ``"accept"``
      takes it.
    * ``webhook_timeout``: a submit with ``"extra": {"webhook": {"url": ...}}`` (any endpoint;
      loopback URLs only, others are refused with 400) gets its task's result POSTed there
      when the task ends, as ``{"event_type": "ASYNC_TASK_RESULT", "payload": <task-result
      body>}``. A try that gets no 2xx within ``webhook_timeout`` simulator seconds (default
      5, as Novita) is retried, up to 5 times, after 1, 2, 4, 8, 16 simulator seconds.
      Deliveries wait on ``clock.sleep``, so give a clock whose sleep really waits
      (:class:`SystemClock`, ``ScaledClock``) when a test uses webhooks. ``Chaos`` knobs
      ``webhook_loss`` and ``webhook_duplicates`` lose or double events; the stats count
      each task's event (``SimulatorStats.webhooks``). With ``extra.webhook.test_mode``
      ``{"enabled": true, "return_task_status": ...}`` a mock event with that status (and
      no clip) goes at once instead of the task's real one.
    * ``chaos``: how the simulator misbehaves (:class:`Chaos`; off by default). Unlike the
      knobs above (fixed, in :attr:`config`) it may change at run time: :attr:`chaos`,
      :meth:`set_chaos`.
    """

    def __init__(
        self,
        *,
        api_key: str = "sk-simulated",
        host: str = "127.0.0.1",
        port: int = 0,
        task_duration: tuple[float, float] = (2.0, 6.0),
        queue_fraction: float = 0.1,
        eta_error: float | None = 0.0,
        report_progress: bool = True,
        queue_time: tuple[float, float] | None = None,
        eta_rounding: str = "ceil",
        eta_bias: tuple[float, float] | None = None,
        progress_curve: str = "linear",
        failure_rate: float = 0.0,
        submit_limit: RateLimit | None = None,
        result_limit: RateLimit | None = None,
        retry_after: bool = True,
        video_ttl: int = 3600,
        clock: Clock | None = None,
        seed: int | None = None,
        illegal_marker: str = "[illegal]",
        balance: int | None = None,
        webhook_timeout: float = 5.0,
        bare_key: str = "refuse",
        starting_balance: Decimal | int | str | None = None,
        charge_at: str = "submit",
        prices: Mapping[str, Decimal | int | str] | None = None,
        catalog: Sequence[Any] | None = None,
        chaos: Chaos | None = None,
    ) -> None:
        self.config: Final = SimulatorConfig(
            api_key=api_key,
            host=host,
            port=port,
            task_duration=task_duration,
            queue_fraction=queue_fraction,
            eta_error=eta_error,
            report_progress=report_progress,
            queue_time=queue_time,
            eta_rounding=eta_rounding,
            eta_bias=eta_bias,
            progress_curve=progress_curve,
            failure_rate=failure_rate,
            submit_limit=submit_limit,
            result_limit=result_limit,
            retry_after=retry_after,
            video_ttl=video_ttl,
            seed=seed,
            illegal_marker=illegal_marker,
            balance=balance,
            webhook_timeout=webhook_timeout,
            bare_key=bare_key,
            starting_balance=starting_balance,
            charge_at=charge_at,
            prices=prices,
            catalog=catalog,
        )
        if clock is not None and not isinstance(clock, Clock):
            raise ValueError(f"clock must implement now(), wall() and sleep(), not {clock!r}")
        #: Simulator time: task lives, rate-limit windows and link expiry all read it.
        self.clock: Final[Clock] = SystemClock() if clock is None else clock
        if chaos is not None and not isinstance(chaos, Chaos):
            raise ValueError(f"chaos must be a Chaos or None, not {chaos!r}")
        self._rng = random.Random(seed)
        self._saboteur = Saboteur(Chaos() if chaos is None else chaos, seed)
        self._presigner = Presigner()
        self._counters = Counters()
        config = self.config
        self._account = Account(
            config.starting_balance, charge_at=config.charge_at, prices=dict(config.prices)
        )
        self._unified = models_of(config.catalog)
        # One per model's submit endpoint (made on first use) and one for task-result.
        self._limiters: dict[str, SlidingWindowLog] = {}
        if result_limit is not None:
            self._limiters["task_result"] = SlidingWindowLog(result_limit)
        self._webhooks = WebhookDispatcher(
            clock=self.clock,
            timeout=webhook_timeout,
            counters=self._counters,
            payload=self._webhook_payload,
        )
        # Tasks that have handed out a video link: the first link is the one chaos may spoil.
        self._linked: set[str] = set()
        self._check_revoke_after()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._closed = False

    # -- lifetime ---------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket and start answering; :attr:`url` is known from then on."""
        if self._runner is not None or self._closed:
            raise RuntimeError("a FakeNovita starts once; make a new one to serve again")
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        # handler_cancellation: a client that hangs up on a slow answer cancels it, so the
        # simulator knows that answer was never delivered (and holds no sleeping handler).
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            handler_cancellation=True,
        )
        await runner.setup()
        self._runner = runner
        try:
            await self._webhooks.start()
            site = web.TCPSite(runner, self.config.host, self.config.port, backlog=_BACKLOG)
            await site.start()
            self._url = _base_url(runner.addresses[0])
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop delivering webhooks, stop listening, close every connection (safe twice).

        Webhook events not yet delivered are dropped: the simulator's tasks end with it.
        """
        self._closed = True
        runner, self._runner = self._runner, None
        try:
            await self._webhooks.close()
        finally:
            if runner is not None:
                await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _answer_in_memory(self, url: str) -> None:
        # MemoryTransport calls _dispatch itself; links then point at `url`.
        if self._closed:
            raise RuntimeError("this FakeNovita is closed; make a new one")
        if self._url is None:
            self._url = url

    # -- what tests read --------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give a client, like ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("FakeNovita is not started: use `async with` or await start()")
        return self._url

    @property
    def api_key(self) -> str:
        """The key the simulator accepts."""
        return self.config.api_key

    @property
    def stats(self) -> SimulatorStats:
        """A snapshot of the counters so far (take another to see later requests)."""
        return self._counters.snapshot()

    def task(self, task_id: str) -> TaskRecord:
        """The record of one accepted task; :class:`KeyError` if there is none."""
        try:
            return self._counters.tasks[task_id]
        except KeyError:
            raise KeyError(f"no task {task_id!r} was submitted to this simulator") from None

    def revoke_key(self) -> None:
        """From now on, answer every API request with 403 ``INVALID_API_KEY``."""
        self._counters.key_revoked = True

    @property
    def chaos(self) -> Chaos:
        """The :class:`Chaos` in force; assign a new one to change it at run time.

        ``fake.chaos = Chaos()`` turns every fault off from the next request on (a
        storm in progress stops too). Tasks already drawn stuck stay stuck, and a
        revoked key stays revoked.
        """
        return self._saboteur.chaos

    @chaos.setter
    def chaos(self, chaos: Chaos) -> None:
        if not isinstance(chaos, Chaos):
            raise ValueError(f"chaos must be a Chaos, not {chaos!r}")
        self._saboteur.chaos = chaos
        self._check_revoke_after()

    def set_chaos(self, chaos: Chaos | None = None, /, **changes: Any) -> Chaos:
        """Replace the chaos, or change some of its knobs; returns the chaos now in force.

        >>> fake.set_chaos(submit_server_errors=0.0)   # doctest: +SKIP
        """
        base = self.chaos if chaos is None else chaos
        known = attrs.fields_dict(Chaos)
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown chaos knobs {unknown}; known: {sorted(known)}")
        self.chaos = attrs.evolve(base, **changes)
        return self.chaos

    def __repr__(self) -> str:
        where = self._url or "not started"
        return f"<FakeNovita {where} tasks={len(self._counters.tasks)}>"

    # -- the pipeline -----------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if path == STATS_PATH and method == "GET":
            # The simulator's own window: not part of the API, so not counted.
            return self._serve_stats(request)
        if path == CHAOS_PATH and method in ("GET", "PUT"):
            return await self._serve_chaos(request)
        endpoint: str
        handler: _Handler
        if method == "POST" and path.removeprefix(ASYNC_PREFIX) in ENDPOINTS:
            endpoint, handler = "submit", self._submit
        elif method == "POST" and path == UNIFIED_PATH:
            endpoint, handler = "submit", self._submit_unified
        elif method == "GET" and path == CATALOG_PATH:
            endpoint, handler = "catalog", self._catalog
        elif method == "GET" and path == BALANCE_PATH:
            endpoint, handler = "balance", self._balance
        elif path == RESULT_PATH and method == "GET":
            endpoint, handler = "task_result", self._task_result
        elif path.startswith(STORAGE_PREFIX) and method in ("GET", "HEAD"):
            endpoint, handler = "video", self._video
        else:
            endpoint, handler = "other", self._not_found
        self._counters.requests[endpoint] += 1
        fault: Fault | None = None
        # After revocation every API answer is a clean 403: no fault hides it.
        if not (self._counters.key_revoked and endpoint in _API_ENDPOINTS):
            fault = self._saboteur.request_fault(endpoint)
        if fault is not None and fault.before:
            return self._fault_before(request, endpoint, fault)
        try:
            response = await handler(request)
        except ApiError as err:
            return self._error(err)
        if fault is not None and response.status == 200:
            # A handler's own error (auth, 429, bad body) goes out unspoilt.
            return await self._fault_after(request, endpoint, fault, response)
        return response

    def _error(self, err: ApiError) -> web.Response:
        self._counters.errors[err.reason] += 1
        return web.Response(
            status=err.status,
            body=error_body(err.status, err.reason, err.message),
            content_type="application/json",
            headers=err.headers,
        )

    # -- chaos ------------------------------------------------------------------------

    def _fault_before(self, request: web.Request, endpoint: str, fault: Fault) -> web.Response:
        """Answer in the API's place: nothing reached it, so no task was created."""
        self._counters.fired(fault.kind, endpoint)
        if fault.kind == "drop_before":
            return _drop(request)
        if fault.status == 429:
            self._counters.rate_limited[endpoint] += 1
            headers = None
            if fault.retry_after is not None:
                headers = {"Retry-After": str(fault.retry_after)}
            return self._error(
                ApiError(429, "RATE_LIMIT_EXCEEDED", "rate limit exceeded, retry later", headers)
            )
        return self._server_error(endpoint, fault)

    async def _fault_after(
        self, request: web.Request, endpoint: str, fault: Fault, response: web.StreamResponse
    ) -> web.StreamResponse:
        """Spoil a 200 the endpoint produced; a submit's task exists already."""
        if fault.kind == "truncated_download":
            if request.method != "GET":  # a HEAD has no body to cut
                return response
            self._counters.fired(fault.kind, endpoint)
            return await self._cut_download(request, _body_of(response))
        self._counters.fired(fault.kind, endpoint)
        task_id = None
        if endpoint == "submit":
            task_id = json.loads(_body_of(response))["task_id"]
            self._counters.unanswered[task_id] = fault.kind
        if fault.kind == "drop_after":
            return _drop(request)
        if fault.kind == "malformed":
            # Still a 200 that says it is JSON: only the parser finds out.
            spoilt = self._saboteur.spoil_json(_body_of(response))
            return web.Response(body=spoilt, content_type="application/json")
        if fault.kind == "slow":
            # Cancelled here if the client hangs up first: the task stays unanswered.
            await self.clock.sleep(self._saboteur.chaos.slow_seconds)
            if task_id is not None:
                del self._counters.unanswered[task_id]
            return response
        return self._server_error(endpoint, fault)

    def _server_error(self, endpoint: str, fault: Fault) -> web.Response:
        err = server_error(fault.status, endpoint)
        if not fault.html:
            return self._error(err)
        self._counters.errors[err.reason] += 1
        self._counters.fired("html_page", endpoint)
        return web.Response(
            status=fault.status, text=proxy_page(fault.status), content_type="text/html"
        )

    async def _cut_download(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Promise the whole clip in Content-Length, send part of it, hang up."""
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: self._saboteur.cut(len(body))])
        _drop(request)
        return response

    def _check_revoke_after(self) -> None:
        limit = self._saboteur.chaos.revoke_key_after
        counters = self._counters
        if limit is not None and not counters.key_revoked and len(counters.tasks) >= limit:
            counters.key_revoked = True
            counters.fired("key_revoked", "submit")

    def _admit(self, request: web.Request, endpoint: str, model: str | None = None) -> None:
        """Auth first, then the rate limit (``model``'s own, for a submit): a rejected key
        does not use up the quota."""
        if self._counters.key_revoked:
            raise ApiError(403, "INVALID_API_KEY", "the API key has been revoked")
        header = request.headers.get("Authorization", "").strip()
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if not header or (scheme.lower() == "bearer" and not key):
            raise ApiError(
                400, "MISSING_API_KEY", "missing API key: send Authorization: Bearer <key>"
            )
        expected = self.config.api_key.encode()
        if not key and hmac.compare_digest(scheme.encode(), expected):
            # The key without "Bearer " (as Novita's JS SDK sends it): a knob, since the
            # real API's answer is unconfirmed; refused with words that say what to send.
            if self.config.bare_key == "accept":
                key, scheme = scheme, "Bearer"
            else:
                raise ApiError(
                    401,
                    "INVALID_API_KEY",
                    "the key came without its scheme: send Authorization: Bearer <key>",
                )
        # The key sent is never echoed back: it may be a real one sent here by mistake.
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.encode(), expected):
            raise ApiError(403, "INVALID_API_KEY", "invalid API key")
        if endpoint != "submit" or model is not None:
            self._admit_rate(model, endpoint)

    def _admit_rate(self, model: str | None, endpoint: str = "submit") -> None:
        """The rate limit of ``endpoint`` (``model``'s own, for a submit)."""
        limiter = self._limiter(endpoint, model)
        if limiter is None:
            return
        wait = limiter.acquire(self.clock.now())
        if wait is None:
            return
        self._counters.rate_limited[endpoint] += 1
        headers = {"Retry-After": str(max(1, math.ceil(wait)))} if self.config.retry_after else None
        limit = limiter.limit
        which = f" for {model}" if model is not None else ""
        raise ApiError(
            429,
            "RATE_LIMIT_EXCEEDED",
            f"rate limit exceeded{which}: at most {limit.requests} requests per {limit.per:g} s",
            headers,
        )

    def _limiter(self, endpoint: str, model: str | None) -> SlidingWindowLog | None:
        if model is None:
            return self._limiters.get(endpoint)
        limit = self.config.submit_limit
        if limit is None:
            return None
        key = f"submit:{model}"
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = SlidingWindowLog(limit)
        return limiter

    # -- endpoints --------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        model = request.path.removeprefix(ASYNC_PREFIX)
        self._admit(request, "submit", model)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "INVALID_REQUEST_BODY", "request body is too large") from None
        return self._create(parse_submit(raw, model))

    async def _submit_unified(self, request: web.Request) -> web.StreamResponse:
        # The model is in the body: the key is checked first, then that model's limit.
        self._admit(request, "submit")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "INVALID_REQUEST_BODY", "request body is too large") from None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ApiError.invalid_body("request body is not valid JSON") from None
        job = parse_unified(body, self._unified)
        self._admit_rate(job.endpoint)
        return self._create(job)

    def _create(self, job: SubmitRequest) -> web.StreamResponse:
        """Accept a validated submit: refuse it, or draw its task and answer its id."""
        config = self.config
        if config.illegal_marker in job.prompt:
            raise ApiError(400, "ILLEGAL_PROMPT", "the prompt breaks the content policy")
        tasks = self._counters.tasks
        if (config.balance is not None and len(tasks) >= config.balance) or (
            not self._account.can_pay(job.endpoint, tasks, self.clock.now())
        ):
            raise ApiError(400, "BILLING_BALANCE_NOT_ENOUGH", "insufficient balance")
        task = draw_task(
            self._rng,
            job,
            now=self.clock.now(),
            wall=self.clock.wall(),
            task_duration=config.task_duration,
            queue_fraction=config.queue_fraction,
            failure_rate=config.failure_rate,
            eta_error=config.eta_error,
            queue_time=config.queue_time,
            eta_bias=config.eta_bias,
        )
        self._counters.add_task(task)
        self._account.charge(task)
        plan = self._saboteur.stuck_plan()
        if plan is not None:
            self._counters.stuck[task.task_id] = plan
            self._counters.fired("stuck_task", "submit")
        if job.webhook_url is not None:
            lost, duplicated = self._saboteur.webhook_fate()
            due = None if plan is not None else task.finishes_at
            if job.webhook_test_status is not None:
                due = self.clock.now()  # test mode: a mock event, at once
            self._webhooks.schedule(
                task.task_id,
                job.webhook_url,
                # A stuck task never ends, so its event never comes.
                due=due,
                lost=lost,
                duplicated=duplicated,
            )
        self._check_revoke_after()
        return web.json_response({"task_id": task.task_id})

    def _webhook_payload(self, task_id: str) -> bytes:
        """The event for a task that has ended: its task-result body at completion."""
        task = self._counters.tasks[task_id]
        config = self.config
        state = task.state_at(task.finishes_at)
        test_status = task.request.webhook_test_status
        if test_status is not None:
            # Test mode: the status asked for, and no clip (the task itself runs on).
            reason = "test mode" if test_status != SUCCEED else ""
            mock = TaskState(test_status, 100, 0, reason)
            return event_body(task_result_body(task, mock, video_url=None, video_ttl=0))
        video_url = None
        if state.status == SUCCEED:
            # Signed now, like a poll's: valid video_ttl from the delivery.
            link = self._presigner.path_and_query(
                task_id, wall=self.clock.wall(), ttl=config.video_ttl
            )
            video_url = self.url + link
        body = task_result_body(task, state, video_url=video_url, video_ttl=config.video_ttl)
        return event_body(body)

    async def _task_result(self, request: web.Request) -> web.StreamResponse:
        self._admit(request, "task_result")
        task_id = request.query.get("task_id", "")
        if not task_id:
            raise ApiError.invalid_body("the task_id query parameter is required")
        task = self._counters.tasks.get(task_id)
        if task is None:
            raise ApiError(404, "TASK_NOT_FOUND", f"task {task_id!r} not found")
        config = self.config
        state = task.state_at(
            self.clock.now(),
            report_progress=config.report_progress,
            give_eta=config.eta_error is not None,
            eta_rounding=config.eta_rounding,
            progress_curve=config.progress_curve,
        )
        plan = self._counters.stuck.get(task_id)
        omit_eta = False
        if plan is not None:
            state = plan.hold(state, report_progress=config.report_progress)
            omit_eta = plan.omit_eta and state.status != QUEUED
        odd = None if state.status in FINAL_STATUSES else self._saboteur.odd_status()
        if odd is not None:
            state = attrs.evolve(state, status=odd)
            self._counters.fired("unknown_status", "task_result")
        self._counters.polls[task_id] += 1
        video_url = None
        if state.status == SUCCEED:
            wall = self.clock.wall()
            first = task_id not in self._linked
            self._linked.add(task_id)
            if first and self._saboteur.expire_link():
                link = self._presigner.expired_path_and_query(task_id, wall=wall)
                self._counters.fired("expired_link", "task_result")
            else:
                # A fresh link on every answer, valid video_ttl from now, as Novita does.
                link = self._presigner.path_and_query(task_id, wall=wall, ttl=config.video_ttl)
            video_url = self.url + link
        body = task_result_body(
            task,
            state,
            video_url=video_url,
            video_ttl=config.video_ttl,
            omit_eta=omit_eta,
            unknown_fields=odd is not None,
        )
        return web.Response(body=body, content_type="application/json")

    async def _video(self, request: web.Request) -> web.StreamResponse:
        # Storage needs no auth; a key arriving here is a leak the client must not make.
        if "Authorization" in request.headers:
            self._counters.video_requests_with_authorization += 1
        name = request.path[len(STORAGE_PREFIX) :]
        task_id = name.removesuffix(".mp4")
        expires = request.query.get("expires")
        signature = request.query.get("signature")
        if expires is None or signature is None:
            return self._storage_error(403, "AccessDenied", "Query-string authentication required")
        verdict = self._presigner.check(task_id, expires, signature, wall=self.clock.wall())
        if verdict is LinkCheck.BAD_SIGNATURE or not name.endswith(".mp4"):
            return self._storage_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
            )
        if verdict is LinkCheck.EXPIRED:
            return self._storage_error(403, "AccessDenied", "Request has expired")
        task = self._counters.tasks.get(task_id)
        if task is None or task.final_status != SUCCEED:
            # Only reachable with a link signed for a task that is not a success.
            return self._storage_error(404, "NoSuchKey", "The specified key does not exist.")
        return web.Response(body=clip_bytes(), content_type="video/mp4")

    async def _catalog(self, request: web.Request) -> web.StreamResponse:
        # Public, as the reference's own page fetches it without a key.
        return web.json_response(catalog_body(self.config.catalog))

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        self._admit(request, "balance")
        reading = self._account.reading(self._counters.tasks, self.clock.now())
        return web.json_response(reading)

    def spent(self) -> Decimal:
        """Dollars the account has been charged so far (and holds as pending)."""
        return self._account.spent(self._counters.tasks, self.clock.now())

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        raise ApiError(404, "API_NOT_FOUND", f"no API at {request.method} {request.path}")

    def _storage_error(self, status: int, code: str, message: str) -> web.StreamResponse:
        self._counters.errors[code] += 1
        return web.Response(
            status=status, text=s3_error_body(code, message), content_type="application/xml"
        )

    def _serve_stats(self, request: web.Request) -> web.StreamResponse:
        include_tasks = request.query.get("tasks", "1").lower() not in ("0", "false", "no")
        return web.json_response(self.stats.to_dict(include_tasks=include_tasks))

    async def _serve_chaos(self, request: web.Request) -> web.StreamResponse:
        # Like the stats: the simulator's own control, without auth, not counted.
        if request.method == "PUT":
            try:
                changes = json.loads(await request.read())
                if not isinstance(changes, dict):
                    raise ValueError("send a JSON object of chaos knobs")
                self.set_chaos(**changes)
            except ValueError as err:  # bad JSON, unknown knobs, bad values
                body = error_body(400, "INVALID_REQUEST_BODY", str(err))
                return web.Response(status=400, body=body, content_type="application/json")
        return web.json_response(self.chaos.to_dict())


def _body_of(response: web.StreamResponse) -> bytes:
    """The bytes of an answer the simulator built in memory (every 200 it spoils is one)."""
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes):
        raise TypeError(f"cannot spoil a streamed answer: {response!r}")
    return body


def _drop(request: web.Request) -> web.Response:
    """Close the connection at once: the client gets no answer at all.

    aiohttp writes the returned response into the closed transport, which is a no-op.
    """
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Never sent; 499 is nginx's "client closed request", the closest status to "none".
    return web.Response(status=499)


def _base_url(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """The URL clients should use for a bound socket address."""
    host, port = address[0], address[1]
    ip = ipaddress.ip_address(host)
    # A wildcard bind answers on loopback too, and loopback is what links must point at.
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{shown}:{port}"
