"""Helpers shared by the tests (``from tests.support import ...``): one clock, one scripted
server, one simulated client."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
from aiohttp import web

from novita_video import Client, Clock, PollSchedule
from novita_video.testing import FakeNovita, MemoryTransport


class ManualClock:
    """The tests' one clock: time moves only when a test says so (``advance``, or setting
    ``time``), and sleeps return at once, having moved it forward (like trio's autojump
    clock, for logic that only one task drives)."""

    #: Unix time at clock time 0.
    WALL_OFFSET = 1_700_000_000.0

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def wall(self) -> float:
        return self.WALL_OFFSET + self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()

    def advance(self, seconds: float) -> None:
        """Move time forward without a sleep (for a test that plays the server's side)."""
        self.time += seconds


# A scripted server: for the answers no faithful simulator gives on demand (yet).


class Scripted:
    """An HTTP server on 127.0.0.1 that answers each request with the next scripted step.

    A step is ``("json", status, body, headers)``, ``("raw", status, text, headers)``,
    ``("drop",)`` (read the request, then cut the connection without answering) or
    ``("sleep", seconds)`` (answer nothing for that long, then 200 ``{}``). When a
    path's script runs out, submits get a fresh task id and task-results a queued task.
    """

    def __init__(self) -> None:
        self.scripts: dict[str, deque[tuple[Any, ...]]] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        self.url = ""

    def script(self, path: str, *steps: tuple[Any, ...]) -> None:
        self.scripts.setdefault(path, deque()).extend(steps)

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.seen if (m, p) == (method, path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.read())
        self.seen.append((request.method, request.path, dict(request.headers)))
        steps = self.scripts.get(request.path)
        step = steps.popleft() if steps else ("default",)
        kind = step[0]
        if kind == "json":
            _, status, body, headers = (*step, {})[:4]
            return web.json_response(body, status=status, headers=headers)
        if kind == "raw":
            _, status, text, headers = (*step, {})[:4]
            return web.Response(status=status, text=text, headers=headers, content_type="text/html")
        if kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if kind == "sleep":
            await anyio.sleep(step[1])
            return web.json_response({})
        if request.method == "POST":
            return web.json_response({"task_id": f"task-{len(self.seen)}"})
        task_id = request.query.get("task_id", "")
        return web.json_response({"task": {"task_id": task_id, "status": "TASK_STATUS_QUEUED"}})


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def scripted_server() -> AsyncIterator[Scripted]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    async with serve_app(app) as url:
        scripted.url = url
        yield scripted


@asynccontextmanager
async def simulated(
    *, clock: Clock | None = None, client: dict[str, Any] | None = None, **knobs: Any
) -> AsyncIterator[tuple[FakeNovita, Client]]:
    """A simulator with these knobs, and an open client pointed at it, both on ``clock``.

    Unless ``client`` says otherwise, the client has no submit limit and looks at a task
    first after a quarter of a second, not two: test tasks are short.
    """
    async with FakeNovita(clock=clock, **knobs) as fake:
        options = {
            "submit_rpm": None,
            "clock": clock,
            "poll_schedule": PollSchedule(progress_lead=0.25),
            **(client or {}),
        }
        async with Client(fake.api_key, base_url=fake.url, **options) as opened:
            yield fake, opened


@asynccontextmanager
async def in_memory(
    *, client: dict[str, Any] | None = None, **knobs: Any
) -> AsyncIterator[tuple[FakeNovita, Client]]:
    """:func:`simulated`, without a socket: the client reaches the simulator through a
    :class:`MemoryTransport`, both on the event loop's time. In a test marked
    ``virtual_time`` (a :class:`~novita_video.testing.VirtualTimeLoop`), minutes of tasks
    play out in no real time, the same way every run, and a request takes no time.
    """
    fake = FakeNovita(**knobs)
    options = {
        "submit_rpm": None,
        "poll_schedule": PollSchedule(progress_lead=0.25),
        **(client or {}),
    }
    async with Client(transport=MemoryTransport(fake), **options) as opened:
        yield fake, opened


class Unreporting:
    """A user's own transport that never says when a POST leaves (no ``reports_sending``):
    it forwards to ``inner`` and, after each POST was answered, raises ``fail`` if given
    (a recording proxy with a bug, or whose upstream broke on the way back)."""

    def __init__(self, inner: Any, fail: BaseException | None = None) -> None:
        self._inner = inner
        self._fail = fail

    async def open(self) -> None:
        await self._inner.open()

    async def close(self) -> None:
        await self._inner.close()

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        sending: Any = None,
    ) -> Any:
        response = await self._inner.request(method, path, params=params, json=json)
        if method == "POST" and self._fail is not None:
            raise self._fail
        return response

    async def download(self, url: str, file: Any) -> Any:
        return await self._inner.download(url, file)
