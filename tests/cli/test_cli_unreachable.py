"""A mistyped base URL, through the real command as a subprocess (issue: an unreachable API).

A request that never connected created nothing and is said so: after a short run of
refused connections, or at once for a host that does not resolve, the batch stops with
one sentence naming the host and the cause, exit code 2; no prompt is called unknown or
rejected; and the same folder then works with the right URL.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from novita_video.testing import Chaos
from tests.cli.cli_support import cli_env, prompts_file, run_cli, simulator

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the probe goes


def statuses(out: Path) -> set[str]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {json.loads(line)["status"] for line in lines}


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        (f"http://127.0.0.1:{closed_port()}", "the connection was refused"),
        ("https://no-such-host.invalid", "the name no-such-host.invalid does not resolve"),
    ],
    ids=["refused", "no-dns"],
)
async def test_a_wrong_url_stops_the_batch_in_one_sentence_and_frees_the_folder(
    tmp_path: Path, url: str, cause: str
) -> None:
    prompts = prompts_file(tmp_path / "p.txt", [f"prompt {n}" for n in range(60)])
    out = tmp_path / "out"
    began = time.monotonic()
    wrong = await run_cli("batch", str(prompts), "--out", str(out), env=cli_env(url))
    took = time.monotonic() - began
    assert wrong.code == 2, wrong.stderr
    said = [line for line in wrong.stderr.splitlines() if "cannot reach" in line]
    assert len(said) == 1
    assert url in said[0]
    assert cause in said[0]
    assert "nothing was sent" in said[0]
    assert "unknown" not in wrong.stderr
    assert "rejected" not in wrong.stderr
    # Three submits at the default 20 a minute are 6 s; before, 60 prompts ground on.
    assert took < 45, took
    assert statuses(out) == {"not_submitted"}
    async with simulator() as fake:
        again = ("batch", str(prompts), "--out", str(out), "--rpm", "6000")
        right = await run_cli(*again, env=cli_env(fake.url))
        assert right.code == 0, right.stderr
        assert fake.stats.task_count == 60
    assert statuses(out) == {"succeeded"}


async def test_an_unknown_prompt_stays_unknown_when_its_resubmit_cannot_connect(
    tmp_path: Path,
) -> None:
    # A run whose submits may have made tasks leaves them unknown. Sending them again
    # (--resubmit-unknown) while the API cannot be reached makes nothing, so they must
    # stay unknown: a later run must not send them unasked, which could pay twice.
    prompts = prompts_file(tmp_path / "p.txt", ["a cat", "a dog"])
    out = tmp_path / "out"
    args = ("batch", str(prompts), "--out", str(out), "--rpm", "6000")
    async with simulator(chaos=Chaos(submit_drops_after=1.0)) as fake:
        url = fake.url
        first = await run_cli(*args, env=cli_env(url))
        assert fake.stats.task_count == 2
    assert first.code == 1, first.stderr
    assert statuses(out) == {"unknown"}
    # The simulator is gone: its port refuses, as an API that is down would.
    down = await run_cli(*args, "--resubmit-unknown", env=cli_env(url))
    assert down.code == 2, down.stderr
    assert "the connection was refused" in down.stderr
    assert statuses(out) == {"unknown"}
    # Another API is refused for this folder: tasks may exist where the first run sent.
    async with simulator() as other:
        elsewhere = await run_cli(*args, env=cli_env(other.url))
        assert other.stats.task_count == 0
    assert elsewhere.code == 2
    assert "holds a run against" in elsewhere.stderr
