"""``--retry-failed``: exactly the prompts whose task failed are sent again, nothing else
(never one in doubt), nothing twice, every limit kept; each attempt stays in the ledger.

The simulator is the judge: ``failure_rate`` fails tasks at random (seeded), and its
``stats.tasks`` says how many tasks each prompt really got.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from novita_video import VideoRequest
from novita_video.cli._inputs import Row
from novita_video.cli._ledger import Ledger, State
from novita_video.cli._outputs import Entry
from novita_video.testing import FakeNovita
from tests.cli.cli_support import (
    FAST,
    Proxy,
    cli_env,
    eventually,
    ledger,
    manifest,
    prompts_file,
    run_cli,
    simulator,
    start_cli,
)


def tasks_per_prompt(fake: FakeNovita) -> Counter[str]:
    return Counter(task.request.prompt for task in fake.stats.tasks.values())


def attempts(out: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(out / ".novita" / "ledger.sqlite")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM attempts ORDER BY replaced_at")]


def failed(out: Path) -> dict[str, str]:
    """The manifest's failed prompts: prompt -> its task id."""
    return {x["prompt"]: x["task_id"] for x in manifest(out) if x["status"] == "failed"}


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.subprocess
async def test_exactly_the_failed_are_sent_again_and_nothing_twice(tmp_path: Path) -> None:
    prompts = [f"a heron in the reeds, take {n}" for n in range(16)] + ["a [illegal] heron"]
    path = prompts_file(tmp_path / "p.txt", prompts)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator(failure_rate=0.4, seed=11) as fake:
        env = cli_env(fake.url)
        first = await run_cli(*args, env=env)
        assert first.code == 1
        once = failed(out)
        assert 0 < len(once) < 16  # the seed fails some, not all
        made = tasks_per_prompt(fake)

        # Without the flag a failed prompt is only reported, as before.
        again = await run_cli(*args, env=env)
        assert tasks_per_prompt(fake) == made
        assert "--retry-failed" not in again.stderr

        retried = await run_cli(*args, "--retry-failed", env=env)
        after = tasks_per_prompt(fake)
        # Exactly one more task for each failed prompt; none for any other (the refused
        # one is sent again as every run does, and refused again: no task).
        assert after - made == Counter(once.keys())
        assert after["a [illegal] heron"] == 0
        assert fake.stats.duplicate_submissions == len(once)  # paid again, as asked
        # Said before the first prompt was sent.
        lines = retried.stderr.splitlines()
        said = next(n for n, line in enumerate(lines) if "--retry-failed:" in line)
        assert lines[said] == (
            f"novita-video: --retry-failed: sending again the {len(once)} prompt(s) whose task "
            "failed: a new task each (paid for again); their failed tasks stay in the "
            "ledger as earlier attempts"
        )
        assert said < next(n for n, line in enumerate(lines) if " elapsed: " in line)

        # Every attempt is on record: the manifest names the earlier task, the ledger
        # keeps it with how it ended.
        lines_now = {x["prompt"]: x for x in manifest(out)}
        for prompt, task_id in once.items():
            assert lines_now[prompt]["earlier_tasks"] == [task_id]
            assert lines_now[prompt]["task_id"] != task_id
        assert {(a["task_id"], a["state"]) for a in attempts(out)} == {
            (task_id, "failed") for task_id in once.values()
        }
        twice = failed(out)
        assert set(twice) <= set(once)

        # A second retry sends again only what failed again; a run without the flag, none.
        await run_cli(*args, env=env)
        assert tasks_per_prompt(fake) == after
        if twice:
            await run_cli(*args, "--retry-failed", env=env)
            assert tasks_per_prompt(fake) - after == Counter(twice.keys())
            for prompt in twice:
                assert len({x["prompt"]: x for x in manifest(out)}[prompt]["earlier_tasks"]) == 2
        else:
            none = await run_cli(*args, "--retry-failed", env=env)
            assert "no prompt of this file has a failed task" in none.stderr
            assert tasks_per_prompt(fake) == after


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.subprocess
async def test_a_prompt_in_doubt_is_never_retried(tmp_path: Path) -> None:
    """An unknown prompt (its POST was on the wire at a crash) stays with
    --resubmit-unknown: --retry-failed sends the failed ones only."""
    prompts = [f"a kite over the dunes, take {n}" for n in range(6)]
    path = prompts_file(tmp_path / "p.txt", prompts)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST, "--concurrency", "2")
    async with simulator(failure_rate=1.0) as fake, Proxy(fake.url).serving() as proxy:
        env = cli_env(proxy.url)
        proxy.hold_submits = True  # their tasks are made, their ids never come back
        process = await start_cli(*args, env=env)
        await eventually(lambda: proxy.held == 2)
        process.kill()
        await process.wait()
        proxy.release()
        in_doubt = {row["prompt"] for row in ledger(out) if row["state"] == "sending"}
        assert len(in_doubt) == 2

        first = await run_cli(*args, env=env)  # the other four are made, and fail
        assert first.code == 1
        assert {x["prompt"] for x in manifest(out) if x["status"] == "unknown"} == in_doubt
        made = tasks_per_prompt(fake)

        retried = await run_cli(*args, "--retry-failed", env=env)
        assert "sending again the 4 prompt(s) whose task failed" in retried.stderr
        after = tasks_per_prompt(fake)
        assert after - made == Counter({p: 1 for p in prompts if p not in in_doubt})
        assert all(after[p] == 1 for p in in_doubt)  # the held POSTs' tasks, never another
        assert {x["prompt"] for x in manifest(out) if x["status"] == "unknown"} == in_doubt


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.subprocess
async def test_retries_keep_the_submit_rate(tmp_path: Path) -> None:
    """Retried prompts go through the same limits as new ones: --rpm spaces them."""
    prompts = [f"a lantern in the fog, take {n}" for n in range(4)]
    path = prompts_file(tmp_path / "p.txt", prompts)
    out = tmp_path / "out"
    async with simulator(failure_rate=1.0) as fake:
        env = cli_env(fake.url)
        await run_cli("batch", str(path), "--out", str(out), *FAST, env=env)
        before = set(fake.stats.tasks)
        ran = await run_cli(
            "batch", str(path), "--out", str(out), "--rpm", "60", "--retry-failed", env=env
        )
        assert ran.code == 1
        retried = sorted(
            task.submitted_wall for key, task in fake.stats.tasks.items() if key not in before
        )
    assert len(retried) == 4
    # 60 a minute: four submits span at least 3 s (a lower bound only: a busy machine
    # may stretch it, never shorten it).
    assert retried[-1] - retried[0] >= 2.5


def test_a_retry_that_sent_nothing_leaves_no_attempt(tmp_path: Path) -> None:
    """The ledger moves a failed task to ``attempts`` with the new intent, in one
    transaction, and a send that provably made nothing puts it back as it was."""
    row = Row(1, 1, VideoRequest("a heron"))
    book = Ledger.open(tmp_path, "api")
    try:
        book.write(row, State.SENDING)
        book.write(row, State.SUBMITTED, task_id="t1")
        book.write(row, State.FAILED, task_id="t1", error="the task failed: moderation")
        before = book.get(row.key)
        assert before is not None
        assert before.time_to_make is not None
        assert before.earlier == ()

        book.write(row, State.SENDING)  # the retry's intent
        retry = book.get(row.key)
        assert retry is not None
        assert (retry.state, retry.task_id, retry.earlier) == (State.SENDING, None, ("t1",))
        book.restore(row, before)  # its POST never left
        assert book.get(row.key) == before
        assert attempts(tmp_path) == []

        book.write(row, State.SENDING)
        book.write(row, State.SUBMITTED, task_id="t2")
        book.write(row, State.SUCCEEDED, task_id="t2", file="a-heron.mp4")
        record = book.get(row.key)
        assert record is not None
        assert (record.task_id, record.earlier) == ("t2", ("t1",))
        entry = Entry.of(row, record)
        assert entry.earlier_tasks == ("t1",)
        assert entry.time_to_make is not None
    finally:
        book.close()
    (kept,) = attempts(tmp_path)
    assert (kept["task_id"], kept["state"], kept["error"]) == (
        "t1",
        "failed",
        "the task failed: moderation",
    )
