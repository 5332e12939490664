"""Helpers for the tests of how a ``batch`` run ends (signals, fatal answers, a ledger
that cannot be written): a command whose stderr is read while it runs, a hop that
answers the first submits as a test scripts them, and the summary's counts parsed."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from aiohttp import web

from tests.cli.cli_support import SUBMIT, command, forward, manifest
from tests.support import serve_app


class Running:
    """A command started in the background; its stderr is collected as it comes."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.stderr = ""

    async def _collect(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk.decode()

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout: float = 60.0) -> int:
        with anyio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def running(
    *args: str, env: Mapping[str, str], argv: Sequence[str] | None = None
) -> AsyncIterator[Running]:
    """Start ``novita-video ARGS`` (or ``argv``); killed if the block leaves it running."""
    process = await anyio.open_process(
        list(argv) if argv is not None else command(*args), env=env, stdout=subprocess.DEVNULL
    )
    async with process, anyio.create_task_group() as group:
        started = Running(process)
        group.start_soon(started._collect)
        try:
            yield started
            await started.wait()
        finally:
            if process.returncode is None:
                process.kill()


#: A play answers one submit in the simulator's place: (the hop, the body, the request).
Play = Callable[["Scripted", bytes, web.Request], Awaitable[web.StreamResponse]]


class Scripted:
    """A hop in front of the simulator: the n-th submit to arrive is answered by the n-th
    play, every other request (and every submit once the plays are used up) passes."""

    def __init__(self, upstream: str, plays: Sequence[Play] = ()) -> None:
        self.upstream = upstream
        self.url = ""
        self.plays = list(plays)
        #: The prompts of the submits that arrived, in order.
        self.arrived: list[str] = []
        self.events: dict[str, anyio.Event] = {}

    def event(self, name: str) -> anyio.Event:
        return self.events.setdefault(name, anyio.Event())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == SUBMIT:
            turn = len(self.arrived)
            self.arrived.append(json.loads(body)["prompt"])
            if turn < len(self.plays):
                return await self.plays[turn](self, body, request)
        status, payload, content_type = await forward(self.upstream, request, body)
        payload = payload.replace(self.upstream.encode(), self.url.encode())
        return web.Response(status=status, body=payload, content_type=content_type)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Scripted]:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        async with serve_app(app) as url:
            self.url = url
            try:
                yield self
            finally:
                for event in self.events.values():
                    event.set()  # no play waits past the test


def error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """An error answer as Novita shapes them."""
    body = {"code": status, "reason": reason, "message": reason.lower(), "metadata": {}}
    return web.json_response(body, status=status, headers=headers)


# The summary on the terminal, and what the manifest and the gallery say.

SUMMARY = re.compile(r"^novita-video: (\d+) of (\d+) clips made((?:, \d+ [a-z ]+?)*) in \S+; see ")
HEADING = re.compile(r"<h1>(\d+) of (\d+) clips((?:, \d+ [a-z ]+)*)</h1>")
KINDS = ("made", "failed", "unknown", "pending", "not downloaded", "not submitted")


def _parts(made: str, total: str, rest: str) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0) | {"made": int(made), "total": int(total)}
    for part in filter(None, rest.split(", ")):
        number, kind = part.split(" ", 1)
        assert kind in KINDS, part
        counts[kind] = int(number)
    return counts


def summary_counts(stderr: str) -> dict[str, int]:
    """The counts of the one summary line on the terminal."""
    found = [SUMMARY.match(line) for line in stderr.splitlines()]
    lines = [match for match in found if match is not None]
    assert len(lines) == 1, stderr
    return _parts(*lines[0].groups())


def gallery_counts(out: Path) -> dict[str, int]:
    """The counts in the gallery's heading."""
    found = HEADING.search((out / "index.html").read_text(encoding="utf-8"))
    assert found is not None
    return _parts(*found.groups())


def manifest_counts(out: Path, *, download: bool = True) -> dict[str, int]:
    """The counts of what ``manifest.jsonl`` says, by the documented statuses."""
    counts: Counter[str] = Counter()
    lines = manifest(out)
    for line in lines:
        status, file, error = line["status"], line["file"], line["error"]
        if file is not None:
            counts["made"] += 1
        elif status == "succeeded":
            kind = "failed" if error else "not downloaded" if download else "made"
            counts[kind] += 1
        elif status in ("failed", "rejected"):
            counts["failed"] += 1
        else:
            assert status in ("unknown", "pending", "not_submitted"), status
            counts[status.replace("_", " ")] += 1
    return dict.fromkeys(KINDS, 0) | dict(counts) | {"total": len(lines)}


def failures_listed(stderr: str) -> list[str]:
    """The lines under ``novita-video: failed:``."""
    if "novita-video: failed:\n" not in stderr:
        return []
    after = stderr.split("novita-video: failed:\n", 1)[1].splitlines()
    listed = []
    for line in after:
        if not line.startswith("  #"):
            break
        listed.append(line)
    return listed


def statuses(out: Path) -> list[str]:
    return [line["status"] for line in manifest(out)]


def by_prompt(fake_tasks: Mapping[str, Any]) -> Counter[str]:
    """How many tasks the simulator made for each prompt."""
    return Counter(task.request.prompt for task in fake_tasks.values())
