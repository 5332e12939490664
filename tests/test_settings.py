"""Settings: one source of defaults, one error type naming the setting."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

import novita_video
from novita_video import InvalidRequestError
from novita_video._settings import BatchLimits, HTTPSettings, PollSettings, WebhookSettings

SETTINGS = [
    BatchLimits,
    HTTPSettings,
    PollSettings,
    WebhookSettings,
    novita_video.RetryPolicy,
    novita_video.AdaptiveRate,
    novita_video.PollSchedule,
]
#: Values no numeric setting takes.
NONSENSE: list[Any] = [-1, math.nan, "3", True]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda cls: cls.__name__)
def test_every_numeric_setting_refuses_nonsense_with_one_error_naming_it(settings: type) -> None:
    checked = 0
    for field in attrs.fields(settings):
        if field.validator is None or isinstance(field.default, bool):
            continue
        for value in NONSENSE:
            with pytest.raises(InvalidRequestError) as caught:
                settings(**{field.name: value})
            assert caught.value.field == field.name
            assert str(caught.value).startswith(f"{field.name}: must be ")
            assert repr(value) in str(caught.value)
            checked += 1
    assert checked >= len(NONSENSE)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda cls: cls.__name__)
def test_the_defaults_pass_their_own_checks(settings: type) -> None:
    made = settings()
    assert attrs.evolve(made) == made


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: novita_video.Client("sk", concurrency=0), "concurrency"),
        (lambda: novita_video.Client("sk", submit_rpm=0), "submit_rpm"),
        (lambda: novita_video.Client("sk", poll_rpm="fast"), "poll_rpm"),
        (lambda: novita_video.Client("sk", timeout=math.inf), "timeout"),
        (lambda: novita_video.Client("sk", max_clip_bytes=10), "max_clip_bytes"),
        (lambda: novita_video.Client("sk", webhook_fallback=0), "webhook_fallback"),
        (lambda: novita_video.Client("sk", trust_webhooks="yes"), "trust_webhooks"),
        (lambda: novita_video.RetryPolicy(max_attempts=0), "max_attempts"),
        (lambda: novita_video.AdaptiveRate(decrease=1), "decrease"),
        (lambda: novita_video.PollSchedule(min_interval=0), "min_interval"),
    ],
)
def test_client_and_policies_raise_the_same_error_type(make: Any, field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        make()
    assert caught.value.field == field


def test_unlimited_rates_are_allowed_where_documented() -> None:
    assert BatchLimits(submit_rpm=None).submit_rpm is None
    assert BatchLimits(submit_rpm=math.inf).submit_rpm == math.inf
    assert PollSettings(poll_rpm=None).poll_rpm is None
    assert HTTPSettings(timeout=1, connect_timeout=2).total == 3
    assert HTTPSettings(deadline=5).total == 5
