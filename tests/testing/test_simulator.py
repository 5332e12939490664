"""The simulator, tested over real HTTP with a plain aiohttp session (not our client).

Most tests drive simulator time with :class:`ManualClock`, so task lives, rate-limit
windows and link expiry are checked to the second without waiting; one test runs
a :class:`ScaledClock` for real, and one starts the command line as a subprocess.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import novita_video.testing as testing_pkg
from novita_video._clock import ScaledClock
from novita_video.testing import FakeNovita, RateLimit, SubmitRequest, TaskRecord
from novita_video.testing.__main__ import main as cli_main
from novita_video.testing._ratelimit import SlidingWindowLog
from novita_video.testing._tasks import PROCESSING, QUEUED, SUCCEED, draw_task
from tests.testing.simulator_support import RESULT, SUBMIT, Answer, ManualClock, call, serve

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
CLIP = REPO / "novita_video" / "testing" / "assets" / "clip.mp4"


async def submit(http: aiohttp.ClientSession, body: object = None, **kwargs: Any) -> Answer:
    if body is None:
        body = {"prompt": "a cat surfing a wave"}
    return await call(http, "POST", SUBMIT, json=body, **kwargs)


async def submit_ok(http: aiohttp.ClientSession, body: object = None) -> str:
    answer = await submit(http, body)
    assert answer.status == 200, answer.body
    task_id: str = answer.json()["task_id"]
    return task_id


async def result(http: aiohttp.ClientSession, task_id: str, **kwargs: Any) -> Answer:
    return await call(http, "GET", RESULT, params={"task_id": task_id}, **kwargs)


async def task_of(http: aiohttp.ClientSession, task_id: str) -> dict[str, Any]:
    answer = await result(http, task_id)
    assert answer.status == 200, answer.body
    task: dict[str, Any] = answer.json()["task"]
    return task


# -- public surface, knobs --------------------------------------------------------------


def test_all_is_sorted_and_complete() -> None:
    public = {n for n in dir(testing_pkg) if not n.startswith("_")}
    public -= {"annotations", "pytest_plugin"}  # a future import, a submodule
    assert testing_pkg.__all__ == sorted(testing_pkg.__all__)
    assert set(testing_pkg.__all__) == public


def test_clip_is_a_small_real_mp4() -> None:
    data = CLIP.read_bytes()
    assert len(data) < 60_000
    assert data[4:8] == b"ftyp"
    # faststart: the index (moov) comes before the media (mdat), so browsers play at once.
    assert data.index(b"moov") < data.index(b"mdat")
    assert b"avc1" in data  # H.264


@pytest.mark.parametrize(
    ("knobs", "words"),
    [
        ({"task_duration": (3.0, 1.0)}, "task_duration"),
        ({"task_duration": (-1.0, 2.0)}, "task_duration"),
        ({"task_duration": "slow"}, "task_duration"),
        ({"queue_fraction": 1.5}, "queue_fraction"),
        ({"eta_error": 1.0}, "eta_error"),
        ({"eta_error": -0.1}, "eta_error"),
        ({"failure_rate": 2}, "failure_rate"),
        ({"failure_rate": float("nan")}, "failure_rate"),
        ({"video_ttl": 0}, "video_ttl"),
        ({"video_ttl": 1.5}, "video_ttl"),
        ({"port": 70_000}, "port"),
        ({"api_key": ""}, "api_key"),
        ({"balance": -1}, "balance"),
        ({"report_progress": 1}, "report_progress"),
        ({"submit_limit": 20}, "submit_limit"),
        ({"clock": object()}, "clock"),
        ({"seed": "x"}, "seed"),
        ({"queue_time": (5.0, 1.0)}, "queue_time"),
        ({"queue_time": (-1.0, 1.0)}, "queue_time"),
        ({"eta_rounding": "up"}, "eta_rounding"),
        ({"eta_bias": (0.0, 1.5)}, "eta_bias"),
        ({"eta_bias": (1.5, 0.6)}, "eta_bias"),
        ({"eta_bias": (0.6, 1.5), "eta_error": 0.2}, "eta_bias and eta_error"),
        ({"progress_curve": "cubic"}, "progress_curve"),
    ],
)
def test_bad_knobs_are_refused_clearly(knobs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        FakeNovita(**knobs)


def test_rate_limit_values() -> None:
    assert RateLimit(20) == RateLimit(20, per=60.0)
    assert RateLimit.parse("2/10") == RateLimit(2, per=10.0)
    assert RateLimit.parse("5") == RateLimit(5, per=60.0)
    for bad in ("", "x/60", "2/y", "0/60", "3/0", "3/-1"):
        with pytest.raises(ValueError, match=r"rate limit|requests|per"):
            RateLimit.parse(bad)
    with pytest.raises(ValueError, match="requests"):
        RateLimit(True)


async def test_lifetime_errors() -> None:
    fake = FakeNovita()
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.url
    await fake.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", fake.url)
        with pytest.raises(RuntimeError, match="starts once"):
            await fake.start()
    finally:
        await fake.close()
    await fake.close()  # twice is fine
    assert "sk-simulated" not in repr(fake)
    assert "sk-simulated" not in repr(fake.config)


# -- auth, validation, routing ----------------------------------------------------------


async def test_auth_missing_blank_and_wrong_keys() -> None:
    async with serve(api_key="sk-right") as (fake, _), aiohttp.ClientSession(fake.url) as anon:
        for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer "}):
            assert (await submit(anon, headers=headers)).reason == "MISSING_API_KEY"
            answer = await result(anon, "some-id", headers=headers)
            assert answer.status == 400
            assert answer.reason == "MISSING_API_KEY"
        for auth in ("Bearer sk-wrong", "Basic sk-right", "Bearer sk-right-but-longer"):
            answer = await submit(anon, headers={"Authorization": auth})
            assert answer.status == 403
            assert answer.reason == "INVALID_API_KEY"
            assert b"sk-wrong" not in answer.body  # the key sent is never echoed
            assert (await result(anon, "x", headers={"Authorization": auth})).status == 403
        assert (await submit(anon, headers={"Authorization": "bearer sk-right"})).status == 200
        assert fake.stats.task_count == 1


@pytest.mark.parametrize(("knob", "status"), [("refuse", 401), ("accept", 200)])
async def test_a_key_without_bearer_is_a_knob_not_a_silent_403(knob: str, status: int) -> None:
    # Novita's JS SDK sends "Authorization: <key>"; the real API's answer is unconfirmed.
    async with serve(api_key="sk-right", bare_key=knob) as (fake, _):
        async with aiohttp.ClientSession(fake.url) as anon:
            answer = await submit(anon, headers={"Authorization": "sk-right"})
            assert answer.status == status
            if status != 200:
                assert answer.reason == "INVALID_API_KEY"
                assert "Bearer" in answer.json()["message"]
            wrong = await submit(anon, headers={"Authorization": "sk-wrong"})
            assert wrong.status == 403


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[1, 2]",
        b'"a cat"',
        b"{}",
        b'{"prompt": null}',
        b'{"prompt": 42}',
        b'{"prompt": ["a cat"]}',
        b'{"prompt": ""}',
        json.dumps({"prompt": "x" * 2001}).encode(),
        b'{"prompt": "a cat", "image_url": 5}',
        b'{"prompt": "a cat", "image_url": null}',
        b'{"prompt": "a cat", "image_url": "not a url"}',
        b'{"prompt": "a cat", "image_url": "/frames/first.png"}',
        b'{"prompt": "a cat", "image_url": "ftp://example.com/first.png"}',
        b'{"prompt": "a cat", "image_url": "https://"}',
        b'{"prompt": "a cat", "enable_prompt_expansion": "yes"}',
        b'{"prompt": "a cat", "enable_prompt_expansion": 1}',
        b'{"prompt": "a cat", "enable_prompt_expansion": null}',
    ],
)
async def test_invalid_bodies(body: bytes) -> None:
    async with serve() as (fake, http):
        answer = await call(
            http, "POST", SUBMIT, data=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status == 400
        assert answer.reason == "INVALID_REQUEST_BODY"
        assert fake.stats.task_count == 0


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "x"},
        {"prompt": "x" * 2000},
        {
            "prompt": "a cat",
            "image_url": "https://example.com/a.png",
            "enable_prompt_expansion": False,
        },
        {"prompt": "a cat", "image_url": "http://127.0.0.1:9/a.png"},
        {"prompt": "a cat", "duration": 6, "resolution": "768P", "extra": {"notes": 1}},
    ],
)
async def test_valid_bodies_edges_and_unknown_fields(body: dict[str, Any]) -> None:
    async with serve() as (fake, http):
        task_id = await submit_ok(http, body)
        assert re.fullmatch(UUID4, task_id)
        request = fake.task(task_id).request
        assert request.endpoint == fake.task(task_id).endpoint == "minimax-video-01"
        assert request.prompt == body["prompt"]
        assert request.image_url == body.get("image_url")
        # Unknown fields are ignored, and the documented default is filled in.
        assert dict(request.body) == {
            "prompt": body["prompt"],
            **({"image_url": body["image_url"]} if "image_url" in body else {}),
            "enable_prompt_expansion": body.get("enable_prompt_expansion", True),
        }
        assert request.webhook_url is None


async def test_illegal_prompt_marker() -> None:
    async with serve() as (fake, http):
        answer = await submit(http, {"prompt": "a cat [illegal] scene"})
        assert answer.status == 400
        assert answer.reason == "ILLEGAL_PROMPT"
    async with serve(illegal_marker="FORBIDDEN") as (fake, http):
        await submit_ok(http, {"prompt": "a cat [illegal] scene"})
        assert (await submit(http, {"prompt": "FORBIDDEN cat"})).reason == "ILLEGAL_PROMPT"
        assert fake.stats.task_count == 1
        assert fake.stats.errors == {"ILLEGAL_PROMPT": 1}


async def test_task_result_param_and_unknown_task() -> None:
    async with serve() as (_, http):
        answer = await call(http, "GET", RESULT)
        assert answer.status == 400
        assert answer.reason == "INVALID_REQUEST_BODY"
        assert (await result(http, "")).reason == "INVALID_REQUEST_BODY"
        answer = await result(http, "no-such-task")
        assert answer.status == 404
        assert answer.reason == "TASK_NOT_FOUND"


async def test_unknown_paths_and_methods_are_api_not_found() -> None:
    async with serve() as (fake, http):
        for method, path in [
            ("GET", "/"),
            ("GET", "/v3/async/kling-v1.6-t2v"),
            ("POST", "/v3/async/minimax-video-02"),
            ("GET", SUBMIT),
            ("DELETE", RESULT),
        ]:
            answer = await call(http, method, path)
            assert answer.status == 404, (method, path)
            assert answer.reason == "API_NOT_FOUND"
            assert answer.headers["Content-Type"].startswith("application/json")
        assert fake.stats.requests == {"submit": 0, "task_result": 0, "video": 0, "other": 5}


# -- task life --------------------------------------------------------------------------


def _exact_body_shape(body: dict[str, Any]) -> None:
    assert set(body) == {"task", "images", "videos", "audios", "extra"}
    assert set(body["task"]) == {
        "task_id",
        "task_type",
        "status",
        "reason",
        "eta",
        "progress_percent",
    }
    assert body["task"]["task_type"] == "MINIMAX_VIDEO_01"
    assert body["images"] == []
    assert body["audios"] == []
    assert set(body["extra"]) == {"seed", "debug_info", "enable_nsfw_detection"}
    assert body["extra"]["enable_nsfw_detection"] is False
    assert set(body["extra"]["debug_info"]) == {
        "request_info",
        "submit_time_ms",
        "execute_time_ms",
        "complete_time_ms",
    }
    assert all(isinstance(v, str) for v in body["extra"]["debug_info"].values())
    assert isinstance(body["task"]["eta"], int)
    assert isinstance(body["task"]["progress_percent"], int)


async def test_lifecycle_by_the_second() -> None:
    clock = ManualClock()
    async with serve(clock=clock, task_duration=(10.0, 10.0), queue_fraction=0.2) as (fake, http):
        task_id = await submit_ok(http)
        record = fake.task(task_id)
        assert record.submitted_at == clock.now()
        assert record.finishes_at == clock.now() + 10.0
        # (seconds since submit, status, progress, eta)
        timeline = [
            (0.0, QUEUED, 0, 10),
            (1.0, QUEUED, 0, 9),
            (1.5, QUEUED, 0, 9),
            (2.0, PROCESSING, 0, 8),
            (6.0, PROCESSING, 49, 4),  # 99 * 4/8 = 49.5
            (9.5, PROCESSING, 92, 1),  # 99 * 7.5/8 = 92.8
            (10.0, SUCCEED, 100, 0),
            (500.0, SUCCEED, 100, 0),
        ]
        start = clock.now()
        for at, status, progress, eta in timeline:
            clock.time = start + at
            answer = await result(http, task_id)
            body = answer.json()
            _exact_body_shape(body)
            assert body["task"] == {
                "task_id": task_id,
                "task_type": "MINIMAX_VIDEO_01",
                "status": status,
                "reason": "",
                "eta": eta,
                "progress_percent": progress,
            }, at
            assert (body["videos"] != []) is (status == SUCCEED)
        (video,) = body["videos"]
        assert set(video) == {"video_url", "video_url_ttl", "video_type"}
        assert video["video_url_ttl"] == "3600"
        assert video["video_type"] == "mp4"
        assert video["video_url"].startswith(f"{fake.url}/storage/{task_id}.mp4?")
        debug = body["extra"]["debug_info"]
        wall_start = ManualClock.WALL_OFFSET + start
        assert int(debug["submit_time_ms"]) == int(wall_start * 1000)
        assert int(debug["execute_time_ms"]) == int((wall_start + 2) * 1000)
        assert int(debug["complete_time_ms"]) == int((wall_start + 10) * 1000)
        assert fake.stats.polls == {task_id: len(timeline)}


async def test_lifecycle_on_a_scaled_clock() -> None:
    # 2..3 simulated seconds at speed 20: 0.10..0.15 real seconds, queued for the first half.
    clock = ScaledClock(20)
    async with serve(clock=clock, task_duration=(2.0, 3.0), queue_fraction=0.5) as (_, http):
        task_id = await submit_ok(http)
        seen: list[tuple[str, int, int]] = []
        with anyio.fail_after(5):
            while not seen or seen[-1][0] != SUCCEED:
                task = await task_of(http, task_id)
                seen.append((task["status"], task["progress_percent"], task["eta"]))
                await anyio.sleep(0.005)
    statuses = [s for s, _, _ in seen]
    assert statuses[0] == QUEUED
    assert PROCESSING in statuses
    order = {QUEUED: 0, PROCESSING: 1, SUCCEED: 2}
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
    progress = [p for _, p, _ in seen]
    assert progress == sorted(progress)
    assert progress[-1] == 100
    assert 0 < max(p for s, p, _ in seen if s == PROCESSING) < 100
    etas = [e for _, _, e in seen]
    assert etas == sorted(etas, reverse=True)
    assert 1 <= etas[0] <= 3
    assert etas[-1] == 0


async def test_eta_error_scales_the_true_remaining_time() -> None:
    clock = ManualClock()
    async with serve(clock=clock, task_duration=(10.0, 10.0), eta_error=0.5, seed=3) as (
        fake,
        http,
    ):
        ids = [await submit_ok(http, {"prompt": f"p{i}"}) for i in range(20)]
        clock.advance(4.0)
        factors = []
        for task_id in ids:
            factor = fake.task(task_id).eta_factor
            factors.append(factor)
            assert 0.5 <= factor <= 1.5
            assert (await task_of(http, task_id))["eta"] == math.ceil(6.0 * factor)
        assert max(factors) - min(factors) > 0.2  # per task, not one global factor
        clock.advance(6.0)
        assert (await task_of(http, ids[0]))["eta"] == 0


async def test_a_queue_time_then_the_whole_running_time() -> None:
    clock = ManualClock()
    async with serve(clock=clock, task_duration=(100.0, 100.0), queue_time=(30.0, 30.0)) as (
        fake,
        http,
    ):
        task_id = await submit_ok(http)
        record = fake.task(task_id)
        assert record.processing_at - record.submitted_at == 30.0
        assert record.duration == 130.0
        timeline = [(29.0, QUEUED, 0, 101), (31.0, PROCESSING, 0, 99), (80.0, PROCESSING, 49, 50)]
        start = clock.now()
        for at, status, progress, eta in timeline:
            clock.time = start + at
            task = await task_of(http, task_id)
            assert (task["status"], task["progress_percent"], task["eta"]) == (
                status,
                progress,
                eta,
            ), at


@pytest.mark.parametrize(
    ("rounding", "etas"),
    [
        # Seconds left: 2.6, 1.5, 0.4. Ceil never reads 0 before the end; the others do.
        ("ceil", [3, 2, 1]),
        ("round", [3, 2, 0]),
        ("floor", [2, 1, 0]),
    ],
)
async def test_eta_rounding(rounding: str, etas: list[int]) -> None:
    clock = ManualClock()
    async with serve(clock=clock, task_duration=(10.0, 10.0), eta_rounding=rounding) as (_, http):
        task_id = await submit_ok(http)
        seen = []
        for at in (7.4, 8.5, 9.6):
            clock.time = 1_000.0 + at
            task = await task_of(http, task_id)
            assert task["status"] == PROCESSING
            seen.append(task["eta"])
        assert seen == etas


async def test_eta_bias_runs_out_early_or_late() -> None:
    clock = ManualClock()
    async with serve(
        clock=clock,
        task_duration=(100.0, 100.0),
        queue_time=(0.0, 0.0),
        eta_bias=(0.5, 1.5),
        seed=5,
    ) as (fake, http):
        ids = [await submit_ok(http, {"prompt": f"p{i}"}) for i in range(30)]
        records = [fake.task(task_id) for task_id in ids]
        biases = [(r.believed_end - r.processing_at) / 100.0 for r in records if r.believed_end]
        assert len(biases) == 30
        assert min(biases) >= 0.5
        assert max(biases) <= 1.5
        assert max(biases) - min(biases) > 0.5  # per task, not one global factor
        clock.advance(60.0)
        for task_id, bias in zip(ids, biases, strict=True):
            task = await task_of(http, task_id)
            assert task["status"] == PROCESSING
            # The server believes the task ends at bias * 100 s: after that, it is
            # overdue, still PROCESSING with an eta of 0; before, the eta counts down.
            assert task["eta"] == max(0, math.ceil(100.0 * bias - 60.0))
            assert task["progress_percent"] == 59  # progress follows the real running time


@pytest.mark.parametrize(
    ("curve", "progress"),
    [
        ("linear", [24, 49, 74, 89]),
        ("slow-start", [6, 24, 55, 80]),
        ("stall", [33, 67, 94, 97]),  # 95 % of 99 at 70 %, then a crawl
    ],
)
async def test_progress_curves(curve: str, progress: list[int]) -> None:
    clock = ManualClock()
    async with serve(
        clock=clock, task_duration=(100.0, 100.0), queue_time=(0.0, 0.0), progress_curve=curve
    ) as (_, http):
        task_id = await submit_ok(http)
        seen = []
        for at in (25.0, 50.0, 75.0, 90.0):
            clock.time = 1_000.0 + at
            seen.append((await task_of(http, task_id))["progress_percent"])
        assert seen == progress
        assert seen == sorted(seen)


async def test_no_eta_and_no_progress() -> None:
    clock = ManualClock()
    async with serve(
        clock=clock, task_duration=(10.0, 10.0), eta_error=None, report_progress=False
    ) as (_, http):
        task_id = await submit_ok(http)
        for step in (0.0, 0.5, 5.0, 4.0):  # queued, queued, processing (5.5 s), processing
            clock.advance(step)
            task = await task_of(http, task_id)
            assert (task["eta"], task["progress_percent"]) == (0, 0)
        assert task["status"] == PROCESSING
        clock.advance(0.5)
        task = await task_of(http, task_id)
        assert (task["status"], task["eta"], task["progress_percent"]) == (SUCCEED, 0, 100)


async def test_failure_rate_one_fails_every_task_with_a_reason() -> None:
    clock = ManualClock()
    async with serve(clock=clock, task_duration=(1.0, 2.0), failure_rate=1.0) as (fake, http):
        ids = [await submit_ok(http, {"prompt": f"p{i}"}) for i in range(5)]
        assert (await task_of(http, ids[0]))["status"] == QUEUED  # failure shows only at the end
        clock.advance(2.0)
        for task_id in ids:
            body = (await result(http, task_id)).json()
            _exact_body_shape(body)
            assert body["task"]["status"] == "TASK_STATUS_FAILED"
            assert body["task"]["reason"]
            assert body["videos"] == []
            assert fake.task(task_id).final_status == "TASK_STATUS_FAILED"


async def test_zero_duration_finishes_at_once_and_seed_replays() -> None:
    async def run() -> list[TaskRecord]:
        clock = ManualClock()
        async with serve(clock=clock, seed=42, failure_rate=0.5) as (fake, http):
            ids = [await submit_ok(http, {"prompt": f"p{i}"}) for i in range(8)]
            return [fake.task(task_id) for task_id in ids]

    first, second = await run(), await run()
    assert first == second
    assert {t.final_status for t in first} == {SUCCEED, "TASK_STATUS_FAILED"}
    async with serve(task_duration=(0.0, 0.0)) as (_, http):
        task_id = await submit_ok(http)
        assert (await task_of(http, task_id))["status"] == SUCCEED


async def test_many_concurrent_submits() -> None:
    async with serve(task_duration=(60.0, 600.0)) as (fake, http):
        ids: list[str] = []

        async def one(i: int) -> None:
            ids.append(await submit_ok(http, {"prompt": f"prompt {i}"}))

        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(one, i)
        assert len(set(ids)) == 300
        assert fake.stats.task_count == 300
        assert fake.stats.duplicate_submissions == 0


# -- video links ------------------------------------------------------------------------


async def test_video_download_and_expiry() -> None:
    clock = ManualClock()
    async with (
        serve(clock=clock, task_duration=(1.0, 1.0), video_ttl=30) as (fake, http),
        aiohttp.ClientSession() as storage,
    ):
        task_id = await submit_ok(http)
        clock.advance(1.0)
        first = (await result(http, task_id)).json()["videos"][0]
        assert first["video_url_ttl"] == "30"
        answer = await call(storage, "GET", first["video_url"])
        assert answer.status == 200
        assert answer.body == CLIP.read_bytes()
        assert answer.headers["Content-Type"] == "video/mp4"
        assert int(answer.headers["Content-Length"]) == len(answer.body)
        head = await call(storage, "HEAD", first["video_url"])
        assert head.status == 200
        assert head.body == b""

        clock.advance(20.0)
        second = (await result(http, task_id)).json()["videos"][0]
        assert second["video_url"] != first["video_url"]  # a fresh link per answer
        assert (await call(storage, "GET", first["video_url"])).status == 200

        clock.advance(15.0)  # 35 s after the first answer, 15 s after the second
        expired = await call(storage, "GET", first["video_url"])
        assert expired.status == 403
        assert b"AccessDenied" in expired.body
        assert b"Request has expired" in expired.body
        assert (await call(storage, "GET", second["video_url"])).status == 200

        good = second["video_url"]
        forged = good[:-1] + ("1" if good.endswith("0") else "0")
        other_task = good.replace(f"{task_id}.mp4", f"{task_id}x.mp4")
        unsigned = good.split("?")[0]
        later = re.sub(r"expires=(\d+)", lambda m: f"expires={int(m[1]) + 999}", good)
        for url in (forged, other_task, unsigned, later):
            denied = await call(storage, "GET", url)
            assert denied.status == 403, url
            assert denied.body.startswith(b"<?xml")
        assert fake.stats.requests["video"] == 9
        assert fake.stats.video_requests_with_authorization == 0


async def test_video_requests_with_authorization_are_served_but_counted() -> None:
    async with serve(task_duration=(0.0, 0.0)) as (fake, http):
        task_id = await submit_ok(http)
        url = (await result(http, task_id)).json()["videos"][0]["video_url"]
        leaky = await call(http, "GET", url)  # this session sends the key everywhere
        assert leaky.status == 200
        assert leaky.body == CLIP.read_bytes()
        async with aiohttp.ClientSession() as storage:
            assert (await call(storage, "GET", url)).status == 200
        assert fake.stats.requests["video"] == 2
        assert fake.stats.video_requests_with_authorization == 1


# -- rate limits, balance, revocation ---------------------------------------------------


async def test_submit_rate_limit_with_retry_after() -> None:
    clock = ManualClock()
    limit = RateLimit(2, per=10)
    async with (
        serve(clock=clock, submit_limit=limit) as (fake, http),
        aiohttp.ClientSession(fake.url) as anon,
    ):
        await submit_ok(http)
        clock.advance(3.0)
        await submit_ok(http)
        # A wrong key is turned away before the limiter: it does not use up the quota.
        assert (await submit(anon, headers={"Authorization": "Bearer nope"})).status == 403
        refused = await submit(http)
        assert refused.status == 429
        assert refused.reason == "RATE_LIMIT_EXCEEDED"
        assert refused.headers["Retry-After"] == "7"  # the first slot frees 10 s after it
        clock.advance(6.5)
        assert (await submit(http)).headers["Retry-After"] == "1"  # ceil(0.5)
        clock.advance(0.5)
        await submit_ok(http)  # sliding: the first request left the window
        assert (await submit(http)).headers["Retry-After"] == "3"
        # task-result has no limit here
        for _ in range(5):
            assert (await result(http, "missing")).status == 404
        stats = fake.stats
        assert stats.task_count == 3
        assert stats.rate_limited == {"submit": 3, "task_result": 0, "video": 0, "other": 0}
        assert stats.errors["RATE_LIMIT_EXCEEDED"] == 3
        assert stats.requests["submit"] == 7


async def test_result_rate_limit_without_retry_after() -> None:
    clock = ManualClock()
    async with serve(
        clock=clock, result_limit=RateLimit(3, per=60), retry_after=False, task_duration=(0, 0)
    ) as (fake, http):
        task_id = await submit_ok(http)
        for _ in range(3):
            assert (await result(http, task_id)).status == 200
        refused = await result(http, task_id)
        assert refused.status == 429
        assert refused.reason == "RATE_LIMIT_EXCEEDED"
        assert "Retry-After" not in refused.headers
        for _ in range(3):  # submits are limited separately (here: not at all)
            await submit_ok(http)
        clock.advance(60.0)
        assert (await result(http, task_id)).status == 200
        assert fake.stats.polls == {task_id: 4}  # a 429'd poll is not an answer
        assert fake.stats.rate_limited["task_result"] == 1


async def test_balance_runs_out() -> None:
    async with serve(balance=2) as (fake, http):
        await submit_ok(http)
        await submit_ok(http, {"prompt": "another"})
        for _ in range(2):
            answer = await submit(http, {"prompt": "one more"})
            assert answer.status == 400
            assert answer.reason == "BILLING_BALANCE_NOT_ENOUGH"
        assert fake.stats.task_count == 2
    async with serve(balance=0) as (_, http):
        assert (await submit(http)).reason == "BILLING_BALANCE_NOT_ENOUGH"


async def test_revoke_key() -> None:
    async with serve(task_duration=(0, 0)) as (fake, http):
        task_id = await submit_ok(http)
        url = (await result(http, task_id)).json()["videos"][0]["video_url"]
        fake.revoke_key()
        for answer in (await submit(http), await result(http, task_id)):
            assert answer.status == 403
            assert answer.reason == "INVALID_API_KEY"
        # Storage is not the API: a link already handed out still works.
        async with aiohttp.ClientSession() as storage:
            assert (await call(storage, "GET", url)).status == 200
        assert fake.stats.task_count == 1


# -- statistics -------------------------------------------------------------------------


async def test_stats_count_what_clients_do() -> None:
    clock = ManualClock()
    async with serve(clock=clock, task_duration=(5.0, 5.0)) as (fake, http):
        before = fake.stats
        a = await submit_ok(http, {"prompt": "a cat"})
        b = await submit_ok(http, {"prompt": "a cat", "enable_prompt_expansion": True})
        await submit_ok(http, {"prompt": "a cat", "enable_prompt_expansion": False})
        await submit_ok(http, {"prompt": "a cat", "image_url": "https://x.test/1.png"})
        await submit_ok(http, {"prompt": "a cat", "image_url": "https://x.test/1.png"})
        await submit(http, {"prompt": ""})  # refused: neither a task nor a duplicate
        for _ in range(3):
            await result(http, a)
        await result(http, b)
        await result(http, "unknown")
        await call(http, "GET", "/elsewhere")

        stats = fake.stats
        assert before.task_count == 0  # a snapshot does not move
        assert before.requests["submit"] == 0
        assert stats.task_count == 5
        assert stats.duplicate_submissions == 2
        assert stats.requests == {"submit": 6, "task_result": 5, "video": 0, "other": 1}
        assert stats.polls == {a: 3, b: 1}
        assert stats.errors == {"INVALID_REQUEST_BODY": 1, "TASK_NOT_FOUND": 1, "API_NOT_FOUND": 1}
        record = stats.tasks[a]
        assert record == fake.task(a)
        assert record.request == SubmitRequest(
            "minimax-video-01", {"prompt": "a cat", "enable_prompt_expansion": True}
        )
        assert record.submitted_at == clock.now()
        assert record.finishes_at == clock.now() + 5.0
        assert record.final_status == SUCCEED
        with pytest.raises(KeyError, match="no task"):
            fake.task("unknown")

        body = stats.to_dict()
        assert json.loads(json.dumps(body)) == body
        assert body["task_count"] == 5
        assert body["tasks"][a]["finishes_at"] == record.finishes_at
        assert body["tasks"][a]["finishes_wall"] == clock.wall() + 5.0
        assert body["tasks"][a]["final_status"] == SUCCEED
        assert "tasks" not in stats.to_dict(include_tasks=False)


async def test_stats_endpoint_needs_no_key_and_is_not_counted() -> None:
    async with (
        serve(submit_limit=RateLimit(1), result_limit=RateLimit(1)) as (fake, http),
        aiohttp.ClientSession(fake.url) as anon,
    ):
        task_id = await submit_ok(http)
        await submit(http)  # 429
        for _ in range(3):  # neither auth nor the limits apply
            answer = await call(anon, "GET", "/_simulator/stats")
            assert answer.status == 200
        assert answer.json() == fake.stats.to_dict()
        assert answer.json()["tasks"][task_id]["prompt"] == "a cat surfing a wave"
        assert answer.json()["rate_limited"]["submit"] == 1
        light = await call(anon, "GET", "/_simulator/stats", params={"tasks": "0"})
        assert "tasks" not in light.json()
        assert light.json()["task_count"] == 1
        assert fake.stats.requests == {"submit": 2, "task_result": 0, "video": 0, "other": 0}


async def test_pytest_fixture(fake_novita: FakeNovita) -> None:
    assert fake_novita.api_key == "sk-simulated"
    async with aiohttp.ClientSession(fake_novita.url) as http:
        answer = await submit(http, headers={"Authorization": "Bearer sk-simulated"})
    assert answer.status == 200
    assert fake_novita.stats.task_count == 1


# -- pure parts, by property ------------------------------------------------------------


@given(
    requests=st.integers(1, 5),
    per=st.floats(0.5, 10.0),
    gaps=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=60),
)
def test_sliding_window_never_admits_more_than_the_limit(
    requests: int, per: float, gaps: list[float]
) -> None:
    limiter = SlidingWindowLog(RateLimit(requests, per))
    now, accepted = 0.0, []
    for gap in gaps:
        now += gap
        wait = limiter.acquire(now)
        if wait is None:
            accepted.append(now)
            assert sum(1 for t in accepted if t + per > now) <= requests
        else:
            # Refused only when full, and told exactly when the oldest slot frees.
            in_window = [t for t in accepted if t + per > now]
            assert len(in_window) == requests
            assert wait == pytest.approx(in_window[0] + per - now)
            assert wait > 0


@given(
    low=st.floats(0.0, 100.0),
    spread=st.floats(0.0, 100.0),
    queue_fraction=st.floats(0.0, 1.0),
    eta_error=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**32),
    probes=st.lists(st.floats(-1.0, 250.0), min_size=2, max_size=30),
)
def test_task_state_only_moves_forward(
    low: float,
    spread: float,
    queue_fraction: float,
    eta_error: float,
    seed: int,
    probes: list[float],
) -> None:
    task = draw_task(
        random.Random(seed),
        SubmitRequest("minimax-video-01", {"prompt": "p"}),
        now=0.0,
        wall=0.0,
        task_duration=(low, low + spread),
        queue_fraction=queue_fraction,
        failure_rate=0.5,
        eta_error=eta_error,
    )
    rank = {QUEUED: 0, PROCESSING: 1, task.final_status: 2}
    states = [task.state_at(t) for t in sorted(probes)]
    assert [rank[s.status] for s in states] == sorted(rank[s.status] for s in states)
    assert [s.progress_percent for s in states] == sorted(s.progress_percent for s in states)
    for s in states:
        assert 0 <= s.progress_percent <= (100 if s.status == task.final_status else 99)
        assert s.eta >= 0
        assert (s.eta == 0) is (s.status == task.final_status)
    assert task.state_at(task.finishes_at).status == task.final_status


# -- command line -----------------------------------------------------------------------


def test_cli_refuses_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--submit-limit", "lots"], ["--failure-rate", "2"], ["--task-duration", "5"]):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(argv)
        assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_cli_serves_until_signalled(signum: signal.Signals) -> None:
    command = [
        sys.executable,
        "-W",
        "error",
        "-m",
        "novita_video.testing",
        "--port",
        "0",
        "--api-key",
        "sk-cli",
        "--task-duration",
        "0",
        "0",
        "--submit-limit",
        "1/60",
        "--no-retry-after",
        "--speed",
        "10",
        "--seed",
        "1",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    async with await anyio.open_process(command, env=env) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        line = b""
        with anyio.fail_after(10):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive()
        match = re.fullmatch(
            r"Simulated Novita API on (http://127\.0\.0\.1:\d+) \(key: sk-cli\)\n", line.decode()
        )
        assert match, line
        headers = {"Authorization": "Bearer sk-cli"}
        async with aiohttp.ClientSession(match[1], headers=headers) as http:
            task_id = await submit_ok(http)
            assert (await task_of(http, task_id))["status"] == SUCCEED
            refused = await submit(http)
            assert refused.status == 429
            assert "Retry-After" not in refused.headers
        process.send_signal(signum)
        with anyio.fail_after(10):
            assert await process.wait() == 0
        rest = b"".join([chunk async for chunk in process.stdout])
        errors = b"".join([chunk async for chunk in process.stderr])
    assert rest == b""  # exactly one line
    # How to point a client at it, and nothing else: no traceback, no warning (-W error).
    assert errors.decode().splitlines() == [
        f"  export NOVITA_BASE_URL={match[1]} NOVITA_API_KEY=sk-cli",
        "Ctrl-C stops it.",
    ]
