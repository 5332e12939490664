"""SIGTERM and SIGHUP stop ``batch`` as Ctrl-C does (issue 20, case 3).

``docker stop`` and Kubernetes send SIGTERM (and SIGKILL 10 s later), a closed terminal
SIGHUP. Each stops submitting, lets the POSTs on the wire finish for up to
``--stop-timeout`` seconds (8 by default) and records their task ids, writes the ledger,
the manifest and the gallery, and exits 128 + the signal's number. A POST still on the
wire after that, or at a second signal, is given up and recorded in doubt (``unknown``),
its prompt named on the terminal: never lost, never taken as not sent.

The POSTs on the wire are made by the test's hop (``Proxy.hold_submits``): each submit
reaches the simulator, which makes (and bills) its task, and its answer is held.
"""

from __future__ import annotations

import os
import pty
import signal
from pathlib import Path

import anyio
import pytest

from tests.cli.cli_support import (
    FAST,
    Proxy,
    cli_env,
    command,
    eventually,
    ledger,
    manifest,
    prompts_file,
    run_cli,
    simulator,
)
from tests.cli.lifecycle_support import (
    by_prompt,
    gallery_counts,
    manifest_counts,
    running,
    statuses,
    summary_counts,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

PROMPTS = [f"a harbour at dawn, take {i}" for i in range(1, 7)]


def batch_args(path: Path, out: Path, *more: str) -> tuple[str, ...]:
    return ("batch", str(path), "--out", str(out), *FAST, "--concurrency", "2", *more)


def check_outputs(out: Path, stderr: str) -> None:
    """The terminal, the manifest and the gallery say the same."""
    assert "Traceback" not in stderr
    counts = manifest_counts(out)
    assert summary_counts(stderr) == counts
    assert gallery_counts(out) == counts


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
async def test_a_stop_signal_lets_the_posts_on_the_wire_finish_and_writes_everything(
    tmp_path: Path, signum: signal.Signals
) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = batch_args(path, out)
    async with simulator() as fake, Proxy(fake.url).serving() as proxy:
        proxy.hold_submits = True
        env = cli_env(proxy.url)
        async with running(*args, env=env) as cli:
            await eventually(lambda: proxy.held == 2)
            cli.send(signum)
            await eventually(lambda: "stopping" in cli.stderr)
            proxy.release()  # both answers come within the stop's 8 s
            code = await cli.wait()
        made = set(fake.stats.tasks)

        assert code == 128 + signum, cli.stderr
        assert f"stopping ({signum.name})" in cli.stderr
        assert f"stopped by {signum.name}:" in cli.stderr
        # Every task the simulator made is recorded, with its id; nothing else was sent.
        assert len(made) == 2
        rows = ledger(out)
        assert {row["task_id"] for row in rows} == made
        assert {row["state"] for row in rows} == {"submitted"}
        assert sorted(statuses(out)) == ["not_submitted"] * 4 + ["pending"] * 2
        assert {x["task_id"] for x in manifest(out) if x["task_id"]} == made
        check_outputs(out, cli.stderr)

        # The next run waits for the two tasks and sends only the four others.
        resumed = await run_cli(*args, env=env)
        assert resumed.code == 0, resumed.stderr
        assert fake.stats.duplicate_submissions == 0
        assert by_prompt(fake.stats.tasks) == dict.fromkeys(PROMPTS, 1)


async def test_a_post_still_on_the_wire_at_the_stop_timeout_is_given_up_in_doubt(
    tmp_path: Path,
) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = batch_args(path, out, "--stop-timeout", "1")
    async with simulator() as fake, Proxy(fake.url).serving() as proxy:
        proxy.hold_submits = True  # their answers never come while the command waits
        env = cli_env(proxy.url)
        async with running(*args, env=env) as cli:
            await eventually(lambda: proxy.held == 2)
            cli.send(signal.SIGTERM)
            code = await cli.wait(timeout=30)
        held = [task.request.prompt for task in fake.stats.tasks.values()]

        assert code == 143, cli.stderr
        assert len(held) == 2
        # In doubt in the ledger, the manifest and on the terminal, with their prompts.
        rows = {row["prompt"]: row for row in ledger(out)}
        assert set(rows) == set(held)
        assert {row["state"] for row in rows.values()} == {"unknown"}
        assert all("given up" in row["error"] for row in rows.values())
        lines = {x["prompt"]: x for x in manifest(out)}
        assert {p for p, x in lines.items() if x["status"] == "unknown"} == set(held)
        assert {p for p, x in lines.items() if x["status"] == "not_submitted"} == (
            set(PROMPTS) - set(held)
        )
        said = cli.stderr.split("novita-video: in doubt: 2 submit(s)", 1)[1]
        for prompt in held:
            assert f"#{PROMPTS.index(prompt) + 1} {prompt!r}" in said
        check_outputs(out, cli.stderr)

        # Never taken as not sent: the next run does not send them again on its own.
        proxy.release()
        resumed = await run_cli(*args, env=env)
        assert resumed.code == 1, resumed.stderr
        assert "2 prompt(s) are unknown" in resumed.stderr
        assert fake.stats.duplicate_submissions == 0
        assert by_prompt(fake.stats.tasks) == dict.fromkeys(PROMPTS, 1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_gives_up_the_wire_at_once(
    tmp_path: Path, signum: signal.Signals
) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    async with simulator() as fake, Proxy(fake.url).serving() as proxy:
        proxy.hold_submits = True
        async with running(*batch_args(path, out), env=cli_env(proxy.url)) as cli:
            await eventually(lambda: proxy.held == 2)
            cli.send(signum)
            await eventually(lambda: "stopping" in cli.stderr)
            cli.send(signum)
            # Real time: well inside the 8 s the first signal gave the POSTs, so only
            # the second signal can have ended the wait.
            code = await cli.wait(timeout=6)
        held = {task.request.prompt for task in fake.stats.tasks.values()}

    assert code == 128 + signum, cli.stderr
    assert f"given up: {signum.name} came while waiting" in cli.stderr
    assert {row["prompt"]: row["state"] for row in ledger(out)} == dict.fromkeys(held, "unknown")
    assert sorted(statuses(out)) == ["not_submitted"] * 4 + ["unknown"] * 2
    check_outputs(out, cli.stderr)


async def test_sighup_from_a_terminal_that_has_gone_still_writes_everything(
    tmp_path: Path,
) -> None:
    # A closed terminal: stderr is a pseudo-terminal whose other end is closed before
    # SIGHUP comes, so every message the command writes from then on fails (EIO).
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), "--rpm", "120", "--concurrency", "2")
    primary, secondary = pty.openpty()
    async with simulator(task_duration=(3.0, 4.0)) as fake:
        try:
            process = await anyio.open_process(
                command(*args), env=cli_env(fake.url), stdout=secondary, stderr=secondary
            )
        finally:
            os.close(secondary)
        async with process:
            try:
                await eventually(lambda: fake.stats.task_count >= 2)
            finally:
                os.close(primary)
            process.send_signal(signal.SIGHUP)
            with anyio.fail_after(30):
                code = await process.wait()
        made = set(fake.stats.tasks)
    assert code == 129
    assert {row["task_id"] for row in ledger(out)} == made
    assert {x["task_id"] for x in manifest(out) if x["status"] == "pending"} == made
    assert (out / "index.html").is_file()
