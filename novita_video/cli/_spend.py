"""What a folder has spent: the balance at its first run, its spend cap, and a line per run.

``DIR/.novita/spend.json`` (written whole, synced, while the ledger's lock is held) keeps:

* ``baseline``: the balance read before the folder's first run that could read one;
* ``spent``: dollars the balance has fallen since then, counted as the spend cap counts
  them (falls only: a top-up is not room to spend), up to the reading ``last``;
* ``max_spend``: the folder's cap (``--max-spend``), or ``null``;
* ``price``: the price of one task as the cap last observed it (a rerun starts from it,
  instead of sending one task alone to learn it).

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
from typing import Any, Final

import attrs

from .._balance import Balance, SpendCap
from .._download import replacing

__all__ = ["RUNS", "FolderSpend", "SpendRecordError", "append_run"]

#: The record of runs, in the output folder (beside the manifest).
RUNS: Final = "runs.jsonl"
_RECORD: Final = "spend.json"
_VERSION: Final = 1


class SpendRecordError(Exception):
    """``spend.json`` cannot be read: the folder's spending is not known."""


def _balance(value: object) -> Balance | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"not a balance: {value!r}")
    return Balance.from_wire(value)


def _decimal(value: object) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f"not an amount: {value!r}")
    return Decimal(value)


@attrs.define
class FolderSpend:
    """The folder's record of spending (see the module docstring)."""

    path: Path
    baseline: Balance | None = None
    spent: Decimal = Decimal(0)
    last: Balance | None = None
    max_spend: Decimal | None = None
    price: Decimal | None = None

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
            cap, price = data.get("max_spend"), data.get("price")
            return cls(
                path,
                baseline=_balance(data.get("baseline")),
                spent=_decimal(data.get("spent", "0")),
                last=_balance(data.get("last")),
                max_spend=None if cap is None else _decimal(cap),
                price=None if price is None else _decimal(price),
            )
        except (ValueError, InvalidOperation) as error:
            raise SpendRecordError(f"{path} is damaged ({error})") from None

    def save(self) -> None:
        """Write the record whole (a crash leaves the old one or the new one), synced."""
        body = {
            "version": _VERSION,
            "baseline": None if self.baseline is None else self.baseline.to_wire(),
            "spent": str(self.spent),
            "last": None if self.last is None else self.last.to_wire(),
            "max_spend": None if self.max_spend is None else str(self.max_spend),
            "price": None if self.price is None else str(self.price),
        }
        with replacing(self.path) as file:
            file.write((json.dumps(body, indent=1) + "\n").encode())
            file.flush()
            os.fsync(file.fileno())

    def observe(self, balance: Balance) -> None:
        """Count a reading: the first is the baseline; each fall since ``last`` is spent."""
        if self.baseline is None:
            self.baseline = balance
        if self.last is not None:
            self.spent += max(Decimal(0), balance.spent_since(self.last))
        self.last = balance

    def cap(self, *, recheck: float = 5.0) -> SpendCap | None:
        """The folder's :class:`SpendCap` (``None`` without one), counting from the record
        and writing every reading back to it."""
        if self.max_spend is None:
            return None

        def keep(cap: SpendCap) -> None:
            self.spent, self.last, self.price = cap.spent, cap.last, cap.price or self.price
            self.save()

        return SpendCap(
            self.max_spend,
            spent=self.spent,
            since=self.last,
            price=self.price,
            recheck=recheck,
            on_reading=keep,
        )


def append_run(out: Path, line: Mapping[str, Any]) -> None:
    """Add one run's line to ``DIR/runs.jsonl`` (a failure to write it is not the run's)."""
    with contextlib.suppress(OSError), (out / RUNS).open("a", encoding="utf-8") as file:
        file.write(json.dumps(dict(line), ensure_ascii=False) + "\n")
