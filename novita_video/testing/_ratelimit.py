"""The simulator's rate limits: a sliding-window log per endpoint.

Novita limits video models in requests per minute per account. A sliding-window
*log* (every accepted request's time, kept for one window) is the strictest
reading of "at most N in any 60 s": unlike a fixed window, it never lets 2N
requests through around a window boundary, so a client that passes here passes
the real API too.
"""

from __future__ import annotations

import math
from collections import deque

import attrs

__all__ = ["RateLimit", "SlidingWindowLog"]


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    # bool is an int subclass: RateLimit(True) is a bug, not one request.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an int >= 1, not {value!r}")


def _positive_seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{attribute.name} must be a number of seconds, not {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number > 0, not {value!r}")


@attrs.frozen
class RateLimit:
    """At most ``requests`` accepted requests in any ``per`` seconds (simulator clock).

    >>> RateLimit(20)            # Novita's default for Minimax Video-01: 20 per minute
    RateLimit(requests=20, per=60.0)
    >>> RateLimit.parse("2/10")
    RateLimit(requests=2, per=10.0)
    """

    requests: int = attrs.field(validator=_positive_int)
    per: float = attrs.field(default=60.0, converter=float, validator=_positive_seconds)

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Read ``"N"`` (per minute) or ``"N/SECONDS"``, as the command line takes it."""
        count, sep, seconds = text.partition("/")
        try:
            requests = int(count)
            per = float(seconds) if sep else 60.0
        except ValueError:
            message = f"a rate limit looks like 20/60 (requests/seconds), not {text!r}"
            raise ValueError(message) from None
        return cls(requests, per)


class SlidingWindowLog:
    """The live limiter for one endpoint: remembers accepted requests for one window.

    Memory is bounded by ``limit.requests`` timestamps, whatever the traffic.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._accepted: deque[float] = deque()

    def acquire(self, now: float) -> float | None:
        """Accept a request at ``now`` (``None``) or say how long until a slot frees.

        A refused request is not recorded: hammering a 429 does not push the
        window further out, as it would with a limiter that counts attempts.
        """
        per, accepted = self.limit.per, self._accepted
        # "t + per <= now" rather than "t <= now - per": the same float expression as
        # the wait below, so a refusal never comes with a wait of 0.
        while accepted and accepted[0] + per <= now:
            accepted.popleft()
        if len(accepted) < self.limit.requests:
            accepted.append(now)
            return None
        return accepted[0] + per - now
