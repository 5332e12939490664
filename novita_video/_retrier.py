"""The one retry driver: it applies the pure decisions of ``_retry`` for every request.

A submit, a task-result check, a clip download and the poller's checks all ask one
:class:`Retrier` what to do after a failure. It counts the retry (and the 429), tells
the rate limiter of a 429 so that every request of that kind slows down, and answers
how long to wait; :meth:`Retrier.call` is the loop around one request (acquire a turn,
try, report, wait), used by everything but the poller, which plans its next check on
its heap instead of sleeping.

The money rule lives in :func:`~novita_video._retry.decide`: a POST that may have
created a task ends in :class:`SubmissionUnknownError`, never in a second POST.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio.lowlevel
import attrs

from ._clock import Clock
from ._errors import BackPressureError, NovitaError, RateLimitError, SubmissionUnknownError
from ._limits import Limiter
from ._retry import (
    Decision,
    Method,
    RetryPolicy,
    _transient,
    decide,
    error_retry_after,
    retry_delay,
    submit_may_have_landed,
)
from ._stats import Counters

__all__ = ["Retrier", "Retry", "unknown_submission"]

T = TypeVar("T")

logger = logging.getLogger("novita_video")


def _backoff_stops_growing(policy: RetryPolicy) -> int:
    """The first attempt whose backoff reaches ``max_delay``: every later one waits as
    long, so an endless run of retries counts no further (a float power would overflow)."""
    if policy.multiplier <= 1 or policy.initial_delay >= policy.max_delay:
        return 1
    return 1 + math.ceil(math.log(policy.max_delay / policy.initial_delay, policy.multiplier))


@attrs.frozen
class Retry:
    """What to do after a failed attempt: ``decision``, and when to try again (``delay``
    seconds from now; for a 429 the rate limiter holds every request that long)."""

    decision: Decision
    delay: float = 0.0


def unknown_submission(error: NovitaError, request: object) -> SubmissionUnknownError:
    """The error for a POST about ``request`` that may have created a task (it ended in
    ``error``): it is never sent again on its own."""
    unknown = SubmissionUnknownError(
        "the submit may have created a task, but no task id came back "
        f"({error}); it was not sent again, to avoid paying twice",
        request,
    )
    unknown.__cause__ = error
    return unknown


class Retrier:
    """Retries requests by one :class:`RetryPolicy`; see the module docstring."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Clock,
        counters: Counters,
        retry_unsafe_submits: bool = False,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._counters = counters
        self._retry_unsafe_submits = retry_unsafe_submits
        self._random = random.Random()

    def plan(
        self,
        method: Method,
        error: NovitaError,
        attempt: int,
        *,
        limiter: Limiter | None = None,
        ticket: int | None = None,
        patient: bool = False,
        min_delay: float = 0.0,
    ) -> Retry:
        """What to do after attempt ``attempt`` (1 for the first) failed with ``error``.

        A 429 pauses and slows ``limiter`` (the request was sent with ``ticket``).
        ``patient`` callers (the poller's checks of a task) never give up on a transient
        error: whoever waits for the task has a deadline of their own, which ends the
        wait, so ``max_attempts`` does not; the backoff still grows to ``max_delay``. A
        429 counts as a first attempt (a task is not to blame for the account's rate).
        """
        rate_limited = isinstance(error, RateLimitError)
        if patient and method == "GET" and _transient(error):
            decision = Decision.RETRY
            attempt = 1 if rate_limited else min(attempt, _backoff_stops_growing(self._policy))
        else:
            decision = decide(
                method,
                error,
                attempt,
                self._policy,
                retry_unsafe_submits=self._retry_unsafe_submits,
            )
        if decision is Decision.UNKNOWN_SUBMISSION:
            self._counters.unknown_submissions += 1
            logger.warning("a submit may have created a task; not sent again: %s", error)
        if decision is not Decision.RETRY:
            return Retry(decision)
        self._counters.retries += 1
        delay = retry_delay(
            attempt,
            self._policy,
            retry_after=error_retry_after(error),
            rand=self._random.random(),
        )
        delay = max(min_delay, delay)
        logger.info("%s retried in %.1f s after attempt %d: %s", method, delay, attempt, error)
        if rate_limited:
            self._counters.rate_limited += 1
            if limiter is not None:
                before = limiter.per_minute
                limiter.throttled(delay, ticket)  # everyone waits, and the rate drops
                after = limiter.per_minute
                if after is not None and (before is None or after < before):
                    logger.info(
                        "429: %s requests slow down to %.1f a minute (from %s)",
                        method,
                        after,
                        "no limit" if before is None else f"{before:.1f}",
                    )
        return Retry(decision, delay)

    async def call(
        self,
        method: Method,
        attempt: Callable[[int], Awaitable[T]],
        *,
        limiter: Limiter | None = None,
        request: object = None,
        max_wait: float | None = None,
    ) -> T:
        """``await attempt(number)`` until it returns, retrying what :meth:`plan` allows
        (``number`` is 1 for the first attempt: the event hooks and the log show it).

        Each attempt first waits for its turn at ``limiter``. A POST that may have
        created a task raises :class:`SubmissionUnknownError` about ``request``.
        ``max_wait`` bounds the time spent waiting for turns and between attempts, in
        all: a turn (or a retry) further off raises :class:`BackPressureError`, before
        anything more is sent.
        """
        deadline = None if max_wait is None else self._clock.now() + max_wait
        number = 0
        # A POST that may have made a task, retried all the same (retry_unsafe_submits):
        # if back-pressure ends the submit now, it ends in doubt, never as "nothing sent"
        # (a caller told to come back later would pay twice).
        landed: NovitaError | None = None
        while True:
            number += 1
            left = None if deadline is None else max(0.0, deadline - self._clock.now())
            try:
                ticket = None if limiter is None else await limiter.acquire(left)
            except BackPressureError as refused:
                if landed is not None:
                    raise unknown_submission(landed, request) from refused
                raise
            try:
                value = await attempt(number)
            except NovitaError as error:
                if method == "POST" and submit_may_have_landed(error):
                    landed = error
                retry = self.plan(method, error, number, limiter=limiter, ticket=ticket)
                if retry.decision is Decision.UNKNOWN_SUBMISSION:
                    # A caller who cancelled while the shielded POST ran is told so now.
                    await anyio.lowlevel.checkpoint_if_cancelled()
                    raise unknown_submission(error, request) from error
                if retry.decision is Decision.RAISE:
                    raise
                if limiter is None or not isinstance(error, RateLimitError):
                    if deadline is not None and self._clock.now() + retry.delay > deadline:
                        # The retry's wait counts against max_wait like a turn's.
                        assert max_wait is not None
                        if landed is not None:
                            raise unknown_submission(landed, request) from error
                        raise BackPressureError(
                            f"the retry after {error} would wait {retry.delay:.1f} s, past "
                            f"max_wait={max_wait:g} s; nothing more was sent",
                            retry.delay,
                        ) from error
                    await self._clock.sleep(retry.delay)
                # After a 429 the limiter itself holds the next turn back.
            else:
                if limiter is not None:
                    limiter.accepted()
                return value
