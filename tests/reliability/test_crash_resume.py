"""One batch, the command killed with SIGKILL at three random (seeded) moments, then run
to its end: nothing paid for twice, nothing made lost, every prompt accounted for.

The simulator runs in a process of its own, so it outlives each killed command and keeps
the ground truth across runs. A moment is "the command's own k-th request reached the
simulator" (submits, polls and downloads alike), with k drawn from a seeded generator,
so a kill may come with a POST on the wire, a task running or a clip half written. Each
kill must land on a running command (or the moment proved nothing).

Then the same command without flags must finish the batch sending no prompt that has a
recorded task; prompts whose POST was on the wire at a kill stay ``unknown``. Last,
``--resubmit-unknown`` sends those again, and the tasks paid twice are exactly those of
them the simulator had in fact made.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.cli.cli_support import (
    KEY,
    cli_env,
    clips,
    ledger,
    manifest,
    prompts_file,
    run_cli,
    start_cli,
)
from tests.reliability.reliability_support import (
    CLIP,
    SimulatorProcess,
    simulator_process,
    tasks_by_prompt,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

PROMPTS = [f"a lighthouse in a storm, take {i}" for i in range(1, 41)]
SEED = 1337
#: Each kill comes after this many requests of the killed run; 3 kills of at most 30
#: requests cannot finish 40 prompts (each needs a submit, a poll and, mostly, a download).
MOMENTS = random.Random(SEED).sample(range(3, 31), 3)


async def requests_so_far(simulator: SimulatorProcess) -> int:
    stats = await simulator.stats(tasks=False)
    counts: dict[str, int] = stats["requests"]
    return counts["submit"] + counts["task_result"] + counts["video"]


async def kill_after(args: tuple[str, ...], simulator: SimulatorProcess, moment: int) -> None:
    """Start the command and SIGKILL it once it has made ``moment`` requests."""
    start = await requests_so_far(simulator)
    process = await start_cli(*args, env=cli_env(simulator.url))
    try:
        with anyio.fail_after(60):
            while await requests_so_far(simulator) - start < moment:
                assert process.returncode is None, "the run ended before its moment came"
                await anyio.sleep(0.005)  # the simulator is another process: ask it
        process.kill()
    finally:
        await process.wait()
    assert process.returncode == -9  # it was killed, not finished


async def test_three_sigkills_then_resume(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "prompts.txt", PROMPTS)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), "--rpm", "600", "--concurrency", "2")
    flags = ("--task-duration", "0.5", "1.5", "--failure-rate", "0.1", "--seed", str(SEED))
    async with simulator_process(*flags, key=KEY) as simulator:
        recorded: set[str] = set()
        for moment in MOMENTS:
            await kill_after(args, simulator, moment)
            recorded |= {row["task_id"] for row in ledger(out) if row["task_id"]}
        killed = await simulator.stats()
        assert killed["duplicate_submissions"] == 0

        resumed = await run_cli(*args, env=cli_env(simulator.url))
        stats = await simulator.stats()
        assert "Traceback" not in resumed.stderr
        assert recorded <= set(stats["tasks"])
        seen, unknown_with_task = check_resumed(out, stats)
        assert resumed.code == (1 if seen["unknown"] or seen["failed"] else 0)

        # With --resubmit-unknown the user asks, knowingly, to send again the prompts
        # whose POST was on the wire at a kill.
        again = await run_cli(*args, "--resubmit-unknown", env=cli_env(simulator.url))
        final = await simulator.stats()

    # Sending the unknown ones again pays twice exactly for those that had a task.
    assert "Traceback" not in again.stderr
    assert final["duplicate_submissions"] == unknown_with_task
    after = manifest(out)
    assert {x["status"] for x in after} <= {"succeeded", "failed"}
    assert sum(x["status"] == "succeeded" for x in after) == len(clips(out))
    assert again.code == (1 if any(x["status"] == "failed" for x in after) else 0)
    print(
        f"\ncrash+resume: moments {MOMENTS}, after resume {dict(seen)}, "
        f"{unknown_with_task} unknown had a task, {len(stats['tasks'])} tasks"
    )


def check_resumed(out: Path, stats: dict[str, Any]) -> tuple[Counter[str], int]:
    """The state after the plain resumed run; what it saw, and how many unknown prompts
    had a task all the same."""
    tasks: dict[str, dict[str, Any]] = stats["tasks"]
    by_prompt = tasks_by_prompt(tasks.values())

    # Nothing paid for twice: no prompt with a recorded task was submitted again.
    assert stats["duplicate_submissions"] == 0
    assert all(len(ids) == 1 for ids in by_prompt.values())

    # The manifest accounts for every prompt; one whole file per clip made.
    lines = manifest(out)
    assert [x["prompt"] for x in lines] == PROMPTS
    seen = Counter(x["status"] for x in lines)
    assert set(seen) <= {"succeeded", "failed", "unknown"}, seen
    for line in lines:
        ids = by_prompt.get(line["prompt"], [])
        if line["status"] == "unknown":
            # Its POST was on the wire at a kill: a task may exist, its id never came.
            assert line["task_id"] is None
            assert len(ids) <= 1
            continue
        assert ids == [line["task_id"]]
        final_status = tasks[line["task_id"]]["final_status"]
        if line["status"] == "succeeded":
            assert final_status == "TASK_STATUS_SUCCEED"
            assert (out / line["file"]).read_bytes() == CLIP
        else:
            assert final_status == "TASK_STATUS_FAILED"
            assert line["file"] is None
    made = sorted(x["file"] for x in lines if x["status"] == "succeeded")
    assert sorted(p.name for p in clips(out)) == made
    assert not list(out.glob(".*.part"))
    unknown = [x for x in lines if x["status"] == "unknown"]
    return seen, sum(1 for x in unknown if x["prompt"] in by_prompt)
