"""``status``, ``wait``, ``simulate`` and ``--help``."""

from __future__ import annotations

import json
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

from novita_video.testing import FakeNovita
from tests.cli.cli_support import (
    CLIP,
    FAST,
    Ran,
    cli_env,
    manifest,
    prompts_file,
    read_all,
    run_cli,
    simulator,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]


async def test_help_says_what_the_simulator_does() -> None:
    ran = await run_cli("batch", "--help", env=cli_env(None, None))
    assert ran.code == 0
    assert "tasks take 3 to 8 s, at most 120 submits a minute" in " ".join(ran.stdout.split())
    for option in ("--concurrency", "--rpm", "--task-timeout", "--no-download", "--json"):
        assert option in ran.stdout


async def test_status_and_wait(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a cat", "a dog"])
    async with simulator(task_duration=(1.0, 1.0)) as fake, simulator(failure_rate=1.0) as bad:
        env = cli_env(fake.url)
        runs: dict[str, Ran] = {}

        async def batch(name: str, url: str) -> None:
            out = str(tmp_path / name)
            runs[name] = await run_cli(
                "batch", str(path), "--out", out, "--no-download", *FAST, env=cli_env(url)
            )

        async with anyio.create_task_group() as group:
            group.start_soon(batch, "made", fake.url)
            group.start_soon(batch, "failed", bad.url)
        assert runs["made"].code == 0, runs["made"].stderr
        assert runs["failed"].code == 1
        task_id = manifest(tmp_path / "made")[0]["task_id"]

        status = await run_cli("status", task_id, "--json", env=env)
        assert status.code == 0, status.stderr
        answer = json.loads(status.stdout)
        assert (answer["task_id"], answer["status"]) == (task_id, "succeeded")  # the manifest's
        assert answer["video_url"].startswith(fake.url)

        waited = await run_cli("wait", task_id, "--out", str(tmp_path / "w"), env=env)
        assert waited.code == 0, waited.stderr
        file = tmp_path / "w" / f"{task_id}.mp4"
        assert waited.stdout.splitlines() == [f"{task_id}: succeeded", str(file)]
        assert file.read_bytes() == CLIP

        missing = await run_cli("status", "no-such-task", env=env)
        assert missing.code == 1
        assert "no such task" in missing.stderr

        failed = await run_cli(
            "batch",
            str(path),
            "--out",
            str(tmp_path / "f"),
            "--no-download",
            *FAST,
            env=cli_env(bad.url),
        )
        assert failed.code == 1
        doomed = manifest(tmp_path / "f")[0]["task_id"]
        waited = await run_cli("wait", doomed, "--json", env=cli_env(bad.url))
        assert waited.code == 1
        assert json.loads(waited.stdout)["reason"] == "content moderation failed"

        wrong = await run_cli("status", task_id, env=cli_env(fake.url, "sk-wrong"))
        assert wrong.code == 3
        assert "refused the API key" in wrong.stderr
    nokey = await run_cli("wait", task_id, env=cli_env(None, None))
    assert nokey.code == 2
    assert "NOVITA_API_KEY" in nokey.stderr
    for ran in (status, missing, wrong, nokey):
        assert "Traceback" not in ran.stderr


@pytest.mark.parametrize(
    "start",
    [("-m", "novita_video", "simulate"), ("-m", "novita_video.testing")],
    ids=["novita-video simulate", "python -m novita_video.testing"],
)
async def test_both_ways_to_start_the_simulator_are_one(start: tuple[str, ...]) -> None:
    # The same knobs, defaults and output, whichever way it is started.
    argv = [sys.executable, *start, "--port", "0", "--eta-rounding", "none"]
    async with await anyio.open_process(argv, env=cli_env(None, None)) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        with anyio.fail_after(20):
            first = b""
            while b"\n" not in first:
                first += await process.stdout.receive()
        line = first.decode().splitlines()[0]
        assert line.startswith("Simulated Novita API on http://127.0.0.1:")
        assert line.endswith("(key: sk-simulated)")
        url = line.split()[4]
        async with aiohttp.ClientSession() as session, session.get(f"{url}/_simulator/stats") as r:
            assert r.status == 200
            assert (await r.json())["task_count"] == 0
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(20):
            rest = await read_all(process.stdout)
            hints = await read_all(process.stderr)
            assert await process.wait() == 0
    assert first.decode() + rest == line + "\n"  # one line on stdout, for scripts
    assert f"export NOVITA_BASE_URL={url} NOVITA_API_KEY=sk-simulated" in hints
    assert "Ctrl-C stops it." in hints


async def test_the_simulate_command_has_the_simulators_own_help() -> None:
    ours = await run_cli("simulate", "--help", env=cli_env(None, None))
    done = await anyio.run_process(
        [sys.executable, "-m", "novita_video.testing", "--help"], env=cli_env(None, None)
    )
    theirs = done.stdout.decode()
    assert ours.code == 0
    renamed = ours.stdout.replace("novita-video simulate", "python -m novita_video.testing")
    assert " ".join(renamed.split()) == " ".join(theirs.split())  # wrapped to its name
    for knob in ("--task-duration", "--failure-rate", "--chaos-server-errors", "--bare-key"):
        assert knob in ours.stdout


@pytest.mark.parametrize("name", ["status", "wait"])
async def test_status_and_wait_explain_themselves(name: str) -> None:
    ran = await run_cli(name, "--help", env=cli_env(None, None))
    text = " ".join(ran.stdout.split())
    assert ran.code == 0
    assert "TASK_ID the task id a submit returned" in text
    assert "--simulate ask the simulator that `novita-video simulate` serves" in text
    assert ("Ask Novita once" if name == "status" else "Wait until one task ends") in text


async def test_status_and_wait_simulate_talk_to_the_simulate_command() -> None:
    try:
        fake = FakeNovita(port=8000, task_duration=(0.1, 0.1))
        await fake.__aenter__()
    except OSError:
        pytest.skip("port 8000, where `novita-video simulate` serves, is taken here")
    try:
        async with aiohttp.ClientSession(fake.url) as http:
            headers = {"Authorization": f"Bearer {fake.api_key}"}
            async with http.post(
                "/v3/async/minimax-video-01", json={"prompt": "a cat"}, headers=headers
            ) as posted:
                task_id = (await posted.json())["task_id"]
        env = cli_env(None, None)
        waited = await run_cli("wait", task_id, "--simulate", "--json", env=env)
        assert waited.code == 0, waited.stderr
        assert json.loads(waited.stdout)["status"] == "succeeded"
        status = await run_cli("status", task_id, "--simulate", env=env)
        assert status.stdout.startswith(f"{task_id}: succeeded")
        # An id it does not know (one of a `batch --simulate` run, say): why, in words.
        gone = await run_cli("status", "an-id-of-a-batch-simulate-run", "--simulate", env=env)
        assert gone.code == 1
        assert "the simulator at http://127.0.0.1:8000 has no task of that id" in gone.stderr
        assert "ids from `batch --simulate` cannot be found this way" in gone.stderr
    finally:
        await fake.__aexit__(None, None, None)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("name", ["status", "wait"])
async def test_status_and_wait_simulate_with_nothing_listening_say_why(name: str) -> None:
    """They used to point at NOVITA_BASE_URL, which --simulate does not read."""
    if _listening(8000):
        pytest.skip("something listens on port 8000 here")
    ran = await run_cli(name, "a-task-id", "--simulate", env=cli_env(None, None))
    assert ran.code == 2
    said = " ".join(ran.stderr.split())
    assert "nothing answers at http://127.0.0.1:8000" in said
    assert "`novita-video simulate`" in said
    assert "task ids from `batch --simulate` cannot be found this way" in said
    assert "NOVITA_BASE_URL" not in said
    assert "Traceback" not in ran.stderr
