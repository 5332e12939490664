"""``Client``: the lifetime that owns the HTTP pools, the task group and the one poller.

``async with Client() as client:`` opens two connection pools (see ``_http``), starts a
task group and runs the poller in it; leaving the block cancels the poller and every
batch still running, finishes their waiters with :class:`ClientClosedError`, and closes
the pools. A client is opened once and cannot be reopened.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import warnings
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ._balance import BALANCE_PATH, Balance, SpendCap, parse_balance
from ._batch import Batch, PromptInput, _BatchRun
from ._clock import Clock, SystemClock
from ._download import download
from ._errors import (
    ClientClosedError,
    InvalidRequestError,
    MissingAPIKeyError,
    NovitaError,
    ProtocolError,
    UsageError,
)
from ._http import HTTPTransport, is_loopback
from ._limits import AdaptiveRate, Limiter, RateLimiter
from ._logs import remember_secret
from ._models import Outcome, TaskResult, TaskStatus
from ._observe import EventHooks, Observed, check_event_hooks
from ._poller import Poller
from ._requests import MODELS, Request, VideoRequest, check_http_url, to_request
from ._retrier import Retrier
from ._retry import RetryPolicy
from ._schedule import PollSchedule
from ._settings import (
    ADAPTIVE,
    DEFAULT_BATCH,
    DEFAULT_HTTP,
    DEFAULT_POLLING,
    DEFAULT_WEBHOOKS,
    BatchLimits,
    HTTPSettings,
    PollSettings,
    WebhookSettings,
    above,
    at_least,
)
from ._stats import Counters
from ._submit import Fate, Submitter
from ._transport import Transport
from ._unified import (
    ALIASES,
    CATALOG_PATH,
    CatalogCache,
    CatalogModel,
    CatalogRequest,
    known,
    parse_catalog,
    require_jsonschema,
)
from ._version import __version__
from ._wire import load_json, parse_task_result, parse_webhook, snippet

if TYPE_CHECKING:
    from ._shared import Coordinator  # only with the redis extra; imported when used

__all__ = ["Client", "ClientStatistics", "InsecureTransportWarning"]

logger = logging.getLogger("novita_video")

DEFAULT_BASE_URL = "https://api.novita.ai"
TASK_RESULT_PATH = "/v3/async/task-result"
#: Seconds the catalogue is kept before it is fetched again (:meth:`Client.models`).
CATALOG_MAX_AGE = 600.0


class InsecureTransportWarning(UserWarning):
    """The API key would travel over plain http to a host that is not this machine."""


@attrs.frozen
class ClientStatistics:
    """A snapshot of a client's work so far (:meth:`Client.statistics`).

    ``outstanding`` tasks are submitted and awaited but not final, of which ``queued``
    and ``processing`` were last seen so (the rest not checked yet); ``pollers`` is the
    number of polling coroutines (one while the client is open, however many waits and
    batches run); ``rate_limited`` counts 429 answers, ``retries`` repeated requests,
    ``unknown_submissions`` submits that may or may not have created a task, ``webhooks``
    the task-result events received (here, or by another worker through Redis);
    ``shared`` whether the rates are shared through Redis right now (``redis_url``).
    """

    outstanding: int
    queued: int
    processing: int
    submitted: int
    polls: int
    retries: int
    rate_limited: int
    unknown_submissions: int
    webhooks: int
    pollers: int
    submit_rpm: float | None
    poll_rpm: float | None
    shared: bool = False


def check_base_url(base_url: str, *, warn: bool = True) -> str:
    """The base URL without a trailing slash, or InvalidRequestError saying what is wrong;
    ``warn`` warns when the key would go over plain http to another machine."""
    try:
        parts = urlsplit(base_url)
    except ValueError as err:
        raise InvalidRequestError(f"base_url: not a valid URL ({err})", "base_url") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            f"base_url: must be an absolute http(s) URL such as {DEFAULT_BASE_URL!r}, "
            f"not {base_url!r}",
            "base_url",
        )
    if parts.query or parts.fragment:
        raise InvalidRequestError("base_url: must not have a query or fragment", "base_url")
    if warn and parts.scheme == "http" and not is_loopback(parts.hostname):
        warnings.warn(
            f"the API key would be sent over plain http to {parts.hostname}; use https",
            InsecureTransportWarning,
            stacklevel=3,
        )
    return base_url.rstrip("/")


class _State(enum.Enum):
    """Where a client is in its one lifetime."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Client(anyio.AsyncContextManagerMixin):
    """An async client for Novita's Minimax Video-01 API.

    >>> import novita_video
    >>> async def main() -> None:                                   # doctest: +SKIP
    ...     async with novita_video.Client() as client:             # key: NOVITA_API_KEY
    ...         task_id = await client.submit("A panda walks through bamboo")
    ...         result = await client.wait(task_id)
    ...         print(result.raise_for_status().video_url)
    ...         async for outcome in client.generate(["a cat", "a dog"]):
    ...             print(outcome.index, outcome.video_url or outcome.error)

    ``api_key`` and ``base_url`` win over ``NOVITA_API_KEY`` and ``NOVITA_BASE_URL``. The
    batch limits (``concurrency``, ``submit_rpm``, ``max_outstanding``, ``task_timeout``)
    are defaults for :meth:`generate`. ``poll_concurrency`` bounds the checks in flight;
    ``poll_rpm`` caps task-result requests a minute. By default (``"adaptive"``) polls go
    as fast as the schedule asks until the server answers 429, then at half the pace
    that drew it, slowed by more 429s and unlimited again after a minute without one;
    ``None`` means no limit at all (a 429 only pauses polling).

    Nothing waits without end: ``timeout`` bounds each read of a request and
    ``connect_timeout`` its connection, while ``deadline`` (default: the two added, 70 s)
    bounds a whole API request, however slowly its answer drips in. A submit whose
    request left is not cancelled before then (it may have created a task, whose id is
    worth waiting for); past it, the submit ends as unknown, never resent. An API answer
    may be at most ``max_response_bytes`` (1 MiB; they are a few KB), decoded; a clip
    download ``download_timeout`` seconds (600) and ``max_clip_bytes`` (1 GiB).

    ``retry_unsafe_submits=True``
    lets the client resend a submit that may already have created a task (it may then
    pay twice; off by default). ``clock`` and ``poll_schedule`` are for tests and tuning;
    so is ``transport``, which replaces the network (``novita_video.testing.MemoryTransport``
    answers from the simulator without a socket; ``api_key`` and ``base_url`` are then
    the transport's business).

    ``webhook_url`` asks Novita to POST each task's end there (``extra.webhook``); serve
    it with :mod:`novita_video.webhooks`, which hands events to :meth:`handle_webhook`.
    Polls then become the fallback for lost events, each ``webhook_fallback`` seconds
    later than usual. Events are unsigned, so by default one only triggers an immediate
    check of its task; ``trust_webhooks=True`` takes its payload as the answer.

    ``event_hooks={"request": [...], "response": [...]}`` (as httpx spells it) calls each
    hook, plain or async, with a frozen :class:`RequestEvent` as each request leaves and a
    :class:`ResponseEvent` as it ends (method, path, status, elapsed, attempt, task id;
    never the key, a header, or a clip link's query), for every request: submits,
    checks, downloads, through any transport. A hook that raises is logged and ignored;
    an async one is cancelled after 1 s (see the Observability guide). ``NOVITA_LOG=debug``
    or ``info`` in the environment logs the same requests, retries and 429s to stderr.

    ``redis_url`` (default: ``NOVITA_REDIS_URL``; needs ``pip install
    'novita-video[redis]'``) shares this key's limits with every other client that names
    the same Redis: each model's submit rate, the slow-down after a 429, the poll budget
    when ``poll_rpm`` is a number, and webhook events (see the Scaling out guide). If
    Redis fails, the client goes on alone at a share of each rate and rejoins later.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        concurrency: int = DEFAULT_BATCH.concurrency,
        submit_rpm: float | None = DEFAULT_BATCH.submit_rpm,
        max_outstanding: int = DEFAULT_BATCH.max_outstanding,
        task_timeout: float = DEFAULT_BATCH.task_timeout,
        poll_rpm: float | Literal["adaptive"] | None = DEFAULT_POLLING.poll_rpm,
        poll_concurrency: int = DEFAULT_POLLING.poll_concurrency,
        timeout: float = DEFAULT_HTTP.timeout,
        connect_timeout: float = DEFAULT_HTTP.connect_timeout,
        deadline: float | None = DEFAULT_HTTP.deadline,
        max_response_bytes: int = DEFAULT_HTTP.max_response_bytes,
        download_timeout: float = DEFAULT_HTTP.download_timeout,
        max_clip_bytes: int = DEFAULT_HTTP.max_clip_bytes,
        max_connections: int = DEFAULT_HTTP.max_connections,
        retry: RetryPolicy | None = None,
        retry_unsafe_submits: bool = False,
        adaptive_rate: AdaptiveRate | None = None,
        poll_schedule: PollSchedule | None = None,
        webhook_url: str | None = DEFAULT_WEBHOOKS.webhook_url,
        trust_webhooks: bool = DEFAULT_WEBHOOKS.trust_webhooks,
        webhook_fallback: float = DEFAULT_WEBHOOKS.webhook_fallback,
        clock: Clock | None = None,
        transport: Transport | None = None,
        redis_url: str | None = None,
        event_hooks: EventHooks | None = None,
    ) -> None:
        # Every setting is checked where it is defined (``_settings``), before anything else.
        self._limits = BatchLimits(concurrency, submit_rpm, max_outstanding, task_timeout)
        polling = PollSettings(poll_rpm, poll_concurrency)
        http = HTTPSettings(
            timeout=timeout,
            connect_timeout=connect_timeout,
            deadline=deadline,
            max_response_bytes=max_response_bytes,
            download_timeout=download_timeout,
            max_clip_bytes=max_clip_bytes,
            max_connections=max_connections,
        )
        webhooks = WebhookSettings(webhook_url, trust_webhooks, webhook_fallback)
        if webhook_url is not None:
            check_http_url("webhook_url", webhook_url)
        self._trust_webhooks = webhooks.trust_webhooks
        on_request, on_response = check_event_hooks(event_hooks)
        # NOVITA_LOG's lines never show a key this process gave a client.
        remember_secret(os.environ.get("NOVITA_API_KEY") if api_key is None else api_key)
        raw: Transport
        if transport is None:
            key = os.environ.get("NOVITA_API_KEY") if api_key is None else api_key
            url = base_url or os.environ.get("NOVITA_BASE_URL") or DEFAULT_BASE_URL
            self._base_url = check_base_url(url)
            raw = HTTPTransport(
                base_url=self._base_url,
                api_key=_check_key(key),
                settings=http,
                user_agent=f"novita-video/{__version__}",
            )
        else:
            # A transport of the caller's (novita_video.testing.MemoryTransport): it holds
            # its own key and decides where requests go.
            if not isinstance(transport, Transport):
                raise InvalidRequestError(
                    f"transport: must be a Transport, not {transport!r}", "transport"
                )
            self._base_url = repr(transport)
            raw = transport
        # Every request passes here, above the transport: the event hooks and the log.
        self._transport = Observed(raw, on_request=on_request, on_response=on_response)
        self._clock: Clock = clock or SystemClock()
        self._adaptive = adaptive_rate or AdaptiveRate()
        self._counters = Counters()
        self._retrier = Retrier(
            retry or RetryPolicy(),
            clock=self._clock,
            counters=self._counters,
            retry_unsafe_submits=retry_unsafe_submits,
        )
        self._submitter = Submitter(
            self._transport,
            clock=self._clock,
            retrier=self._retrier,
            counters=self._counters,
            webhook_url=webhooks.webhook_url,
        )
        shared_url = os.environ.get("NOVITA_REDIS_URL") if redis_url is None else redis_url
        self._coordinator: Coordinator | None = None
        if shared_url:
            namespace = api_key if api_key is not None else os.environ.get("NOVITA_API_KEY", "")
            self._coordinator = _coordinator(
                shared_url, api_key=namespace or "", adaptive=self._adaptive, clock=self._clock
            )
        self._submit_limiter = self._rate_limiter(self._limits.submit_rpm)
        # With Redis, each model's submits share one limit among every worker of the key.
        self._shared_submits: dict[str, Limiter] = {}
        self._poll_limiter: Limiter
        poll_rpm = polling.poll_rpm
        if (
            self._coordinator is not None
            and isinstance(poll_rpm, int | float)
            and (math.isfinite(poll_rpm))
        ):
            self._poll_limiter = self._coordinator.limiter("poll", poll_rpm)
        else:
            self._poll_limiter = RateLimiter(
                None if poll_rpm == ADAPTIVE else poll_rpm,
                clock=self._clock,
                adaptive=self._adaptive,
                adapt_unlimited=poll_rpm == ADAPTIVE,
            )
        self._poller = Poller(
            self._get_once,
            clock=self._clock,
            schedule=poll_schedule or PollSchedule(),
            limiter=self._poll_limiter,
            concurrency=polling.poll_concurrency,
            retrier=self._retrier,
            fallback_delay=webhooks.webhook_fallback if webhook_url is not None else 0.0,
        )
        self._state = _State.NEW
        self._task_group: anyio.abc.TaskGroup | None = None
        self._batches: set[_BatchRun] = set()

    def __repr__(self) -> str:
        return f"<novita_video.Client base_url={self._base_url!r} state={self._state.value}>"

    # Lifetime.

    @contextlib.asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Self]:
        # anyio's AsyncContextManagerMixin: the task group is an `async with` of its own,
        # never entered by hand.
        if self._state is not _State.NEW:
            raise UsageError(
                f"a {self._state.value} client cannot be opened again; make a new Client"
            )
        self._state = _State.OPEN
        try:
            await self._transport.open()
        except BaseException:
            self._state = _State.CLOSED
            raise
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                task_group.start_soon(self._poller.run, name="novita_video poller")
                if self._coordinator is not None:
                    self._coordinator.on_event = self._shared_event
                    task_group.start_soon(self._coordinator.run, name="novita_video redis")
                    await self._coordinator.started()  # reached or not: never an error
                try:
                    yield self
                except BaseException as error:
                    # Carried past the task group, which would wrap it in an
                    # ExceptionGroup: the user's own error reaches them as it was.
                    body_error = error
                finally:
                    self._close()
                    task_group.cancel_scope.cancel()
        finally:
            self._task_group = None
            with anyio.CancelScope(shield=True):
                await self._transport.close()
        if body_error is not None:
            raise body_error

    def _close(self) -> None:
        self._state = _State.CLOSED
        closed = ClientClosedError("the client was closed before this task was final")
        for run in list(self._batches):
            run.stop(closed)
        self._poller.close(closed)

    def _require_open(self) -> anyio.abc.TaskGroup:
        if self._state is not _State.OPEN or self._task_group is None:
            raise ClientClosedError(
                f"the client is {self._state.value}: use it inside 'async with Client() as client:'"
            )
        return self._task_group

    @property
    def clock(self) -> Clock:
        """The clock this client schedules by."""
        return self._clock

    def _rate_limiter(self, per_minute: float | None) -> RateLimiter:
        # A limiter on this client's clock with its adaptive settings.
        return RateLimiter(per_minute, clock=self._clock, adaptive=self._adaptive)

    def statistics(self) -> ClientStatistics:
        """A frozen snapshot of what this client has done so far."""
        counters = self._counters
        statuses = self._poller.statuses()
        return ClientStatistics(
            outstanding=self._poller.outstanding,
            queued=statuses[TaskStatus.QUEUED],
            processing=statuses[TaskStatus.PROCESSING],
            submitted=counters.submitted,
            polls=counters.polls,
            retries=counters.retries,
            rate_limited=counters.rate_limited,
            unknown_submissions=counters.unknown_submissions,
            webhooks=counters.webhooks,
            pollers=int(self._poller.running),
            submit_rpm=self._submit_rpm(),
            poll_rpm=self._poll_limiter.per_minute,
            shared=self._coordinator is not None and self._coordinator.healthy,
        )

    def _submit_rpm(self) -> float | None:
        rates = [limiter.per_minute for limiter in self._shared_submits.values()]
        known = [rate for rate in rates if rate is not None]
        return min(known) if known else self._submit_limiter.per_minute

    def _submit_limiter_for(self, endpoint: str) -> Limiter:
        """The limit a submit to ``endpoint`` waits for: with Redis, that model's limit
        shared by every worker of the key; otherwise the client's own (for every model)."""
        rpm = self._limits.submit_rpm
        if self._coordinator is None or rpm is None or not math.isfinite(rpm):
            return self._submit_limiter
        limiter = self._shared_submits.get(endpoint)
        if limiter is None:
            limiter = self._coordinator.limiter(f"submit:{endpoint}", rpm)
            self._shared_submits[endpoint] = limiter
        return limiter

    # One request each.

    async def submit(
        self,
        prompt: str | Request,
        *,
        image_url: str | None = None,
        enable_prompt_expansion: bool = True,
        max_wait: float | None = None,
    ) -> str:
        """Submit one clip and return its task id.

        ``prompt`` is a str (with ``image_url`` and ``enable_prompt_expansion``) or a
        request (:class:`VideoRequest`, :class:`HailuoRequest`, ..., a
        :class:`CatalogRequest` of any catalogue model, checked against its JSON Schema
        first). Bad input raises :class:`InvalidRequestError` before anything is sent.
        Submits share the client's ``submit_rpm`` limit. A submit that
        may have created a task without telling us its id raises
        :class:`SubmissionUnknownError` and is never resent on its own.

        ``max_wait`` (seconds; ``None``: as long as it takes) is how long this submit may
        wait for its turn under the rate limit (shared through Redis or not), retries'
        waits included: a turn further off raises :class:`BackPressureError`, whose
        ``retry_after`` says when a turn is likely, and nothing was sent. It never cuts
        a POST short: once a request has left, the submit waits for its answer. A web
        service answers the first with ``503`` and ``Retry-After``.
        """
        if not isinstance(prompt, str):
            if image_url is not None or enable_prompt_expansion is not True:
                raise InvalidRequestError(
                    "image_url and enable_prompt_expansion go inside the request", "prompt"
                )
            request = to_request(prompt)
        else:
            request = VideoRequest(
                prompt, image_url=image_url, enable_prompt_expansion=enable_prompt_expansion
            )
        at_least(0).check("max_wait", 0 if max_wait is None else max_wait)
        task_group = self._require_open()
        request = await self._checked(request)  # a catalogue model's: checked by its schema
        limiter = self._submit_limiter_for(request.endpoint)
        # The POST runs in the client's task group, not in the caller's task: asyncio's own
        # cancellation of the caller (task.cancel(), asyncio.timeout, a web handler whose
        # client went away) would get through anyio's shield there and drop a POST that
        # may be making a task. A caller who leaves stops it until it has left; after
        # that it ends, and a task it made is logged with its id, never lost unsaid.
        fate = Fate()
        done = anyio.Event()
        scope = anyio.CancelScope()
        caller_left = False

        async def post() -> None:
            try:
                with scope, contextlib.suppress(NovitaError):
                    await self._submitter.submit(request, limiter, fate=fate, max_wait=max_wait)
            finally:
                done.set()  # also when the client closes (its task group cancels this)
            if caller_left and fate.submission.may_exist:
                logger.warning(
                    "a submit whose caller left was %s (task %s): %s",
                    fate.submission.value,
                    fate.task_id or "id unknown",
                    request.prompt[:60],
                )

        task_group.start_soon(post, name="novita_video submit")
        try:
            await done.wait()
        except BaseException:
            caller_left = True
            scope.cancel()
            raise
        if fate.task_id is not None:
            # A wait on it learns with its model's tasks (unified ones share a task_type).
            self._poller.submitted(fate.task_id, request.endpoint)
            return fate.task_id
        if fate.error is not None:
            raise fate.error
        raise ClientClosedError("the client closed before this submit was sent")

    async def get_result(self, task_id: str) -> TaskResult:
        """Check a task once (``GET /v3/async/task-result``), retrying transient failures."""
        _check_task_id(task_id)
        self._require_open()
        return await self._retrier.call(
            "GET", lambda attempt: self._get_once(task_id, attempt), limiter=self._poll_limiter
        )

    async def _get_once(self, task_id: str, attempt: int = 1) -> TaskResult:
        self._counters.polls += 1
        response = await self._transport.request(
            "GET", TASK_RESULT_PATH, params={"task_id": task_id}, attempt=attempt, task_id=task_id
        )
        if not 200 <= response.status < 300:
            raise response.error(f"task-result of {task_id}", now_wall=self._clock.wall())
        result = parse_task_result(response.body, wall=self._clock.wall())
        if result.task_id != task_id:
            # A confused proxy or cache: an answer about another task is no answer.
            raise ProtocolError(
                f"task-result: asked for task {task_id}, the answer is for {result.task_id}",
                snippet(response.body),
            )
        return result

    async def download(
        self, source: Outcome | TaskResult | str, destination: str | os.PathLike[str]
    ) -> Path:
        """Download a finished clip to ``destination`` and return its path.

        ``source`` is a successful :class:`Outcome` or :class:`TaskResult`, or a task id.
        The file appears whole or not at all (a temporary file renamed into place, its
        length checked). An expired URL is renewed by a fresh task-result call. The API
        key is never sent to storage.
        """
        self._require_open()
        if isinstance(source, Outcome):
            if source.result is None:
                raise InvalidRequestError(
                    f"prompt {source.index} has no task result to download: {source.error}",
                    "source",
                )
            source = source.result
        result = await self.get_result(source) if isinstance(source, str) else source
        return await download(
            result,
            Path(destination),
            transport=self._transport,
            refresh=self.get_result,
            clock=self._clock,
            retrier=self._retrier,
        )

    def handle_webhook(self, body: bytes) -> bool:
        """Take one webhook event (the raw JSON body Novita POSTed); whether it was used.

        An ``ASYNC_TASK_RESULT`` event for a task this client waits for makes the poller
        check that task at once (or, with ``trust_webhooks``, ends it with the event's
        payload); if the task is being checked just then, right after that check
        returns. Events for other tasks, duplicates of a finished task's and other kinds
        are ignored (``False``). A body that is not an event raises :class:`ProtocolError`. With
        ``redis_url``, every event is also passed to the other workers of the key, so the
        one that waits for the task acts on it, whichever worker Novita reached.
        """
        result = parse_webhook(body, wall=self._clock.wall())
        if result is None or self._state is not _State.OPEN:
            return False
        if self._coordinator is not None:
            self._coordinator.publish(body)
        return self._take_event(result)

    def _shared_event(self, body: bytes) -> None:
        # An event another worker received (see handle_webhook).
        result = parse_webhook(body, wall=self._clock.wall())
        if result is not None and self._state is _State.OPEN:
            self._take_event(result)

    def _take_event(self, result: TaskResult) -> bool:
        self._counters.webhooks += 1
        logger.info("webhook event: task %s is %s", result.task_id, result.status.name)
        if self._trust_webhooks:
            return self._poller.push(result)
        return self._poller.hint(result.task_id)

    # The catalogue and the balance.

    async def models(self, *, max_age: float = CATALOG_MAX_AGE) -> tuple[CatalogModel, ...]:
        """The video models this account can use, from Novita's catalogue
        (``GET /v3/admin/video-unify-api/config``): each one's name, description and
        fields (types, choices, ranges, defaults), read from its JSON Schema.

        Fetched once per client and kept ``max_age`` seconds (10 minutes; 0 fetches it
        again now). An entry that cannot be read is skipped with a log line. Send one of
        them with :class:`CatalogRequest`, or ``generate(items, model=name)``.
        """
        at_least(0).check("max_age", max_age)
        self._require_open()
        return await self._catalog_cache().get(max_age)

    async def model(self, name: str, *, max_age: float = CATALOG_MAX_AGE) -> CatalogModel:
        """The catalogue model called ``name``; :class:`InvalidRequestError` naming the
        ones there are when the catalogue has none of that name."""
        models = await self.models(max_age=max_age)
        for model in models:
            if model.name == name:
                return model
        raise InvalidRequestError(
            f"model: {name!r} is not in Novita's catalogue for this key; it has {known(models)}",
            "model",
        )

    async def balance(self) -> Balance:
        """The account's balance (``GET /openapi/v1/billing/balance/detail``), in US
        dollars: ``available``, ``cash``, ``credit_limit``, ``pending``,
        ``outstanding_invoices`` (:class:`~decimal.Decimal` each). Account-wide: every
        use of the key's account moves it."""
        self._require_open()
        return await self._retrier.call("GET", self._get_balance)

    async def _get_balance(self, attempt: int = 1) -> Balance:
        response = await self._transport.request("GET", BALANCE_PATH, attempt=attempt)
        if not 200 <= response.status < 300:
            raise response.error("balance", now_wall=self._clock.wall())
        return parse_balance(response.body)

    def _catalog_cache(self) -> CatalogCache:
        # Made on first use (the constructor stays as it is), one per client.
        cache: CatalogCache | None = self.__dict__.get("_catalog")
        if cache is None:
            cache = self.__dict__["_catalog"] = CatalogCache(
                lambda: self._retrier.call("GET", self._get_catalog), clock=self._clock
            )
        return cache

    async def _get_catalog(self, attempt: int = 1) -> tuple[CatalogModel, ...]:
        response = await self._transport.request("GET", CATALOG_PATH, attempt=attempt)
        if not 200 <= response.status < 300:
            raise response.error("catalogue", now_wall=self._clock.wall())
        return parse_catalog(load_json(response.body, "catalogue"), body=response.body)

    async def _checked(self, request: Request) -> Request:
        """``request`` as it is sent: a catalogue model of one of our tables as its typed
        request (one route per model), any other checked against its JSON Schema."""
        if not isinstance(request, CatalogRequest):
            return request
        typed = ALIASES.get(request.model)
        if typed is not None:
            return to_request(dict(request.body), typed)
        require_jsonschema()  # before anything is fetched: never sent unchecked
        model = await self.model(request.model)
        model.check(request.body)
        return request

    def _preparer(self, model: str) -> Callable[[Any], Awaitable[Request]]:
        """How a batch of ``model`` turns each item into a request it may send."""

        async def prepare(item: Any) -> Request:
            if isinstance(item, Request) or model in MODELS:
                request = to_request(item, model)
            else:
                if isinstance(item, str):
                    item = {"prompt": item}
                if not isinstance(item, Mapping):
                    raise InvalidRequestError(
                        f"prompt: must be a str, a request or a mapping of {model}'s fields, "
                        f"not {type(item).__name__}",
                        "prompt",
                    )
                request = CatalogRequest(model, item)
            return await self._checked(request)

        return prepare

    # Waiting for tasks.

    # The name `timeout` is promised to users (``client.wait(task_id, timeout=900)``); it is a
    # deadline on the client's injectable clock, which anyio.fail_after could not honour.
    async def wait(
        self,
        task_id: str,
        timeout: float | None = 900.0,  # noqa: ASYNC109
        *,
        on_progress: Callable[[TaskResult], None] | None = None,
    ) -> TaskResult:
        """Wait until the task is final and return its last :class:`TaskResult`.

        A failed task is returned, not raised (``result.raise_for_status()`` raises it).
        Raises :class:`TaskTimeoutError` after ``timeout`` seconds (``None``: no limit) and
        API errors that retrying cannot mend (an unknown task id, a bad key). Transient
        failures (5xx, dropped connections, timeouts, unreadable answers: an outage) are
        retried until then, however many (``RetryPolicy.max_attempts`` does not end a
        wait); a timeout during one names its last error (``__cause__``). Any number
        of concurrent waits share the client's one poller. ``on_progress`` is called with
        every answer the poller gets before the final one (for a progress display); it
        runs on the event loop and must be quick. If it raises, this wait stops and raises
        that error; other waits, batches and the client go on.
        """
        _check_task_id(task_id)
        above(0, none=True).check("timeout", timeout)
        self._require_open()
        done = anyio.Event()
        answer: list[tuple[TaskResult | None, NovitaError | None]] = []

        def on_done(result: TaskResult | None, error: NovitaError | None) -> None:
            answer.append((result, error))
            done.set()

        deadline = math.inf if timeout is None else self._clock.now() + timeout
        listener = self._poller.listen(
            task_id, deadline=deadline, on_done=on_done, on_progress=on_progress
        )
        try:
            await done.wait()
        finally:
            if not answer:
                self._poller.forget(listener)
        if listener.user_error is not None:
            raise listener.user_error  # what on_progress raised, for this wait alone
        result, error = answer[0]
        if error is not None:
            raise error
        assert result is not None
        return result

    def generate(
        self,
        prompts: Iterable[PromptInput] | AsyncIterable[PromptInput],
        *,
        concurrency: int | None = None,
        submit_rpm: float | None = None,
        max_outstanding: int | None = None,
        task_timeout: float | None = None,
        model: str = VideoRequest.endpoint,
        before_submit: Callable[[int, Request], None] | None = None,
        after_submit: Callable[[int, str], None] | None = None,
        spend_cap: SpendCap | None = None,
        after_refused: Callable[[int, NovitaError], None] | None = None,
    ) -> Batch:
        """Turn many prompts into clips; iterate for one :class:`Outcome` per prompt.

        ``prompts`` is any iterable or async iterable of requests (:class:`VideoRequest`,
        :class:`HailuoRequest`, ...), prompt strs or mappings of a request's fields, the
        last two for ``model`` (default ``"minimax-video-01"``); it is read
        lazily, never more than ``max_outstanding`` ahead of what you consumed. ``model``
        may be any model of Novita's catalogue (:meth:`models`): each item (a prompt str,
        a mapping of the model's fields, a :class:`CatalogRequest`) is checked against
        its JSON Schema before it is sent, and a wrong one's outcome names the field.
        ``spend_cap`` (a :class:`SpendCap`) stops submitting once the balance has fallen
        by its ``max_spend``; the prompts it stops are never sent. Outcomes
        come in the order the tasks end. Limits default to the client's (``None``); a batch
        given its own ``submit_rpm`` (``math.inf`` for none) gets its own limiter, otherwise
        it shares the client's with every other submit.

        >>> async with client.generate(prompts) as outcomes:      # doctest: +SKIP
        ...     async for outcome in outcomes:
        ...         print(outcome.index, outcome.video_url or outcome.error)

        ``before_submit(index, request)`` is called as each POST of a prompt leaves (its
        connection open, before the server can have created a task; never for a request
        that could not connect) and
        ``after_submit(index, task_id)`` right after the task id comes back, even if the batch
        is being cancelled just then: a crash-safe ledger writes its records there.
        ``after_refused(index, error)`` is called when a POST that left comes to nothing
        (an answer that created nothing, such as a 429 or a 503, that may be retried): the
        intent ``before_submit`` recorded is void. All three run on the event loop and must
        be quick.

        Nothing is read or sent until the batch is entered or first iterated. Leaving the
        loop (a break, an exception, a cancellation) stops submitting at once, whether or
        not the batch is still referenced; ``async with`` (or ``aclose()``) also stops a
        batch that was entered but never iterated. A hook that raises ends this batch
        alone: the loop raises its error, and other batches and waits go on.
        """
        self._require_open()
        limits = attrs.evolve(
            self._limits,
            concurrency=self._limits.concurrency if concurrency is None else concurrency,
            submit_rpm=self._limits.submit_rpm if submit_rpm is None else submit_rpm,
            max_outstanding=(
                self._limits.max_outstanding if max_outstanding is None else max_outstanding
            ),
            task_timeout=self._limits.task_timeout if task_timeout is None else task_timeout,
        )
        model = ALIASES.get(model, model)  # a model of our tables goes its typed route
        if model not in MODELS:
            CatalogRequest(model)  # a name that can be a catalogue model's, or the error
        if spend_cap is not None:
            if not isinstance(spend_cap, SpendCap):
                raise InvalidRequestError(
                    f"spend_cap: must be a SpendCap, not {spend_cap!r}", "spend_cap"
                )
            spend_cap.bind(self.balance, self._clock)
        # A batch given its own rate has its own limiter (in this process alone); otherwise
        # it shares the client's (and, with Redis, every worker's).
        limiter_for: Callable[[str], Limiter] = self._submit_limiter_for
        if submit_rpm is not None:
            own = self._rate_limiter(submit_rpm)
            limiter_for = lambda endpoint: own  # noqa: E731
        run = _BatchRun(
            prompts,
            submitter=self._submitter,
            poller=self._poller,
            clock=self._clock,
            on_end=self._batches.discard,
            concurrency=limits.concurrency,
            limiter_for=limiter_for,
            max_outstanding=limits.max_outstanding,
            task_timeout=float(limits.task_timeout),
            model=model,
            before_submit=before_submit,
            after_submit=after_submit,
            prepare=self._preparer(model),
            spend=spend_cap,
            after_refused=after_refused,
        )
        return Batch(run, start=self._start_batch)

    def _start_batch(self, run: _BatchRun) -> None:
        # Called when a batch is entered or first iterated, not when it is made.
        task_group = self._require_open()
        self._batches.add(run)
        task_group.start_soon(run.drive, name="novita_video batch")


def _coordinator(url: str, **settings: Any) -> Coordinator:
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise InvalidRequestError(f"redis_url: not a valid URL ({err})", "redis_url") from err
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise InvalidRequestError(
            "redis_url: must be a redis://, rediss:// or unix:// URL, not "
            f"{parts.scheme + '://...' if parts.scheme else repr(url)}",
            "redis_url",
        )
    try:
        from ._shared import Coordinator
    except ImportError as err:
        raise InvalidRequestError(
            "redis_url: sharing limits through Redis needs redis-py: "
            "pip install 'novita-video[redis]'",
            "redis_url",
        ) from err
    try:
        return Coordinator(url, **settings)
    except ValueError as err:
        raise InvalidRequestError(f"redis_url: {err}", "redis_url") from None


def _check_key(key: str | None) -> str:
    if not isinstance(key, str) or not key.strip():
        raise MissingAPIKeyError(
            "api_key: no Novita API key; pass api_key=... or set NOVITA_API_KEY "
            "(or try the built-in simulator: python -m novita_video.testing)",
            "api_key",
        )
    if key != key.strip() or any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in key):
        raise InvalidRequestError(
            "api_key: must be printable ASCII without spaces (check for a stray newline)",
            "api_key",
        )
    return key


def _check_task_id(task_id: object) -> None:
    if not isinstance(task_id, str) or not task_id.strip() or len(task_id) > 256:
        raise InvalidRequestError(f"task_id: must be a non-empty str, not {task_id!r}", "task_id")
