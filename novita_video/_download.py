"""Fetching a finished clip to disk, before or after its URL expires.

A clip's URL is a presigned storage link that expires an hour after the task-result
answer that carried it. :func:`download` streams it to a temporary file beside the
destination, checks the length, and renames it into place, so a file at the
destination is always whole. An expired URL (storage answers 403), or one about to
expire, is renewed by asking the API for the task's result again.

Storage has passing troubles of its own: a 429 or 5xx (:func:`after_refusal` says
which answers are worth another try), a dropped connection. Those are retried by the
client's :class:`RetryPolicy` (its attempts, its backoff, storage's ``Retry-After``),
through the same :meth:`Retrier.plan` as every API request, so they are counted in
``statistics()``. A failure of this machine (a folder that cannot be made, a full disk,
no permission, a directory in the way) is a :class:`LocalFileError` at once: no retry
mends it, and no temporary file stays behind.
"""

from __future__ import annotations

import contextlib
import enum
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ._clock import Clock
from ._errors import (
    APIConnectionError,
    DownloadError,
    InvalidRequestError,
    LocalFileError,
    NovitaError,
    status_error_class,
)
from ._models import TaskResult
from ._observe import Observed
from ._retrier import Retrier
from ._retry import Decision, parse_retry_after

#: A URL closer than this to its expiry is renewed before use.
RENEW_MARGIN = 30.0


class Next(enum.Enum):
    """What a download does after storage refused an attempt (see :func:`after_refusal`)."""

    RETRY = "retry"
    """The same link again, when the retry policy allows, after its delay."""
    RENEW = "renew"
    """A fresh link from the API, at once."""
    RAISE = "raise"
    """Give up: the same request would meet the same answer."""


def after_refusal(status: int, *, renewed: bool) -> Next:
    """What to do after storage answered ``status`` (a pure rule, table-tested).

    403 is a link that expired or was refused: renewed once, not twice (a fresh link
    refused too will not be let in by a third). 429 and 5xx are storage's passing
    trouble. Anything else (a 404, a 2xx over the clip cap) would come again.
    """
    if status == 403:
        return Next.RAISE if renewed else Next.RENEW
    if status == 429 or 500 <= status <= 599:
        return Next.RETRY
    return Next.RAISE


def _as_api_error(error: DownloadError) -> NovitaError:
    """The API's error for the same answer (a :class:`ServerError` or
    :class:`RateLimitError`), which the retry rules know how to weigh and count."""
    cls = status_error_class(error.status_code, "")
    return cls(str(error), error.status_code, "", None, error.retry_after)


def _usable(result: TaskResult, clock: Clock) -> bool:
    if not result.videos:
        return False
    expires = result.videos[0].expires_at
    return expires > datetime.fromtimestamp(clock.wall() + RENEW_MARGIN, UTC)


def _require_video(result: TaskResult) -> TaskResult:
    if not result.ok:
        raise InvalidRequestError(
            f"task {result.task_id} has no video to download (status {result.status.name})",
            "result",
        )
    return result


async def download(
    result: TaskResult,
    destination: Path,
    *,
    transport: Observed,
    refresh: Callable[[str], Awaitable[TaskResult]],
    clock: Clock,
    retrier: Retrier,
) -> Path:
    """Write ``result``'s first video to ``destination`` (whole, or not at all)."""
    _require_video(result)
    with _local(destination, f"could not create the folder {destination.parent}"):
        destination.parent.mkdir(parents=True, exist_ok=True)
    renewed = False
    failures = 0  # passing troubles so far: the retry policy bounds them
    while True:
        if not _usable(result, clock):
            result, renewed = _require_video(await refresh(result.task_id)), True
        try:
            await _fetch(
                result.videos[0].url,
                destination,
                transport,
                clock,
                attempt=failures + 1,
                task_id=result.task_id,
            )
        except (DownloadError, APIConnectionError) as error:
            weighed: NovitaError = error
            if isinstance(error, DownloadError):
                step = after_refusal(error.status_code, renewed=renewed)
                if step is Next.RAISE:
                    raise
                if step is Next.RENEW:
                    # Storage refused the link (it expired early): once more with a fresh
                    # one. A refresh retries its own failures: not retried here again.
                    result, renewed = _require_video(await refresh(result.task_id)), True
                    continue
                weighed = _as_api_error(error)
            failures += 1
            retry = retrier.plan("GET", weighed, failures)
            if retry.decision is not Decision.RETRY:
                raise
        else:
            return destination
        await clock.sleep(retry.delay)


@contextlib.contextmanager
def replacing(destination: Path) -> Iterator[BinaryIO]:
    """A new file that takes ``destination``'s place whole when the block ends without
    error, and is removed when it does not: nobody ever sees half a file there.

    It is written as ``.<name>.<random>.part`` beside ``destination`` (what a killed
    process may leave behind), opened like any new file, so its mode follows the umask.
    """
    temporary = destination.with_name(f".{destination.name}.{secrets.token_hex(6)}.part")
    try:
        with temporary.open("xb") as file:
            yield file
        os.replace(temporary, destination)
    except BaseException:
        # A file that cannot be removed either must not hide why it was being removed.
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


@contextlib.contextmanager
def _local(destination: Path, what: str) -> Iterator[None]:
    """Turns a failure of this machine's files into :class:`LocalFileError`, chained."""
    try:
        yield
    except LocalFileError:
        raise
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise LocalFileError(f"download of {destination.name}: {what} ({reason})") from err


async def _fetch(
    url: str,
    destination: Path,
    transport: Observed,
    clock: Clock,
    *,
    attempt: int,
    task_id: str,
) -> None:
    # A transport reports the network's failures as the SDK's own errors, never as an
    # OSError: an OSError here is the file's (creating, writing, closing or renaming it).
    with (
        _local(destination, f"could not write the clip to {destination}"),
        replacing(destination) as file,
    ):
        response = await transport.download(url, file, attempt=attempt, task_id=task_id)
        if not 200 <= response.status < 300:
            status = response.status
            why = _WHY.get(status, "storage failed" if status >= 500 else "it failed")
            raise DownloadError(
                f"download of {destination.name}: storage answered HTTP {status} ({why})",
                status,
                parse_retry_after(response.headers.get("retry-after"), now_wall=clock.wall()),
            )


_WHY = {403: "the link expired or was refused", 429: "too many requests"}
