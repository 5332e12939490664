"""The poll schedule as a table: the earliest plausible end from the eta, from progress or
from what this client learned; overdue tasks at short, bounded intervals."""

from __future__ import annotations

import pytest

from novita_video import PollSchedule, TaskStatus
from novita_video._schedule import (
    Calibration,
    Observation,
    plan_next_check,
    remaining_from_progress,
)

Q, P, U = TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.UNKNOWN
S = PollSchedule(
    min_interval=0.25,
    max_interval=120.0,
    unverified_eta=0.6,
    progress_lead=1.5,
    backoff=0.5,
    blind_share=0.1,
    overdue_interval=1.0,
    overdue_growth=0.1,
    overdue_max=4.0,
)
EXACT = Calibration(eta_low=1.0, eta_high=1.0)
LONG_ETAS = Calibration(eta_low=0.7, eta_high=0.72)  # the server's etas run 40 % long
SCATTERED_ETAS = Calibration(eta_low=0.7, eta_high=1.6, progress_low=0.98, progress_high=1.02)
LOOSE_PROGRESS = Calibration(eta_low=1.0, eta_high=1.02, progress_low=0.9, progress_high=1.5)


def fastest(gained: float, seconds: float) -> float:
    # Whole-percent readings: the speed is at most one percent more than it seems.
    return (gained + 1) / seconds


#: Every expected delay below is a formula of S's constants and the observation's figures:
#: the row says which rule gives it. S: unverified_eta 0.6, progress_lead 1.5, backoff 0.5,
#: blind_share 0.1, overdue 1 s growing 0.1 a second to 4 s, within [0.25, 120] s.
LEAD = S.progress_lead


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        # A short eta is believed: its whole range (0.6 to 1 of it) is within
        # progress_lead, so one look at its end is at most that late.
        (Observation(age=2.0, status=P, eta=3.0, progress=30), 3.0),
        # One a little longer is not (4 * 0.4 > 1.5): a look half the time left at the
        # slowest speed 30 % in 2 s allows comes first, to read the speed.
        (Observation(age=2.0, status=P, eta=4.0, progress=30), 0.5 * 70 * 2 / 30),
        # At 99 % after 9 s, the task has at most 9 / 99 s left: no plan waits past that
        # (here the floor, min_interval).
        (Observation(age=9.0, status=P, eta=1.0, progress=99), S.min_interval),
        (Observation(age=2.0, status=P, eta=0.1), S.min_interval),  # never below the floor
        # A long eta nobody has checked yet: a look progress_lead after its earliest end
        # (0.6 of it), where the progress can tell.
        (Observation(age=2.0, status=Q, eta=100.0), 0.6 * 100 + LEAD),
        # Etas that proved right are believed whole ...
        (Observation(age=2.0, status=Q, eta=100.0, calibration=EXACT), 100.0),
        (Observation(age=2.0, status=P, eta=1000.0, calibration=EXACT), S.max_interval),
        # ... and etas that run 40 % long, as far as they proved right: progress_lead after
        # the earliest end they allow (0.7 of it), not past the latest (0.72).
        (Observation(age=2.0, status=Q, eta=100.0, calibration=LONG_ETAS), 0.7 * 100 + LEAD),
        # Two progress readings: the fastest speed they allow (21 % in 30 s) gives the
        # earliest end, from 98 % (a server may end from 99); the look is LEAD after it ...
        (
            Observation(age=60.0, status=P, progress=40, since=(30.0, 20)),
            58 / fastest(20, 30) + LEAD,
        ),
        # ... never past the latest end progress allows (10 % left, at 90 % in 60 s at most),
        (Observation(age=60.0, status=P, progress=90, since=(30.0, 60)), 10 * 60 / 90),
        # ... the first reading may be the 0 % of a task just out of the queue ...
        (
            Observation(age=70.0, status=P, progress=30, since=(40.0, 0)),
            68 / fastest(30, 30) + LEAD,
        ),
        # ... learned ratios below 1 (a server whose progress lags) bring it forward ...
        (
            Observation(
                age=60.0,
                status=P,
                progress=40,
                since=(30.0, 20),
                calibration=Calibration(progress_low=0.9, progress_high=1.2),
            ),
            0.9 * 58 / fastest(20, 30) + LEAD,
        ),
        # ... ratios above 1 do not push it later: they come of other tasks' loose readings.
        (
            Observation(
                age=60.0,
                status=P,
                progress=40,
                since=(30.0, 20),
                calibration=Calibration(progress_low=1.1, progress_high=1.2),
            ),
            58 / fastest(20, 30) + LEAD,
        ),
        # ... and near the end (at 98 % the earliest end is now), a look every LEAD ...
        (Observation(age=300.0, status=P, progress=98, since=(270.0, 90)), LEAD),
        # ... or sooner, when the readings say the end comes sooner still (a short task:
        # 4 % left, at 96 % in 5 s at most: 0.21 s at the latest, so the floor).
        (Observation(age=5.0, status=P, progress=96, since=(2.0, 80)), S.min_interval),
        # A short eta (believed) disagrees with that progress: the earlier plan wins.
        (Observation(age=5.0, status=P, eta=1.0, progress=96, since=(2.0, 80)), S.min_interval),
        # Both speak, nothing learned, they disagree: the earlier end wins (progress's,
        # before the eta's earliest, 0.6 * 200) ...
        (
            Observation(age=60.0, status=P, eta=200.0, progress=40, since=(30.0, 20)),
            58 / fastest(20, 30) + LEAD,
        ),
        # ... (the eta's: it ends before progress allows). One of the two is wrong: one
        # look at the eta's latest end (the eta itself) tells which.
        (Observation(age=60.0, status=P, eta=20.0, progress=40, since=(30.0, 20)), 20.0),
        # Both speak and agree: the source whose learned ratios scatter least wins, even
        # if later (the eta, within 1.02, over progress's 0.9-1.5): LEAD after its end.
        (
            Observation(
                age=60.0,
                status=P,
                eta=85.0,
                progress=40,
                since=(30.0, 20),
                calibration=LOOSE_PROGRESS,
            ),
            85.0 + LEAD,
        ),
        (
            Observation(
                age=60.0,
                status=P,
                eta=60.0,
                progress=40,
                since=(30.0, 20),
                calibration=SCATTERED_ETAS,
            ),
            min(60 / (19 / 30) * 1.02, 0.98 * 58 / fastest(20, 30) + LEAD),
        ),
        # One reading of a running task: it ran at most since submission (or since last
        # seen queued), so it goes at least that fast; half the time left that allows
        # brings a second reading in time ...
        (
            Observation(age=87.0, status=P, progress=49, since=(87.0, 49), typical=400.0),
            0.5 * 51 * 87 / 49,
        ),
        # ... unless the blind looks (blind_share of its age) come sooner.
        (
            Observation(age=87.0, status=P, progress=49, since=(87.0, 49), queued_until=80.0),
            0.5 * 51 * 7 / 49,
        ),
        (
            Observation(age=87.0, status=P, progress=49, since=(87.0, 49), queued_until=60.0),
            S.blind_share * 87,
        ),
        # ... sooner than a long, unproven eta would have it (0.3 of it: half of 0.6 while
        # progress has not checked it yet) ...
        (
            Observation(age=87.0, status=P, eta=200.0, progress=49, since=(87.0, 49)),
            0.5 * 51 * 87 / 49,
        ),
        # ... but not when that eta comes sooner.
        (
            Observation(age=87.0, status=P, eta=200.0, progress=1, since=(87.0, 1)),
            0.3 * 200 + LEAD,
        ),
        # Etas whose ratios scattered (a different error for each task) plan nothing: the
        # blind backoff (backoff times the age) instead ...
        (
            Observation(
                age=2.0, status=Q, eta=100.0, calibration=Calibration(eta_low=0.01, eta_high=1.8)
            ),
            S.backoff * 2.0,
        ),
        # ... while etas steadily 4 times too long are as good as right ones.
        (
            Observation(
                age=2.0, status=Q, eta=100.0, calibration=Calibration(eta_low=0.25, eta_high=0.26)
            ),
            0.26 * 100,
        ),
        # A believed eta that agrees with progress plans (it scatters less): its latest end.
        (
            Observation(
                age=100.0,
                status=P,
                eta=10.0,
                progress=90,
                since=(0.0, 0),
                calibration=Calibration(eta_low=0.98, eta_high=1.02),
            ),
            10 * 1.02,
        ),
        # ... one that contradicts the task's own readings does not: the earlier wins,
        # progress's, whose latest end (6 % left at 30 % in 20 s) comes at its earliest + LEAD.
        (
            Observation(
                age=76.0,
                status=P,
                eta=17.0,
                progress=94,
                since=(56.0, 63),
                calibration=Calibration(eta_low=0.95, eta_high=1.15),
            ),
            6 / (30 / 20),
        ),
        # Nothing from the server: the typical duration of tasks that ended says when.
        (Observation(age=2.0, status=Q, typical=50.0), 0.5 * 50 - 2),  # a look halfway ...
        (Observation(age=30.0, status=Q, typical=50.0), S.backoff * 30),  # ... then blind
        (Observation(age=2.0, status=Q, typical=500.0), S.max_interval),
        (Observation(age=160.0, status=Q, typical=150.0), S.backoff * 160),
        # A task the server never estimated backs off on its age (backoff times it) ...
        (Observation(age=2.0, status=Q), S.backoff * 2),
        (Observation(age=20.0, status=Q), S.backoff * 20),
        (Observation(age=1000.0, status=Q), S.max_interval),
        (Observation(age=0.1, status=Q), S.min_interval),
        # ... and once it runs (it may end any moment), at most blind_share of its age
        # apart, or overdue_max when that is longer: a share of its age late at most.
        (Observation(age=8.0, status=P), S.backoff * 8),
        (Observation(age=20.0, status=P), S.overdue_max),
        (Observation(age=1000.0, status=P), S.blind_share * 1000),
        # Overdue (its eta ran out or read 0, its expected end passed): checked a second
        # after, then at intervals growing with how overdue (0.1 of it), never over 4 s ...
        (Observation(age=100.0, status=P, eta=None, expected_end=99.7), S.overdue_interval),
        (Observation(age=100.0, status=P, eta=0, progress=55, expected_end=99.7), 1.0),
        (Observation(age=130.0, status=P, expected_end=100.0), 0.1 * 30),
        (Observation(age=160.0, status=P, expected_end=100.0), S.overdue_max),
        # ... whatever its age: the lateness of a notice does not grow with it.
        (Observation(age=100_000.0, status=P, expected_end=100.0), S.overdue_max),
        # An earlier estimate not yet run out is waited for.
        (Observation(age=90.0, status=P, eta=0, expected_end=99.7), 99.7 - 90),
        # An overdue task whose progress stalled stays overdue (no speed from it).
        (
            Observation(age=110.0, status=P, progress=50, since=(100.0, 50), expected_end=100),
            S.overdue_interval,
        ),
        # A later estimate comes first, though: progress says "not yet" at 30 %.
        (
            Observation(age=100.0, status=P, progress=30, since=(70.0, 0), expected_end=99.7),
            68 / fastest(30, 30) + LEAD,
        ),
        # An unknown status is not trusted to follow the typical duration: blind looks.
        (Observation(age=2.0, status=U, typical=150.0), S.backoff * 2),
    ],
)
def test_next_check_delay(observation: Observation, expected: float) -> None:
    assert plan_next_check(observation, S).delay == pytest.approx(expected)


@pytest.mark.parametrize(
    ("observation", "expected_end"),
    [
        (Observation(age=2.0, status=Q, eta=100.0, calibration=EXACT), 102.0),
        (Observation(age=2.0, status=Q, eta=100.0), 62.0),
        (Observation(age=60.0, status=P, progress=40, since=(30.0, 20)), 60 + 58 / fastest(20, 30)),
        (Observation(age=2.0, status=Q, typical=50.0), None),  # no estimate of the server's
        (Observation(age=2.0, status=Q), None),
    ],
)
def test_a_plan_says_when_it_expects_the_end(
    observation: Observation, expected_end: float | None
) -> None:
    assert plan_next_check(observation, S).expected_end == pytest.approx(expected_end)


def test_a_plan_reports_what_each_source_said() -> None:
    plan = plan_next_check(
        Observation(age=60.0, status=P, eta=200.0, progress=40, since=(30.0, 20)), S
    )
    assert plan.eta_left == 200.0
    assert plan.progress_left == pytest.approx(58 / fastest(20, 30))


@pytest.mark.parametrize(
    ("observation", "bounds"),
    [
        (
            Observation(age=60.0, status=P, progress=40, since=(30.0, 20)),
            (58 / 0.7, 60 / (19 / 30)),
        ),
        # A single percent gained: any speed from 0 to 2 % over the span.
        (Observation(age=60.0, status=P, progress=21, since=(30.0, 20)), (77 / (2 / 30), None)),
        # No second reading, no gain, or not running: nothing to say.
        (Observation(age=60.0, status=P, progress=40), None),
        (Observation(age=60.0, status=P, progress=40, since=(60.0, 40)), None),
        (Observation(age=60.0, status=P, progress=40, since=(30.0, 40)), None),
        (Observation(age=60.0, status=Q, progress=40, since=(30.0, 20)), None),
    ],
)
def test_remaining_from_progress(
    observation: Observation, bounds: tuple[float, float | None] | None
) -> None:
    got = remaining_from_progress(observation)
    if bounds is None:
        assert got is None
        return
    assert got is not None
    assert got[0] == pytest.approx(bounds[0])
    if bounds[1] is None:
        assert got[1] == float("inf")
    else:
        assert got[1] == pytest.approx(bounds[1])


def test_calibration_learns_the_band_after_enough_tasks() -> None:
    assert Calibration.learn([1.0] * 4, [], after=5) == Calibration()
    ratios = [0.6 + 0.1 * k for k in range(11)]  # 0.6 .. 1.6
    learned = Calibration.learn(ratios, [1.0] * 5, after=5)
    assert learned.eta_low == pytest.approx(0.6)
    assert learned.eta_high == pytest.approx(1.6)
    assert learned.eta_spread == pytest.approx(1.6 / 0.6)
    assert learned.progress_spread == pytest.approx(1.0)
    assert Calibration().eta_spread == float("inf")


def test_a_schedule_must_make_sense() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        PollSchedule(min_interval=10.0, max_interval=1.0)
    with pytest.raises(ValueError, match="blind_share"):
        PollSchedule(blind_share=0)
    with pytest.raises(ValueError, match="overdue_interval"):
        PollSchedule(overdue_interval=5.0, overdue_max=4.0)


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        # With webhooks, an eta is trusted past the cap, and the check comes after it.
        (Observation(age=2.0, status=P, eta=200.0), 200.0 + 30.0),
        (Observation(age=2.0, status=P, eta=0.1), 0.25 + 30.0),
        # Without an eta, the usual schedule, 30 s later.
        (Observation(age=8.0, status=P), 4.0 + 30.0),
        (Observation(age=1000.0, status=Q), 120.0 + 30.0),
    ],
)
def test_next_check_delay_behind_webhooks(observation: Observation, expected: float) -> None:
    assert plan_next_check(observation, S, fallback=30.0).delay == pytest.approx(expected)


@pytest.mark.parametrize(
    ("name", "old", "value"),
    [
        ("trusted_eta", 30.0, 10.0),
        ("first_check", 2.0, 0.25),
        ("blind_max", 15.0, 5.0),
        ("eta_lead", 0.3, 0.1),
    ],
)
def test_fields_that_fixed_a_time_scale_are_deprecated_but_still_accepted(
    name: str, old: float, value: float
) -> None:
    # Documented, silent when left alone (warnings are errors here) ...
    assert getattr(PollSchedule(), name) == old
    # ... and a plan is the same whatever they say.
    with pytest.warns(DeprecationWarning, match=name):
        schedule = PollSchedule(**{name: value})
    assert getattr(schedule, name) == value
    for observation in (
        Observation(age=2.0, status=Q, eta=100.0),
        Observation(age=1000.0, status=P),
        Observation(age=60.0, status=P, progress=40, since=(30.0, 20)),
    ):
        assert plan_next_check(observation, schedule) == plan_next_check(
            observation, PollSchedule()
        )
