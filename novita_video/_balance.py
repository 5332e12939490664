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
defaults to 0"), and neither is a price, so the cap learns both from its own first tasks:
the price is a fall divided by the tasks that surely caused it (every task it let through,
once they have ended: a charge is assumed to show by then), so other use only makes it
dearer; "charged on acceptance" is believed only after two acceptances in turn were each
followed by a fall covering them. The price only rises (a fall more than the tasks at
the price explain raises it). A price never seen is not 0: after
``QUIET_READINGS`` readings with every task ended and no charge, the cap stops.

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
#: Acceptances each followed by a fall that covers them before tasks are taken to be
#: charged on acceptance (once could be other use of the account at that moment).
ACCEPT_CONFIRMATIONS: Final = 2

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
    if not amount.is_finite():
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
    first task is sent alone to learn it, and may pass the cap by itself (with a second,
    when the first seems charged on acceptance: see below). A price of 0 is not known.
    ``outstanding`` is how many tasks of earlier runs may still be charged (accepted and
    not seen ended, or sent with no answer): they count at the price as tasks of this
    batch do; ``committed`` is dollars more for such tasks of other models, at their own
    prices. ``recheck`` is how often (seconds) it reads the balance while it waits to
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
        self._charged_at: Literal["accept", "end"] | None = charged_at if self._price else None
        # "Charged on acceptance" is a hypothesis until readings confirm it: the fall per
        # task first seen after an acceptance, how many acceptances readings showed it
        # covered, and whether one did not.
        self._candidate: Decimal | None = None
        self._covered = 0
        self._refuted = False
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
    def charged_at(self) -> Literal["accept", "end"] | None:
        """When the account is charged for a task, as this cap observed it: ``"accept"``
        only once readings after two acceptances each showed a fall that covers them."""
        return self._charged_at

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
        price = self._price or self._hypothesis() or Decimal(0)
        counted = self._spent + self._uncharged() * price
        tasks = self._accepted + self._in_flight + self._outstanding
        return max(counted, self._base + self._committed + tasks * price)

    @property
    def reached(self) -> SpendCapReachedError | None:
        """Why the cap stopped its batch, once it has."""
        return self._reached

    def _hypothesis(self) -> Decimal | None:
        """The price per task if tasks are charged on acceptance (not yet confirmed)."""
        return None if self._refuted else self._candidate

    def _uncharged(self) -> int:
        """This cap's tasks that the latest reading is not taken to show charged: those
        that had not ended when it began (or not been accepted, once charging on
        acceptance is confirmed, or while it is the hypothesis)."""
        accepted, ended, _ = self._seen
        if self._charged_at == "accept":
            charged = accepted
        elif self._price is None and self._hypothesis() is not None:
            charged = max(ended, self._covered)
        else:
            charged = ended
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
                return
            again = room == "again"
            if room is False:
                self._reached = self._stopped()
                raise self._reached
            if room is None:
                await self._pause()  # for the first price, or the submits on the wire

    def settle(self, accepted: bool) -> None:
        """An admitted submit ended: ``accepted`` when a task was (or may have been) made."""
        self._in_flight -= 1
        if accepted:
            self._accepted += 1
        self._wake()

    def ended(self) -> None:
        """A task of the batch ended (it may be charged only now)."""
        self._ended += 1
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
        if self.estimate + price <= self._max:
            return True
        # No room: but the batch stops only once the submits it admitted have answered
        # (a stop would cancel them, and they fit), and one refused may leave room.
        if self._in_flight:
            return None
        return "again" if self._seen[2] else False

    def _room_to_learn(self) -> bool | None:
        """Room while the price is not known: the first task goes alone; a second only
        when a fall after the first's acceptance suggests it was charged then (its
        reading confirms it or not), and nothing more until a reading shows what a task
        costs. A price never seen is not 0: after ``QUIET_READINGS`` readings with every
        task ended and no charge, the cap stops (False) instead of guessing."""
        if self.estimate >= self._max:
            return False
        if not self._accepted + self._in_flight:
            return True  # the first task, alone: what it costs is the price
        if self._in_flight:
            return None
        guess = self._hypothesis()
        if guess is not None and self._covered == self._accepted < ACCEPT_CONFIRMATIONS:
            # Charged on acceptance, it seems: one more, alone, to see it again.
            return self.estimate + guess <= self._max
        accepted, ended, flying = self._seen
        if self._quiet >= QUIET_READINGS and ended >= accepted == self._accepted and not flying:
            return False
        return None

    def _stopped(self) -> SpendCapReachedError:
        if self._price is None and self._quiet >= QUIET_READINGS:
            return SpendCapReachedError(
                f"the spend cap of {dollars(self._max)} cannot tell what a task costs: no "
                f"charge for the {self._accepted} task(s) it let through showed in the "
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
        self._last = balance
        self._seen = seen
        self._learn(seen)

    def _learn(self, seen: tuple[int, int, int]) -> None:
        """What a reading that began at ``seen`` (accepted, ended, in flight) says of
        when tasks are charged, and of their price while it is not known.

        Only readings that began with nothing on the wire count (one that began during a
        submit may hold its charge without its task). The price is a fall divided by the
        tasks that surely caused it, so other use of the account only makes it dearer;
        tasks are taken to be charged on acceptance only when two acceptances in turn
        were each followed by a fall covering every accepted task at the first fall's
        price (one cent spent elsewhere just after an acceptance is not a price)."""
        accepted, ended, flying = seen
        rise = self._rise
        if self._price is not None and accepted:
            # A fall more than every task let through (and outstanding) at the price
            # explains: the price was learned too low (a charge that showed late, or
            # other use mistaken for charges); it only ever rises, never falls.
            held = Decimal(accepted + flying + self._outstanding)
            self._price = max(self._price, (rise - self._committed) / held)
        if not accepted or flying or self._charged_at == "accept":
            return
        guess = self._price or self._candidate
        if rise > 0 and guess is None and not ended:
            self._candidate, self._covered = rise / accepted, accepted
        elif guess is not None and not self._refuted and accepted > self._covered:
            if rise >= guess * accepted:
                self._covered = accepted
            else:
                self._refuted = True  # a task accepted, and no charge for it: later
        if not self._refuted and self._covered >= ACCEPT_CONFIRMATIONS:
            self._charged_at = "accept"
            if self._price is None:
                self._price = rise / self._covered
            return
        if self._price is not None:
            return
        if ended < accepted:
            return  # a task still running may be charged yet: the price waits for it
        if rise > 0:
            # Every task (one, or two) has ended, so each was charged by now: the fall
            # divided by them is their price, or dearer (other use of the account).
            self._price, self._charged_at = rise / accepted, "end"
        else:
            # Every task ended, and no charge: billing may show later, or the model costs
            # nothing; the cap waits a few readings, then stops rather than guess.
            self._quiet += 1
