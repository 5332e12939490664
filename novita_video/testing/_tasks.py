"""A simulated task: drawn once at submit, its state computed from the clock.

Nothing runs per task. At submit the simulator draws the task's whole future
(how long it takes, whether it fails, how wrong its eta is) into one frozen
:class:`TaskRecord`; every poll then computes the state at ``now`` with
:meth:`TaskRecord.state_at`. That is why 10,000 tasks cost 10,000 small records
and no timers, and why a :class:`~novita_video.ScaledClock` speeds them all up.

A task's life::

    submitted_at            processing_at                         finishes_at
    |-- QUEUED, progress 0 --|-- PROCESSING, progress 0..99 --------|-- SUCCEED (100) or FAILED
      queue_time, or            the rest of task_duration, or all
      queue_fraction of it      of it after a queue_time

How a real server estimates (knobs of the simulator): its ``eta`` is rounded
to whole seconds (``ceil``, ``round`` or ``floor``); with ``eta_bias`` it believes a
task runs ``b`` times its real running time, so the eta runs out early (``b < 1``:
eta 0 while the task is still PROCESSING) or late (``b > 1``: the task ends while the
eta still counts down); progress may follow a curve other than a straight line.
"""

from __future__ import annotations

import json
import math
import random
import re
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from .._catalog import CATALOG

__all__ = [
    "ETA_ROUNDINGS",
    "FAILED",
    "FAILURE_REASON",
    "FINAL_STATUSES",
    "PROCESSING",
    "PROGRESS_CURVES",
    "QUEUED",
    "SUCCEED",
    "SubmitRequest",
    "TaskRecord",
    "TaskState",
    "draw_task",
]

#: How a server may round its eta to whole seconds; ``"none"`` sends fractions (tenths of
#: a second, and of a percent of progress: the reference types both as a number).
ETA_ROUNDINGS: Mapping[str, Callable[[float], float]] = MappingProxyType(
    {"ceil": math.ceil, "round": round, "floor": math.floor, "none": lambda x: round(x, 1)}
)


def _slow_start(share: float) -> float:
    return share * share


def _stall(share: float) -> float:
    # Reaches 95 % at 70 % of the running time, then creeps: the last 5 % take 30 %.
    return share / 0.7 * 0.95 if share < 0.7 else 0.95 + (share - 0.7) / 0.3 * 0.05


#: How progress may grow with the share of running time done (each maps [0, 1] onto itself).
PROGRESS_CURVES: Mapping[str, Callable[[float], float]] = MappingProxyType(
    {"linear": lambda share: share, "slow-start": _slow_start, "stall": _stall}
)

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
    ``webhook_url`` (from ``extra.webhook.url``, with ``webhook_test_status`` when its test
    mode is on) says where the result goes, not what was asked for, so it is no part of
    the identity: two requests are equal when their endpoint and body are. ``extra`` keeps
    the submit's ``extra`` (echoed in webhook events), ``task_type`` is what its results
    say, ``ignored`` names the fields the endpoint's page does not list.

    >>> SubmitRequest("minimax-video-01", {"prompt": "a cat"}).prompt
    'a cat'
    """

    endpoint: str
    body: Mapping[str, Any] = attrs.field(converter=_frozen_body, eq=False)
    webhook_url: str | None = attrs.field(default=None, kw_only=True, eq=False)
    webhook_test_status: str | None = attrs.field(default=None, kw_only=True, eq=False)
    extra: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_frozen_body, kw_only=True, eq=False
    )
    task_type: str = attrs.field(kw_only=True, eq=False)
    ignored: tuple[str, ...] = attrs.field(default=(), kw_only=True, eq=False)
    # The canonical JSON of (endpoint, body): a mapping cannot be hashed, a str can.
    identity: str = attrs.field(
        init=False, repr=False, default=attrs.Factory(_identity, takes_self=True)
    )

    @property
    def prompt(self) -> str:
        """The body's ``prompt`` (every simulated endpoint requires one)."""
        prompt = self.body.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    @task_type.default
    def _task_type(self) -> str:
        model = CATALOG.get(self.endpoint)
        if model is not None:
            return model.task_type_of(self.body)
        return re.sub(r"[^A-Za-z0-9]+", "_", self.endpoint).upper()

    @property
    def image_url(self) -> str | None:
        """The first frame the task starts from (``image_url``, or Hailuo-02's ``image``;
        a data URI as its first 40 characters), if it has one."""
        url = self.body.get("image_url", self.body.get("image"))
        if not isinstance(url, str):
            return None
        return url if not url.startswith("data:") else url[:40] + "..."

    @property
    def enable_prompt_expansion(self) -> bool | None:
        """The body's ``enable_prompt_expansion`` (Minimax models; None for the others)."""
        value = self.body.get("enable_prompt_expansion")
        return value if isinstance(value, bool) else None


@attrs.frozen
class TaskState:
    """What a task-result answer says about a task at one moment."""

    status: str
    progress_percent: float
    eta: float
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
    #: With an eta bias: when the server believes the task ends (else None).
    believed_end: float | None = None

    @property
    def endpoint(self) -> str:
        """The submit endpoint (the model) that made this task, e.g. ``"minimax-video-01"``."""
        return self.request.endpoint

    @property
    def duration(self) -> float:
        """Seconds from submit to the final status."""
        return self.finishes_at - self.submitted_at

    def state_at(
        self,
        now: float,
        *,
        report_progress: bool = True,
        give_eta: bool = True,
        eta_rounding: str = "ceil",
        progress_curve: str = "linear",
    ) -> TaskState:
        """The task as a poll at ``now`` sees it.

        ``report_progress=False`` keeps ``progress_percent`` at 0 until the end;
        ``give_eta=False`` answers ``eta`` 0 throughout (a server without estimates).
        ``eta_rounding`` names how the eta becomes whole seconds (:data:`ETA_ROUNDINGS`),
        ``progress_curve`` how progress grows (:data:`PROGRESS_CURVES`).
        Once final, ``progress_percent`` is 100 and ``eta`` is 0.
        """
        if now >= self.finishes_at:
            return TaskState(self.final_status, 100, 0, self.reason)
        eta: float = 0
        if give_eta:
            if self.believed_end is not None:
                left = self.believed_end - now  # runs out early or late
            else:
                left = (self.finishes_at - now) * self.eta_factor
            # An eta of 0 means "done, or no estimate": a rounding that may read 0 does
            # so only as the task is (or the server believes it is) about to end.
            eta = max(0, ETA_ROUNDINGS[eta_rounding](left)) if left > 0 else 0
        if now < self.processing_at:
            return TaskState(QUEUED, 0, eta, "")
        progress: float = 0
        if report_progress:
            # processing_at < finishes_at here, so the span is never zero.
            span = self.finishes_at - self.processing_at
            share = PROGRESS_CURVES[progress_curve]((now - self.processing_at) / span)
            exact = 99 * share
            progress = min(99, round(exact, 1) if eta_rounding == "none" else int(exact))
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
    queue_time: tuple[float, float] | None = None,
    eta_bias: tuple[float, float] | None = None,
) -> TaskRecord:
    """Draw a new task's future from ``rng`` (seed it to replay a run).

    With ``queue_time`` the task waits U(lo, hi) seconds, then runs for its
    ``task_duration``; without, ``queue_fraction`` of its duration is the queue. With
    ``eta_bias`` the server believes it runs ``b`` times its real running time, ``b``
    from U(lo, hi). Knobs left unset draw nothing, so seeded runs replay as before.
    """
    task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    duration = rng.uniform(*task_duration)
    fails = rng.random() < failure_rate
    eta_factor = rng.uniform(1.0 - eta_error, 1.0 + eta_error) if eta_error else 1.0
    if queue_time is None:
        processing_at = now + queue_fraction * duration
        finishes_at = now + duration
    else:
        processing_at = now + rng.uniform(*queue_time)
        finishes_at = processing_at + duration
    believed_end = None
    if eta_bias is not None:
        believed_end = processing_at + rng.uniform(*eta_bias) * (finishes_at - processing_at)
    return TaskRecord(
        task_id=task_id,
        request=request,
        submitted_at=now,
        processing_at=processing_at,
        finishes_at=finishes_at,
        submitted_wall=wall,
        final_status=FAILED if fails else SUCCEED,
        reason=FAILURE_REASON if fails else "",
        eta_factor=eta_factor,
        seed=rng.getrandbits(31),
        believed_end=believed_end,
    )
