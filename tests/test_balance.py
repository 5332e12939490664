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
from tests.support import ManualClock, in_memory, scripted_server, simulated

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
@pytest.mark.virtual_time  # the readings, tasks and rechecks in a repeatable order
async def test_a_spend_cap_stops_the_batch_within_one_submit_per_slot(charge_at: str) -> None:
    cap, slots = usd("3"), 4
    knobs = {"starting_balance": "10", "charge_at": charge_at, "task_duration": (0.2, 0.5)}
    spend_cap = SpendCap(cap, recheck=0.1)
    prompts = [f"clip {n}" for n in range(40)]
    async with in_memory(**knobs) as (fake, client):
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
    cap.ended()
    await cap.admit("m")  # reading 2: the task ended, $0.30 fallen: the price (provisional)
    assert (cap.spent, cap.price, cap.charged_at) == (usd("0.30"), usd("0.30"), "end")
    cap.settle(False)  # refused: it made nothing (the next goes alone to confirm the price)
    await cap.admit("m")  # reading 3: the top-up is not room
    assert (cap.spent, cap.confirmed) == (usd("0.30"), False)
    cap.settle(True)
    cap.ended()
    await cap.admit("m")  # reading 4: 0.60, the second task's own $0.30 confirms the price
    assert (cap.spent, cap.price, cap.confirmed) == (usd("0.60"), usd("0.30"), True)
    cap.settle(True)
    with pytest.raises(SpendCapReachedError):
        await cap.admit("m")  # reading 5: 0.90 spent, one more would pass 1.00
    # The running task's charge showed already: charged on acceptance.
    assert cap.charged_at == "accept"
    # Counting the balance's fall since the start instead, the top-up would give $10.
    assert cap.spent == usd("0.90")
    # The same start with $0.50 of someone else's use before it stops earlier.
    reader = Reader("9.50", "9.20")
    other = bound(SpendCap("1", since=Balance(usd("10"))), reader)
    await other.admit("m")
    other.settle(True)
    other.ended()
    with pytest.raises(SpendCapReachedError, match=r"\$0.80 spent"):
        await other.admit("m")


class Account:
    """A balance the test moves by hand: every reading answers the latest amount."""

    def __init__(self, amount: str) -> None:
        self.amount = usd(amount)
        self.reads = 0

    async def __call__(self) -> Balance:
        await anyio.lowlevel.checkpoint()
        self.reads += 1
        return Balance(self.amount, self.amount)


async def let_run() -> None:
    for _ in range(50):
        await anyio.lowlevel.checkpoint()


async def ask(cap: SpendCap, number: int, admitted: list[int], stopped: list[int]) -> None:
    try:
        await cap.admit("m")
    except SpendCapReachedError:
        stopped.append(number)
    else:
        admitted.append(number)


async def test_charged_on_acceptance_is_when_a_charge_lands_never_the_price() -> None:
    # Charged on acceptance, $0.30. A fall after an acceptance could be anyone's (steady
    # other use covers every acceptance): the price waits for the first task to end, and
    # nothing more is sent until then. Once it is known, "on acceptance" is only when the
    # charges land, read from a reading taken while tasks run.
    account = Account("10")
    # recheck 60 s of real time: every step below is a settle or an end, never a recheck.
    cap = SpendCap("5", recheck=60)
    cap.bind(account, SystemClock())
    admitted: list[int] = []
    stopped: list[int] = []
    async with anyio.create_task_group() as group:
        for number in range(4):
            group.start_soon(ask, cap, number, admitted, stopped)
        await let_run()
        assert len(admitted) == 1  # the first task, alone: the others wait for its price
        account.amount -= usd("0.30")
        cap.settle(True)
        await let_run()
        assert (len(admitted), cap.price, cap.charged_at) == (1, None, None)
        cap.ended()  # no new fall: its charge showed while it ran, on acceptance
        await let_run()
        # Provisional: the second goes alone, and its own charge must confirm the price.
        assert (len(admitted), cap.price, cap.charged_at) == (2, usd("0.30"), "accept")
        assert not cap.confirmed
        account.amount -= usd("0.30")
        cap.settle(True)
        cap.ended()
        await let_run()
        assert (len(admitted), cap.confirmed) == (4, True)
    for _ in range(2):
        cap.settle(True)
    await cap.admit("m")  # a reading with two tasks running, none charged: at their end
    assert (cap.price, cap.charged_at, stopped) == (usd("0.30"), "end", [])
    account.amount -= usd("0.90")
    cap.settle(True)
    await cap.admit("m")  # all three running tasks charged: on acceptance after all
    assert (cap.price, cap.charged_at) == (usd("0.30"), "accept")


async def test_a_cent_spent_elsewhere_after_an_acceptance_is_not_taken_for_the_price() -> None:
    # Tasks charged when they end ($0.30); someone else spends one cent of the account
    # just after the first acceptance. The cap must not conclude "charged on acceptance,
    # $0.01 a task": a fall after an acceptance is never a price; it waits for an end.
    account = Account("10")
    cap = SpendCap("1.20", recheck=60)
    cap.bind(account, SystemClock())
    admitted: list[int] = []
    stopped: list[int] = []
    async with anyio.create_task_group() as group:
        for number in range(6):
            group.start_soon(ask, cap, number, admitted, stopped)
        await let_run()
        account.amount -= usd("0.01")  # other use, charged at once
        cap.settle(True)
        await let_run()
        assert (len(admitted), cap.price) == (1, None)  # a fall after an acceptance
        account.amount -= usd("0.30")  # the first task ended, and is charged
        cap.ended()
        await let_run()
        # $0.31 a task (the cent counts as theirs: dearer, never cheaper), provisional:
        # the second goes alone.
        assert (len(admitted), cap.price, cap.charged_at) == (2, usd("0.31"), "end")
        cap.settle(True)
        account.amount -= usd("0.30")  # the second ended: $0.30, within AGREE of $0.31
        cap.ended()
        await let_run()
        # Confirmed at the larger, $0.31: two counted, one more fits under $1.20, a
        # fourth does not.
        assert (len(admitted), cap.price, cap.confirmed) == (3, usd("0.31"), True)
        cap.settle(True)
        await let_run()
    assert len(stopped) == 3
    assert cap.estimate == usd("0.93")


async def test_a_charge_never_seen_is_not_a_price_of_0_the_cap_stops() -> None:
    clock = ManualClock()
    reader = Reader("10")
    cap = bound(SpendCap("5", recheck=5), reader, clock)
    await cap.admit("m")
    cap.settle(True)
    cap.ended()
    started = clock.now()
    with pytest.raises(SpendCapReachedError, match="cannot tell what a task costs"):
        await cap.admit("m")  # readings after its end show no charge: it stops, not "free"
    assert cap.price is None
    assert reader.reads >= QUIET_READINGS + 1
    assert clock.now() - started >= QUIET_READINGS * 5 - 5  # a minute, for late billing


async def test_a_charge_that_shows_late_still_gives_the_price() -> None:
    clock = ManualClock()
    reader = Reader(*["10"] * (QUIET_READINGS - 2), "9.70")
    cap = bound(SpendCap("5", recheck=5), reader, clock)
    await cap.admit("m")
    cap.settle(True)
    cap.ended()
    await cap.admit("m")  # some quiet readings, then its charge
    assert (cap.price, cap.charged_at) == (usd("0.30"), "end")


async def test_tasks_of_earlier_runs_count_until_charged_and_not_twice() -> None:
    # Two tasks of the killed run were still running (charged at their end) when the
    # folder's record was last written; one has been charged since.
    reader = Reader("9.70")
    cap = bound(SpendCap("1.20", since=Balance(usd("10")), price="0.30", outstanding=2), reader)
    admitted = 0
    for _ in range(2):
        await cap.admit("m")
        cap.settle(True)
        admitted += 1
    with pytest.raises(SpendCapReachedError, match=r"\$1.20 spent or committed"):
        await cap.admit("m")
    # $0.30 seen, one more outstanding: two tasks of this run fit ($0.60 + $0.60).
    assert admitted == 2
    assert SpendCap("1", price="0.30", outstanding=3).estimate == usd("0.90")


async def test_a_task_of_an_earlier_run_of_unknown_price_is_the_first_task() -> None:
    # A run stopped while its first task (charged at its end, price unknown) ran: the
    # rerun resumes that task and sends nothing until it has ended and shown its price.
    account = Account("10")
    cap = SpendCap(
        "1", since=Balance(usd("10")), outstanding=1, unresolved=1, learning_from="0", recheck=60
    )
    cap.bind(account, SystemClock())
    admitted: list[int] = []
    stopped: list[int] = []
    async with anyio.create_task_group() as group:
        for number in range(4):
            group.start_soon(ask, cap, number, admitted, stopped)
        await let_run()
        assert (admitted, cap.price, cap.learning_from) == ([], None, usd("0"))
        account.amount -= usd("0.30")  # it ended, and is charged
        cap.resumed(ended=True)
        await let_run()
        # $0.30 a task, provisional: the next task goes alone, and its charge must
        # confirm it before any other is sent.
        assert (len(admitted), cap.price, cap.confirmed) == (1, usd("0.30"), False)
        cap.settle(True)
        account.amount -= usd("0.30")
        cap.ended()
        await let_run()
        # Confirmed: the two and one more fit under $1.00, a fourth does not (yet).
        assert (len(admitted), cap.price, cap.confirmed) == (2, usd("0.30"), True)
        cap.resumed(ended=True)  # told twice (one was outstanding): nothing changes
        await let_run()
        assert len(admitted) == 2
        group.cancel_scope.cancel()
    assert cap.estimate == usd("0.90")


async def test_an_earlier_task_that_does_not_end_stops_a_cap_that_has_no_price() -> None:
    # Not followed to its end (its deadline passed): the price cannot be learned from it,
    # and a new first task beside it would be a second task of unknown price.
    cap = bound(SpendCap("1", outstanding=1, unresolved=1), Reader("10"))
    cap.resumed(ended=False)
    with pytest.raises(SpendCapReachedError, match="cannot tell what a task costs: a task"):
        await cap.admit("m")
    # One found never made frees its place: the first task goes.
    freed = bound(SpendCap("1", outstanding=1, unresolved=1), Reader("10"))
    freed.resumed(ended=False, made=False)
    await freed.admit("m")
    # One never resolved (a submit in doubt, which no run follows): the tasks' deadline.
    clock = ManualClock()
    waited = bound(SpendCap("1", outstanding=1, unresolved=1, resolve_within=600), Reader("10"))
    waited.bind(Reader("10"), clock)
    started = clock.now()
    with pytest.raises(SpendCapReachedError, match=r"cannot tell what a task costs: 1 task"):
        await waited.admit("m")
    assert 600 <= clock.now() - started <= 610


async def test_the_price_never_falls_and_rises_with_falls_it_does_not_explain() -> None:
    account = Account("10")
    cap = SpendCap("5", recheck=60)
    cap.bind(account, SystemClock())
    await cap.admit("m")
    cap.settle(True)
    account.amount -= usd("0.30")  # charged when it ended
    cap.ended()
    await cap.admit("m")  # the second, alone: its own charge must confirm the price
    cap.settle(True)
    assert (cap.price, cap.charged_at, cap.confirmed) == (usd("0.30"), "end", False)
    account.amount -= usd("0.30")
    cap.ended()
    await cap.admit("m")
    cap.settle(True)
    assert cap.confirmed
    cap.ended()  # the third ended, its charge not shown yet: the price is not $0.20
    await cap.admit("m")
    cap.settle(True)
    assert cap.price == usd("0.30")
    # $3.20 fallen for four tasks, more than $0.30 each explains: $0.80 a task, then.
    account.amount -= usd("2.60")
    await cap.admit("m")
    assert cap.price == usd("0.80")


def test_a_price_of_0_is_not_known() -> None:
    assert SpendCap("1", price="0").price is None


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


async def test_a_price_from_the_first_task_is_confirmed_by_the_next_sent_alone() -> None:
    # A top-up of $0.40 lands with the first task's $0.43 charge: the first fall is
    # $0.03. Taken for the price, it let a whole batch out. The next task goes alone;
    # its own $0.43 disagrees, so the price is the larger and the next goes alone too;
    # the third agrees, and only then does the batch go on, at $0.43.
    account = Account("10")
    cap = SpendCap("5", recheck=60)  # every step below is a settle or an end
    cap.bind(account, SystemClock())
    admitted: list[int] = []
    stopped: list[int] = []
    async with anyio.create_task_group() as group:
        for number in range(6):
            group.start_soon(ask, cap, number, admitted, stopped)
        await let_run()
        assert len(admitted) == 1
        for fall, confirmed, sent in (("0.03", False, 2), ("0.43", False, 3), ("0.43", True, 6)):
            cap.settle(True)
            account.amount -= usd(fall)
            cap.ended()
            await let_run()
            assert (len(admitted), cap.confirmed) == (sent, confirmed), fall
        assert cap.price == usd("0.43")
    assert stopped == []


async def test_a_first_fall_the_next_task_does_not_show_again_stops_the_cap() -> None:
    # The first fall ($0.30) was someone else's; the next task, sent alone, ends and no
    # charge of it shows: the cap cannot tell what a task costs, and stops (it sent the
    # rest of the batch at $0.30).
    reader = Reader("10", "9.70")
    cap = bound(SpendCap("5"), reader)
    await cap.admit("m")
    cap.settle(True)
    cap.ended()
    await cap.admit("m")  # $0.30, provisional: this one goes alone
    cap.settle(True)
    cap.ended()
    with pytest.raises(SpendCapReachedError, match="was not seen again"):
        await cap.admit("m")
    assert cap.price == usd("0.30")


async def test_a_task_of_an_earlier_run_told_twice_resolves_once() -> None:
    # The run may follow one task twice (its prompt's resume, and the ledger's tasks of
    # the model, for prompts edited since): told twice, it must not count for the other
    # first task, still running. The cap waits for that one until the tasks' deadline.
    cap = SpendCap(
        "1", outstanding=2, unresolved=2, learning_from="0", resolve_within=60, recheck=5
    )
    clock = ManualClock()
    cap.bind(Account("10"), clock)
    cap.resumed(ended=True, task="t1")
    cap.resumed(ended=True, task="t1")
    with pytest.raises(SpendCapReachedError, match=r"1 task\(s\) of an earlier run"):
        await cap.admit("m")
    assert clock.now() >= 60
