"""What comes back: frozen attrs objects, never dicts.

The server's answers become :class:`TaskResult` objects (built by the private converter
in ``_wire``) with a :class:`TaskStatus` and their :class:`Video` links, and a batch hands
back one :class:`Outcome` per prompt. What goes out is in ``_requests``.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

from ._errors import NovitaError
from ._requests import Request

__all__ = [
    "Outcome",
    "Submission",
    "TaskFailedError",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "Video",
]


class TaskStatus(enum.Enum):
    """Where a task stands. Anything the server says that is not known is ``UNKNOWN``
    (``TaskResult.raw_status`` keeps its word)."""

    QUEUED = "TASK_STATUS_QUEUED"
    PROCESSING = "TASK_STATUS_PROCESSING"
    SUCCEED = "TASK_STATUS_SUCCEED"
    FAILED = "TASK_STATUS_FAILED"
    #: Not in Novita's reference, but reported by a third party: final, and no clip.
    CANCELLED = "TASK_STATUS_CANCELLED"
    UNKNOWN = "TASK_STATUS_UNKNOWN"

    @classmethod
    def parse(cls, value: object) -> TaskStatus:
        """The status for a wire value; never raises.

        Case and the ``TASK_STATUS_`` prefix do not matter, and both spellings of
        cancelled are known: ``"succeed"`` and ``"TASK_STATUS_CANCELED"`` are read.

        >>> TaskStatus.parse("task_status_succeed").name, TaskStatus.parse("Canceled").name
        ('SUCCEED', 'CANCELLED')
        """
        exact = _STATUS_VALUES.get(value) if type(value) is str else None
        if exact is not None:
            return exact  # the server's own spelling: every answer, nearly
        if not isinstance(value, str):
            return cls.UNKNOWN
        word = value.strip().upper()
        word = word.removeprefix("TASK_STATUS_")
        return _STATUS_WORDS.get(word, cls.UNKNOWN)

    @property
    def is_final(self) -> bool:
        """SUCCEED, FAILED and CANCELLED are final; nothing changes after them."""
        return self in (TaskStatus.SUCCEED, TaskStatus.FAILED, TaskStatus.CANCELLED)


_STATUS_WORDS = {status.value.removeprefix("TASK_STATUS_"): status for status in TaskStatus}
_STATUS_WORDS["CANCELED"] = TaskStatus.CANCELLED
_STATUS_VALUES = {status.value: status for status in TaskStatus}


@attrs.frozen
class Video:
    """A finished clip: a presigned storage URL that expires (``expires_at``, UTC).

    The URL is not a Novita API URL: it is fetched without the API key.
    """

    url: str
    type: str
    ttl: int
    expires_at: datetime

    def __repr__(self) -> str:
        # The query string is a signature: long, and a credential for an hour.
        return f"Video(url={self.url.split('?', 1)[0]!r}, type={self.type!r}, ttl={self.ttl})"


@attrs.frozen
class TaskResult:
    """One answer of ``GET /v3/async/task-result``.

    ``status`` is a :class:`TaskStatus` (``raw_status`` keeps the server's word),
    ``reason`` why a task failed, ``eta`` the server's estimate of the seconds left
    (``None`` when it gave none), ``progress`` 0 to 100 (fractions as the server sent
    them), ``task_type`` the kind of task (``"MINIMAX_VIDEO_01"``; empty when the server
    left it out).
    """

    task_id: str
    status: TaskStatus
    raw_status: str = ""
    reason: str = ""
    eta: float | None = None
    progress: float = 0
    videos: tuple[Video, ...] = ()
    task_type: str = ""

    @property
    def is_final(self) -> bool:
        """Whether the task has ended (succeeded or failed)."""
        return self.status.is_final

    @property
    def ok(self) -> bool:
        """Whether the task succeeded with a video."""
        return self.status is TaskStatus.SUCCEED and bool(self.videos)

    @property
    def video_url(self) -> str | None:
        """The first video's URL, if there is one."""
        return self.videos[0].url if self.videos else None

    def raise_for_status(self) -> TaskResult:
        """Return ``self``, or raise :class:`~novita_video.TaskFailedError` if the task ended
        without a clip (failed, cancelled, or succeeded without a video).

        >>> result = await client.wait(task_id)               # doctest: +SKIP
        >>> url = result.raise_for_status().video_url          # doctest: +SKIP
        """
        error = self.failure_error()
        if error is not None:
            raise error
        return self

    def failure_error(self) -> TaskFailedError | None:
        """The :class:`TaskFailedError` saying why this final task made no clip, or
        ``None`` (it made one, or has not ended)."""
        failure = self.failure()
        return TaskFailedError(f"task {self.task_id} {failure}", self) if failure else None

    def failure(self) -> str:
        """Why this final task made no clip, in a few words (empty if it made one).

        >>> TaskResult("t1", TaskStatus.FAILED, reason="ILLEGAL_PROMPT").failure()
        'failed: ILLEGAL_PROMPT'
        """
        if self.ok or not self.is_final:
            return ""
        if self.status is TaskStatus.SUCCEED:
            return "succeeded without a video"
        verb = "was cancelled" if self.status is TaskStatus.CANCELLED else "failed"
        return f"{verb}: {self.reason or 'no reason given'}"


class TaskFailedError(NovitaError):
    """A task ended without a clip (``TASK_STATUS_FAILED``, cancelled, or a success
    without a video); ``result`` is its final :class:`TaskResult`, ``reason`` the
    server's word for why."""

    def __init__(self, message: str, result: TaskResult) -> None:
        super().__init__(message, result)

    @property
    def result(self) -> TaskResult:
        """The final :class:`TaskResult` of the failed task."""
        return self.args[1]  # type: ignore[no-any-return]

    @property
    def reason(self) -> str:
        """Why the task failed, as the server said."""
        return self.result.reason


class TaskTimeoutError(NovitaError, TimeoutError):
    """A task was not final by its deadline. It may still finish on Novita's side:
    ``task_id`` lets you check later; ``last_result`` is the last answer seen, if any."""

    # TimeoutError is an OSError, whose constructor keeps at most two args, so the
    # fields live on the instance and __reduce__ carries them through pickling.
    def __init__(self, message: str, task_id: str, last_result: TaskResult | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.last_result = last_result

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.task_id, self.last_result))


class Submission(enum.Enum):
    """What a prompt's submit came to: decided once, where the request leaves the machine,
    and carried unchanged (never guessed later from a cancellation or a stopped batch).

    Novita has no idempotency key, so the four cases differ in what is safe next:
    ``ACCEPTED`` and ``IN_DOUBT`` may have cost money and must not be sent again on their
    own; ``NOT_SENT`` and ``REFUSED`` created nothing and may be sent again (a refusal
    such as ``BILLING_BALANCE_NOT_ENOUGH`` after a top-up).
    """

    #: The server created the task and its id came back.
    ACCEPTED = "accepted"
    #: The request provably never left this machine: nothing was created.
    NOT_SENT = "not_sent"
    #: The server answered with an error that created nothing (400, 403, 404, 429, 503).
    REFUSED = "refused"
    #: The request left and no usable answer came back (a 500, a dropped connection, an
    #: unreadable 2xx): a task may exist and may be billed.
    IN_DOUBT = "in_doubt"

    @property
    def may_exist(self) -> bool:
        """Whether a task (and a charge) may exist for this submit."""
        return self in (Submission.ACCEPTED, Submission.IN_DOUBT)


def _submission_default(outcome: Outcome) -> Submission:
    return Submission.ACCEPTED if outcome.task_id is not None else Submission.NOT_SENT


@attrs.frozen
class Outcome:
    """What became of one prompt of a batch; :meth:`Client.generate` yields exactly one each.

    ``index`` is the prompt's position in the input, counted from 0 (the first prompt
    is 0; the command's rows and manifest count from 1), ``request`` the validated
    request (``None`` if the input item itself was invalid), ``task_id`` is ``None`` if
    no task id came back, ``result`` the final :class:`TaskResult` when there is one,
    ``error`` the :class:`~novita_video.NovitaError` that ended it, or ``None``, and
    ``submission`` what its submit came to (:class:`Submission`): ``IN_DOUBT`` means a
    task may exist (and be billed) although no id came back, so do not send it again
    without checking.
    """

    index: int
    request: Request | None
    task_id: str | None = None
    result: TaskResult | None = None
    error: NovitaError | None = None
    submission: Submission = attrs.field(
        default=attrs.Factory(_submission_default, takes_self=True)
    )

    @property
    def ok(self) -> bool:
        """True when the clip was made: the task succeeded and no error stands."""
        return self.error is None and self.result is not None and self.result.ok

    @property
    def status(self) -> TaskStatus | None:
        """The task's last known status, ``None`` if it was never submitted."""
        return self.result.status if self.result is not None else None

    @property
    def video_url(self) -> str | None:
        """The clip's URL when ``ok``; it expires (see ``result.videos[0].expires_at``)."""
        return self.result.video_url if self.ok and self.result is not None else None
