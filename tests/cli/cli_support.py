"""Helpers for the command-line tests: run ``python -m novita_video``, read its outputs,
and a proxy that makes the simulator misbehave on cue."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import attrs
from aiohttp import web

from novita_video.testing import FakeNovita
from tests.support import serve_app

REPO = Path(__file__).resolve().parents[2]
CLIP = (REPO / "novita_video" / "testing" / "assets" / "clip.mp4").read_bytes()
#: A key distinctive enough to look for in every file a run leaves.
KEY = "sk-cli-test-7f3e9a"
#: Submits as fast as the simulator takes them: the tests are not about the rate.
FAST = ("--rpm", "6000")


def cli_env(url: str | None, key: str | None = KEY) -> dict[str, str]:
    """The environment for a run against ``url`` with ``key`` (``None``: unset)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("NOVITA_API_KEY", "NOVITA_BASE_URL")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if url is not None:
        env["NOVITA_BASE_URL"] = url
    if key is not None:
        env["NOVITA_API_KEY"] = key
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "novita_video", *args]


@attrs.frozen
class Ran:
    """A finished run of the command."""

    code: int
    stdout: str
    stderr: str


async def run_cli(
    *args: str, env: Mapping[str, str], stdin: bytes | None = None, cwd: Path | None = None
) -> Ran:
    """Run ``novita-video ARGS`` to its end (the event loop keeps serving meanwhile)."""
    with anyio.fail_after(90):
        done = await anyio.run_process(command(*args), input=stdin, env=env, check=False, cwd=cwd)
    return Ran(done.returncode, done.stdout.decode(), done.stderr.decode())


async def start_cli(*args: str, env: Mapping[str, str]) -> anyio.abc.Process:
    """Start ``novita-video ARGS`` without waiting (for a test that kills it)."""
    return await anyio.open_process(
        command(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``check()`` is true."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition never came true"
        await anyio.sleep(0.02)


async def read_all(stream: anyio.abc.ByteReceiveStream) -> str:
    """Everything a process writes to ``stream`` until it closes it."""
    chunks = [chunk async for chunk in stream]
    return b"".join(chunks).decode()


def manifest(out: Path) -> list[dict[str, Any]]:
    """The lines of ``out/manifest.jsonl``."""
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def ledger(out: Path) -> list[dict[str, Any]]:
    """Every row of the ledger, in prompt order."""
    with contextlib.closing(sqlite3.connect(out / ".novita" / "ledger.sqlite")) as db, db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM prompts ORDER BY idx")]


def clips(out: Path) -> list[Path]:
    """The clip files of ``out``."""
    return sorted(out.glob("*.mp4"))


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def prompts_file(path: Path, prompts: Sequence[str]) -> Path:
    return write(path, "".join(f"{prompt}\n" for prompt in prompts))


@asynccontextmanager
async def simulator(**knobs: Any) -> AsyncIterator[FakeNovita]:
    """A simulator with the tests' key and quick tasks (unless ``knobs`` say otherwise)."""
    knobs.setdefault("task_duration", (0.2, 0.6))
    async with FakeNovita(api_key=KEY, **knobs) as fake:
        yield fake


SUBMIT = "/v3/async/minimax-video-01"
_EXPIRED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>\n"
)


async def forward(upstream: str, request: web.Request, body: bytes) -> tuple[int, bytes, str]:
    """Send ``request`` (with ``body``) on to ``upstream``, as a test proxy does: its
    status, body and content type (only the key and the content type go along)."""
    headers = {
        name: value
        for name, value in request.headers.items()
        if name.lower() in ("authorization", "content-type")
    }
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as answer,
    ):
        return answer.status, await answer.read(), answer.content_type


class Proxy:
    """An HTTP hop between the command and a simulator, which misbehaves on cue.

    ``hold_submits``: each submit reaches the simulator (so its task is made and
    billed) but its answer is held until :meth:`release`: a run killed then had its POST
    in flight. ``expire_downloads``: the first download of each clip is answered 403
    "Request has expired", as storage does once a link is old. Links in the simulator's
    answers are rewritten to come through here.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self.hold_submits = False
        self.expire_downloads = False
        self.held = 0
        self.expired: set[str] = set()
        self._released = anyio.Event()

    def release(self) -> None:
        self._released.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        first_download = request.path.startswith("/storage/") and request.path not in self.expired
        if self.expire_downloads and first_download:
            self.expired.add(request.path)
            return web.Response(status=403, text=_EXPIRED, content_type="application/xml")
        status, payload, content_type = await forward(self.upstream, request, body)
        if request.path == SUBMIT and self.hold_submits:
            self.held += 1
            await self._released.wait()
        payload = payload.replace(self.upstream.encode(), self.url.encode())
        return web.Response(status=status, body=payload, content_type=content_type)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Proxy]:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        async with serve_app(app) as url:
            self.url = url
            try:
                yield self
            finally:
                self.release()
