"""The data that crosses the SDK's layers: frozen attrs objects, never dicts.

A prompt becomes a :class:`VideoRequest` (validated when it is made, before anything
is sent), the server's answers become :class:`TaskResult` objects (built by the private
converter in ``_wire``), and a batch hands back one :class:`Outcome` per prompt.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

import attrs

if TYPE_CHECKING:
    from ._errors import NovitaError

__all__ = ["Outcome", "TaskResult", "TaskStatus", "Video", "VideoRequest"]

MAX_PROMPT_LENGTH = 2000
MAX_URL_LENGTH = 8192


def _reject(field: str, message: str) -> None:
    from ._errors import InvalidRequestError  # late: _errors imports this module for types

    raise InvalidRequestError(f"{field}: {message}", field)


def _check_prompt(_: object, __: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        _reject("prompt", f"must be a str of 1 to 2000 characters, not {type(value).__name__}")
    assert isinstance(value, str)
    if not value.strip():
        _reject("prompt", "must not be empty or only white space")
    if len(value) > MAX_PROMPT_LENGTH:
        _reject("prompt", f"must be at most 2000 characters, this one has {len(value)}")
    if "\x00" in value:
        _reject("prompt", "must not contain NUL characters")


def check_http_url(field: str, value: object) -> None:
    """Raise :class:`InvalidRequestError` unless ``value`` is an absolute http(s) URL."""
    if not isinstance(value, str):
        _reject(field, f"must be an absolute http(s) URL, not {type(value).__name__}")
    assert isinstance(value, str)
    if len(value) > MAX_URL_LENGTH:
        _reject(field, f"must be at most {MAX_URL_LENGTH} characters, this one has {len(value)}")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        _reject(field, "must not contain white space or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (a bad port raises ValueError here, not later)
    except ValueError as err:
        _reject(field, f"is not a valid URL ({err})")
        raise  # unreachable, for the type checker
    if parts.scheme not in ("http", "https"):
        shown = f"{parts.scheme!r}" if parts.scheme else "none"
        _reject(field, f"must be an absolute http(s) URL; its scheme is {shown}")
    if not parts.hostname:
        _reject(field, "must be an absolute http(s) URL with a host")


def _check_image_url(_: object, __: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        check_http_url("image_url", value)


def _check_bool(_: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        _reject(attribute.name, f"must be True or False, not {value!r}")


@attrs.frozen
class VideoRequest:
    """One Minimax Video-01 clip to make: text-to-video, or image-to-video with ``image_url``.

    Checked when made: ``prompt`` is a str of 1 to 2000 characters, ``image_url`` an
    absolute http(s) URL of the first frame. A bad value raises
    :class:`~novita_video.InvalidRequestError` naming the field and the rule.

    >>> VideoRequest("A panda walks through bamboo").endpoint
    'minimax-video-01'
    """

    #: The path segment of the submit endpoint, ``POST /v3/async/<endpoint>``.
    endpoint: ClassVar[str] = "minimax-video-01"

    prompt: str = attrs.field(validator=_check_prompt)
    image_url: str | None = attrs.field(default=None, validator=_check_image_url, kw_only=True)
    enable_prompt_expansion: bool = attrs.field(default=True, validator=_check_bool, kw_only=True)


class TaskStatus(enum.Enum):
    """Where a task stands. Anything the server says that is not known is ``UNKNOWN``."""

    QUEUED = "TASK_STATUS_QUEUED"
    PROCESSING = "TASK_STATUS_PROCESSING"
    SUCCEED = "TASK_STATUS_SUCCEED"
    FAILED = "TASK_STATUS_FAILED"
    UNKNOWN = "TASK_STATUS_UNKNOWN"

    @classmethod
    def parse(cls, value: object) -> TaskStatus:
        """The status for a wire value; never raises."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_final(self) -> bool:
        """SUCCEED and FAILED are final; nothing changes after them."""
        return self in (TaskStatus.SUCCEED, TaskStatus.FAILED)


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
    (``None`` when it gave none), ``progress`` 0 to 100.
    """

    task_id: str
    status: TaskStatus
    raw_status: str = ""
    reason: str = ""
    eta: float | None = None
    progress: int = 0
    videos: tuple[Video, ...] = ()

    @property
    def is_final(self) -> bool:
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
        """Return ``self``, or raise :class:`~novita_video.TaskFailedError` if the task failed.

        >>> result = await client.wait(task_id)               # doctest: +SKIP
        >>> url = result.raise_for_status().video_url          # doctest: +SKIP
        """
        if self.status is TaskStatus.FAILED:
            from ._errors import TaskFailedError

            why = self.reason or "no reason given"
            raise TaskFailedError(f"task {self.task_id} failed: {why}", self)
        return self


@attrs.frozen
class Outcome:
    """What became of one prompt of a batch; :meth:`Client.generate` yields exactly one each.

    ``index`` is the prompt's position in the input, ``request`` the validated request
    (``None`` if the input item itself was invalid), ``task_id`` is ``None`` if it was
    never submitted, ``result`` the final :class:`TaskResult` when there is one, and
    ``error`` the :class:`~novita_video.NovitaError` that ended it, or ``None``.
    """

    index: int
    request: VideoRequest | None
    task_id: str | None = None
    result: TaskResult | None = None
    error: NovitaError | None = None

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
