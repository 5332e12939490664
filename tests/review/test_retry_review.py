"""Review of issue 23's money paths: ``--retry-failed`` and the ledger's ``attempts``,
run as real processes against the simulator and hops on loopback. The simulator's task
counts are the judge of what was paid for."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from novita_video.testing import FakeNovita
from tests.cli.cli_support import (
    FAST,
    SUBMIT,
    Proxy,
    cli_env,
    eventually,
    forward,
    ledger,
    manifest,
    prompts_file,
    run_cli,
    simulator,
    start_cli,
)
from tests.cli.lifecycle_support import Scripted, error, running

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]


def tasks_per_prompt(fake: FakeNovita) -> Counter[str]:
    return Counter(task.request.prompt for task in fake.stats.tasks.values())


def attempts(out: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(out / ".novita" / "ledger.sqlite")) as db, db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM attempts ORDER BY replaced_at")]


def by_prompt(out: Path) -> dict[str, dict[str, Any]]:
    return {x["prompt"]: x for x in manifest(out)}


async def _failed_once(path: Path, out: Path, env: dict[str, str]) -> dict[str, str]:
    """A first run whose every task fails: prompt -> its failed task id."""
    first = await run_cli("batch", str(path), "--out", str(out), *FAST, env=env)
    assert first.code == 1, first.stderr
    failed = {p: x["task_id"] for p, x in by_prompt(out).items() if x["status"] == "failed"}
    assert failed
    assert all(failed.values())
    return failed


async def test_a_retry_killed_on_the_wire_is_never_paid_a_third_time(tmp_path: Path) -> None:
    """SIGKILL while the retry's POST is on the wire (its task made at Novita): the intent
    was on record before the POST, the failed task stays an earlier attempt, and neither a
    plain run nor another --retry-failed sends it again; only --resubmit-unknown does."""
    path = prompts_file(tmp_path / "p.txt", ["a heron in the reeds"])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator(failure_rate=1.0) as fake, Proxy(fake.url).serving() as proxy:
        env = cli_env(proxy.url)
        failed = await _failed_once(path, out, env)
        proxy.hold_submits = True
        process = await start_cli(*args, "--retry-failed", env=env)
        await eventually(lambda: proxy.held == 1)
        # The POST reached Novita: the intent is committed, the failed task archived.
        (row,) = ledger(out)
        assert (row["state"], row["task_id"]) == ("sending", None)
        assert [(a["task_id"], a["state"]) for a in attempts(out)] == [
            (failed["a heron in the reeds"], "failed")
        ]
        process.kill()
        await process.wait()
        proxy.release()
        proxy.hold_submits = False
        assert tasks_per_prompt(fake)["a heron in the reeds"] == 2

        plain = await run_cli(*args, env=env)
        again = await run_cli(*args, "--retry-failed", env=env)
        assert "no prompt of this file has a failed task" in again.stderr
        assert tasks_per_prompt(fake)["a heron in the reeds"] == 2, (plain.stderr, again.stderr)
        line = by_prompt(out)["a heron in the reeds"]
        assert line["status"] == "unknown"
        assert line["earlier_tasks"] == [failed["a heron in the reeds"]]

        await run_cli(*args, "--resubmit-unknown", env=env)
        assert tasks_per_prompt(fake)["a heron in the reeds"] == 3  # asked for
        line = by_prompt(out)["a heron in the reeds"]
        assert line["earlier_tasks"] == [failed["a heron in the reeds"]]
        assert line["task_id"] not in (None, failed["a heron in the reeds"])


async def test_a_retry_sigterm_on_the_wire_stays_in_doubt(tmp_path: Path) -> None:
    """SIGTERM while the retry's POST is held past --stop-timeout: it is given up, in
    doubt (unknown), the failed task kept; a plain rerun pays nothing."""
    path = prompts_file(tmp_path / "p.txt", ["a kite over the dunes"])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator(failure_rate=1.0) as fake, Proxy(fake.url).serving() as proxy:
        env = cli_env(proxy.url)
        failed = await _failed_once(path, out, env)
        proxy.hold_submits = True
        async with running(*args, "--retry-failed", "--stop-timeout", "1", env=env) as run:
            await eventually(lambda: proxy.held == 1)
            run.send(signal.SIGTERM)
            code = await run.wait()
        assert code != 0
        proxy.release()
        proxy.hold_submits = False
        line = by_prompt(out)["a kite over the dunes"]
        assert line["status"] == "unknown"
        assert line["earlier_tasks"] == [failed["a kite over the dunes"]]
        await run_cli(*args, env=env)
        await run_cli(*args, "--retry-failed", env=env)
        assert tasks_per_prompt(fake)["a kite over the dunes"] == 2


class Hop(Scripted):
    """A scripted hop whose plays start at the next submit: ``hop.next(plays)``."""

    def next(self, plays: list[Any]) -> None:
        self.plays = [None] * len(self.arrived) + plays

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == SUBMIT:
            turn = len(self.arrived)
            if turn < len(self.plays) and self.plays[turn] is None:
                body = await request.read()
                self.arrived.append(json.loads(body)["prompt"])
                status, payload, kind = await forward(self.upstream, request, body)
                payload = payload.replace(self.upstream.encode(), self.url.encode())
                return web.Response(status=status, body=payload, content_type=kind)
        return await super()._handle(request)


async def _answer_500(hop: Scripted, body: bytes, request: web.Request) -> web.StreamResponse:
    # The task is made (and billed) at Novita, but the answer is an error: in doubt.
    await forward(hop.upstream, request, body)
    return error(500, "INTERNAL_ERROR")


async def _refuse_503(hop: Scripted, body: bytes, request: web.Request) -> web.StreamResponse:
    return error(503, "SERVICE_UNAVAILABLE")


async def _refuse_429(hop: Scripted, body: bytes, request: web.Request) -> web.StreamResponse:
    return error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "0"})


async def test_a_retry_answered_500_is_in_doubt_and_not_retried(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a lantern in the fog"])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator(failure_rate=1.0) as fake, Hop(fake.url).serving() as hop:
        env = cli_env(hop.url)
        failed = await _failed_once(path, out, env)
        assert isinstance(hop, Hop)
        hop.next([_answer_500] * 10)
        await run_cli(*args, "--retry-failed", env=env)
        made = tasks_per_prompt(fake)["a lantern in the fog"]
        assert made >= 2
        (row,) = ledger(out)
        assert row["state"] == "unknown", row
        line = by_prompt(out)["a lantern in the fog"]
        assert line["earlier_tasks"] == [failed["a lantern in the fog"]]
        await run_cli(*args, env=env)
        await run_cli(*args, "--retry-failed", env=env)
        assert tasks_per_prompt(fake)["a lantern in the fog"] == made
        assert made == 2  # the SDK never repeats a POST in doubt on its own


async def test_a_retry_refused_keeps_its_earlier_attempt(tmp_path: Path) -> None:
    """Refused (503 every time): nothing made; the prompt is what it was, its failed task
    (no attempt left on record), so only another asked-for retry sends it; that one,
    refused once (429), pays once and keeps the failed task as its earlier attempt."""
    path = prompts_file(tmp_path / "p.txt", ["a fox in the snow"])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator(failure_rate=1.0) as fake, Hop(fake.url).serving() as hop:
        env = cli_env(hop.url)
        failed = await _failed_once(path, out, env)
        assert isinstance(hop, Hop)
        hop.next([_refuse_503] * 20)
        await run_cli(*args, "--retry-failed", env=env)
        assert tasks_per_prompt(fake)["a fox in the snow"] == 1
        line = by_prompt(out)["a fox in the snow"]
        assert line["status"] == "failed", line
        assert line["task_id"] == failed["a fox in the snow"]
        assert line["earlier_tasks"] == []
        assert attempts(out) == []
        hop.next([_refuse_429])
        await run_cli(*args, "--retry-failed", env=env)
        assert tasks_per_prompt(fake)["a fox in the snow"] == 2
        line = by_prompt(out)["a fox in the snow"]
        assert line["earlier_tasks"] == [failed["a fox in the snow"]]
        assert line["task_id"] != failed["a fox in the snow"]


async def test_retry_with_duplicates_reorders_and_model_switch(tmp_path: Path) -> None:
    """Identical lines are distinct prompts (each retried once); moving lines around
    changes nothing; another --model in the folder retries none of this model's."""
    path = prompts_file(tmp_path / "p.txt", ["a crane", "a crane", "an owl"])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator(failure_rate=1.0) as fake:
        env = cli_env(fake.url)
        await _failed_once(path, out, env)
        prompts_file(path, ["an owl", "a crane", "a crane"])  # reordered
        other = await run_cli(*args, "--model", "kling-v1.6-t2v", "--retry-failed", env=env)
        assert "no prompt of this file has a failed task" in other.stderr, other.stderr
        made = tasks_per_prompt(fake)
        retried = await run_cli(*args, "--retry-failed", env=env)
        assert "sending again the 3 prompt(s)" in retried.stderr
        assert tasks_per_prompt(fake) - made == Counter({"a crane": 2, "an owl": 1})
        prompts_file(path, ["a crane"])  # a duplicate removed: nothing pays for it
        made = tasks_per_prompt(fake)
        await run_cli(*args, env=env)
        assert tasks_per_prompt(fake) == made


async def test_an_old_schema_2_folder_without_attempts_retries_once(tmp_path: Path) -> None:
    """A folder written by schema 2 code before ``attempts`` and the times existed."""
    path = prompts_file(tmp_path / "p.txt", ["a bee", "a wasp"])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator(failure_rate=1.0) as fake:
        env = cli_env(fake.url)
        failed = await _failed_once(path, out, env)
        with contextlib.closing(sqlite3.connect(out / ".novita" / "ledger.sqlite")) as db:
            db.execute("DROP TABLE attempts")
            db.execute("DROP INDEX IF EXISTS prompts_file")
            db.execute("ALTER TABLE prompts DROP COLUMN submitted_at")
            db.execute("ALTER TABLE prompts DROP COLUMN ended_at")
            db.commit()
        made = tasks_per_prompt(fake)
        ran = await run_cli(*args, "--retry-failed", env=env)
        assert ran.code == 1, ran.stderr
        assert tasks_per_prompt(fake) - made == Counter({"a bee": 1, "a wasp": 1})
        for prompt, task in failed.items():
            assert by_prompt(out)[prompt]["earlier_tasks"] == [task]
        made = tasks_per_prompt(fake)
        await run_cli(*args, env=env)
        assert tasks_per_prompt(fake) == made


async def test_the_gallery_survives_hostile_prompts(tmp_path: Path) -> None:
    """Prompts that end a script element or open a comment, and U+2028: the page's JSON
    stays one element and every card shows its prompt as text."""
    hostile = [
        "a cat </script><script>document.title='pwned'</script>",
        "a dog <!-- <script>",
        "a line\u2028separator and\u2029paragraph",
    ]
    path = prompts_file(tmp_path / "p.txt", hostile)
    out = tmp_path / "out"
    async with simulator(failure_rate=1.0) as fake:
        await run_cli("batch", str(path), "--out", str(out), *FAST, env=cli_env(fake.url))
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count("</script>") == 2  # the data's and the code's, nothing else
    assert "<!--" not in page
    assert "\u2028" not in page
    data = page.split('id="gallery-data">', 1)[1].split("</script>", 1)[0]
    cards = json.loads(data)["cards"]
    assert [c["p"] for c in cards] == hostile


def _jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


async def test_an_id_line_edited_then_retried_is_told_the_truth(tmp_path: Path) -> None:
    """An id line whose text was corrected after its task failed: --retry-failed sends
    the new text (a new task, paid), so the command must not say it is "not paid for
    again"."""
    path = _jsonl(tmp_path / "p.jsonl", [{"id": "shot-1", "prompt": "a hreon"}])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator(failure_rate=1.0) as fake:
        env = cli_env(fake.url)
        await run_cli(*args, env=env)
        _jsonl(path, [{"id": "shot-1", "prompt": "a heron"}])
        plain = await run_cli(*args, env=env)
        assert "not paid for again" in plain.stderr  # true here: nothing is sent
        assert tasks_per_prompt(fake) == Counter({"a hreon": 1})
        retried = await run_cli(*args, "--retry-failed", env=env)
        assert tasks_per_prompt(fake) == Counter({"a hreon": 1, "a heron": 1})
        assert "not paid for again" not in retried.stderr, retried.stderr


async def _refuse_429_long(hop: Scripted, body: bytes, request: web.Request) -> web.StreamResponse:
    hop.event("refused").set()
    return error(429, "RATE_LIMIT_EXCEEDED", headers={"Retry-After": "30"})


async def test_a_refused_retry_is_not_paid_by_a_plain_run(tmp_path: Path) -> None:
    """Ctrl-C / SIGTERM while the retry waits out a 429: nothing was made by the retry;
    the prompt is what it was, a failed task, and only --retry-failed pays for it again."""
    path = prompts_file(tmp_path / "p.txt", ["an otter on the ice"])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator(failure_rate=1.0) as fake, Hop(fake.url).serving() as hop:
        assert isinstance(hop, Hop)
        env = cli_env(hop.url)
        failed = await _failed_once(path, out, env)
        hop.next([_refuse_429_long])
        async with running(*args, "--retry-failed", env=env) as run:
            await hop.event("refused").wait()
            run.send(signal.SIGTERM)
            await run.wait()
        line = by_prompt(out)["an otter on the ice"]
        assert (
            line["earlier_tasks"] == [failed["an otter on the ice"]]
            or line["task_id"] == (failed["an otter on the ice"])
        )
        assert tasks_per_prompt(fake)["an otter on the ice"] == 1
        plain = await run_cli(*args, env=env)
        assert tasks_per_prompt(fake)["an otter on the ice"] == 1, plain.stderr


async def test_a_schema_1_folder_retries_its_failed_once(tmp_path: Path) -> None:
    from tests.review.test_cli_review import v1_folder

    path = prompts_file(tmp_path / "p.txt", ["a moth", "a gnat"])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST)
    async with simulator() as fake:
        rows = [(1, "a moth", "failed", None), (2, "a gnat", "succeeded", "g.mp4")]
        v1_folder(out, fake.url.rstrip("/"), rows)
        env = cli_env(fake.url)
        ran = await run_cli(*args, "--retry-failed", env=env)
        assert "sending again the 1 prompt(s)" in ran.stderr, ran.stderr
        assert tasks_per_prompt(fake) == Counter({"a moth": 1})
        assert by_prompt(out)["a moth"]["earlier_tasks"] == ["task-0"]
        assert by_prompt(out)["a gnat"]["file"] == "g.mp4"
        await run_cli(*args, env=env)
        await run_cli(*args, "--retry-failed", env=env)
        assert tasks_per_prompt(fake) == Counter({"a moth": 1})
