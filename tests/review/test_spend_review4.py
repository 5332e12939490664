"""Fourth review of issue 22's spend cap (a first price confirmed by a second task sent
alone, another model's unpriced tasks refused, a rerun following its model's running
tasks): the command as a process against the simulator's account, with a hop of our own
on loopback in front of it playing other use of the account."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.cli.cli_support import (
    cli_env,
    eventually,
    prompts_file,
    run_cli,
    simulator,
    start_cli,
)
from tests.review.spend_support import PRICE, Account, batch, quicken
from tests.support import serve_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]


def record(out: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((out / ".novita" / "spend.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


async def test_other_use_taken_for_charges_on_acceptance_does_not_hide_running_tasks(
    tmp_path: Path,
) -> None:
    # Charged at the end. The first run learns and confirms $0.43 from two quick tasks
    # sent alone; then someone else spends $2 on the account while its next four tasks
    # (15 s each) run. A reading with them running shows a fall that covers every task
    # accepted: the cap records charged_at "accept" (confirmed) in spend.json. The run is
    # killed while the four run. A rerun skips the ledger's running tasks of a model
    # "charged on acceptance" ("in the spending already"), yet none of their $1.72 is:
    # under a $5 cap it counts $2.86 spent and sends four more tasks; every task is
    # charged in the end, and the folder owes about $6.30 under its $5 cap.
    out = tmp_path / "out"
    first = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(10)])
    more = prompts_file(tmp_path / "q.txt", [f"clip number {n}" for n in range(20)])
    async with simulator(starting_balance="100", charge_at="end", task_duration=(0.3, 0.3)) as fake:
        other = Account(fake.url, lambda n: 2 if n >= 3 else 0)
        async with serve_app(other.app()) as url:
            env = cli_env(url)
            process = await start_cli(
                *batch(first, out, "--concurrency", "4", "--max-spend", "3.20"), env=env
            )
            await eventually(lambda: fake.stats.task_count >= 2)
            quicken(fake, 15)  # the next four run on past the kill
            await eventually(
                lambda: (
                    fake.stats.task_count >= 6
                    and record(out).get("charged_at", {}).get("minimax-video-01") == "accept"
                ),
                timeout=30,
            )
            process.send_signal(signal.SIGKILL)
            await process.wait()
            quicken(fake, 0.3)
            # Real seconds: the rerun follows the four killed tasks to their end (15 s).
            ran = await run_cli(*batch(more, out, "--max-spend", "5"), env=env)
        tasks = fake.stats.task_count
    owed = 2 + tasks * PRICE  # the other use, and every task charged in the end
    assert owed <= 5 + PRICE, f"{tasks} tasks, ${owed} owed under a $5 cap: {ran.stderr}"
    assert ran.code == 5, ran.stderr


async def test_a_rerun_after_a_kill_while_the_price_was_being_confirmed_sends_its_prompts(
    tmp_path: Path,
) -> None:
    # Charged on submit. The first run learns $0.43 from its first task (provisional) and
    # sends the second alone to confirm it; it is killed while that one runs (its charge
    # already in spend.json's last reading). A rerun follows it as a first task of unknown
    # price, learning from spend.json's "spent" (the charge included): its end shows no
    # fall, and after 12 readings (a minute) the rerun stops "cannot tell what a task
    # costs", sending none of its three prompts under a $5 cap with $0.86 spent.
    # Real seconds: the confirming task lasts 3 s, so that the kill lands while it runs.
    out = tmp_path / "out"
    first = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(10)])
    more = prompts_file(tmp_path / "q.txt", [f"other clip {n}" for n in range(3)])
    async with simulator(
        starting_balance="100", charge_at="submit", task_duration=(0.3, 0.3)
    ) as fake:
        env = cli_env(fake.url)
        process = await start_cli(*batch(first, out, "--max-spend", "5"), env=env)
        await eventually(lambda: fake.stats.task_count >= 1)
        quicken(fake, 3)  # the confirming task runs on past the kill
        await eventually(
            lambda: fake.stats.task_count >= 2 and record(out).get("spent") == "0.86", timeout=30
        )
        process.send_signal(signal.SIGKILL)
        await process.wait()
        quicken(fake, 0.3)
        ran = await run_cli(*batch(more, out), env=env)
        tasks = fake.stats.task_count
    assert ran.code == 0, ran.stderr
    assert tasks == 2 + 3, ran.stderr  # the two of the first run, and the three
