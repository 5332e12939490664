"""Review of issue 20: downloads from storage hosts of our own on loopback (a redirect to
another host, a short body), with the client's real HTTP transport."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from aiohttp import web

from novita_video import Client, RetryPolicy
from tests.support import serve_app

pytestmark = pytest.mark.anyio

KEY = "sk-download-review-5c1d"
CLIP = b"\x00\x00\x00\x18ftypmp42" + b"x" * 5000


async def test_a_storage_redirect_to_another_host_carries_no_key_and_short_bodies_retry(
    tmp_path: Path,
) -> None:
    seen: list[tuple[str, dict[str, str]]] = []
    tries = {"short": 0}

    async def other_host(request: web.Request) -> web.StreamResponse:
        seen.append(("other", dict(request.headers)))
        return web.Response(body=CLIP, content_type="video/mp4")

    other = web.Application()
    other.router.add_get("/{name}", other_host)
    async with serve_app(other) as other_url:

        async def storage(request: web.Request) -> web.StreamResponse:
            seen.append(("storage", dict(request.headers)))
            name = request.match_info["name"]
            if name == "moved.mp4":
                raise web.HTTPFound(f"{other_url.rstrip('/')}/clip.mp4?X-Amz-Signature=s")
            tries["short"] += 1
            if tries["short"] == 1:  # a body cut short of its Content-Length
                response = web.StreamResponse(headers={"Content-Length": str(len(CLIP))})
                await response.prepare(request)
                await response.write(CLIP[:100])
                assert request.transport is not None
                request.transport.close()
                return response
            return web.Response(body=CLIP, content_type="video/mp4")

        async def result(request: web.Request) -> web.StreamResponse:
            seen.append(("api", dict(request.headers)))
            task_id = request.query["task_id"]
            url = f"{storage_url.rstrip('/')}/storage/{task_id}.mp4?X-Amz-Expires=3600"
            task = {"task_id": task_id, "status": "TASK_STATUS_SUCCEED"}
            return web.json_response(
                {"task": task, "videos": [{"video_url": url, "video_url_ttl": "3600"}]}
            )

        async def submit(request: web.Request) -> web.StreamResponse:
            prompt = (await request.json())["prompt"]
            return web.json_response({"task_id": prompt})

        app = web.Application()
        app.router.add_get("/storage/{name}", storage)
        app.router.add_get("/v3/async/task-result", result)
        app.router.add_post("/v3/async/minimax-video-01", submit)
        policy = RetryPolicy(initial_delay=0.01, max_delay=0.01, jitter=0)
        async with serve_app(app) as storage_url:
            async with Client(KEY, base_url=storage_url, retry=policy) as client:
                with anyio.fail_after(30):
                    for task_id in ("moved", "short"):
                        made = await client.wait(task_id, timeout=10)
                        await client.download(made, tmp_path / f"{task_id}.mp4")
    assert (tmp_path / "moved.mp4").read_bytes() == CLIP
    assert (tmp_path / "short.mp4").read_bytes() == CLIP
    assert tries["short"] == 2
    assert [where for where, _ in seen if where == "other"] == ["other"]
    for where, headers in seen:
        if where != "api":
            assert not any(KEY in value for value in headers.values()), (where, headers)
            assert "Authorization" not in headers
    assert not list(tmp_path.glob(".*.part"))
