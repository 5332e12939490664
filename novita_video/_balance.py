"""The account's balance in dollars, and a spend cap that stops a batch before it costs more.

``GET /openapi/v1/billing/balance/detail`` answers five strings in 1/10000 US dollar
(``"10000"`` is $1.00): ``availableBalance``, ``cashBalance``, ``creditLimit``,
``pendingCharges`` and ``outstandingInvoices``. :func:`parse_balance` reads them, leniently
(numbers as well as strings, a missing one as 0, except ``availableBalance``), into a
:class:`Balance` of :class:`~decimal.Decimal` dollars. Prices are not in the API: what a
run cost is read from the balance, before and after, and is account-wide (other use of
the same account counts too).

A :class:`SpendCap` stops a batch's submits once the balance has fallen by ``max_spend``.
It reads the balance before each submit (concurrent submits share one reading), so at
most the submits already in flight, one per concurrency slot, pass the cap; a submit it
admits is reserved at the price until its answer comes. Whether Novita charges a task
when it is accepted or when it ends is not documented (``pendingCharges`` "currently
defaults to 0"), and neither is a price, so the cap learns both from its own first task:
the price is learned only from tasks that have **ended** (a charge is assumed to show by
then): the fall since just before the first was sent, divided by the tasks that ended, so
other use of the account (or a charge of a task still running) only makes it dearer. Until
then nothing more is sent, nor while a task of an earlier run of unknown price is still
running (:meth:`SpendCap.resumed` says when it ends). A price so learned is provisional
(a top-up beside the first charge makes it look cheap): the next task goes alone too, and
its own fall must show the same price, within ``AGREE`` (the larger is kept; one that
disagrees sends the next alone again; none at all stops the cap). "Charged on acceptance"
is only ever *when* a charge lands, read from readings once the price is known, never the
price. The price only rises (a fall more than the tasks at the price explain raises it).
A price never seen is not 0: after ``QUIET_READINGS`` readings with every task ended and no
charge, the cap stops.

What it counts is the larger of two sums: what it saw spent plus its tasks not yet charged
(by when it takes charges to land) at the price; and what was spent before it started plus
every task it let through and every ``outstanding`` task of earlier runs at the price,
whatever the balance shows. The first makes other use of the account count; the second
makes a charge that lands later than assumed unable to carry the spend past the cap. What
it saw spent only grows (a top-up is not room to spend), so other use of the account makes
it stop earlier, never later.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

import anyio
import attrs

from ._clock import Clock
from ._errors import InvalidRequestError, NovitaError, ProtocolError, SpendCapReachedError

__all__ = ["BALANCE_PATH", "Balance", "SpendCap", "dollars", "parse_balance"]

BALANCE_PATH: Final = "/openapi/v1/billing/balance/detail"
#: The wire's unit: 1/10000 US dollar.
WIRE_UNIT: Final = Decimal(10000)
#: Readings, started after every task of the cap had ended, that may show no charge
#: before the cap stops for not knowing the price (a price never seen is not 0): at the
#: command's ``recheck`` of 5 s, a minute for billing that shows late.
QUIET_READINGS: Final = 12

#: How far (a share of the price) the second task's own charge may differ from the price
#: learned from the first and still confirm it: billing rounds to 1/10000 USD.
AGREE: Final = Decimal("0.05")

#: No balance is this large (a trillion dollars, in the wire's unit): an amount past it is
#: not money (``"1e999999"`` parses, then cannot be printed or written as a number).
_WIRE_LIMIT: Final = Decimal(10) ** 16

_WIRE_NAMES: Final = {
    "available": "availableBalance",
    "cash": "cashBalance",
    "credit_limit": "creditLimit",
    "pending": "pendingCharges",
    "outstanding_invoices": "outstandingInvoices",
}


def _amount(value: Any, name: str) -> Decimal:
    """A wire amount (1/10000 USD, a string or a number) in dollars."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name} is not an amount: {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{name} is not an amount: {value!r}") from None
    if not amount.is_finite() or abs(amount) >= _WIRE_LIMIT:
        raise ValueError(f"{name} is not a finite amount: {value!r}")
    return amount / WIRE_UNIT


def dollars(amount: Decimal) -> str:
    """``$12.34``; fractions of a cent are shown when there are any (``$0.0035``)."""
    sign = "-" if amount < 0 else ""
    text = f"{abs(amount).quantize(Decimal('0.0001')):.4f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{sign}${whole}.{cents.ljust(2, '0')}"


@attrs.frozen
class Balance:
    """The account's balance (:meth:`Client.balance`), in US dollars.

    ``available`` is what can be spent now, ``cash`` what is left of top-ups,
    ``credit_limit`` the most the account may owe, ``pending`` charges not yet settled,
    ``outstanding_invoices`` what it owes now.
    """

    available: Decimal
    cash: Decimal = Decimal(0)
    credit_limit: Decimal = Decimal(0)
    pending: Decimal = Decimal(0)
    outstanding_invoices: Decimal = Decimal(0)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Balance:
        """Read Novita's answer; ``ValueError`` when ``availableBalance`` is missing or an
        amount is not a number."""
        if "availableBalance" not in data:
            raise ValueError("it has no availableBalance")
        return cls(
            **{
                name: _amount(data.get(wire, "0"), wire)
                for name, wire in _WIRE_NAMES.items()
                if wire in data or name != "available"
            }
        )

    def to_wire(self) -> dict[str, str]:
        """The amounts as Novita sends them (strings of 1/10000 USD): for a record on disk."""
        return {
            wire: format((getattr(self, name) * WIRE_UNIT).normalize(), "f")
            for name, wire in _WIRE_NAMES.items()
        }

    def spent_since(self, earlier: Balance) -> Decimal:
        """How much was charged between ``earlier`` and this reading (negative after a
        top-up): the fall of ``available``, or of ``cash`` plus the rise of ``pending``,
        whichever is larger (Novita may hold a task's price as pending, or not)."""
        return max(
            earlier.available - self.available,
            (earlier.cash - self.cash) + (self.pending - earlier.pending),
        )


def parse_balance(body: bytes) -> Balance:
    """A :class:`Balance` from the balance endpoint's answer, or :class:`ProtocolError`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ProtocolError("balance: the answer is not JSON", _quote(body)) from error
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]  # a wrapper some Novita answers have
    if not isinstance(data, dict):
        raise ProtocolError("balance: the answer is not an object", _quote(body))
    try:
        return Balance.from_wire(data)
    except ValueError as error:
        raise ProtocolError(
            f"balance: the answer is not the documented shape ({error})", _quote(body)
        ) from error


def _quote(body: bytes) -> str:
    return " ".join(body.decode("utf-8", "replace").split())[:200]


def _money(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str | float):
        raise InvalidRequestError(f"{name}: must be an amount of US dollars, not {value!r}", name)
    try:
        amount = Decimal(str(value).strip().removeprefix("$"))
    except InvalidOperation:
        raise InvalidRequestError(
            f"{name}: must be an amount of US dollars, not {value!r}", name
        ) from None
    if not amount.is_finite() or amount < 0:
        raise InvalidRequestError(f"{name}: must be 0 or more US dollars, not {value!r}", name)
    return amount


class SpendCap:
    """Stop a batch's submits once the balance has fallen by ``max_spend`` US dollars.

    >>> cap = SpendCap("5.00")
    >>> async for outcome in client.generate(prompts, spend_cap=cap):   # doctest: +SKIP
    ...     ...
    >>> cap.spent                                                        # doctest: +SKIP
    Decimal('4.75')

    The prompts it stops get an :class:`Outcome` whose error is a
    :class:`BatchAbortedError` (the first, :class:`SpendCapReachedError`); they were never
    sent. ``spent`` dollars were spent before it started, up to the reading ``since``
    (a record kept by whoever runs batches over several processes, as the command does
    in its output folder); without ``since`` it counts from its own first reading.
    ``price`` is the price of a task of the batch's model observed before (by that
    earlier run), and ``charged_at`` when that run saw it charged: without a price, the
    first task is sent alone to learn it, nothing more until it has ended, and it may pass
    the cap by itself; the next is sent alone too, to confirm that price
    (:attr:`confirmed`). A price of 0 is not known.
    ``outstanding`` is how many tasks of earlier runs may still be charged (accepted and
    not seen ended, or sent with no answer): they count at the price as tasks of this
    batch do; ``committed`` is dollars more for such tasks of other models, at their own
    prices. ``unresolved`` is how many of ``outstanding`` are of this batch's model while
    its price is not known: each is a first task already sent, so nothing is sent until
    each has been told to :meth:`resumed` (ended: its charge is the price; or never
    made), and ``resolve_within`` seconds after the cap's first reading (the tasks' own
    deadline), or as soon as one is told it did not end, the cap stops: it cannot tell
    what a task costs. ``learning_from`` is what had been spent (as ``spent`` counts)
    just before those tasks were sent (:attr:`learning_from` of the earlier run's cap).
    ``recheck`` is how often (seconds) it reads the balance while it waits to
    learn the price. ``on_reading`` is called after every reading (to keep that record).
    One cap learns one price: give a batch of one model to it. See the module docstring
    for what it counts and why.
    """

    def __init__(
        self,
        max_spend: Decimal | int | str,
        *,
        spent: Decimal | int | str = 0,
        since: Balance | None = None,
        price: Decimal | int | str | None = None,
        charged_at: Literal["accept", "end"] | None = None,
        outstanding: int = 0,
        committed: Decimal | int | str = 0,
        unresolved: int = 0,
        resolve_within: float | None = None,
        learning_from: Decimal | int | str | None = None,
        recheck: float = 5.0,
        on_reading: Callable[[SpendCap], None] | None = None,
    ) -> None:
        self._max = _money(max_spend, "max_spend")
        self._spent = _money(spent, "spent")
        self._base = self._spent  # spent up to ``since``: what falls are counted on
        if not (isinstance(recheck, int | float) and 0 < recheck < float("inf")):
            raise InvalidRequestError(f"recheck: must be seconds > 0, not {recheck!r}", "recheck")
        if isinstance(outstanding, bool) or not isinstance(outstanding, int) or outstanding < 0:
            raise InvalidRequestError(
                f"outstanding: must be a number of tasks >= 0, not {outstanding!r}", "outstanding"
            )
        if (
            isinstance(unresolved, bool)
            or not isinstance(unresolved, int)
            or not 0 <= unresolved <= outstanding
        ):
            raise InvalidRequestError(
                f"unresolved: must be a number of tasks from 0 to outstanding, not {unresolved!r}",
                "unresolved",
            )
        if resolve_within is not None and not (
            isinstance(resolve_within, int | float) and 0 < resolve_within < float("inf")
        ):
            raise InvalidRequestError(
                f"resolve_within: must be seconds > 0 or None, not {resolve_within!r}",
                "resolve_within",
            )
        if charged_at not in (None, "accept", "end"):
            raise InvalidRequestError(
                f"charged_at: must be 'accept', 'end' or None, not {charged_at!r}", "charged_at"
            )
        self._recheck = float(recheck)
        self._on_reading = on_reading
        self._last: Balance | None = since
        self._read: Callable[[], Awaitable[Balance]] | None = None
        self._clock: Clock | None = None
        self._lock: anyio.Lock | None = None
        self._sequence = 0  # readings started
        self._fresh_from = -1  # the sequence number of the latest reading that succeeded
        self._first: Balance | None = None
        self._rise = Decimal(0)  # spent since this cap's first reading
        self._outstanding = outstanding
        self._committed = _money(committed, "committed")
        self._accepted = 0  # tasks accepted (or in doubt) through this cap
        self._ended = 0
        self._in_flight = 0
        self._seen = (0, 0, 0)  # (accepted, ended, in flight) when the latest reading started
        self._quiet = 0  # readings with every task ended, and still no price
        # A price of 0 is not known: a charge not seen yet is not a task that is free.
        known = None if price is None else _money(price, "price")
        self._price: Decimal | None = known or None
        # A price learned by this cap is provisional until a task sent alone after it
        # shows the same charge (a top-up or other use beside the first charge would
        # otherwise set it for the whole batch); one observed by an earlier run is not.
        self._confirmed = self._price is not None
        # While it is provisional: what had been spent when the task that confirms it was
        # admitted, and how many tasks had been accepted then (its own is the next).
        self._confirm_from: Decimal | None = None
        self._confirm_after = 0
        self._charged_at: Literal["accept", "end"] | None = charged_at if self._price else None
        # Tasks of earlier runs of unknown price: each is a first task already sent.
        self._unresolved = unresolved if self._price is None else 0
        self._resolved = 0  # of them, told to ``resumed`` (ended, or never made)
        self._told: set[str] = set()  # the ids of those told, when given
        self._earlier_ended = 0  # of them, ended: what they cost is in the fall
        self._resolved_seen = (0, 0)  # (resolved, ended) when the latest reading started
        self._within = None if resolve_within is None else float(resolve_within)
        self._deadline: float | None = None  # for the unresolved, on the cap's clock
        self._unknowable: str | None = None  # why the price cannot be learned
        self._doubt: str | None = None  # why a provisional price cannot be confirmed
        # While the price is not known: the fall, and the tasks accepted, at the latest
        # reading taken with a task running (did its charge show before its end?).
        self._running: tuple[Decimal, int] | None = None
        # The spending (as ``spent`` counts it) just before the first task of unknown
        # price was sent: the price is the fall since, over the tasks that have ended.
        self._learn_from = None if learning_from is None else _money(learning_from, "learning_from")
        if self._learn_from is None and self._unresolved:
            self._learn_from = self._spent  # as good as known: the record's last reading
        self._reached: SpendCapReachedError | None = None
        self._changed: anyio.Event | None = None  # set when a submit settles or a task ends

    def __repr__(self) -> str:
        return (
            f"<SpendCap {dollars(self.estimate)} of {dollars(self._max)}"
            f"{' reached' if self._reached else ''}>"
        )

    # What it knows.

    @property
    def max_spend(self) -> Decimal:
        """The cap, in US dollars."""
        return self._max

    @property
    def spent(self) -> Decimal:
        """Dollars seen spent (the balance's falls, never its rises), ``spent`` included."""
        return self._spent

    @property
    def last(self) -> Balance | None:
        """The latest reading (or ``since``, before the first)."""
        return self._last

    @property
    def price(self) -> Decimal | None:
        """The price of one task as observed so far (``None``: not known yet; never 0)."""
        return self._price

    @property
    def confirmed(self) -> bool:
        """Whether :attr:`price` is confirmed: given (observed by an earlier run), or
        learned from the first task and then seen again, within ``AGREE``, in the fall a
        second task sent alone caused. Until then the batch sends one task at a time."""
        return self._confirmed

    @property
    def charged_at(self) -> Literal["accept", "end"] | None:
        """When the account is charged for a task, as this cap observed it (once the price
        is known from ended tasks): ``"accept"`` while readings taken with tasks running
        show a fall that covers every accepted task at the price, ``"end"`` otherwise."""
        return self._charged_at

    @property
    def learning_from(self) -> Decimal | None:
        """While the price is not known: what had been spent (as :attr:`spent` counts it)
        just before the first task of unknown price was sent (a record for the run that
        resumes that task, to learn the price from its end); while a provisional price is
        being confirmed, just before the confirming task was sent (a rerun does not know
        the provisional price, so that task is its first: its own fall is the price, even
        when its charge is in the record's spending already, charged on acceptance)."""
        if self._price is None:
            return self._learn_from
        return None if self._confirmed else self._confirm_from

    @property
    def unseen(self) -> int:
        """Tasks accepted (or in flight, or outstanding from earlier runs) that the latest
        reading does not show charged, by when this cap takes a charge to land."""
        return self._uncharged() + self._outstanding

    @property
    def estimate(self) -> Decimal:
        """What the cap counts as spent or committed: ``spent`` and the tasks not yet seen
        charged, at the price (when the charge lands is an assumption, so also never less
        than every task, outstanding ones included, at the price, whatever was seen)."""
        price = self._price or Decimal(0)
        counted = self._spent + self._uncharged() * price
        tasks = self._accepted + self._in_flight + self._outstanding
        return max(counted, self._base + self._committed + tasks * price)

    def charged(self, *, now: bool = False) -> Decimal:
        """The least spent, whatever the balance showed: ``spent`` as given at the start
        plus this cap's tasks charged by its assumption (ended, or accepted when charged
        on acceptance) at the price, as the latest reading began (``now``: as they stand,
        for a reading taken after the batch). A reading cannot hide these (a top-up
        between two readings shows as a rise, and the charges beside it as nothing)."""
        accepted, ended, _ = (self._accepted, self._ended, 0) if now else self._seen
        tasks = accepted if self._charged_at == "accept" else ended
        return self._base + tasks * (self._price or Decimal(0))

    @property
    def reached(self) -> SpendCapReachedError | None:
        """Why the cap stopped its batch, once it has."""
        return self._reached

    def _uncharged(self) -> int:
        """This cap's tasks that the latest reading is not taken to show charged: those
        that had not ended when it began (or not been accepted, when charged on
        acceptance)."""
        accepted, ended, _ = self._seen
        charged = accepted if self._charged_at == "accept" else ended
        return max(0, self._accepted + self._in_flight - charged)

    # What a batch tells it (``_batch``'s spend gate).

    def bind(self, read: Callable[[], Awaitable[Balance]], clock: Clock) -> None:
        """Read balances with ``read`` on ``clock`` (:meth:`Client.generate` calls it)."""
        self._read = read
        self._clock = clock

    async def admit(self, endpoint: str) -> None:
        """Wait until one more submit fits under the cap; raise
        :class:`SpendCapReachedError` when none does (nor ever will)."""
        if self._read is None or self._clock is None:
            raise InvalidRequestError("spend_cap: pass it to Client.generate()", "spend_cap")
        again = False
        while True:
            if self._reached is not None:
                raise self._stopped()
            await self._fresh(again=again)
            room = self._room()
            if room is True:
                self._in_flight += 1  # reserved before any await: no other submit sees room
                if self._learn_from is None:
                    self._learn_from = self._spent  # what a task costs is the fall from here
                if self._price is not None and not self._confirmed:
                    # The task that confirms the price: its charge is the fall from here.
                    self._confirm_from = self._spent
                    self._confirm_after = self._accepted
                    self._quiet = 0
                return
            again = room == "again"
            if room is False:
                self._reached = self._stopped()
                raise self._reached
            if room is None:
                await self._pause()  # for the first price, or the submits on the wire

    def settle(self, accepted: bool, *, in_doubt: bool = False) -> None:
        """An admitted submit ended: ``accepted`` when a task was (or may have been) made;
        ``in_doubt`` when it may have been (no task id: no end of it will be seen)."""
        self._in_flight -= 1
        if accepted:
            self._accepted += 1
        if in_doubt and self._price is None:
            # The price is learned from a task's end, and this one's will never be seen:
            # waiting for it would hold the batch for ever (it may still be charged).
            self._unknowable = (
                "the submit of its first task is in doubt (no answer came), so that "
                "task's end, which shows the price, cannot be seen"
            )
        self._wake()

    def ended(self) -> None:
        """A task of the batch ended (it may be charged only now)."""
        self._ended += 1
        self._wake()

    def resumed(
        self, *, ended: bool, made: bool = True, in_doubt: bool = False, task: str | None = None
    ) -> None:
        """A task of an earlier run (one of ``outstanding``), followed by this run, is
        resolved: ``ended`` (its charge shows by now, so the fall gives the price), or not
        followed to its end (past its deadline, or ``in_doubt``, a submit with no answer
        that no run follows: the cap cannot learn the price from it, and stops while it
        is not known), or never ``made`` (it frees its place). The command
        calls it from the run that resumes the earlier run's tasks; one of another model,
        or any once the price is known, changes nothing; nor does a ``task`` (its id)
        told before (a run may follow one task twice: as a prompt of its file, and as a
        task of the ledger)."""
        if self._price is not None or self._resolved >= self._unresolved:
            return
        if task is not None:
            if task in self._told:
                return
            self._told.add(task)
        self._resolved += 1
        if ended:
            self._earlier_ended += 1
        elif in_doubt:
            self._unknowable = (
                "the submit of a task of an earlier run, of unknown price, is in doubt (no "
                "answer came), so that task's end, which shows the price, cannot be seen"
            )
        elif made:
            self._unknowable = (
                "a task of an earlier run, of unknown price, did not end within its deadline"
            )
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _pause(self) -> None:
        """Until a submit settles or a task ends (what may show the first charge), or
        ``recheck`` seconds have passed (a charge may come later than either)."""
        if self._changed is None:
            self._changed = anyio.Event()
        changed = self._changed
        clock = self._clock
        assert clock is not None
        async with anyio.create_task_group() as group:

            async def sleep() -> None:
                await clock.sleep(self._recheck)
                group.cancel_scope.cancel()

            async def woken() -> None:
                await changed.wait()
                group.cancel_scope.cancel()

            group.start_soon(sleep)
            group.start_soon(woken)

    # How it decides.

    def _room(self) -> bool | Literal["again"] | None:
        """True: one more submit fits; False: none does; None: wait (for the price, or
        for the submits admitted already, which may yet make no task); "again": read
        the balance again first (the latest reading began while submits were on the
        wire: their charges may be in it without their tasks, so no stop is based on it)."""
        price = self._price
        if price is None:
            return self._room_to_learn()
        if self._doubt is not None:
            return None if self._in_flight else False
        if self.estimate + price <= self._max:
            if self._confirmed:
                return True
            # Provisional: one task at a time, each alone, until one confirms the price.
            if self._in_flight or self._confirm_from is not None:
                return None
            return True
        # No room: but the batch stops only once the submits it admitted have answered
        # (a stop would cancel them, and they fit), and one refused may leave room.
        if self._in_flight:
            return None
        return "again" if self._seen[2] else False

    def _room_to_learn(self) -> bool | None:
        """Room while the price is not known: the first task goes alone (none while a
        task of an earlier run of unknown price is unresolved: that one is the first),
        and nothing more until a reading after a task has ended shows what a task costs.
        A price never seen is not 0: after ``QUIET_READINGS`` readings with every task
        ended and no charge, the cap stops (False) instead of guessing; so does a task of
        an earlier run that is not resolved in time (its deadline)."""
        if self._in_flight:
            # Even with no room: a stop would give up the submits let through, which fit.
            return None
        if self.estimate >= self._max or self._unknowable is not None:
            return False
        waiting = self._resolved < self._unresolved
        if not self._accepted and not waiting and not self._earlier_ended:
            return True  # the first task, alone: what it costs is the price
        if waiting and self._deadline is not None:
            assert self._clock is not None
            if self._clock.now() >= self._deadline:
                left = self._unresolved - self._resolved
                self._unknowable = (
                    f"{left} task(s) of an earlier run, of unknown price, did not end (nor "
                    f"were found never made) within {self._within:g} s, the tasks' deadline"
                )
                return False
        accepted, ended, flying = self._seen
        if (
            self._quiet >= QUIET_READINGS
            and ended >= accepted == self._accepted
            and self._resolved_seen[0] == self._unresolved
            and not flying
        ):
            return False
        return None

    def _stopped(self) -> SpendCapReachedError:
        if self._doubt is not None:
            return SpendCapReachedError(
                f"the spend cap of {dollars(self._max)} cannot tell what a task costs: "
                f"{self._doubt}; nothing more is sent under the cap",
                self._max,
                self.estimate,
            )
        if self._price is None and self._unknowable is not None:
            return SpendCapReachedError(
                f"the spend cap of {dollars(self._max)} cannot tell what a task costs: "
                f"{self._unknowable}; nothing more is sent under the cap until it has "
                "ended and shown its price",
                self._max,
                self.estimate,
            )
        if self._price is None and self._quiet >= QUIET_READINGS:
            tasks = self._accepted + self._earlier_ended
            return SpendCapReachedError(
                f"the spend cap of {dollars(self._max)} cannot tell what a task costs: no "
                f"charge for the {tasks} task(s) it saw end showed in the "
                f"balance in {QUIET_READINGS} readings after they ended (billing that shows "
                "later, or a model that costs nothing); nothing more is sent under the cap",
                self._max,
                self.estimate,
            )
        return SpendCapReachedError(
            f"the spend cap of {dollars(self._max)} is reached: {dollars(self.estimate)} "
            f"spent{' or committed' if self.unseen else ''} (the balance's fall, account-wide)"
            + (f", about {dollars(self._price)} a task" if self._price else ""),
            self._max,
            self.estimate,
        )

    async def _fresh(self, *, again: bool = False) -> None:
        """A reading that started after this call, shared with concurrent callers (unless
        ``again``: one of its own, after the submits on the wire have answered)."""
        asked = self._sequence
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self._fresh_from >= asked and not (again and self._seen[2]):
                return  # one started after we asked, and has ended
            number = self._sequence
            self._sequence += 1
            seen = (self._accepted, self._ended, self._in_flight)
            resolved = (self._resolved, self._earlier_ended)
            assert self._read is not None
            try:
                balance = await self._read()
            except NovitaError as error:
                stopped = SpendCapReachedError(
                    f"the spend cap cannot read the balance ({error}); nothing more is sent",
                    self._max,
                    self.estimate,
                )
                self._reached = stopped
                raise stopped from error
            self._fresh_from = number
            self._resolved_seen = resolved
            self._observe(balance, seen)
        if self._on_reading is not None:
            self._on_reading(self)

    def _observe(self, balance: Balance, seen: tuple[int, int, int]) -> None:
        if self._last is not None:
            charged = max(Decimal(0), balance.spent_since(self._last))
            self._spent += charged
            if self._first is not None:
                self._rise += charged
        if self._first is None:
            self._first = balance
            if self._within is not None and self._unresolved:
                assert self._clock is not None
                self._deadline = self._clock.now() + self._within
        self._last = balance
        self._seen = seen
        self._learn(seen)

    def _learn(self, seen: tuple[int, int, int]) -> None:
        """What a reading that began at ``seen`` (accepted, ended, in flight) says of the
        price while it is not known, and of when tasks are charged once it is.

        Only readings that began with nothing on the wire count (one that began during a
        submit may hold its charge without its task). The price is learned only from
        tasks that have ended: the fall since just before the first was sent, divided by
        the tasks that ended (every one not yet counted charged), so other use of the
        account, or the charge of a task still running, only makes it dearer. A fall
        after an acceptance is never a price (steady other use covers every acceptance):
        "charged on acceptance" is only when the charges land, read once the price is
        known, and it counts only other use (what the cap counts of its own tasks is
        never less than every one at the price)."""
        accepted, ended, flying = seen
        rise = self._rise
        if self._price is not None and accepted:
            # A fall more than every task let through (and outstanding) at the price
            # explains: the price was learned too low (a charge that showed late, or
            # other use mistaken for charges); it only ever rises, never falls. It
            # divides by every task held, not only those taken as charged: a task's
            # charge lands before the run sees it end (a poll later), so dividing by the
            # ended ones would take each such charge for a dearer price and stop the
            # batch early. A low price is caught by its confirmation instead.
            held = Decimal(accepted + flying + self._outstanding)
            self._price = max(self._price, (rise - self._committed) / held)
        if flying:
            return
        if self._price is not None and not self._confirmed:
            self._confirm(accepted, ended)
        resolved, earlier = self._resolved_seen
        fall = self._spent - (self._spent if self._learn_from is None else self._learn_from)
        if self._price is not None:
            if accepted > ended:
                # Tasks running: charged already (on acceptance), or not yet (at the end).
                covered = fall >= self._price * (accepted + earlier)
                self._charged_at = "accept" if covered else "end"
            return
        if accepted > ended:
            self._running = (fall, accepted + earlier)
        tasks = ended + earlier  # ended, and none counted charged yet: no price was known
        if not tasks:
            return
        if fall > 0:
            # Each of them was charged by now: the fall divided by them is their price,
            # or dearer (other use of the account, a task still running charged already).
            self._price = fall / tasks
            # Charged on acceptance when, while they ran, the fall already covered them.
            early = self._running is not None and self._running[0] >= self._price * self._running[1]
            self._charged_at = "accept" if early else "end"
        elif ended >= accepted and resolved >= self._unresolved:
            # Every task ended, and no charge: billing may show later, or the model costs
            # nothing; the cap waits a few readings, then stops rather than guess.
            self._quiet += 1

    def _confirm(self, accepted: int, ended: int) -> None:
        """What a reading that began with nothing on the wire, at (``accepted``,
        ``ended``), says of the provisional price: the task sent alone to confirm it has
        ended, and the fall since it was admitted is its own charge. Within ``AGREE``
        of the price it confirms it (the larger of the two is kept); a charge that
        disagrees raises the price to the larger and the next task goes alone again,
        until two in turn agree. No charge at all within ``QUIET_READINGS`` readings
        stops the cap: the first fall was then not a task's price."""
        price = self._price
        start = self._confirm_from
        if price is None or start is None:
            return
        if accepted <= self._confirm_after:
            self._confirm_from = None  # refused, or never made: the next goes alone
            return
        if ended < accepted:
            return  # still running
        charge = self._spent - start
        if charge <= 0:
            self._quiet += 1
            if self._quiet >= QUIET_READINGS:
                self._doubt = (
                    f"the first task's fall of {dollars(price)} was not seen again: the "
                    f"next task, sent alone, showed no charge in {QUIET_READINGS} readings "
                    "after it ended (other use of the account, or a top-up, beside the "
                    "first charge)"
                )
            return
        self._quiet = 0
        self._confirm_from = None
        self._price = max(price, charge)
        if abs(charge - price) <= AGREE * max(price, charge):
            self._confirmed = True
