"""What a folder has spent: the balance at its first run, its spend cap, and a line per run.

``DIR/.novita/spend.json`` (written whole, synced, while the ledger's lock is held) keeps:

* ``baseline``: the balance read before the folder's first run that could read one;
* ``spent``: dollars the balance has fallen since then, counted as the spend cap counts
  them (falls only: a top-up is not room to spend), up to the reading ``last``, and never
  less than the tasks a capped run saw charged at their price (a top-up hides the charges
  beside it from the readings);
* ``max_spend``: the folder's cap (``--max-spend``), or ``null``;
* ``prices``: the price of one task of each model (by the ledger's name for it, so
  ``hailuo-02`` of the catalogue is ``minimax-hailuo-02``) as the cap last observed (and
  confirmed) it, and ``charged_at`` when it saw such a task charged: a rerun of that
  model starts from them instead of sending one task alone to learn them; a model it has
  no price for is learned so (one model's price is never taken for another's);
* ``price``: the dearest of ``prices``, for novita-video 0.x releases that knew one price
  per folder (they take it for any model: the dearest is the safe one);
* ``learning``: for a model whose price is being learned, ``spent`` just before its first
  task was sent (or, while a price learned from it is confirmed, before the task sent
  alone to confirm it): a rerun that finds that task still running (in the ledger) sends
  nothing of that model until it has ended, and learns the price from the fall since then.

A capped run also counts the tasks the ledger holds that may not have been charged yet
(accepted and not seen ended, or sent with no answer: in doubt; those of a model seen
charged on acceptance too: other use of the account while tasks ran looks the same), at
their model's price, so a run killed while its tasks were running, charged at their end,
cannot spend its cap again.
Such tasks of another model of unknown price refuse the cap (:class:`UnpricedTasksError`):
one may cost more than a task of the run's own, and its charge land after the run spent the
room (tasks of no recorded model, from early ledgers, count at the dearest price known).
Such tasks of the run's own model while its price is not known are its first tasks: the
run follows them (in the file or not) and sends nothing of that model until they have
ended (within the task's deadline, ``--task-timeout``, or the cap stops: it cannot tell
what a task costs). A folder whose ledger holds tasks but whose ``spend.json`` is gone
(deleted) does not know what it spent: a capped run there is refused rather than given the
cap again; so is one whose record is damaged (:class:`SpendRecordError`), while a run
without a cap, which needs no record, sets the damaged one aside (:meth:`set_aside`).

So the cap belongs to the folder: a run killed half-way and run again counts what the
first one spent (the fall from ``last`` to the new run's first reading), and a rerun
without ``--max-spend`` keeps the cap; ``--max-spend`` again raises or lowers it, and
``--max-spend none`` lifts it. The readings are account-wide: another use of the same
account between two runs counts as the folder's spending too, which only makes the cap
stop earlier. (The key is never written here; a folder run with another account's key
would compare two accounts' balances.)

``DIR/runs.jsonl`` is the record of runs, one JSON line each: when it started and ended,
its model, the balance before and after (dollars, as strings), what it spent (the
difference, account-wide), the folder's spending and cap, and how it ended.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from .._balance import Balance, SpendCap, dollars
from .._download import replacing
from .._unified import canonical_model

__all__ = ["RUNS", "FolderSpend", "SpendRecordError", "UnpricedTasksError", "append_run"]

#: The record of runs, in the output folder (beside the manifest).
RUNS: Final = "runs.jsonl"
_RECORD: Final = "spend.json"
_VERSION: Final = 1
#: No amount of a record is this many dollars (one past it was edited in, or damaged).
_LIMIT: Final = Decimal(10) ** 12


class SpendRecordError(Exception):
    """``spend.json`` cannot be read: the folder's spending is not known."""


class UnpricedTasksError(Exception):
    """The ledger holds tasks of other models, of unknown price, that may not be charged
    yet: a capped run cannot count them (one may cost more than a task of its own)."""

    def __init__(self, message: str, models: Mapping[str, int]) -> None:
        super().__init__(message)
        #: How many such tasks of each model (the ledger's name for it).
        self.models = dict(models)


def _balance(value: object) -> Balance | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"not a balance: {value!r}")
    return Balance.from_wire(value)


def _decimal(value: object) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f"not an amount: {value!r}")
    amount = Decimal(value)
    # A file a user may edit: a negative amount would be room the folder never had.
    if not amount.is_finite() or not 0 <= amount < _LIMIT:
        raise ValueError(f"not an amount of dollars: {value!r}")
    return amount


def _prices(value: object) -> dict[str, Decimal]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"not prices by model: {value!r}")
    found = {key: _decimal(price) for key, price in value.items()}
    return {key: price for key, price in found.items() if price > 0}  # 0 is not known


def _learning(value: object) -> dict[str, Decimal]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"not amounts by model: {value!r}")
    return {key: _decimal(spent) for key, spent in value.items()}


def _modes(value: object) -> dict[str, Literal["accept", "end"]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"not charged_at by model: {value!r}")
    modes: dict[str, Literal["accept", "end"]] = {}
    for key, mode in value.items():
        if mode == "accept" or mode == "end":
            modes[str(key)] = mode
    return modes


@attrs.define
class FolderSpend:
    """The folder's record of spending (see the module docstring)."""

    path: Path
    baseline: Balance | None = None
    spent: Decimal = Decimal(0)
    last: Balance | None = None
    max_spend: Decimal | None = None
    #: The price of a task of each model (the ledger's name for it), as last observed.
    prices: dict[str, Decimal] = attrs.field(factory=dict)
    #: When a task of each model was seen charged (``"accept"`` or ``"end"``).
    charged_at: dict[str, Literal["accept", "end"]] = attrs.field(factory=dict)
    #: ``spent`` just before the first task of a model of unknown price was sent.
    learning: dict[str, Decimal] = attrs.field(factory=dict)
    #: Whether the record was on disk (a new folder's is not; nor a deleted one's).
    found: bool = False

    @classmethod
    def load(cls, out: Path) -> FolderSpend:
        """The record of ``out`` (empty when there is none yet)."""
        path = out / ".novita" / _RECORD
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as error:
            raise SpendRecordError(f"{path} cannot be read ({error})") from None
        try:
            if not isinstance(data, dict) or data.get("version") != _VERSION:
                raise ValueError("written by another version of novita-video")
            cap = data.get("max_spend")
            # A record of one price per folder does not say whose it was: learned again.
            return cls(
                path,
                baseline=_balance(data.get("baseline")),
                spent=_decimal(data.get("spent", "0")),
                last=_balance(data.get("last")),
                max_spend=None if cap is None else _decimal(cap),
                prices=_prices(data.get("prices")),
                charged_at=_modes(data.get("charged_at")),
                learning=_learning(data.get("learning")),
                found=True,
            )
        except (ValueError, InvalidOperation) as error:
            raise SpendRecordError(f"{path} is damaged ({error})") from None

    @property
    def damaged(self) -> Path:
        """Where :meth:`set_aside` puts a record that cannot be read."""
        return self.path.with_name(self.path.name + ".damaged")

    @classmethod
    def set_aside(cls, out: Path) -> FolderSpend:
        """A new, empty record for ``out``, its damaged one kept beside it (for a run
        without a cap, which needs none: a later capped run counts from this one)."""
        folder = cls(out / ".novita" / _RECORD)
        with contextlib.suppress(OSError):
            os.replace(folder.path, folder.damaged)
        return folder

    def save(self) -> None:
        """Write the record whole (a crash leaves the old one or the new one), synced."""
        body = {
            "version": _VERSION,
            "baseline": None if self.baseline is None else self.baseline.to_wire(),
            "spent": str(self.spent),
            "last": None if self.last is None else self.last.to_wire(),
            "max_spend": None if self.max_spend is None else str(self.max_spend),
            "price": str(max(self.prices.values())) if self.prices else None,
            "prices": {model: str(price) for model, price in sorted(self.prices.items())},
            "charged_at": dict(sorted(self.charged_at.items())),
            "learning": {model: str(spent) for model, spent in sorted(self.learning.items())},
        }
        with replacing(self.path) as file:
            file.write((json.dumps(body, indent=1) + "\n").encode())
            file.flush()
            os.fsync(file.fileno())
        self.found = True

    def observe(self, balance: Balance) -> None:
        """Count a reading: the first is the baseline; each fall since ``last`` is spent."""
        if self.baseline is None:
            self.baseline = balance
        if self.last is not None:
            self.spent += max(Decimal(0), balance.spent_since(self.last))
        self.last = balance

    def cap(
        self,
        model: str,
        *,
        outstanding: Mapping[str | None, int] | None = None,
        recheck: float = 5.0,
        task_timeout: float | None = None,
        follows: bool = True,
    ) -> SpendCap | None:
        """The folder's :class:`SpendCap` for a run of ``model`` (``None`` without a cap),
        counting from the record and writing every reading back to it. ``outstanding``:
        the ledger's tasks that may not be charged yet, by model (``None``: not known);
        those of ``model`` while its price is not known must end (the run tells the cap,
        :meth:`SpendCap.resumed`) within ``task_timeout`` before any other is sent, when
        the run ``follows`` them (a simulator's tasks do not outlive it: they are sent
        again, not followed). :class:`UnpricedTasksError` when ``outstanding`` holds tasks of
        another model whose price the record does not know."""
        if self.max_spend is None:
            return None
        model = canonical_model(model)
        unpriced: dict[str, int] = {}
        for other, count in (outstanding or {}).items():
            name = None if other is None else canonical_model(other)
            known = name in self.prices
            if name is not None and name != model and not known and count:
                unpriced[name] = unpriced.get(name, 0) + count
        if unpriced:
            # Counted at this run's price, a dearer model's task would let the run spend
            # what that task's charge needs, and it lands later (at its end).
            names = ", ".join(f"{count} of {name}" for name, count in sorted(unpriced.items()))
            raise UnpricedTasksError(
                f"the ledger holds tasks of another model whose price this folder does not "
                f"know, still running or in doubt ({names}): the spend cap of "
                f"{dollars(self.max_spend)} cannot count them, so nothing was sent. Run that "
                "model's command again (it resumes them and learns their price), or run "
                "with --max-spend none",
                unpriced,
            )
        own, committed, unresolved = 0, Decimal(0), 0
        dearest = max(self.prices.values(), default=None)
        for other, count in (outstanding or {}).items():
            name = None if other is None else canonical_model(other)
            # Counted even of a model seen "charged on acceptance": that is read from
            # falls while tasks ran, which other use of the account makes too, so such a
            # task may be charged only at its end, after this run spent the room. (When
            # it was charged already, this only stops the run earlier: by at most the
            # tasks a killed run left running, one a concurrency slot.)
            price = self.prices.get(name) if name is not None else None
            if name == model:
                own += count
                # First tasks already sent, while the price is not known (other models'
                # tasks count at the run's price, but only its own can show that price).
                unresolved += 0 if model in self.prices or not follows else count
            elif price is not None:
                committed += count * price
            elif dearest is not None and dearest > self.prices.get(model, Decimal(0)):
                committed += count * dearest  # its price is not known: the dearest known
            else:
                # A model not recorded (an early ledger): the run's own, once learned (a
                # named model of unknown price is refused above).
                own += count

        def keep(cap: SpendCap) -> None:
            # Never less than the tasks seen charged: a top-up beside their charges hides them.
            self.spent, self.last = max(cap.spent, cap.charged()), cap.last
            # The cap starts from the record's price and charging, so the record follows
            # it: a price it gave up (charging on acceptance refuted) is not kept either.
            # A provisional price (the first task's fall, not seen again yet) is not kept:
            # a rerun learns it again rather than trust one fall a top-up may have hidden.
            if cap.price is not None and cap.confirmed:
                self.prices[model] = cap.price
            elif cap.price is None:
                self.prices.pop(model, None)
            if cap.charged_at is not None and cap.confirmed:
                self.charged_at[model] = cap.charged_at
            else:
                self.charged_at.pop(model, None)
            if cap.learning_from is not None:
                self.learning[model] = cap.learning_from
            else:
                self.learning.pop(model, None)
            self.save()

        return SpendCap(
            self.max_spend,
            spent=self.spent,
            since=self.last,
            price=self.prices.get(model),
            charged_at=self.charged_at.get(model),
            outstanding=own,
            committed=committed,
            unresolved=unresolved,
            resolve_within=task_timeout,
            learning_from=self.learning.get(model) if unresolved else None,
            recheck=recheck,
            on_reading=keep,
        )


def append_run(out: Path, line: Mapping[str, Any]) -> None:
    """Add one run's line to ``DIR/runs.jsonl`` (a failure to write it is not the run's)."""
    with contextlib.suppress(OSError), (out / RUNS).open("a", encoding="utf-8") as file:
        file.write(json.dumps(dict(line), ensure_ascii=False) + "\n")
