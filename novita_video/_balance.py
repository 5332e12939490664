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
admits is reserved at the price observed so far until its answer comes. Whether Novita
charges a task when it is accepted or when it ends is not documented (``pendingCharges``
"currently defaults to 0"), so the cap learns it from its own first task, and counts the
tasks it has seen accepted but not yet charged at the observed price: outstanding tasks
cannot carry the spend past the cap. What it counts as spent only grows (a top-up is not
room to spend), so other use of the account makes it stop earlier, never later.
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
#: Readings, started after every task of the cap had ended, that must show no charge
#: before a price of 0 is believed (a model that costs nothing would otherwise stall).
QUIET_READINGS: Final = 3

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
    ``price`` is the price of a task observed before (by that earlier run): without it,
    the first task is sent alone to learn it, and may pass the cap by itself.
    ``recheck`` is how often (seconds) it reads the balance while it waits to learn the
    price of its first task. ``on_reading`` is called after every reading (to keep that
    record). See the module docstring for what it counts and why.
    """

    def __init__(
        self,
        max_spend: Decimal | int | str,
        *,
        spent: Decimal | int | str = 0,
        since: Balance | None = None,
        price: Decimal | int | str | None = None,
        recheck: float = 5.0,
        on_reading: Callable[[SpendCap], None] | None = None,
    ) -> None:
        self._max = _money(max_spend, "max_spend")
        self._spent = _money(spent, "spent")
        if not (isinstance(recheck, int | float) and 0 < recheck < float("inf")):
            raise InvalidRequestError(f"recheck: must be seconds > 0, not {recheck!r}", "recheck")
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
        self._accepted = 0  # tasks accepted (or in doubt) through this cap
        self._ended = 0
        self._in_flight = 0
        self._seen = (0, 0, 0)  # (accepted, ended, in flight) when the latest reading started
        self._quiet = 0
        self._charged_at: Literal["accept", "end"] | None = None
        self._price: Decimal | None = None if price is None else _money(price, "price")
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
        """The price of one task as observed so far (``None``: not known yet)."""
        return self._price

    @property
    def charged_at(self) -> Literal["accept", "end"] | None:
        """When the account is charged for a task, as this cap observed it."""
        return self._charged_at

    @property
    def unseen(self) -> int:
        """Tasks accepted (or in flight) that the latest reading does not show charged."""
        accepted, ended, _ = self._seen
        charged = {"accept": accepted, "end": ended}.get(self._charged_at or "", 0)
        return max(0, self._accepted + self._in_flight - charged)

    @property
    def estimate(self) -> Decimal:
        """``spent`` and the tasks not yet seen charged, at the observed price."""
        return self._spent + self.unseen * (self._price or Decimal(0))

    @property
    def reached(self) -> SpendCapReachedError | None:
        """Why the cap stopped its batch, once it has."""
        return self._reached

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
            if self._spent >= self._max:
                return False
            # The first task's price is learned alone, so that at most it passes the cap.
            return None if self._accepted + self._in_flight else True
        if self.estimate + price <= self._max:
            return True
        # No room: but the batch stops only once the submits it admitted have answered
        # (a stop would cancel them, and they fit), and one refused may leave room.
        if self._in_flight:
            return None
        return "again" if self._seen[2] else False

    def _stopped(self) -> SpendCapReachedError:
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
        accepted, ended, _ = seen
        if self._charged_at is None and accepted:
            # The first reading that began after a task was accepted: a charge taken on
            # acceptance shows in it; if none shows, the charge comes later (at the end).
            self._charged_at = "accept" if self._rise > 0 else "end"
        if self._charged_at is not None and self._rise > 0:
            count = accepted if self._charged_at == "accept" else ended
            if count:
                self._price = self._rise / count
        elif self._charged_at == "end" and accepted and ended >= accepted:
            # Every task ended, and still no charge: after a few such readings, the model
            # costs nothing (or charges much later); the cap stops waiting to learn it.
            self._quiet += 1
            if self._quiet >= QUIET_READINGS:
                self._price = Decimal(0)
