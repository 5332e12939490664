"""Review of issue 20: the command (prompt identity, ledger migration, signals, a ledger
that cannot be written), run as a process against the simulator and hops on loopback."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from tests.cli.cli_support import (
    FAST,
    cli_env,
    eventually,
    ledger,
    manifest,
    prompts_file,
    run_cli,
    simulator,
)
from tests.cli.lifecycle_support import Scripted, error, running

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

_V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE prompts (
    key TEXT PRIMARY KEY, idx INTEGER NOT NULL, line INTEGER NOT NULL, user_id TEXT,
    prompt TEXT NOT NULL, image_url TEXT, enable_prompt_expansion INTEGER NOT NULL,
    state TEXT NOT NULL, task_id TEXT, file TEXT, error TEXT, updated_at REAL NOT NULL,
    model TEXT, request TEXT);
"""


def v1_folder(out: Path, api: str, rows: list[tuple[int, str, str, str | None]]) -> None:
    """``out`` as schema 1 code left it: ``rows`` of (idx, prompt, state, file), written in
    that order (a clip file for each file named)."""
    (out / ".novita").mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(out / ".novita" / "ledger.sqlite")) as db, db:
        db.executescript(_V1_SCHEMA)
        db.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", "1"), ("api", api)])
        for n, (idx, prompt, state, file) in enumerate(rows):
            fields = {"prompt": prompt, "image_url": None, "enable_prompt_expansion": True}
            task = None if state == "rejected" else f"task-{n}"
            db.execute(
                "INSERT INTO prompts VALUES (?, ?, ?, NULL, ?, NULL, 1, ?, ?, ?, ?, ?, ?, ?)",
                (
                    f"old-key-{n}",
                    idx,
                    idx,
                    prompt,
                    state,
                    task,
                    file,
                    "submit failed with HTTP 400 (BILLING_BALANCE_NOT_ENOUGH)"
                    if state == "rejected"
                    else None,
                    1_700_000_000.0 + n,
                    "minimax-video-01",
                    json.dumps(fields),
                ),
            )
            if file is not None:
                (out / file).write_bytes(f"clip {n}".encode())
    db.close()


async def test_migration_does_not_pay_again_for_a_prompt_refused_then_made(
    tmp_path: Path,
) -> None:
    # What the code before left, made for real with it (f0a860a): run 1 over
    # [a kite, a panda] ran out of balance at "a panda" (rejected); after a top-up a
    # line was inserted at the top and run 2 over [a heron, a kite, a panda] made
    # "a panda" at its new position 3 (and, that code's bug, "a kite" again).
    out = tmp_path / "out"
    path = prompts_file(tmp_path / "p.txt", ["a heron", "a kite", "a panda"])
    async with simulator() as fake:
        v1_folder(
            out,
            fake.url.rstrip("/"),
            [
                (1, "a kite", "succeeded", "0001-a-kite.mp4"),
                (1, "a heron", "succeeded", "0001-a-heron.mp4"),
                (2, "a panda", "rejected", None),
                (2, "a kite", "succeeded", "0002-a-kite.mp4"),
                (3, "a panda", "succeeded", "0003-a-panda.mp4"),
            ],
        )
        ran = await run_cli("batch", str(path), "--out", str(out), *FAST, env=cli_env(fake.url))
        paid = fake.stats.requests["submit"]
    assert paid == 0, f"'a panda' was made already, and paid for again: {ran.stderr}"
    assert ran.code == 0, ran.stderr
    panda = [line for line in manifest(out) if line["prompt"] == "a panda"]
    assert panda[0]["file"] == "0003-a-panda.mp4"


async def test_a_stop_while_a_refused_submit_waits_to_retry_is_not_in_doubt(
    tmp_path: Path,
) -> None:
    async def rate_limited(hop: Scripted, body: bytes, request: web.Request) -> web.Response:
        return error(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "30"})

    path = prompts_file(tmp_path / "p.txt", ["a kite"])
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), *FAST, "--concurrency", "1")
    async with simulator() as fake, Scripted(fake.url.rstrip("/"), [rate_limited]).serving() as hop:
        async with running(*args, env=cli_env(hop.url)) as cli:
            await eventually(lambda: len(hop.arrived) == 1)
            await anyio.sleep(0.5)  # the 429 is back: the submit waits 30 s to retry
            cli.send(signal.SIGTERM)
            code = await cli.wait(timeout=30)
        assert fake.stats.task_count == 0  # nothing was made
    assert code == 143, cli.stderr
    assert "in doubt" not in cli.stderr
    assert [row["state"] for row in ledger(out)] in ([], ["rejected"])
    assert [line["status"] for line in manifest(out)] != ["unknown"]
