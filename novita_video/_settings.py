"""Settings: small frozen value objects, the one source of every default and its check.

Each group of :class:`~novita_video.Client`'s keyword arguments is one object here, its
fields named as the keywords are: :class:`HTTPSettings` (timeouts, size caps, the
pool), :class:`BatchLimits` (what :meth:`~novita_video.Client.generate` may do),
:class:`PollSettings` and :class:`WebhookSettings`. The client's signature takes its
defaults from :data:`DEFAULT_HTTP` and its siblings, the command line takes its own from
the same objects, and ``tests/test_docs.py`` fails when the docs state another.

Every setting is checked by the validators below, which raise one error type,
:class:`~novita_video.InvalidRequestError`, naming the setting (``RetryPolicy``,
``AdaptiveRate`` and ``PollSchedule`` use them too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import attrs

from ._errors import InvalidRequestError

__all__ = [
    "ADAPTIVE",
    "DEFAULT_BATCH",
    "DEFAULT_HTTP",
    "DEFAULT_POLLING",
    "DEFAULT_WEBHOOKS",
    "BatchLimits",
    "Check",
    "HTTPSettings",
    "PollSettings",
    "WebhookSettings",
    "above",
    "at_least",
    "at_most",
    "below",
    "whole",
]

#: ``Client(poll_rpm=ADAPTIVE)``, the default: no poll limit until the server says 429.
ADAPTIVE: Literal["adaptive"] = "adaptive"


@attrs.frozen
class Check:
    """One rule for a setting: an attrs validator, and :meth:`check` for a plain value."""

    test: Callable[[Any], bool]
    problem: str

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        self.check(attribute.name, value)

    def check(self, name: str, value: Any) -> None:
        """Raise :class:`InvalidRequestError` naming ``name`` unless ``value`` passes."""
        if not self.test(value):
            raise InvalidRequestError(f"{name}: must be {self.problem}, not {value!r}", name)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def above(bound: float, *, infinite: bool = False, none: bool = False) -> Check:
    """A number greater than ``bound``, finite unless ``infinite``; ``None`` if ``none``."""
    what = "a positive number" if bound == 0 else f"a number above {bound:g}"
    if infinite:
        what += " (or math.inf)"
    if none:
        what += " or None"
    return Check(
        lambda value: (
            (none and value is None)
            or (_number(value) and value > bound and (infinite or math.isfinite(value)))
        ),
        what,
    )


def at_least(bound: float) -> Check:
    """A finite number no less than ``bound``."""
    return Check(
        lambda value: _number(value) and math.isfinite(value) and value >= bound,
        f"a finite number >= {bound:g}",
    )


def at_most(bound: float) -> Check:
    """A number no greater than ``bound`` (with :func:`at_least` or :func:`above`)."""
    return Check(lambda value: _number(value) and value <= bound, f"a number <= {bound:g}")


def below(bound: float) -> Check:
    """A number less than ``bound`` (with :func:`at_least` or :func:`above`)."""
    return Check(lambda value: _number(value) and value < bound, f"a number below {bound:g}")


def whole(minimum: int) -> Check:
    """A whole number (an int, not a bool) no less than ``minimum``."""
    return Check(
        lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        f"a whole number >= {minimum}",
    )


_IS_BOOL = Check(lambda value: isinstance(value, bool), "True or False")
_POLL_RPM = Check(
    lambda value: value == ADAPTIVE or above(0, infinite=True, none=True).test(value),
    f"{ADAPTIVE!r}, a positive number (or math.inf) or None",
)


@attrs.frozen
class HTTPSettings:
    """How long a request may take and how big an answer may be (see :class:`Client`).

    ``deadline`` bounds a whole API request; ``None`` means ``timeout + connect_timeout``.
    """

    timeout: float = attrs.field(default=60.0, validator=above(0))
    connect_timeout: float = attrs.field(default=10.0, validator=above(0))
    deadline: float | None = attrs.field(default=None, validator=above(0, none=True))
    max_response_bytes: int = attrs.field(default=1 << 20, validator=whole(1024))
    download_timeout: float = attrs.field(default=600.0, validator=above(0))
    max_clip_bytes: int = attrs.field(default=1 << 30, validator=whole(1024))
    max_connections: int = attrs.field(default=32, validator=whole(1))

    @property
    def total(self) -> float:
        """The deadline of one whole API request, in seconds."""
        return self.timeout + self.connect_timeout if self.deadline is None else self.deadline


@attrs.frozen
class BatchLimits:
    """What one batch may do at once; the client's are the default of every
    :meth:`~novita_video.Client.generate` call, which may change any of them.

    ``submit_rpm`` ``None`` or ``math.inf``: no submit limit.
    """

    concurrency: int = attrs.field(default=4, validator=whole(1))
    submit_rpm: float | None = attrs.field(
        default=20.0, validator=above(0, infinite=True, none=True)
    )
    max_outstanding: int = attrs.field(default=1000, validator=whole(1))
    task_timeout: float = attrs.field(default=1800.0, validator=above(0))


@attrs.frozen
class PollSettings:
    """How fast the one poller may go: ``poll_rpm`` task-result requests a minute
    (``"adaptive"``: unlimited until a 429; ``None``: unlimited), ``poll_concurrency``
    of them in flight."""

    poll_rpm: float | Literal["adaptive"] | None = attrs.field(
        default=ADAPTIVE, validator=_POLL_RPM
    )
    poll_concurrency: int = attrs.field(default=8, validator=whole(1))


@attrs.frozen
class WebhookSettings:
    """Where Novita POSTs each task's end, whether its payload is believed, and how much
    later than usual the fallback polls come (``webhook_fallback`` seconds)."""

    webhook_url: str | None = None
    trust_webhooks: bool = attrs.field(default=False, validator=_IS_BOOL)
    webhook_fallback: float = attrs.field(default=30.0, validator=above(0))


DEFAULT_HTTP = HTTPSettings()
DEFAULT_BATCH = BatchLimits()
DEFAULT_POLLING = PollSettings()
DEFAULT_WEBHOOKS = WebhookSettings()
