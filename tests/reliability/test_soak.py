"""10,000 tasks through one client with chaos on: memory and file descriptors stay flat.

The simulator runs in its own process (so its 10,000 task records are not in the memory
measured) on a :class:`ScaledClock` shared with the client: speed 200, tasks of 5-20
simulated seconds, every fault at 0.5 %.

How it is measured. The prompts come from a generator that pauses after the 2,000th
until the 2,000th outcome is in and measured: then nothing is in flight (no POST, no
poll, no outcome held), and the same holds at the 10,000th, the last. At both points,
after ``gc.collect()``:

* resident memory (``/proc/self/statm``) of this process; it is also sampled every 500
  outcomes in between, and the peak may exceed the 2,000th's by at most 10 %; RSS is
  what the machine pays, and CPython rarely gives memory back, so a leak of 1 KB a task
  would show as 8 MB;
* open file descriptors (``/proc/self/fd``): those that are not sockets must be the
  same; sockets, at rest, can only be idle keep-alive connections, at most the two pools'
  cap; and once the client is closed, the count is what it was before it opened;
* live objects of the SDK's own types (``gc.get_objects()``): no more at the end than at
  the 2,000th but for what idle poll workers and idle pooled connections still hold,
  which the concurrency bounds (a leak of one object a task would add 8,000).
"""

from __future__ import annotations

import gc
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import attrs
import pytest

from novita_video import Client, Outcome, ScaledClock, TaskTimeoutError
from tests.cli.cli_support import KEY
from tests.reliability.reliability_support import (
    CLIP,
    kind_of,
    simulator_process,
    unknown_submits_expected,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess, pytest.mark.load]

TASKS = 10_000
CHECKPOINT = 2_000
SPEED = 200.0
MAX_CONNECTIONS = 32
POLL_CONCURRENCY = 32
RETAINED_AT_REST = 4 * POLL_CONCURRENCY + 2 * MAX_CONNECTIONS
RATE = "0.005"
FAULTS = (
    "--chaos-submit-drops-before", RATE, "--chaos-submit-drops-after", RATE,
    "--chaos-server-errors", RATE, "--chaos-rate-limits", RATE, "--chaos-malformed", RATE,
    "--chaos-slow", RATE, "--chaos-slow-seconds", "200", "--chaos-result-drops", RATE,
    "--chaos-unknown-statuses", RATE, "--chaos-stuck-tasks", RATE, "--chaos-html-share", "0.5",
    "--chaos-expired-links", RATE, "--chaos-truncated-downloads", RATE,
)  # fmt: skip


@attrs.frozen
class Snapshot:
    rss_mb: float
    sockets: int
    other_fds: Counter[str]
    sdk_objects: Counter[str]


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> Counter[str]:
    kinds: Counter[str] = Counter()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the fd of the listing itself, closed by now
            continue
        kinds[target.split(":")[0] if ":[" in target else target] += 1
    return kinds


def snapshot() -> Snapshot:
    gc.collect()
    fds = open_fds()
    sockets = fds.pop("socket", 0)
    sdk = Counter(
        type(o).__qualname__
        for o in gc.get_objects()
        if str(type(o).__module__).startswith("novita_video.")
    )
    return Snapshot(rss_mb(), sockets, fds, sdk)


async def test_ten_thousand_tasks_leave_memory_and_fds_flat(tmp_path: Path) -> None:
    origin = time.time()
    clock = ScaledClock(SPEED, origin=origin)
    flags: tuple[str, ...] = ("--speed", str(SPEED), "--origin", repr(origin))
    flags += ("--task-duration", "5", "20", "--seed", "99", "--failure-rate", "0.01", *FAULTS)
    resume = anyio.Event()

    async def prompts() -> AsyncIterator[str]:
        for index in range(TASKS):
            if index == CHECKPOINT:
                await resume.wait()  # nothing more in flight until the checkpoint is taken
            yield f"soak {index}: waves on a breakwater"

    seen = bytearray(TASKS)
    counts: Counter[str] = Counter()
    timed_out: set[str] = set()
    samples: list[float] = []
    started = time.monotonic()
    async with simulator_process(*flags, key=KEY) as simulator:
        before = open_fds()
        async with Client(
            KEY,
            base_url=simulator.url,
            clock=clock,
            timeout=0.5,
            submit_rpm=None,
            concurrency=64,
            poll_rpm=None,
            poll_concurrency=POLL_CONCURRENCY,
            max_connections=MAX_CONNECTIONS,
            task_timeout=400.0,
        ) as client:
            async with client.generate(prompts()) as batch:
                done = 0
                async for outcome in batch:
                    done += 1
                    seen[outcome.index] += 1
                    counts[kind_of(outcome)] += 1
                    if isinstance(outcome.error, TaskTimeoutError):
                        timed_out.add(outcome.error.task_id)
                    if outcome.ok and counts["ok"] % 1000 == 1:
                        await check_download(client, outcome, tmp_path)
                    if done == CHECKPOINT:
                        at_checkpoint = snapshot()
                        checkpoint_seconds = time.monotonic() - started
                        resume.set()
                    elif done > CHECKPOINT and done % 500 == 0:
                        samples.append(rss_mb())
                    del outcome
            at_end = snapshot()
            unknown_submissions = client.statistics().unknown_submissions
        with anyio.fail_after(10):
            while open_fds() != before:  # closed transports are released a loop turn later
                await anyio.sleep(0.01)
        stats = await simulator.stats(tasks=False)
    elapsed = time.monotonic() - started

    # Every prompt accounted for, against the ground truth.
    assert seen == bytearray([1]) * TASKS
    assert set(counts) <= {"ok", "failed", "timed_out", "unknown"}, counts
    assert stats["duplicate_submissions"] == 0
    assert stats["duplicates_of_answered"] == 0
    assert counts["unknown"] == unknown_submits_expected(stats) == unknown_submissions
    assert timed_out == set(stats["stuck_tasks"]) - set(stats["unanswered_tasks"])
    assert stats["video_requests_with_authorization"] == 0

    # Flat.
    peak = max([*samples, at_end.rss_mb])
    assert peak <= 1.10 * at_checkpoint.rss_mb, (at_checkpoint, samples, at_end)
    assert at_end.other_fds == at_checkpoint.other_fds
    assert at_checkpoint.sockets <= 2 * MAX_CONNECTIONS
    assert at_end.sockets <= 2 * MAX_CONNECTIONS
    # At rest, each idle poll worker still holds the last task it checked (its watch,
    # listener, result, video) and an idle connection its last request's objects: bounded
    # by the concurrency, whatever the number of tasks. A leak of one object per task
    # would add 8,000 here.
    grown = at_end.sdk_objects - at_checkpoint.sdk_objects
    assert sum(grown.values()) <= RETAINED_AT_REST, grown
    print(
        f"\nsoak: {elapsed:.1f} s ({checkpoint_seconds:.1f} s to the checkpoint), {dict(counts)}; "
        f"RSS {at_checkpoint.rss_mb:.1f} MB at {CHECKPOINT}, peak {peak:.1f} MB after, "
        f"{at_end.rss_mb:.1f} MB at {TASKS}; fds {sum(at_checkpoint.other_fds.values())}+"
        f"{at_checkpoint.sockets} sockets -> {sum(at_end.other_fds.values())}+{at_end.sockets}; "
        f"SDK objects {at_checkpoint.sdk_objects.total()} -> {at_end.sdk_objects.total()}"
    )


async def check_download(client: Client, outcome: Outcome, folder: Path) -> None:
    path = await client.download(outcome, folder / f"{outcome.index}.mp4")
    assert path.read_bytes() == CLIP
    path.unlink()
