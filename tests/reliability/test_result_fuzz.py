"""Any JSON value as a task-result body, over real HTTP, through ``client.get_result``:
a :class:`TaskResult` or a clean :class:`ProtocolError`, never another exception.

``tests/test_wire.py`` checks the parser alone; this goes through everything a poll
goes through (aiohttp, the status check, the retry decision, the parser). A retry is
allowed, and fast, so that the retry path runs too. The server and the client live in
one event loop behind a blocking portal, so hypothesis drives plain function calls.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
from aiohttp import web
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from novita_video import Client, ProtocolError, RetryPolicy, TaskResult, TaskStatus
from tests.support import serve_app

pytestmark = [pytest.mark.slow]

STATUSES = [status.value for status in TaskStatus] + ["TASK_STATUS_CANCELLED", ""]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: Python's json writes and reads them
    | st.text(max_size=20)
    | st.sampled_from(STATUSES)
    | st.sampled_from(["3600", "-1", "1e400", "https://s.example/c.mp4?sig=1", "t"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
task_like = st.fixed_dictionaries(
    {
        "task": st.dictionaries(
            st.sampled_from(["task_id", "status", "eta", "progress_percent", "reason"]),
            json_values,
        )
    },
    optional={
        "videos": json_values
        | st.lists(
            st.dictionaries(
                st.sampled_from(["video_url", "video_url_ttl", "video_type"]), json_values
            ),
            max_size=2,
        ),
        "extra": json_values,
    },
)
# Well formed but for (at most) one field, which is any JSON value: the deep branches of
# the parser get reached, and many answers are valid ones. Drawn half the time.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "status": st.sampled_from(STATUSES),
    "eta": st.none() | st.integers(-5, 10_000) | st.floats(-5, 1e6),
    "progress_percent": st.none() | st.integers(-5, 500) | st.floats(-5, 500),
    "video_url_ttl": st.sampled_from(["3600", "0", 3600]) | st.integers(0, 10**6),
    "video_url": st.just("https://s.example/c.mp4") | st.text(min_size=1, max_size=30),
}


@st.composite
def nearly_right(draw: st.DrawFn) -> dict[str, Any]:
    spoilt = draw(st.sampled_from([None] * len(FIELDS) + list(FIELDS)))  # half: none
    value = {name: draw(json_values if name == spoilt else field) for name, field in FIELDS.items()}
    return {
        "task": {
            "task_id": "t",
            "status": value["status"],
            "eta": value["eta"],
            "progress_percent": value["progress_percent"],
        },
        "videos": [
            {
                "video_url": value["video_url"],
                "video_url_ttl": value["video_url_ttl"],
                "video_type": "mp4",
            }
        ],
    }


@attrs.define
class Served:
    """The body the server answers every task-result with, set per example."""

    body: bytes = b"{}"


@asynccontextmanager
async def client_of(served: Served) -> AsyncIterator[Client]:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=served.body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v3/async/task-result", answer)
    retry = RetryPolicy(max_attempts=2, initial_delay=0.001, max_delay=0.001)
    async with (
        serve_app(app) as url,
        Client("sk-fuzz", base_url=url, retry=retry, poll_rpm=None) as client,
    ):
        yield client


def test_any_json_body_is_a_result_or_a_protocol_error() -> None:
    served = Served()
    seen: Counter[str] = Counter()
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(client_of(served)) as client,
    ):

        @settings(
            max_examples=400,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(st.one_of(json_values, task_like, nearly_right(), nearly_right()))
        def check(value: Any) -> None:
            served.body = json.dumps(value).encode()
            try:
                result = portal.call(client.get_result, "t")
            except ProtocolError:
                seen["protocol error"] += 1  # clean: the documented error, with a message
                return
            seen["result"] += 1
            assert isinstance(result, TaskResult)
            assert isinstance(result.status, TaskStatus)
            assert result.task_id
            assert 0 <= result.progress <= 100
            assert result.eta is None or (result.eta > 0 and math.isfinite(result.eta))
            for video in result.videos:
                assert video.url
                assert video.ttl >= 0

        check()
        statistics = client.statistics()
    # Both ways out were taken many times, and the retry path ran.
    print(f"\nfuzz: {dict(seen)}")
    assert seen["result"] >= 40
    assert seen["protocol error"] >= 40
    assert statistics.retries >= seen["protocol error"]
