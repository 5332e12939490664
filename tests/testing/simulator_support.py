"""Helpers shared by the simulator's tests (``tests.testing.simulator_support``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import attrs
from multidict import CIMultiDict

from novita_video.testing import FakeNovita
from tests.support import ManualClock  # the tests' one clock

__all__ = ["RESULT", "SUBMIT", "Answer", "ManualClock", "call", "serve"]

SUBMIT = "/v3/async/minimax-video-01"
RESULT = "/v3/async/task-result"


@attrs.frozen
class Answer:
    """One HTTP answer, read in full (so no response is left open)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def reason(self) -> str:
        body = self.json()
        # Every API error has exactly the documented shape.
        assert set(body) == {"code", "reason", "message", "metadata"}
        assert body["code"] == self.status
        assert body["metadata"] == {}
        assert isinstance(body["message"], str)
        assert body["message"]
        reason: str = body["reason"]
        return reason


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Answer:
    async with http.request(method, url, **kwargs) as response:
        return Answer(response.status, CIMultiDict(response.headers), await response.read())


@asynccontextmanager
async def serve(
    timeout: aiohttp.ClientTimeout | None = None, **knobs: Any
) -> AsyncIterator[tuple[FakeNovita, aiohttp.ClientSession]]:
    """A started simulator and a session that sends its key."""
    async with FakeNovita(**knobs) as fake:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        session = aiohttp.ClientSession(fake.url, headers=headers, timeout=timeout)
        async with session as http:
            yield fake, http
