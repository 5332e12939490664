"""When to check a task next: a pure function of what the checks so far saw.

Polls cost requests (and may count against the account's rate limit), while a late
check delays the clip. Tasks take seconds on some models and minutes on others, the
server's ``eta`` is an estimate in whole seconds that may run out early or late, or be
missing. So the schedule has **no time scale of its own**: each plan reads the task's
own age and progress and what ended tasks of its model taught (:class:`Calibration`,
the typical duration, the shortest run), and only the constants that bound lateness
are in seconds (``progress_lead``, ``overdue_*``, ``min_interval``). Each source gives
a range of plausible ends, and a look comes ``progress_lead`` after the earliest, never
past the latest: at most that late if the task ended at the earliest, and one look
where the range is narrow.

1. **The eta.** Believed as far as the server's etas proved right: the poller grades
   each ended task's first and latest eta (the real time left over the eta) and plans
   between the lowest and highest ratio. Before that, the time left lies between
   ``unverified_eta`` of the eta (half that while the task runs and progress cannot
   check the eta yet: an eta's error is a share of the whole run, so later ones are
   wrong by more than they say) and the eta itself. An eta is **believed** (no
   progress reading needs to check it) where its range costs at most ``progress_lead``
   (a short eta, or a server whose etas held within ``eta_tight``); etas whose ratios
   scatter more than ``eta_spread_limit`` are not planned from, only learned from.
2. **Progress.** Any two readings of ``progress_percent`` while the task runs (the
   first may be the 0 % it shows on leaving the queue) give a speed to within a
   percent over their span: the earliest end at the fastest speed they allow (from 99
   %, where some servers end), the latest at the slowest. A single reading bounds the
   speed from below (the task ran at most since it was last seen queued): no plan
   waits past the latest end that allows (:func:`latest_from_progress`), and, without a
   believed eta, the next look comes at half the time left that allows, or before the
   shortest run seen could end, to take a second reading (:func:`second_reading`).
   Learned progress ratios below 1 bring the earliest end forward; above 1 they come of
   other tasks' loose readings and never delay a plan.
3. **Durations seen so far.** A task's first look (:func:`first_look`) comes at half
   the typical duration of its model's ended tasks; nothing learned, at
   ``progress_lead / unverified_eta``, a bound of lateness rather than a duration.

Where the eta and progress agree (their ranges overlap), the one whose ratios scatter
least wins (progress that taught nothing yet: as its own readings allow; an eta: only
as learned). Where they disagree, or neither is known, the earlier plan wins; an eta
whose whole range ends before progress allows is looked at once, at its latest end,
which tells which of the two is wrong.

A task whose estimated end has passed (its eta ran out or reads 0, and progress does
not say "later") is **overdue**: checked ``overdue_interval`` after that end, then at
intervals that grow with how overdue it is (``overdue_growth``), never beyond
``overdue_max``. So how late its end is noticed is bounded by ``overdue_max``,
whatever the task's age.

A queued task cannot end sooner than the quickest run seen so far (from the first
check that saw it running to the last that saw it unfinished, or what its progress
allows): unless its eta is believed, it is not looked at more often than every half
of that.

A task the server never estimated (no eta, no progress speed) is **blind**: queued, its
looks back off on its age (``backoff`` times it); running, it may end any moment, so
they come every ``blind_share`` of its age (``overdue_max`` while that is longer), and
its end is noticed at most that share of its age late.

Every delay lies within ``[min_interval, max_interval]``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import attrs

from ._models import TaskStatus
from ._settings import above, at_least, at_most

__all__ = [
    "Calibration",
    "Observation",
    "Plan",
    "PollSchedule",
    "first_look",
    "latest_from_progress",
    "plan_next_check",
    "remaining_from_progress",
    "second_reading",
]

#: Percent at which a task is done. Servers that stop at 99 are learned (Calibration).
_DONE = 100.0


class _Unset(float):
    """The default of a deprecated field: equal to its old value, told apart from a
    value the user passed (which warns)."""

    __slots__ = ()


#: The old defaults of the deprecated fields, which no plan reads any more, and why.
_DEPRECATED = {
    "first_check": (
        _Unset(2.0),
        "a new task is first checked progress_lead / unverified_eta after submission, "
        "later once tasks of its model ended",
    ),
    "eta_lead": (_Unset(0.3), "plans look progress_lead after the earliest plausible end"),
    "trusted_eta": (
        _Unset(30.0),
        "an eta is believed as far as its errors could cost at most progress_lead of lateness",
    ),
    "blind_max": (
        _Unset(15.0),
        "a running task with no estimate is checked every blind_share of its age, at least "
        "every overdue_max",
    ),
}


@attrs.frozen
class PollSchedule:
    """The constants of the poll schedule, in seconds of the client's clock.

    The schedule has no time scale of its own: each plan reads the task's age and
    progress, and what ended tasks of its model taught; only the constants that bound
    lateness are in seconds. A look comes ``progress_lead`` after the earliest plausible
    end, never past the latest; nothing learned, the first one comes ``progress_lead /
    unverified_eta`` after submission. Before the server's etas proved right, the time
    left lies between ``unverified_eta`` of an eta and the eta; learned etas within
    ``eta_tight`` (high over low ratio) need no check by progress, and ones scattering
    more than ``eta_spread_limit`` are not planned from. An **overdue** task (its
    estimated end passed) is checked ``overdue_interval`` after that end, then every
    ``overdue_growth`` times how overdue it is, at most ``overdue_max`` apart, whatever
    its age. A queued task with no estimate waits ``backoff`` times its age; a running
    one ``blind_share`` of its age (``overdue_max`` while that is longer). Every wait
    lies in ``[min_interval, max_interval]``. ``first_check``, ``blind_max``,
    ``eta_lead`` and ``trusted_eta`` are deprecated and have no effect (setting one
    warns). A task whose status this client cannot read (not one of
    :class:`TaskStatus`) for ``unknown_status_limit`` in a row ends in a
    :class:`~novita_video.ProtocolError` quoting it. The concepts page of the docs has
    the whole story.

    >>> schedule = PollSchedule(overdue_max=2.0)  # an overdue end noticed within 2 s
    """

    #: Deprecated (no effect): see :func:`first_look`.
    first_check: float = attrs.field(default=_DEPRECATED["first_check"][0], validator=above(0))
    min_interval: float = attrs.field(default=0.25, validator=above(0))
    max_interval: float = attrs.field(default=300.0, validator=above(0))
    #: Deprecated (no effect): plans look ``progress_lead`` after the earliest end.
    eta_lead: float = attrs.field(default=_DEPRECATED["eta_lead"][0], validator=at_least(0))
    unverified_eta: float = attrs.field(default=0.625, validator=[above(0), at_most(1)])
    #: Deprecated (no effect): an eta's length no longer decides whether it is believed.
    trusted_eta: float = attrs.field(default=_DEPRECATED["trusted_eta"][0], validator=at_least(0))
    eta_tight: float = attrs.field(default=1.25, validator=at_least(1))
    eta_spread_limit: float = attrs.field(default=4.0, validator=at_least(1))
    progress_lead: float = attrs.field(default=1.5, validator=above(0))
    backoff: float = attrs.field(default=3.0, validator=above(0))
    #: Deprecated (no effect): see ``blind_share``.
    blind_max: float = attrs.field(default=_DEPRECATED["blind_max"][0], validator=above(0))
    blind_share: float = attrs.field(default=0.1, validator=above(0))
    overdue_interval: float = attrs.field(default=1.0, validator=above(0))
    overdue_growth: float = attrs.field(default=0.1, validator=at_least(0))
    overdue_max: float = attrs.field(default=4.0, validator=above(0))
    unknown_status_limit: float = attrs.field(default=300.0, validator=above(0))

    def __attrs_post_init__(self) -> None:
        if self.min_interval > self.max_interval:
            raise ValueError("min_interval must not exceed max_interval")
        if self.overdue_interval > self.overdue_max:
            raise ValueError("overdue_interval must not exceed overdue_max")
        for name, (_, instead) in _DEPRECATED.items():
            if not isinstance(getattr(self, name), _Unset):
                warnings.warn(
                    f"PollSchedule({name}=...) has no effect and will be removed: {instead}",
                    DeprecationWarning,
                    stacklevel=3,
                )


@attrs.frozen
class Calibration:
    """What finished tasks taught about one endpoint's estimates.

    For each source, the lowest (``*_low``) and highest (``*_high``) ratio of the real
    time a task had left to the time the source predicted, over the tasks the poller
    remembers; ``None`` until enough ended. A server whose etas run 40 % long learns
    ``eta_low`` near 0.7. The lowest, not a percentile: a plan at ``eta * eta_low``
    lands late only for a task whose eta is worse than any seen, where a 10th percentile
    would land one task in ten late.
    """

    eta_low: float | None = None
    eta_high: float | None = None
    progress_low: float | None = None
    progress_high: float | None = None

    @classmethod
    def learn(cls, eta: Sequence[float], progress: Sequence[float], *, after: int) -> Calibration:
        """The calibration from ratios seen so far; each source needs ``after`` of them."""
        eta_low, eta_high = _band(eta, after)
        progress_low, progress_high = _band(progress, after)
        return cls(eta_low, eta_high, progress_low, progress_high)

    @property
    def eta_spread(self) -> float:
        """How far the eta's ratios scatter (high / low); infinite if not learned."""
        return _spread(self.eta_low, self.eta_high)

    @property
    def progress_spread(self) -> float:
        """How far progress's ratios scatter (high / low); infinite if not learned."""
        return _spread(self.progress_low, self.progress_high)


def _band(ratios: Sequence[float], after: int) -> tuple[float | None, float | None]:
    if len(ratios) < max(after, 2):
        return None, None
    return min(ratios), max(ratios)


def _spread(low: float | None, high: float | None) -> float:
    if low is None or high is None or low <= 0:
        return math.inf
    return high / low


@attrs.frozen
class Observation:
    """What the poller knows of one unfinished task right after checking it.

    ``age`` is the time since submission. ``since`` is an earlier reading ``(age,
    progress)`` of the task while it ran: the first one (progress 0 if the check caught
    it just out of the queue); ``queued_until`` the age of the last check that saw it
    queued (0: none did), before which it did not run. ``expected_end`` is the age at
    which an earlier plan expected the task to end, if one did. ``typical`` is the
    typical duration of tasks that ended (``None`` until some did), ``quick_run`` the
    shortest run seen, from a task's first running reading to its last unfinished one,
    of ``runs_seen`` runs; ``calibration`` what their ends taught.
    """

    age: float
    status: TaskStatus
    eta: float | None = None
    progress: float = 0
    since: tuple[float, float] | None = None
    queued_until: float = 0.0
    expected_end: float | None = None
    typical: float | None = None
    quick_run: float | None = None
    runs_seen: int = 0
    calibration: Calibration = Calibration()


@attrs.frozen
class Plan:
    """When to check next (``delay``, seconds from now), and what the plan expects.

    ``expected_end``: the age at which the task is expected to end (the earliest
    plausible end), or ``None`` when nothing estimates it. ``eta_left`` and
    ``progress_left``: the raw time left by each source, for the poller to learn from
    when the task ends.
    """

    delay: float
    expected_end: float | None = None
    eta_left: float | None = None
    progress_left: float | None = None


def remaining_from_progress(obs: Observation) -> tuple[float, float] | None:
    """``(earliest, latest)`` time left that two progress readings allow, or ``None``.

    Progress is whole percent, so each reading is the true progress rounded down: the
    speed lies between ``(p2 - p1 - 1) / dt`` and ``(p2 - p1 + 1) / dt``.
    """
    if obs.since is None or obs.status is not TaskStatus.PROCESSING:
        return None
    then, progress_then = obs.since
    elapsed = obs.age - then
    gained = obs.progress - progress_then
    if elapsed <= 0 or gained < 1 or obs.progress >= _DONE:
        return None
    fastest = (gained + 1) / elapsed
    slowest = (gained - 1) / elapsed
    # Some servers end a task from 99 (never showing 100): the earliest end counts on
    # that, the latest on 100.
    earliest = max(0.0, _DONE - obs.progress - 2) / fastest
    latest = (_DONE - obs.progress) / slowest if slowest > 0 else math.inf
    return earliest, latest


def second_reading(obs: Observation) -> float | None:
    """With one progress reading, when a second one will tell the speed, or ``None``.

    The task ran at most since it was last seen queued, so it goes at least
    ``progress / that`` percent a second, and has at most ``(100 - progress)`` over that
    speed left: half of that is a look well apart from the first reading. Once the
    shortest run seen is known (``quick_run``), the task is taken to run at least as
    long, so it goes at most ``100 / quick_run`` percent a second, and a look no later
    than the time left at that speed comes before its end.
    """
    if obs.status is not TaskStatus.PROCESSING or obs.progress < 1 or obs.progress >= _DONE:
        return None
    if remaining_from_progress(obs) is not None:
        return None  # two readings that tell a speed: remaining_from_progress speaks
    ran_at_most = obs.age - obs.queued_until
    if ran_at_most <= 0:
        return None
    look = 0.5 * (_DONE - obs.progress) * ran_at_most / obs.progress
    if obs.quick_run is not None:
        # The whole of it: each run it is learned from is itself a lower bound (the
        # fastest speed that task's readings allowed, or the span it was seen running),
        # less a margin: this task is the shortest of n + 1 runs one time in n + 1, so
        # the least of n is shaded by n / (n + 1) (a run of 69 s after eight of 77 s or
        # more was looked at after its end, 5 s late, without it).
        shade = obs.runs_seen / (obs.runs_seen + 1) if obs.runs_seen else 1.0
        look = min(look, max(0.0, _DONE - obs.progress - 2) * obs.quick_run * shade / _DONE)
    return look


def latest_from_progress(obs: Observation) -> float | None:
    """The most time a running task can have left, from its progress alone, or ``None``.

    It ran at most since it was last seen queued, so it goes at least ``progress / that``
    percent a second. Whatever else a plan believes, it never waits past this."""
    if obs.status is not TaskStatus.PROCESSING or obs.progress < 1 or obs.progress >= _DONE:
        return None
    ran_at_most = obs.age - obs.queued_until
    if ran_at_most <= 0:
        return None
    return (_DONE - obs.progress) * ran_at_most / obs.progress


def first_look(schedule: PollSchedule, typical: float | None = None) -> float:
    """Seconds from a task's submission to its first check.

    Once tasks of its model ended, at half their typical duration (``typical``: tasks
    like the quickest seen are not done sooner, and a look then still reads the eta).
    Before, nothing says how long tasks take: the look comes ``progress_lead /
    unverified_eta`` after submission (2.4 s at the defaults), a constant of lateness,
    not of duration: a task done at once is noticed at most that late, and an eta read
    there is believed whole up to ``progress_lead / (1 - unverified_eta)`` (4 s), so a
    task of a few seconds costs two polls."""
    if typical is None:
        return schedule.progress_lead / schedule.unverified_eta
    return max(schedule.progress_lead, 0.5 * typical)


def plan_next_check(obs: Observation, schedule: PollSchedule, *, fallback: float = 0.0) -> Plan:
    """The next check of the task ``obs`` describes; see the module docstring.

    ``fallback`` > 0 means webhooks announce the end and checks only catch lost events:
    each comes that much later, and the server's eta is trusted past ``max_interval``
    (its end is announced anyway; the check after it is insurance).
    """
    plan = _plan(obs, schedule)
    if fallback > 0:
        if obs.eta is not None and obs.eta > 0:
            delay = max(schedule.min_interval, obs.eta) + fallback
        else:
            delay = plan.delay + fallback
        return attrs.evolve(plan, delay=delay)
    return plan


def _plan(obs: Observation, schedule: PollSchedule) -> Plan:
    believed = _eta_believed(obs, schedule)
    plan = _plan_from_estimates(obs, schedule, believed=believed)
    latest = latest_from_progress(obs)
    if latest is not None and latest < plan.delay:
        # An eta (or a calibration) that says later than progress allows is wrong.
        plan = attrs.evolve(plan, delay=max(schedule.min_interval, latest))
    probe = None if believed else second_reading(obs)
    # A second progress reading before the end: what comes after it plans better. It
    # replaces the looks of a blind task when the quick runs bound how soon it can end.
    # So does a second reading replace the short looks of an overdue task whose end was
    # expected from an eta that progress now contradicts (it shows the task running).
    overdue = plan.expected_end is not None and plan.expected_end <= obs.age
    blind = (plan.expected_end is None or overdue) and obs.quick_run is not None
    if probe is not None and (probe < plan.delay or blind):
        return attrs.evolve(plan, delay=max(schedule.min_interval, probe))
    if obs.status is TaskStatus.QUEUED and obs.quick_run is not None and not believed:
        # Still queued, it must run before it ends, and runs take at least quick_run: a
        # look sooner than half of that can only find it queued again, or just started.
        floor = min(schedule.max_interval, 0.5 * obs.quick_run)
        if plan.delay < floor:
            return attrs.evolve(plan, delay=floor)
    return plan


def _eta_share(obs: Observation, schedule: PollSchedule, *, checked: bool) -> tuple[float, float]:
    """``(low, high)``: the shares of the eta the real time left may plausibly be.

    Learned, as far as the server's etas proved right; before that, ``unverified_eta`` at
    the least (half that while the task runs and progress cannot check the eta yet: an
    eta's error is in seconds, not in shares of what is left, so near the end a wrong one
    is wrong by more than it says) and the eta itself at the most: an eta that runs out
    early is caught by the overdue checks."""
    calibration = obs.calibration
    if calibration.eta_low is not None and calibration.eta_high is not None:
        return calibration.eta_low, calibration.eta_high
    if obs.status is TaskStatus.PROCESSING and not checked:
        return schedule.unverified_eta / 2, 1.0
    return schedule.unverified_eta, 1.0


def _eta_aim(eta: float, low: float, high: float, schedule: PollSchedule) -> float:
    """When to look, from an eta whose time left lies in ``[eta * low, eta * high]``.

    The slack is spent on fewer polls: a look ``progress_lead`` after the earliest
    plausible end is at most that late even if the task ended there, and no look waits
    past the latest, so where the range is narrow, one look at its end catches the task.
    """
    return min(eta * high, eta * low + schedule.progress_lead)


def _eta_believed(obs: Observation, schedule: PollSchedule) -> bool:
    """Whether the eta needs no check by progress: its look lands at its latest plausible
    end and, were the task to end at the earliest, costs at most ``progress_lead`` (a
    short eta, or one from a server whose etas held to within ``eta_tight``)."""
    if obs.eta is None or obs.eta <= 0:
        return False
    if obs.calibration.eta_low is not None:
        return obs.calibration.eta_spread <= schedule.eta_tight
    low, high = _eta_share(obs, schedule, checked=True)
    return obs.eta * (high - low) <= schedule.progress_lead


def _plan_from_estimates(obs: Observation, schedule: PollSchedule, *, believed: bool) -> Plan:
    calibration = obs.calibration
    eta_left = obs.eta if obs.eta is not None and obs.eta > 0 else None
    bounds = remaining_from_progress(obs)
    progress_left = None if bounds is None else bounds[0]

    # Each source's earliest plausible time left, and when it would look.
    from_eta = eta_aim = None
    eta_high = math.inf
    # Etas whose ratios to the real time left scatter more than this say little about
    # the earliest end (a server whose estimates are off by a different factor for each
    # task): progress, durations and the overdue checks plan instead.
    eta_useless = schedule.eta_spread_limit < calibration.eta_spread < math.inf
    if eta_left is not None and not eta_useless:
        low, high = _eta_share(obs, schedule, checked=bounds is not None or believed)
        from_eta = eta_left * low
        eta_aim = _eta_aim(eta_left, low, high, schedule)
        eta_high = eta_left * high
    from_progress = None
    if progress_left is not None:
        # Never later than the readings' own earliest end: the ratios of tasks whose
        # readings pinned their speed loosely run above 1, and say nothing of this one's.
        from_progress = progress_left * min(1.0, calibration.progress_low or 1.0)

    if from_eta is not None and from_progress is not None and bounds is not None:
        # Where the two agree (their ranges overlap), the source whose ratios scatter
        # least wins; progress that taught nothing yet is as sure as its own readings
        # allow. Where they disagree, or nothing is known, the earlier plan wins: a
        # calibration learned from a few tasks may be wrong, a task's readings less so.
        progress_spread = calibration.progress_spread
        if progress_spread == math.inf and bounds[0] > 0:
            progress_spread = bounds[1] / bounds[0]
        eta_spread = 1.0 if believed else calibration.eta_spread
        progress_high = bounds[1] * (calibration.progress_high or 1.0)
        agree = max(from_eta, from_progress) <= min(eta_high, progress_high)
        if agree and eta_spread < progress_spread:
            from_progress = None
        elif agree and progress_spread < eta_spread:
            from_eta = None
    if (
        from_eta is not None
        and eta_aim is not None
        and (from_progress is None or from_eta <= from_progress)
    ):
        if from_progress is not None and eta_high < from_progress:
            # The eta ends before the readings allow: one of them is wrong (an eta that
            # runs out early, or progress that does not grow evenly). One look at the
            # eta's latest end tells which, where looks creeping up its range would
            # each find the task running if it is the eta.
            eta_aim = eta_high
        return _clamped(eta_aim, schedule, obs.age + from_eta, eta_left, progress_left)
    if from_progress is not None and bounds is not None:
        # The readings allow an end between the fastest and the slowest speed: a look
        # `progress_lead` after the earliest is at most that late, and none waits past
        # the latest (near the end of a short task, that comes first).
        latest = bounds[1] * (calibration.progress_high or 1.0)
        delay = min(latest, from_progress + schedule.progress_lead)
        return _clamped(delay, schedule, obs.age + from_progress, eta_left, progress_left)

    # Nothing estimates the end from this answer.
    expected = obs.expected_end
    if expected is not None:
        # An earlier estimate of the server's said when: overdue once it has passed.
        if obs.age < expected:
            return _clamped(expected - obs.age, schedule, expected, eta_left, progress_left)
        overdue_for = obs.age - expected
        delay = min(
            schedule.overdue_max,
            max(schedule.overdue_interval, schedule.overdue_growth * overdue_for),
        )
        return _clamped(delay, schedule, expected, eta_left, progress_left)
    # The server never estimated this task: what tasks that ended took says when to
    # look first (at half the typical duration, where a running task shows its
    # progress), then a backoff on its age up to blind_max.
    typical = obs.typical
    if typical is not None and obs.age < 0.5 * typical and obs.status is not TaskStatus.UNKNOWN:
        return _clamped(0.5 * typical - obs.age, schedule, None, eta_left, progress_left)
    # A queued task cannot end before it runs, and its first running reading plans what
    # follows: its looks back off on its age alone, without a scale of seconds.
    delay = obs.age * schedule.backoff
    if obs.status is not TaskStatus.QUEUED:
        # Running (or unreadable), it may end any moment: looks come every blind_share of
        # its age, so its end is noticed at most that share of its age late (and never
        # less often than an overdue task's).
        delay = min(delay, max(schedule.overdue_max, schedule.blind_share * obs.age))
    return _clamped(delay, schedule, None, eta_left, progress_left)


def _clamped(
    delay: float,
    schedule: PollSchedule,
    expected_end: float | None,
    eta_left: float | None,
    progress_left: float | None,
) -> Plan:
    if not math.isfinite(delay):
        delay = schedule.max_interval
    delay = min(schedule.max_interval, max(schedule.min_interval, delay))
    return Plan(delay, expected_end, eta_left, progress_left)
