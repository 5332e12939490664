"""Crashes and resumes: SIGKILL and Ctrl-C at several moments, then the same command again.

The promise checked every time: no prompt with a recorded task id is submitted again
(the simulator counts duplicate submissions), each prompt ends with at most one task
unless ``--resubmit-unknown`` was asked for, and each clip is one whole file.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import anyio
import pytest

from novita_video.testing import FakeNovita
from tests.cli.cli_support import (
    CLIP,
    FAST,
    KEY,
    Proxy,
    cli_env,
    clips,
    command,
    eventually,
    ledger,
    manifest,
    prompts_file,
    read_all,
    run_cli,
    simulator,
    start_cli,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

PROMPTS = [f"a lighthouse in a storm, take {i}" for i in range(1, 7)]


def tasks_per_prompt(fake: FakeNovita) -> Counter[str]:
    return Counter(task.request.prompt for task in fake.stats.tasks.values())


def check_complete(out: Path, fake: FakeNovita) -> None:
    """Every prompt made once, its clip whole, nothing left over."""
    lines = manifest(out)
    assert [x["status"] for x in lines] == ["succeeded"] * len(PROMPTS)
    assert sorted(p.name for p in clips(out)) == sorted(x["file"] for x in lines)
    assert all(path.read_bytes() == CLIP for path in clips(out))
    assert not list(out.glob(".*.part"))
    assert {x["task_id"] for x in lines} <= set(fake.stats.tasks)


@pytest.mark.parametrize("moment", ["tasks_running", "downloading"])
async def test_sigkill_then_resume_submits_nothing_twice(tmp_path: Path, moment: str) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), "--rpm", "120")
    async with simulator(task_duration=(0.5, 1.5)) as fake:
        env = cli_env(fake.url)
        process = await start_cli(*args, env=env)
        if moment == "tasks_running":
            await eventually(lambda: fake.stats.task_count >= 2)
        else:
            await eventually(lambda: bool(clips(out)))
        process.kill()
        await process.wait()
        before = tasks_per_prompt(fake)
        assert sum(before.values()) < len(PROMPTS) or moment == "downloading"

        resumed = await run_cli(*args, env=env)
        assert fake.stats.duplicate_submissions == 0
        assert max(tasks_per_prompt(fake).values()) == 1
        # A POST may have been on the wire when the kill came: that prompt is "unknown"
        # (exit 1) until the user says to send it again.
        if resumed.code == 1:
            assert "--resubmit-unknown" in resumed.stderr
            resumed = await run_cli(*args, "--resubmit-unknown", env=env)
        assert resumed.code == 0, resumed.stderr
        check_complete(out, fake)
        assert all(tasks_per_prompt(fake)[p] >= 1 for p in PROMPTS)


async def test_a_post_in_flight_at_the_crash_is_unknown_until_asked(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST, "--concurrency", "2")
    async with simulator() as fake, Proxy(fake.url).serving() as proxy:
        proxy.hold_submits = True  # tasks are made, their ids never come back
        env = cli_env(proxy.url)
        process = await start_cli(*args, env=env)
        await eventually(lambda: proxy.held == 2)
        process.kill()
        await process.wait()
        proxy.release()  # from now on every answer passes
        assert fake.stats.task_count == 2
        assert [row["state"] for row in ledger(out)] == ["sending", "sending"]

        resumed = await run_cli(*args, "--json", env=env)
        assert resumed.code == 1
        assert "2 prompt(s) are unknown" in resumed.stderr
        assert fake.stats.duplicate_submissions == 0
        assert [x["status"] for x in manifest(out)] == ["unknown"] * 2 + ["succeeded"] * 4
        assert "--resubmit-unknown" in manifest(out)[0]["error"]

        again = await run_cli(*args, env=env)  # still not sent without the flag
        assert again.code == 1
        assert fake.stats.duplicate_submissions == 0

        asked = await run_cli(*args, "--resubmit-unknown", env=env)
        assert asked.code == 0, asked.stderr
        # The two held POSTs had made tasks: sending them again paid twice, as warned.
        assert fake.stats.duplicate_submissions == 2
        check_complete(out, fake)


async def test_ctrl_c_stops_submitting_and_says_what_is_outstanding(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), "--rpm", "60")
    async with simulator(task_duration=(3.0, 4.0)) as fake:
        env = cli_env(fake.url)
        async with await anyio.open_process(command(*args), env=env) as process:
            await eventually(lambda: fake.stats.task_count >= 2)
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(10):
                assert process.stderr is not None
                stderr = await read_all(process.stderr)
                code = await process.wait()
        submitted = fake.stats.task_count
        assert code == 130
        assert "Traceback" not in stderr
        assert "interrupted:" in stderr
        assert "not submitted" in stderr
        assert submitted < len(PROMPTS)
        with contextlib.closing(sqlite3.connect(out / ".novita" / "ledger.sqlite")) as db, db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = ledger(out)
        assert len(rows) == submitted
        assert all(row["state"] == "submitted" and row["task_id"] for row in rows)
        assert {x["status"] for x in manifest(out)} == {"pending", "not_submitted"}

        await anyio.sleep(1.0)  # let the first tasks finish while nobody watches
        resumed = await run_cli(*args, "--rpm", "6000", env=env)
        assert resumed.code == 0, resumed.stderr
        assert fake.stats.duplicate_submissions == 0
        assert max(tasks_per_prompt(fake).values()) == 1
        check_complete(out, fake)


async def test_resume_fetches_missing_clips_and_follows_edits(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a cat", "a dog"])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator() as fake:
        env = cli_env(fake.url)
        first = await run_cli(*args, "--no-download", env=env)
        assert first.code == 0, first.stderr
        assert not clips(out)
        fetched = await run_cli(*args, env=env)  # the clips, without new tasks
        assert fetched.code == 0, fetched.stderr
        assert fake.stats.task_count == 2
        assert len(clips(out)) == 2
        clips(out)[0].unlink()
        refetched = await run_cli(*args, env=env)
        assert refetched.code == 0, refetched.stderr
        assert fake.stats.task_count == 2
        assert len(clips(out)) == 2

        prompts_file(path, ["a cat", "a fox", "a cow"])  # edit line 2, add line 3
        edited = await run_cli(*args, env=env)
        assert edited.code == 0, edited.stderr
        assert tasks_per_prompt(fake) == {"a cat": 1, "a dog": 1, "a fox": 1, "a cow": 1}
        assert [x["prompt"] for x in manifest(out)] == ["a cat", "a fox", "a cow"]
        assert fake.stats.duplicate_submissions == 0


async def test_one_run_per_directory_and_no_key_on_disk(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), "--rpm", "30")
    async with simulator() as fake:
        env = cli_env(fake.url)
        process = await start_cli(*args, env=env)
        await eventually(lambda: fake.stats.task_count >= 1)
        second = await run_cli(*args, env=env)
        assert second.code == 2
        assert "another novita-video run is using" in second.stderr
        process.terminate()
        await process.wait()
        elsewhere = await run_cli(*args, "--simulate", env=env)
        assert elsewhere.code == 2
        assert "holds a run against http://127.0.0.1" in elsewhere.stderr
    assert fake.stats.task_count < len(PROMPTS)
    for file in out.rglob("*"):
        if file.is_file():
            assert KEY.encode() not in file.read_bytes(), file


async def test_a_second_ctrl_c_quits_without_waiting_for_the_wire(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST, "--concurrency", "1")
    async with simulator() as fake, Proxy(fake.url).serving() as proxy:
        proxy.hold_submits = True  # a POST that hangs: the first Ctrl-C waits for it
        async with await anyio.open_process(command(*args), env=cli_env(proxy.url)) as process:
            await eventually(lambda: proxy.held == 1)
            process.send_signal(signal.SIGINT)
            await anyio.sleep(0.5)
            assert process.returncode is None  # still waiting for the POST on the wire
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(5):
                assert process.stderr is not None
                stderr = await read_all(process.stderr)
                assert await process.wait() == 130
    assert "stopping (Ctrl-C again to quit at once)" in stderr
    # The POST given up is in doubt, named on the terminal and in the ledger.
    assert stderr.splitlines()[-2].startswith("novita-video: in doubt: 1 submit(s)")
    assert "Traceback" not in stderr
    assert [row["state"] for row in ledger(out)] == ["unknown"]


async def test_a_lost_or_emptied_ledger_never_means_paying_again(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), "--rpm", "120")
    async with simulator() as fake:
        env = cli_env(fake.url)
        first = await run_cli(*args, env=env)
        assert first.code == 0, first.stderr
        paid = fake.stats.task_count
        assert paid == len(PROMPTS)
        before = {p.name: p.read_bytes() for p in clips(out)}
        for lose in ("emptied", "deleted"):
            database = out / ".novita" / "ledger.sqlite"
            if lose == "emptied":
                with contextlib.closing(sqlite3.connect(database)) as db, db:
                    db.execute("DELETE FROM prompts")
            else:
                for leftover in (out / ".novita").glob("ledger.sqlite*"):
                    leftover.unlink()
            again = await run_cli(*args, env=env)
            assert again.code == 2, (lose, again.stderr)
            assert "would pay for them twice" in again.stderr
            assert f"lists {len(PROMPTS)} prompt(s) already sent" in again.stderr
            assert len(again.stderr.strip().splitlines()) == 1  # one sentence, no traceback
            assert fake.stats.task_count == paid  # nothing sent
            assert {p.name: p.read_bytes() for p in clips(out)} == before


async def test_a_damaged_ledger_is_one_sentence_and_nothing_sent(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    (out / ".novita").mkdir(parents=True)
    (out / ".novita" / "ledger.sqlite").write_bytes(b"this is not a database" * 200)
    async with simulator() as fake:
        ran = await run_cli("batch", str(path), "--out", str(out), env=cli_env(fake.url))
        assert ran.code == 2
        assert "is damaged" in ran.stderr
        assert "Traceback" not in ran.stderr
        assert len(ran.stderr.strip().splitlines()) == 1
        assert fake.stats.requests["submit"] == 0
