"""The retry policy as tables: what is retried, for how long, and what a POST may never repeat."""

from __future__ import annotations

import pytest

from novita_video import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InsufficientBalanceError,
    NotFoundError,
    NovitaError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from novita_video._retry import Decision, decide, parse_retry_after, retry_delay

NEVER_OPENED = APIConnectionError("refused", False)
CONNECT_TIMEOUT = APITimeoutError("connect timeout", False)
DROPPED = APIConnectionError("dropped", True)
READ_TIMEOUT = APITimeoutError("read timeout", True)
TOO_MANY = RateLimitError("429", 429, "RATE_LIMIT_EXCEEDED")
S500 = ServerError("500", 500, "CREATE_TASK_FAILED")
S502 = ServerError("502", 502)
S503 = ServerError("503", 503)
S504 = ServerError("504", 504)
GARBLED = ProtocolError("not json", "<html>")
ILLEGAL = BadRequestError("400", 400, "ILLEGAL_PROMPT")
BAD_KEY = AuthenticationError("403", 403, "INVALID_API_KEY")
BROKE = InsufficientBalanceError("400", 400, "BILLING_BALANCE_NOT_ENOUGH")
NOT_ALLOWED = PermissionDeniedError("403", 403, "API_NOT_ALLOWED")
MISSING = NotFoundError("404", 404, "TASK_NOT_FOUND")

R, X, U = Decision.RETRY, Decision.RAISE, Decision.UNKNOWN_SUBMISSION
POLICY = RetryPolicy(max_attempts=3)


@pytest.mark.parametrize(
    ("method", "error", "attempt", "expected"),
    [
        # GET task-result: every transient failure is retried, then raised.
        ("GET", NEVER_OPENED, 1, R),
        ("GET", DROPPED, 1, R),
        ("GET", READ_TIMEOUT, 2, R),
        ("GET", TOO_MANY, 1, R),
        ("GET", S500, 1, R),
        ("GET", S503, 2, R),
        ("GET", GARBLED, 1, R),
        ("GET", S500, 3, X),
        ("GET", DROPPED, 3, X),
        ("GET", ILLEGAL, 1, X),
        ("GET", BAD_KEY, 1, X),
        ("GET", MISSING, 1, X),
        # POST submit: retried only when no task can exist.
        ("POST", NEVER_OPENED, 1, R),
        ("POST", CONNECT_TIMEOUT, 2, R),
        ("POST", TOO_MANY, 1, R),
        ("POST", S503, 1, R),
        ("POST", S504, 2, R),
        ("POST", NEVER_OPENED, 3, X),
        ("POST", TOO_MANY, 3, X),
        # ... and anything that may have reached the server is unknowable, at once.
        ("POST", DROPPED, 1, U),
        ("POST", READ_TIMEOUT, 1, U),
        ("POST", S500, 1, U),
        ("POST", S502, 1, U),
        ("POST", GARBLED, 1, U),
        ("POST", ILLEGAL, 1, X),
        ("POST", BAD_KEY, 1, X),
        ("POST", BROKE, 1, X),
        ("POST", NOT_ALLOWED, 1, X),
    ],
)
def test_decide(method: str, error: NovitaError, attempt: int, expected: Decision) -> None:
    assert decide(method, error, attempt, POLICY) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "attempt", "expected"),
    [
        (DROPPED, 1, R),
        (READ_TIMEOUT, 2, R),
        (S500, 1, R),
        (GARBLED, 1, R),
        # Out of attempts, an unsafe POST is still reported as unknowable, not as a plain error.
        (DROPPED, 3, U),
        (S500, 3, U),
        (ILLEGAL, 1, X),
    ],
)
def test_decide_with_the_unsafe_opt_in(
    error: NovitaError, attempt: int, expected: Decision
) -> None:
    assert decide("POST", error, attempt, POLICY, retry_unsafe_submits=True) is expected


@pytest.mark.parametrize(
    ("attempt", "retry_after", "rand", "expected"),
    [
        (1, None, 0.0, 0.5),
        (2, None, 0.0, 1.0),
        (3, None, 0.0, 2.0),
        (4, None, 0.0, 4.0),
        (7, None, 0.0, 30.0),  # capped
        (50, None, 0.0, 30.0),  # no overflow however late
        (1, None, 0.999999, 0.5 * (1 - 0.25 * 0.999999)),  # jitter takes up to a quarter off
        (3, None, 0.5, 2.0 * 0.875),
        (1, 7.0, 0.9, 7.0),  # Retry-After wins, unjittered
        (5, 0.0, 0.0, 0.0),
        (1, 300.0, 0.0, 300.0),  # up to the policy's limit
        (1, 301.0, 0.0, 0.5),  # past it: an absurd header is ignored
    ],
)
def test_retry_delay(attempt: int, retry_after: float | None, rand: float, expected: float) -> None:
    assert retry_delay(attempt, RetryPolicy(), retry_after=retry_after, rand=rand) == pytest.approx(
        expected
    )


NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 GMT


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("3", 3.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("nan", None),
        ("inf", None),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
        ("Tue, 14 Nov 2023 22:13:00 GMT", 0.0),  # in the past
        ("Tue, 14 Nov 2023 22:13:50", None),  # no zone: not an HTTP date
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now_wall=NOW) == expected


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=1.5)
