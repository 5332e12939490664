"""A broken or hostile network: servers of our own on 127.0.0.1 that drip, bloat, compress,
echo the key back or never finish. Nothing may hang, grow without bound, or leak the key.

Each server here stands in for a broken proxy, a misbehaving storage host or a compromised
middlebox; limits and deadlines are set small so each attack is over in seconds.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import pickle
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from novita_video import (
    APIConnectionError,
    APITimeoutError,
    Client,
    DownloadError,
    NovitaError,
    ProtocolError,
    RetryPolicy,
    TaskStatus,
    TaskTimeoutError,
)
from tests.support import serve_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

KEY = "sk-hostile-0123456789abcdef"
RESULT = "/v3/async/task-result"
CLIP = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64


def task_body(task_id: str, status: str = "TASK_STATUS_QUEUED", **task: Any) -> dict[str, Any]:
    return {"task": {"task_id": task_id, "status": status, **task}, "videos": []}


def succeeded(task_id: str, url: str) -> dict[str, Any]:
    return {
        "task": {"task_id": task_id, "status": "TASK_STATUS_SUCCEED"},
        "videos": [{"video_url": url, "video_url_ttl": "3600", "video_type": "mp4"}],
    }


async def drip(request: web.Request, first: bytes, *, every: float = 0.2) -> web.StreamResponse:
    """Headers at once, then ``first`` one byte at a time, then the same byte forever."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for byte in first:
        await response.write(bytes([byte]))
        await asyncio.sleep(every)
    while True:
        await response.write(b" ")
        await asyncio.sleep(every)


@asynccontextmanager
async def hostile(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as url:
        yield url


@asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[str]:
    """A server that reads a request's head and answers ``answer``, bytes as they are
    (a malformed status line, a nonsense header); yields its base URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def client(url: str, **options: Any) -> Client:
    retry = RetryPolicy(max_attempts=options.pop("retry_max_attempts", 1))
    return Client(KEY, base_url=url, **{"timeout": 1.0, "retry": retry} | options)


# Time: nothing may hang.


async def test_a_dripping_answer_meets_the_total_deadline() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await drip(request, b'{"task": {"task_id": "t", "status": "')

    async with hostile(handler) as url, client(url, timeout=1.0, deadline=2.0) as opened:
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(APITimeoutError, match="total deadline"):
            await opened.get_result("t")
        # One byte every 0.2 s never trips a per-read timeout of 1 s: only a total does.
        assert time.monotonic() - started < 6


async def test_a_never_ending_chunked_body_meets_the_total_deadline() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await drip(request, b"", every=0.05)

    async with hostile(handler) as url, client(url, timeout=1.0, deadline=2.0) as opened:
        with anyio.fail_after(10), pytest.raises(APITimeoutError):
            await opened.get_result("t")


async def test_wait_deadlines_hold_while_polls_are_stuck_and_healthy_tasks_go_on() -> None:
    # Eight task ids whose answers drip, one healthy: the healthy one is not held up by
    # the stuck checks, and every wait on a stuck one ends at its own deadline.
    async def handler(request: web.Request) -> web.StreamResponse:
        task_id = request.query["task_id"]
        if task_id == "healthy":
            return web.json_response(task_body("healthy", "TASK_STATUS_FAILED", reason="x"))
        return await drip(request, b'{"task": ')

    async with hostile(handler) as url, client(url, timeout=30.0, poll_concurrency=4) as opened:
        stuck = [f"stuck-{n}" for n in range(8)]
        ended: dict[str, tuple[float, object]] = {}
        started = time.monotonic()

        async def wait(task_id: str, timeout: float) -> None:
            try:
                outcome: object = await opened.wait(task_id, timeout=timeout)
            except NovitaError as error:
                outcome = error
            ended[task_id] = (time.monotonic() - started, outcome)

        with anyio.fail_after(15):
            async with anyio.create_task_group() as group:
                for task_id in stuck:
                    group.start_soon(wait, task_id, 3.0)
                await anyio.sleep(0.5)  # every place taken by a stuck check
                group.start_soon(wait, "healthy", 3.0)
    healthy_at, healthy = ended["healthy"]
    assert getattr(healthy, "status", None) is TaskStatus.FAILED
    # Queued behind the stuck checks, it waits for them to turn slow (1 s each, four
    # places, eight of them): about 2 s, not the 30 s of their read timeout.
    assert healthy_at < 3.0
    for task_id in stuck:
        at, outcome = ended[task_id]
        assert isinstance(outcome, TaskTimeoutError)
        assert 3.0 <= at < 4.5, (task_id, at)


async def test_a_cancelled_submit_is_honoured_within_its_deadline() -> None:
    # The POST left (so it may have created a task): its id is worth waiting for, but
    # not forever. The caller's cancellation lands once the submit deadline passed.
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return await drip(request, b'{"task_id": "')

    # The caller leaves at once; the POST ends in the client's task group, in doubt, by
    # its own deadline (real time: the hostile server drips on the wall clock).
    async with hostile(handler) as url, client(url, timeout=1.0, deadline=2.0) as opened:
        started = time.monotonic()
        with anyio.move_on_after(0.5):
            await opened.submit("a cat")
        assert time.monotonic() - started < 2
        with anyio.fail_after(5):
            while opened.statistics().unknown_submissions == 0:
                await anyio.sleep(0.05)
        assert time.monotonic() - started < 7
        assert opened.statistics().unknown_submissions == 1


# Memory: bounded.


async def test_an_oversized_answer_is_refused_unread() -> None:
    sent = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * (1 << 20)
        for _ in range(200):  # 200 MB of it, if anyone read so far
            await response.write(chunk)
            sent += len(chunk)
        return response

    async with hostile(handler) as url, client(url, max_response_bytes=1 << 20) as opened:
        with anyio.fail_after(10), pytest.raises(ProtocolError, match="more than 1048576 bytes"):
            await opened.get_result("t")
    assert sent < 50 << 20  # the client hung up long before the end


async def test_a_gzip_bomb_is_refused_at_the_cap() -> None:
    bomb = gzip.compress(b" " * (200 << 20), compresslevel=9)  # 200 MB in about 200 KB

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async with hostile(handler) as url, client(url, max_response_bytes=1 << 20) as opened:
        with anyio.fail_after(10), pytest.raises(ProtocolError, match="more than 1048576 bytes"):
            await opened.get_result("t")


async def test_a_gzipped_answer_within_the_cap_is_read() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = gzip.compress(json.dumps(task_body("t", eta=5)).encode())
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async with hostile(handler) as url, client(url) as opened:
        result = await opened.get_result("t")
    assert (result.task_id, result.eta) == ("t", 5)


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
@pytest.mark.parametrize(("size", "fits"), [(4096, True), (4097, False)])
async def test_the_cap_is_exact(encoding: str, size: int, fits: bool) -> None:
    # A JSON answer of exactly 4,096 bytes once decoded is read; one byte more is not.
    text = json.dumps(task_body("t"))
    body = (text[:-1] + " " * (size - len(text)) + "}").encode()
    assert len(body) == size

    async def handler(request: web.Request) -> web.StreamResponse:
        packed = gzip.compress(body) if encoding == "gzip" else body
        return web.Response(
            body=packed, headers={"Content-Encoding": encoding, "Content-Type": "application/json"}
        )

    async with hostile(handler) as url, client(url, max_response_bytes=4096) as opened:
        if fits:
            assert (await opened.get_result("t")).task_id == "t"
        else:
            with pytest.raises(ProtocolError, match="more than 4096 bytes"):
                await opened.get_result("t")


async def test_a_clip_over_the_cap_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == RESULT:
            return web.json_response(succeeded("t", f"{request.url.origin()}/clip.mp4"))
        return web.Response(body=CLIP * 100, content_type="video/mp4")

    async with hostile(handler) as url, client(url, max_clip_bytes=len(CLIP) * 10) as opened:
        with pytest.raises(DownloadError, match="more than"):
            await opened.download("t", tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


async def test_a_dripping_clip_meets_the_download_deadline(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == RESULT:
            return web.json_response(succeeded("t", f"{request.url.origin()}/clip.mp4"))
        return await drip(request, CLIP, every=0.1)

    async with hostile(handler) as url, client(url, download_timeout=2.0) as opened:
        started = time.monotonic()
        with anyio.fail_after(15), pytest.raises(APITimeoutError):
            await opened.download("t", tmp_path / "clip.mp4")
        assert time.monotonic() - started < 8
    assert list(tmp_path.iterdir()) == []


async def test_a_gzip_encoded_clip_downloads_whole(tmp_path: Path) -> None:
    packed = gzip.compress(CLIP)

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == RESULT:
            return web.json_response(succeeded("t", f"{request.url.origin()}/clip.mp4"))
        return web.Response(
            body=packed, headers={"Content-Encoding": "gzip", "Content-Type": "video/mp4"}
        )

    async with hostile(handler) as url, client(url) as opened:
        path = await opened.download("t", tmp_path / "clip.mp4")
    assert path.read_bytes() == CLIP


FULL_DISK = """
import anyio, resource, signal, sys
from pathlib import Path
from novita_video import Client, LocalFileError, RetryPolicy

# Files of this process may not grow past 1 KB: a write past it fails (EFBIG), as one
# on a full disk fails (ENOSPC), with an OSError.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))

async def main() -> None:
    async with Client("KEY", base_url=sys.argv[1], retry=RetryPolicy(max_attempts=6)) as c:
        try:
            await c.download("t", Path(sys.argv[2]) / "clip.mp4")
        except LocalFileError as error:
            print("LocalFileError:", error)

anyio.run(main)
""".replace("KEY", KEY)


async def test_a_full_disk_is_a_local_error_at_once(tmp_path: Path) -> None:
    requests = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal requests
        if request.path == RESULT:
            return web.json_response(succeeded("t", f"{request.url.origin()}/clip.mp4"))
        requests += 1
        return web.Response(body=CLIP, content_type="video/mp4")

    async with hostile(handler) as url:
        done = await anyio.run_process(
            [sys.executable, "-c", FULL_DISK, url, str(tmp_path)], check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("LocalFileError: GET /clip.mp4: could not write")
    assert requests == 1  # not retried: the network was fine
    assert list(tmp_path.iterdir()) == []  # no half file left


# The key and signed links never echoed.


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        pending += [current.__cause__, current.__context__]
    return seen


def assert_no_key(error: BaseException) -> None:
    for link in _chain(error):
        texts = [str(link), repr(link), repr(getattr(link, "__dict__", {}))]
        texts.append("".join(traceback.format_exception(link)))
        texts.append(repr(pickle.dumps(link)) if isinstance(link, NovitaError) else "")
        for text in texts:
            assert KEY not in text, (type(link), text[:500])


async def test_a_proxy_echoing_the_key_is_redacted_everywhere() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        echoed = request.headers["Authorization"]
        if request.query.get("task_id") == "json":
            body = {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": f"bad {echoed}"}
            return web.json_response(body, status=400, headers={"X-Echo": echoed})
        if request.query.get("task_id") == "html":
            return web.Response(status=502, text=f"<h1>{echoed}</h1>", content_type="text/html")
        return web.Response(status=200, text=f"not json {echoed}", content_type="text/plain")

    async with hostile(handler) as url, client(url) as opened:
        for task_id, kind in (("json", NovitaError), ("html", NovitaError), ("x", ProtocolError)):
            with pytest.raises(kind) as caught:
                await opened.get_result(task_id)
            assert_no_key(caught.value)
            assert "[redacted]" in str(caught.value) + getattr(caught.value, "snippet", "")


async def test_no_exception_in_the_chain_holds_the_key() -> None:
    # A malformed status line: aiohttp's own exception would carry the request's headers.
    async with raw_server(b"HTTP/1.1 2OO NOT-A-STATUS\r\n\r\n") as url, client(url) as opened:
        with pytest.raises(APIConnectionError) as caught:
            await opened.get_result("t")
    assert_no_key(caught.value)


async def test_a_broken_storage_answer_shows_no_signature(tmp_path: Path) -> None:
    # What a user's logger.exception prints of the failed download: no signature in it.
    async with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: nonsense\r\n\r\n") as link:
        signed = f"{link}/clip.mp4?expires=9999999999&signature=c2VjcmV0LXNpZ25hdHVyZQ"

        async def handler(request: web.Request) -> web.StreamResponse:
            return web.json_response(succeeded("t", signed))

        async with hostile(handler) as url, client(url) as opened:
            with pytest.raises(APIConnectionError) as caught:
                await opened.download("t", tmp_path / "clip.mp4")
    printed = "".join(traceback.format_exception(caught.value))
    assert "c2VjcmV0LXNpZ25hdHVyZQ" not in printed, printed
    assert_no_key(caught.value)


# Smaller.


@pytest.mark.parametrize("eta", ["NaN", "abc", 1e400, "Infinity", -5, [1], {"a": 1}])
async def test_an_unreadable_eta_is_a_missing_hint(eta: object) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        # json.dumps writes 1e400 as Infinity, which Python's json reads back.
        body = task_body("t", "TASK_STATUS_PROCESSING", eta=eta, progress_percent="50")
        return web.Response(text=json.dumps(body), content_type="application/json")

    async with hostile(handler) as url, client(url) as opened:
        result = await opened.get_result("t")
    assert result.status is TaskStatus.PROCESSING
    assert result.eta is None
    assert result.progress == 50


async def test_retry_after_zero_does_not_make_the_poller_spin() -> None:
    polls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal polls
        polls += 1
        body = {"code": 429, "reason": "RATE_LIMIT_EXCEEDED", "message": "slow down"}
        return web.json_response(body, status=429, headers={"Retry-After": "0"})

    async with hostile(handler) as url, client(url, poll_rpm=None) as opened:
        with pytest.raises(TaskTimeoutError):
            await opened.wait("t", timeout=1.0)
    assert polls <= 20  # a 429 pauses every poll at least min_interval (0.25 s)


async def test_many_waits_on_one_task_cost_no_more_than_linear_time() -> None:
    # Registering and forgetting a listener is O(log n): 20,000 waits cost about four
    # times what 5,000 do (a quadratic cost would be sixteen times).
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(task_body(request.query["task_id"]))

    async def cost(waits: int) -> float:
        # CPU time, not wall time: the cost is the process's own work, and other
        # processes competing for the CPU (other test workers, CI) stretch the wall.
        async with hostile(handler) as url, client(url) as opened:
            started = time.process_time()
            async with anyio.create_task_group() as group:
                for _ in range(waits):
                    group.start_soon(opened.wait, "one", 60.0)
                await anyio.sleep(0)
                group.cancel_scope.cancel()
            return time.process_time() - started

    small = min([await cost(5_000) for _ in range(2)])
    large = min([await cost(20_000) for _ in range(2)])
    assert large / small < 8, (small, large)
