"""The FastAPI example under ``uvicorn --workers N``, and clips waited for through it.

Shared by ``tests/shared/test_workers.py`` and ``benchmarks/scaling.py``. The app is
``examples.fastapi_app:app`` itself, configured as users do, by the environment
(``NOVITA_API_KEY``, ``NOVITA_BASE_URL``, ``NOVITA_REDIS_URL``, ``CLIPS_WEBHOOK_URL``).
The clips are submitted by a client of the caller's, asking Novita (the simulator) to
send each task's end to the app; then every clip is waited for with ``GET
/clips/{task_id}``, which uvicorn hands to any of its workers, as the simulator's
webhook deliveries are.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from novita_video import Client

ROOT = Path(__file__).resolve().parents[2]


def environment(api_key: str, base_url: str, **extra: str) -> dict[str, str]:
    """This process's environment for the app: no NOVITA_ variable but those given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("NOVITA_")}
    path = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        NOVITA_API_KEY=api_key,
        NOVITA_BASE_URL=base_url,
        PYTHONPATH=os.pathsep.join(path),
        **extra,
    )
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def uvicorn_workers(env: dict[str, str], port: int, workers: int) -> AsyncIterator[str]:
    """``uvicorn examples.fastapi_app:app --workers N`` on ``port``; yields its URL. It must
    stop cleanly, with no traceback in its log."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "examples.fastapi_app:app",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = await anyio.open_process(
            command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            async with aiohttp.ClientSession(url) as http:
                with anyio.fail_after(30):
                    up = 0
                    while up < 5 * workers:  # answers in a row: the workers are serving
                        try:
                            async with http.get("/stats") as got:
                                up = up + 1 if got.status == 200 else 0
                        except aiohttp.ClientError:
                            up = 0
                            await anyio.sleep(0.1)
            yield url
        finally:
            process.send_signal(signal.SIGINT)
            with anyio.move_on_after(20):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()
            log.seek(0)
            said = log.read().decode(errors="replace")
        assert "Traceback" not in said, said


async def clips_through_workers(
    env: dict[str, str],
    *,
    workers: int,
    count: int,
    finished_at: Callable[[str], float],
    prefix: str = "clip",
) -> list[float]:
    """Submit ``count`` clips whose ends Novita sends to the app, wait for each through the
    app's workers; for each, how long after its task ended (``finished_at(task_id)``, Unix
    time) the waiting request was answered."""
    port = free_port()
    webhook_url = f"http://127.0.0.1:{port}/webhooks/novita"
    env = {**env, "CLIPS_WEBHOOK_URL": webhook_url}
    late: list[float] = []
    async with (
        uvicorn_workers(env, port, workers) as url,
        aiohttp.ClientSession(url) as http,
        Client(
            env["NOVITA_API_KEY"],
            base_url=env["NOVITA_BASE_URL"],
            submit_rpm=None,
            webhook_url=webhook_url,
        ) as submitter,
    ):
        task_ids = [await submitter.submit(f"{prefix} {number}") for number in range(count)]

        async def wait(task_id: str) -> None:
            async with http.get(f"/clips/{task_id}", params={"timeout": "120"}) as got:
                answer: dict[str, Any] = await got.json()
            answered = time.time()
            assert answer["final"], answer
            assert answer["status"] == "SUCCEED", answer
            late.append(answered - finished_at(task_id))

        async with anyio.create_task_group() as waits:
            for task_id in task_ids:
                waits.start_soon(wait, task_id)
    return late
