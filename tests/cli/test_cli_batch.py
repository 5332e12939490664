"""``novita-video batch`` as a user runs it: a subprocess against a simulator on 127.0.0.1."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import anyio
import pytest

from tests.cli.cli_support import (
    CLIP,
    FAST,
    KEY,
    Proxy,
    Ran,
    cli_env,
    clips,
    manifest,
    prompts_file,
    run_cli,
    simulator,
    write,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]


def no_traceback(ran: Ran) -> None:
    assert "Traceback" not in ran.stderr


async def test_every_format_makes_its_clips(tmp_path: Path) -> None:
    inputs = {
        "txt": write(tmp_path / "p.txt", "# two clips\n\nA cat on a boat\n  A dog in snow  \n"),
        "jsonl": write(
            tmp_path / "p.jsonl",
            '{"prompt": "A fox", "id": "fox-1"}\n\n'
            '{"prompt": "A bird", "image_url": "https://example.com/bird.png",'
            ' "enable_prompt_expansion": false}\n',
        ),
        "csv": write(tmp_path / "p.csv", 'id,Prompt,notes\nw1,"A whale, singing",x\nw2,A seal,\n'),
    }
    runs: dict[str, Ran] = {}
    async with simulator() as fake:
        env = cli_env(fake.url)

        async def batch(name: str, *args: str, stdin: bytes | None = None) -> None:
            runs[name] = await run_cli(
                "batch", *args, "--out", str(tmp_path / name), *FAST, env=env, stdin=stdin
            )

        async with anyio.create_task_group() as group:
            for name, path in inputs.items():
                group.start_soon(batch, name, str(path))
            group.start_soon(lambda: batch("stdin", "-", stdin=b"A horse\n\nA cow\n"))
        stats = fake.stats
    for name, ran in runs.items():
        assert ran.code == 0, (name, ran.stderr)
        no_traceback(ran)
        out = tmp_path / name
        lines = manifest(out)
        assert len(lines) == 2
        for line in lines:
            assert line["status"] == "succeeded"
            assert line["error"] is None
            assert (out / line["file"]).read_bytes() == CLIP
        assert len(clips(out)) == 2
        assert (out / "index.html").is_file()
    assert [(x["line"], x["prompt"]) for x in manifest(tmp_path / "txt")] == [
        (3, "A cat on a boat"),
        (4, "A dog in snow"),
    ]
    assert [x["id"] for x in manifest(tmp_path / "jsonl")] == ["fox-1", None]
    assert [x["id"] for x in manifest(tmp_path / "csv")] == ["w1", "w2"]
    assert re.fullmatch(r"a-whale-singing-[0-9a-f]{8}\.mp4", manifest(tmp_path / "csv")[0]["file"])
    bird = next(t.request for t in stats.tasks.values() if t.request.prompt == "A bird")
    assert bird.image_url == "https://example.com/bird.png"
    assert bird.enable_prompt_expansion is False
    assert stats.task_count == 8
    assert stats.duplicate_submissions == 0
    assert stats.video_requests_with_authorization == 0


BAD_INPUTS = [
    ("bad.jsonl", '{"prompt": "fine"}\n{"prompt": "broken"\n', "bad.jsonl:2: not valid JSON"),
    ("bad.csv", "text\nhello\n", "bad.csv:1: the header has no 'prompt' column"),
    ("long.txt", "fine\n# note\n" + "x" * 2001 + "\n", "long.txt:3: prompt: must be at most 2000"),
    ("img.jsonl", '{"prompt": "a", "image_url": "not-a-url"}\n', "img.jsonl:1: image_url"),
    ("empty.txt", "# nothing\n\n", "no prompts in"),
    ("prompts.yaml", "- a cat\n", "cannot tell its format"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_INPUTS)
async def test_input_errors_stop_before_anything_is_sent(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = write(tmp_path / name, content)
    async with simulator() as fake:
        ran = await run_cli(
            "batch", str(path), "--out", str(tmp_path / "out"), env=cli_env(fake.url)
        )
        stats = fake.stats
    assert ran.code == 2
    assert message in ran.stderr
    no_traceback(ran)
    assert ran.stdout == ""
    assert sum(stats.requests.values()) == 0


async def test_a_missing_file_is_exit_2(tmp_path: Path) -> None:
    ran = await run_cli(
        "batch", str(tmp_path / "nope.txt"), "--out", str(tmp_path), env=cli_env(None)
    )
    assert ran.code == 2
    assert "nope.txt: No such file or directory" in ran.stderr
    no_traceback(ran)


async def test_without_a_key_one_sentence_says_what_to_do(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a cat"])
    ran = await run_cli("batch", str(path), "--out", str(tmp_path / "out"), env=cli_env(None, None))
    assert ran.code == 2
    assert ran.stdout == ""
    assert ran.stderr.count("\n") == 1
    assert "NOVITA_API_KEY" in ran.stderr
    assert "--simulate" in ran.stderr
    no_traceback(ran)
    assert not (tmp_path / "out").exists()


async def test_exit_codes_and_json_lines(tmp_path: Path) -> None:
    """0 all made, 1 some failed (refused prompt, failed task), 3 fatal (balance, key)."""
    prompts = prompts_file(tmp_path / "p.txt", ["a cat", "a [illegal] cat", "a dog"])
    failing = prompts_file(tmp_path / "f.txt", ["a cow", "a pig"])
    many = prompts_file(tmp_path / "m.txt", [f"clip number {i}" for i in range(5)])
    runs: dict[str, Ran] = {}
    async with (
        simulator() as plain,
        simulator(failure_rate=1.0) as failing_sim,
        simulator(balance=2) as poor,
    ):

        async def batch(name: str, path: Path, url: str, *args: str, key: str = KEY) -> None:
            out = str(tmp_path / name)
            runs[name] = await run_cli(
                "batch", str(path), "--out", out, *FAST, *args, env=cli_env(url, key)
            )

        async with anyio.create_task_group() as group:
            group.start_soon(batch, "refused", prompts, plain.url, "--json")
            group.start_soon(batch, "failed", failing, failing_sim.url, "--quiet")
            group.start_soon(lambda: batch("poor", many, poor.url, "--concurrency", "1"))
            group.start_soon(lambda: batch("badkey", prompts, plain.url, key="sk-wrong"))
        poor_tasks = poor.stats.task_count
        plain_prompts = Counter(t.request.prompt for t in plain.stats.tasks.values())

    refused = runs["refused"]
    assert refused.code == 1
    *lines, last = [json.loads(line) for line in refused.stdout.splitlines()]
    assert last["run"]["exit"] == 1  # the last line is the run's, with its spend
    assert sorted((x["index"], x["status"]) for x in lines) == [
        (1, "succeeded"),
        (2, "rejected"),
        (3, "succeeded"),
    ]
    assert "ILLEGAL_PROMPT" in next(x["error"] for x in lines if x["index"] == 2)
    assert "2 of 3 clips made, 1 failed" in refused.stderr
    # The failed prompt is listed by index, prompt and reason.
    listed = refused.stderr.split("novita-video: failed:\n", 1)[1].splitlines()
    assert listed[0].startswith("  #2 ")
    assert "ILLEGAL_PROMPT" in listed[0]
    assert "queued" in refused.stderr  # the plain progress line, on stderr

    failed = runs["failed"]
    assert (failed.code, failed.stdout, failed.stderr) == (1, "", "")
    assert {x["error"] for x in manifest(tmp_path / "failed")} == {
        "the task failed: content moderation failed"
    }
    assert "content moderation failed" in (tmp_path / "failed" / "index.html").read_text()

    poor_run = runs["poor"]
    assert poor_run.code == 3
    assert "balance is too low" in poor_run.stderr
    assert poor_tasks == 2
    statuses = Counter(x["status"] for x in manifest(tmp_path / "poor"))
    assert statuses["succeeded"] == 2
    assert statuses["succeeded"] + statuses["rejected"] + statuses["not_submitted"] == 5
    assert len(clips(tmp_path / "poor")) == 2

    badkey = runs["badkey"]
    assert badkey.code == 3
    assert "refused the API key" in badkey.stderr
    assert "INVALID_API_KEY" in badkey.stderr
    assert not clips(tmp_path / "badkey")
    assert plain_prompts == {"a cat": 1, "a dog": 1}  # the bad key made no task
    for ran in runs.values():
        no_traceback(ran)


async def test_downloads_renew_expired_links(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a cat", "a dog", "a cow"])
    runs: dict[str, Ran] = {}

    async def batch(name: str, url: str) -> None:
        out = str(tmp_path / name)
        runs[name] = await run_cli("batch", str(path), "--out", out, *FAST, env=cli_env(url))

    async with (
        simulator() as fake,
        simulator(video_ttl=1) as short,  # links too close to expiry to be used as they come
        Proxy(fake.url).serving() as proxy,
    ):
        proxy.expire_downloads = True  # every first download is refused as expired
        async with anyio.create_task_group() as group:
            group.start_soon(batch, "expired", proxy.url)
            group.start_soon(batch, "brief", short.url)
        assert len(proxy.expired) == 3
        for sim in (fake, short):
            assert all(polls >= 2 for polls in sim.stats.polls.values())  # a renewal each
            assert sim.stats.video_requests_with_authorization == 0
    for name, ran in runs.items():
        assert ran.code == 0, ran.stderr
        files = clips(tmp_path / name)
        assert len(files) == 3
        assert all(file.read_bytes() == CLIP for file in files)
        assert not list((tmp_path / name).glob(".*.part"))


async def test_no_download_records_tasks_only(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a cat", "a dog"])
    async with simulator() as fake:
        ran = await run_cli(
            "batch",
            str(path),
            "--out",
            str(tmp_path),
            "--no-download",
            *FAST,
            env=cli_env(fake.url),
        )
    assert ran.code == 0, ran.stderr
    assert not clips(tmp_path)
    lines = manifest(tmp_path)
    assert [(x["status"], x["file"]) for x in lines] == [("succeeded", None)] * 2
    assert all(x["task_id"] in fake.stats.tasks for x in lines)


async def test_an_output_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a cat"])
    (tmp_path / "out" / "manifest.jsonl").mkdir(parents=True)  # in the way of the manifest
    async with simulator() as fake:
        ran = await run_cli(
            "batch",
            str(path),
            "--out",
            str(tmp_path / "out"),
            "--no-download",
            *FAST,
            env=cli_env(fake.url),
        )
    assert ran.code == 1
    assert "cannot write to" in ran.stderr
    assert "manifest.jsonl" in ran.stderr
    no_traceback(ran)
