"""The simulator's account and unified endpoint (issue 22): the balance endpoint, its knobs,
the catalogue it serves, and the rate limit a unified submit counts against."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from novita_video.testing import FakeNovita, RateLimit
from novita_video.testing.__main__ import _fake_from_args, build_parser
from tests.testing.simulator_support import call, serve

pytestmark = pytest.mark.anyio

BALANCE = "/openapi/v1/billing/balance/detail"
CATALOG = "/v3/admin/video-unify-api/config"
UNIFIED = "/v3/video/create"


@pytest.mark.parametrize(
    ("knobs", "words"),
    [
        ({"starting_balance": "-1"}, "starting_balance"),
        ({"starting_balance": "lots"}, "starting_balance"),
        ({"starting_balance": True}, "starting_balance"),
        ({"charge_at": "later"}, "charge_at"),
        ({"prices": {"wan-t2v": "-2"}}, "prices"),
        ({"prices": ["wan-t2v"]}, "prices"),
        ({"catalog": {"configs": []}}, "catalog"),
        ({"catalog": [object()]}, "catalog"),
    ],
)
def test_bad_account_knobs_are_refused_clearly(knobs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        FakeNovita(**knobs)


async def test_the_balance_needs_the_key_and_the_catalogue_does_not() -> None:
    async with FakeNovita(starting_balance=Decimal("2.5")) as fake:
        async with aiohttp.ClientSession(fake.url) as anonymous:
            balance = await call(anonymous, "GET", BALANCE)
            catalog = await call(anonymous, "GET", CATALOG)
            wrong = await call(
                anonymous, "GET", BALANCE, headers={"Authorization": "Bearer sk-wrong"}
            )
            right = await call(
                anonymous, "GET", BALANCE, headers={"Authorization": f"Bearer {fake.api_key}"}
            )
    assert (balance.status, balance.reason) == (400, "MISSING_API_KEY")
    assert (wrong.status, wrong.reason) == (403, "INVALID_API_KEY")
    assert right.json()["availableBalance"] == "25000"
    assert catalog.status == 200
    assert fake.stats.requests["balance"] == 3
    assert fake.stats.requests["catalog"] == 1


async def test_prices_are_a_knob_and_unknown_models_have_a_default_price() -> None:
    async with serve(starting_balance="1", prices={"minimax-video-01": "0.6"}) as (fake, http):
        first = await call(http, "POST", "/v3/async/minimax-video-01", json={"prompt": "a"})
        second = await call(http, "POST", "/v3/async/minimax-video-01", json={"prompt": "b"})
        left = await call(http, "GET", BALANCE)
        unified = await call(
            http, "POST", UNIFIED, json={"model": "hunyuan-video-fast", "prompt": "c"}
        )
    assert first.status == 200
    assert (second.status, second.reason) == (400, "BILLING_BALANCE_NOT_ENOUGH")
    assert left.json()["availableBalance"] == "4000"  # $0.40 left
    # The schema's required fields are checked before the balance.
    assert (unified.status, unified.reason) == (400, "INVALID_REQUEST_BODY")
    assert "required" in unified.json()["message"]
    assert fake.spent() == Decimal("0.6")


async def test_a_unified_submit_counts_against_its_models_own_limit() -> None:
    async with serve(submit_limit=RateLimit(1, per=60)) as (fake, http):
        body = {"model": "kling-v3.0-pro-t2v", "prompt": "a fox"}
        first = await call(http, "POST", UNIFIED, json=body)
        second = await call(http, "POST", UNIFIED, json=body)
        other = await call(http, "POST", UNIFIED, json={"model": "hailuo-2.3-t2v", "prompt": "a"})
        typed = await call(http, "POST", "/v3/async/minimax-video-01", json={"prompt": "a"})
    assert [first.status, second.status, other.status, typed.status] == [200, 429, 200, 200]
    assert "for kling-v3.0-pro-t2v" in second.json()["message"]
    assert fake.stats.rate_limited["submit"] == 1


async def test_an_odd_catalogue_is_served_as_given() -> None:
    odd = [{"model": "only-one", "json_schema": {"type": "object"}}, "junk", {"x": 1}]
    async with serve(catalog=odd) as (_, http):
        catalog = await call(http, "GET", CATALOG)
        taken = await call(http, "POST", UNIFIED, json={"model": "only-one", "anything": 1})
        refused = await call(http, "POST", UNIFIED, json={"model": "kling-v3.0-pro-t2v"})
    assert catalog.json() == {"configs": odd}
    assert taken.status == 200
    assert (refused.status, refused.reason) == (400, "INVALID_REQUEST_BODY")


def test_the_command_line_sets_the_account() -> None:
    args = build_parser().parse_args(["--starting-balance", "12.5", "--charge-at", "end"])
    fake = _fake_from_args(args)
    assert fake.config.starting_balance == Decimal("12.5")
    assert fake.config.charge_at == "end"
    asyncio.run(_no_tasks(fake))


async def _no_tasks(fake: FakeNovita) -> None:
    async with fake:
        assert fake.spent() == 0
