"""Webhooks: the simulator POSTs each task's result to a receiver on 127.0.0.1 when it ends.

Real HTTP both ways: a plain aiohttp session submits, an aiohttp.web receiver takes the
events. Simulator time runs 20 to 40 times faster than real time (a ScaledClock), so
Novita's 5 s timeout and the retries' 1..16 s waits play out in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
from aiohttp import web

from novita_video._clock import ScaledClock
from novita_video.testing import Chaos, FakeNovita, WebhookStats
from novita_video.testing.__main__ import _fake_from_args, build_parser

pytestmark = pytest.mark.anyio


@attrs.frozen
class Arrival:
    """One POST the receiver got."""

    at: float  # simulator time
    path: str
    content_type: str
    event: Any


class Receiver:
    """A webhook receiver that answers each POST with the next scripted step (then 200).

    A step is an HTTP status, ``("sleep", seconds)`` (answer 200 that much later, in real
    seconds) or ``("redirect", path)`` (a 307 to ``path`` on this receiver).
    """

    def __init__(self, clock: ScaledClock) -> None:
        self.clock = clock
        self.arrivals: list[Arrival] = []
        self.script: deque[int | tuple[str, Any]] = deque()
        self.url = ""

    def events_for(self, task_id: str) -> list[Any]:
        return [a.event for a in self.arrivals if a.event["payload"]["task"]["task_id"] == task_id]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.arrivals.append(
            Arrival(self.clock.now(), request.path, request.content_type, json.loads(raw))
        )
        step = self.script.popleft() if self.script else 200
        if isinstance(step, int):
            return web.Response(status=step)
        kind, value = step
        if kind == "sleep":
            await asyncio.sleep(value)
            return web.Response()
        return web.Response(status=307, headers={"Location": value})

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Receiver]:
        app = web.Application()
        app.router.add_route("POST", "/{path:.*}", self._handle)
        # handler_cancellation: a sleeping handler ends when the simulator hangs up.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            yield self
        finally:
            await runner.cleanup()


@asynccontextmanager
async def setup(
    speed: float = 20.0, **knobs: Any
) -> AsyncIterator[tuple[FakeNovita, aiohttp.ClientSession, Receiver]]:
    clock = ScaledClock(speed)
    knobs.setdefault("task_duration", (1.0, 1.0))
    # A roomy timeout (3 real seconds) unless a test is about it: a busy machine must
    # not turn a prompt answer into a retry.
    knobs.setdefault("webhook_timeout", 60.0)
    async with Receiver(clock).serving() as receiver, FakeNovita(clock=clock, **knobs) as fake:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with aiohttp.ClientSession(fake.url, headers=headers) as http:
            yield fake, http, receiver


async def submit(
    http: aiohttp.ClientSession, url: str | None, endpoint: str = "minimax-video-01", **body: Any
) -> str:
    body.setdefault("prompt", "a kite")
    if url is not None:
        body["extra"] = {"webhook": {"url": url}}
    async with http.post(f"/v3/async/{endpoint}", json=body) as response:
        answer = await response.json()
        assert response.status == 200, answer
        task_id: str = answer["task_id"]
        return task_id


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)


def hook(fake: FakeNovita, task_id: str) -> WebhookStats:
    return fake.stats.webhooks[task_id]


async def test_one_event_per_task_with_its_task_result() -> None:
    wan = {"width": 832, "height": 480, "seed": 7}
    async with setup(failure_rate=0.0) as (fake, http, receiver):
        ids = {
            await submit(http, receiver.url + "/hooks/a"): "MINIMAX_VIDEO_01",
            await submit(http, receiver.url + "/hooks/b", "minimax-hailuo-02", duration=10): (
                "MINIMAX_HAILUO_02"
            ),
            await submit(http, receiver.url + "/hooks/c", "wan-t2v", **wan): "WAN_TXT_TO_VIDEO",
        }
        quiet = await submit(http, None)  # no webhook: no event
        await until(lambda: fake.stats.webhook_totals["delivered"] == 3)
        # Long enough for a stray retry or copy to show up, had there been one.
        await fake.clock.sleep(3.0)
        assert len(receiver.arrivals) == 3
        assert {a.path for a in receiver.arrivals} == {"/hooks/a", "/hooks/b", "/hooks/c"}
        for task_id, task_type in ids.items():
            [event] = receiver.events_for(task_id)
            assert set(event) == {"event_type", "payload"}
            assert event["event_type"] == "ASYNC_TASK_RESULT"
            payload = event["payload"]
            assert payload["task"]["task_type"] == task_type
            assert payload["task"]["status"] == "TASK_STATUS_SUCCEED"
            assert payload["task"]["progress_percent"] == 100
            # The same body a poll gets once the task has ended (its link signed anew).
            async with http.get("/v3/async/task-result", params={"task_id": task_id}) as r:
                polled = await r.json()
            assert payload["task"] == polled["task"]
            assert payload["extra"] == polled["extra"]
            # The submit's own extra comes back: its webhook, and the NSFW check's setting.
            assert payload["extra"]["webhook"]["url"].startswith(receiver.url + "/hooks/")
            assert payload["extra"]["enable_nsfw_detection"] is False
            async with http.get(payload["videos"][0]["video_url"], headers={}) as video:
                assert video.status == 200
            assert hook(fake, task_id) == WebhookStats(
                url=hook(fake, task_id).url, sent=1, delivered=1
            )
        assert all(a.content_type == "application/json" for a in receiver.arrivals)
        # No event before its task ended.
        for arrival in receiver.arrivals:
            task = fake.task(arrival.event["payload"]["task"]["task_id"])
            assert arrival.at >= task.finishes_at
        assert quiet not in fake.stats.webhooks
        body = fake.stats.to_dict()
        assert body["webhooks"] == {
            "events": 3,
            "sent": 3,
            "delivered": 3,
            "failed": 0,
            "lost": 0,
            "duplicated": 0,
        }
        assert body["tasks"][quiet]["webhook"] is None


async def test_a_failed_task_is_delivered_too() -> None:
    async with setup(failure_rate=1.0) as (fake, http, receiver):
        task_id = await submit(http, receiver.url)
        await until(lambda: hook(fake, task_id).delivered == 1)
        [event] = receiver.events_for(task_id)
        assert event["payload"]["task"]["status"] == "TASK_STATUS_FAILED"
        assert event["payload"]["task"]["reason"] == "content moderation failed"
        assert event["payload"]["videos"] == []


async def test_non_2xx_is_retried_with_growing_waits() -> None:
    async with setup() as (fake, http, receiver):
        receiver.script.extend([500, 500, ("redirect", "/elsewhere")])
        task_id = await submit(http, receiver.url + "/hook")
        await until(lambda: hook(fake, task_id).delivered == 1)
        stats = hook(fake, task_id)
        assert (stats.sent, stats.delivered, stats.failed) == (4, 1, 0)
        assert stats.last_error == "HTTP 307"
        # The redirect was not followed: every POST went to /hook, the same bytes each time.
        assert [a.path for a in receiver.arrivals] == ["/hook"] * 4
        assert all(a.event == receiver.arrivals[0].event for a in receiver.arrivals)
        gaps = [b.at - a.at for a, b in zip(receiver.arrivals, receiver.arrivals[1:], strict=False)]
        # Each wait at least its delay (1, 2, 4 simulator seconds), and each longer.
        assert all(gap >= delay for gap, delay in zip(gaps, (1, 2, 4), strict=True))
        assert gaps == sorted(gaps)


async def test_gives_up_after_five_retries() -> None:
    async with setup(speed=40.0) as (fake, http, receiver):
        receiver.script.extend([503] * 10)
        task_id = await submit(http, receiver.url)
        await until(lambda: hook(fake, task_id).failed == 1)
        stats = hook(fake, task_id)
        assert (stats.sent, stats.delivered, stats.failed) == (6, 0, 1)
        assert stats.last_error == "HTTP 503"
        await fake.clock.sleep(20.0)  # no seventh try
        assert len(receiver.arrivals) == 6


async def test_a_slow_receiver_is_retried() -> None:
    # 10 simulator seconds are 0.5 real ones here; the receiver takes 5 real seconds.
    async with setup(webhook_timeout=10.0) as (fake, http, receiver):
        receiver.script.append(("sleep", 5.0))
        task_id = await submit(http, receiver.url)
        started = time.monotonic()
        await until(lambda: hook(fake, task_id).delivered == 1)
        assert time.monotonic() - started < 3.0  # the retry did not wait for the slow answer
        stats = hook(fake, task_id)
        assert (stats.sent, stats.delivered) == (2, 1)
        assert stats.last_error == "timeout: no answer within 10 s"
        assert len(receiver.arrivals) == 2


async def test_an_unreachable_receiver_counts_as_a_failed_try() -> None:
    async with setup(speed=40.0) as (fake, http, receiver):
        async with Receiver(receiver.clock).serving() as gone:
            url = gone.url
        task_id = await submit(http, url)  # nothing listens there any more
        await until(lambda: hook(fake, task_id).failed == 1)
        stats = hook(fake, task_id)
        assert (stats.sent, stats.delivered) == (6, 0)
        assert stats.last_error is not None
        assert "ClientConnectorError" in stats.last_error


async def test_lost_and_duplicated_events_per_knob() -> None:
    async with setup() as (fake, http, receiver):
        fake.set_chaos(webhook_loss=1.0)
        lost = await submit(http, receiver.url, prompt="lost")
        fake.set_chaos(webhook_loss=0.0, webhook_duplicates=1.0)
        doubled = await submit(http, receiver.url, prompt="doubled")
        fake.chaos = Chaos()
        plain = await submit(http, receiver.url, prompt="plain")
        await until(lambda: fake.stats.webhook_totals["delivered"] == 3)
        await fake.clock.sleep(3.0)
        assert len(receiver.events_for(lost)) == 0
        assert len(receiver.events_for(doubled)) == 2
        assert len(receiver.events_for(plain)) == 1
        assert hook(fake, lost) == WebhookStats(url=receiver.url, lost=True)
        assert hook(fake, doubled) == WebhookStats(
            url=receiver.url, sent=2, delivered=2, duplicated=True
        )
        assert fake.stats.webhook_totals == {
            "events": 3,
            "sent": 3,
            "delivered": 3,
            "failed": 0,
            "lost": 1,
            "duplicated": 1,
        }


async def test_loss_rate_is_seeded() -> None:
    async def lost_count() -> int:
        async with setup(seed=5, task_duration=(100.0, 100.0)) as (fake, http, receiver):
            fake.set_chaos(webhook_loss=0.5)
            for _ in range(40):
                await submit(http, receiver.url)
            return fake.stats.webhook_totals["lost"]

    first = await lost_count()
    assert 8 <= first <= 32
    assert await lost_count() == first


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://hooks.example.org:8443/x",
        "http://10.0.0.1/hook",
        "http://0.0.0.0:9/hook",
        "http://[2001:db8::1]/hook",
        "http://localhost.example.com/hook",
        "http://127.0.0.1.nip.io/hook",
        "ftp://127.0.0.1/hook",
    ],
)
async def test_a_non_loopback_url_is_refused(url: str) -> None:
    async with FakeNovita() as fake:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with aiohttp.ClientSession(fake.url, headers=headers) as http:
            body = {"prompt": "a kite", "extra": {"webhook": {"url": url}}}
            async with http.post("/v3/async/minimax-video-01", json=body) as response:
                answer = await response.json()
        assert response.status == 400
        assert answer["reason"] == "INVALID_REQUEST_BODY"
        assert "extra.webhook.url" in answer["message"]
        assert fake.stats.task_count == 0


@pytest.mark.parametrize(
    "url", ["http://localhost:9/h", "http://LOCALHOST./h", "http://127.8.9.10/h", "http://[::1]:9/"]
)
async def test_loopback_urls_are_taken(url: str) -> None:
    async with FakeNovita(task_duration=(600.0, 600.0)) as fake:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with aiohttp.ClientSession(fake.url, headers=headers) as http:
            task_id = await submit(http, url)
        assert fake.task(task_id).request.webhook_url == url
        assert hook(fake, task_id) == WebhookStats(url=url)


async def test_a_stuck_task_never_sends_its_event() -> None:
    async with setup(chaos=Chaos(stuck_tasks=1.0)) as (fake, http, receiver):
        task_id = await submit(http, receiver.url)
        await fake.clock.sleep(5.0)
        assert receiver.arrivals == []
        assert hook(fake, task_id) == WebhookStats(url=receiver.url)


def _dispatchers() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "novita_video simulator webhooks"]


async def test_close_with_deliveries_in_flight_and_pending_is_clean() -> None:
    async with setup() as (fake, http, receiver):
        # One try fails (its retry waits on the heap), two hang in the receiver.
        receiver.script.extend([500, ("sleep", 30.0), ("sleep", 30.0)])
        for _ in range(3):
            await submit(http, receiver.url)
        await until(lambda: len(receiver.arrivals) == 3)
        assert len(_dispatchers()) == 1
        started = time.monotonic()
        await fake.close()
        assert time.monotonic() - started < 2.0
        assert _dispatchers() == []
        # Nothing more is sent after close (the retry was due 1 s later), and twice is fine.
        await fake.clock.sleep(3.0)
        assert len(receiver.arrivals) == 3
        assert fake.stats.webhook_totals["delivered"] == 0
        await fake.close()


def test_command_line_sets_the_webhook_timeout() -> None:
    fake = _fake_from_args(build_parser().parse_args(["--webhook-timeout", "2.5"]))
    assert fake.config.webhook_timeout == 2.5
    assert _fake_from_args(build_parser().parse_args([])).config.webhook_timeout == 5.0
    with pytest.raises(ValueError, match="webhook_timeout"):
        FakeNovita(webhook_timeout=0)


async def test_test_mode_sends_a_mock_event_at_once_with_the_status_asked_for() -> None:
    async with setup(task_duration=(600.0, 600.0)) as (fake, http, receiver):
        test_mode = {"enabled": True, "return_task_status": "TASK_STATUS_FAILED"}
        body = {
            "prompt": "a kite",
            "extra": {"webhook": {"url": receiver.url + "/hooks/t", "test_mode": test_mode}},
        }
        async with http.post("/v3/async/minimax-video-01", json=body) as response:
            task_id = (await response.json())["task_id"]
        await until(lambda: fake.stats.webhook_totals["delivered"] == 1)
        [event] = receiver.events_for(task_id)
        payload = event["payload"]
        assert payload["task"]["status"] == "TASK_STATUS_FAILED"
        assert payload["videos"] == []
        assert payload["extra"]["webhook"]["test_mode"] == test_mode
        # Long before the task itself could end: the mock went at once.
        assert fake.task(task_id).finishes_at - fake.clock.now() > 300
        bad = dict(body, extra={"webhook": {"url": receiver.url, "test_mode": {"enabled": 1}}})
        async with http.post("/v3/async/minimax-video-01", json=bad) as response:
            assert response.status == 400
            assert "test_mode.enabled" in (await response.json())["message"]
