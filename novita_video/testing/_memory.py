"""`MemoryTransport`: a client talks to a :class:`FakeNovita` without a socket.

The client's requests go straight to the simulator's own request pipeline (the same
routing, auth, rate limits, chaos and endpoints the HTTP server runs), built as aiohttp
requests in memory. Nothing is bound, so a test runs on any event loop time, including
a virtual one: a poller and a batch of minutes-long tasks play out in milliseconds,
deterministically, while the end-to-end tests over loopback stay as they are.

>>> fake = FakeNovita(task_duration=(120, 300))                     # doctest: +SKIP
>>> async with Client(transport=MemoryTransport(fake)) as client:   # doctest: +SKIP
...     result = await client.wait(await client.submit("a cat"))

Webhook events are not delivered (they need a server to POST to): start the simulator
for those.
"""

from __future__ import annotations

import asyncio
import json as json_module
from collections.abc import Mapping
from typing import Any, BinaryIO, Literal
from unittest import mock
from urllib.parse import urlencode, urlsplit

import anyio.lowlevel
from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request

# The public names, as any transport of a user's own would import them.
from novita_video import APIConnectionError, Response, Sending

from ._server import FakeNovita

__all__ = ["MemoryTransport"]

#: The base URL the simulator's links carry when it answers in memory.
MEMORY_URL = "http://novita.memory"


class MemoryTransport:
    """A :class:`~novita_video.Transport` that answers from ``fake`` in memory: pass it
    as ``Client(transport=...)``. ``api_key`` defaults to the simulator's own.

    Written on the public seam alone (:class:`~novita_video.Transport`,
    :class:`~novita_video.Response`, :class:`~novita_video.Sending`), as a transport of
    your own would be."""

    #: It calls ``sending.mark_sent()`` as a POST's headers leave (see ``Transport``).
    reports_sending = True

    def __init__(self, fake: FakeNovita, *, api_key: str | None = None) -> None:
        self._fake = fake
        self._auth = f"Bearer {fake.api_key if api_key is None else api_key}"
        #: Every request sent, as ``(method, path)``: what a test may count.
        self.sent: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"MemoryTransport({self._fake!r})"

    async def open(self) -> None:
        """Let the simulator answer in memory (its links point at :data:`MEMORY_URL`)."""
        self._fake._answer_in_memory(MEMORY_URL)

    async def close(self) -> None:
        """Nothing to release."""

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        sending: Sending | None = None,
    ) -> Response:
        """Answer one API request from the simulator's pipeline."""
        body = b"" if json is None else json_module.dumps(json).encode()
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        target = path + (f"?{urlencode(params)}" if params else "")
        if sending is not None:
            sending.mark_sent()
        return await self._answer(method, target, headers, body)

    async def download(self, url: str, file: BinaryIO) -> Response:
        """Write the clip at ``url`` (one of the simulator's links) into ``file``."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        response = await self._answer("GET", target, {}, b"")
        if 200 <= response.status < 300:
            file.write(response.body)
        return Response(response.status, b"", response.headers)

    async def _answer(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        self.sent.append((method, urlsplit(target).path))
        protocol = mock.Mock(_reading_paused=False)
        payload = streams.StreamReader(protocol, 1 << 16, loop=asyncio.get_running_loop())
        if body:
            payload.feed_data(body)
        payload.feed_eof()
        hangup = mock.Mock()  # the connection: a chaos drop calls its abort()
        request = make_mocked_request(
            method, target, headers=headers, payload=payload, transport=hangup
        )
        await anyio.lowlevel.checkpoint()
        answer = await self._fake._dispatch(request)
        what = f"{method} {urlsplit(target).path}"
        if hangup.abort.called:
            # The simulator hung up (a chaos drop): the request may have been acted on.
            raise APIConnectionError(f"{what}: the connection failed (dropped)", True)
        if not isinstance(answer, web.Response) or not isinstance(answer.body, bytes):
            raise APIConnectionError(f"{what}: the answer was cut short", True)
        return Response(
            answer.status,
            answer.body,
            {key.lower(): value for key, value in answer.headers.items()},
        )
