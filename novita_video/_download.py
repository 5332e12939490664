"""Fetching a finished clip to disk, before or after its URL expires.

A clip's URL is a presigned storage link that expires an hour after the task-result
answer that carried it. :func:`download` streams it to a temporary file beside the
destination, checks the length, and renames it into place, so a file at the
destination is always whole. An expired URL (storage answers 403), or one about to
expire, is renewed by asking the API for the task's result again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ._clock import Clock
from ._errors import DownloadError, InvalidRequestError
from ._models import TaskResult
from ._retrier import Retrier
from ._transport import Transport

#: A URL closer than this to its expiry is renewed before use.
RENEW_MARGIN = 30.0


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
    transport: Transport,
    refresh: Callable[[str], Awaitable[TaskResult]],
    clock: Clock,
    retrier: Retrier,
) -> Path:
    """Write ``result``'s first video to ``destination`` (whole, or not at all)."""
    _require_video(result)
    destination.parent.mkdir(parents=True, exist_ok=True)
    renewed = False

    async def fetch() -> Path:
        await _fetch(result.videos[0].url, destination, transport)
        return destination

    while True:
        if not _usable(result, clock):
            result, renewed = _require_video(await refresh(result.task_id)), True
        try:
            # Storage's transient failures are retried here; a refresh retries its own.
            return await retrier.call("GET", fetch)
        except DownloadError as error:
            if error.status_code != 403 or renewed:
                raise
            # Storage refused the link (it expired early): once more with a fresh one.
            result, renewed = _require_video(await refresh(result.task_id)), True


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
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


async def _fetch(url: str, destination: Path, transport: Transport) -> None:
    with replacing(destination) as file:
        response = await transport.download(url, file)
        if not 200 <= response.status < 300:
            what = "the link expired or was refused" if response.status == 403 else "it failed"
            raise DownloadError(
                f"download of {destination.name}: storage answered HTTP {response.status} ({what})",
                response.status,
            )
