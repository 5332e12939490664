"""The simulated account: a balance that falls by a price for every accepted task.

``GET /openapi/v1/billing/balance/detail`` answers what Novita documents, five strings
in 1/10000 US dollar (``"10000"`` is $1.00). The account starts at ``starting_balance``
dollars (a knob; ``None``: a bottomless account, never refused, that reports
$1,000,000 less what it spent) and each accepted task costs its model's price
(:data:`PRICES`, made up: Novita's prices are on its pricing page, not in its API). A
submit the available balance cannot pay for is refused with 400
``BILLING_BALANCE_NOT_ENOUGH``.

When a task is charged is not documented, so it is a knob (``charge_at``):

* ``"submit"``: its price leaves ``cashBalance`` and ``availableBalance`` when it is
  accepted;
* ``"end"``: nothing shows until the task ends (failed or not), then both fall;
  ``pendingCharges`` stays ``"0"``, as the reference says it "currently defaults to";
* ``"end-pending"``: ``pendingCharges`` holds its price from acceptance, and
  ``availableBalance`` falls at once; ``cashBalance`` falls when it ends.

The balance is computed from the tasks at each reading, as task states are.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Final

from ._tasks import TaskRecord

__all__ = ["CHARGE_MODES", "DEFAULT_PRICE", "PRICES", "Account"]

#: When a task is charged: see the module docstring.
CHARGE_MODES: Final = ("submit", "end", "end-pending")
#: What a bottomless account (``starting_balance=None``) reports at first: $1,000,000.
BOTTOMLESS: Final = 10_000 * 1_000_000

#: The price of one task per model, in 1/10000 USD: made up for the simulator (round
#: figures of the order of Novita's published ones), never facts about Novita.
PRICES: Final[Mapping[str, int]] = MappingProxyType(
    {
        "minimax-video-01": 4300,
        "minimax-hailuo-02": 2300,
        "hailuo-02": 2300,
        "kling-v1.6-t2v": 2800,
        "kling-v1.6-i2v": 2800,
        "wan-t2v": 3000,
        "wan-i2v": 3000,
        "kling-v3.0-pro-t2v": 5600,
        "kling-v3.0-std-i2v": 4200,
        "kling-v2.6-pro-t2v": 3500,
        "hailuo-2.3-t2v": 2800,
        "hailuo-2.3-fast-i2v": 1900,
        "seedance-v1.5-pro-t2v": 2600,
        "wan-2.6-t2v": 5000,
        "vidu-q3-text2video": 3500,
        "hunyuan-video-fast": 4000,
    }
)
#: The price of a model :data:`PRICES` does not name.
DEFAULT_PRICE: Final = 2500

_UNIT: Final = Decimal(10000)


class Account:
    """The balance of the simulator's one account (see the module docstring)."""

    def __init__(
        self,
        starting_balance: Decimal | None,
        *,
        charge_at: str = "submit",
        prices: Mapping[str, Decimal] | None = None,
    ) -> None:
        self._starting = None if starting_balance is None else int(starting_balance * _UNIT)
        self._charge_at = charge_at
        self._prices = dict(PRICES)
        for model, dollars in (prices or {}).items():
            self._prices[model] = int(dollars * _UNIT)
        self._price_of: dict[str, int] = {}  # task id -> what it costs
        self._charged_on_submit = 0

    def price(self, model: str) -> int:
        """What a task of ``model`` costs, in 1/10000 USD."""
        return self._prices.get(model, DEFAULT_PRICE)

    def can_pay(self, model: str, tasks: Mapping[str, TaskRecord], now: float) -> bool:
        """Whether the available balance covers one more task of ``model``."""
        if self._starting is None:
            return True
        return int(self.reading(tasks, now)["availableBalance"]) >= self.price(model)

    def charge(self, task: TaskRecord) -> None:
        """Note an accepted task's price (taken now or when it ends, by ``charge_at``)."""
        price = self.price(task.endpoint)
        self._price_of[task.task_id] = price
        if self._charge_at == "submit":
            self._charged_on_submit += price

    def reading(self, tasks: Mapping[str, TaskRecord], now: float) -> dict[str, str]:
        """The balance endpoint's answer at ``now``."""
        charged, pending = self._charged_on_submit, 0
        if self._charge_at != "submit":
            for task_id, price in self._price_of.items():
                if tasks[task_id].finishes_at <= now:
                    charged += price
                elif self._charge_at == "end-pending":
                    pending += price
        start = BOTTOMLESS if self._starting is None else self._starting
        cash = start - charged
        return {
            "availableBalance": str(cash - pending),
            "cashBalance": str(cash),
            "creditLimit": "0",
            "pendingCharges": str(pending),
            "outstandingInvoices": "0",
        }

    def spent(self, tasks: Mapping[str, TaskRecord], now: float) -> Decimal:
        """Dollars charged so far, and held as pending."""
        reading = self.reading(tasks, now)
        start = BOTTOMLESS if self._starting is None else self._starting
        return (start - int(reading["availableBalance"])) / _UNIT
