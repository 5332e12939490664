"""Helpers for the example apps' tests (imported as ``examples_support``).

:func:`serving` starts an example app in its own process under a real server
(``serve_example.py``), pointed at a simulator, and stops it when the block ends,
checking that it exited cleanly and said nothing alarming on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import aiohttp
import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from novita_video.testing import FakeNovita

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
APPS = ("fastapi", "aiohttp")


@asynccontextmanager
async def serving(
    app: str, fake: FakeNovita, *, api_key: str | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """Run ``examples/<app>_app.py`` against ``fake`` (with ``env`` added to its
    environment); yield its base URL.

    The server runs with ``-W error``, the subprocess's share of pytest's
    ``filterwarnings = ["error"]``: a deprecation warning there fails the test too.
    """
    path = [*os.environ.get("PYTHONPATH", "").split(os.pathsep), str(ROOT)]
    env = {
        **os.environ,
        "NOVITA_BASE_URL": fake.url,
        "NOVITA_API_KEY": fake.api_key if api_key is None else api_key,
        # After any path already set, so the examples import the novita_video under test.
        "PYTHONPATH": os.pathsep.join(part for part in path if part),
        **(env or {}),
    }
    command = [sys.executable, "-W", "error", str(HERE / "serve_example.py"), app]
    # stderr goes to a file, not a pipe: nothing has to drain it while the test runs.
    with tempfile.TemporaryFile() as stderr:
        process = await anyio.open_process(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
        async with process:
            assert process.stdin is not None
            assert process.stdout is not None
            try:
                with anyio.fail_after(30):
                    line = await BufferedByteReceiveStream(process.stdout).receive_until(
                        b"\n", 1000
                    )
            except (anyio.IncompleteRead, TimeoutError):
                process.kill()
                await process.wait()
                raise AssertionError(f"{app} app did not start:\n{_read(stderr)}") from None
            try:
                yield line.decode().removeprefix("listening on ").strip()
            finally:
                await process.stdin.aclose()
                with anyio.move_on_after(20):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        log = _read(stderr)
    assert process.returncode == 0, f"{app} app exited {process.returncode}:\n{log}"
    assert "Traceback" not in log, log
    assert "Warning" not in log, log


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


async def read_events(response: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events of a response, to its end, as ``(event, data)`` pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data += line.removeprefix("data:").strip()
        elif not line and data:
            events.append((name, json.loads(data)))
            name, data = "message", ""
    return events
