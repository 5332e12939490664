"""The example apps' shared part (``examples/clips.py``) and the tests' loop probe, in this
process: the error table, and a probe that sees a blocked loop."""

from __future__ import annotations

import importlib
import importlib.util
import time
from typing import Any

import anyio
import pytest

import novita_video as nv
from examples.clips import error_answer
from tests.examples.examples_support import APPS
from tests.examples.loop_lag import LoopLag

UNKNOWN = nv.SubmissionUnknownError("no task id came back")
ERRORS: list[tuple[nv.NovitaError, int, dict[str, Any]]] = [
    (nv.InvalidRequestError("prompt: too long", "prompt"), 422, {}),
    (nv.InvalidRequestError("task_id: empty", "task_id"), 422, {}),
    (UNKNOWN, 502, {"task_may_exist": True}),
    (nv.NotFoundError("gone", 404, "TASK_NOT_FOUND"), 404, {"reason": "TASK_NOT_FOUND"}),
    (nv.PermissionDeniedError("no", 403, "FEATURE_NOT_ALLOWED"), 403, {}),
    (nv.PermissionDeniedError("no", 403, "API_NOT_ALLOWED"), 403, {}),
    (nv.AuthenticationError("bad key", 403, "INVALID_API_KEY"), 503, {}),
    (nv.InsufficientBalanceError("broke", 400, "BILLING_BALANCE_NOT_ENOUGH"), 503, {}),
    (nv.RateLimitError("slow down", 429, "RATE_LIMIT_EXCEEDED", None, 2.5), 503, {}),
    (nv.BadRequestError("no", 400, "ILLEGAL_PROMPT"), 400, {"reason": "ILLEGAL_PROMPT"}),
    (nv.ServerError("oops", 500, ""), 502, {}),
    (nv.APIConnectionError("reset"), 502, {}),
    (nv.APITimeoutError("slow"), 504, {}),
    (nv.ProtocolError("not JSON", "<html>"), 502, {}),
    (nv.ClientClosedError("closed"), 503, {}),
    (nv.BackPressureError("no turn within 2 s", 2.2), 503, {"retry_after": 3}),
]


@pytest.mark.parametrize(("error", "status", "fields"), ERRORS, ids=lambda v: repr(v)[:40])
def test_error_answers(error: nv.NovitaError, status: int, fields: dict[str, Any]) -> None:
    got_status, body, headers = error_answer(error)
    assert got_status == status
    assert fields.items() <= body.items()
    if isinstance(error, nv.InvalidRequestError):
        (detail,) = body["detail"]
        where = "path" if error.field == "task_id" else "body"
        assert detail["loc"] == [where, error.field]
        assert detail["msg"] == str(error)
    else:
        assert body["detail"]
    # Only a rate limit says when to come back; a submit of unknown outcome never does.
    says_when = isinstance(error, nv.RateLimitError | nv.BackPressureError)
    expected_headers = {"Retry-After": "3"} if says_when else {}
    assert headers == expected_headers


@pytest.mark.anyio
async def test_the_loop_probe_sees_a_blocking_call() -> None:
    lag = LoopLag(0.01)
    async with anyio.create_task_group() as probe:
        probe.start_soon(lag.run)
        await anyio.sleep(0.1)
        time.sleep(0.08)  # what a handler must never do: the loop stops for 80 ms
        await anyio.sleep(0.05)
        probe.cancel_scope.cancel()
    assert lag.ticks >= 5
    assert lag.blocked_slow_ticks >= 1
    assert lag.blocked_max >= 0.07
    assert lag.as_json()["blocked_max_ms"] >= 70


@pytest.mark.anyio
async def test_a_loop_blocked_again_and_again_shows_in_the_percentile() -> None:
    lag = LoopLag(0.005)
    async with anyio.create_task_group() as probe:
        probe.start_soon(lag.run)
        for _ in range(6):  # a handler that blocks on every request
            await anyio.sleep(0.01)
            time.sleep(0.06)
        probe.cancel_scope.cancel()
    # Six of about a dozen wake-ups were held 60 ms: far past any percentile's noise.
    assert lag.as_json()["blocked_p95_ms"] >= 50


@pytest.mark.parametrize("app", APPS)
def test_each_example_is_short_and_uses_the_shared_module(app: str) -> None:
    module = importlib.import_module(f"examples.{app}_app")
    assert module.clips.error_answer is error_answer  # one copy, imported, not pasted
    assert module.create_app.__module__ == module.__name__
    source = importlib.util.find_spec(f"examples.{app}_app")
    assert source is not None
    assert source.origin is not None
    with open(source.origin, encoding="utf-8") as file:
        assert len(file.readlines()) <= 170  # one sitting's read
