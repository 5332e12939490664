"""The example web apps (``examples/fastapi_app.py``, ``examples/aiohttp_app.py``) under load.

Each app runs under its real server (uvicorn; aiohttp's AppRunner and TCPSite) in a
process of its own, pointed at a :class:`FakeNovita` in this one; the load comes from
an aiohttp client here. Both apps answer the same HTTP API, so every test runs on both.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import aiohttp
import anyio
import pytest

from novita_video.testing import Chaos, FakeNovita
from tests.examples.examples_support import APPS, read_events, serving
from tests.examples.serve_example import LAG_PATH

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("app", APPS),
    pytest.mark.slow,
    pytest.mark.subprocess,
    pytest.mark.load,
]

CLIPS = 200
STREAMS = 5
#: Seconds between two clips' arrivals: 200 arrive in 0.8 s and then all wait at once.
ARRIVAL = 0.004
#: The lateness the apps' event loop must stay under, however many requests wait.
MAX_LAG_MS = 50.0
#: No wake-up may come this late, however rare: that is a blocked loop, not noise.
MAX_STALL_MS = 500.0


def session(url: str) -> aiohttp.ClientSession:
    # limit=0: the load must not queue in our own connection pool.
    connector = aiohttp.TCPConnector(limit=0)
    return aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=45))


async def test_200_waiting_requests_share_one_poller_and_never_block_the_loop(app: str) -> None:
    """200 clips, each a POST then a GET that waits, and 5 event streams, all at once.

    The clips arrive 4 ms apart (250 a second) and take 3 to 4 s, so all 200 waits are
    pending together for over 2 s. Why not all in the same millisecond: the app would
    then take 200 connections in one turn of its event loop, and their parsing and
    routing (about 0.4 ms each on FastAPI) would delay the loop by some 50 to 90 ms,
    which is the cost of the burst, not a block; the probe is here to catch blocking.
    """
    async with (
        FakeNovita(task_duration=(3.0, 4.0), failure_rate=0.1, seed=7) as fake,
        serving(app, fake) as url,
        session(url) as http,
    ):
        answers: dict[str, dict[str, Any]] = {}
        streams: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        samples: list[dict[str, Any]] = []

        async def clip(index: int) -> None:
            await anyio.sleep(index * ARRIVAL)
            async with http.post("/clips", json={"prompt": f"clip number {index}"}) as posted:
                assert posted.status == 202, await posted.text()
                task_id = (await posted.json())["task_id"]
                assert posted.headers["Location"] == f"/clips/{task_id}"
            async with anyio.create_task_group() as both:
                if index < STREAMS:
                    both.start_soon(stream, task_id)
                async with http.get(f"/clips/{task_id}", params={"timeout": "30"}) as got:
                    assert got.status == 200, await got.text()
                    answers[task_id] = await got.json()

        async def stream(task_id: str) -> None:
            async with http.get(f"/clips/{task_id}/events", params={"every": "0.25"}) as got:
                assert got.status == 200, await got.text()
                assert got.headers["Content-Type"].startswith("text/event-stream")
                streams[task_id] = await read_events(got)

        async def sample(done: anyio.Event) -> None:
            while not done.is_set():
                async with http.get("/stats") as got:
                    samples.append(await got.json())
                await anyio.sleep(0.02)

        async with http.get(LAG_PATH) as got:
            first_lag = await got.json()
        done = anyio.Event()
        async with anyio.create_task_group() as load:
            load.start_soon(sample, done)
            async with anyio.create_task_group() as clips:
                for index in range(CLIPS):
                    clips.start_soon(clip, index)
            done.set()
        async with http.get("/stats") as got:
            final_stats = await got.json()
        async with http.get(LAG_PATH) as got:
            final_lag = await got.json()

    truth = fake.stats
    # Every clip was submitted once, answered 200, and final as the simulator says.
    assert len(answers) == CLIPS
    assert truth.task_count == CLIPS
    assert truth.duplicate_submissions == 0
    for task_id, answer in answers.items():
        record = fake.task(task_id)
        assert answer["final"] is True
        assert f"TASK_STATUS_{answer['status']}" == record.final_status
        if answer["status"] == "SUCCEED":
            assert answer["video_url"].startswith(fake.url)
        else:
            assert answer["reason"] == record.reason
    assert {a["status"] for a in answers.values()} == {"SUCCEED", "FAILED"}  # 10% fail

    # While all 200 waits were pending, one poller served them.
    peak = max(samples, key=lambda s: s["requests"]["waiting"])
    assert peak["requests"]["waiting"] == CLIPS
    assert peak["client"]["outstanding"] == CLIPS
    assert all(s["client"]["pollers"] == 1 for s in samples)
    # ...and polled by the tasks' etas, not once per request per second: a first look,
    # a look when the eta runs out, a few more (an eta is whole seconds). Two a task on
    # an idle machine; with the CPU shared, a task's look may come before its end and
    # cost one more, within the schedule's bound of 6 (issue 21).
    assert max(truth.polls.values()) <= 6, truth.polls
    assert statistics.mean(truth.polls.values()) <= 3, truth.polls
    assert final_stats["client"]["polls"] == sum(truth.polls.values())

    # The event streams: progress while pending, then the same final state as GET.
    assert len(streams) == STREAMS
    for task_id, events in streams.items():
        names = [name for name, _ in events]
        assert names[-1] == "final"
        assert names.count("progress") >= 8  # 3 s at every=0.25
        assert set(names[:-1]) == {"progress"}
        assert events[-1][1] == answers[task_id]
        pending = [data for name, data in events if name == "progress"]
        assert all(data["status"] in ("QUEUED", "PROCESSING") for data in pending)
        # The eta counts down between polls (a poll may set it back up by under a second).
        etas = [data["eta"] for data in pending]
        assert 0 <= etas[-1] < etas[0] <= 4, etas
        assert sum(b < a for a, b in itertools.pairwise(etas)) >= len(etas) - 3, etas
    # Following a clip costs no poll of its own: those tasks were polled like the rest.
    assert max(truth.polls[task_id] for task_id in streams) <= 4

    # The event loop was not blocked: 19 wake-ups in 20 of the probe came within 50 ms
    # of their time, waits for a CPU left out (see LoopLag), and none was held for half
    # a second. One wake-up the kernel delayed on a shared 2-core machine is
    # noise; an app that blocks its loop while 200 requests wait does it again and again.
    before, after = first_lag, final_lag
    late, blocked = after["max_ms"], after["blocked_max_ms"]
    print(
        f"\n{app}: loop lag, worst since start: {late} ms ({blocked} ms blocked, "
        f"p95 {after['blocked_p95_ms']} ms)"
    )
    assert after["ticks"] - before["ticks"] > 100
    assert after["slow_ms"] == MAX_LAG_MS
    assert after["blocked_p95_ms"] < MAX_LAG_MS, (before, after)
    assert blocked < MAX_STALL_MS, (before, after)


def loc_of(body: dict[str, Any]) -> list[str]:
    """The ``loc`` of the one error in a 422 answer (FastAPI's shape, in both apps)."""
    (error,) = body["detail"]
    return list(error["loc"])


async def test_bad_requests_are_refused_before_anything_is_sent(app: str) -> None:
    async with (
        FakeNovita(task_duration=(30.0, 30.0)) as fake,
        serving(app, fake) as url,
        session(url) as http,
    ):

        async def post(body: Any) -> tuple[int, dict[str, Any]]:
            async with http.post("/clips", json=body) as got:
                return got.status, await got.json()

        status, body = await post({"prompt": "x" * 2001})
        assert status == 422
        assert loc_of(body) == ["body", "prompt"]
        assert "prompt" in body["detail"][0]["msg"]
        assert "2000" in body["detail"][0]["msg"]

        status, body = await post({"prompt": "a cat", "image_url": "ftp://example.com/a.png"})
        assert (status, loc_of(body)) == (422, ["body", "image_url"])
        status, body = await post({"prompt": "a cat", "enable_prompt_expansion": "yes"})
        assert (status, loc_of(body)) == (422, ["body", "enable_prompt_expansion"])
        status, body = await post({"prompt": "a cat", "colour": "red"})
        assert (status, loc_of(body)) == (422, ["body", "colour"])
        status, body = await post({"image_url": "https://example.com/a.png"})
        assert (status, loc_of(body)) == (422, ["body", "prompt"])
        assert fake.stats.requests["submit"] == 0  # none of them reached Novita

        for path in ("/clips/no-such-task", "/clips/no-such-task/events"):
            async with http.get(path) as got:
                assert got.status == 404
                assert (await got.json())["reason"] == "TASK_NOT_FOUND"

        for params in ({"timeout": "0"}, {"timeout": "301"}, {"timeout": "soon"}):
            async with http.get("/clips/some-task", params=params) as got:
                assert got.status == 422
                assert loc_of(await got.json()) == ["query", "timeout"]

        # A wait that ends before the clip answers its state so far, with final false.
        status, body = await post({"prompt": "a slow cat"})
        assert status == 202
        async with http.get(f"/clips/{body['task_id']}", params={"timeout": "0.5"}) as got:
            assert got.status == 200
            state = await got.json()
        assert state["final"] is False
        assert state["status"] in ("QUEUED", "PROCESSING")
        assert state["video_url"] is None
        assert 25 <= state["eta"] <= 30


async def test_a_caller_leaving_an_event_stream_lets_go_of_the_clip(app: str) -> None:
    async with (
        FakeNovita(task_duration=(30.0, 30.0)) as fake,
        serving(app, fake) as url,
        session(url) as http,
    ):

        async def stats() -> dict[str, Any]:
            async with http.get("/stats") as got:
                return await got.json()  # type: ignore[no-any-return]

        async with http.post("/clips", json={"prompt": "a slow cat"}) as posted:
            task_id = (await posted.json())["task_id"]
        async with http.get(f"/clips/{task_id}/events", params={"every": "0.2"}) as got:
            assert (await got.content.readline()).startswith(b"event: progress")
            now = await stats()
            assert now["requests"]["streams"] == 1
            assert now["client"]["outstanding"] == 1
            got.close()  # hang up mid-stream
        with anyio.fail_after(5):
            while (now := await stats())["requests"]["streams"]:
                await anyio.sleep(0.05)
        assert now["client"]["outstanding"] == 0  # the hold on the clip went with it
        # A stream polls no more than the poller would anyway: a first look, then the eta.
        assert fake.stats.polls[task_id] == 1


async def test_a_submit_of_unknown_outcome_is_never_retried(app: str) -> None:
    # Every submit creates its task, then the connection drops before the answer.
    chaos = Chaos(submit_drops_after=1.0)
    async with FakeNovita(chaos=chaos) as fake, serving(app, fake) as url, session(url) as http:
        async with http.post("/clips", json={"prompt": "a cat"}) as got:
            assert got.status == 502
            body = await got.json()
        assert body["task_may_exist"] is True
        assert "not retried" in body["detail"]
        assert "Retry-After" not in got.headers
        truth = fake.stats
        assert truth.requests["submit"] == 1
        assert len(truth.unanswered_tasks) == 1


async def test_an_account_novita_refuses_makes_the_service_unavailable(app: str) -> None:
    async with (
        FakeNovita() as fake,
        serving(app, fake, api_key="sk-not-the-simulators") as url,
        session(url) as http,
    ):
        async with http.post("/clips", json={"prompt": "a cat"}) as got:
            assert got.status == 503
            body = await got.json()
        assert body["reason"] == "INVALID_API_KEY"
        assert "unavailable" in body["detail"]
        assert fake.stats.requests["submit"] == 1  # a refusal is not retried


async def test_a_burst_is_answered_at_once_503_with_retry_after_or_202_once_sent(app: str) -> None:
    """Twelve ``POST /clips`` at once, against a client limited to one submit a second
    and an app that lets a submit wait 2.5 s for its turn.

    The turns within reach (0, 1 and 2 s) are taken; every other request is answered
    503 at once with ``Retry-After``, and none of theirs was sent. Every POST that left
    takes 3 s to be answered (longer than the app's wait), and is answered 202 all the
    same: a 503 after sending would make a caller's retry pay twice.
    """
    chaos = Chaos(submit_slow=1.0, slow_seconds=3.0)
    env = {"EXAMPLE_SUBMIT_RPM": "60", "CLIPS_MAX_SUBMIT_WAIT": "2.5"}
    async with (
        FakeNovita(chaos=chaos) as fake,
        serving(app, fake, env=env) as url,
        session(url) as http,
    ):
        answers: list[tuple[int, float, dict[str, Any], str | None]] = []

        async def post(index: int) -> None:
            began = anyio.current_time()
            async with http.post("/clips", json={"prompt": f"burst {index}"}) as got:
                body = await got.json()
                took = anyio.current_time() - began
                answers.append((got.status, took, body, got.headers.get("Retry-After")))

        async with anyio.create_task_group() as burst:
            for index in range(12):
                burst.start_soon(post, index)
        truth = fake.stats
    accepted = [answer for answer in answers if answer[0] == 202]
    refused = [answer for answer in answers if answer[0] == 503]
    assert len(accepted) + len(refused) == 12, answers
    assert 2 <= len(accepted) <= 4, answers
    # Nothing of a refused request was sent: one task per 202, no more.
    assert truth.task_count == len(accepted)
    assert {body["task_id"] for _, _, body, _ in accepted} == set(truth.tasks)
    for _, took, body, retry_after in refused:
        assert retry_after is not None
        assert int(retry_after) >= 1
        assert body["retry_after"] == int(retry_after)
        # At once, not after the 2.5 s (lenient: two busy processes share the CPU).
        assert took < 2.0, answers
    for _, took, _, _ in accepted:
        assert took >= 3.0  # the slow answer was awaited, past the app's 2.5 s
