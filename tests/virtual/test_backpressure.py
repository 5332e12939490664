"""``submit(..., max_wait=...)``: back-pressure from the rate limiter, on virtual time.

A submit told how long it may wait for its turn is refused at once when the limiter
says the turn is further off, with the limiter's estimate, and nothing is sent; one
queued when a 429's pause lands is refused by its deadline, not held for the pause.
"""

from __future__ import annotations

import anyio
import pytest

from novita_video import BackPressureError, Client, InvalidRequestError, RateLimitError
from novita_video.testing import FakeNovita, MemoryTransport, RateLimit

pytestmark = pytest.mark.anyio

#: The client's spacing at 20 submits a minute (its 2 % margin included).
INTERVAL = 60 / 20 * 1.02


def posts(transport: MemoryTransport) -> int:
    return sum(method == "POST" for method, _ in transport.sent)


async def test_a_turn_further_off_than_max_wait_is_refused_at_once_and_nothing_sent() -> None:
    fake = FakeNovita()
    transport = MemoryTransport(fake)
    async with Client(transport=transport) as client:  # 20 submits a minute
        await client.submit("first")
        started = anyio.current_time()
        with pytest.raises(BackPressureError) as refused:
            await client.submit("second", max_wait=1.0)
        assert anyio.current_time() == started  # refused at once, not after 1 s
        assert refused.value.retry_after == pytest.approx(INTERVAL, abs=0.01)
        assert posts(transport) == 1
        assert "nothing was sent" in str(refused.value)
        # Told it may wait long enough, the same submit waits for its turn.
        await client.submit("second", max_wait=INTERVAL + 0.1)
        assert anyio.current_time() - started == pytest.approx(INTERVAL, abs=0.01)
    assert fake.stats.task_count == 2


async def test_a_burst_takes_the_turns_within_reach_and_is_told_when_the_next_is() -> None:
    fake = FakeNovita()
    transport = MemoryTransport(fake)
    accepted: list[tuple[float, str]] = []
    refused: list[tuple[float, float]] = []
    async with Client(transport=transport) as client:
        start = anyio.current_time()

        async def one(number: int) -> None:
            try:
                task_id = await client.submit(f"clip {number}", max_wait=4.0)
            except BackPressureError as error:
                refused.append((anyio.current_time() - start, error.retry_after))
            else:
                accepted.append((anyio.current_time() - start, task_id))

        async with anyio.create_task_group() as burst:
            for number in range(10):
                burst.start_soon(one, number)
    # The turns at 0 s and 3.06 s are within 4 s; the eight others are told at once
    # that the next free turn is two intervals away, and nothing of theirs was sent.
    assert [round(at, 2) for at, _ in accepted] == [0.0, round(INTERVAL, 2)]
    assert len(refused) == 8
    assert all(at == 0.0 for at, _ in refused)
    assert all(after == pytest.approx(2 * INTERVAL, abs=0.01) for _, after in refused)
    assert posts(transport) == 2
    assert fake.stats.task_count == 2


async def test_a_429_pause_landing_on_queued_submits_ends_them_by_their_deadline() -> None:
    # The account allows one submit a minute; the client thinks 60. The second draws a
    # 429 (Retry-After ~59 s) and the limiter pauses. A submit queued behind one that
    # now sleeps out the pause (holding the queue) is refused when its 5 s are up, and
    # one told to wait 5 s whose own retry falls in the pause is refused too.
    fake = FakeNovita(submit_limit=RateLimit(1, per=60))
    transport = MemoryTransport(fake)
    ended: dict[str, tuple[float, object]] = {}
    async with Client(transport=transport, submit_rpm=60) as client:
        start = anyio.current_time()

        async def one(name: str, max_wait: float | None) -> None:
            await anyio.sleep({"a": 0, "b": 0.001, "f": 0.002, "e": 0.003}[name])
            try:
                result: object = await client.submit(f"clip {name}", max_wait=max_wait)
            except (BackPressureError, RateLimitError) as error:
                result = error
            ended[name] = (anyio.current_time() - start, result)

        async with anyio.create_task_group() as group:
            group.start_soon(one, "a", None)
            group.start_soon(one, "b", 5.0)
            group.start_soon(one, "f", None)
            group.start_soon(one, "e", 5.0)
    at_b, b = ended["b"]
    at_e, e = ended["e"]
    assert isinstance(b, BackPressureError)
    assert b.retry_after > 50  # its retry falls in the pause: refused, not held
    assert at_b < 5.01
    assert isinstance(e, BackPressureError)
    assert at_e == pytest.approx(5.003, abs=0.01)  # its deadline, not the pause's end
    assert e.retry_after > 50
    # a and f were not bounded: f waited out the pause and went.
    assert isinstance(ended["a"][1], str)
    assert isinstance(ended["f"][1], str)
    assert ended["f"][0] > 55
    assert fake.stats.task_count == 2


@pytest.mark.parametrize("max_wait", [-1, float("nan"), float("inf"), "1"])
async def test_max_wait_is_checked_before_anything(max_wait: object) -> None:
    async with Client(transport=MemoryTransport(FakeNovita())) as client:
        with pytest.raises(InvalidRequestError) as raised:
            await client.submit("a cat", max_wait=max_wait)  # type: ignore[arg-type]
    assert raised.value.field == "max_wait"
