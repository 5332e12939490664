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
    first_check=2.0,
    min_interval=0.25,
    max_interval=120.0,
    eta_lead=0.3,
    unverified_eta=0.6,
    progress_lead=1.5,
    backoff=0.5,
    blind_max=15.0,
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


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        # A short eta is believed, checked just before it runs out.
        (Observation(age=2.0, status=P, eta=4.0, progress=30), 2.3333333333333335),
        (Observation(age=9.0, status=P, eta=1.0, progress=99), 0.25),
        (Observation(age=2.0, status=P, eta=0.1), 0.25),  # never below the floor
        # A long eta nobody has checked yet: a look part of the way reads the progress.
        (Observation(age=2.0, status=Q, eta=100.0), 61.5),
        # Etas that proved right are believed whole ...
        (Observation(age=2.0, status=Q, eta=100.0, calibration=EXACT), 100.0),
        (Observation(age=2.0, status=P, eta=1000.0, calibration=EXACT), 120.0),  # the cap
        # ... and etas that run 40 % long, as far as they proved right.
        (Observation(age=2.0, status=Q, eta=100.0, calibration=LONG_ETAS), 71.5),
        # Two progress readings: the fastest speed they allow, the check 0.3 s early ...
        (
            Observation(age=60.0, status=P, progress=40, since=(30.0, 20)),
            84.35714285714286,
        ),
        (Observation(age=60.0, status=P, progress=90, since=(30.0, 60)), 6.666666666666667),
        # ... the first reading may be the 0 % of a task just out of the queue ...
        (Observation(age=70.0, status=P, progress=30, since=(40.0, 0)), 67.30645161290322),
        # ... learned ratios scale it ...
        (
            Observation(
                age=60.0,
                status=P,
                progress=40,
                since=(30.0, 20),
                calibration=Calibration(progress_low=1.1, progress_high=1.2),
            ),
            90.0,
        ),
        # ... and near the end, a check every 1.5 s ...
        (Observation(age=60.0, status=P, progress=98, since=(30.0, 60)), 1.2244897959183674),
        # ... or sooner, when the readings say the end comes sooner still (a short task:
        # 4 % left at 5-5.7 % a second, so 0.8 s at the latest).
        (Observation(age=5.0, status=P, progress=96, since=(2.0, 80)), 0.25),
        # A short eta (believed) disagrees with that progress: the earlier plan wins.
        (Observation(age=5.0, status=P, eta=1.0, progress=96, since=(2.0, 80)), 0.25),
        # Both speak, nothing learned: the earlier end wins.
        (
            Observation(age=60.0, status=P, eta=200.0, progress=40, since=(30.0, 20)),
            84.35714285714286,
        ),
        (
            Observation(age=60.0, status=P, eta=20.0, progress=40, since=(30.0, 20)),
            0.6 * 20 + 1.5,
        ),
        # Both speak: the source whose learned ratios scatter least wins, even if later.
        (
            Observation(
                age=60.0,
                status=P,
                eta=100.0,
                progress=40,
                since=(30.0, 20),
                calibration=LOOSE_PROGRESS,
            ),
            90.0,
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
            min(60 / (19 / 30) * 1.02, 0.98 * 58 / fastest(20, 30) + 1.5),
        ),
        # One reading of a running task: it ran at most since submission (or since last
        # seen queued), so it goes at least that fast; half the time left that allows
        # brings a second reading in time ...
        (
            Observation(age=87.0, status=P, progress=49, since=(87.0, 49), typical=400.0),
            0.5 * 51 * 87 / 49,
        ),
        (
            Observation(age=87.0, status=P, progress=49, since=(87.0, 49), queued_until=60.0),
            0.5 * 51 * 27 / 49,
        ),
        # ... sooner than a long, unproven eta would have it (half of 0.6 of it).
        (
            Observation(age=87.0, status=P, eta=200.0, progress=49, since=(87.0, 49)),
            0.5 * 51 * 87 / 49,
        ),
        (Observation(age=87.0, status=P, eta=200.0, progress=1, since=(87.0, 1)), 61.5),
        # Etas whose ratios scattered (a different error for each task) plan nothing ...
        (
            Observation(
                age=2.0, status=Q, eta=100.0, calibration=Calibration(eta_low=0.01, eta_high=1.8)
            ),
            0.5 * 2.0,  # the blind backoff
        ),
        # ... while etas steadily 4 times too long are as good as right ones.
        (
            Observation(
                age=2.0, status=Q, eta=100.0, calibration=Calibration(eta_low=0.25, eta_high=0.26)
            ),
            26.0,
        ),
        # A believed eta that agrees with progress plans (it scatters less) ...
        (
            Observation(
                age=100.0,
                status=P,
                eta=10.0,
                progress=90,
                since=(0.0, 0),
                calibration=Calibration(eta_low=0.98, eta_high=1.02),
            ),
            10.2,
        ),
        # ... one that contradicts the task's own readings does not: the earlier wins.
        (
            Observation(
                age=76.0,
                status=P,
                eta=17.0,
                progress=94,
                since=(56.0, 63),
                calibration=Calibration(eta_low=0.95, eta_high=1.15),
            ),
            4.0,
        ),
        # Nothing from the server: the typical duration of tasks that ended says when.
        (Observation(age=2.0, status=Q, typical=50.0), 23.0),  # a look halfway ...
        (Observation(age=30.0, status=Q, typical=50.0), 15.0),  # ... then blind
        (Observation(age=2.0, status=Q, typical=500.0), 120.0),
        # A task the server never estimated backs off, at most 15 s apart ...
        (Observation(age=2.0, status=Q), 1.0),
        (Observation(age=20.0, status=Q), 10.0),
        (Observation(age=1000.0, status=Q), 120.0),
        (Observation(age=0.1, status=Q), 0.25),
        (Observation(age=8.0, status=P), 4.0),
        (Observation(age=1000.0, status=P), 15.0),
        (Observation(age=160.0, status=Q, typical=150.0), 80.0),
        # Overdue (its eta ran out or read 0, its expected end passed): checked a second
        # after, then at intervals growing with how overdue, never over 4 s ...
        (Observation(age=100.0, status=P, eta=None, expected_end=99.7), 1.0),
        (Observation(age=100.0, status=P, eta=0, progress=55, expected_end=99.7), 1.0),
        (Observation(age=130.0, status=P, expected_end=100.0), 3.0),
        (Observation(age=160.0, status=P, expected_end=100.0), 4.0),
        # ... whatever its age: the lateness of a notice does not grow with it.
        (Observation(age=100_000.0, status=P, expected_end=100.0), 4.0),
        # An earlier estimate not yet run out is waited for.
        (Observation(age=90.0, status=P, eta=0, expected_end=99.7), 9.7),
        # An overdue task whose progress stalled stays overdue (no speed from it).
        (Observation(age=110.0, status=P, progress=50, since=(100.0, 50), expected_end=100), 1.0),
        # A later estimate comes first, though: progress says "not yet" at 30 %.
        (
            Observation(age=100.0, status=P, progress=30, since=(70.0, 0), expected_end=99.7),
            67.30645161290322,
        ),
        # An unknown status is not trusted to follow the typical duration.
        (Observation(age=2.0, status=U, typical=150.0), 1.0),
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
    with pytest.raises(ValueError, match="first_check"):
        PollSchedule(first_check=0)
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


def test_trusted_eta_is_deprecated_but_still_accepted() -> None:
    assert PollSchedule().trusted_eta == 30.0  # documented, silent when left alone
    with pytest.warns(DeprecationWarning, match="trusted_eta"):
        schedule = PollSchedule(trusted_eta=10.0)
    assert schedule.trusted_eta == 10.0
