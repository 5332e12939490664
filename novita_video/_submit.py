"""The money-critical submit path: the rate limiter, the POST, and the rule that a POST
which may have created a task is never sent again on its own.

A :class:`Submitter` is shared by :meth:`Client.submit` and every batch of a client. Novita
has no idempotency key, so everything here turns on one question: could this request
have created (and billed) a task? A request is cancellable until it leaves the machine
and shielded from then on (a created task's id is never lost to a cancellation); it is
repeated only when it certainly created nothing (:func:`~novita_video._retry.decide`).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import anyio.lowlevel

from ._clock import Clock
from ._errors import BatchAbortedError, NovitaError, RateLimitError, SubmissionUnknownError
from ._http import HTTPTransport, Response, Sending
from ._limits import RateLimiter
from ._requests import Request
from ._retry import Decision, RetryPolicy, decide, error_retry_after, retry_delay
from ._stats import Counters
from ._wire import dump_request, parse_submitted

__all__ = ["Submitter"]


class Submitter:
    """Submits requests for one client; see the module docstring."""

    def __init__(
        self,
        http: HTTPTransport,
        *,
        clock: Clock,
        retry: RetryPolicy,
        counters: Counters,
        retry_unsafe_submits: bool = False,
        webhook_url: str | None = None,
    ) -> None:
        self._http = http
        self._clock = clock
        self._retry = retry
        self._counters = counters
        self._retry_unsafe_submits = retry_unsafe_submits
        self._webhook_url = webhook_url
        self._random = random.Random()

    async def submit(
        self,
        request: Request,
        limiter: RateLimiter,
        *,
        abort: Callable[[], NovitaError | None] = lambda: None,
        before_post: Callable[[], None] | None = None,
        on_accepted: Callable[[str], None] | None = None,
    ) -> str:
        """POST ``request``, retrying only when no task can have been created.

        ``abort`` is asked right before each POST (a batch's fatal error stops it there);
        ``before_post`` is told as the request leaves the machine, before the server can
        have created anything (a ledger records the intent there; a request that could
        not connect never tells it);
        ``on_accepted`` is told the task id inside the shielded section, so a task that
        was created is never lost to a cancellation that arrives while the POST runs; a
        cancellation that arrives before the request left stops it, and nothing is sent.
        """
        body = dump_request(request)
        if self._webhook_url is not None:
            extra = body.setdefault("extra", {})
            if isinstance(extra, dict):
                extra.setdefault("webhook", {"url": self._webhook_url})
        path = f"/v3/async/{request.endpoint}"
        attempt = 0
        while True:
            attempt += 1
            ticket = await limiter.acquire()
            cause = abort()
            if cause is not None:
                raise BatchAbortedError(f"not submitted: {cause}", cause)
            # Cancellable until the request leaves; from then on shielded, so that a task
            # that may be created (and billed) is never lost to a cancellation. The intent
            # is told as it leaves: a request that never left created nothing.
            with anyio.CancelScope() as guard:

                def on_sent(guard: anyio.CancelScope = guard) -> None:
                    guard.shield = True
                    if before_post is not None:
                        before_post()

                sending = Sending(on_sent=on_sent)
                try:
                    response = await self._http.request("POST", path, json=body, sending=sending)
                    task_id = self._submitted(response)
                except NovitaError as error:
                    failure: NovitaError = error
                else:
                    limiter.accepted()
                    self._counters.submitted += 1
                    if on_accepted is not None:
                        on_accepted(task_id)
                    return task_id
            decision = decide(
                "POST",
                failure,
                attempt,
                self._retry,
                retry_unsafe_submits=self._retry_unsafe_submits,
            )
            if decision is Decision.UNKNOWN_SUBMISSION:
                self._counters.unknown_submissions += 1
                # A caller who cancelled while the shielded POST ran is told so now.
                await anyio.lowlevel.checkpoint_if_cancelled()
                raise SubmissionUnknownError(
                    f"the submit may have created a task, but no task id came back ({failure}); "
                    "it was not sent again, to avoid paying twice",
                    request,
                ) from failure
            if decision is Decision.RAISE:
                raise failure
            await self.back_off(failure, attempt, limiter, ticket)

    def _submitted(self, response: Response) -> str:
        if 200 <= response.status < 300:
            return parse_submitted(response.body)
        raise response.error("submit", now_wall=self._clock.wall())

    async def back_off(
        self, error: NovitaError, attempt: int, limiter: RateLimiter, ticket: int
    ) -> None:
        self._counters.retries += 1
        delay = retry_delay(
            attempt, self._retry, retry_after=error_retry_after(error), rand=self._random.random()
        )
        if isinstance(error, RateLimitError):
            self._counters.rate_limited += 1
            limiter.throttled(delay, ticket)  # everyone waits, and the rate drops
        else:
            await self._clock.sleep(delay)
