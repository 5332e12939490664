"""The simulator's chaos knobs, over real HTTP with a plain aiohttp session.

Each knob is forced (rate 1.0) to show its behaviour and the ground truth it
leaves in the stats; then: knobs off change nothing, chaos changes at run time,
a seed replays the same misbehaviour, and the command line reaches every knob.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest

from novita_video.testing import Chaos, FakeNovita
from novita_video.testing.__main__ import _fake_from_args, build_parser, chaos_from_args
from novita_video.testing.__main__ import main as cli_main
from novita_video.testing._chaos import ODD_STATUSES
from novita_video.testing._tasks import PROCESSING, QUEUED, SUCCEED
from tests.testing.simulator_support import RESULT, SUBMIT, Answer, ManualClock, call
from tests.testing.simulator_support import serve as support_serve

pytestmark = pytest.mark.anyio

CLIP = Path(__file__).resolve().parents[2] / "novita_video" / "testing" / "assets" / "clip.mp4"
NO_TIMEOUT = aiohttp.ClientTimeout(total=10)


async def submit(http: aiohttp.ClientSession, prompt: str = "a cat surfing") -> Answer:
    return await call(http, "POST", SUBMIT, json={"prompt": prompt})


async def submit_ok(http: aiohttp.ClientSession, prompt: str = "a cat surfing") -> str:
    answer = await submit(http, prompt)
    assert answer.status == 200, answer.body
    task_id: str = answer.json()["task_id"]
    return task_id


async def result(http: aiohttp.ClientSession, task_id: str) -> Answer:
    return await call(http, "GET", RESULT, params={"task_id": task_id})


async def outcome(request: Awaitable[Answer]) -> int | str:
    """The status of an answer, or the name of the error when none came."""
    try:
        return (await request).status
    except aiohttp.ClientError as err:
        return type(err).__name__


@asynccontextmanager
async def serve(**knobs: Any) -> AsyncIterator[tuple[FakeNovita, aiohttp.ClientSession]]:
    knobs.setdefault("clock", ManualClock())
    async with support_serve(NO_TIMEOUT, **knobs) as served:
        yield served


def only_task(fake: FakeNovita) -> str:
    (task_id,) = fake.stats.tasks
    return task_id


# -- the config -------------------------------------------------------------------------


def test_chaos_is_off_by_default() -> None:
    chaos = Chaos()
    assert not chaos.request_faults
    assert chaos.revoke_key_after is None
    rates = [f.name for f in attrs.fields(Chaos) if f.default == 0.0 and f.name != "html_share"]
    assert all(getattr(chaos, name) == 0.0 for name in rates)
    assert Chaos(**chaos.to_dict()) == chaos
    assert json.loads(json.dumps(chaos.to_dict())) == chaos.to_dict()
    assert Chaos(server_error_statuses=[503]).server_error_statuses == (503,)


@pytest.mark.parametrize(
    ("knobs", "words"),
    [
        ({"submit_server_errors": 1.5}, "submit_server_errors"),
        ({"result_drops": -0.1}, "result_drops"),
        ({"submit_slow": float("nan")}, "submit_slow"),
        ({"stuck_tasks": True}, "stuck_tasks"),
        ({"expired_links": "often"}, "expired_links"),
        ({"submit_500_creates": 2}, "submit_500_creates"),
        ({"server_error_statuses": ()}, "server_error_statuses"),
        ({"server_error_statuses": (404,)}, "server_error_statuses"),
        ({"server_error_statuses": (True,)}, "server_error_statuses"),
        ({"slow_seconds": 0}, "slow_seconds"),
        ({"slow_seconds": float("inf")}, "slow_seconds"),
        ({"rate_limit_burst": 0}, "rate_limit_burst"),
        ({"rate_limit_retry_after": -1}, "rate_limit_retry_after"),
        ({"revoke_key_after": -1}, "revoke_key_after"),
        ({"revoke_key_after": 1.5}, "revoke_key_after"),
    ],
)
def test_bad_chaos_is_refused_clearly(knobs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Chaos(**knobs)


async def test_bad_chaos_on_the_simulator() -> None:
    with pytest.raises(ValueError, match="chaos"):
        FakeNovita(chaos={"submit_slow": 1.0})  # type: ignore[arg-type]
    fake = FakeNovita()
    with pytest.raises(ValueError, match="chaos"):
        fake.chaos = 0.5  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"unknown chaos knobs \['submit_slowly'\]"):
        fake.set_chaos(submit_slowly=1.0)
    with pytest.raises(ValueError, match="submit_slow"):
        fake.set_chaos(submit_slow=2.0)
    assert fake.chaos == Chaos()


# -- knobs off --------------------------------------------------------------------------


async def _scripted_run(chaos: Chaos | None) -> tuple[dict[str, Any], list[Any]]:
    """The same requests, one simulator; returns the stats and every answer body."""
    clock = ManualClock()
    bodies: list[Any] = []
    async with (
        serve(clock=clock, seed=7, chaos=chaos, task_duration=(1.0, 5.0)) as (fake, http),
        aiohttp.ClientSession() as storage,
    ):
        ids = [await submit_ok(http, f"p{i % 4}") for i in range(8)]
        for step in (0.5, 2.0, 10.0):
            clock.advance(step)
            for task_id in ids:
                bodies.append((await result(http, task_id)).json())
        url = bodies[-1]["videos"][0]["video_url"]
        bodies.append((await call(storage, "GET", url)).status)
        bodies.append((await call(http, "GET", RESULT, params={"task_id": "nope"})).status)
        stats = fake.stats
        assert stats.chaos == {}
        assert stats.unanswered_tasks == {}
        assert stats.stuck_tasks == frozenset()
        assert not stats.key_revoked
        assert stats.duplicates_of_answered == stats.duplicate_submissions == 4
        return stats.to_dict(), bodies


def _without_links(bodies: list[Any]) -> list[Any]:
    # Links carry the port and a per-instance secret: equal runs differ only there.
    for body in bodies:
        if isinstance(body, dict):
            for video in body["videos"]:
                url = video["video_url"]
                video["video_url"] = url[url.index("/storage/") :].split("&signature=")[0]
    return bodies


async def test_knobs_off_change_nothing() -> None:
    plain_stats, plain = await _scripted_run(None)
    off_stats, off = await _scripted_run(
        Chaos(html_share=1.0, slow_seconds=5, submit_500_creates=1)
    )
    assert off_stats == plain_stats
    assert _without_links(off) == _without_links(plain)


async def test_chaos_does_not_move_the_task_stream() -> None:
    # Chaos draws from its own stream: a seed gives the same task ids with it on.
    async def ids(chaos: Chaos) -> list[str]:
        async with serve(seed=5, chaos=chaos) as (fake, http):
            for i in range(5):
                await submit(http, f"p{i}")
            return list(fake.stats.tasks)

    assert await ids(Chaos()) == await ids(Chaos(unknown_statuses=1.0, stuck_tasks=0.5))


# -- submit: 5xx, drops, broken JSON, slowness -------------------------------------------


@pytest.mark.parametrize(
    ("status", "creates", "reason"),
    [
        (503, 0.5, "SERVICE_UNAVAILABLE"),
        (504, 0.5, "GATEWAY_TIMEOUT"),
        (502, 0.5, "BAD_GATEWAY"),
        (500, 1.0, "CREATE_TASK_FAILED"),
        (500, 0.0, "CREATE_TASK_FAILED"),
    ],
)
async def test_submit_server_errors_and_which_create_a_task(
    status: int, creates: float, reason: str
) -> None:
    chaos = Chaos(
        submit_server_errors=1.0, server_error_statuses=(status,), submit_500_creates=creates
    )
    async with serve(chaos=chaos) as (fake, http):
        answer = await submit(http)
        assert answer.status == status
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.reason == reason
        stats = fake.stats
        created = status == 502 or (status == 500 and creates == 1.0)
        assert stats.task_count == int(created)
        kind = f"server_error_{status}"
        assert stats.unanswered_tasks == ({only_task(fake): kind} if created else {})
        assert stats.chaos == {kind: {"submit": 1}}
        assert stats.errors == {reason: 1}
        assert stats.requests["submit"] == 1


async def test_submit_500_creates_half_the_time_by_default() -> None:
    chaos = Chaos(submit_server_errors=1.0, server_error_statuses=(500,))
    async with serve(chaos=chaos, seed=3) as (fake, http):
        for i in range(200):
            assert (await submit(http, f"p{i}")).status == 500
        stats = fake.stats
        assert 70 <= stats.task_count <= 130
        assert set(stats.unanswered_tasks) == set(stats.tasks)
        assert stats.chaos == {"server_error_500": {"submit": 200}}


async def test_html_proxy_pages_for_502_503_504_only() -> None:
    chaos = Chaos(submit_server_errors=1.0, result_server_errors=1.0, html_share=1.0)
    async with serve(chaos=chaos, seed=1) as (fake, http):
        seen: dict[int, Answer] = {}
        for i in range(40):
            answer = await submit(http, f"p{i}")
            seen[answer.status] = answer
        assert set(seen) == {500, 502, 503, 504}
        for status, title in [(502, "Bad Gateway"), (503, "Service"), (504, "Gateway Time")]:
            page = seen[status]
            assert page.headers["Content-Type"].startswith("text/html")
            assert f"<h1>{status} {title}".encode() in page.body
            with pytest.raises(ValueError, match="Expecting value"):
                page.json()
        assert seen[500].reason == "CREATE_TASK_FAILED"  # the API's own 500: JSON
        chaos_stats = fake.stats.chaos
        html = chaos_stats["html_page"]["submit"]
        assert html == 40 - chaos_stats["server_error_500"]["submit"]


async def test_submit_drop_before_creates_nothing() -> None:
    async with serve(chaos=Chaos(submit_drops_before=1.0)) as (fake, http):
        with pytest.raises(aiohttp.ClientConnectionError):
            await submit(http)
        fake.chaos = Chaos()
        await submit_ok(http)  # the session survives a dropped connection
        stats = fake.stats
        assert stats.task_count == 1
        assert stats.unanswered_tasks == {}
        assert stats.chaos == {"drop_before": {"submit": 1}}


async def test_submit_drop_after_leaves_a_task_unanswered() -> None:
    async with serve(chaos=Chaos(submit_drops_after=1.0)) as (fake, http):
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await submit(http)
        task_id = only_task(fake)
        assert fake.stats.unanswered_tasks == {task_id: "drop_after"}
        assert fake.stats.chaos == {"drop_after": {"submit": 1}}
        # The task is real: it can be polled, and it is billed.
        fake.chaos = Chaos()
        assert (await result(http, task_id)).status == 200


async def test_submit_faults_spare_the_handlers_own_errors() -> None:
    async with serve(chaos=Chaos(submit_drops_after=1.0), balance=0) as (fake, http):
        answer = await submit(http)  # 400 from the handler: nothing to spoil
        assert answer.reason == "BILLING_BALANCE_NOT_ENOUGH"
        assert fake.stats.chaos == {}


async def test_submit_malformed_json_on_200() -> None:
    async with serve(chaos=Chaos(submit_malformed=1.0), seed=2) as (fake, http):
        bodies = set()
        for i in range(12):
            answer = await submit(http, f"p{i}")
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("application/json")
            with pytest.raises(ValueError):  # noqa: PT011 (JSONDecodeError or empty)
                json.loads(answer.body)
            bodies.add(answer.body[:1])
        assert bodies == {b"{", b"", b"<"}  # cut, empty, HTML
        stats = fake.stats
        assert stats.task_count == 12
        assert set(stats.unanswered_tasks.values()) == {"malformed"}
        assert set(stats.unanswered_tasks) == set(stats.tasks)


async def test_slow_submit_delivered_late_is_answered() -> None:
    clock = ManualClock()
    chaos = Chaos(submit_slow=1.0, slow_seconds=90)
    async with serve(clock=clock, chaos=chaos) as (fake, http):
        start = clock.now()
        task_id = await submit_ok(http)
        assert clock.now() == start + 90  # the answer waited on the simulator clock
        assert fake.task(task_id).submitted_at == start  # created before the wait
        assert fake.stats.unanswered_tasks == {}
        assert fake.stats.chaos == {"slow": {"submit": 1}}


async def test_slow_submit_past_the_client_timeout_is_unanswered() -> None:
    # Real time: the client gives up after 0.2 s, long before the 30 s answer.
    chaos = Chaos(submit_slow=1.0, slow_seconds=30)
    async with serve(clock=None, chaos=chaos) as (fake, http):
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await call(
                http, "POST", SUBMIT, json={"prompt": "x"}, timeout=aiohttp.ClientTimeout(0.2)
            )
        assert fake.stats.unanswered_tasks == {only_task(fake): "slow"}
    # Closing did not wait for the sleeping answer: the hang-up cancelled it.
    assert time.monotonic() - began < 1.5


# -- 429 storms --------------------------------------------------------------------------


async def test_rate_limit_storm_with_and_without_retry_after() -> None:
    async with serve(chaos=Chaos(submit_rate_limits=1.0)) as (fake, http):
        answer = await submit(http)
        assert answer.status == 429
        assert answer.reason == "RATE_LIMIT_EXCEEDED"
        assert answer.headers["Retry-After"] == "1"
        fake.set_chaos(rate_limit_retry_after=None, result_rate_limits=1.0)
        assert "Retry-After" not in (await submit(http)).headers
        assert (await result(http, "any")).status == 429
        fake.set_chaos(rate_limit_retry_after=7)
        assert (await submit(http)).headers["Retry-After"] == "7"
        stats = fake.stats
        assert stats.task_count == 0
        assert stats.rate_limited["submit"] == 3
        assert stats.rate_limited["task_result"] == 1
        assert stats.chaos == {"rate_limit_storm": {"submit": 3, "task_result": 1}}


async def test_rate_limit_storms_come_in_bursts_per_endpoint() -> None:
    chaos = Chaos(submit_rate_limits=0.05, rate_limit_burst=4)
    async with serve(chaos=chaos, seed=9) as (fake, http):
        limited = []
        for i in range(300):
            limited.append((await submit(http, f"p{i}")).status == 429)
            assert (await result(http, "missing")).status == 404  # its own endpoint: calm
        runs, run = [], 0
        for hit in limited:
            if hit:
                run += 1
            elif run:
                runs.append(run)
                run = 0
        assert len(runs) >= 3
        assert all(r % 4 == 0 for r in runs)  # storms of 4, maybe back to back
        assert fake.stats.chaos["rate_limit_storm"] == {"submit": sum(limited)}


# -- task-result faults ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (500, "GET_RESULT_FAILED"),
        (502, "BAD_GATEWAY"),
        (503, "SERVICE_UNAVAILABLE"),
        (504, "GATEWAY_TIMEOUT"),
    ],
)
async def test_result_server_errors(status: int, reason: str) -> None:
    async with serve() as (fake, http):
        task_id = await submit_ok(http)
        fake.chaos = Chaos(result_server_errors=1.0, server_error_statuses=(status,))
        answer = await result(http, task_id)
        assert answer.status == status
        assert answer.reason == reason
        # A 502 is a proxy losing the answer the API gave: the poll happened.
        assert fake.stats.polls == ({task_id: 1} if status == 502 else {})
        assert fake.stats.chaos == {f"server_error_{status}": {"task_result": 1}}
        assert fake.stats.unanswered_tasks == {}


async def test_result_drops_and_malformed_and_slow() -> None:
    clock = ManualClock()
    async with serve(clock=clock) as (fake, http):
        task_id = await submit_ok(http)
        fake.chaos = Chaos(result_drops=1.0)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await result(http, task_id)
        assert fake.stats.polls == {}  # dropped before answering
        # aiohttp's client itself retries a GET once when a reused connection drops.
        dropped = fake.stats.chaos["drop_before"]["task_result"]
        assert dropped in (1, 2)

        fake.chaos = Chaos(result_malformed=1.0)
        for _ in range(6):
            answer = await result(http, task_id)
            assert answer.status == 200
            with pytest.raises(ValueError):  # noqa: PT011
                answer.json()

        fake.chaos = Chaos(result_slow=1.0, slow_seconds=42)
        start = clock.now()
        assert (await result(http, task_id)).status == 200
        assert clock.now() == start + 42
        stats = fake.stats
        assert stats.chaos == {
            "drop_before": {"task_result": dropped},
            "malformed": {"task_result": 6},
            "slow": {"task_result": 1},
        }
        assert stats.unanswered_tasks == {}


async def test_unknown_statuses_on_unfinished_tasks_only() -> None:
    clock = ManualClock()
    chaos = Chaos(unknown_statuses=1.0)
    async with serve(clock=clock, chaos=chaos, seed=4, task_duration=(10, 10)) as (fake, http):
        task_id = await submit_ok(http)
        statuses = set()
        for _ in range(12):
            body = (await result(http, task_id)).json()
            statuses.add(body["task"]["status"])
            assert body["task"]["sub_status"]  # fields no client was told about
            assert "queue_position" in body["task"]
            assert "notices" in body
        assert statuses == set(ODD_STATUSES)
        clock.advance(10)
        body = (await result(http, task_id)).json()
        assert body["task"]["status"] == SUCCEED  # a final status is never hidden
        assert "sub_status" not in body["task"]
        assert fake.stats.chaos == {"unknown_status": {"task_result": 12}}


async def test_stuck_tasks_never_finish() -> None:
    clock = ManualClock()
    chaos = Chaos(stuck_tasks=1.0)
    async with serve(
        clock=clock, chaos=chaos, seed=8, task_duration=(10, 10), queue_fraction=0.5
    ) as (fake, http):
        ids = [await submit_ok(http, f"p{i}") for i in range(10)]
        assert (await result(http, ids[0])).json()["task"]["status"] == QUEUED
        fake.chaos = Chaos()  # turning chaos off does not unstick them...
        fresh = await submit_ok(http, "fresh")  # ...and new tasks are not stuck
        etas: set[object] = set()
        for task_id in ids:
            seen = []
            for step in (6.0, 100.0, 10_000.0):
                clock.advance(step)
                task = (await result(http, task_id)).json()["task"]
                seen.append(task)
            assert {t["status"] for t in seen} == {PROCESSING}
            assert len({t["progress_percent"] for t in seen}) == 1
            etas.update(t.get("eta", "absent") for t in seen)
        assert etas == {0, "absent"}
        assert (await result(http, fresh)).json()["task"]["status"] == SUCCEED
        stats = fake.stats
        assert stats.stuck_tasks == frozenset(ids)
        assert stats.chaos == {"stuck_task": {"submit": 10}}
        assert sorted(stats.to_dict()["stuck_tasks"]) == sorted(ids)


# -- storage -----------------------------------------------------------------------------


async def test_first_link_expired_then_fresh() -> None:
    chaos = Chaos(expired_links=1.0)
    async with (
        serve(chaos=chaos, task_duration=(0, 0)) as (fake, http),
        aiohttp.ClientSession() as storage,
    ):
        task_id = await submit_ok(http)
        first = (await result(http, task_id)).json()["videos"][0]
        assert first["video_url_ttl"] == "3600"  # the answer still promises an hour
        stale = await call(storage, "GET", first["video_url"])
        assert stale.status == 403
        assert b"Request has expired" in stale.body
        second = (await result(http, task_id)).json()["videos"][0]
        fresh = await call(storage, "GET", second["video_url"])
        assert fresh.status == 200
        assert fresh.body == CLIP.read_bytes()
        assert fake.stats.chaos == {"expired_link": {"task_result": 1}}


async def test_truncated_downloads() -> None:
    clip = CLIP.read_bytes()
    chaos = Chaos(truncated_downloads=1.0)
    async with (
        serve(chaos=chaos, task_duration=(0, 0), seed=6) as (fake, http),
        aiohttp.ClientSession() as storage,
    ):
        task_id = await submit_ok(http)
        url = (await result(http, task_id)).json()["videos"][0]["video_url"]
        for _ in range(3):
            async with storage.get(url) as response:
                assert response.status == 200
                assert response.content_length == len(clip)  # the whole clip is promised
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.read()
        head = await call(storage, "HEAD", url)  # no body, nothing to cut
        assert head.status == 200
        assert fake.stats.chaos == {"truncated_download": {"video": 3}}


# -- the key -----------------------------------------------------------------------------


async def test_key_revoked_after_k_tasks() -> None:
    async with serve(chaos=Chaos(revoke_key_after=2)) as (fake, http):
        first = await submit_ok(http, "a")
        before = fake.stats
        await submit_ok(http, "b")
        after = fake.stats
        assert not before.key_revoked
        assert after.key_revoked
        for answer in (await submit(http, "c"), await result(http, first)):
            assert answer.status == 403
            assert answer.reason == "INVALID_API_KEY"
        # After revocation no fault hides the 403.
        fake.chaos = Chaos(revoke_key_after=2, result_server_errors=1.0, submit_drops_before=1.0)
        assert (await result(http, first)).reason == "INVALID_API_KEY"
        assert (await submit(http)).reason == "INVALID_API_KEY"
        stats = fake.stats
        assert stats.task_count == 2
        assert stats.chaos == {"key_revoked": {"submit": 1}}
        assert stats.to_dict()["key_revoked"] is True
    async with serve(chaos=Chaos(revoke_key_after=0)) as (fake, http):
        assert (await submit(http)).reason == "INVALID_API_KEY"
    async with serve() as (fake, http):
        await submit_ok(http)
        fake.set_chaos(revoke_key_after=1)  # already reached: revoked at once
        assert (await submit(http)).reason == "INVALID_API_KEY"


# -- run time, seeds, ground truth -------------------------------------------------------


async def test_chaos_changes_at_run_time() -> None:
    chaos = Chaos(submit_server_errors=1.0, server_error_statuses=(503,))
    async with serve(chaos=chaos) as (fake, http):
        assert (await submit(http)).status == 503
        fake.chaos = Chaos()
        await submit_ok(http)
        now = fake.set_chaos(submit_drops_after=1.0)
        assert now == Chaos(submit_drops_after=1.0)
        assert fake.chaos is now
        assert await outcome(submit(http)) == "ServerDisconnectedError"
        fake.set_chaos(Chaos(), submit_rate_limits=1.0, rate_limit_burst=100)
        assert (await submit(http)).status == 429
        fake.chaos = Chaos()  # a storm in progress ends with its chaos
        await submit_ok(http)


async def _mixed_run(seed: int) -> tuple[list[int | str], dict[str, Any]]:
    chaos = Chaos(
        submit_drops_before=0.1,
        submit_rate_limits=0.1,
        submit_server_errors=0.15,
        submit_drops_after=0.1,
        submit_malformed=0.1,
        result_drops=0.1,
        result_server_errors=0.1,
        result_malformed=0.1,
        html_share=0.5,
        unknown_statuses=0.2,
        stuck_tasks=0.2,
        rate_limit_burst=2,
    )
    clock = ManualClock()
    seen: list[int | str] = []
    async with serve(clock=clock, chaos=chaos, seed=seed, task_duration=(1, 3)) as (fake, http):
        for i in range(40):
            seen.append(await outcome(submit(http, f"p{i}")))
        clock.advance(5)
        for task_id in list(fake.stats.tasks):
            answer = await outcome(result(http, task_id))
            seen.append(answer)
        return seen, fake.stats.to_dict(include_tasks=False)


async def test_a_seed_replays_the_same_chaos() -> None:
    first_seen, first_stats = await _mixed_run(seed=11)
    again_seen, again_stats = await _mixed_run(seed=11)
    assert first_seen == again_seen
    assert first_stats == again_stats
    other_seen, _ = await _mixed_run(seed=12)
    assert other_seen != first_seen
    # Every kind of answer shows up in a mixed run.
    assert {200, 429, "ServerDisconnectedError"} <= set(first_seen)
    assert {500, 502, 503, 504} & set(first_seen)
    kinds = set(first_stats["chaos"])
    assert {"drop_before", "drop_after", "malformed", "rate_limit_storm", "stuck_task"} <= kinds


async def test_ground_truth_for_resubmissions() -> None:
    async with serve() as (fake, http):
        await submit_ok(http, "answered")
        fake.chaos = Chaos(submit_drops_after=1.0)
        assert await outcome(submit(http, "lost")) == "ServerDisconnectedError"
        fake.chaos = Chaos()
        await submit_ok(http, "lost")  # excusable: the first outcome was unknown
        stats = fake.stats
        assert stats.duplicate_submissions == 1
        assert stats.duplicates_of_answered == 0
        await submit_ok(http, "answered")  # not excusable
        await submit_ok(http, "lost")  # the second "lost" was answered: not excusable
        stats = fake.stats
        assert stats.duplicate_submissions == 3
        assert stats.duplicates_of_answered == 2
        body = stats.to_dict(include_tasks=False)
        assert json.loads(json.dumps(body)) == body
        assert list(body["unanswered_tasks"].values()) == ["drop_after"]
        assert body["chaos"] == {"drop_after": {"submit": 1}}


async def test_chaos_over_http_for_another_process() -> None:
    async with serve() as (fake, http), aiohttp.ClientSession(fake.url) as anon:
        shown = await call(anon, "GET", "/_simulator/chaos")
        assert shown.json() == Chaos().to_dict()
        changed = await call(
            anon,
            "PUT",
            "/_simulator/chaos",
            json={"submit_server_errors": 1.0, "server_error_statuses": [503]},
        )
        assert changed.status == 200
        assert fake.chaos == Chaos(submit_server_errors=1.0, server_error_statuses=(503,))
        assert changed.json() == fake.chaos.to_dict()
        assert (await submit(http)).status == 503
        for bad in ({"submit_slow": 3}, {"nope": 1}, [1], "x"):
            refused = await call(anon, "PUT", "/_simulator/chaos", json=bad)
            assert refused.status == 400
            assert refused.reason == "INVALID_REQUEST_BODY"
        refused = await call(anon, "PUT", "/_simulator/chaos", data=b"{")
        assert refused.status == 400
        assert fake.chaos.submit_server_errors == 1.0  # a refused change changes nothing
        assert fake.stats.requests == {"submit": 1, "task_result": 0, "video": 0, "other": 0}


# -- command line ------------------------------------------------------------------------


def test_cli_flags_reach_the_chaos() -> None:
    parser = build_parser()
    assert chaos_from_args(parser.parse_args([])) == Chaos()
    args = parser.parse_args(
        [
            "--chaos-server-errors",
            "0.05",
            "--chaos-result-server-errors",
            "0.2",  # one endpoint's flag wins over the shorthand
            "--chaos-server-error-statuses",
            "502,503",
            "--chaos-html-share",
            "0.5",
            "--chaos-submit-drops-after",
            "0.1",
            "--chaos-slow",
            "0.01",
            "--chaos-slow-seconds",
            "90",
            "--chaos-rate-limit-burst",
            "5",
            "--chaos-rate-limit-retry-after",
            "none",
            "--chaos-revoke-key-after",
            "100",
            "--seed",
            "3",
        ]
    )
    expected = Chaos(
        submit_server_errors=0.05,
        result_server_errors=0.2,
        server_error_statuses=(502, 503),
        html_share=0.5,
        submit_drops_after=0.1,
        submit_slow=0.01,
        result_slow=0.01,
        slow_seconds=90.0,
        rate_limit_burst=5,
        rate_limit_retry_after=None,
        revoke_key_after=100,
    )
    assert chaos_from_args(args) == expected
    assert _fake_from_args(args).chaos == expected


def test_cli_has_a_flag_for_every_knob() -> None:
    parser = build_parser()
    samples = {"server_error_statuses": "504", "rate_limit_retry_after": "3"}
    for field in attrs.fields(Chaos):
        value = samples.get(field.name, "1")
        args = parser.parse_args([f"--chaos-{field.name.replace('_', '-')}", value])
        chaos = chaos_from_args(args)
        assert chaos != Chaos() or field.name == "rate_limit_burst", field.name
    assert chaos_from_args(parser.parse_args(["--chaos-rate-limit-burst", "2"])) == Chaos(
        rate_limit_burst=2
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--chaos-server-errors", "2"],
        ["--chaos-submit-slow", "often"],
        ["--chaos-server-error-statuses", "404"],
        ["--chaos-server-error-statuses", "5xx"],
        ["--chaos-rate-limit-retry-after", "soon"],
        ["--chaos-rate-limit-burst", "0"],
        ["--chaos-slow-seconds", "0"],
    ],
)
def test_cli_refuses_bad_chaos(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err
