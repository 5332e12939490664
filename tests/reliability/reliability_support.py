"""Helpers of the reliability suite: a simulator in its own process, a command run whose
peak memory is known, a stub HTTP server for answers no faithful simulator gives, and
the accounting of a batch's outcomes against the simulator's ground truth."""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import attrs
from aiohttp import web

from novita_video import (
    BadRequestError,
    InvalidRequestError,
    Outcome,
    SubmissionUnknownError,
    TaskFailedError,
    TaskStatus,
    TaskTimeoutError,
)
from novita_video.testing import Chaos
from tests.cli.cli_support import cli_env
from tests.support import serve_app

REPO = Path(__file__).resolve().parents[2]
CLIP = (REPO / "novita_video" / "testing" / "assets" / "clip.mp4").read_bytes()


def every_fault(rate: float, **changes: Any) -> Chaos:
    """Every rate knob of :class:`Chaos` at ``rate`` at once (``changes`` win)."""
    rates = {
        field.name: rate
        for field in attrs.fields(Chaos)
        if field.metadata.get("help") and field.default == 0.0
    }
    return Chaos(**{**rates, **changes})


# A simulator in a process of its own: it outlives a command killed with SIGKILL, and its
# memory is not the memory a soak test measures.


@attrs.frozen
class SimulatorProcess:
    """``python -m novita_video.testing`` serving on ``url``."""

    url: str
    key: str
    process: anyio.abc.Process

    async def stats(self, *, tasks: bool = True) -> dict[str, Any]:
        """``GET /_simulator/stats``: the ground truth so far."""
        query = "" if tasks else "?tasks=0"
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"{self.url}/_simulator/stats{query}") as answer,
        ):
            assert answer.status == 200
            body: dict[str, Any] = await answer.json()
            return body


@asynccontextmanager
async def simulator_process(*args: str, key: str) -> AsyncIterator[SimulatorProcess]:
    """Start the simulator with these flags on a free port; stop it (SIGTERM) after."""
    argv = [sys.executable, "-m", "novita_video.testing", "--port", "0", "--api-key", key, *args]
    process = await anyio.open_process(argv, env=cli_env(None, None), stderr=None)
    try:
        assert process.stdout is not None
        line = b""
        with anyio.fail_after(30):
            while not line.endswith(b"\n"):
                line += await process.stdout.receive(1)
        # "Simulated Novita API on http://127.0.0.1:54321 (key: ...)"
        url = line.decode().split(" on ", 1)[1].split(" ", 1)[0]
        yield SimulatorProcess(url, key, process)
    finally:
        if process.returncode is None:
            process.terminate()
        with anyio.fail_after(10):
            await process.wait()
        await process.aclose()


# The command, run to its end with its own peak memory measured.

# Runs the command's module in this very process and, at exit, writes the process's
# VmHWM (peak resident memory since exec) to the file named first. Not ru_maxrss: for a
# child forked from this (large) test process it counts the pages the fork copied.
_PEAK_REPORTER = """
import atexit, runpy, sys

def report(path=sys.argv[1]):
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(path, "w") as out:
        out.write(peak)

atexit.register(report)
sys.argv = ["novita-video", *sys.argv[2:]]
runpy.run_module("novita_video", run_name="__main__", alter_sys=True)
"""


@attrs.frozen
class Measured:
    """A finished run of the command and its peak resident memory."""

    code: int
    stdout: str
    stderr: str
    peak_rss_mb: float


async def run_measured(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> Measured:
    """Run ``novita-video ARGS`` to its end; this event loop keeps serving meanwhile."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "peak"
        argv = [sys.executable, "-c", _PEAK_REPORTER, str(report), *args]
        with anyio.fail_after(90):
            done = await anyio.run_process(argv, env=env, cwd=cwd, check=False)
        return Measured(
            done.returncode,
            done.stdout.decode(),
            done.stderr.decode(),
            int(report.read_text()) / 1024,  # kB
        )


# A stub server: each path answers as a test says, and every request is recorded.

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.define
class Seen:
    method: str
    path_qs: str
    headers: Mapping[str, str]


@attrs.define
class Stub:
    """An HTTP server on 127.0.0.1 whose paths answer with the handlers a test gives."""

    routes: dict[str, Handler] = attrs.Factory(dict)
    #: Answers every path without a route of its own (None: 404).
    fallback: Handler | None = None
    seen: list[Seen] = attrs.Factory(list)
    url: str = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers)))
        handler = self.routes.get(request.path, self.fallback)
        if handler is None:
            return web.json_response({"reason": "API_NOT_FOUND"}, status=404)
        return await handler(request)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Stub]:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        async with serve_app(app) as url:
            self.url = url
            yield self


def json_answer(body: Any, status: int = 200) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return answer


def succeeded(task_id: str, video_url: str) -> dict[str, Any]:
    """A task-result body of a finished task with one video."""
    return {
        "task": {"task_id": task_id, "status": "TASK_STATUS_SUCCEED", "progress_percent": 100},
        "videos": [{"video_url": video_url, "video_url_ttl": "3600", "video_type": "mp4"}],
    }


# Accounting: every outcome in exactly one box, every box checked against the simulator.


def kind_of(outcome: Outcome) -> str:
    """What became of a prompt, in a word: the name of its box in :class:`Accounts`."""
    error = outcome.error
    if outcome.ok:
        return "ok"
    if isinstance(error, TaskFailedError) and outcome.status is TaskStatus.FAILED:
        return "failed"  # a task that failed: its error says why
    if isinstance(error, TaskTimeoutError):
        return "timed_out"
    if isinstance(error, SubmissionUnknownError):
        return "unknown"
    if isinstance(error, BadRequestError) and error.reason == "ILLEGAL_PROMPT":
        return "refused"
    if isinstance(error, InvalidRequestError) and outcome.request is None:
        return "invalid"
    return "other"


@attrs.define
class Accounts:
    """A batch's outcomes sorted into what became of each prompt."""

    ok: list[Outcome] = attrs.Factory(list)
    failed: list[Outcome] = attrs.Factory(list)
    timed_out: list[Outcome] = attrs.Factory(list)
    unknown: list[Outcome] = attrs.Factory(list)
    refused: list[Outcome] = attrs.Factory(list)
    invalid: list[Outcome] = attrs.Factory(list)
    other: list[Outcome] = attrs.Factory(list)

    def add(self, outcome: Outcome) -> str:
        """File ``outcome`` in its box; the box's name."""
        kind = kind_of(outcome)
        getattr(self, kind).append(outcome)
        return kind

    def boxes(self) -> dict[str, list[Outcome]]:
        return attrs.asdict(self, recurse=False)

    def sizes(self) -> dict[str, int]:
        return {name: len(box) for name, box in self.boxes().items()}


def unknown_submits_expected(stats: Mapping[str, Any]) -> int:
    """How many submits the simulator left without a usable answer, from its own counts.

    A created task without an answer is in ``unanswered_tasks``; a connection dropped
    before handling (``drop_before``) and a 500 that created nothing left no task, so
    they are counted from the faults that fired: every 500 on submit, less those that
    did create a task (already in ``unanswered_tasks``).
    """
    fired: Mapping[str, Mapping[str, int]] = stats["chaos"]
    kinds = Counter(stats["unanswered_tasks"].values())
    dropped = fired.get("drop_before", {}).get("submit", 0)
    five_hundreds = fired.get("server_error_500", {}).get("submit", 0)
    return len(stats["unanswered_tasks"]) + dropped + five_hundreds - kinds["server_error_500"]


def tasks_by_prompt(tasks: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Task ids per prompt, from the simulator's task records."""
    found: dict[str, list[str]] = {}
    for task in tasks:
        found.setdefault(task["prompt"], []).append(task["task_id"])
    return found
