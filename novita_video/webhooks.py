"""Receiving Novita's webhooks: push instead of poll, where the endpoint supports it.

Give the client a ``webhook_url`` and serve that URL with one of these; each event
Novita POSTs (``{"event_type": "ASYNC_TASK_RESULT", "payload": <task result>}``) reaches
:meth:`Client.handle_webhook <novita_video.Client.handle_webhook>`, which ends the
matching waits and batch outcomes at once. The client's poller stays as the fallback for
lost events, checking less often. Both receivers answer at once (Novita retries a
receiver that is slow or says anything but 2xx), 200 for any event, used or not
(duplicates and unknown tasks are ignored), and 400 for a body that is not an event.

aiohttp.web::

    from novita_video.webhooks import aiohttp_handler

    app.router.add_post("/novita/webhook", aiohttp_handler(client))

Any ASGI server or framework (FastAPI: ``app.mount("/novita/webhook", asgi_app(client))``)::

    from novita_video.webhooks import asgi_app

    webhook = asgi_app(client)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._client import Client
from ._errors import ProtocolError

if TYPE_CHECKING:
    from aiohttp import web  # the server side of aiohttp: only the app that serves needs it

__all__ = ["MAX_EVENT_SIZE", "aiohttp_handler", "answer", "asgi_app"]

#: Bytes an event may have; a task result is a few hundred.
MAX_EVENT_SIZE = 1 << 20

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def answer(client: Client, body: bytes) -> tuple[int, dict[str, object]]:
    """Hand one event's raw body to ``client``: the HTTP status and JSON to answer Novita
    (200 ``{"used": ...}``; 400 for a body that is not an event, 413 for one over
    :data:`MAX_EVENT_SIZE`). For a framework these receivers do not cover: read at most
    ``MAX_EVENT_SIZE + 1`` bytes of the request and answer what this returns."""
    if len(body) > MAX_EVENT_SIZE:
        return 413, {"error": "event too large"}
    try:
        used = client.handle_webhook(body)
    except ProtocolError as error:
        return 400, {"error": str(error)}
    return 200, {"used": used}


def aiohttp_handler(client: Client) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp.web handler that feeds Novita's webhook events to ``client``."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_EVENT_SIZE:
            return web.json_response({"error": "event too large"}, status=413)
        status, reply = answer(client, await request.read())
        return web.json_response(reply, status=status)

    return handle


def asgi_app(client: Client) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A minimal ASGI application that feeds Novita's webhook events to ``client``.

    It needs no framework: mount it under any path of an ASGI app, or serve it alone.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _send_json(send, 405, {"error": "POST an event here"})
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_EVENT_SIZE:
                await _send_json(send, 413, {"error": "event too large"})
                return
            if not message.get("more_body", False):
                break
        status, reply = answer(client, bytes(body))
        await _send_json(send, status, reply)

    return app


async def _send_json(send: Send, status: int, answer: dict[str, object]) -> None:
    payload = json.dumps(answer).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
