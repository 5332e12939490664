"""The ETA against the truth, on runs played on virtual time through the tally's own
seams (its clock, :meth:`Tally.move`, :meth:`Tally.learn`): paced sends, bursts (a raised
``--rpm``: everything out in seconds, then the slowest of many running tasks), a mix of
the two, long-tailed task times, and reruns that resume tasks and skip settled prompts.

What is held, at every quarter second (or 1/400 of the run) of each run:

- from the first second, an ETA is said (a bound, a range or a number, never ``-``);
- from the point a minority of the run's prompts settled (a tenth when sending takes
  longer than a task, :data:`BURST_FROM` when all go out at once or sending and running
  take about as long; see there) to four
  fifths settled, a number is within ±50 % of the true remaining time ``T`` (or within a
  second: it is said in whole seconds), and a range ``low to high`` is one that such a
  number lies in (``low <= 1.5 T``, ``high >= T / 2``);
- a range is not what is said most of the time: at most a third of what the runs of one
  table said in that window (long-tailed bursts are the ones that say ranges longest).

After four fifths, what is left is the last few tasks of the tail (in a run of 100, the
slowest 20): a second or two on the simulator, where ±50 % is rounding.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs
import pytest

from novita_video.cli._progress import Estimate, Tally

Draw = Callable[[random.Random], float]

#: From a tenth settled, a paced run has seen tasks as long as any (its first were
#: sent long before): the ETA is within ±50 % from there, as issue 23 asks.
PACED_FROM = 0.1
#: A burst sees only the quick end of the task times until half have settled: the
#: shapes that fit that end (ends evenly spread, a bell, a long tail) foretell last ends
#: up to 2.5 times apart, and only the ends after the busiest time tell them apart. From
#: two fifths settled (still a minority) the one that fits is known well enough; before,
#: the ETA is a range where the shapes disagree, else the best one's number, not held to
#: ±50 %.
BURST_FROM = 0.4
#: Up to four fifths settled (see the module docstring).
UNTIL = 0.8
#: The ETA is said in whole seconds: an error under a second is not seen.
SAID_IN = 1.0


class Clock:
    """Virtual seconds, for a Tally."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@attrs.frozen
class Run:
    """A run to play: ``total`` prompts; ``before`` of them settled by an earlier run
    (their times learned from the ledger), ``resumed`` tasks made by it and still out
    (of ages up to ``oldest`` seconds at the start), the rest sent at ``per_second``."""

    total: int
    per_second: float
    duration: Draw
    before: int = 0
    resumed: int = 0
    oldest: float = 0.0


@attrs.frozen
class Seen:
    """What the ETA said at one moment, and the truth."""

    settled: float  # the share of this run's prompts settled
    truth: float
    said: Estimate | None


def play(run: Run, seed: int) -> list[Seen]:
    """Play ``run`` on virtual time; what the ETA said at every step."""
    rng = random.Random(seed)
    clock = Clock()
    tally = Tally(run.total, rpm=60 * run.per_second, clock=clock)
    for _ in range(run.before):
        tally.finished_before += 1
        tally.move("queued", "done")
        tally.learn(run.duration(rng))
    events: list[tuple[float, int, str]] = []  # (when, 0 sent / 1 settled, key)
    for number in range(run.resumed):
        age = rng.uniform(0, run.oldest)
        duration = run.duration(rng)
        while duration <= age:  # a task still out at its age: one that takes longer
            duration = run.duration(rng)
        tally.move("queued", "processing", f"r{number}", age=age)
        events.append((duration - age, 1, f"r{number}"))
    for number in range(run.total - run.before - run.resumed):
        sent = number / run.per_second
        events += [(sent, 0, str(number)), (sent + run.duration(rng), 1, str(number))]
    events.sort()
    end = events[-1][0]
    step = max(0.25, end / 400)
    this_run = run.total - run.before
    seen, done, now = [], 0, 0.0
    while now < end:
        while done < len(events) and events[done][0] <= now:
            clock.now, settles, key = events[done]
            tally.move(*(("processing", "done") if settles else ("queued", "processing")), key)
            done += 1
        clock.now = now
        settled = (tally.finished - run.before) / this_run
        seen.append(Seen(settled, end - now, tally.estimate()))
        now += step
    return seen


@attrs.define
class Verdict:
    """The promises of the module docstring, over runs."""

    wrong: list[str] = attrs.Factory(list)
    said: int = 0
    ranges: int = 0

    def hold(self) -> None:
        assert not self.wrong, self.wrong[:5]
        # A range is not what is said most of the time.
        assert self.ranges <= self.said / 3, f"{self.ranges} ranges of {self.said}"


def check(run: Run, seed: int, held_from: float, verdict: Verdict) -> None:
    """Play ``run`` and add what its ETA said to ``verdict``."""
    seen = play(run, seed)
    assert all(moment.said is not None for moment in seen), "an ETA from the first second"
    window = [moment for moment in seen if held_from <= moment.settled <= UNTIL]
    assert window
    verdict.said += len(window)
    for moment in window:
        said, truth = moment.said, moment.truth
        assert said is not None
        if said.up_to is None:
            right = abs(said.seconds - truth) <= max(0.5 * truth, SAID_IN)
        else:
            verdict.ranges += 1
            right = said.seconds <= truth + max(0.5 * truth, SAID_IN)
            right = right and said.up_to >= truth - max(0.5 * truth, SAID_IN)
        if not right:
            verdict.wrong.append(f"{said} for {truth:.1f}s at {moment.settled:.0%} settled")


def uniform(low: float, high: float) -> Draw:
    return lambda rng: rng.uniform(low, high)


def bell(mean: float, spread: float) -> Draw:
    return lambda rng: max(mean / 6, rng.gauss(mean, spread))


def long_tail(median: float, spread: float) -> Draw:
    """Log-normal: a few tasks several times slower than the rest."""
    return lambda rng: median * rng.lognormvariate(0, spread)


SEEDS = (1, 2, 3)

PACED = {
    # `batch --simulate`: 120 submits a minute, tasks of 3 to 8 s.
    "simulate-40": Run(40, 2.0, uniform(3, 8)),
    "simulate-400": Run(400, 2.0, uniform(3, 8)),
    # Novita: 20 submits a minute, tasks of minutes.
    "novita-200": Run(200, 1 / 3, uniform(120, 300)),
    "novita-200-bell": Run(200, 1 / 3, bell(180, 40)),
    # Tasks twice as long as sending them all takes.
    "sent-in-half": Run(100, 1.0, uniform(30, 60)),
}

BURSTS = {
    # `--rpm` raised: 100 to 10,000 prompts out in 2 to 33 s, all tasks running at once.
    "simulate-100": Run(100, 50.0, uniform(3, 8)),
    "simulate-1000": Run(1000, 300.0, uniform(3, 8)),
    "command-10k": Run(10_000, 300.0, uniform(3, 8)),
    "novita-200": Run(200, 20.0, uniform(120, 300)),
    "novita-200-bell": Run(200, 20.0, bell(180, 40)),
}

LONG_TAILED = {
    # Task times of a median of a minute, one in 20 over 2.3 minutes, the slowest 4x.
    "paced": (Run(200, 1 / 3, long_tail(60, 0.5)), PACED_FROM),
    "burst": (Run(500, 50.0, long_tail(60, 0.5)), BURST_FROM),
}

MIXED = {
    # Sending takes 100 s, tasks 60 to 200 s: neither governs alone.
    "send-100s-tasks-60-200s": Run(100, 1.0, uniform(60, 200)),
    # Half the tasks' time to send, at the simulator's rate.
    "send-20s-tasks-20-50s": Run(40, 2.0, uniform(20, 50)),
}

RERUNS = {
    # Half settled before, a fifth resumed (made up to 2 minutes ago), the rest sent.
    "novita-paced": (Run(200, 1 / 3, uniform(120, 300), 100, 40, 120.0), PACED_FROM),
    # A burst rerun of the simulator: a tenth resumed, some out for most of a task.
    "simulate-burst": (Run(400, 100.0, uniform(3, 8), 100, 40, 6.0), BURST_FROM),
    # Only resumed tasks left: nothing to send, every ETA is the slowest task out's.
    "only-resumed": (Run(200, 1 / 3, bell(180, 40), 100, 100, 170.0), PACED_FROM),
}


@pytest.mark.parametrize("seed", SEEDS)
def test_paced_runs(seed: int) -> None:
    """Sending takes longer than a task: the ETA is the sending left and a slow task.
    (The regime the ETA already held, these rows moved here from test_cli_progress.py:
    kept to ±50 % with the tail's new shapes and ranges.)"""
    verdict = Verdict()
    for run in PACED.values():
        check(run, seed, PACED_FROM, verdict)
    verdict.hold()


@pytest.mark.parametrize("seed", SEEDS)
def test_bursts(seed: int) -> None:
    """Everything out at once: the ETA is the slowest of the tasks running, foretold
    from the curve of the quicker ones (it was up to 2.5 times early)."""
    verdict = Verdict()
    for run in BURSTS.values():
        check(run, seed, BURST_FROM, verdict)
    verdict.hold()


@pytest.mark.parametrize("seed", SEEDS)
def test_long_tailed_task_times(seed: int) -> None:
    verdict = Verdict()
    for run, held_from in LONG_TAILED.values():
        check(run, seed, held_from, verdict)
    verdict.hold()


@pytest.mark.parametrize("seed", SEEDS)
def test_a_mix_of_sending_and_running(seed: int) -> None:
    verdict = Verdict()
    for run in MIXED.values():
        check(run, seed, BURST_FROM, verdict)
    verdict.hold()


@pytest.mark.parametrize("seed", SEEDS)
def test_reruns(seed: int) -> None:
    """A rerun skips the settled prompts (their times teach the ETA from its first
    second) and waits for the tasks made before it, by their true ages."""
    verdict = Verdict()
    for run, held_from in RERUNS.values():
        check(run, seed, held_from, verdict)
    verdict.hold()


def test_a_rerun_knows_task_times_before_anything_settles() -> None:
    """The times of an earlier run's tasks give a number at once, not a bound."""
    clock = Clock()
    tally = Tally(20, rpm=60, clock=clock)
    for _ in range(10):
        tally.finished_before += 1
        tally.move("queued", "done")
        tally.learn(30.0 + len(str(clock.now)))
    found = tally.estimate()
    assert found is not None
    assert not found.at_least
    # 10 to send at one a second, the last one then takes half a minute or so.
    assert 10 + 20 <= found.seconds <= 10 + 60


def test_a_resumed_task_counts_by_its_age() -> None:
    """A task made a minute before the run, of a kind that takes 70 s: 10 s left."""
    clock = Clock()
    tally = Tally(21, rpm=60, clock=clock)
    for _ in range(20):
        tally.finished_before += 1
        tally.move("queued", "done")
        tally.learn(70.0)
    tally.move("queued", "processing", "old", age=60.0)
    found = tally.estimate()
    assert found is not None
    assert 5 <= found.seconds <= 15
    clock.now = 10.0
    tally.move("processing", "done", "old")
    assert tally.estimate() == Estimate(0.0)


def test_a_range_is_said_as_one() -> None:
    assert str(Estimate(70, up_to=185)) == "1m10s to 3m05s"
    assert Estimate(70, up_to=185).later(10) == Estimate(60, up_to=175)
    assert str(Estimate(20, at_least=True)) == "at least 20s"


def test_any_run_gets_a_finite_eta() -> None:
    """Whatever comes (tasks of no time, all alike, resumed ones older than any seen,
    no rate given, an infinite one): the ETA is a finite time, a bound or an ordered
    range, 0 only once every prompt settled, and the line is said."""
    rng = random.Random(23)
    for _ in range(500):
        clock = Clock()
        total = rng.randint(1, 30)
        tally = Tally(total, rpm=rng.choice([None, 0.5, 60.0, 6000.0, float("inf")]), clock=clock)
        out: list[str] = []
        for number in range(total):
            kind = rng.random()
            if kind < 0.2:
                tally.finished_before += 1
                tally.move("queued", "done")
                tally.learn(rng.choice([0.0, 1.0, 5.0, rng.uniform(0, 100)]))
            else:
                clock.now += rng.choice([0.0, 0.1, 1.0])
                age = rng.choice([0.0, 3.0, rng.uniform(0, 500)]) if kind < 0.4 else 0.0
                tally.move("queued", "processing", str(number), age=age)
                out.append(str(number))
            if out and rng.random() < 0.3:
                clock.now += rng.choice([0.0, 0.5, 3.0])
                key = out.pop(rng.randrange(len(out)))
                tally.move("processing", rng.choice(["done", "failed", "unknown"]), key)
            found = tally.estimate()
            assert found is not None or tally.submit_rate() is None
            if found is not None:
                assert 0 <= found.seconds < 1e9
                assert found.up_to is None or found.seconds <= found.up_to < 1e9
                # A task out (a straggler past every estimate too) is not over yet.
                assert (found.seconds > 0) == (tally.finished < total)
            assert " ETA " in tally.describe()
