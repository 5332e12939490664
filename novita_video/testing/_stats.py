"""What the simulator saw, for tests and benchmarks.

The server updates one mutable :class:`Counters` as requests arrive (cheap:
a few dict increments per request); :attr:`FakeNovita.stats` hands out a frozen
:class:`SimulatorStats` snapshot of it, which a test can compare before and after,
and which :meth:`SimulatorStats.to_dict` turns into JSON for
``GET /_simulator/stats`` when the simulator runs in another process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ._tasks import SubmitRequest, TaskRecord

__all__ = ["ENDPOINTS", "Counters", "SimulatorStats"]

#: The names requests are counted under.
ENDPOINTS: Final = ("submit", "task_result", "video", "other")


def _task_to_dict(task: TaskRecord) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "prompt": task.request.prompt,
        "image_url": task.request.image_url,
        "enable_prompt_expansion": task.request.enable_prompt_expansion,
        "submitted_at": task.submitted_at,
        "processing_at": task.processing_at,
        "finishes_at": task.finishes_at,
        "submitted_wall": task.submitted_wall,
        "finishes_wall": task.wall_at(task.finishes_at),
        "final_status": task.final_status,
        "reason": task.reason,
    }


@attrs.frozen(kw_only=True)
class SimulatorStats:
    """A snapshot of what a :class:`FakeNovita` has seen so far.

    Meant for tests ("the client polled each task at most 5 times", "it never
    sent the key to storage") and for benchmarks (requests per task, 429s).

    * ``requests``: requests received per endpoint (``"submit"``, ``"task_result"``,
      ``"video"``, ``"other"``), whatever their answer. ``/_simulator/stats`` is not counted.
    * ``rate_limited``: 429 answers per endpoint (every key always present).
    * ``errors``: error answers per ``reason`` (``"INVALID_API_KEY"``, ...; 429s included,
      as ``"RATE_LIMIT_EXCEEDED"``).
    * ``polls``: task-result answers (200) per task id; a task never polled is absent.
    * ``duplicate_submissions``: accepted submits whose (prompt, image_url,
      enable_prompt_expansion) equals an earlier accepted one: each is a task billed twice.
    * ``video_requests_with_authorization``: video downloads that carried an
      ``Authorization`` header (a client that leaks its API key to storage).
    * ``tasks``: every accepted task by id, with its submit time and its (future) end.
    """

    requests: Mapping[str, int]
    rate_limited: Mapping[str, int]
    errors: Mapping[str, int]
    polls: Mapping[str, int]
    duplicate_submissions: int
    video_requests_with_authorization: int
    tasks: Mapping[str, TaskRecord]

    @property
    def task_count(self) -> int:
        """How many tasks were accepted (and so billed)."""
        return len(self.tasks)

    def to_dict(self, *, include_tasks: bool = True) -> dict[str, Any]:
        """A JSON-serialisable copy; ``include_tasks=False`` leaves out the per-task list."""
        body: dict[str, Any] = {
            "requests": dict(self.requests),
            "rate_limited": dict(self.rate_limited),
            "errors": dict(self.errors),
            "polls": dict(self.polls),
            "duplicate_submissions": self.duplicate_submissions,
            "video_requests_with_authorization": self.video_requests_with_authorization,
            "task_count": self.task_count,
        }
        if include_tasks:
            body["tasks"] = {task_id: _task_to_dict(t) for task_id, t in self.tasks.items()}
        return body


class Counters:
    """The live, mutable tallies behind :class:`SimulatorStats` (the server's own)."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter(dict.fromkeys(ENDPOINTS, 0))
        self.rate_limited: Counter[str] = Counter(dict.fromkeys(ENDPOINTS, 0))
        self.errors: Counter[str] = Counter()
        self.polls: Counter[str] = Counter()
        self.duplicate_submissions = 0
        self.video_requests_with_authorization = 0
        self.tasks: dict[str, TaskRecord] = {}
        self._seen: set[SubmitRequest] = set()

    def add_task(self, task: TaskRecord) -> None:
        """Record an accepted task, noting whether the same request was accepted before."""
        if task.request in self._seen:
            self.duplicate_submissions += 1
        else:
            self._seen.add(task.request)
        self.tasks[task.task_id] = task

    def snapshot(self) -> SimulatorStats:
        """Copy the tallies (records are frozen, so a shallow copy suffices)."""
        return SimulatorStats(
            requests=dict(self.requests),
            rate_limited=dict(self.rate_limited),
            errors=dict(self.errors),
            polls=dict(self.polls),
            duplicate_submissions=self.duplicate_submissions,
            video_requests_with_authorization=self.video_requests_with_authorization,
            tasks=dict(self.tasks),
        )
