"""A :class:`~novita_video.testing.MemoryTransport` with a hand in its task-result answers.

A user's own transport, as ``Client(transport=...)`` accepts one: every task-result
request goes through ``meddle(task_id, answer)``, which may call ``answer()`` for the
simulator's own answer, hold it back, change the simulator's chaos around it, or raise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, BinaryIO, Literal

from novita_video import Response, Sending
from novita_video.testing import FakeNovita, MemoryTransport

Answer = Callable[[], Awaitable[Response]]
Meddle = Callable[[str, Answer], Awaitable[Response]]


async def as_is(task_id: str, answer: Answer) -> Response:
    return await answer()


class Meddling:
    """Answers from ``fake`` in memory, every task-result through ``meddle``."""

    def __init__(self, fake: FakeNovita, meddle: Meddle = as_is) -> None:
        self.inner = MemoryTransport(fake)
        self.meddle = meddle

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        sending: Sending | None = None,
    ) -> Response:
        def answer() -> Awaitable[Response]:
            return self.inner.request(method, path, params=params, json=json, sending=sending)

        if path.endswith("/task-result") and params is not None:
            return await self.meddle(params["task_id"], answer)
        return await answer()

    async def download(self, url: str, file: BinaryIO) -> Response:
        return await self.inner.download(url, file)
