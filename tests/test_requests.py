"""The request types of each model: their rules, their bodies, and to_request."""

from __future__ import annotations

from typing import Any

import pytest

from novita_video import (
    MODELS,
    AsyncRequest,
    HailuoRequest,
    InvalidRequestError,
    KlingI2VRequest,
    VideoRequest,
)
from novita_video._requests import to_request
from novita_video._wire import dump_request

IMG = "https://x.example/first.png"


@pytest.mark.parametrize(
    ("make", "field", "words"),
    [
        (lambda: HailuoRequest("a kite", duration=8), "duration", "6 or 10"),
        (lambda: HailuoRequest("a kite", duration=True), "duration", "6 or 10"),
        (lambda: HailuoRequest("a kite", resolution="4K"), "resolution", "'768P' or '1080P'"),
        (
            lambda: HailuoRequest("a kite", duration=10, resolution="1080P"),
            "resolution",
            "6-second",
        ),
        (lambda: HailuoRequest("", duration=6), "prompt", "empty"),
        (lambda: HailuoRequest("ok", image="ftp://x/y.png"), "image", "'ftp'"),
        (lambda: HailuoRequest("ok", end_image="cat.png"), "end_image", "pathlib.Path"),
        (lambda: KlingI2VRequest("cat.png", "a cat"), "image_url", "scheme is none"),
        (lambda: KlingI2VRequest(IMG, "x" * 2001), "prompt", "2000"),
        (lambda: KlingI2VRequest(IMG, "ok", negative_prompt="x" * 2001), "negative_prompt", "2000"),
        (lambda: KlingI2VRequest(IMG, "ok", mode="std"), "mode", "'Standard' or 'Professional'"),
        (lambda: KlingI2VRequest(IMG, "ok", end_image_url=IMG), "end_image_url", "Professional"),
        (lambda: KlingI2VRequest(IMG, "ok", guidance_scale=1.5), "guidance_scale", "0 to 1"),
        (lambda: KlingI2VRequest(IMG, "ok", negative_prompt="  "), "negative_prompt", "empty"),
        (
            lambda: KlingI2VRequest(IMG, "ok", end_image_url="x", mode="Professional"),
            "end_image_url",
            "scheme",
        ),
        (lambda: AsyncRequest("Wan T2V", {"prompt": "x"}), "endpoint", "endpoint name"),
        (lambda: AsyncRequest("wan-t2v", ["prompt"]), "body", "JSON object"),
        (lambda: AsyncRequest("wan-t2v", {"seed": float("nan")}), "body", "JSON-serialisable"),
        (lambda: AsyncRequest("wan-t2v", {"when": object()}), "body", "JSON-serialisable"),
    ],
)
def test_each_rule_names_its_field(make: Any, field: str, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words) as caught:
        make()
    assert caught.value.field == field


def test_bodies_carry_what_was_set_and_nothing_more() -> None:
    assert dump_request(HailuoRequest("a kite", duration=10)) == {
        "prompt": "a kite",
        "duration": 10,
        "resolution": "768P",
        "enable_prompt_expansion": True,
        "fast_pretreatment": False,
    }
    assert KlingI2VRequest(IMG, "a cat", negative_prompt="").negative_prompt == ""
    assert KlingI2VRequest(IMG, "a", end_image_url=IMG, mode="Professional").mode == "Professional"
    assert dump_request(KlingI2VRequest(IMG, "a cat", guidance_scale=0.5)) == {
        "image_url": IMG,
        "prompt": "a cat",
        "guidance_scale": 0.5,
    }
    body = {"prompt": "a fox", "width": 832, "height": 480, "seed": -1}
    request = AsyncRequest("wan-t2v", body)
    body["prompt"] = "changed later"  # the request keeps its own copy
    assert dump_request(request)["prompt"] == "a fox"
    assert request.prompt == "a fox"
    assert request.endpoint == "wan-t2v"


def test_to_request_by_model() -> None:
    assert to_request("a cat") == VideoRequest("a cat")
    assert to_request({"prompt": "a kite", "duration": 10}, "minimax-hailuo-02") == HailuoRequest(
        "a kite", duration=10
    )
    assert to_request({"prompt": "a cat", "image_url": None}) == VideoRequest("a cat")
    assert to_request({"image_url": IMG, "prompt": "a cat"}, "kling-v1.6-i2v") == KlingI2VRequest(
        IMG, "a cat"
    )
    request = AsyncRequest("wan-t2v", {"prompt": "x"})
    assert to_request(request, "kling-v1.6-i2v") is request
    assert set(MODELS) == {
        "minimax-video-01",
        "minimax-hailuo-02",
        "kling-v1.6-t2v",
        "kling-v1.6-i2v",
        "wan-t2v",
        "wan-i2v",
    }


@pytest.mark.parametrize(
    ("item", "model", "field"),
    [
        ("a cat", "sora-2", "model"),
        ("a cat", "kling-v1.6-i2v", "image_url"),
        ({"prompt": "a cat", "duration": 10}, "minimax-video-01", "duration"),
        ({"image_url": IMG}, "kling-v1.6-i2v", "prompt"),
        (42, "minimax-video-01", "prompt"),
        ({"prompt": None}, "minimax-video-01", "prompt"),
    ],
)
def test_to_request_errors(item: object, model: str, field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        to_request(item, model)
    assert caught.value.field == field
