"""Real processes on one account: the command run three times at once, and the FastAPI
example under ``uvicorn --workers 4`` with the simulator's webhooks reaching any worker."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from novita_video.testing import FakeNovita, RateLimit
from tests.shared.redis_support import RedisServer
from tests.shared.workers_support import clips_through_workers, environment

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]


async def three_runs(fake: FakeNovita, redis: RedisServer, folder: Path) -> None:
    """The command three times at once on one account, each told the account's limit."""
    env = environment(fake.api_key, fake.url, NOVITA_REDIS_URL=redis.url)

    async def run(number: int) -> None:
        prompts = folder / f"prompts-{number}.txt"
        prompts.write_text("".join(f"run {number} clip {n}\n" for n in range(6)))
        command = [
            sys.executable,
            "-c",
            "from novita_video.cli import main; main()",
            "batch",
            str(prompts),
            "--out",
            str(folder / f"out-{number}"),
            "--rpm",
            "120",
            "--no-download",
            "--quiet",
        ]
        done = await anyio.run_process(command, env=env, check=False)
        assert done.returncode == 0, done.stderr.decode()
        manifest = (folder / f"out-{number}" / "manifest.jsonl").read_text().splitlines()
        assert len(manifest) == 6  # every prompt accounted for

    async with anyio.create_task_group() as runs:
        for number in range(3):
            runs.start_soon(run, number)


async def test_three_command_runs_sharing_redis_stay_under_the_account_limit(
    redis: RedisServer, tmp_path: Path
) -> None:
    # The account allows 2 submits a second; each run is told so (--rpm 120), as users do.
    async with FakeNovita(task_duration=(0.3, 0.6), submit_limit=RateLimit(2, per=1.0)) as fake:
        started = anyio.current_time()
        await three_runs(fake, redis, tmp_path)
        took = anyio.current_time() - started
        stats = fake.stats
    assert stats.task_count == 18
    assert stats.duplicate_submissions == 0
    assert stats.rate_limited.get("submit", 0) <= 1  # three runs, one account's pace
    assert took > 17 / 2 * 0.95  # 18 submits at 2 a second, whoever sent them


async def test_three_command_runs_through_a_redis_that_dies_and_comes_back(
    redis: RedisServer, tmp_path: Path
) -> None:
    async with FakeNovita(task_duration=(0.3, 0.6), submit_limit=RateLimit(2, per=1.0)) as fake:
        async with anyio.create_task_group() as group:
            group.start_soon(three_runs, fake, redis, tmp_path)
            await anyio.sleep(3)
            redis.kill()
            await anyio.sleep(2)
            redis.start()
        stats = fake.stats
    # Every prompt made once. Alone, each run kept to a third of the rate, but three
    # unaligned schedules can still meet in the simulator's one-second window: a 429
    # there costs a retry, never a task (nothing was created).
    assert stats.task_count == 18
    assert stats.duplicate_submissions == 0
    assert stats.rate_limited.get("submit", 0) < stats.requests["submit"] / 2


def finished(fake: FakeNovita) -> Any:
    return lambda task_id: fake.task(task_id).wall_at(fake.task(task_id).finishes_at)


async def test_four_uvicorn_workers_sharing_redis_hear_of_every_end_at_once(
    redis: RedisServer,
) -> None:
    async with FakeNovita(task_duration=(3.0, 5.0)) as fake:
        env = environment(fake.api_key, fake.url, NOVITA_REDIS_URL=redis.url)
        late = await clips_through_workers(env, workers=4, count=40, finished_at=finished(fake))
        stats = fake.stats
    assert len(late) == 40
    # Novita's event reached one worker; the one holding the request heard of it through
    # Redis. Without that, it would have polled 30 s later (the control below).
    p95 = statistics.quantiles(late, n=20)[18]
    assert p95 < 1.5, sorted(late)
    assert max(late) < 5.0, sorted(late)
    # And it did not poll for it: a first look, then the check the event asked for.
    polls = list(stats.polls.values())
    assert statistics.mean(polls) <= 2.5, polls
    assert stats.duplicate_submissions == 0


async def test_four_uvicorn_workers_alone_hear_of_most_ends_only_by_polling() -> None:
    # The control: the same workers without Redis. An event that reaches a worker other
    # than the one waiting is lost on it; that wait ends on the fallback poll, 30 s late.
    async with FakeNovita(task_duration=(3.0, 5.0)) as fake:
        env = environment(fake.api_key, fake.url)
        late = await clips_through_workers(env, workers=4, count=8, finished_at=finished(fake))
    assert len(late) == 8
    assert sum(delay > 20 for delay in late) >= 2, sorted(late)
