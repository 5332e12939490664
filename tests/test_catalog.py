"""One table per model (``novita_video._catalog``), and both rooms held to it over HTTP.

For every model: the SDK has a request type whose fields, required ones and defaults are
the table's; every boundary of every field (generated from the table) is accepted or
refused alike by the request type and by the simulator's endpoint, over real HTTP; a
request of every field passes the simulator and keeps what was sent; task results carry
the table's ``task_type``. Then the facts of the current reference pages that the SDK
and the simulator once got wrong.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest

from novita_video import (
    MODELS,
    AsyncRequest,
    Client,
    HailuoRequest,
    InvalidRequestError,
    KlingI2VRequest,
    KlingT2VRequest,
    Lora,
    Request,
    WanI2VRequest,
    WanT2VRequest,
)
from novita_video._catalog import CATALOG, MAX_IMAGE_BYTES, Field, Model
from novita_video._requests import to_request
from novita_video._wire import dump_request
from novita_video.testing import FakeNovita, RateLimit
from tests.support import ManualClock
from tests.testing.simulator_support import serve

pytestmark = pytest.mark.anyio

IMG = "https://img.example/first.png"
END = "https://img.example/last.png"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


async def post(http: aiohttp.ClientSession, endpoint: str, body: object) -> tuple[int, Any]:
    async with http.post(f"/v3/async/{endpoint}", json=body) as response:
        return response.status, await response.json()


def minimal(model: Model) -> dict[str, Any]:
    return {
        field.name: IMG if field.kind == "url" else "a fox"
        for field in model.fields
        if field.required
    }


def boundaries(field: Field) -> list[tuple[object, bool]]:
    """Values at and past each documented edge of ``field``: (value, valid by the page)."""
    kind = field.kind
    if kind == "text":
        low, high = int(field.low or 0), int(field.high or 0)
        cases: list[tuple[object, bool]] = [("x" * max(low, 1), True), ("x" * high, True)]
        cases += [("x" * (high + 1), False), (7, False)]
        if low:
            cases.append(("", False))
        return cases
    if kind == "url":
        return [(IMG, True), ("cat.png", False), ("ftp://h/x.png", False), (7, False)]
    if kind == "image":
        return [
            (IMG, True),
            (PNG_URI, True),
            ("data:image/gif;base64,R0lG", False),
            ("data:image/png;base64,@@@", False),
            (7, False),
        ]
    if kind == "bool":
        return [(True, True), (False, True), (1, False), ("true", False)]
    if kind == "choice":
        wrong = [(value, False) for value in ("x", 3, True) if value not in field.choices]
        return [(choice, True) for choice in field.choices] + wrong
    if kind in ("int", "number"):
        assert field.low is not None
        assert field.high is not None
        low, high = field.low, field.high
        cases = [(int(low), True), (int(high), True), (int(low) - 1, False)]
        cases += [(int(high) + 1, False), (True, False), ("1", False)]
        cases.append((low + 0.5, kind == "number"))
        return cases
    assert kind == "loras"
    lora = {"path": "https://l.example/a.safetensors", "scale": 4}
    return [
        ([lora] * 3, True),
        ([], True),
        ([lora] * 4, False),
        ([{"path": "", "scale": 1}], False),
        ([{"path": "a", "scale": 4.5}], False),
        ("a", False),
    ]


CASES = [
    pytest.param(model, field, value, valid, id=f"{model.endpoint}-{field.name}-{number}")
    for model in CATALOG.values()
    for field in model.fields
    for number, (value, valid) in enumerate(boundaries(field))
]


def table_accepts(model: Model, body: dict[str, Any], field_valid: bool) -> bool:
    if not field_valid:
        return False
    filled = {f.name: f.default for f in model.fields if f.default is not None} | body
    return all(rule.check(filled) is None for rule in model.rules)


def sdk_accepts(model: Model, body: dict[str, Any]) -> bool:
    try:
        to_request(body, model.endpoint)
    except InvalidRequestError:
        return False
    return True


@pytest.mark.parametrize("model", CATALOG.values(), ids=lambda m: m.endpoint)
def test_each_model_has_a_request_type_with_the_tables_fields(model: Model) -> None:
    cls = MODELS[model.endpoint]
    assert cls.endpoint == model.endpoint
    attributes = attrs.fields_dict(cls)
    assert set(attributes) == {field.name for field in model.fields}
    for field in model.fields:
        attribute = attributes[field.name]
        assert (attribute.default is attrs.NOTHING) is field.required, field.name
        if not field.required:
            # None leaves it out (the server's default applies) or it is the page's default.
            assert attribute.default in (None, field.default), field.name


async def test_every_edge_of_every_field_is_judged_alike_by_the_sdk_and_the_simulator() -> None:
    # One simulator for all cases (a server per case would take minutes).
    disagreements = []
    async with serve() as (_, http):
        for case in CASES:
            model, field, value, field_valid = case.values
            body = minimal(model) | {field.name: value}
            expected = table_accepts(model, body, field_valid)
            status, answer = await post(http, model.endpoint, body)
            served = status == 200
            if not served:
                assert answer["reason"] == "INVALID_REQUEST_BODY"
                # A field's own error names it; a rule's names the field the rule is about.
                named = {field.name, *(rule.field for rule in model.rules)}
                assert any(name in answer["message"] for name in named), answer
            sdk = sdk_accepts(model, body)
            if (served, sdk) != (expected, expected):
                disagreements.append((case.id, value, expected, served, sdk))
    assert not disagreements, disagreements


FULL: list[Request] = [
    HailuoRequest(
        "a kite", image=IMG, end_image=PNG, duration=6, resolution="1080P", fast_pretreatment=True
    ),
    KlingT2VRequest("a fox", negative_prompt="", duration=10, guidance_scale=0.3, mode="Standard"),
    KlingI2VRequest(IMG, "a cat", end_image_url=END, mode="Professional", guidance_scale=1),
    WanT2VRequest(
        "a fox",
        negative_prompt="blur",
        width=720,
        height=1280,
        loras=[Lora("https://l.example/a.safetensors", 0.8)],
        seed=9_999_999_999,
        steps=40,
        guidance_scale=0.5,
        flow_shift=1,
        enable_safety_checker=False,
        fast_mode=True,
    ),
    WanI2VRequest(IMG, "a fox", width=480, height=832),
]


@pytest.mark.parametrize("request_", FULL, ids=lambda r: r.endpoint)
async def test_a_request_of_every_field_keeps_what_was_sent_and_answers_its_task_type(
    request_: Request,
) -> None:
    model = CATALOG[request_.endpoint]
    clock = ManualClock()
    async with serve(clock=clock, task_duration=(5.0, 5.0)) as (fake, http):
        sent = dump_request(request_)
        status, answer = await post(http, request_.endpoint, sent)
        assert status == 200, answer
        record = fake.task(answer["task_id"])
        assert record.request.ignored == ()
        defaults = {f.name: f.default for f in model.fields if f.default is not None}
        assert dict(record.request.body) == defaults | sent
        clock.time += 5.0
        async with http.get("/v3/async/task-result", params={"task_id": record.task_id}) as got:
            result = await got.json()
    assert result["task"]["task_type"] == model.task_type_of(defaults | sent)


def test_task_types_are_the_reference_pages_names() -> None:
    types = {
        endpoint: model.task_type_of({f.name: f.default for f in model.fields})
        for endpoint, model in CATALOG.items()
    }
    assert types == {
        "minimax-video-01": "MINIMAX_VIDEO_01",
        "minimax-hailuo-02": "MINIMAX_HAILUO_02",
        "kling-v1.6-t2v": "KLING_V16_T2V_STANDARD",
        "kling-v1.6-i2v": "KLING_V16_I2V_STANDARD",
        "wan-t2v": "WAN_TXT_TO_VIDEO",
        "wan-i2v": "WAN_IMG_TO_VIDEO",
    }


# The facts that once drifted.


async def test_hailuo_sends_image_and_the_simulator_ignores_an_old_image_url() -> None:
    request = HailuoRequest("a gentleman by a car", image=IMG, end_image=END)
    assert dump_request(request)["image"] == IMG
    assert "image_url" not in dump_request(request)
    async with serve() as (fake, http):
        status, answer = await post(http, "minimax-hailuo-02", {"prompt": "a", "image_url": IMG})
        assert status == 200
        old = fake.task(answer["task_id"]).request
        # The current page reads `image`: an image_url makes a text-to-video task.
        assert old.ignored == ("image_url",)
        assert old.image_url is None
        status, answer = await post(http, "minimax-hailuo-02", dump_request(request))
        assert status == 200
        assert fake.task(answer["task_id"]).request.image_url == IMG


async def test_a_local_image_goes_inline_and_a_big_one_is_refused_before_sending(
    tmp_path: Path,
) -> None:
    small = tmp_path / "first.png"
    small.write_bytes(PNG)
    big = tmp_path / "big.png"
    with big.open("wb") as file:
        file.write(PNG)
        file.truncate(MAX_IMAGE_BYTES + 1)
    async with FakeNovita(task_duration=(0.05, 0.1)) as fake:
        async with Client(fake.api_key, base_url=fake.url, submit_rpm=None) as client:
            task_id = await client.submit(HailuoRequest("a kite", image=small))
            with pytest.raises(InvalidRequestError, match=f"at most {MAX_IMAGE_BYTES}"):
                await client.submit(HailuoRequest("a kite", image=big))
            with pytest.raises(InvalidRequestError, match="JPEG, PNG or WebP"):
                HailuoRequest("a kite", end_image=b"GIF89a....")
            with pytest.raises(InvalidRequestError, match=r"pathlib.Path\('cat.png'\)"):
                HailuoRequest("a kite", image="cat.png")
        assert fake.stats.task_count == 1
        assert fake.task(task_id).request.body["image"] == PNG_URI


@pytest.mark.parametrize(
    ("endpoint", "body", "named"),
    [
        ("kling-v1.6-i2v", {"image_url": IMG, "prompt": "x" * 2100}, "prompt must be 1 to 2000"),
        (
            "kling-v1.6-i2v",
            {"image_url": IMG, "prompt": "a", "end_image_url": END},
            "needs mode 'Professional'",
        ),
        ("wan-t2v", {"prompt": "a", "steps": 50}, "steps must be an integer from 1 to 40"),
        ("wan-t2v", {"prompt": "a", "guidance_scale": 11}, "guidance_scale must be a number"),
        ("wan-t2v", {"prompt": "a", "flow_shift": 0.5}, "flow_shift must be a number from 1"),
        ("wan-t2v", {"prompt": "a", "width": 480}, "width x height"),
        ("kling-v1.6-t2v", {"prompt": "a", "duration": 7}, "duration must be 5 or 10"),
        ("wan-t2v", {"prompt": "a", "extra": {"webhook": {}}}, "extra.webhook.url is required"),
        ("wan-t2v", {"prompt": "a", "extra": []}, "extra must be an object"),
    ],
)
async def test_the_simulator_refuses_what_the_pages_refuse(
    endpoint: str, body: dict[str, Any], named: str
) -> None:
    async with serve() as (fake, http):
        status, answer = await post(http, endpoint, body)
        assert (status, answer["reason"]) == (400, "INVALID_REQUEST_BODY")
        assert named in answer["message"]
        assert fake.stats.task_count == 0


async def test_wan_needs_no_model_name_and_fills_the_pages_defaults() -> None:
    async with serve() as (fake, http):
        status, answer = await post(http, "wan-t2v", {"prompt": "a fox"})
        assert status == 200
        body = dict(fake.task(answer["task_id"]).request.body)
    assert body == {
        "prompt": "a fox",
        "width": 832,
        "height": 480,
        "seed": -1,
        "steps": 30,
        "guidance_scale": 5.0,
        "flow_shift": 5.0,
        "enable_safety_checker": True,
        "fast_mode": False,
    }


async def test_only_known_endpoints_take_submits() -> None:
    async with serve() as (fake, http):
        for endpoint in ("minimax-hailuo-03", "kling-v9-t2v", "task-result"):
            status, answer = await post(http, endpoint, {"prompt": "a"})
            assert status == 404, endpoint
            assert answer["reason"] == "API_NOT_FOUND"
        assert fake.stats.requests["submit"] == 0


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
        assert (await post(http, "wan-t2v", {"prompt": "a"}))[0] == 200
        status, answer = await post(http, "minimax-hailuo-02", {"prompt": "b"})
        assert status == 429
        assert "minimax-hailuo-02" in answer["message"]
        assert fake.stats.task_count == 3


async def test_every_typed_request_makes_a_clip_through_the_client() -> None:
    requests: list[Request] = [*FULL, AsyncRequest("wan-t2v", {"prompt": "a fox"})]
    async with FakeNovita(task_duration=(0.05, 0.1)) as fake:
        async with Client(fake.api_key, base_url=fake.url, submit_rpm=None) as client:
            async with client.generate(requests) as outcomes:
                done = [outcome async for outcome in outcomes]
        assert sorted(o.index for o in done if o.ok) == list(range(len(requests)))
        bodies = [
            json.dumps(dict(fake.task(o.task_id).request.body), sort_keys=True)
            for o in done
            if o.task_id
        ]
    assert len(bodies) == len(requests)
