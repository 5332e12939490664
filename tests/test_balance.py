"""The balance in dollars, the simulated account, and the spend cap (issue 22).

Over HTTP against the simulator: ``Client.balance()``, an empty balance refused with
``BILLING_BALANCE_NOT_ENOUGH``, each way a task may be charged, and a batch that a
:class:`SpendCap` stops within one submit per concurrency slot of its cap. The cap's
arithmetic (a top-up gives no room, other use of the account stops it earlier, the first
task's price learned alone, a model that costs nothing, a balance that cannot be read)
is driven by a scripted reader.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp
import anyio
import pytest

from novita_video import (
    Balance,
    BatchAbortedError,
    Client,
    InsufficientBalanceError,
    ProtocolError,
    ServerError,
    SpendCap,
    SpendCapReachedError,
    Submission,
    SystemClock,
    VideoRequest,
)
from novita_video._balance import QUIET_READINGS, dollars, parse_balance
from novita_video.testing._account import PRICES
from tests.support import ManualClock, scripted_server, simulated

pytestmark = pytest.mark.anyio

BALANCE = "/openapi/v1/billing/balance/detail"
HAILUO = "hailuo-2.3-t2v"
PRICE = Decimal(PRICES[HAILUO]) / 10000  # $0.28 a task in the simulator


def usd(text: str) -> Decimal:
    return Decimal(text)


# The balance.


async def test_the_balance_in_dollars_falls_by_each_accepted_task() -> None:
    async with simulated(starting_balance="12.5") as (fake, client):
        first = await client.balance()
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with (
            aiohttp.ClientSession(fake.url, headers=headers) as http,
            http.get(BALANCE) as answer,
        ):
            wire = await answer.json()
        await client.submit(VideoRequest("a fox"))
        second = await client.balance()
    assert first == Balance(usd("12.5"), usd("12.5"), usd("0"), usd("0"), usd("0"))
    assert wire == {
        "availableBalance": "125000",
        "cashBalance": "125000",
        "creditLimit": "0",
        "pendingCharges": "0",
        "outstandingInvoices": "0",
    }
    assert second.available == usd("12.5") - Decimal(PRICES["minimax-video-01"]) / 10000
    assert fake.spent() == usd("0.43")


@pytest.mark.parametrize(
    ("body", "available", "cash", "pending"),
    [
        (
            {
                "availableBalance": "1000000",
                "cashBalance": "800000",
                "creditLimit": "200000",
                "pendingCharges": "0",
                "outstandingInvoices": "0",
            },
            "100",
            "80",
            "0",
        ),
        ({"availableBalance": "25000", "cashBalance": "25000"}, "2.5", "2.5", "0"),
        ({"availableBalance": 25000, "pendingCharges": 5000}, "2.5", "0", "0.5"),
        ({"availableBalance": "12.5"}, "0.00125", "0", "0"),
        ({"data": {"availableBalance": "10000"}}, "1", "0", "0"),
        ({"availableBalance": "-5000", "currency": "USD", "extra": {}}, "-0.5", "0", "0"),
    ],
    ids=["documented", "no-pending", "numbers", "fraction", "wrapped", "debt-extra-keys"],
)
async def test_the_balance_is_read_leniently(
    body: dict[str, Any], available: str, cash: str, pending: str
) -> None:
    async with scripted_server() as server:
        server.script(BALANCE, ("json", 200, body))
        async with Client("sk-test", base_url=server.url) as client:
            balance = await client.balance()
    assert (balance.available, balance.cash, balance.pending) == (
        usd(available),
        usd(cash),
        usd(pending),
    )


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"availableBalance": "lots"}', b"[]", b'{"availableBalance": true}', b"<html>"],
)
def test_a_balance_that_is_not_one_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="balance"):
        parse_balance(body)


def test_dollars_are_shown_to_the_cent_or_finer() -> None:
    assert [dollars(usd(x)) for x in ("12", "0.5", "0.0035", "-1.25", "1000000")] == [
        "$12.00",
        "$0.50",
        "$0.0035",
        "-$1.25",
        "$1000000.00",
    ]


async def test_an_empty_balance_answers_billing_balance_not_enough() -> None:
    async with simulated(starting_balance="1") as (fake, client):
        await client.submit("a fox")
        await client.submit("a cat")
        with pytest.raises(InsufficientBalanceError, match="BILLING_BALANCE_NOT_ENOUGH"):
            await client.submit("a dog")
        left = await client.balance()
    assert fake.stats.task_count == 2
    assert left.available == usd("0.14")


@pytest.mark.parametrize(
    ("charge_at", "during", "pending", "after"),
    [
        ("submit", "9.72", "0", "9.72"),
        ("end", "10", "0", "9.72"),
        ("end-pending", "9.72", "0.28", "9.72"),
    ],
)
async def test_when_a_task_is_charged_is_a_knob(
    charge_at: str, during: str, pending: str, after: str
) -> None:
    clock = ManualClock()
    knobs = {"starting_balance": "10", "charge_at": charge_at, "task_duration": (60, 60)}
    async with simulated(clock=clock, **knobs) as (_, client):
        from novita_video import CatalogRequest

        await client.submit(CatalogRequest(HAILUO, {"prompt": "a fox"}))
        running = await client.balance()
        clock.advance(61)
        ended = await client.balance()
    assert (running.available, running.pending) == (usd(during), usd(pending))
    assert (ended.available, ended.pending, ended.cash) == (usd(after), 0, usd("9.72"))


# The spend cap over HTTP.


@pytest.mark.parametrize("charge_at", ["submit", "end", "end-pending"])
async def test_a_spend_cap_stops_the_batch_within_one_submit_per_slot(charge_at: str) -> None:
    cap, slots = usd("3"), 4
    knobs = {"starting_balance": "10", "charge_at": charge_at, "task_duration": (0.2, 0.5)}
    spend_cap = SpendCap(cap, recheck=0.1)
    prompts = [f"clip {n}" for n in range(40)]
    async with simulated(**knobs) as (fake, client):
        outcomes = [
            o
            async for o in client.generate(
                prompts, model=HAILUO, concurrency=slots, spend_cap=spend_cap
            )
        ]
        await anyio.sleep(0.6)  # every task ended: charged in every mode
        spent = fake.spent()
        reads = fake.stats.requests["balance"]
    made = [o for o in outcomes if o.ok]
    assert spent == len(made) * PRICE == fake.stats.task_count * PRICE
    assert cap - slots * PRICE <= spent <= cap + slots * PRICE
    assert spent <= cap  # at the price it observed, it did not pass the cap at all
    unsent = [o for o in outcomes if not o.ok]
    assert len(unsent) == len(prompts) - len(made)
    assert all(o.submission is Submission.NOT_SENT for o in unsent)
    stopped = [o.error for o in unsent]
    # The cap's own error for the submits it stopped, the batch's for the ones it never read.
    assert any(isinstance(error, SpendCapReachedError) for error in stopped)
    assert all(
        isinstance(error, SpendCapReachedError)
        or (isinstance(error, BatchAbortedError) and isinstance(error.cause, SpendCapReachedError))
        for error in stopped
    )
    # The price it observed: its readings may have held a charge or two before the task
    # that made it answered (never fewer), so at most a little over the real one.
    assert spend_cap.price is not None
    assert PRICE <= spend_cap.price <= PRICE * Decimal("1.5")
    assert spend_cap.charged_at == ("end" if charge_at == "end" else "accept")
    assert spend_cap.reached is not None
    # The balance is read before each submit (some readings are shared), no more.
    assert reads <= len(made) + 2 * slots + 10


async def test_a_cap_already_spent_sends_nothing() -> None:
    earlier = Balance(usd("20"))
    async with simulated(starting_balance="10") as (fake, client):
        # Another run (or other use of the account) spent $10 since `earlier`.
        outcomes = [
            o async for o in client.generate(["a", "b"], spend_cap=SpendCap("5", since=earlier))
        ]
    assert fake.stats.task_count == 0
    assert all(o.submission is Submission.NOT_SENT for o in outcomes)
    first = min(outcomes, key=lambda o: o.index).error
    assert isinstance(first, SpendCapReachedError | BatchAbortedError)
    assert "the spend cap of $5.00 is reached: $10.00 spent" in str(first)


# The cap's arithmetic, on a scripted reader.


class Reader:
    """Balances handed out one reading at a time (the last one repeats)."""

    def __init__(self, *amounts: str) -> None:
        self.amounts = [usd(amount) for amount in amounts]
        self.reads = 0
        self.fail: Exception | None = None

    async def __call__(self) -> Balance:
        await anyio.lowlevel.checkpoint()
        if self.fail is not None:
            raise self.fail
        amount = self.amounts[min(self.reads, len(self.amounts) - 1)]
        self.reads += 1
        return Balance(amount, amount)


def bound(cap: SpendCap, reader: Reader, clock: Any = None) -> SpendCap:
    cap.bind(reader, clock or ManualClock())
    return cap


async def test_a_top_up_gives_no_room_and_other_use_counts() -> None:
    # Readings: 10, our task's 0.30, a top-up of 10, then two more of our tasks.
    reader = Reader("10", "9.70", "19.70", "19.40", "19.10")
    cap = bound(SpendCap("1"), reader)
    await cap.admit("m")
    cap.settle(True)
    await cap.admit("m")  # reading 2: the price is 0.30
    assert (cap.spent, cap.price, cap.charged_at) == (usd("0.30"), usd("0.30"), "accept")
    cap.settle(False)  # refused: it made nothing
    await cap.admit("m")  # reading 3: the top-up is not room
    assert cap.spent == usd("0.30")
    cap.settle(True)
    await cap.admit("m")  # reading 4: 0.60
    cap.settle(True)
    with pytest.raises(SpendCapReachedError):
        await cap.admit("m")  # reading 5: 0.90 spent, one more would pass 1.00
    # Counting the balance's fall since the start instead, the top-up would give $10.
    assert cap.spent == usd("0.90")
    # The same start with $0.50 of someone else's use before it stops earlier.
    reader = Reader("9.50", "9.20")
    other = bound(SpendCap("1", since=Balance(usd("10"))), reader)
    await other.admit("m")
    other.settle(True)
    with pytest.raises(SpendCapReachedError, match=r"\$0.80 spent"):
        await other.admit("m")


async def test_the_first_price_is_learned_alone_then_the_slots_fill() -> None:
    reader = Reader("10", "10", "9.70")
    cap = bound(SpendCap("5", recheck=60), reader, SystemClock())
    admitted: list[int] = []

    async def submit(number: int) -> None:
        await cap.admit("m")
        admitted.append(number)

    async with anyio.create_task_group() as group:
        for number in range(3):
            group.start_soon(submit, number)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert len(admitted) == 1  # the others wait for its price (not 60 s: a settle)
        reader.amounts = [*reader.amounts[: reader.reads], usd("9.70")]
        cap.settle(True)
    assert len(admitted) == 3
    assert cap.price == usd("0.30")


async def test_a_model_that_costs_nothing_is_not_waited_for_forever() -> None:
    reader = Reader("10")
    cap = bound(SpendCap("5", recheck=0.01), reader, SystemClock())
    await cap.admit("m")
    cap.settle(True)
    cap.ended()
    with anyio.fail_after(5):
        await cap.admit("m")  # a few readings after its end showed no charge
    assert cap.price == 0
    assert reader.reads >= QUIET_READINGS + 1


async def test_a_balance_that_cannot_be_read_stops_the_batch() -> None:
    reader = Reader("10")
    reader.fail = ServerError("balance failed with HTTP 503", 503)
    cap = bound(SpendCap("5"), reader)
    with pytest.raises(SpendCapReachedError, match="cannot read the balance") as raised:
        await cap.admit("m")
    assert isinstance(raised.value.__cause__, ServerError)
    assert cap.reached is raised.value


def test_a_cap_is_an_amount_of_dollars() -> None:
    from novita_video import InvalidRequestError

    assert SpendCap("$2.50").max_spend == usd("2.5")
    for wrong in ("-1", "lots", float("nan"), True):
        with pytest.raises(InvalidRequestError, match="max_spend"):
            SpendCap(wrong)  # type: ignore[arg-type]
