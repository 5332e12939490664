"""1,000 prompts under every chaos knob at once, each prompt accounted for exactly.

Client and simulator share a :class:`ScaledClock` (speed 20): tasks of 20-60 simulated
seconds take 1-3 real ones. The client's read timeout (0.5 s, real) is shorter than a
slow answer (30 simulated seconds, 1.5 s real), so slow answers become timeouts; a task
timeout of 150 simulated seconds ends the stuck tasks. Every clip that was made is
downloaded with ``client.download`` while the batch runs.

What is asserted, against the simulator's ground truth:

* one outcome per prompt, each in one box: made, failed, timed out (stuck), submit
  unknown, refused (``ILLEGAL_PROMPT``) or invalid input; nothing else;
* no prompt has two tasks (``duplicate_submissions == 0``, ``duplicates_of_answered == 0``);
* unknown submits: every task in ``unanswered_tasks`` belongs to a prompt whose outcome
  is ``SubmissionUnknownError``; every such prompt has no task or an unanswered one;
  and their number is exactly what the simulator's fault counts say: the unanswered
  tasks, plus the connections dropped before handling, plus the 500s that created nothing;
* the timed-out tasks are exactly the stuck ones whose submit was answered, each with
  its task id; every created task is either reported with its id or unanswered;
* every clip made is on disk, byte for byte the simulator's clip, after expired links
  were renewed and cut downloads retried; storage never saw the key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from novita_video import (
    Client,
    InvalidRequestError,
    Outcome,
    ScaledClock,
    TaskTimeoutError,
)
from novita_video.testing import FakeNovita
from tests.reliability.reliability_support import (
    CLIP,
    Accounts,
    every_fault,
    unknown_submits_expected,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.load]

PROMPTS = 1000
SPEED = 20.0
#: Prompts the simulator refuses (ILLEGAL_PROMPT): a 400 that concerns one prompt.
ILLEGAL = frozenset(range(13, PROMPTS, 97))
#: Input items that are not prompts at all: caught before anything is sent.
INVALID: dict[int, Any] = {
    5: "",
    250: 42,
    500: {"prompt": "a cat", "colour": "red"},
    750: "   \n\t",
    999: None,
}
CHAOS = every_fault(0.02, html_share=0.5, rate_limit_burst=3, slow_seconds=30.0)
#: Every kind of fault the chaos above can fire (``SimulatorStats.chaos``); each must
#: have fired, or the run proves nothing about it.
FAULTS = frozenset(
    {
        "drop_before",
        "drop_after",
        "rate_limit_storm",
        "server_error_500",
        "server_error_502",
        "server_error_503",
        "server_error_504",
        "html_page",
        "malformed",
        "slow",
        "unknown_status",
        "stuck_task",
        "expired_link",
        "truncated_download",
    }
)


def items() -> Iterator[Any]:
    for index in range(PROMPTS):
        if index in INVALID:
            yield INVALID[index]
        elif index in ILLEGAL:
            yield f"clip {index}: a riot in the streets [illegal]"
        else:
            yield f"clip {index}: a paper boat drifting down a rainy street"


async def test_a_thousand_prompts_under_every_fault(tmp_path: Path) -> None:
    clock = ScaledClock(SPEED)
    clips = tmp_path / "clips"
    accounts = Accounts()
    started = time.monotonic()
    async with FakeNovita(
        clock=clock,
        seed=20240601,
        task_duration=(20.0, 60.0),
        eta_error=0.3,
        failure_rate=0.02,
        chaos=CHAOS,
    ) as fake:
        async with Client(
            fake.api_key,
            base_url=fake.url,
            clock=clock,
            timeout=0.5,
            submit_rpm=None,
            concurrency=16,
            task_timeout=150.0,
            poll_rpm=None,
            poll_concurrency=16,
        ) as client:
            downloads = anyio.CapacityLimiter(8)

            async def download(outcome: Outcome) -> None:
                async with downloads:
                    await client.download(outcome, clips / f"{outcome.index}.mp4")

            async with anyio.create_task_group() as fetching:
                async with client.generate(items()) as batch:
                    async for outcome in batch:
                        if accounts.add(outcome) == "ok":
                            fetching.start_soon(download, outcome)
            unknown_submissions = client.statistics().unknown_submissions
        stats = fake.stats.to_dict()
    elapsed = time.monotonic() - started

    # One outcome per prompt, each in a box that says what became of it.
    every = [o for box in accounts.boxes().values() for o in box]
    assert sorted(o.index for o in every) == list(range(PROMPTS))
    assert accounts.other == [], [(o.index, repr(o.error)) for o in accounts.other]
    assert {o.index for o in accounts.invalid} == set(INVALID)
    assert all(isinstance(o.error, InvalidRequestError) for o in accounts.invalid)
    # An illegal prompt is refused, unless its submit never got an answer at all.
    assert {o.index for o in accounts.refused} <= ILLEGAL
    unknown_illegal = {o.index for o in accounts.unknown} & ILLEGAL
    assert len(accounts.refused) + len(unknown_illegal) == len(ILLEGAL)

    # No prompt paid for twice.
    tasks: dict[str, dict[str, Any]] = stats["tasks"]
    unanswered: dict[str, str] = stats["unanswered_tasks"]
    assert stats["duplicate_submissions"] == 0
    assert stats["duplicates_of_answered"] == 0
    by_prompt: dict[str, str] = {}
    for task_id, task in tasks.items():
        assert task["prompt"] not in by_prompt, "a prompt was submitted twice"
        by_prompt[task["prompt"]] = task_id

    # Each reported task is the one made for that very prompt, and ended as reported.
    reported = accounts.ok + accounts.failed + accounts.timed_out
    for outcome in reported:
        assert outcome.request is not None
        assert outcome.task_id is not None
        assert by_prompt[outcome.request.prompt] == outcome.task_id
    assert all(tasks[str(o.task_id)]["final_status"] == "TASK_STATUS_SUCCEED" for o in accounts.ok)
    for outcome in accounts.failed:
        assert outcome.result is not None
        assert tasks[str(outcome.task_id)]["final_status"] == "TASK_STATUS_FAILED"
        assert outcome.result.reason == tasks[str(outcome.task_id)]["reason"]

    # Unknown submits, against the ground truth.
    unknown_prompts = {o.request.prompt for o in accounts.unknown if o.request is not None}
    assert len(unknown_prompts) == len(accounts.unknown)
    assert all(o.task_id is None for o in accounts.unknown)
    assert {tasks[t]["prompt"] for t in unanswered} <= unknown_prompts
    assert all(by_prompt.get(p) in (None, *unanswered) for p in unknown_prompts)
    assert len(accounts.unknown) == unknown_submits_expected(stats) == unknown_submissions

    # Stuck tasks end as timeouts carrying their id; every created task is accounted for.
    stuck = set(stats["stuck_tasks"])
    assert {o.task_id for o in accounts.timed_out} == stuck - set(unanswered)
    for outcome in accounts.timed_out:
        assert isinstance(outcome.error, TaskTimeoutError)
        assert outcome.error.task_id == outcome.task_id
        assert outcome.result is None or not outcome.result.is_final
    assert set(tasks) == {o.task_id for o in reported} | set(unanswered)

    # Every clip made is on disk, whole, after renewals and retries.
    assert sorted(p.name for p in clips.iterdir()) == sorted(f"{o.index}.mp4" for o in accounts.ok)
    assert all(path.read_bytes() == CLIP for path in clips.iterdir())
    fired: dict[str, dict[str, int]] = stats["chaos"]
    assert set(fired) >= FAULTS, FAULTS - set(fired)
    expired_refused = stats["errors"].get("AccessDenied", 0)
    assert expired_refused > 0
    assert expired_refused <= fired["expired_link"]["task_result"]
    cut = fired["truncated_download"]["video"]
    assert stats["requests"]["video"] == len(accounts.ok) + expired_refused + cut
    assert stats["video_requests_with_authorization"] == 0

    dropped = fired.get("drop_before", {}).get("submit", 0)
    five_hundreds = fired.get("server_error_500", {}).get("submit", 0)
    print(
        f"\n1k chaos: {elapsed:.1f} s, {accounts.sizes()}, {len(tasks)} tasks, "
        f"{len(unanswered)} unanswered, {dropped} submits dropped before, {five_hundreds} "
        f"submit 500s of which {list(unanswered.values()).count('server_error_500')} made "
        f"a task, {len(stuck)} stuck, faults "
        f"{ {kind: sum(per.values()) for kind, per in fired.items()} }"
    )
