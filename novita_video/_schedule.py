"""When to check a task next: a pure function of what the last check saw.

Polls cost requests (and may count against the account's rate limit), while a late
check delays the clip. The schedule spends few polls and still notices a finished task
soon:

1. The first check comes ``first_check`` seconds after submission: it learns the
   server's ``eta`` (real Minimax tasks take minutes, so guessing blind is worse).
2. With an ``eta``, the next check is due just before it runs out (``eta - eta_lead``):
   the server's eta is whole seconds, so the task is most likely done by then, and if
   not, the next answer's eta is at most a second.
3. Without an eta but with progress, the time left is extrapolated from how fast
   progress moved since the first check that saw any. Progress is whole percent and
   may stop short of 100 until the end, so only ``progress_trust`` of the estimate is
   believed, the check aims ``progress_lead`` seconds early, and once the end is that
   near, checks come every ``progress_lead`` seconds: a notice is at most that late.
4. With neither (or a single progress reading), the typical duration of tasks this
   client has seen finish says when to look first; after that, checks back off
   geometrically: each one waits ``backoff`` times the task's age so far.

Every delay lies within ``[min_interval, max_interval]``.
"""

from __future__ import annotations

import math

import attrs

from ._models import TaskStatus

__all__ = ["Observation", "PollSchedule", "next_check_delay"]


@attrs.frozen
class PollSchedule:
    """The constants of the poll schedule, in seconds of the client's clock."""

    first_check: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    min_interval: float = attrs.field(default=0.25, validator=attrs.validators.gt(0))
    max_interval: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    eta_lead: float = attrs.field(default=0.3, validator=attrs.validators.ge(0))
    progress_lead: float = attrs.field(default=1.5, validator=attrs.validators.gt(0))
    progress_trust: float = attrs.field(
        default=0.9, validator=[attrs.validators.gt(0), attrs.validators.le(1)]
    )
    backoff: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))

    def __attrs_post_init__(self) -> None:
        if self.min_interval > self.max_interval:
            raise ValueError("min_interval must not exceed max_interval")


@attrs.frozen
class Observation:
    """What the poller knows of one unfinished task right after checking it.

    ``age`` is the time since submission; ``previous`` the ``(age, progress)`` of the
    previous check, if there was one; ``typical`` the typical duration of tasks this
    client saw finish (``None`` until it has seen some).
    """

    age: float
    status: TaskStatus
    eta: float | None = None
    progress: int = 0
    previous: tuple[float, int] | None = None
    typical: float | None = None


def _remaining_from_progress(obs: Observation) -> float | None:
    # Two readings give a speed; one alone says nothing of when progress began.
    if not 0 < obs.progress < 100 or obs.previous is None:
        return None
    then, progress_then = obs.previous
    if obs.progress <= progress_then or obs.age <= then:
        return None
    speed = (obs.progress - progress_then) / (obs.age - then)
    return (100 - obs.progress) / speed


def next_check_delay(obs: Observation, schedule: PollSchedule, *, fallback: float = 0.0) -> float:
    """Seconds from now until the next check of the task ``obs`` describes.

    ``fallback`` > 0 means webhooks announce the end and checks only catch lost events:
    each comes that much later, and the server's eta is trusted past ``max_interval``
    (its end is announced anyway; the check after it is insurance).
    """
    if fallback > 0 and obs.eta is not None and obs.eta > 0:
        return max(schedule.min_interval, obs.eta) + fallback
    return _delay(obs, schedule) + fallback


def _delay(obs: Observation, schedule: PollSchedule) -> float:
    if obs.eta is not None and obs.eta > 0:
        delay = obs.eta - schedule.eta_lead
    elif (remaining := _remaining_from_progress(obs)) is not None:
        believed = remaining * schedule.progress_trust
        lead = schedule.progress_lead
        delay = believed - lead if believed > 2 * lead else lead
    elif obs.typical is not None and obs.age < obs.typical and obs.status is not TaskStatus.UNKNOWN:
        delay = obs.typical - obs.age
    else:
        delay = obs.age * schedule.backoff
    if not math.isfinite(delay):
        delay = schedule.max_interval
    return min(schedule.max_interval, max(schedule.min_interval, delay))
