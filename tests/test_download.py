"""Downloads against storage that fails the way storage does, over real loopback HTTP.

A :class:`FaultyStorage` stands in front of a :class:`FakeNovita`: API requests pass
through to the simulator (its task-result links rewritten to point at the front), and
storage requests meet the next scripted fault, then the simulator's own storage, with
its signed links, its 403 once a link expired, and its count of keys that reached it.
Client and simulator share a :class:`ManualClock`, so backoff and ``Retry-After`` cost
no real time and the delays the client chose can be read back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web

import novita_video
from novita_video import Client, DownloadError, LocalFileError, PollSchedule, RetryPolicy
from novita_video._download import Next, after_refusal
from novita_video._http import MAX_ERROR_BODY
from novita_video.testing import FakeNovita
from novita_video.testing._storage import STORAGE_PREFIX, s3_error_body
from tests.support import ManualClock, serve_app

pytestmark = pytest.mark.anyio

ASSET = Path(novita_video.testing.__file__).parent / "assets" / "clip.mp4"
#: Delays as the default policy's, but three attempts: a test reads them back exactly.
POLICY = RetryPolicy(max_attempts=3)
#: The body of the 403 a broken storage host sends (streamed: nobody holds it whole).
HUGE = 200 * 2**20

Fault = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FaultyStorage:
    """Storage that fails as scripted, in front of a simulator (see the module docstring)."""

    def __init__(self, fake: FakeNovita, session: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.url = ""
        self.script: deque[Fault] = deque()
        self.forever: Fault | None = None  # once the script is over, instead of the clip
        self.storage_requests = 0
        self.with_authorization = 0
        self.flooded: list[int] = []  # bytes of each flood sent before the client hung up
        self.flood_over = anyio.Event()
        self._session = session

    def fail(self, *faults: Fault) -> None:
        self.script.extend(faults)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        storage = request.path.startswith(STORAGE_PREFIX)
        if storage:
            self.storage_requests += 1
            self.with_authorization += "Authorization" in request.headers
            fault = self.script.popleft() if self.script else self.forever
            if fault is not None:
                return await fault(request)
        forwarded = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        async with self._session.request(
            request.method,
            self.fake.url + request.path_qs,
            headers=forwarded,
            data=await request.read(),
        ) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() == "content-type"}
        if not storage:  # the links in a task result lead here
            body = body.replace(self.fake.url.encode(), self.url.encode())
        return web.Response(status=answer.status, body=body, headers=kept)

    async def flood(self, request: web.Request) -> web.StreamResponse:
        """A 403 whose body is :data:`HUGE` bytes, sent until the client hangs up."""
        response = web.StreamResponse(status=403)
        response.content_type = "application/xml"
        response.content_length = HUGE
        await response.prepare(request)
        chunk, sent = bytes(2**20), 0
        try:
            while sent < HUGE:
                await response.write(chunk)
                sent += len(chunk)
        except ConnectionError:
            pass  # the client hung up: what it wanted of the body it had
        finally:
            self.flooded.append(sent)
            self.flood_over.set()
        return response


def answer(status: int, **headers: str) -> Fault:
    async def fault(request: web.Request) -> web.StreamResponse:
        body = s3_error_body("SlowDown" if status == 429 else "ServiceUnavailable", "try later")
        return web.Response(
            status=status, text=body, content_type="application/xml", headers=headers
        )

    return fault


async def hang_up(request: web.Request) -> web.StreamResponse:
    """No answer: the connection is cut as the request arrives."""
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


async def cut(request: web.Request) -> web.StreamResponse:
    """The clip's length promised, half of it sent, the connection cut."""
    clip = ASSET.read_bytes()
    response = web.StreamResponse()
    response.content_type = "video/mp4"
    response.content_length = len(clip)
    await response.prepare(request)
    await response.write(clip[: len(clip) // 2])
    return await hang_up(request)


@asynccontextmanager
async def faulty_storage(**knobs: object) -> AsyncIterator[FaultyStorage]:
    knobs = {"task_duration": (1.0, 1.0), **knobs}
    async with (
        FakeNovita(**knobs) as fake,  # type: ignore[arg-type]
        aiohttp.ClientSession(auto_decompress=False) as session,
    ):
        storage = FaultyStorage(fake, session)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", storage.handle)
        async with serve_app(app) as url:
            storage.url = url
            yield storage


@asynccontextmanager
async def made_clip(
    **knobs: object,
) -> AsyncIterator[tuple[FaultyStorage, Client, ManualClock, str]]:
    """Faulty storage, a client of it on a manual clock, and a task whose clip is made."""
    clock = ManualClock()
    async with (
        faulty_storage(clock=clock, **knobs) as storage,
        Client(storage.fake.api_key, base_url=storage.url, clock=clock, retry=POLICY) as client,
    ):
        task_id = await client.submit("a cat")
        clock.advance(2.0)
        yield storage, client, clock, task_id
        # Whatever storage did, the key never went there.
        assert storage.with_authorization == 0
        assert storage.fake.stats.video_requests_with_authorization == 0


def clip_only(folder: Path) -> None:
    """Only the clip is in ``folder``: no temporary ``.part`` file stayed behind."""
    assert [p.name for p in folder.iterdir()] == ["cat.mp4"]
    assert (folder / "cat.mp4").read_bytes() == ASSET.read_bytes()


# The rule: which answers of storage are worth another try.


@pytest.mark.parametrize(
    ("status", "renewed", "expected"),
    [
        (403, False, Next.RENEW),  # expired (or refused): one fresh link
        (403, True, Next.RAISE),  # a fresh link refused too: a third will not do better
        (429, False, Next.RETRY),
        (429, True, Next.RETRY),
        (500, False, Next.RETRY),
        (502, False, Next.RETRY),
        (503, True, Next.RETRY),
        (504, False, Next.RETRY),
        (599, False, Next.RETRY),
        (400, False, Next.RAISE),
        (401, False, Next.RAISE),
        (404, False, Next.RAISE),  # no such clip: it will not appear
        (408, False, Next.RAISE),
        (416, False, Next.RAISE),
        (200, False, Next.RAISE),  # a 2xx over the clip cap would be over it again
        (600, False, Next.RAISE),
    ],
)
def test_after_refusal(status: int, renewed: bool, expected: Next) -> None:
    assert after_refusal(status, renewed=renewed) is expected


# Storage's passing troubles are retried.


@pytest.mark.parametrize(
    ("blip", "requests"),
    [
        ([answer(503)], 2),
        ([answer(500)], 2),
        ([answer(429)], 2),
        ([cut], 2),
        # aiohttp itself sends a GET whose connection closed unanswered once more
        # (RFC 9112, 9.3.1), unseen: it takes two such hang-ups to reach the SDK.
        ([hang_up, hang_up], 3),
    ],
    ids=["503", "500", "429-without-retry-after", "cut-mid-clip", "hung-up-unanswered"],
)
async def test_one_blip_of_storage_costs_one_retry(
    tmp_path: Path, blip: list[Fault], requests: int
) -> None:
    async with made_clip() as (storage, client, clock, task_id):
        storage.fail(*blip)
        path = await client.download(task_id, tmp_path / "cat.mp4")
        assert storage.storage_requests == requests
        assert client.statistics().retries == 1
        # The policy's first backoff (0.5 s, less at most a quarter of jitter).
        assert len(clock.sleeps) == 1
        assert 0.375 <= clock.sleeps[0] <= 0.5
    assert path == tmp_path / "cat.mp4"
    clip_only(tmp_path)


async def test_a_429_waits_its_retry_after_and_renews_a_link_that_expired_meanwhile(
    tmp_path: Path,
) -> None:
    async with made_clip(video_ttl=60) as (storage, client, clock, task_id):
        storage.fail(answer(429, **{"Retry-After": "90"}))
        polls = storage.fake.stats.requests["task_result"]
        await client.download(task_id, tmp_path / "cat.mp4")
        assert clock.sleeps == [90.0]  # storage's word, not the backoff
        # The link lived 60 s: after 90 the next try asked for a fresh one first.
        assert storage.fake.stats.requests["task_result"] == polls + 2
        assert storage.storage_requests == 2
        stats = client.statistics()
        assert (stats.retries, stats.rate_limited) == (1, 1)
    clip_only(tmp_path)


async def test_storage_down_for_good_ends_after_max_attempts(tmp_path: Path) -> None:
    async with made_clip() as (storage, client, clock, task_id):
        storage.forever = answer(503, **{"Retry-After": "2"})
        with anyio.fail_after(30), pytest.raises(DownloadError) as caught:
            await client.download(task_id, tmp_path / "cat.mp4")
        assert storage.storage_requests == POLICY.max_attempts
        assert clock.sleeps == [2.0] * (POLICY.max_attempts - 1)
    assert caught.value.status_code == 503
    assert caught.value.retry_after == 2.0
    assert "storage answered HTTP 503" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


async def test_a_huge_error_body_is_not_read(tmp_path: Path) -> None:
    # A 403 with a 200 MB body, then (the link renewed) the clip. The client reads at
    # most MAX_ERROR_BODY of it and hangs up; what the server got out before it noticed
    # is that, plus what the two sockets' kernel buffers hold (a few MB on loopback).
    async with made_clip() as (storage, client, _, task_id):
        storage.fail(storage.flood)
        polls = storage.fake.stats.requests["task_result"]
        with anyio.fail_after(30):
            await client.download(task_id, tmp_path / "cat.mp4")
            await storage.flood_over.wait()
        assert storage.fake.stats.requests["task_result"] == polls + 2  # one renewal
        assert storage.storage_requests == 2
    assert len(storage.flooded) == 1
    assert MAX_ERROR_BODY <= storage.flooded[0] <= 32 * 2**20 < HUGE
    clip_only(tmp_path)


# Failures of this machine are LocalFileError at once, never retried.


def put_in_the_way(kind: str, folder: Path) -> Path:
    """Something in ``folder`` that stands in a download's way; the download's destination."""
    if kind == "a file where the folder goes":
        (folder / "clips").write_bytes(b"not a folder")
        return folder / "clips" / "cat.mp4"
    (folder / "cat.mp4").mkdir()  # a folder where the clip goes
    return folder / "cat.mp4"


@pytest.mark.parametrize(
    ("kind", "cause", "fetched", "left"),
    [
        ("a file where the folder goes", FileExistsError, 0, "clips"),
        ("a folder where the clip goes", IsADirectoryError, 1, "cat.mp4"),
    ],
)
async def test_something_in_the_way_is_a_local_error(
    tmp_path: Path, kind: str, cause: type[OSError], fetched: int, left: str
) -> None:
    async with made_clip() as (storage, client, clock, task_id):
        destination = put_in_the_way(kind, tmp_path)
        with pytest.raises(LocalFileError) as caught:
            await client.download(task_id, destination)
        assert storage.storage_requests == fetched  # never again: the network was fine
        assert clock.sleeps == []
    assert isinstance(caught.value.__cause__, cause)
    assert str(destination.parent) in str(caught.value)
    # Nothing left but what was in the way: no clip, no temporary file.
    assert [p.name for p in tmp_path.rglob("*")] == [left]


READ_ONLY = """
import anyio, os, sys
from pathlib import Path
from novita_video import Client, LocalFileError, RetryPolicy

async def main() -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=0.01)
    async with Client(base_url=sys.argv[1], retry=policy) as client:
        result = await client.get_result(sys.argv[2])
        if os.geteuid() == 0:
            # Permission bits do not stop root: from here on, files are opened as the
            # unprivileged user "nobody" would open them (this process only).
            os.setegid(65534)
            os.seteuid(65534)
        try:
            await client.download(result, Path(sys.argv[3]) / "cat.mp4")
        except LocalFileError as error:
            print(f"LocalFileError: {error} <- {type(error.__cause__).__name__}")

anyio.run(main)
"""


@pytest.mark.subprocess
async def test_a_read_only_folder_is_a_local_error() -> None:
    # Permission bits do not stop root, so a process of root downloads as "nobody"
    # (see READ_ONLY), into a folder that user can reach (pytest's are 0700).
    outer = Path(tempfile.mkdtemp(prefix="novita-read-only-"))
    try:
        outer.chmod(0o755)
        folder = outer / "clips"
        folder.mkdir(mode=0o555)
        folder.chmod(0o555)  # whatever the umask
        async with FakeNovita(task_duration=(0.1, 0.1)) as fake:
            schedule = PollSchedule(progress_lead=0.2)
            async with Client(fake.api_key, base_url=fake.url, poll_schedule=schedule) as client:
                task_id = (await client.wait(await client.submit("a cat"), timeout=30)).task_id
            done = await anyio.run_process(
                [sys.executable, "-c", READ_ONLY, fake.url, task_id, str(folder)],
                check=False,
                cwd=Path(novita_video.__file__).parents[1],  # this tree's novita_video
                env={**os.environ, "NOVITA_API_KEY": fake.api_key},
            )
            video_requests = fake.stats.requests["video"]
        assert done.returncode == 0, done.stderr.decode()
        printed = done.stdout.decode()
        assert printed.startswith("LocalFileError: download of cat.mp4: could not write"), printed
        assert printed.rstrip().endswith("<- PermissionError"), printed
        assert video_requests == 0  # the file could not be made: nothing was fetched
        assert list(folder.iterdir()) == []
    finally:
        with contextlib.suppress(OSError):
            (outer / "clips").chmod(stat.S_IRWXU)
        shutil.rmtree(outer, ignore_errors=True)
