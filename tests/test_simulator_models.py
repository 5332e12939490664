"""The simulator's other models: Minimax Hailuo-02, Kling v1.6 i2v and Wan t2v.

Each submit endpoint validates its own body, records which endpoint made the task and
answers task-results with that model's ``task_type``; duplicates compare endpoint and
body; each model has its own submit limit. Checked over real HTTP with a plain aiohttp
session, and once with the SDK's typed requests, whose bodies the simulator must accept.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from simulator_support import serve
from support import ManualClock

from novita_video import AsyncRequest, Client, HailuoRequest, KlingI2VRequest, Request
from novita_video.testing import FakeNovita, RateLimit

pytestmark = pytest.mark.anyio

IMG = "https://img.example/first.png"
END = "https://img.example/last.png"
WAN = {"model_name": "wan2.1-t2v", "prompt": "a fox", "width": 832, "height": 480, "seed": -1}


async def post(http: aiohttp.ClientSession, endpoint: str, body: object) -> tuple[int, Any]:
    async with http.post(f"/v3/async/{endpoint}", json=body) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("endpoint", "body", "kept", "task_type"),
    [
        (
            "minimax-hailuo-02",
            {"prompt": "a kite", "duration": 10},
            {
                "prompt": "a kite",
                "duration": 10,
                "resolution": "768P",
                "enable_prompt_expansion": True,
            },
            "MINIMAX_HAILUO_02",
        ),
        (
            "minimax-hailuo-02",
            {"prompt": "a kite", "image_url": IMG, "resolution": "1080P", "unknown": 1},
            {
                "prompt": "a kite",
                "image_url": IMG,
                "duration": 6,
                "resolution": "1080P",
                "enable_prompt_expansion": True,
            },
            "MINIMAX_HAILUO_02",
        ),
        (
            "kling-v1.6-i2v",
            {"image_url": IMG, "prompt": "x" * 2500, "negative_prompt": ""},
            {
                "image_url": IMG,
                "prompt": "x" * 2500,
                "negative_prompt": "",
                "guidance_scale": 0.5,
                "mode": "Standard",
            },
            "KLING_V1_6_I2V",
        ),
        (
            "kling-v1.6-i2v",
            {
                "image_url": IMG,
                "prompt": "a cat",
                "end_image_url": END,
                "mode": "Professional",
                "guidance_scale": 1,
            },
            {
                "image_url": IMG,
                "prompt": "a cat",
                "end_image_url": END,
                "guidance_scale": 1,
                "mode": "Professional",
            },
            "KLING_V1_6_I2V",
        ),
        (
            "wan-t2v",
            {
                **WAN,
                "negative_prompt": "blur",
                "steps": 30,
                "guidance_scale": 5.0,
                "flow_shift": 3,
                "loras": [{"path": "https://l.example/a.safetensors", "scale": 0.8}],
                "enable_safety_checker": False,
            },
            {
                **WAN,
                "negative_prompt": "blur",
                "steps": 30,
                "guidance_scale": 5.0,
                "flow_shift": 3,
                "loras": [{"path": "https://l.example/a.safetensors", "scale": 0.8}],
                "enable_safety_checker": False,
            },
            "WAN_T2V",
        ),
    ],
)
async def test_each_model_keeps_its_fields_and_answers_its_task_type(
    endpoint: str, body: dict[str, Any], kept: dict[str, Any], task_type: str
) -> None:
    clock = ManualClock()
    async with serve(clock=clock, task_duration=(5.0, 5.0)) as (fake, http):
        status, answer = await post(http, endpoint, body)
        assert status == 200, answer
        task_id = answer["task_id"]
        record = fake.task(task_id)
        assert record.endpoint == endpoint
        assert dict(record.request.body) == kept
        clock.time += 5.0
        async with http.get("/v3/async/task-result", params={"task_id": task_id}) as response:
            result = await response.json()
        assert result["task"]["task_type"] == task_type
        assert result["task"]["status"] == "TASK_STATUS_SUCCEED"
        assert result["videos"][0]["video_url"].startswith(fake.url + "/storage/")
        listed = fake.stats.to_dict()["tasks"][task_id]
        assert (listed["endpoint"], listed["task_type"]) == (endpoint, task_type)
        assert listed["body"] == kept


@pytest.mark.parametrize(
    ("endpoint", "body", "named"),
    [
        ("minimax-hailuo-02", {}, "prompt is required"),
        ("minimax-hailuo-02", {"prompt": "x" * 2001}, "prompt must be 1 to 2000"),
        ("minimax-hailuo-02", {"prompt": "a", "duration": 8}, "duration must be 6 or 10"),
        ("minimax-hailuo-02", {"prompt": "a", "duration": "6"}, "duration must be 6 or 10"),
        ("minimax-hailuo-02", {"prompt": "a", "duration": True}, "duration"),
        ("minimax-hailuo-02", {"prompt": "a", "resolution": "720P"}, "resolution must be"),
        ("minimax-hailuo-02", {"prompt": "a", "duration": 10, "resolution": "1080P"}, "1080P"),
        ("minimax-hailuo-02", {"prompt": "a", "image_url": "cat.png"}, "image_url"),
        ("minimax-hailuo-02", {"prompt": "a", "enable_prompt_expansion": 1}, "enable_prompt"),
        ("kling-v1.6-i2v", {"prompt": "a cat"}, "image_url is required"),
        ("kling-v1.6-i2v", {"image_url": IMG}, "prompt is required"),
        ("kling-v1.6-i2v", {"image_url": IMG, "prompt": "x" * 2501}, "prompt must be 1 to 2500"),
        ("kling-v1.6-i2v", {"image_url": IMG, "prompt": "a", "guidance_scale": 1.5}, "guidance"),
        ("kling-v1.6-i2v", {"image_url": IMG, "prompt": "a", "guidance_scale": "0.5"}, "guidance"),
        ("kling-v1.6-i2v", {"image_url": IMG, "prompt": "a", "end_image_url": 3}, "end_image_url"),
        ("kling-v1.6-i2v", {"image_url": IMG, "prompt": "a", "mode": "std"}, "mode must be"),
        ("kling-v1.6-i2v", {"image_url": IMG, "prompt": "a", "negative_prompt": 1}, "negative"),
        ("wan-t2v", {**WAN, "model_name": None}, "model_name must be a string"),
        ("wan-t2v", {k: v for k, v in WAN.items() if k != "seed"}, "seed is required"),
        ("wan-t2v", {**WAN, "seed": 1.5}, "seed must be an integer"),
        ("wan-t2v", {**WAN, "width": 1000}, "width x height"),
        ("wan-t2v", {**WAN, "steps": 0}, "steps must be an integer from 1"),
        ("wan-t2v", {**WAN, "loras": [{"path": "a"}] * 4}, "loras must be a list of at most 3"),
        ("wan-t2v", {**WAN, "loras": [{"path": "", "scale": 1}]}, "loras[0].path"),
        ("wan-t2v", {**WAN, "loras": [{"path": "a", "scale": "1"}]}, "loras[0].scale"),
        ("wan-t2v", {**WAN, "enable_safety_checker": "no"}, "enable_safety_checker"),
        ("wan-t2v", {**WAN, "extra": []}, "extra must be an object"),
        ("wan-t2v", {**WAN, "extra": {"webhook": "http://127.0.0.1/"}}, "extra.webhook must"),
        ("wan-t2v", {**WAN, "extra": {"webhook": {}}}, "extra.webhook.url is required"),
        ("minimax-video-01", {"prompt": "a", "extra": {"webhook": {"url": "/x"}}}, "webhook.url"),
    ],
)
async def test_each_model_refuses_a_bad_field_by_name(
    endpoint: str, body: dict[str, Any], named: str
) -> None:
    async with serve() as (fake, http):
        status, answer = await post(http, endpoint, body)
        assert status == 400
        assert answer["reason"] == "INVALID_REQUEST_BODY"
        assert named in answer["message"]
        assert fake.stats.task_count == 0


async def test_only_known_endpoints_take_submits() -> None:
    async with serve() as (fake, http):
        for endpoint in ("kling-v1.6-t2v", "wan-i2v", "minimax-hailuo-03", "task-result"):
            status, answer = await post(http, endpoint, {"prompt": "a"})
            assert status == 404, endpoint
            assert answer["reason"] == "API_NOT_FOUND"
        assert fake.stats.requests["submit"] == 0
        assert fake.stats.requests["other"] == 4


async def test_duplicates_compare_endpoint_and_body() -> None:
    async with serve() as (fake, http):
        hook = {"webhook": {"url": "http://127.0.0.1:9/hook"}}
        for endpoint, body in [
            ("minimax-video-01", {"prompt": "a kite"}),
            ("minimax-hailuo-02", {"prompt": "a kite"}),  # same prompt, other model: new
            ("minimax-hailuo-02", {"prompt": "a kite", "duration": 6}),  # the default: dup
            ("minimax-hailuo-02", {"prompt": "a kite", "duration": 10}),  # new
            ("minimax-hailuo-02", {"prompt": "a kite", "extra": hook}),  # delivery aside: dup
            ("kling-v1.6-i2v", {"image_url": IMG, "prompt": "a kite", "mode": "Standard"}),
            ("kling-v1.6-i2v", {"image_url": IMG, "prompt": "a kite", "guidance_scale": 0.5}),
        ]:
            status, answer = await post(http, endpoint, body)
            assert status == 200, answer
        assert fake.stats.task_count == 7
        assert fake.stats.duplicate_submissions == 3


async def test_each_model_has_its_own_submit_limit() -> None:
    async with serve(submit_limit=RateLimit(1)) as (fake, http):
        assert (await post(http, "minimax-video-01", {"prompt": "a"}))[0] == 200
        assert (await post(http, "minimax-hailuo-02", {"prompt": "a"}))[0] == 200
        assert (await post(http, "wan-t2v", WAN))[0] == 200
        status, answer = await post(http, "minimax-hailuo-02", {"prompt": "b"})
        assert status == 429
        assert "minimax-hailuo-02" in answer["message"]
        assert fake.stats.rate_limited["submit"] == 1
        assert fake.stats.task_count == 3


async def test_the_sdk_typed_requests_pass_the_simulator() -> None:
    requests: list[Request] = [
        HailuoRequest("a kite over dunes", duration=10),
        HailuoRequest("a kite", resolution="1080P"),
        KlingI2VRequest(
            IMG, "a cat turns", end_image_url=END, guidance_scale=0.3, mode="Professional"
        ),
        AsyncRequest("wan-t2v", WAN),
    ]
    async with FakeNovita(task_duration=(0.05, 0.1)) as fake:
        async with Client(fake.api_key, base_url=fake.url, submit_rpm=None) as client:
            async with client.generate(requests) as outcomes:
                done = [outcome async for outcome in outcomes]
        assert sorted(outcome.index for outcome in done if outcome.ok) == [0, 1, 2, 3]
        types = {fake.task(o.task_id).request.task_type for o in done if o.task_id is not None}
        assert types == {"MINIMAX_HAILUO_02", "KLING_V1_6_I2V", "WAN_T2V"}
        hailuo = [t for t in fake.stats.tasks.values() if t.endpoint == "minimax-hailuo-02"]
        assert sorted(json.dumps(dict(t.request.body), sort_keys=True) for t in hailuo) == sorted(
            json.dumps(body, sort_keys=True)
            for body in (
                {
                    "prompt": "a kite over dunes",
                    "duration": 10,
                    "resolution": "768P",
                    "enable_prompt_expansion": True,
                },
                {
                    "prompt": "a kite",
                    "duration": 6,
                    "resolution": "1080P",
                    "enable_prompt_expansion": True,
                },
            )
        )
