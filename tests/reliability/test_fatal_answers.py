"""Answers that doom a batch (a revoked key, an empty balance): not one POST after them.

"After" is judged on the client's own timeline, which is one event loop, so one
sequence of events totally ordered by a counter:

* a POST *begins* when the batch's ``before_submit`` hook runs (right before the request
  is sent);
* an answer *arrives* when the SDK's one HTTP module logs it (``"POST <path> -> 403"``
  at DEBUG, written right after the body was read and before anything else can run).

The check: no POST begins after the first fatal answer arrived, whatever the endpoint
that answered it. POSTs that were already on the wire may still be refused; there can
be at most ``concurrency`` of them. The log is checked to have seen the answer to every
request the simulator counted, so the instrument cannot go blind silently.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from novita_video import (
    AuthenticationError,
    BatchAbortedError,
    InsufficientBalanceError,
    Outcome,
    PollSchedule,
)
from novita_video.testing import Chaos
from tests.cli.cli_support import KEY, cli_env, manifest, prompts_file, run_cli, simulator
from tests.support import simulated

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

ANSWER = re.compile(r"^(GET|POST) (\S+) -> (\d{3})\b")
SUBMIT_PATH = "/v3/async/minimax-video-01"


@attrs.frozen
class Event:
    seq: int
    kind: str  # "post" (one began) or "answer" (one arrived)
    method: str = "POST"
    status: int = 0


class Timeline(logging.Handler):
    """The client's timeline: POSTs beginning, answers arriving, in one total order."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[Event] = []
        self._seq = itertools.count()

    def before_submit(self, index: int, request: object) -> None:
        self.events.append(Event(next(self._seq), "post"))

    def emit(self, record: logging.LogRecord) -> None:
        found = ANSWER.match(record.getMessage())
        if found is not None:
            method, _, status = found.groups()
            self.events.append(Event(next(self._seq), "answer", method, int(status)))

    def answers(self, method: str) -> list[Event]:
        return [e for e in self.events if e.kind == "answer" and e.method == method]

    def posts_after_first(self, fatal: frozenset[int]) -> list[Event]:
        first = next(e.seq for e in self.events if e.kind == "answer" and e.status in fatal)
        return [e for e in self.events if e.kind == "post" and e.seq > first]


@contextmanager
def timeline() -> Iterator[Timeline]:
    logger = logging.getLogger("novita_video")
    handler, level = Timeline(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@attrs.frozen
class Doom:
    """One way a batch is doomed, and how the client is driven into it."""

    knobs: dict[str, Any]  # the simulator's
    accepted: int  # tasks the simulator accepts before the fatal answers begin
    submit_rpm: float | None
    first_check: float
    fatal: type[Exception]
    statuses: frozenset[int]


ACCEPTED = 8
PROMPTS = 40
CONCURRENCY = 8
DOOMS = [
    # Submits race ahead of the first poll (2 s after submit): a POST hears it first.
    pytest.param(
        Doom(
            {"chaos": Chaos(revoke_key_after=ACCEPTED), "task_duration": (30.0, 40.0)},
            ACCEPTED, None, 2.0, AuthenticationError, frozenset({401, 403}),
        ),
        id="key revoked, a submit hears it first",
    ),
    pytest.param(
        Doom(
            {"balance": ACCEPTED, "task_duration": (0.2, 0.4)},
            ACCEPTED, None, 0.25, InsufficientBalanceError, frozenset({400}),
        ),
        id="balance exhausted",
    ),
    # Submits 0.5 s apart, each task checked 0.1 s after its submit: the poll of an
    # accepted task hears the revocation first, while later prompts wait for their turn.
    pytest.param(
        Doom(
            {"chaos": Chaos(revoke_key_after=2), "task_duration": (2.0, 3.0)},
            2, 120.0, 0.1, AuthenticationError, frozenset({401, 403}),
        ),
        id="key revoked, a poll hears it first",
    ),
]  # fmt: skip


@pytest.mark.parametrize("doom", DOOMS)
async def test_no_post_begins_after_a_fatal_answer(doom: Doom) -> None:
    prompts = [f"prompt {i}: a lantern on a pier" for i in range(PROMPTS)]
    options = {
        "submit_rpm": doom.submit_rpm,
        "concurrency": CONCURRENCY,
        "poll_schedule": PollSchedule(progress_lead=doom.first_check),
    }
    with timeline() as events:
        async with simulated(client=options, **doom.knobs) as (fake, client):
            async with client.generate(prompts, before_submit=events.before_submit) as batch:
                outcomes: list[Outcome] = [outcome async for outcome in batch]
            stats = fake.stats

    # The instrument saw every answer the simulator gave.
    assert len(events.answers("POST")) == stats.requests["submit"]
    assert len(events.answers("GET")) == stats.requests["task_result"]
    assert events.posts_after_first(doom.statuses) == []

    # Every prompt accounted for: a task, a POST refused while on the wire, or never sent.
    assert sorted(o.index for o in outcomes) == list(range(PROMPTS))
    with_task = [o for o in outcomes if o.task_id is not None]
    refused = [o for o in outcomes if o.task_id is None and isinstance(o.error, doom.fatal)]
    aborted = [o for o in outcomes if isinstance(o.error, BatchAbortedError)]
    assert len(with_task) + len(refused) + len(aborted) == PROMPTS
    assert stats.task_count == doom.accepted
    assert {o.task_id for o in with_task} == set(stats.tasks)
    assert len(refused) == stats.requests["submit"] - doom.accepted <= CONCURRENCY
    if doom.submit_rpm is None:
        assert len(refused) >= 1  # a POST heard it
    else:
        assert refused == []  # a poll heard it, while every later prompt waited its turn
    assert all(o.error is not None and o.error.dooms_batch for o in refused)
    assert all(
        isinstance(o.error, BatchAbortedError) and isinstance(o.error.cause, doom.fatal)
        for o in aborted
    )
    if doom.fatal is InsufficientBalanceError:
        assert all(o.ok for o in with_task)  # the tasks paid for are made
    else:
        # A revoked key is refused everywhere: the tasks' polls too.
        assert all(isinstance(o.error, AuthenticationError) for o in with_task)


@pytest.mark.parametrize(
    ("knobs", "says"),
    [
        ({"chaos": Chaos(revoke_key_after=ACCEPTED)}, "Novita refused the API key"),
        ({"balance": ACCEPTED}, "Novita says the balance is too low"),
    ],
    ids=["key revoked", "balance exhausted"],
)
async def test_the_command_stops_at_a_fatal_answer_with_exit_3(
    tmp_path: Path, knobs: dict[str, Any], says: str
) -> None:
    # One POST at a time: then "no POST after the fatal answer" is a count, exactly
    # the accepted ones and the one refused.
    path = prompts_file(tmp_path / "p.txt", [f"a lantern on a pier, take {i}" for i in range(20)])
    out = tmp_path / "out"
    async with simulator(**knobs) as fake:
        ran = await run_cli(
            "batch", str(path), "--out", str(out), "--rpm", "6000", "--concurrency", "1",
            env=cli_env(fake.url),
        )  # fmt: skip
        stats = fake.stats
    assert ran.code == 3, ran.stderr
    assert "Traceback" not in ran.stderr
    assert says in ran.stderr
    assert KEY not in ran.stderr + ran.stdout
    assert stats.task_count == ACCEPTED
    assert stats.requests["submit"] == ACCEPTED + 1
    lines = manifest(out)
    assert [x["index"] for x in lines] == list(range(1, 21))
    statuses = [x["status"] for x in lines]
    made = "succeeded" if "balance" in knobs else "pending"  # a revoked key: polls refused
    assert statuses[: ACCEPTED + 1] == [made] * ACCEPTED + ["rejected"]
    assert {x["task_id"] for x in lines[:ACCEPTED]} == set(stats.tasks)
    reason = "INVALID_API_KEY" if "chaos" in knobs else "BILLING_BALANCE_NOT_ENOUGH"
    assert reason in lines[ACCEPTED]["error"]
    # The rest were never sent, and say so (see the test below for their status).
    assert all(x["task_id"] is None for x in lines[ACCEPTED + 1 :])
    assert all(x["error"].startswith("not submitted") for x in lines[ACCEPTED + 1 :])


async def test_a_prompt_never_sent_is_not_called_rejected(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", [f"a lantern on a pier, take {i}" for i in range(6)])
    out = tmp_path / "out"
    async with simulator(balance=2) as fake:
        ran = await run_cli(
            "batch", str(path), "--out", str(out), "--rpm", "6000", "--concurrency", "1",
            env=cli_env(fake.url),
        )  # fmt: skip
        assert fake.stats.requests["submit"] == 3
    assert ran.code == 3
    assert [x["status"] for x in manifest(out)] == ["succeeded"] * 2 + ["rejected"] + [
        "not_submitted"
    ] * 3
