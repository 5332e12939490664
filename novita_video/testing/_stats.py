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

from ._chaos import StuckPlan
from ._tasks import SubmitRequest, TaskRecord

__all__ = ["ENDPOINTS", "Counters", "SimulatorStats", "WebhookStats"]

#: The names requests are counted under.
#: (``"catalog"`` and ``"balance"`` too, once they are asked for.)
ENDPOINTS: Final = ("submit", "task_result", "video", "other")


@attrs.frozen(kw_only=True)
class WebhookStats:
    """What became of one task's webhook event (a task submitted with ``extra.webhook.url``).

    * ``url``: where it goes.
    * ``sent``: POSTs made, retries and duplicate copies included.
    * ``delivered``: copies the receiver took (a 2xx in time): 1 normally, 2 if duplicated.
    * ``failed``: copies given up on after the first try and 5 retries.
    * ``lost``: chaos dropped the event: it was never sent (``webhook_loss``).
    * ``duplicated``: chaos sent it twice (``webhook_duplicates``).
    * ``last_error``: why the latest failed POST failed (``"HTTP 500"``, ``"timeout"``, ...).

    A stuck task never ends, so its event stays pending: nothing sent, nothing lost.
    """

    url: str
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    lost: bool = False
    duplicated: bool = False
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return attrs.asdict(self)


def _task_to_dict(task: TaskRecord, webhook: WebhookStats | None) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "endpoint": task.endpoint,
        "task_type": task.request.task_type,
        "prompt": task.request.prompt,
        "image_url": task.request.image_url,
        "body": dict(task.request.body),
        "webhook": None if webhook is None else webhook.to_dict(),
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
      ``"video"``, ``"other"``; ``"catalog"`` and ``"balance"`` once asked for), whatever
      their answer; a submit to the unified endpoint counts as a ``"submit"``.
      ``/_simulator/stats`` is not counted.
    * ``rate_limited``: 429 answers per endpoint (every key always present).
    * ``errors``: error answers per ``reason`` (``"INVALID_API_KEY"``, ...; 429s included,
      as ``"RATE_LIMIT_EXCEEDED"``).
    * ``polls``: task-result answers (200) per task id; a task never polled is absent.
    * ``duplicate_submissions``: accepted submits whose endpoint and body (validated, defaults
      filled in, webhook aside) equal an earlier accepted one's: each is a task billed twice.
    * ``video_requests_with_authorization``: video downloads that carried an
      ``Authorization`` header (a client that leaks its API key to storage).
    * ``tasks``: every accepted task by id, with its endpoint (model), request, submit time
      and (future) end.
    * ``webhooks``: task id -> :class:`WebhookStats`, for each task submitted with a webhook;
      :attr:`webhook_totals` sums them.

    Ground truth about chaos (see :class:`Chaos`), for reliability tests:

    * ``chaos``: faults that fired, per kind then per endpoint, only those that fired
      (``{"drop_after": {"submit": 2}}``). Kinds: ``drop_before``, ``drop_after``,
      ``rate_limit_storm``, ``server_error_500`` .. ``server_error_504``, ``html_page``
      (those 5xx answered as HTML), ``malformed``, ``slow``, ``unknown_status``,
      ``stuck_task`` and ``key_revoked`` (under ``"submit"``), ``expired_link``
      (under ``"task_result"``), ``truncated_download`` (under ``"video"``).
      A fault that spoils a 200 fires only when the handler answered 200.
    * ``unanswered_tasks``: task id -> fault kind, for every created task whose submit got
      no usable answer (``drop_after``, ``malformed``, ``slow`` while the client was gone or
      still waiting, ``server_error_500``, ``server_error_502``): the client cannot know it
      was billed. Its other tasks were answered, so resubmitting their prompts is a bug.
    * ``duplicates_of_answered``: accepted submits whose request equals an earlier task's
      whose submit *was* answered: a resubmission no fault excuses.
    * ``stuck_tasks``: ids of tasks that will never finish.
    * ``key_revoked``: the key was revoked (``revoke_key()`` or ``revoke_key_after``).
    """

    requests: Mapping[str, int]
    rate_limited: Mapping[str, int]
    errors: Mapping[str, int]
    polls: Mapping[str, int]
    duplicate_submissions: int
    video_requests_with_authorization: int
    tasks: Mapping[str, TaskRecord]
    chaos: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    unanswered_tasks: Mapping[str, str] = attrs.field(factory=dict)
    duplicates_of_answered: int = 0
    stuck_tasks: frozenset[str] = frozenset()
    key_revoked: bool = False
    webhooks: Mapping[str, WebhookStats] = attrs.field(factory=dict)

    @property
    def task_count(self) -> int:
        """How many tasks were accepted (and so billed)."""
        return len(self.tasks)

    @property
    def webhook_totals(self) -> dict[str, int]:
        """Webhook counts over all tasks: ``events`` (tasks with a webhook), POSTs ``sent``,
        copies ``delivered`` and ``failed``, events ``lost`` and ``duplicated``."""
        hooks = self.webhooks.values()
        return {
            "events": len(self.webhooks),
            "sent": sum(hook.sent for hook in hooks),
            "delivered": sum(hook.delivered for hook in hooks),
            "failed": sum(hook.failed for hook in hooks),
            "lost": sum(hook.lost for hook in hooks),
            "duplicated": sum(hook.duplicated for hook in hooks),
        }

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
            "chaos": {kind: dict(per) for kind, per in self.chaos.items()},
            "unanswered_tasks": dict(self.unanswered_tasks),
            "duplicates_of_answered": self.duplicates_of_answered,
            "stuck_tasks": sorted(self.stuck_tasks),
            "key_revoked": self.key_revoked,
            "webhooks": self.webhook_totals,
        }
        if include_tasks:
            body["tasks"] = {
                task_id: _task_to_dict(t, self.webhooks.get(task_id))
                for task_id, t in self.tasks.items()
            }
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
        self.chaos: Counter[tuple[str, str]] = Counter()
        self.unanswered: dict[str, str] = {}
        self.stuck: dict[str, StuckPlan] = {}
        self.key_revoked = False
        #: Written by the webhook dispatcher; frozen records, replaced on each change.
        self.webhooks: dict[str, WebhookStats] = {}
        self._seen: set[SubmitRequest] = set()

    def add_task(self, task: TaskRecord) -> None:
        """Record an accepted task, noting whether the same request was accepted before."""
        if task.request in self._seen:
            self.duplicate_submissions += 1
        else:
            self._seen.add(task.request)
        self.tasks[task.task_id] = task

    def fired(self, kind: str, endpoint: str) -> None:
        """Count one chaos fault of ``kind`` on ``endpoint``."""
        self.chaos[kind, endpoint] += 1

    def _duplicates_of_answered(self) -> int:
        # Computed on demand, not per submit: a slow submit is answered (or not) only
        # after its task was added. Tasks are in submit order (dicts keep it).
        answered: set[SubmitRequest] = set()
        count = 0
        for task_id, task in self.tasks.items():
            if task.request in answered:
                count += 1
            if task_id not in self.unanswered:
                answered.add(task.request)
        return count

    def snapshot(self) -> SimulatorStats:
        """Copy the tallies (records are frozen, so a shallow copy suffices)."""
        chaos: dict[str, dict[str, int]] = {}
        for (kind, endpoint), count in sorted(self.chaos.items()):
            chaos.setdefault(kind, {})[endpoint] = count
        return SimulatorStats(
            requests=dict(self.requests),
            rate_limited=dict(self.rate_limited),
            errors=dict(self.errors),
            polls=dict(self.polls),
            duplicate_submissions=self.duplicate_submissions,
            video_requests_with_authorization=self.video_requests_with_authorization,
            tasks=dict(self.tasks),
            chaos=chaos,
            unanswered_tasks=dict(self.unanswered),
            duplicates_of_answered=self._duplicates_of_answered(),
            stuck_tasks=frozenset(self.stuck),
            key_revoked=self.key_revoked,
            webhooks=dict(self.webhooks),
        )
