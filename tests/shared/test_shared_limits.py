"""Workers of one account share its limits through a real Redis (clients in one process:
each has its own connection, worker id and limiters, as separate processes would).

The multi-process tests, with the command and the FastAPI example under uvicorn, are in
``test_workers.py``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import pytest
from aiohttp import web

from novita_video import AdaptiveRate, BackPressureError, Client, InvalidRequestError
from novita_video.testing import FakeNovita, RateLimit
from novita_video.webhooks import aiohttp_handler
from tests.shared.redis_support import RedisServer
from tests.support import serve_app

pytestmark = pytest.mark.anyio

MODEL = "minimax-video-01"


def shared_limiter(client: Client) -> Any:
    return client._submit_limiter_for(MODEL)


async def run_workers(
    fake: FakeNovita, *, workers: int, each: int, rpm: float, redis_url: str | None
) -> list[Client]:
    """``workers`` clients of one key, each with a batch of ``each`` prompts at once."""
    clients: list[Client] = []

    async def worker(number: int) -> None:
        client = Client(fake.api_key, base_url=fake.url, submit_rpm=rpm, redis_url=redis_url or "")
        clients.append(client)
        async with client:
            assert client.statistics().shared is (redis_url is not None)
            prompts = [f"worker {number} prompt {n}" for n in range(each)]
            async for outcome in client.generate(prompts):
                assert outcome.ok, outcome.error

    async with anyio.create_task_group() as group:
        for number in range(workers):
            group.start_soon(worker, number)
    return clients


@pytest.mark.slow
async def test_workers_sharing_redis_keep_together_under_the_account_limit(
    redis: RedisServer,
) -> None:
    # The account allows 5 submits a second; each of 3 workers is told so (what users do).
    limit = RateLimit(5, per=1.0)
    async with FakeNovita(task_duration=(0.2, 0.4), submit_limit=limit) as fake:
        started = anyio.current_time()
        clients = await run_workers(fake, workers=3, each=10, rpm=300, redis_url=redis.url)
        took = anyio.current_time() - started
        stats = fake.stats
    assert stats.task_count == 30
    assert stats.duplicate_submissions == 0
    assert stats.rate_limited.get("submit", 0) <= 1  # at most one, from network jitter
    # Evenly spaced for the account as a whole: 30 submits at 5 a second.
    assert 29 / 5 * 0.95 < took < 29 / 5 + 4
    assert len(clients) == 3
    # What Redis holds: namespaced by a hash of the key, never the key; every key expires.
    with redis.client() as peek:
        keys = [key.decode() for key in peek.keys("*")]
        assert keys, "nothing was stored"
        for key in keys:
            assert key.startswith("novita-video:")
            assert fake.api_key not in key
            assert 0 < peek.pttl(key) <= 600_000
            if peek.type(key) == b"hash":
                assert fake.api_key.encode() not in b"".join(
                    part for pair in peek.hgetall(key).items() for part in pair
                )


@pytest.mark.slow
async def test_the_same_workers_alone_draw_429s(redis: RedisServer) -> None:
    # The control of the test above: without Redis, each keeps to the account's limit on
    # its own, and together they go over it.
    limit = RateLimit(5, per=1.0)
    async with FakeNovita(task_duration=(0.2, 0.4), submit_limit=limit) as fake:
        await run_workers(fake, workers=3, each=10, rpm=300, redis_url=None)
        stats = fake.stats
    assert stats.task_count == 30
    assert stats.rate_limited.get("submit", 0) >= 3


async def test_one_workers_429_pauses_and_slows_every_worker(redis: RedisServer) -> None:
    async with FakeNovita(task_duration=(0.2, 0.4)) as fake:
        first = Client(fake.api_key, base_url=fake.url, submit_rpm=600, redis_url=redis.url)
        second = Client(fake.api_key, base_url=fake.url, submit_rpm=600, redis_url=redis.url)
        async with first, second:
            mine, theirs = shared_limiter(first), shared_limiter(second)
            ticket = await mine.acquire()
            mine.throttled(1.5, ticket)
            await anyio.sleep(0.1)  # the flush reaches Redis
            began = anyio.current_time()
            await theirs.acquire()
            waited = anyio.current_time() - began
            assert 1.2 < waited < 2.5  # the other worker waited out the pause...
            assert theirs.per_minute == pytest.approx(300)  # ...and the rate halved for both
            await mine.acquire()
            assert mine.per_minute == pytest.approx(300)


async def test_max_wait_counts_every_workers_turns_and_reserves_none(redis: RedisServer) -> None:
    # Two workers at 30 submits a minute in all (a turn every 2 s): the first takes the
    # turn now; the second, told to wait 0.5 s at most, is refused at once with the
    # shared schedule's estimate, reserving nothing: the first's next turn is unchanged.
    async with FakeNovita(task_duration=(0.2, 0.4)) as fake:
        first = Client(fake.api_key, base_url=fake.url, submit_rpm=30, redis_url=redis.url)
        second = Client(fake.api_key, base_url=fake.url, submit_rpm=30, redis_url=redis.url)
        async with first, second:
            assert second.statistics().shared
            await first.submit("first worker")
            began = anyio.current_time()
            with pytest.raises(BackPressureError) as refused:
                await second.submit("second worker", max_wait=0.5)
            assert anyio.current_time() - began < 0.5  # at once, not after max_wait
            assert 1.5 < refused.value.retry_after <= 2.1
            assert fake.stats.task_count == 1  # nothing was sent
            await first.submit("first again", max_wait=2.5)  # the slot was not taken
            assert anyio.current_time() - began < 2.5
        assert fake.stats.task_count == 2


async def test_the_rate_is_earned_back_by_every_workers_accepted_requests(
    redis: RedisServer,
) -> None:
    # Recovery after 4 accepted requests in all (no minute's wait, for the test): two
    # from each worker earn it back for both, which neither's own two would.
    adaptive = AdaptiveRate(recover_after=4, recover_interval=0)
    async with FakeNovita() as fake:
        workers = [
            Client(
                fake.api_key,
                base_url=fake.url,
                submit_rpm=600,
                redis_url=redis.url,
                adaptive_rate=adaptive,
            )
            for _ in range(2)
        ]
        async with workers[0], workers[1]:
            first, second = (shared_limiter(worker) for worker in workers)
            first.throttled(0.0, await first.acquire())
            await anyio.sleep(0.1)  # flushed
            await second.acquire()
            assert second.per_minute == pytest.approx(300)
            for limiter in (first, second, first, second):
                limiter.accepted()
            await anyio.sleep(1.5)  # accepted counts are flushed within a second
            await first.acquire()
            await second.acquire()
            assert first.per_minute == pytest.approx(375)
            assert second.per_minute == pytest.approx(375)


async def test_a_webhook_reaching_another_worker_ends_the_wait_at_once(
    redis: RedisServer,
) -> None:
    # Worker A submits and waits; Novita delivers the task's end to worker B (the load
    # balancer's pick). A hears of it through Redis, long before its fallback poll.
    async with FakeNovita(task_duration=(1.5, 1.5)) as fake:
        receiver = Client(fake.api_key, base_url=fake.url, redis_url=redis.url)
        async with receiver:
            app = web.Application()
            app.router.add_post("/hook", aiohttp_handler(receiver))
            async with serve_app(app) as hook_url:
                waiter = Client(
                    fake.api_key,
                    base_url=fake.url,
                    redis_url=redis.url,
                    webhook_url=hook_url + "/hook",
                )
                async with waiter:
                    task_id = await waiter.submit("a cat")
                    result = await waiter.wait(task_id, timeout=20)
                    noticed = fake.clock.now()
                    assert result.ok
                    assert receiver.statistics().webhooks == 1  # it got the event
                    assert waiter.statistics().webhooks == 1  # through Redis
        end = fake.task(task_id).finishes_at
        stats = fake.stats
    assert noticed - end < 1.0  # its fallback poll would have come 30 s later
    assert stats.polls[task_id] <= 2


async def test_redis_down_at_start_is_no_error_and_limits_go_local(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gone = f"unix://{tmp_path}/nobody.sock"
    caplog.set_level(logging.WARNING, logger="novita_video")
    async with FakeNovita(task_duration=(0.1, 0.2)) as fake:
        client = Client(fake.api_key, base_url=fake.url, submit_rpm=240, redis_url=gone)
        async with client:
            assert not client.statistics().shared
            outcomes = [o async for o in client.generate(["a", "b", "c"])]
            assert all(outcome.ok for outcome in outcomes)
            # Not knowing how many workers share the key, it takes a quarter of the rate.
            assert shared_limiter(client).per_minute == pytest.approx(240 / 4)
    warnings = [r for r in caplog.records if "Redis" in r.getMessage()]
    assert len(warnings) == 1
    assert "nobody.sock" in warnings[0].getMessage()


@pytest.mark.slow
async def test_redis_killed_mid_run_loses_nothing_and_is_rejoined(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="novita_video")
    async with FakeNovita(task_duration=(0.3, 0.6)) as fake:
        clients = [
            Client(fake.api_key, base_url=fake.url, submit_rpm=600, redis_url=redis.url)
            for _ in range(2)
        ]
        outcomes: list[Any] = []

        async def batch(client: Client, number: int) -> None:
            prompts = [f"worker {number} prompt {n}" for n in range(20)]
            async for outcome in client.generate(prompts):
                outcomes.append(outcome)

        async with clients[0], clients[1]:
            async with anyio.create_task_group() as group:
                for number, client in enumerate(clients):
                    group.start_soon(batch, client, number)
                await anyio.sleep(0.8)
                redis.kill()
                await anyio.sleep(1.5)
                assert not any(client.statistics().shared for client in clients)
                redis.start()
            # Every worker rejoins within a heartbeat or two.
            with anyio.fail_after(10):
                while not all(client.statistics().shared for client in clients):
                    await anyio.sleep(0.1)
        stats = fake.stats
    assert len(outcomes) == 40
    assert all(outcome.ok for outcome in outcomes)
    assert stats.task_count == 40
    assert stats.duplicate_submissions == 0
    messages = [record.getMessage() for record in caplog.records]
    assert sum("failed" in m and "Redis" in m for m in messages) == 2  # one per worker
    assert sum("limits are shared again" in m for m in messages) == 2
    assert all("1/2 of itself" in m for m in messages if "failed" in m)  # both knew of two


@pytest.mark.parametrize(
    "url",
    ["http://localhost:6379", "localhost:6379", "redis//x", "ftp://host", "redis://h:port/0"],
)
def test_a_redis_url_that_is_not_one_is_refused_before_anything(url: str) -> None:
    with pytest.raises(InvalidRequestError, match="redis_url") as caught:
        Client("sk", redis_url=url)
    assert caught.value.field == "redis_url"


def test_the_environment_names_the_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVITA_REDIS_URL", "http://wrong")
    with pytest.raises(InvalidRequestError, match="redis_url"):
        Client("sk")
    monkeypatch.setenv("NOVITA_REDIS_URL", "")
    assert Client("sk")._coordinator is None
    assert Client("sk", redis_url="")._coordinator is None


async def test_no_redis_no_sharing_and_nothing_new_runs() -> None:
    async with FakeNovita() as fake, Client(fake.api_key, base_url=fake.url, redis_url="") as c:
        stats = c.statistics()
        assert not stats.shared
        assert stats.submit_rpm == 20
        assert math.isfinite(stats.submit_rpm or 0)


async def test_a_poll_budget_is_shared_by_every_worker(redis: RedisServer) -> None:
    # 600 polls a minute for the account: 20 checks by two workers take about 2 s, not 1.
    async with FakeNovita(task_duration=(30.0, 30.0)) as fake:
        clients = [
            Client(fake.api_key, base_url=fake.url, poll_rpm=600, redis_url=redis.url)
            for _ in range(2)
        ]
        async with clients[0], clients[1]:
            task_id = await clients[0].submit("a cat")
            began = anyio.current_time()

            async def poll(client: Client) -> None:
                for _ in range(10):
                    await client.get_result(task_id)

            async with anyio.create_task_group() as group:
                for client in clients:
                    group.start_soon(poll, client)
            took = anyio.current_time() - began
    assert took > 19 * 0.1 * 0.95  # one schedule for both: 20 polls, 0.1 s apart
    assert took < 19 * 0.1 + 2


@pytest.mark.slow
async def test_a_stalled_redis_is_left_within_a_second_and_rejoined(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="novita_video")
    async with FakeNovita(task_duration=(0.2, 0.4)) as fake:
        client = Client(fake.api_key, base_url=fake.url, submit_rpm=600, redis_url=redis.url)
        async with client:
            assert client.statistics().shared
            redis.pause()  # connections stay open; nothing answers
            began = anyio.current_time()
            outcomes = [o async for o in client.generate([f"p{n}" for n in range(5)])]
            took = anyio.current_time() - began
            assert all(outcome.ok for outcome in outcomes)
            assert not client.statistics().shared
            redis.resume()
            with anyio.fail_after(10):
                while not client.statistics().shared:
                    await anyio.sleep(0.1)
        stats = fake.stats
    assert took < 10  # each Redis call gave up after OP_TIMEOUT; the batch went on alone
    assert stats.task_count == 5
    assert stats.duplicate_submissions == 0
    messages = [record.getMessage() for record in caplog.records]
    assert sum("TimeoutError" in m for m in messages) == 1
    assert sum("limits are shared again" in m for m in messages) == 1
