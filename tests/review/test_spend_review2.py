"""Second review of issue 22's spend cap (rebuilt in 24d3fd7..b9aa542): the command as a
process against the simulator's account, with hops of our own on loopback in front of it
playing other use of the account."""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from tests.cli.cli_support import (
    cli_env,
    eventually,
    forward,
    prompts_file,
    run_cli,
    simulator,
    start_cli,
)
from tests.review.spend_support import BALANCE, PRICE, Account, batch
from tests.support import serve_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]


async def test_two_cents_spent_elsewhere_after_two_acceptances_are_not_taken_for_the_price(
    tmp_path: Path,
) -> None:
    # Charged at the end. Someone else on the account spends a cent just after each of
    # our first two acceptances (a chat call, an image: charged at once). The cap's
    # readings after them show a fall covering every accepted task at "$0.01 a task",
    # twice: it believes "charged on acceptance at $0.01" and admits ~170 tasks under a
    # $1.72 cap while the first ones still run, uncharged. Other use must only make it
    # stop earlier. Tasks last 3 real seconds: the run sends everything before one ends.
    slots = 2
    cap = PRICE * 4
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(20)])
    args = batch(prompts, tmp_path / "out", "--concurrency", str(slots), "--max-spend", str(cap))
    async with simulator(starting_balance="100", charge_at="end", task_duration=(3, 3)) as fake:
        other = Account(fake.url, lambda n: Decimal("0.01") * min(n, 2))
        async with serve_app(other.app()) as url:
            ran = await run_cli(*args, env=cli_env(url))
        await anyio.sleep(3.5)  # every task has ended, so every one is charged
        spent = fake.spent()
        tasks = fake.stats.task_count
    assert spent <= cap + slots * PRICE, f"{tasks} tasks made, ${spent} spent: {ran.stderr}"
    assert ran.code == 5, ran.stderr


async def test_a_top_up_during_a_run_does_not_give_the_folder_its_cap_again(
    tmp_path: Path,
) -> None:
    # Charged at the end. The user tops up $50 while the last tasks run: the reading
    # after the run shows the balance risen, so the charges of those tasks are never seen
    # as a fall ("a top-up is not room to spend", but it hides the spending beside it).
    # spend.json records the folder spent less than it did; the next run of the folder,
    # same cap, more prompts, spends the cap again.
    slots = 2
    cap = PRICE * 4
    few = prompts_file(tmp_path / "few.txt", [f"clip number {n}" for n in range(4)])
    more = prompts_file(tmp_path / "more.txt", [f"clip number {n}" for n in range(20)])
    out = tmp_path / "out"
    common = ("--concurrency", str(slots), "--max-spend", str(cap))
    async with simulator(starting_balance="100", charge_at="end", task_duration=(1, 1)) as fake:
        topped = Account(fake.url, lambda n: Decimal(-50) if n >= 4 else 0)
        async with serve_app(topped.app()) as url:
            first = await run_cli(*batch(few, out, *common), env=cli_env(url))
            second = await run_cli(*batch(more, out, *common), env=cli_env(url))
        await anyio.sleep(1.5)  # every task has ended, so every one is charged
        spent = fake.spent()
        tasks = fake.stats.task_count
    assert first.code == 0, first.stderr
    assert spent <= cap + slots * PRICE, f"{tasks} tasks made, ${spent} spent: {second.stderr}"
    assert second.code == 5, second.stderr


@pytest.mark.parametrize("spent", ["-5", "NaN", "Infinity", "1e999999"])
async def test_a_spend_record_edited_to_an_odd_amount_is_refused_not_a_traceback(
    tmp_path: Path, spent: str
) -> None:
    # spend.json is a file a user may edit by hand. An amount that is no amount of money
    # (negative: room the folder never had; NaN; infinite; too large to print) is a
    # damaged record: the run says so and sends nothing (it died in a traceback, exit 1).
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(4)])
    out = tmp_path / "out"
    args = batch(prompts, out, "--max-spend", str(PRICE * 2))
    async with simulator(starting_balance="100") as fake:
        env = cli_env(fake.url)
        first = await run_cli(*args, env=env)
        made = fake.stats.task_count
        path = out / ".novita" / "spend.json"
        data = json.loads(path.read_text())
        data["spent"] = spent
        path.write_text(json.dumps(data))
        again = await run_cli(*args, env=env)
        tasks = fake.stats.task_count
    assert first.code == 5, first.stderr
    assert tasks == made, again.stderr
    assert "Traceback" not in again.stderr, again.stderr
    assert again.code == 2, again.stderr
    assert "spend.json is damaged" in again.stderr


class OddBalance:
    """A hop in front of the simulator whose balance answers say ``available``."""

    def __init__(self, upstream: str, available: str) -> None:
        self.upstream = upstream
        self.available = available

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == BALANCE:
            return web.json_response({"availableBalance": self.available})
        status, payload, content_type = await forward(self.upstream, request, body)
        return web.Response(status=status, body=payload, content_type=content_type)


async def test_a_balance_too_large_to_be_money_is_not_read_as_one(tmp_path: Path) -> None:
    # "1e999999" parses as a Decimal; as a balance it killed the command in a traceback
    # (after sending) when the summary printed it, and filled spend.json with a million
    # digits. It is not the documented shape: the balance cannot be read, so a capped
    # run sends nothing (exit 5), as for any unreadable balance.
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(4)])
    out = tmp_path / "out"
    async with simulator(starting_balance="100") as fake:
        odd = OddBalance(fake.url, "1e999999")
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", odd.handle)
        async with serve_app(app) as url:
            ran = await run_cli(*batch(prompts, out, "--max-spend", "5"), env=cli_env(url))
        tasks = fake.stats.task_count
    assert "Traceback" not in ran.stderr, ran.stderr
    assert ran.code == 5, ran.stderr
    assert tasks == 0
    assert "cannot be kept" in ran.stderr


async def test_a_cap_of_two_tasks_learning_the_price_makes_two_not_one(tmp_path: Path) -> None:
    # Charged on acceptance, price not known. The first task goes alone; its reading
    # shows a fall, so a second is let through to confirm it; the slot beside it, sharing
    # that reading, counts the second at the price and finds the cap reached: it stopped
    # the batch at once, and the second, let through and fitting the cap, was given up
    # before its POST. The docs say the cap stops only once the submits it let through
    # have answered: a cap of exactly two tasks makes two.
    cap = PRICE * 2
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(6)])
    args = batch(prompts, tmp_path / "out", "--concurrency", "8", "--max-spend", str(cap))
    async with simulator(starting_balance="100", task_duration=(2, 2)) as fake:
        ran = await run_cli(*args, env=cli_env(fake.url))
        tasks = fake.stats.task_count
    assert ran.code == 5, ran.stderr
    assert tasks == 2, ran.stderr


class SteadyUse:
    """A hop in front of the simulator where someone else spends ``per_second`` dollars
    of the same account, steadily (an app making small calls all day), charged at once:
    every balance reading shows what it spent since the hop started."""

    def __init__(self, upstream: str, *, per_second: Decimal) -> None:
        self.upstream = upstream
        self.rate = per_second * 10000
        self.started = anyio.current_time()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status, payload, content_type = await forward(self.upstream, request, body)
        if request.path == BALANCE and status == 200:
            spent = int(self.rate * Decimal(anyio.current_time() - self.started))
            data = json.loads(payload)
            for name in ("availableBalance", "cashBalance"):
                data[name] = str(int(data[name]) - spent)
            payload = json.dumps(data).encode()
        return web.Response(status=status, body=payload, content_type=content_type)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app


async def test_steady_other_use_is_not_taken_for_charges_on_acceptance(tmp_path: Path) -> None:
    # Charged at the end; someone else spends 5 cents a second on the account, and the
    # batch submits at 120 a minute (Novita's video limits are lower still). Every reading
    # after an acceptance shows a fall that covers every task accepted at the first
    # fall's price (a cent or so): the cap believes "charged on acceptance" at that price
    # and keeps believing it, sending every prompt while the first tasks, uncharged, run.
    # Real seconds: the other use is spread in time, and tasks last 5 s so that the
    # batch has sent them all before the first charge shows.
    slots = 2
    cap = PRICE * 4
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(16)])
    args = (
        "batch", str(prompts), "--out", str(tmp_path / "out"), "--rpm", "120", "--no-download",
        "--concurrency", str(slots), "--max-spend", str(cap),
    )  # fmt: skip
    async with simulator(starting_balance="100", charge_at="end", task_duration=(5, 5)) as fake:
        other = SteadyUse(fake.url, per_second=Decimal("0.05"))
        async with serve_app(other.app()) as url:
            ran = await run_cli(*args, env=cli_env(url))
        await anyio.sleep(5.5)  # every task has ended, so every one is charged
        spent = fake.spent()
        tasks = fake.stats.task_count
    assert spent <= cap + slots * PRICE, f"{tasks} tasks made, ${spent} spent: {ran.stderr}"
    assert ran.code == 5, ran.stderr


async def test_stopping_a_run_that_learns_the_price_and_rerunning_sends_no_second_task(
    tmp_path: Path,
) -> None:
    # Charged at the end, price not known: the cap sends one task alone and waits for it
    # to end (a real clip takes minutes, and the run sits there). The user stops it
    # (SIGTERM, or ^C) and runs it again, and again. The task left running is in the
    # ledger, outstanding; with no price to count it at, each rerun took its first task
    # for "the first task, alone" and sent another: three runs, three tasks, under a cap
    # that one task fills. Tasks last 20 real seconds so that they are all still running.
    cap = PRICE / 2
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(6)])
    args = batch(prompts, tmp_path / "out", "--concurrency", "1", "--max-spend", str(cap))
    async with simulator(starting_balance="100", charge_at="end", task_duration=(20, 20)) as fake:
        env = cli_env(fake.url)
        for _ in range(3):
            process = await start_cli(*args, env=env)
            made = fake.stats.task_count
            with anyio.move_on_after(8):  # the rerun sends its task at once, or never
                await eventually(lambda made=made: fake.stats.task_count > made, timeout=10)
            process.send_signal(signal.SIGTERM)
            await process.wait()
        tasks = fake.stats.task_count
    assert tasks == 1, f"{tasks} tasks made under a ${cap} cap, each ${PRICE}"
