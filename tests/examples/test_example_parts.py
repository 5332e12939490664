"""The example apps' framework-free parts, in this process: the error table, the loop probe."""

from __future__ import annotations

import importlib.util
import sys
import time
from types import ModuleType
from typing import Any

import anyio
import pytest
from examples_support import APPS, ROOT

import novita_video as nv


def load(app: str) -> ModuleType:
    """``examples/<app>_app.py`` as a module (examples/ is not a package to import)."""
    name = f"{app}_example_app"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{app}_app.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # pydantic resolves the models' annotations through it
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(params=APPS)
def example(request: pytest.FixtureRequest) -> ModuleType:
    return load(request.param)


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
]


@pytest.mark.parametrize(("error", "status", "fields"), ERRORS, ids=lambda v: repr(v)[:40])
def test_error_answers(
    example: ModuleType, error: nv.NovitaError, status: int, fields: dict[str, Any]
) -> None:
    got_status, body, headers = example.error_answer(error)
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
    expected_headers = {"Retry-After": "3"} if isinstance(error, nv.RateLimitError) else {}
    assert headers == expected_headers


@pytest.mark.anyio
async def test_the_loop_probe_sees_a_blocking_call(example: ModuleType) -> None:
    lag = example.LoopLag(0.01)
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
async def test_a_loop_blocked_again_and_again_shows_in_the_percentile(
    example: ModuleType,
) -> None:
    lag = example.LoopLag(0.005)
    async with anyio.create_task_group() as probe:
        probe.start_soon(lag.run)
        for _ in range(6):  # a handler that blocks on every request
            await anyio.sleep(0.01)
            time.sleep(0.06)
        probe.cancel_scope.cancel()
    # Six of about a dozen wake-ups were held 60 ms: far past any percentile's noise.
    assert lag.as_json()["blocked_p95_ms"] >= 50


def test_the_two_examples_share_their_framework_free_part_verbatim() -> None:
    # Each example stands alone, so the part that knows no web framework is copied;
    # this keeps the copies from drifting apart.
    def shared(app: str) -> str:
        text = (ROOT / "examples" / f"{app}_app.py").read_text()
        start = text.index("# -- What the app keeps for its lifetime")
        end = text.index("\n\n\n", text.index("def sse_event", start))  # sse_event is last
        return text[start:end]

    fastapi_part = shared("fastapi")
    assert "def follow_clip" in fastapi_part
    assert fastapi_part == shared("aiohttp")
