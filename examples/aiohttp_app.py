"""An aiohttp.web service that makes clips with novita_video: submit, wait, stream progress.

Run it against the local simulator (two shells, from the repository root)::

    python -m novita_video.testing --port 8001
    NOVITA_BASE_URL=http://127.0.0.1:8001 NOVITA_API_KEY=sk-simulated \\
        python -m examples.aiohttp_app            # listens on 127.0.0.1:8080 ($PORT)

The same endpoints and answers as ``examples/fastapi_app.py``. One
:class:`novita_video.Client`, opened in a ``cleanup_ctx``, serves every request. What
talks to the client is in ``examples/clips.py``, shared by both apps.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any, Final

from aiohttp import web

from examples import clips
from novita_video import (
    Client,
    InvalidRequestError,
    NovitaError,
)
from novita_video.webhooks import aiohttp_handler

STATE: Final = web.AppKey("novita", clips.AppState)
_FIELDS: Final = frozenset({"prompt", "image_url", "enable_prompt_expansion"})


def _seconds(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    """A query parameter of seconds in ``[low, high]``; 422 (naming it) otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails too
        raise InvalidRequestError(f"{name}: must be seconds in [{low}, {high}], not {raw!r}", name)
    return value


async def submit_clip(request: web.Request) -> web.Response:
    """``POST /clips``: submit one clip; answers its task id at once. Only the body's
    shape is checked here; the SDK checks every value and names the field."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise InvalidRequestError("body: must be a JSON object", "body")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:  # a misspelt field is an error, not silently ignored
        raise InvalidRequestError(
            f"{unknown[0]}: unknown field; expected {sorted(_FIELDS)}", unknown[0]
        )
    if "prompt" not in body:
        raise InvalidRequestError("prompt: required", "prompt")
    answer = await clips.submit_clip(request.app[STATE], body)
    return web.json_response(answer, status=202, headers={"Location": answer["status_url"]})


async def get_clip(request: web.Request) -> web.Response:
    """``GET /clips/{task_id}?timeout=30``: wait up to ``timeout`` seconds for the clip;
    ``final`` false: ask again."""
    task_id = request.match_info["task_id"]
    wait_for = _seconds(request, "timeout", 30.0, 0.001, clips.MAX_WAIT)
    return web.json_response(await clips.wait_for_clip(request.app[STATE], task_id, wait_for))


async def clip_events(request: web.Request) -> web.StreamResponse:
    """``GET /clips/{task_id}/events``: the clip's progress as server-sent events (an
    error before the first event is a plain HTTP error: an unknown task id, 404)."""
    state = request.app[STATE]
    task_id = request.match_info["task_id"]
    every = _seconds(request, "every", 1.0, 0.1, 60.0)
    at_most = _seconds(request, "timeout", 900.0, 0.001, clips.MAX_STREAM)
    response = web.StreamResponse(headers=clips.STREAM_HEADERS)
    response.content_type = "text/event-stream"
    refusal: list[web.Response] = []

    async def refuse(status: int, body: dict[str, Any]) -> None:
        refusal.append(web.json_response(body, status=status))

    started = await clips.stream_clip(
        state,
        task_id,
        every=every,
        at_most=at_most,
        start=lambda: response.prepare(request),
        write=response.write,
        refuse=refuse,
    )
    if refusal:
        return refusal[0]
    if started:
        with suppress(OSError):
            await response.write_eof()
    return response


async def stats(request: web.Request) -> web.Response:
    """``GET /stats``: the client's statistics (one poller, however many waits)."""
    return web.json_response(request.app[STATE].as_json())


async def novita_webhook(request: web.Request) -> web.StreamResponse:
    """``POST /webhooks/novita``: a task's end, from Novita, to the SDK's own receiver."""
    return await aiohttp_handler(request.app[STATE].client)(request)


@web.middleware
async def novita_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer every :class:`NovitaError` a handler lets through as ``error_answer`` says."""
    try:
        return await handler(request)
    except NovitaError as error:
        status, body, headers = clips.error_answer(error)
        return web.json_response(body, status=status, headers=headers)


def create_app(make_client: Callable[[], Client] = clips.default_client) -> web.Application:
    """The app; ``make_client`` makes its one client (a missing key stops the server at
    startup). Pass your own to set limits, e.g. ``partial(Client, submit_rpm=60)``."""

    # aiohttp enters a cleanup_ctx at startup and resumes it at cleanup from the same task
    # (the one running the app), which is what lets the client's task group (and this one)
    # span its `yield`, unlike a generator driven by `async for`.
    async def novita_client(app: web.Application) -> AsyncIterator[None]:
        async with make_client() as client:
            app[STATE] = clips.AppState(client)
            yield

    app = web.Application(middlewares=[novita_errors])
    app.cleanup_ctx.append(novita_client)
    app.router.add_post("/clips", submit_clip)
    app.router.add_get("/clips/{task_id}", get_clip)
    app.router.add_get("/clips/{task_id}/events", clip_events)
    app.router.add_get("/stats", stats)
    app.router.add_post("/webhooks/novita", novita_webhook)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)  # aiohttp's access log, and our warnings
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
