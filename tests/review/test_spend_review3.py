"""Third review of issue 22's spend cap (redesigned in de03dc0: a price only from tasks
that ended, a rerun waits for an earlier run's first task): the command as a process
against the simulator's account, with hops of our own on loopback in front of it."""

from __future__ import annotations

import json
import signal
import time
from decimal import Decimal
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from novita_video.testing import Chaos, FakeNovita
from novita_video.testing._account import PRICES
from tests.cli.cli_support import (
    cli_env,
    eventually,
    forward,
    prompts_file,
    run_cli,
    simulator,
    start_cli,
)
from tests.review.spend_support import BALANCE, PRICE, batch, quicken
from tests.support import serve_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

CHEAP = Decimal(PRICES["minimax-hailuo-02"]) / 10000  # $0.23


async def test_a_first_submit_in_doubt_does_not_hold_the_run_for_ever(tmp_path: Path) -> None:
    # Price not known; the first submit, sent alone, is in doubt (the server made the
    # task, then the connection closed with no answer). The cap counts it accepted, but
    # no task of it will ever be seen ending: it waited for that end (reading the
    # balance every 5 s) with no deadline, and the run never ended. It must stop (exit
    # 5: it cannot tell what a task costs) within the task's deadline, --task-timeout.
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(4)])
    args = batch(prompts, tmp_path / "out", "--max-spend", str(PRICE * 4), "--task-timeout", "3")
    chaos = Chaos(submit_drops_after=1.0)
    async with simulator(starting_balance="100", task_duration=(0.3, 0.3), chaos=chaos) as fake:
        process = await start_cli(*args, env=cli_env(fake.url))
        # Real seconds: a run that ends does so within --task-timeout and a few readings.
        with anyio.move_on_after(40):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
            pytest.fail(f"the run had not ended after 40 s ({fake.stats.task_count} task)")
        tasks = fake.stats.task_count
    assert tasks == 1
    assert process.returncode == 5


async def test_a_rerun_after_a_first_submit_in_doubt_stops_at_once_not_after_the_timeout(
    tmp_path: Path,
) -> None:
    # Price not known; the first run's first submit is in doubt (made, no answer), so the
    # run stops (exit 5). A rerun does not follow a prompt in doubt (it is "unknown" until
    # the user asks --resubmit-unknown), yet its cap took it for an earlier first task and
    # waited for it to end: idle for --task-timeout (30 minutes by default), then exit 5,
    # and the same again on every rerun, --resubmit-unknown included. It must stop at
    # once: that task's end, which would show the price, is never going to be seen.
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(4)])
    args = batch(prompts, tmp_path / "out", "--max-spend", str(PRICE * 4))
    chaos = Chaos(submit_drops_after=1.0)
    async with simulator(starting_balance="100", task_duration=(0.3, 0.3), chaos=chaos) as fake:
        env = cli_env(fake.url)
        first = await run_cli(*args, "--task-timeout", "3", env=env)
        fake.set_chaos(submit_drops_after=0.0)
        for more in ((), ("--resubmit-unknown",)):
            again = await start_cli(*args, *more, env=env)
            # Real seconds: a rerun that stops at once ends in a few; one that waits for
            # the task in doubt would take 1800.
            with anyio.move_on_after(30):
                await again.wait()
            if again.returncode is None:
                again.kill()
                await again.wait()
                pytest.fail(f"the rerun {more} had not ended after 30 s")
            assert again.returncode == 5, more
        tasks = fake.stats.task_count
    assert first.code == 5, first.stderr
    assert tasks == 1


async def test_a_dearer_models_task_left_running_is_not_counted_at_a_cheaper_price(
    tmp_path: Path,
) -> None:
    # Charged at the end. The user tries minimax-video-01 ($2 a task here) under a $3
    # cap, stops the run while its first task runs (its price not known yet), and runs
    # the folder again with --model minimax-hailuo-02 ($0.23). The ledger's dearer task
    # of unknown price was counted "at the run's own price, once learned": $0.23. The
    # cheap run learned its price, then sent a dozen tasks; the $2 task's charge comes at
    # its end, after them. The folder spends about $4.76 under its $3 cap.
    slots = 2
    cap = Decimal(3)
    out = tmp_path / "out"
    dear = prompts_file(tmp_path / "dear.txt", [f"dear clip {n}" for n in range(4)])
    cheap = prompts_file(tmp_path / "cheap.txt", [f"cheap clip {n}" for n in range(20)])
    async with simulator(
        starting_balance="100",
        charge_at="end",
        task_duration=(60, 60),
        prices={"minimax-video-01": Decimal(2)},
    ) as fake:
        env = cli_env(fake.url)
        first = await start_cli(
            *batch(dear, out, "--model", "minimax-video-01", "--max-spend", str(cap)), env=env
        )
        await eventually(lambda: fake.stats.task_count == 1)
        first.send_signal(signal.SIGTERM)
        await first.wait()
        quicken(fake, 0.3)  # the $2 task runs on for a minute; the cheap ones are quick
        ran = await run_cli(
            *batch(cheap, out, "--model", "minimax-hailuo-02", "--concurrency", str(slots)),
            env=env,
        )
        tasks = fake.stats.task_count
    # Every task is charged in the end: the dear one, and the cheap ones this run made.
    owed = Decimal(2) + (tasks - 1) * CHEAP
    assert owed <= cap + slots * CHEAP, f"{tasks - 1} cheap tasks, ${owed} owed: {ran.stderr}"
    assert ran.code == 5, ran.stderr


async def test_sigterm_while_a_rerun_waits_for_the_earlier_first_task_stops_at_once(
    tmp_path: Path,
) -> None:
    # Price not known, charged at the end. A run sends its first task and is killed
    # (SIGKILL) while it runs; the rerun resumes that task and sends nothing until it
    # ends (minutes, for a real clip). The user presses ^C / docker stop sends SIGTERM:
    # the run must stop at once, not after the task (or its deadline).
    cap = PRICE * 4
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(4)])
    args = batch(prompts, tmp_path / "out", "--max-spend", str(cap))
    async with simulator(starting_balance="100", charge_at="end", task_duration=(60, 60)) as fake:
        env = cli_env(fake.url)
        first = await start_cli(*args, env=env)
        await eventually(lambda: fake.stats.task_count == 1)
        await anyio.sleep(0.5)  # its id is in the ledger
        first.kill()
        await first.wait()
        record = tmp_path / "out" / ".novita" / "spend.json"
        written = record.stat().st_mtime_ns
        again = await start_cli(*args, env=env)
        # It has read the balance (its signal handlers are in place) and waits.
        await eventually(lambda: record.stat().st_mtime_ns != written)
        await anyio.sleep(1)
        sent = time.monotonic()
        again.send_signal(signal.SIGTERM)
        with anyio.move_on_after(20):
            await again.wait()
        took = time.monotonic() - sent
        if again.returncode is None:
            again.kill()
            await again.wait()
        tasks = fake.stats.task_count
    assert tasks == 1
    # Generous for a busy machine: the signal grace is 5 s by default, and nothing is
    # on the wire; the task itself would take another minute.
    assert took < 12, f"{took:.1f} s after SIGTERM"
    assert again.returncode == 128 + signal.SIGTERM


class TopUpAtFirstCharge:
    """A hop in front of the simulator where the user tops up ``amount`` dollars just as
    the first task's charge lands: the reading that shows the charge shows the top-up."""

    def __init__(self, fake: FakeNovita, amount: Decimal) -> None:
        self.fake = fake
        self.amount = int(amount * 10000)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status, payload, content_type = await forward(self.fake.url, request, body)
        if request.path == BALANCE and status == 200 and self.fake.spent() > 0:
            data = json.loads(payload)
            for name in ("availableBalance", "cashBalance"):
                data[name] = str(int(data[name]) + self.amount)
            payload = json.dumps(data).encode()
        return web.Response(status=status, body=payload, content_type=content_type)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app


async def test_a_small_top_up_beside_the_first_charge_is_not_learned_as_a_low_price(
    tmp_path: Path,
) -> None:
    # Charged at the end, price not known. The user tops up $0.40 just as the first
    # task's charge ($0.43) lands: the next reading shows the balance $0.03 lower, and
    # the cap takes $0.03 for the price. Other use of the account must only make it stop
    # earlier. Tasks last 2 real seconds so the batch sends everything before the next
    # charges show.
    slots = 2
    cap = PRICE * 4
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(20)])
    args = batch(prompts, tmp_path / "out", "--concurrency", str(slots), "--max-spend", str(cap))
    async with simulator(starting_balance="100", charge_at="end", task_duration=(2, 2)) as fake:
        hop = TopUpAtFirstCharge(fake, Decimal("0.40"))
        async with serve_app(hop.app()) as url:
            ran = await run_cli(*args, env=cli_env(url))
        tasks = fake.stats.task_count
    owed = tasks * PRICE
    assert owed <= cap + slots * PRICE, f"{tasks} tasks made, ${owed} owed: {ran.stderr}"
    assert ran.code == 5, ran.stderr


async def test_a_rerun_after_editing_the_prompt_of_the_first_task_does_not_sit_idle(
    tmp_path: Path,
) -> None:
    # Price not known, charged at the end. The user starts a capped run, sees the first
    # prompt is wrong, stops it (SIGTERM) while its first task runs, fixes the line and
    # runs again. The fixed line is a new prompt; the old one's task stays in the ledger,
    # outstanding, and the cap takes it for "the first task, still running": it waits for
    # the run to see it end, but no run follows a prompt no longer in the file. It sits
    # idle for --task-timeout (30 minutes by default), then stops, and so does every
    # rerun. Real seconds: the old task lasts 6 s; a rerun that learns the price from it
    # (following it, as the ledger holds its id) has sent its own task well within 40 s.
    cap = PRICE * 4
    prompts = tmp_path / "p.txt"
    prompts_file(prompts, [f"clip numbre {n}" for n in range(4)])
    args = batch(prompts, tmp_path / "out", "--max-spend", str(cap))
    async with simulator(starting_balance="100", charge_at="end", task_duration=(6, 6)) as fake:
        env = cli_env(fake.url)
        first = await start_cli(*args, env=env)
        await eventually(lambda: fake.stats.task_count == 1)
        first.send_signal(signal.SIGTERM)
        await first.wait()
        prompts_file(prompts, [f"clip number {n}" for n in range(4)])
        again = await start_cli(*args, env=env)
        with anyio.move_on_after(40):
            await eventually(lambda: fake.stats.task_count > 1, timeout=60)
        tasks = fake.stats.task_count
        again.kill()
        await again.wait()
    assert tasks > 1, "the rerun sent nothing in 40 s"
