"""Review of issue 22: the spend cap, the balance and the catalogue, attacked with the real
command as a process against the simulator's account and servers of our own on loopback."""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from novita_video import CatalogRequest, NovitaError
from novita_video.testing._account import PRICES
from tests.cli.cli_support import (
    FAST,
    cli_env,
    eventually,
    forward,
    prompts_file,
    run_cli,
    simulator,
    start_cli,
)
from tests.review.spend_support import BALANCE, PRICE, record, runs
from tests.support import serve_app, simulated

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]


class OtherUse:
    """A hop in front of the simulator where, once ``after`` submits have been answered,
    someone else spends ``amount`` dollars of the same account (an image, an LLM call:
    charged at once, whatever the video tasks do), seen in every later balance reading."""

    def __init__(self, upstream: str, *, after: int, amount: Decimal) -> None:
        self.upstream = upstream
        self.after = after
        self.amount = int(amount * 10000)
        self.submits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status, payload, content_type = await forward(self.upstream, request, body)
        if request.method == "POST":
            self.submits += 1
        elif request.path == BALANCE and self.submits >= self.after and status == 200:
            data = json.loads(payload)
            for name in ("availableBalance", "cashBalance"):
                data[name] = str(int(data[name]) - self.amount)
            payload = json.dumps(data).encode()
        return web.Response(status=status, body=payload, content_type=content_type)


async def test_a_killed_run_whose_tasks_are_charged_at_their_end_cannot_spend_its_cap_again(
    tmp_path: Path,
) -> None:
    # Charged when a task ends (the issue's unconfirmed case): at the kill, the tasks the
    # cap admitted are still running, uncharged. The rerun must count them as the first
    # run did (they are in the ledger, pending), not see the old spend and fill the cap
    # again. Tasks last 5 real seconds so that they are still running at the rerun's
    # first reading, even on a busy machine (the rerun starts within about a second).
    slots = 2
    cap = PRICE * 10  # ten tasks
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(40)])
    out = tmp_path / "out"
    args = (
        "batch", str(prompts), "--out", str(out), *FAST,
        "--concurrency", str(slots), "--max-spend", str(cap), "--no-download",
    )  # fmt: skip
    async with simulator(starting_balance="100", charge_at="end", task_duration=(5, 5)) as fake:
        env = cli_env(fake.url)
        process = await start_cli(*args, env=env)
        await eventually(lambda: fake.stats.task_count >= 10, timeout=60)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        first = fake.stats.task_count
        rerun = await run_cli(*args, env=env)
        await anyio.sleep(6)  # every task has ended, so every one is charged
        spent = fake.spent()
        tasks = fake.stats.task_count
    assert first == 10
    assert rerun.code == 5, rerun.stderr
    assert spent <= cap + slots * PRICE, f"{tasks} tasks made, ${spent} spent"


async def test_other_use_of_the_account_never_makes_the_cap_stop_later(tmp_path: Path) -> None:
    # Video tasks are charged when they end; someone else on the account spends one cent
    # (charged at once) just after our first task is accepted. The cap's reading after
    # that acceptance shows a fall of one cent; taken for "charged on acceptance at $0.01
    # a task" (as it once was), every later task looks paid for as soon as it is accepted
    # and the run sends all its prompts while they run, uncharged. The help says other
    # use makes the run stop earlier, never later.
    slots = 2
    cap = PRICE * 4
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(20)])
    out = tmp_path / "out"
    args = (
        "batch", str(prompts), "--out", str(out), *FAST,
        "--concurrency", str(slots), "--max-spend", str(cap), "--no-download",
    )  # fmt: skip
    async with simulator(starting_balance="100", charge_at="end", task_duration=(3, 3)) as fake:
        hop = OtherUse(fake.url, after=1, amount=Decimal("0.01"))
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", hop.handle)
        async with serve_app(app) as url:
            ran = await run_cli(*args, env=cli_env(url))
        await anyio.sleep(3.5)  # every task has ended, so every one is charged
        spent = fake.spent()
        tasks = fake.stats.task_count
    assert ran.code == 5, ran.stderr
    assert spent <= cap + slots * PRICE, f"{tasks} tasks made, ${spent} spent"


async def test_a_deleted_spend_record_does_not_give_the_folder_its_cap_again(
    tmp_path: Path,
) -> None:
    # The cap belongs to the folder; its record is one file that a user (or a cleanup
    # script) may delete. The ledger still shows tasks made, paid for: a rerun must not
    # count from zero as if the folder had never spent anything (it refuses, saying so).
    cap = PRICE * 3
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(20)])
    out = tmp_path / "out"
    args = (
        "batch", str(prompts), "--out", str(out), *FAST,
        "--concurrency", "1", "--max-spend", str(cap), "--no-download",
    )  # fmt: skip
    async with simulator(starting_balance="100") as fake:
        env = cli_env(fake.url)
        first = await run_cli(*args, env=env)
        made_first = fake.stats.task_count
        (out / ".novita" / "spend.json").unlink()
        again = await run_cli(*args, env=env)
        made = fake.stats.task_count
    assert first.code == 5, first.stderr
    assert made_first == 3
    assert made == made_first, again.stderr  # nothing more: the rerun refused to run
    assert again.code == 5
    assert "spend.json is missing, but the ledger holds 3 task(s)" in again.stderr
    assert "--max-spend none" in again.stderr
    assert not (out / ".novita" / "spend.json").exists()  # no fresh record to count from


async def test_the_price_a_folder_learned_for_one_model_is_not_taken_for_another(
    tmp_path: Path,
) -> None:
    # A rerun with another --model (a model is part of a prompt's identity, so a folder
    # may hold several) must not start from the price learned for the first: charged at
    # their end, the dearer model's tasks would be counted at the cheaper one's price
    # while they run, and the run would pass the cap by more than one submit per slot.
    # The first run names the model by its catalogue name, hailuo-02: runs.jsonl keeps
    # the name given, spend.json the ledger's (minimax-hailuo-02, one model).
    slots = 2
    cheap = Decimal(PRICES["minimax-hailuo-02"]) / 10000  # $0.23
    cap = cheap * 10
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(20)])
    few = prompts_file(tmp_path / "few.txt", ["a fox", "a cat", "a dog"])
    out = tmp_path / "out"
    common = (
        "--out", str(out), *FAST, "--concurrency", str(slots), "--max-spend", str(cap),
        "--no-download",
    )  # fmt: skip
    async with simulator(starting_balance="100", charge_at="end", task_duration=(2, 2)) as fake:
        env = cli_env(fake.url)
        first = await run_cli("batch", str(few), "--model", "hailuo-02", *common, env=env)
        learned = record(out)["price"]
        given = runs(out)[-1]["model"]
        dear = await run_cli("batch", str(prompts), "--model", "minimax-video-01", *common, env=env)
        await anyio.sleep(2.5)  # every task has ended, so every one is charged
        spent = fake.spent()
        tasks = fake.stats.task_count
    assert first.code == 0, first.stderr
    assert learned == str(cheap)
    assert given == "hailuo-02"
    assert dear.code == 5, dear.stderr
    assert spent <= cap + slots * PRICE, f"{tasks} tasks made, ${spent} spent"
    assert record(out)["prices"] == {
        "minimax-hailuo-02": str(cheap),
        "minimax-video-01": str(PRICE),
    }


class BadBalance:
    """A hop in front of the simulator whose balance reads fail, once ``after`` submits
    have been answered, in the way ``mode`` says."""

    def __init__(self, upstream: str, *, after: int, mode: str) -> None:
        self.upstream = upstream
        self.after = after
        self.mode = mode
        self.submits = 0
        self.bad_reads = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == BALANCE and self.submits >= self.after:
            self.bad_reads += 1
            if self.mode == "503":
                return web.Response(status=503, text="<html>overloaded</html>")
            if self.mode == "429":
                return web.json_response(
                    {"code": 429, "reason": "RATE_LIMIT_EXCEEDED", "message": "slow down"},
                    status=429,
                )
            if self.mode == "garbage":
                return web.json_response({"availableBalance": "lots"})
            if self.mode == "no-available":
                return web.json_response({"cashBalance": "1000000"})
        status, payload, content_type = await forward(self.upstream, request, body)
        if request.method == "POST":
            self.submits += 1
        return web.Response(status=status, body=payload, content_type=content_type)


@pytest.mark.parametrize("mode", ["no-available"])  # 503, 429, garbage held too (~28 s each)
async def test_a_balance_that_cannot_be_read_mid_run_lets_no_submit_through(
    tmp_path: Path, mode: str
) -> None:
    slots = 2
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(20)])
    out = tmp_path / "out"
    args = (
        "batch", str(prompts), "--out", str(out), *FAST,
        "--concurrency", str(slots), "--max-spend", "5", "--no-download",
    )  # fmt: skip
    async with simulator(starting_balance="100") as fake:
        hop = BadBalance(fake.url, after=3, mode=mode)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", hop.handle)
        async with serve_app(app) as url:
            ran = await run_cli(*args, env=cli_env(url))
        tasks = fake.stats.task_count
    assert ran.code == 5, ran.stderr
    assert hop.bad_reads >= 1
    assert 3 <= tasks <= 3 + slots, ran.stderr
    assert "cannot read the balance" in ran.stderr


class LateBilling:
    """A hop in front of the simulator whose balance shows no charge for ``lag`` seconds
    after the first submit (billing that settles later than the task ends)."""

    def __init__(self, upstream: str, *, lag: float) -> None:
        self.upstream = upstream
        self.lag = lag
        self.first_submit: float | None = None
        self.stale: bytes | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status, payload, content_type = await forward(self.upstream, request, body)
        now = anyio.current_time()
        if request.method == "POST" and self.first_submit is None:
            self.first_submit = now
        if request.path == BALANCE and status == 200:
            if self.stale is None:
                self.stale = payload
            if self.first_submit is None or now < self.first_submit + self.lag:
                payload = self.stale
        return web.Response(status=status, body=payload, content_type=content_type)


async def test_a_charge_that_shows_late_does_not_make_every_task_free(tmp_path: Path) -> None:
    # Whether Novita charges at acceptance or at the end is unconfirmed; billing may also
    # settle some seconds after a task ends. The cap's first task ends with no charge
    # seen; a cap that took quiet readings for "the model costs nothing" let every prompt
    # through. Real seconds: the cap's quiet readings are 5 s apart in the command, and
    # the charge shows after 30 s, within its minute of them: it learns the price late.
    slots = 2
    cap = PRICE * 3
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(20)])
    out = tmp_path / "out"
    args = (
        "batch", str(prompts), "--out", str(out), *FAST,
        "--concurrency", str(slots), "--max-spend", str(cap), "--no-download",
    )  # fmt: skip
    async with simulator(starting_balance="100") as fake:
        hop = LateBilling(fake.url, lag=30)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", hop.handle)
        async with serve_app(app) as url:
            ran = await run_cli(*args, env=cli_env(url))
        spent = fake.spent()
        tasks = fake.stats.task_count
    assert spent <= cap + slots * PRICE, f"{tasks} tasks made, ${spent} spent: {ran.stderr}"


async def test_a_schema_whose_ref_goes_nowhere_is_refused_as_a_novita_error() -> None:
    # A catalogue schema that passes check_schema but cannot be used (a $ref to nowhere):
    # nothing is sent, and the error is the SDK's, naming the model (jsonschema's own
    # _WrappedReferencingError escaped before, and the command died on it).
    schema = {
        "type": "object",
        "properties": {"prompt": {"$ref": "#/$defs/missing"}},
        "required": ["prompt"],
    }
    catalog = [{"model": "odd-ref", "description": "", "json_schema": schema}]
    async with simulated(catalog=catalog) as (fake, client):
        with pytest.raises(NovitaError, match="JSON Schema of odd-ref cannot be used"):
            await client.submit(CatalogRequest("odd-ref", {"prompt": "a fox"}))
        assert fake.stats.requests["submit"] == 0
