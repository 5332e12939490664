"""``batch --simulate`` says what it does: a simulator of its own for each run, whose
tasks end with it, so a stopped run's tasks are made again, not waited for."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from tests.cli.cli_support import cli_env, eventually, ledger, manifest, prompts_file, run_cli
from tests.cli.lifecycle_support import running

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

PROMPTS = [f"a paper boat on a pond, take {n}" for n in range(8)]


def submitted(out: Path) -> int:
    try:
        return sum(row["state"] == "submitted" for row in ledger(out))
    except sqlite3.Error:  # not made yet
        return 0


async def test_simulate_mode_says_its_tasks_end_with_its_run(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), "--simulate")
    env = cli_env(None, None)  # no key, no URL: the simulator needs neither
    async with running(*args, env=env) as cli:
        # Its tasks take 3 to 8 s: stopped while some are being made.
        await eventually(lambda: submitted(out) >= 2, timeout=30)
        cli.send(signal.SIGINT)
        code = await cli.wait()
    said = " ".join(cli.stderr.split())
    assert code == 130, cli.stderr
    assert said.startswith(
        "novita-video: simulating: a simulator of Novita's API started for this run on "
        "http://127.0.0.1:"
    )
    assert "nothing is sent to Novita, nothing is billed, and its tasks end with this run" in said
    pending = sum(x["status"] == "pending" for x in manifest(out))
    assert pending >= 1
    assert (
        f"interrupted: {pending} task(s) were still being made by this run's simulator, "
        "which ended with it"
    ) in said
    assert "still being made at Novita" not in said  # it was never at Novita

    again = await run_cli(*args, env=env)
    said = " ".join(again.stderr.split())
    assert again.code == 0, again.stderr
    assert f"{pending} task(s) of an earlier run's simulator, which ended with it (made again" in (
        said
    )
    assert "waiting for them, not resubmitting" not in said
    assert [x["status"] for x in manifest(out)] == ["succeeded"] * len(PROMPTS)
