"""Serve one example app for the tests: ``python -W error serve_example.py fastapi|aiohttp``
(or ``metrics``, the FastAPI app with Prometheus metrics).

It runs in a process of its own, so the app's event loop (and the loop-lag probe this
script adds to it) shares nothing with the tests' load generator and simulator, not even
the GIL: the lag that ``GET /_test/loop-lag`` reports is the app's alone. Like the apps, it reads
``NOVITA_API_KEY`` and ``NOVITA_BASE_URL``. Once it serves it prints one line,
``listening on http://127.0.0.1:PORT``; it stops cleanly (exit status 0) when its stdin
closes, which works the same on every platform, unlike signals.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import sys
from functools import partial
from typing import Any

import anyio
import uvicorn
from aiohttp import web

from novita_video import Client
from tests.examples.loop_lag import LoopLag

# The simulator has no limits, and 200 clips at Novita's documented 20 submits a minute
# would take ten minutes: the tests lift the client's rates, nothing else (unless a test
# names a submit rate in EXAMPLE_SUBMIT_RPM, to see the app's back-pressure).
_rpm = os.environ.get("EXAMPLE_SUBMIT_RPM")
make_client = partial(Client, submit_rpm=float(_rpm) if _rpm else None, poll_rpm=None)
# Fine enough to see a 50 ms stall.
LAG_PROBE_EVERY = 0.01
LAG_PATH = "/_test/loop-lag"


def ready(port: int) -> None:
    print(f"listening on http://127.0.0.1:{port}", flush=True)


async def stdin_closed() -> None:
    """Return once stdin reaches its end (the test closed it)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        await reader.read()
    finally:
        transport.close()


async def serve_fastapi(app: Any) -> None:
    """Under uvicorn's programmatic ``Server``, on a socket bound here (port 0)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    # ws="none": the app has no websockets, and uvicorn need not import a library for them.
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", ws="none", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)

    async def announce() -> None:
        while not server.started:
            await anyio.sleep(0.01)
        ready(sock.getsockname()[1])
        await stdin_closed()
        server.should_exit = True

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(announce)
        tasks.start_soon(LAG.run)
        await server.serve([sock])
        tasks.cancel_scope.cancel()  # startup failed: uvicorn logged why
    if not server.started:
        sys.exit(1)


async def serve_aiohttp(app: web.Application) -> None:
    """Under aiohttp's ``AppRunner`` and a ``TCPSite`` on port 0."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()  # runs the cleanup_ctx: the client opens here
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ready(runner.addresses[0][1])
        async with anyio.create_task_group() as probe:
            probe.start_soon(LAG.run)
            await stdin_closed()
            probe.cancel_scope.cancel()
    finally:
        await runner.cleanup()


LAG = LoopLag(LAG_PROBE_EVERY)


def main() -> None:
    name = sys.argv[1]
    module = importlib.import_module(f"examples.{name}_app")
    app = module.create_app(make_client)
    if name != "aiohttp":  # fastapi, and metrics (the FastAPI app with /metrics)

        async def lag_json() -> dict[str, float | int]:
            return LAG.as_json()

        app.add_api_route(LAG_PATH, lag_json)
        asyncio.run(serve_fastapi(app))
    else:

        async def lag(request: web.Request) -> web.Response:
            return web.json_response(LAG.as_json())

        app.router.add_get(LAG_PATH, lag)
        asyncio.run(serve_aiohttp(app))


if __name__ == "__main__":
    main()
