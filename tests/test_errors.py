"""The exception tree: classes by status and reason, batch doom, pickling, the drawn docstring."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest

import novita_video
from novita_video import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    APIUnreachableError,
    AuthenticationError,
    BackPressureError,
    BadRequestError,
    BatchAbortedError,
    ClientClosedError,
    DownloadError,
    InsufficientBalanceError,
    InvalidRequestError,
    LocalFileError,
    MissingAPIKeyError,
    NotFoundError,
    NovitaError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ServerError,
    SpendCapReachedError,
    SubmissionUnknownError,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    TaskTimeoutError,
    UsageError,
    VideoRequest,
)
from novita_video._errors import status_error_class


@pytest.mark.parametrize(
    ("status", "reason", "cls", "dooms"),
    [
        (400, "INVALID_REQUEST_BODY", BadRequestError, False),
        (400, "ILLEGAL_PROMPT", BadRequestError, False),
        (400, "INVALID_IMAGE_FORMAT", BadRequestError, False),
        (400, "BILLING_BALANCE_NOT_ENOUGH", InsufficientBalanceError, True),
        (400, "MISSING_API_KEY", AuthenticationError, True),
        (401, "", AuthenticationError, True),
        (401, "INVALID_API_KEY", AuthenticationError, True),
        (403, "INVALID_API_KEY", AuthenticationError, True),
        (403, "BILLING_AUTH_FAILED", PermissionDeniedError, True),
        (403, "API_NOT_ALLOWED", PermissionDeniedError, True),
        (403, "FEATURE_NOT_ALLOWED", PermissionDeniedError, True),
        (403, "NEED_REAL_NAME_VERIFY", PermissionDeniedError, True),
        (404, "TASK_NOT_FOUND", NotFoundError, False),
        (404, "API_NOT_FOUND", NotFoundError, False),
        (429, "RATE_LIMIT_EXCEEDED", RateLimitError, False),
        (500, "CREATE_TASK_FAILED", ServerError, False),
        (502, "", ServerError, False),
        (503, "", ServerError, False),
        (504, "", ServerError, False),
        (418, "", APIStatusError, False),
    ],
)
def test_status_and_reason_pick_the_class(
    status: int, reason: str, cls: type[APIStatusError], dooms: bool
) -> None:
    chosen = status_error_class(status, reason)
    assert chosen is cls
    error = chosen("it failed", status, reason)
    assert error.dooms_batch is dooms
    assert (error.status_code, error.reason) == (status, reason)


RESULT = TaskResult(task_id="t1", status=TaskStatus.FAILED, reason="nsfw")

EVERY_ERROR: list[NovitaError] = [
    NovitaError("root"),
    UsageError("misuse"),
    ClientClosedError("closed"),
    InvalidRequestError("prompt: too long", "prompt"),
    MissingAPIKeyError("api_key: none", "api_key"),
    APIConnectionError("refused", False),
    APITimeoutError("slow", True),
    APIUnreachableError("cannot reach http://x", "x"),
    SubmissionUnknownError("unknown", VideoRequest("a cat")),
    ProtocolError("bad shape", "{}"),
    APIStatusError("418", 418),
    BadRequestError("400", 400, "ILLEGAL_PROMPT", "req-1"),
    InsufficientBalanceError("400", 400, "BILLING_BALANCE_NOT_ENOUGH"),
    AuthenticationError("403", 403, "INVALID_API_KEY"),
    PermissionDeniedError("403", 403, "API_NOT_ALLOWED"),
    NotFoundError("404", 404, "TASK_NOT_FOUND"),
    RateLimitError("429", 429, "RATE_LIMIT_EXCEEDED", None, 2.5),
    ServerError("503", 503),
    TaskFailedError("failed", RESULT),
    TaskTimeoutError("late", "t1", RESULT),
    DownloadError("expired", 403),
    LocalFileError("no space left"),
    SpendCapReachedError("the spend cap is reached", Decimal("5.00"), Decimal("5.12")),
    BatchAbortedError("not sent", AuthenticationError("403", 403, "INVALID_API_KEY")),
    BackPressureError("no turn within 2 s", 3.1),
]


@pytest.mark.parametrize("error", EVERY_ERROR, ids=lambda e: type(e).__name__)
def test_every_error_pickles_intact(error: NovitaError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert repr(copy.args) == repr(error.args)  # nested exceptions compare by identity
    assert str(copy) == str(error)
    assert copy.dooms_batch == error.dooms_batch
    for name in ("task_id", "last_result", "result", "request", "status_code", "reason", "field"):
        assert repr(getattr(copy, name, None)) == repr(getattr(error, name, None))


def test_every_exported_error_is_covered_and_drawn() -> None:
    exported = {
        obj
        for name in novita_video.__all__
        if isinstance(obj := getattr(novita_video, name), type) and issubclass(obj, NovitaError)
    }
    assert exported == {type(error) for error in EVERY_ERROR}
    doc = novita_video._errors.__doc__ or ""
    for cls in exported:
        assert cls.__name__ in doc, f"{cls.__name__} is missing from the drawn tree"


def test_the_branches_are_apart() -> None:
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(APIUnreachableError, APIConnectionError)
    unreachable = APIUnreachableError("cannot reach", "h")
    assert (unreachable.maybe_sent, unreachable.dooms_batch, unreachable.host) == (False, True, "h")
    assert not issubclass(APIConnectionError, APIStatusError)
    assert issubclass(ClientClosedError, RuntimeError)
    assert issubclass(InvalidRequestError, ValueError)
    assert issubclass(TaskTimeoutError, TimeoutError)
    assert BatchAbortedError("x", InsufficientBalanceError("b", 400, "x")).dooms_batch
    assert not BatchAbortedError("x", None).dooms_batch
    assert TaskFailedError("f", RESULT).reason == "nsfw"
