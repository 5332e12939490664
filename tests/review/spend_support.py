"""What the spend cap's review tests share: the simulator's price, the folder's records,
the command line of a quiet capped batch, and a hop that plays other use of the account."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web

from novita_video._balance import BALANCE_PATH as BALANCE
from novita_video.testing import FakeNovita
from novita_video.testing._account import PRICES
from tests.cli.cli_support import FAST, forward

__all__ = ["BALANCE", "PRICE", "Account", "batch", "quicken", "record", "runs"]

PRICE = Decimal(PRICES["minimax-video-01"]) / 10000  # $0.43 a clip in the simulator


def batch(prompts: Path, out: Path, *more: str) -> tuple[str, ...]:
    """``novita-video batch`` of ``prompts`` into ``out``, quick and without downloads."""
    return ("batch", str(prompts), "--out", str(out), *FAST, "--no-download", *more)


def quicken(fake: FakeNovita, seconds: float) -> None:
    """Tasks made from now on take ``seconds`` (those made before keep their end)."""
    fake.config = attrs.evolve(fake.config, task_duration=(seconds, seconds))  # type: ignore[misc]


def runs(out: Path) -> list[dict[str, Any]]:
    """The folder's record of runs, ``DIR/runs.jsonl``, a dict a run."""
    lines = (out / "runs.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def record(out: Path) -> dict[str, Any]:
    """The folder's spend record, ``DIR/.novita/spend.json``."""
    data: dict[str, Any] = json.loads((out / ".novita" / "spend.json").read_text())
    return data


class Account:
    """A hop in front of the simulator where someone else uses the same account: after
    the n-th submit is answered, every later balance reading shows ``shift(n)`` dollars
    less (spending elsewhere, charged at once; negative: a top-up)."""

    def __init__(self, upstream: str, shift: Callable[[int], Any]) -> None:
        self.upstream = upstream
        self.shift = shift
        self.submits = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status, payload, content_type = await forward(self.upstream, request, body)
        if request.method == "POST":
            self.submits += 1
        elif request.path == BALANCE and status == 200:
            data = json.loads(payload)
            fall = int(Decimal(self.shift(self.submits)) * 10000)
            for name in ("availableBalance", "cashBalance"):
                data[name] = str(int(data[name]) - fall)
            payload = json.dumps(data).encode()
        return web.Response(status=status, body=payload, content_type=content_type)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app
