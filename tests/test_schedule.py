"""The poll schedule as a table: eta first, then progress, then what this client learned."""

from __future__ import annotations

import pytest

from novita_video import PollSchedule, TaskStatus
from novita_video._schedule import Observation, next_check_delay

Q, P, U = TaskStatus.QUEUED, TaskStatus.PROCESSING, TaskStatus.UNKNOWN
S = PollSchedule(
    first_check=2.0,
    min_interval=0.25,
    max_interval=120.0,
    eta_lead=0.3,
    progress_lead=1.5,
    progress_trust=0.9,
    backoff=0.5,
)


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        # The server's eta decides, checked just before it runs out.
        (Observation(age=2.0, status=P, eta=4.0, progress=30), 3.7),
        (Observation(age=2.0, status=Q, eta=100.0), 99.7),
        (Observation(age=9.0, status=P, eta=1.0, progress=99), 0.7),
        (Observation(age=2.0, status=P, eta=0.1), 0.25),  # never below the floor
        (Observation(age=2.0, status=P, eta=1000.0), 120.0),  # never past the cap
        # Without an eta: two progress readings give the speed; 90% of the time left
        # is believed, and the check aims 1.5 s early ...
        (Observation(age=60.0, status=P, progress=40, previous=(30.0, 20)), 0.9 * 90 - 1.5),
        (Observation(age=60.0, status=P, progress=90, previous=(30.0, 60)), 0.9 * 10 - 1.5),
        # ... until the end is that near: then every 1.5 s.
        (Observation(age=60.0, status=P, progress=98, previous=(30.0, 60)), 1.5),
        # One reading, or progress that went nowhere since it: the geometric backoff.
        (Observation(age=10.0, status=P, progress=50), 5.0),
        (Observation(age=10.0, status=P, progress=50, previous=(10.0, 50)), 5.0),
        (Observation(age=20.0, status=P, progress=50, previous=(10.0, 50)), 10.0),
        # Nothing from the server: what this client learned of typical durations ...
        (Observation(age=2.0, status=Q, typical=50.0), 48.0),
        (Observation(age=2.0, status=Q, typical=500.0), 120.0),
        # ... and once past it, or with nothing learned, the backoff.
        (Observation(age=160.0, status=Q, typical=150.0), 80.0),
        (Observation(age=2.0, status=Q), 1.0),
        (Observation(age=8.0, status=P), 4.0),
        (Observation(age=1000.0, status=Q), 120.0),
        (Observation(age=0.1, status=Q), 0.25),
        # An unknown status is not trusted to follow the typical duration.
        (Observation(age=2.0, status=U, typical=150.0), 1.0),
    ],
)
def test_next_check_delay(observation: Observation, expected: float) -> None:
    assert next_check_delay(observation, S) == pytest.approx(expected)


def test_a_schedule_must_make_sense() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        PollSchedule(min_interval=10.0, max_interval=1.0)
    with pytest.raises(ValueError, match="first_check"):
        PollSchedule(first_check=0)


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
    assert next_check_delay(observation, S, fallback=30.0) == pytest.approx(expected)
