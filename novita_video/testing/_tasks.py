"""A simulated task: drawn once at submit, its state computed from the clock.

Nothing runs per task. At submit the simulator draws the task's whole future
(how long it takes, whether it fails, how wrong its eta is) into one frozen
:class:`TaskRecord`; every poll then computes the state at ``now`` with
:meth:`TaskRecord.state_at`. That is why 10,000 tasks cost 10,000 small records
and no timers, and why a :class:`~novita_video.ScaledClock` speeds them all up.

A task's life, with ``D`` its duration::

    submitted_at            processing_at                         finishes_at
    |-- QUEUED, progress 0 --|-- PROCESSING, progress 0..99 --------|-- SUCCEED (100) or FAILED
         queue_fraction * D
"""

from __future__ import annotations

import json
import math
import random
import re
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = [
    "FAILED",
    "FAILURE_REASON",
    "FINAL_STATUSES",
    "PROCESSING",
    "QUEUED",
    "SUCCEED",
    "SubmitRequest",
    "TaskRecord",
    "TaskState",
    "draw_task",
]

QUEUED = "TASK_STATUS_QUEUED"
PROCESSING = "TASK_STATUS_PROCESSING"
SUCCEED = "TASK_STATUS_SUCCEED"
FAILED = "TASK_STATUS_FAILED"
FINAL_STATUSES = frozenset({SUCCEED, FAILED})

#: The ``reason`` a failed task carries; real Minimax failures are mostly moderation.
FAILURE_REASON = "content moderation failed"


def _frozen_body(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # A JSON round trip detaches the body from the caller's dict and lists.
    return MappingProxyType(json.loads(json.dumps(dict(value))))


def _identity(request: SubmitRequest) -> str:
    body = dict(request.body)
    return json.dumps([request.endpoint, body], sort_keys=True, separators=(",", ":"))


@attrs.frozen
class SubmitRequest:
    """What a submit asked for, after validation (and so what makes two submits duplicates).

    ``endpoint`` is the model's path segment (``"minimax-hailuo-02"``); ``body`` holds the
    fields that endpoint knows, validated, with their documented defaults filled in, so
    leaving ``enable_prompt_expansion`` out and sending ``true`` count as the same request.
    ``webhook_url`` (from ``extra.webhook.url``) says where the result goes, not what was
    asked for, so it is no part of the identity: two requests are equal when their
    endpoint and body are.

    >>> SubmitRequest("minimax-video-01", {"prompt": "a cat"}).prompt
    'a cat'
    """

    endpoint: str
    body: Mapping[str, Any] = attrs.field(converter=_frozen_body, eq=False)
    webhook_url: str | None = attrs.field(default=None, kw_only=True, eq=False)
    # The canonical JSON of (endpoint, body): a mapping cannot be hashed, a str can.
    identity: str = attrs.field(
        init=False, repr=False, default=attrs.Factory(_identity, takes_self=True)
    )

    @property
    def prompt(self) -> str:
        """The body's ``prompt`` (every simulated endpoint requires one)."""
        prompt = self.body.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    @property
    def image_url(self) -> str | None:
        """The body's ``image_url``, if it has one."""
        url = self.body.get("image_url")
        return url if isinstance(url, str) else None

    @property
    def enable_prompt_expansion(self) -> bool | None:
        """The body's ``enable_prompt_expansion`` (Minimax models; None for the others)."""
        value = self.body.get("enable_prompt_expansion")
        return value if isinstance(value, bool) else None

    @property
    def task_type(self) -> str:
        """The ``task_type`` of its task-result answers (``kling-v1.6-i2v``: ``KLING_V1_6_I2V``)."""
        return re.sub(r"[^A-Za-z0-9]+", "_", self.endpoint).upper()


@attrs.frozen
class TaskState:
    """What a task-result answer says about a task at one moment."""

    status: str
    progress_percent: int
    eta: int
    reason: str


@attrs.frozen(kw_only=True)
class TaskRecord:
    """One simulated task, its whole future fixed at submit.

    Times ``*_at`` are on the simulator clock's ``now()`` scale; ``submitted_wall``
    is its ``wall()`` at submit (Unix seconds), to compare across processes.
    ``final_status`` and ``reason`` are what the task ends with, known from the
    start even while the task still reports QUEUED or PROCESSING.
    """

    task_id: str
    request: SubmitRequest
    submitted_at: float
    processing_at: float
    finishes_at: float
    submitted_wall: float
    final_status: str
    reason: str
    eta_factor: float
    seed: int

    @property
    def endpoint(self) -> str:
        """The submit endpoint (the model) that made this task, e.g. ``"minimax-video-01"``."""
        return self.request.endpoint

    @property
    def duration(self) -> float:
        """Seconds from submit to the final status."""
        return self.finishes_at - self.submitted_at

    def state_at(
        self, now: float, *, report_progress: bool = True, give_eta: bool = True
    ) -> TaskState:
        """The task as a poll at ``now`` sees it.

        ``report_progress=False`` keeps ``progress_percent`` at 0 until the end;
        ``give_eta=False`` answers ``eta`` 0 throughout (a server without estimates).
        Once final, ``progress_percent`` is 100 and ``eta`` is 0.
        """
        if now >= self.finishes_at:
            return TaskState(self.final_status, 100, 0, self.reason)
        eta = 0
        if give_eta:
            # At least 1 while unfinished: an eta of 0 means "done" (or "no estimate").
            eta = max(1, math.ceil((self.finishes_at - now) * self.eta_factor))
        if now < self.processing_at:
            return TaskState(QUEUED, 0, eta, "")
        progress = 0
        if report_progress:
            # processing_at < finishes_at here, so the span is never zero.
            span = self.finishes_at - self.processing_at
            progress = min(99, int(99 * (now - self.processing_at) / span))
        return TaskState(PROCESSING, progress, eta, "")

    def wall_at(self, at: float) -> float:
        """Convert a time ``at`` on the ``now()`` scale of this task to Unix seconds."""
        return self.submitted_wall + (at - self.submitted_at)


def draw_task(
    rng: random.Random,
    request: SubmitRequest,
    *,
    now: float,
    wall: float,
    task_duration: tuple[float, float],
    queue_fraction: float,
    failure_rate: float,
    eta_error: float | None,
) -> TaskRecord:
    """Draw a new task's future from ``rng`` (seed it to replay a run)."""
    task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    duration = rng.uniform(*task_duration)
    fails = rng.random() < failure_rate
    eta_factor = rng.uniform(1.0 - eta_error, 1.0 + eta_error) if eta_error else 1.0
    return TaskRecord(
        task_id=task_id,
        request=request,
        submitted_at=now,
        processing_at=now + queue_fraction * duration,
        finishes_at=now + duration,
        submitted_wall=wall,
        final_status=FAILED if fails else SUCCEED,
        reason=FAILURE_REASON if fails else "",
        eta_factor=eta_factor,
        seed=rng.getrandbits(31),
    )
