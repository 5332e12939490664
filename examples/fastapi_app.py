"""A FastAPI service that makes clips with novita_video: submit, wait, stream progress.

From the repository root, with the simulator (``python -m novita_video.testing --port
8001``) in another shell::

    NOVITA_BASE_URL=http://127.0.0.1:8001 NOVITA_API_KEY=sk-simulated \\
        uvicorn examples.fastapi_app:app

Endpoints (see ``examples/README.md``): ``POST /clips``, ``GET /clips/{task_id}``, ``GET
/clips/{task_id}/events`` (server-sent events), ``GET /stats``, ``POST /webhooks/novita``.
One :class:`novita_video.Client`, opened in the lifespan, serves every request: one poller
for every clip anyone waits for. Under ``uvicorn --workers 4``, ``NOVITA_REDIS_URL`` lets
the four share the key's limits and webhook events. What talks to the client is
``examples/clips.py``, shared with ``examples/aiohttp_app.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.types import Receive, Scope, Send

from examples import clips
from novita_video import Client, NovitaError, webhooks


class ClipRequest(BaseModel):
    """``POST /clips``: Pydantic checks the types, the SDK the rules (prompt length, URL)."""

    model_config = ConfigDict(strict=True, extra="forbid")  # a misspelt field is an error

    prompt: str
    image_url: str | None = None
    enable_prompt_expansion: bool = True


class ClipEvents(Response):
    """The ``text/event-stream`` of one clip: a plain ASGI response, because the stream
    runs a task group, which must not live in a ``StreamingResponse``'s generator."""

    media_type = "text/event-stream"

    def __init__(self, state: clips.AppState, task_id: str, every: float, at_most: float):
        # Not Response.__init__: it would render an empty body with Content-Length: 0.
        self.status_code, self.background = 200, None
        self.init_headers(clips.STREAM_HEADERS)
        self._state, self._task_id, self._every, self._at_most = state, task_id, every, at_most

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False  # the status line went out (the stream may be cut short after)

        async def start() -> None:
            nonlocal started
            headers = {"headers": self.raw_headers}
            await send({"type": "http.response.start", "status": 200} | headers)
            started = True

        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def refuse(status: int, body: dict[str, Any]) -> None:
            await JSONResponse(body, status_code=status)(scope, receive, send)

        async def until_disconnect() -> None:
            # uvicorn drops what is sent to a gone client without a word: listen.
            while (await receive())["type"] != "http.disconnect":
                pass
            watcher.cancel_scope.cancel()

        async with anyio.create_task_group() as watcher:
            watcher.start_soon(until_disconnect)
            await clips.stream_clip(
                self._state,
                self._task_id,
                every=self._every,
                at_most=self._at_most,
                start=start,
                write=write,
                refuse=refuse,
            )
            watcher.cancel_scope.cancel()
        if started:
            with suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


def app_state(request: Request) -> clips.AppState:
    state: clips.AppState = request.state.novita
    return state


State = Annotated[clips.AppState, Depends(app_state)]


def create_app(make_client: Callable[[], Client] = clips.default_client) -> FastAPI:
    """The app; ``make_client`` makes its one client (a missing key stops the server at
    startup). Pass your own to set limits, e.g. ``partial(Client, submit_rpm=60)``."""

    # The lifespan is entered and left by one task, so the client's task group may span
    # its `yield` (unlike a generator driven by `async for`).
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, clips.AppState]]:
        async with make_client() as client:
            yield {"novita": clips.AppState(client)}

    app = FastAPI(title="novita_video clips", lifespan=lifespan)

    @app.post("/clips", status_code=202)
    async def submit_clip(body: ClipRequest, state: State, response: Response) -> dict[str, str]:
        """Submit one clip; answers its task id at once (the clip takes minutes)."""
        answer = await clips.submit_clip(state, body.model_dump())
        response.headers["Location"] = answer["status_url"]
        return answer

    @app.get("/clips/{task_id}")
    async def get_clip(
        task_id: str,
        state: State,
        # `timeout` in the URL; `wait_for` here (ruff ASYNC109): passed on, never slept on.
        wait_for: Annotated[float, Query(alias="timeout", gt=0, le=clips.MAX_WAIT)] = 30.0,
    ) -> dict[str, Any]:
        """Wait up to ``timeout`` seconds for the clip; ``final`` false: ask again."""
        return await clips.wait_for_clip(state, task_id, wait_for)

    @app.get("/clips/{task_id}/events", response_class=Response)
    async def clip_events(
        task_id: str,
        state: State,
        every: Annotated[float, Query(ge=0.1, le=60)] = 1.0,
        at_most: Annotated[float, Query(alias="timeout", gt=0, le=clips.MAX_STREAM)] = 900.0,
    ) -> Response:
        """Stream the clip's progress as server-sent events until it is final."""
        return ClipEvents(state, task_id, every, at_most)

    @app.get("/stats")
    async def stats(state: State) -> dict[str, Any]:
        """The client's statistics (one poller, however many waits)."""
        return state.as_json()

    @app.post("/webhooks/novita", include_in_schema=False)
    async def novita_webhook(request: Request, state: State) -> Response:
        """A task's end, from Novita: this worker's client acts on it and, with Redis,
        passes it to the worker that waits for it."""
        body = b""
        async for chunk in request.stream():  # read no more than an event may be
            body += chunk
            if len(body) > webhooks.MAX_EVENT_SIZE:
                break
        status, reply = webhooks.answer(state.client, body)  # the SDK's, as its receivers
        return JSONResponse(reply, status_code=status)

    @app.exception_handler(NovitaError)
    async def novita_error(request: Request, error: NovitaError) -> Response:
        status, body, headers = clips.error_answer(error)
        return JSONResponse(body, status_code=status, headers=headers)

    return app


app = create_app()
