"""Retry decisions and delays: pure functions, their constants in one place.

Nothing here sends a request or sleeps. The HTTP layer reports what happened (an
error), these functions say what to do next, and the caller does it. That keeps every
rule testable with tables (``tests/test_retry.py``).

The money rule: Novita has no idempotency key, so a POST that may have reached the
server is never repeated on the SDK's own initiative. It becomes
:class:`~novita_video.SubmissionUnknownError` instead, unless the user opted in with
``retry_unsafe_submits=True``.
"""

from __future__ import annotations

import email.utils
import enum
import math
from typing import Literal

import attrs

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APIUnreachableError,
    NovitaError,
    ProtocolError,
    RateLimitError,
    ServerError,
)
from ._settings import above, at_least, at_most, whole

__all__ = ["Decision", "RetryPolicy", "decide", "parse_retry_after", "retry_delay"]

Method = Literal["GET", "POST"]

#: 5xx answers after which a submit certainly created no task ("surge protection").
SUBMIT_SAFE_STATUSES = frozenset({503, 504})


@attrs.frozen
class RetryPolicy:
    """How often and how long to retry a request that may succeed when repeated.

    Delays grow ``initial_delay * multiplier ** (attempt - 1)`` up to ``max_delay``, less
    up to ``jitter`` of themselves at random so that many clients do not retry in step.
    A server's ``Retry-After`` wins when given, up to ``max_retry_after`` seconds.

    ``max_attempts`` bounds one request: a submit, a download, a
    :meth:`~novita_video.Client.get_result` call. It no longer ends a wait: the checks
    of a :meth:`~novita_video.Client.wait` or of a batch's task retry transient
    failures (5xx, dropped connections, timeouts, unreadable answers) on this backoff
    for as long as the wait's own ``timeout`` (a batch's ``task_timeout``) allows, so a
    wait outlasts an outage of the API; an answer that retrying cannot mend (404, a bad
    key) still ends it at once.
    """

    max_attempts: int = attrs.field(default=6, validator=whole(1))
    initial_delay: float = attrs.field(default=0.5, validator=above(0))
    multiplier: float = attrs.field(default=2.0, validator=at_least(1))
    max_delay: float = attrs.field(default=30.0, validator=above(0))
    jitter: float = attrs.field(default=0.25, validator=[at_least(0), at_most(1)])
    max_retry_after: float = attrs.field(default=300.0, validator=at_least(0))


class Decision(enum.Enum):
    """What to do after a failed attempt."""

    RETRY = "retry"
    """Send the same request again after :func:`retry_delay`."""
    RAISE = "raise"
    """Give up and raise the error."""
    UNKNOWN_SUBMISSION = "unknown_submission"
    """A POST may have created a task: raise SubmissionUnknownError, never resend."""


def submit_may_have_landed(error: NovitaError) -> bool:
    """Whether a POST that ended in ``error`` may have created a task on the server."""
    if isinstance(error, APIConnectionError):
        return error.maybe_sent
    if isinstance(error, ServerError):
        return error.status_code not in SUBMIT_SAFE_STATUSES
    # A 2xx whose body we could not read: the task exists, its id is lost.
    return isinstance(error, ProtocolError)


def _transient(error: NovitaError) -> bool:
    if isinstance(error, APIUnreachableError):
        return False  # the API was never reached: retrying a wrong host only wastes time
    return isinstance(error, APIConnectionError | RateLimitError | ServerError | ProtocolError)


def decide(
    method: Method,
    error: NovitaError,
    attempt: int,
    policy: RetryPolicy,
    *,
    retry_unsafe_submits: bool = False,
) -> Decision:
    """What to do after attempt number ``attempt`` (1 for the first) failed with ``error``."""
    if method == "POST" and submit_may_have_landed(error) and not retry_unsafe_submits:
        return Decision.UNKNOWN_SUBMISSION
    if not _transient(error):
        return Decision.RAISE
    if attempt >= policy.max_attempts:
        if method == "POST" and submit_may_have_landed(error):
            return Decision.UNKNOWN_SUBMISSION
        return Decision.RAISE
    return Decision.RETRY


def retry_delay(
    attempt: int, policy: RetryPolicy, *, retry_after: float | None = None, rand: float = 0.0
) -> float:
    """Seconds to wait before attempt ``attempt + 1``; ``rand`` in [0, 1) draws the jitter."""
    if retry_after is not None and 0 <= retry_after <= policy.max_retry_after:
        return retry_after
    backoff = policy.initial_delay * policy.multiplier ** max(0, attempt - 1)
    capped = min(policy.max_delay, backoff)
    return capped * (1.0 - policy.jitter * rand)


def error_retry_after(error: NovitaError) -> float | None:
    """The ``Retry-After`` an error carried, if any."""
    return error.retry_after if isinstance(error, APIStatusError) else None


def parse_retry_after(value: str | None, *, now_wall: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    ``None`` when absent or unreadable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - now_wall)
