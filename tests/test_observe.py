"""``NOVITA_LOG`` and the event hooks over real HTTP, against a server that echoes the key.

The server on loopback puts the Authorization header it receives into its error
messages and its headers, and hands out a clip link whose query is a signature. A
client in a fresh process, with ``NOVITA_LOG`` set and hooks that print every event
(and one hook that raises an error quoting the key), must log each request, retry and
429, and show neither the key nor the signature anywhere.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

pytestmark = [pytest.mark.anyio]

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-live-7f3a9c0e5b1d4e2f"
SIGNATURE = "SIG-0a1b2c3d4e"

SCRIPT = """
import os
import anyio
import novita_video


def show(event):
    print("EVENT", repr(event), flush=True)


def leaky(event):
    # A hook's error that quotes the key: its traceback is logged, redacted.
    raise RuntimeError("hook failed with key " + os.environ["NOVITA_API_KEY"])


async def main():
    hooks = {"request": [show, leaky], "response": [show]}
    async with novita_video.Client(submit_rpm=60, event_hooks=hooks) as client:
        task_id = await client.submit("a cat")
        result = await client.wait(task_id, timeout=60)
        await client.download(result, "clip.mp4")
        print("DONE", task_id, flush=True)


anyio.run(main)
"""


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A server that echoes the Authorization header back; yields its URL and the
    Authorization headers clip downloads carried (there must be none)."""
    submits = 0
    clip_auth: list[str] = []
    base = ""

    async def submit(request: web.Request) -> web.Response:
        nonlocal submits
        submits += 1
        auth = request.headers.get("Authorization", "")
        echo = {"X-Echo": auth}
        if submits == 1:
            body = {"code": 429, "reason": "RATE_LIMIT_EXCEEDED", "message": f"slow, {auth}"}
            return web.json_response(body, status=429, headers=echo | {"Retry-After": "0"})
        return web.json_response({"task_id": "t-1"}, headers=echo)

    async def task_result(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        link = f"{base}/clip.mp4?signature={SIGNATURE}&expires=9999999999"
        body = {
            "task": {"task_id": request.query["task_id"], "status": "TASK_STATUS_SUCCEED"},
            "videos": [{"video_url": link, "video_url_ttl": "3600", "video_type": "mp4"}],
            "extra": {"echo": auth},
        }
        return web.json_response(body, headers={"X-Echo": auth})

    async def clip(request: web.Request) -> web.Response:
        if "Authorization" in request.headers:
            clip_auth.append(request.headers["Authorization"])
        return web.Response(body=b"\x00\x00\x00\x18ftypmp42", content_type="video/mp4")

    app = web.Application()
    app.router.add_post("/v3/async/minimax-video-01", submit)
    app.router.add_get("/v3/async/task-result", task_result)
    app.router.add_get("/clip.mp4", clip)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        yield base, clip_auth
    finally:
        await server.close()


async def run_client(url: str, tmp_path: Path, level: str) -> tuple[str, str]:
    script = tmp_path / "client.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = os.environ | {
        "NOVITA_API_KEY": KEY,
        "NOVITA_BASE_URL": url,
        "NOVITA_LOG": level,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-W", "error", str(script)], cwd=tmp_path, env=env, check=False
        )
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stdout + stderr
    return stdout, stderr


@pytest.mark.slow
@pytest.mark.subprocess
async def test_novita_log_debug_shows_every_request_and_no_secret(
    echo_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, clip_auth = echo_server
    stdout, stderr = await run_client(url, tmp_path, "debug")
    assert "DONE t-1" in stdout
    everything = stdout + stderr
    assert KEY not in everything
    assert SIGNATURE not in everything
    assert not clip_auth
    # One debug line per request: method, path, status, milliseconds, attempt, task id.
    lines = [line.split("novita_video: ", 1)[1] for line in stderr.splitlines() if "DEBUG]" in line]
    shapes = [re.sub(r"\d+ ms", "N ms", line) for line in lines]
    assert shapes == [
        "POST /v3/async/minimax-video-01 -> 429 in N ms (attempt 1)",
        "POST /v3/async/minimax-video-01 -> 200 in N ms (attempt 2, task t-1)",
        "GET /v3/async/task-result -> 200 in N ms (attempt 1, task t-1)",
        "GET /clip.mp4 -> 200 in N ms (attempt 1, task t-1, clip download)",
    ], stderr
    # At info: the retry and the slow-down after the 429.
    assert re.search(r"INFO\] novita_video: POST retried in [\d.]+ s after attempt 1: ", stderr)
    assert "429: POST requests slow down to 30.0 a minute (from 60.0)" in stderr
    # The hook's error was logged with its traceback, the key in it redacted.
    assert "hook failed with key [redacted]" in stderr
    assert "Traceback" in stderr
    # The hooks saw each request and its end (4 each), without the key or the signature.
    events = [line for line in stdout.splitlines() if line.startswith("EVENT")]
    assert len(events) == 8
    assert sum("RequestEvent(" in event for event in events) == 4
    assert "path='/clip.mp4'" in events[-1]


@pytest.mark.slow
@pytest.mark.subprocess
async def test_novita_log_info_leaves_out_the_requests(
    echo_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, _ = echo_server
    stdout, stderr = await run_client(url, tmp_path, "info")
    assert KEY not in stdout + stderr
    assert "DEBUG]" not in stderr
    assert "POST retried in" in stderr


@pytest.mark.subprocess
def test_an_unknown_novita_log_level_is_said_not_ignored(tmp_path: Path) -> None:
    import subprocess

    env = os.environ | {"NOVITA_LOG": "verbose", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", "import novita_video"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "NOVITA_LOG='verbose' is not one of debug, info, warning; ignored" in done.stderr


def recipe(title: str) -> str:
    """The code of the block titled ``title`` in docs/observability.md."""
    page = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    found = re.search(rf'^```python title="{re.escape(title)}"\n(.*?)^```', page, re.M | re.S)
    assert found, f"no {title} in docs/observability.md"
    return found[1]


async def test_the_opentelemetry_recipe_makes_one_ended_span_per_request(tmp_path: Path) -> None:
    # The recipe as the page shows it, with an in-memory exporter in place of the console.
    import importlib.util

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    import novita_video
    from novita_video.testing import Chaos, FakeNovita

    (tmp_path / "otel_hooks.py").write_text(recipe("otel_hooks.py"), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("otel_hooks", tmp_path / "otel_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    otel_hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(otel_hooks)

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    # The first get_result's two attempts are answered 503: two spans end in an error.
    chaos = Chaos(result_server_errors=1.0, server_error_statuses=(503,))
    retry = novita_video.RetryPolicy(max_attempts=2, initial_delay=0.05)
    async with FakeNovita(task_duration=(0.2, 0.3), chaos=chaos) as fake:
        hooks = otel_hooks.tracing_hooks(tracer)
        async with novita_video.Client(
            fake.api_key, base_url=fake.url, event_hooks=hooks, submit_rpm=None, retry=retry
        ) as client:
            with tracer.start_as_current_span("make a clip") as parent:
                task_id = await client.submit("A red kite")
            with anyio.fail_after(30):
                while True:
                    try:
                        result = await client.get_result(task_id)
                    except novita_video.ServerError:
                        fake.set_chaos(result_server_errors=0.0)
                        continue
                    if result.is_final:
                        break
                    await anyio.sleep(0.1)
            await client.download(result, tmp_path / "kite.mp4")
        truth = fake.stats
    spans = exporter.get_finished_spans()
    mine = [span for span in spans if span.name != "make a clip"]
    names = [span.name for span in mine]
    assert names[0] == "POST /v3/async/minimax-video-01"
    assert names[-1] == "GET clip"
    assert names.count("GET /v3/async/task-result") == truth.requests["task_result"]
    assert all(span.kind is SpanKind.CLIENT and span.end_time is not None for span in mine)
    # The submit's span is a child of the caller's span.
    assert mine[0].parent is not None
    assert mine[0].parent.span_id == parent.get_span_context().span_id
    assert mine[0].attributes is not None
    assert mine[0].attributes["novita.task_id"] == task_id
    assert mine[0].attributes["http.response.status_code"] == 200
    statuses = [span.attributes["http.response.status_code"] for span in mine if span.attributes]
    failed = [span for span in mine if span.status.status_code is StatusCode.ERROR]
    assert len(failed) == statuses.count(503) == 2
    assert all(span.attributes and span.attributes["novita.task_id"] == task_id for span in mine)
