"""The simulator's knobs, checked once, kept frozen.

:class:`~novita_video.testing.FakeNovita` takes its knobs as keyword arguments
and builds one :class:`SimulatorConfig`; every rule about what a knob may be
lives here, so a bad value fails at construction with a clear :class:`ValueError`
instead of as a strange answer in the middle of a test. A new fault knob is one
more field here and one more step in the server's pipeline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from ._account import CHARGE_MODES
from ._ratelimit import RateLimit
from ._tasks import ETA_ROUNDINGS, PROGRESS_CURVES

__all__ = ["SimulatorConfig"]


def _number(name: str, value: object) -> float:
    # bool is an int subclass; a True duration is a bug, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return float(value)


def _check_duration(
    instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object
) -> None:
    if not isinstance(value, tuple) or len(value) != 2:
        raise ValueError(f"task_duration must be a (low, high) pair of seconds, not {value!r}")
    low, high = (_number("task_duration", v) for v in value)
    if not 0 <= low <= high:
        raise ValueError(f"task_duration must satisfy 0 <= low <= high, not {value!r}")


def _to_duration(value: object) -> object:
    # Accept a list from a caller (or JSON) but store a tuple so the config stays hashable.
    if isinstance(value, list):
        value = tuple(value)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return (float(value[0]), float(value[1]))
    return value


def _unit_interval(name: str, value: object, *, upper_open: bool = False) -> None:
    number = _number(name, value)
    if not (0.0 <= number < 1.0 if upper_open else 0.0 <= number <= 1.0):
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name} must be in {bound}, not {value!r}")


def _check_fraction(
    instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object
) -> None:
    _unit_interval(attribute.name, value)


def _check_eta_error(
    instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object
) -> None:
    # None means "the server gives no estimate" (eta always 0). A factor drawn from
    # U(1-e, 1+e) must stay positive, so e < 1.
    if value is not None:
        _unit_interval("eta_error", value, upper_open=True)


def _check_range(instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, tuple) or len(value) != 2:
        raise ValueError(f"{attribute.name} must be None or a (low, high) pair, not {value!r}")
    low, high = (_number(attribute.name, v) for v in value)
    positive = attribute.name == "eta_bias"
    if low < 0 or (positive and low == 0) or low > high:
        rule = "0 < low <= high" if positive else "0 <= low <= high"
        raise ValueError(f"{attribute.name} must satisfy {rule}, not {value!r}")


def _to_range(value: object) -> object:
    return None if value is None else _to_duration(value)


def _one_of(*choices: str) -> Callable[[SimulatorConfig, attrs.Attribute[Any], object], None]:
    def check(instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}; not {value!r}")

    return check


def _check_limit(instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, RateLimit):
        raise ValueError(f"{attribute.name} must be a RateLimit or None, not {value!r}")


def _check_bool(instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be True or False, not {value!r}")


def _check_ttl(instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    # Whole seconds: the wire carries video_url_ttl as a string of an integer ("3600").
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"video_ttl must be an int number of seconds >= 1, not {value!r}")


def _check_text(instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(
            f"{attribute.name} must be a non-empty str without surrounding blanks, not {value!r}"
        )


def _check_port(instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"port must be an int in 0..65535 (0 picks a free one), not {value!r}")


def _check_balance(
    instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"balance must be None or an int >= 0 (tasks it pays for), not {value!r}")


def _dollars(name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str | float):
        raise ValueError(f"{name} must be an amount of US dollars, not {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} must be an amount of US dollars, not {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be 0 or more US dollars, not {value!r}")
    return amount


def _to_starting_balance(value: object) -> Decimal | None:
    return None if value is None else _dollars("starting_balance", value)


def _to_prices(value: object) -> tuple[tuple[str, Decimal], ...]:
    if value is None:
        return ()
    if isinstance(value, tuple):
        value = dict(value)
    if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
        raise ValueError(f"prices must map model names to US dollars, not {value!r}")
    return tuple(sorted((name, _dollars(f"prices[{name!r}]", v)) for name, v in value.items()))


def _to_catalog(value: object) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise ValueError(f"catalog must be None or a list of catalogue entries, not {value!r}")
    try:
        return tuple(json.loads(json.dumps(list(value))))
    except (TypeError, ValueError) as error:
        raise ValueError(f"catalog must be JSON ({error})") from None


def _check_seconds(
    instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object
) -> None:
    if _number(attribute.name, value) <= 0:
        raise ValueError(f"{attribute.name} must be a number of seconds > 0, not {value!r}")


def _check_seed(instance: SimulatorConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"seed must be None or an int, not {value!r}")


@attrs.frozen(kw_only=True)
class SimulatorConfig:
    """Every knob of the simulator, validated. See :class:`FakeNovita` for their meaning."""

    api_key: str = attrs.field(default="sk-simulated", validator=_check_text, repr=False)
    host: str = attrs.field(default="127.0.0.1", validator=_check_text)
    port: int = attrs.field(default=0, validator=_check_port)
    task_duration: tuple[float, float] = attrs.field(
        default=(2.0, 6.0), converter=_to_duration, validator=_check_duration
    )
    queue_fraction: float = attrs.field(default=0.1, validator=_check_fraction)
    eta_error: float | None = attrs.field(default=0.0, validator=_check_eta_error)
    report_progress: bool = attrs.field(default=True, validator=_check_bool)
    queue_time: tuple[float, float] | None = attrs.field(
        default=None, converter=_to_range, validator=_check_range
    )
    eta_rounding: str = attrs.field(default="ceil", validator=_one_of(*ETA_ROUNDINGS))
    eta_bias: tuple[float, float] | None = attrs.field(
        default=None, converter=_to_range, validator=_check_range
    )
    progress_curve: str = attrs.field(default="linear", validator=_one_of(*PROGRESS_CURVES))
    failure_rate: float = attrs.field(default=0.0, validator=_check_fraction)
    submit_limit: RateLimit | None = attrs.field(default=None, validator=_check_limit)
    result_limit: RateLimit | None = attrs.field(default=None, validator=_check_limit)
    retry_after: bool = attrs.field(default=True, validator=_check_bool)
    video_ttl: int = attrs.field(default=3600, validator=_check_ttl)
    seed: int | None = attrs.field(default=None, validator=_check_seed)
    illegal_marker: str = attrs.field(default="[illegal]", validator=_check_text)
    balance: int | None = attrs.field(default=None, validator=_check_balance)
    webhook_timeout: float = attrs.field(default=5.0, validator=_check_seconds)
    bare_key: str = attrs.field(default="refuse", validator=_one_of("refuse", "accept"))
    starting_balance: Decimal | None = attrs.field(default=None, converter=_to_starting_balance)
    charge_at: str = attrs.field(default="submit", validator=_one_of(*CHARGE_MODES))
    prices: tuple[tuple[str, Decimal], ...] = attrs.field(default=(), converter=_to_prices)
    catalog: tuple[Any, ...] | None = attrs.field(default=None, converter=_to_catalog, eq=False)

    def __attrs_post_init__(self) -> None:
        # Two ways of making an eta wrong would hide each other: one at a time.
        if self.eta_bias is not None and self.eta_error:
            raise ValueError("eta_bias and eta_error are two eta models: set one of them")
