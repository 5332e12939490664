"""What ``batch`` records and says when a run ends badly (issue 20, cases 2, 11 and 12).

* Case 2: each prompt's ledger record follows what its submit came to at the wire
  (``Outcome.submission``): in doubt stays ``unknown`` (never sent again unasked, even
  when a fatal answer stopped the batch meanwhile), refused is ``rejected`` (sent again
  after a top-up), not sent leaves no trace. A 404 on a submit ends the run as a fatal
  answer does, naming the URL and the model.
* Case 11: after every kind of end, the summary on the terminal counts what the manifest
  and the gallery say.
* Case 12: a ledger that cannot be written stops the run, and every task id it could not
  record is printed as a ``novita-video wait`` command line.
"""

from __future__ import annotations

import resource
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from novita_video.testing import Chaos
from tests.cli.cli_support import (
    FAST,
    Proxy,
    cli_env,
    eventually,
    forward,
    ledger,
    manifest,
    prompts_file,
    run_cli,
    simulator,
)
from tests.cli.lifecycle_support import (
    Scripted,
    by_prompt,
    error,
    failures_listed,
    gallery_counts,
    manifest_counts,
    running,
    statuses,
    summary_counts,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

PROMPTS = [f"a kite over the dunes, take {i}" for i in range(1, 7)]


def batch_args(path: Path, out: Path, *more: str) -> tuple[str, ...]:
    return ("batch", str(path), "--out", str(out), *FAST, *more)


# Case 2: the fate decided at the wire, carried to the ledger.


async def in_doubt(hop: Scripted, body: bytes, request: web.Request) -> web.StreamResponse:
    """The POST reaches the API, which makes (and bills) the task; its answer is a 500
    that comes after the fatal answer to another prompt."""
    await forward(hop.upstream, request, body)
    await hop.event("fatal").wait()
    await anyio.sleep(0.5)
    return error(500, "CREATE_TASK_FAILED")


async def rate_limited(hop: Scripted, body: bytes, request: web.Request) -> web.StreamResponse:
    """Refused (nothing made), to be tried again in 3 s: the fatal answer comes first."""
    await hop.event("three").wait()
    hop.event("limited").set()
    return error(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "3"})


async def no_balance(hop: Scripted, body: bytes, request: web.Request) -> web.StreamResponse:
    hop.event("three").set()
    await hop.event("limited").wait()
    await anyio.sleep(0.3)
    hop.event("fatal").set()
    return error(400, "BILLING_BALANCE_NOT_ENOUGH")


async def test_a_post_in_doubt_at_a_fatal_answer_is_never_paid_for_again(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = batch_args(path, out, "--concurrency", "3")
    async with (
        simulator() as fake,
        Scripted(fake.url, [in_doubt, rate_limited, no_balance]).serving() as hop,
    ):
        env = cli_env(hop.url)
        first = await run_cli(*args, env=env)
        assert len(hop.arrived) == 3, first.stderr  # nothing sent after the fatal answer
        doubtful, limited, refused = hop.arrived
        assert first.code == 3, first.stderr
        assert "balance is too low" in first.stderr
        lines = {x["prompt"]: x for x in manifest(out)}
        rows = {row["prompt"]: row for row in ledger(out)}
        # In doubt: a task may exist (here it does), so it stays unknown.
        assert lines[doubtful]["status"] == "unknown"
        assert rows[doubtful]["state"] == "unknown"
        # Refused, by the rate limit or the balance: nothing made, sent again later.
        assert rows[limited]["state"] == rows[refused]["state"] == "rejected"
        assert lines[limited]["status"] == lines[refused]["status"] == "rejected"
        assert "RATE_LIMIT_EXCEEDED" in rows[limited]["error"]
        assert "BILLING_BALANCE_NOT_ENOUGH" in rows[refused]["error"]
        # Never sent: no record at all.
        assert set(rows) == {doubtful, limited, refused}
        assert [x["status"] for p, x in lines.items() if p not in rows] == ["not_submitted"] * 3
        assert summary_counts(first.stderr) == manifest_counts(out)

        # After a top-up the same command sends the refused and the unsent prompts, and
        # not the one in doubt: its task was made, and paid for, once.
        second = await run_cli(*args, env=env)
        assert second.code == 1, second.stderr
        assert "1 prompt(s) are unknown" in second.stderr
        assert by_prompt(fake.stats.tasks) == dict.fromkeys(PROMPTS, 1)
        assert hop.arrived.count(doubtful) == 1


async def test_a_404_on_submit_ends_the_run_as_a_fatal_answer_does(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    async with simulator() as fake:
        wrong = f"{fake.url}/v9"  # a wrong base path: every submit is 404 API_NOT_FOUND
        ran = await run_cli(*batch_args(path, out, "--concurrency", "1"), env=cli_env(wrong))
        not_found = fake.stats.errors["API_NOT_FOUND"]
    assert ran.code == 3, ran.stderr
    assert "Traceback" not in ran.stderr
    said = ran.stderr.strip().splitlines()[-1]
    assert wrong in said
    assert "has no model minimax-video-01" in said
    assert "API_NOT_FOUND" in said
    # The balance read before the run, then one submit went to the wrong path; it stopped.
    assert not_found == 2
    assert statuses(out) == ["rejected"] + ["not_submitted"] * 5
    assert summary_counts(ran.stderr) == manifest_counts(out)


# Case 11: the summary counts what the manifest says, after every kind of end.


async def ends(kind: str, tmp_path: Path) -> tuple[int, str, Path]:
    """Run a batch of PROMPTS that ends as ``kind`` says; its code, stderr and folder."""
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = batch_args(path, out, "--concurrency", "2")
    knobs: dict[str, Any] = {
        "no balance": {"balance": 2},
        "outage": {"chaos": Chaos(submit_drops_after=0.5), "seed": 20},
        "some failed": {"failure_rate": 0.5, "seed": 20},
        "SIGINT": {"task_duration": (3.0, 4.0)},
        "SIGTERM": {"task_duration": (3.0, 4.0)},
    }.get(kind, {})
    async with simulator(**knobs) as fake:
        url = f"{fake.url}/v9" if kind == "endpoint 404" else fake.url
        env = cli_env(url, "sk-wrong" if kind == "bad key" else fake.api_key)
        if kind.startswith("SIG"):
            signum = signal.Signals[kind]
            async with running(*args, "--rpm", "120", env=env) as command:
                await eventually(lambda: fake.stats.task_count >= 2)
                command.send(signum)
                code = await command.wait()
            assert code == 128 + signum
            return code, command.stderr, out
        ran = await run_cli(*args, env=env)
        return ran.code, ran.stderr, out


END_CODES = {
    "normal": 0,
    "some failed": 1,
    "outage": 1,
    "bad key": 3,
    "no balance": 3,
    "endpoint 404": 3,
    "SIGINT": 130,
    "SIGTERM": 143,
}


@pytest.mark.parametrize("kind", list(END_CODES))
async def test_the_summary_counts_what_the_manifest_says(tmp_path: Path, kind: str) -> None:
    code, stderr, out = await ends(kind, tmp_path)
    assert code == END_CODES[kind], stderr
    assert "Traceback" not in stderr
    counts = manifest_counts(out)
    assert counts["total"] == len(PROMPTS)
    assert summary_counts(stderr) == counts
    assert gallery_counts(out) == counts
    assert len(failures_listed(stderr)) == min(counts["failed"], 5)
    if kind in ("bad key", "no balance", "endpoint 404"):
        assert counts["not submitted"] >= 3  # what the old summary called failed
    if kind == "outage":
        assert counts["unknown"] >= 1  # the seed drops some answers


# Case 12: a ledger that cannot be written.

# The command with SIGXFSZ ignored, so that a write past the file size limit fails
# (EFBIG, as a write to a full disk fails with ENOSPC) instead of killing it.
_XFSZ_IGNORED = (
    "import runpy, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "runpy.run_module('novita_video', run_name='__main__', alter_sys=True)"
)


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux's prlimit")
async def test_a_ledger_that_cannot_be_written_prints_every_task_id(tmp_path: Path) -> None:
    # The disk fills up under the ledger while two POSTs are on the wire: the test sets
    # the running command's file size limit to one byte (prlimit, as the same user), so
    # every write past the first byte of any file fails from then on, the ledger's
    # first; no root, no mount. Then the answers come, with their task ids.
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = batch_args(path, out, "--concurrency", "2")
    async with simulator() as fake, Proxy(fake.url).serving() as proxy:
        proxy.hold_submits = True
        env = cli_env(proxy.url)
        argv = [sys.executable, "-c", _XFSZ_IGNORED, *args]
        async with running(env=env, argv=argv) as command:
            await eventually(lambda: proxy.held == 2)
            hard = resource.prlimit(command.process.pid, resource.RLIMIT_FSIZE)[1]
            resource.prlimit(command.process.pid, resource.RLIMIT_FSIZE, (1, hard))
            proxy.release()
            code = await command.wait(timeout=30)
        made = set(fake.stats.tasks)

        assert code == 4, command.stderr
        assert "Traceback" not in command.stderr
        assert "cannot write the ledger" in command.stderr
        assert len(made) == 2
        assert fake.stats.requests["submit"] == 2  # it stopped submitting
        # Each id is printed as a line `novita-video wait` takes, and that line works.
        waits = [
            shlex.split(line.split("  #", 1)[0])
            for line in command.stderr.splitlines()
            if line.startswith("novita-video wait ")
        ]
        assert {words[2] for words in waits} == made
        for words in waits:
            waited = await run_cli(*words[1:], env=env)
            assert waited.code == 0, waited.stderr
            assert (out / f"{words[2]}.mp4").is_file()
        # Their intents were written before the disk filled: in doubt, so the next run
        # does not pay for them again.
        assert sorted(row["state"] for row in ledger(out)) == ["sending", "sending"]
        resumed = await run_cli(*args, env=env)
        assert resumed.code == 1, resumed.stderr
        assert "2 prompt(s) are unknown" in resumed.stderr
        assert fake.stats.duplicate_submissions == 0
        assert by_prompt(fake.stats.tasks) == dict.fromkeys(PROMPTS, 1)
