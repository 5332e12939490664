"""Many workers, one account: what sharing the key's limits through Redis buys.

``python -m benchmarks.scaling`` (needs ``redis-server`` on PATH; about 6 minutes).

**Shared limits.** Four worker processes (``benchmarks.contender_novita_video``, one
``Client.generate`` each) share one account whose submit limit is R (the simulator, in
its own process, answers 429 past it). Each worker is told R, which is what users do
today; the baseline runs them alone, the contender with ``--redis-url``. Targets for the
shared run: at most 1 % of submits answered 429, and a wall time (from starting the four
processes to the last one's end) of at most 1.1 x (N / R + mean task time).

**Webhooks to random workers.** The FastAPI example (``examples.fastapi_app:app``)
under uvicorn, clips submitted with the app as their webhook, each waited for with ``GET
/clips/{id}`` on whichever worker uvicorn picks, as each webhook delivery is. The
baseline is one worker (every event reaches the waiting client); the contender four
workers sharing Redis. Targets: polls per task and the p95 of notice latency (answer time
minus the task's end) within 10 % of one worker's; latency's floor is the network's, so
a difference under 50 ms counts as within.

Medians of ``--repeats`` runs; every figure goes to ``benchmarks/results/scaling-*.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from benchmarks._harness import API_KEY, REPO_ROOT, SimulatorSpec, _env, simulator
from novita_video.testing import FakeNovita
from tests.shared.redis_support import RedisServer, redis_server
from tests.shared.workers_support import clips_through_workers, environment

WORKERS = 4
#: The account's submit limit: 2 a second (120 a minute), as the simulator counts it.
LIMIT = (2, 1.0)
RPM = LIMIT[0] / LIMIT[1] * 60


def shared_limits_run(redis: RedisServer | None, each: int, seed: int) -> dict[str, Any]:
    """One run of WORKERS processes, ``each`` prompts apiece, sharing Redis or not."""
    spec = SimulatorSpec(task_duration=(3.0, 6.0), seed=seed, submit_limit=LIMIT)
    with simulator(spec, origin=time.time()) as sim:
        command = [
            sys.executable,
            "-m",
            "benchmarks.contender_novita_video",
            "--url",
            sim.url,
            "--api-key",
            API_KEY,
            "--n",
            str(each),
            "--submit-rpm",
            str(RPM),
        ]
        if redis is not None:
            command += ["--redis-url", redis.url]
        started = time.monotonic()
        processes = [
            subprocess.Popen(
                [*command, "--prompt-prefix", f"worker {number}"],
                cwd=REPO_ROOT,
                env=_env(),
                stdout=subprocess.PIPE,
                text=True,
            )
            for number in range(WORKERS)
        ]
        reports = [json.loads(process.communicate(timeout=600)[0]) for process in processes]
        wall = time.monotonic() - started
        stats = sim.stats()
    tasks = list(stats["tasks"].values())
    submits = stats["requests"]["submit"]
    refused = stats["rate_limited"]["submit"]
    mean_task = statistics.mean(t["finishes_at"] - t["submitted_at"] for t in tasks)
    n = WORKERS * each
    return {
        "shared": redis is not None,
        "tasks": len(tasks),
        "handed": sum(len(report["handed"]) for report in reports),
        "failures": sum(report["failures"] for report in reports),
        "duplicates": stats["duplicate_submissions"],
        "submits": submits,
        "rate_limited": refused,
        "rate_limited_share": refused / submits,
        "wall_s": wall,
        "ideal_s": n / (RPM / 60) + mean_task,
        "wall_over_ideal": wall / (n / (RPM / 60) + mean_task),
        "workers_shared": [report.get("client_shared") for report in reports],
    }


async def webhook_run(redis: RedisServer | None, count: int) -> dict[str, Any]:
    async with FakeNovita(task_duration=(3.0, 6.0)) as fake:
        extra = {} if redis is None else {"NOVITA_REDIS_URL": redis.url}
        env = environment(fake.api_key, fake.url, **extra)

        def finished(task_id: str) -> float:
            task = fake.task(task_id)
            return task.wall_at(task.finishes_at)

        late = await clips_through_workers(
            env, workers=1 if redis is None else WORKERS, count=count, finished_at=finished
        )
        stats = fake.stats
    return {
        "workers": 1 if redis is None else WORKERS,
        "clips": len(late),
        "polls_per_task": statistics.mean(stats.polls.values()),
        "latency_p50_s": statistics.median(late),
        "latency_p95_s": statistics.quantiles(late, n=20)[18],
        "webhooks": stats.webhook_totals,
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="fewer tasks, one repeat")
    args = p.parse_args()
    repeats = 1 if args.quick else args.repeats
    each = 5 if args.quick else 15
    clips = 12 if args.quick else 40
    results: dict[str, Any] = {"limits": {"alone": [], "shared": []}, "webhooks": {}}
    with redis_server() as redis:
        for repeat in range(repeats):
            for label, server in (("alone", None), ("shared", redis)):
                run = shared_limits_run(server, each, seed=100 + repeat)
                results["limits"][label].append(run)
                print(
                    f"limits {label:6} #{repeat + 1}: {run['wall_s']:.1f} s "
                    f"({run['wall_over_ideal']:.2f} x ideal), 429s {run['rate_limited']} of "
                    f"{run['submits']} submits, {run['handed']}/{WORKERS * each} handed",
                    flush=True,
                )
        for label, server in (("one worker", None), ("four shared", redis)):
            runs = [anyio.run(webhook_run, server, clips) for _ in range(repeats)]
            results["webhooks"][label] = runs
            for run in runs:
                p50, p95 = run["latency_p50_s"] * 1000, run["latency_p95_s"] * 1000
                print(
                    f"webhooks {label}: {run['polls_per_task']:.2f} polls/task, "
                    f"latency p50 {p50:.0f} ms p95 {p95:.0f} ms",
                    flush=True,
                )

    shared, alone = results["limits"]["shared"], results["limits"]["alone"]
    one, four = results["webhooks"]["one worker"], results["webhooks"]["four shared"]
    p95_one, p95_four = median_of(one, "latency_p95_s"), median_of(four, "latency_p95_s")
    polls_one, polls_four = median_of(one, "polls_per_task"), median_of(four, "polls_per_task")
    complete = all(
        run["handed"] == run["tasks"] == WORKERS * each
        and run["failures"] == 0
        and run["duplicates"] == 0
        for run in shared + alone
    )
    targets = [
        ("every prompt made once, in every run", complete, ""),
        (
            "shared: 429s <= 1 % of submits",
            median_of(shared, "rate_limited_share") <= 0.01,
            f"{median_of(shared, 'rate_limited_share'):.2%} (alone: "
            f"{median_of(alone, 'rate_limited_share'):.2%})",
        ),
        (
            "shared: wall <= 1.1 x (N / R + mean task time)",
            median_of(shared, "wall_over_ideal") <= 1.1,
            f"{median_of(shared, 'wall_over_ideal'):.3f} x, {median_of(shared, 'wall_s'):.1f} s "
            f"(alone: {median_of(alone, 'wall_over_ideal'):.3f} x, "
            f"{median_of(alone, 'wall_s'):.1f} s)",
        ),
        (
            "webhooks: polls per task within 10 % of one worker's",
            polls_four <= polls_one * 1.1,
            f"{polls_four:.2f} vs {polls_one:.2f} ({polls_four / polls_one:.2f} x)",
        ),
        (
            "webhooks: notice p95 within 10 % (or 50 ms) of one worker's",
            p95_four <= max(p95_one * 1.1, p95_one + 0.05),
            f"{p95_four * 1000:.0f} ms vs {p95_one * 1000:.0f} ms ({p95_four / p95_one:.2f} x)",
        ),
    ]
    print()
    for name, met, detail in targets:
        print(f"{'PASS' if met else 'FAIL'}  {name}  {detail}")
    folder = REPO_ROOT / "benchmarks" / "results"
    folder.mkdir(exist_ok=True)
    out = folder / f"scaling-{time.strftime('%Y%m%dT%H%M%S')}.json"
    results["targets"] = [{"name": n, "met": m, "detail": d} for n, m, d in targets]
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nfigures: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0 if all(met for _, met, _ in targets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
