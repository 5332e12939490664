"""The scenarios of the issues, each a list of runs and the targets judged from them.

Every target is "measured <= limit"; a figure from a run that broke or lost a task is
NaN, and NaN fails. Where a scenario repeats, targets are judged on the median.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ._harness import ContenderSpec, RunResult, SimulatorSpec

#: Runs one contender against a fresh simulator: (scenario, repeat, simulator, contender, n).
Runner = Callable[[str, int, SimulatorSpec, ContenderSpec, int], RunResult]

# The loop a user writes: as many requests in flight as our client's submitters.
HAND_LOOP = ContenderSpec("hand_loop", "contender_hand_loop", ("--concurrency", "32"))
# ThreadPoolExecutor's default (min(32, cores + 4) = 6 here) would take ~12 minutes for
# 1,000 tasks; 100 threads keep it within a minute without drowning in GIL contention.
NOVITA_CLIENT = ContenderSpec("novita_client", "contender_novita_client", ("--workers", "100"))


def hand_loop(label: str, interval: float) -> ContenderSpec:
    """The hand loop polling every ``interval`` seconds of task time."""
    return ContenderSpec(
        label, "contender_hand_loop", ("--concurrency", "32", "--poll-interval", str(interval))
    )


def ours_at_defaults(label: str, **flags: str) -> ContenderSpec:
    """Our client with its defaults (what users get), but for the given flags."""
    argv: tuple[str, ...] = ()
    for name, setting in flags.items():
        argv += (f"--{name.replace('_', '-')}", setting)
    return ContenderSpec(label, "contender_novita_video", argv)


def ours(label: str, n: int, *, submit_rpm: str, webhook: str = "off") -> ContenderSpec:
    """Our client as configured for a batch of ``n``: see the README for why these values.

    32 submitters (as many requests in flight as the hand loop), no poll limit (the
    simulator has none), 16 concurrent checks (tasks of a batch end in bursts), and room
    for the whole batch outstanding at once.
    """
    return ContenderSpec(
        label,
        "contender_novita_video",
        (
            "--concurrency", "32",
            "--submit-rpm", submit_rpm,
            "--poll-rpm", "inf",
            "--poll-concurrency", "16",
            "--max-outstanding", str(n),
            "--webhook", webhook,
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class Target:
    """One requirement: ``measured <= limit``."""

    key: str
    text: str
    measured: float
    limit: float
    unit: str = ""
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.measured <= self.limit  # False for NaN

    @property
    def headroom(self) -> float:
        """How far under the limit, as a share of it (negative: over it)."""
        return (self.limit - self.measured) / self.limit if self.limit else math.nan


@dataclass
class ScenarioResult:
    key: str
    title: str
    runs: list[RunResult] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def value(run: RunResult, figure: float) -> float:
    """``figure`` of ``run``, or NaN if the run did not hand over every task."""
    return figure if run.ok else math.nan


def median(values: Sequence[float]) -> float:
    """The median, NaN if any value is (a broken run must not hide behind the others)."""
    if not values or any(math.isnan(v) for v in values):
        return math.nan
    return statistics.median(values)


def scenario_1(run: Runner, *, quick: bool) -> ScenarioResult:
    """1,000 tasks of 2-6 s, no server limit: polls, latency, CPU and wall vs the hand loop."""
    n, repeats = (200, 1) if quick else (1000, 3)
    result = ScenarioResult("1", f"{n} tasks of 2-6 s, no server limit")
    mine = ours("novita_video", n, submit_rpm="inf")
    # The same batch with the client's own poll settings (budget, checks in flight).
    default_polls = ours_at_defaults(
        "novita_video, default polls", concurrency="32", submit_rpm="inf", max_outstanding=str(n)
    )
    default_runs: list[RunResult] = []
    pairs: list[tuple[RunResult, RunResult]] = []
    for repeat in range(repeats):
        # Both contenders of a repeat face the same seed, so the same task durations;
        # the order alternates so that drift on a shared machine favours neither.
        sim = SimulatorSpec(task_duration=(2.0, 6.0), seed=100 + repeat)
        order = (mine, HAND_LOOP) if repeat % 2 == 0 else (HAND_LOOP, mine)
        first, second = (run("1", repeat, sim, spec, n) for spec in order)
        pair = (first, second) if repeat % 2 == 0 else (second, first)
        pairs.append(pair)
        default_runs.append(run("1", repeat, sim, default_polls, n))
        result.runs += [first, second, default_runs[-1]]
        if repeat == 0:
            # The synchronous SDK is too slow to repeat; once shows where it stands.
            result.runs.append(run("1", repeat, sim, NOVITA_CLIENT, n))
    our_runs = [p[0] for p in pairs]
    of = f"median of {repeats}"
    result.targets = [
        Target(
            "1a",
            "polls per task, novita_video",
            median([value(r, r.polls_per_task) for r in our_runs]),
            2.0,
            note=of,
        ),
        Target(
            "1b",
            "notice latency p95, novita_video",
            median([value(r, r.latency_p95_s) for r in our_runs]),
            1.0,
            "s",
            of,
        ),
        Target(
            "1e",
            "notice latency p95, default poll settings",
            median([value(r, r.latency_p95_s) for r in default_runs]),
            1.0,
            "s",
            of,
        ),
        Target(
            "1c",
            "CPU per task, novita_video / hand_loop",
            median([value(a, a.cpu_s) / value(b, b.cpu_s) for a, b in pairs]),
            0.8,  # issue 21 replaced 0.5: at <= 2.0 polls a task, per-request CPU within 1.5x
            "x",
            f"{of} paired ratios",
        ),
        Target(
            "1d",
            "wall time, novita_video / hand_loop",
            median([value(a, a.wall_s) / value(b, b.wall_s) for a, b in pairs]),
            1.0,
            "x",
            f"{of} paired ratios",
        ),
    ]
    return result


def scenario_2(run: Runner, *, quick: bool) -> ScenarioResult:
    """The simulator limits submits to R per second; the client is set to R, then to 2R."""
    n, rate = (60, 10) if quick else (200, 10)
    result = ScenarioResult("2", f"{n} tasks of 2-6 s, submits limited to {rate}/s")
    sim = SimulatorSpec(task_duration=(2.0, 6.0), seed=200, submit_limit=(rate, 1.0))
    at_rate = run("2", 0, sim, ours("novita_video @R", n, submit_rpm=str(60 * rate)), n)
    at_double = run("2", 0, sim, ours("novita_video @2R", n, submit_rpm=str(120 * rate)), n)
    # For comparison only (no target): the hand loop has no rate limiter, just Retry-After.
    result.runs = [at_rate, at_double, run("2", 0, sim, HAND_LOOP, n)]

    def bound(r: RunResult) -> float:
        # The ideal: submits evenly spaced at R, then the last task's mean duration.
        return n / rate + r.mean_task_s

    result.targets = [
        Target(
            "2a",
            "wall / (N/R + mean task), client at R",
            value(at_rate, at_rate.wall_s) / bound(at_rate),
            1.05,
            "x",
            _bound_note(at_rate, bound(at_rate)),
        ),
        Target(
            "2e",
            "wall / ideal client's, client at R",
            value(at_rate, at_rate.wall_s) / at_rate.ideal_wall_s,
            1.02,
            "x",
            f"ideal {at_rate.ideal_wall_s:.1f} s",
        ),
        Target(
            "2b",
            "submits answered 429, client at R",
            100 * value(at_rate, at_rate.submit_429_share),
            1.0,
            "%",
            f"{at_rate.submit_429} of {at_rate.submit_requests}",
        ),
        Target(
            "2c",
            "submits answered 429, client at 2R",
            100 * value(at_double, at_double.submit_429_share),
            10.0,
            "%",
            f"{at_double.submit_429} of {at_double.submit_requests}",
        ),
        Target(
            "2d",
            "wall / (N/R + mean task), client at 2R",
            value(at_double, at_double.wall_s) / bound(at_double),
            1.15,
            "x",
            _bound_note(at_double, bound(at_double)),
        ),
    ]
    return result


def _bound_note(r: RunResult, bound: float) -> str:
    # What no client could beat on these very tasks, to tell the SDK's share of a miss
    # from the bound's own slack.
    return (
        f"bound {bound:.1f} s; ideal client {r.ideal_wall_s / bound:.2f}x; "
        f"submits took {r.submit_span_s:.1f} s"
    )


def scenario_3(run: Runner, *, quick: bool) -> ScenarioResult:
    """Tasks of 2-5 minutes on a ScaledClock at speed 60, with and without an eta."""
    n, repeats, speed = (50, 1, 60.0) if quick else (200, 3, 60.0)
    result = ScenarioResult("3", f"{n} tasks of 2-5 min, ScaledClock speed {speed:g}")
    eta_runs: list[RunResult] = []
    no_eta_runs: list[RunResult] = []
    for repeat in range(repeats):
        for no_eta, runs in ((False, eta_runs), (True, no_eta_runs)):
            sim = SimulatorSpec(
                task_duration=(120.0, 300.0), seed=300 + repeat, speed=speed, no_eta=no_eta
            )
            label = "novita_video no-eta" if no_eta else "novita_video eta"
            runs.append(run("3", repeat, sim, ours(label, n, submit_rpm="inf"), n))
    # The hand loop and novita-client sleep real seconds, which a ScaledClock cannot
    # speed up: they are not run here (see the README).
    result.runs = eta_runs + no_eta_runs
    of = f"median of {repeats}"
    virtual = f"virtual seconds, {of}"
    result.targets = [
        Target(
            "3a",
            "polls per task, exact eta",
            median([value(r, r.polls_per_task) for r in eta_runs]),
            6.0,
            note=of,
        ),
        Target(
            "3b",
            "polls per task, no eta",
            median([value(r, r.polls_per_task) for r in no_eta_runs]),
            15.0,
            note=of,
        ),
        Target(
            "3c",
            "notice latency p95, exact eta",
            median([value(r, r.latency_p95_s) for r in eta_runs]),
            3.0,
            "s",
            virtual,
        ),
        Target(
            "3d",
            "notice latency p95, no eta",
            median([value(r, r.latency_p95_s) for r in no_eta_runs]),
            3.0,
            "s",
            virtual,
        ),
    ]
    return result


def scenario_4(run: Runner, *, quick: bool) -> ScenarioResult:
    """10,000 tasks outstanding at once in one process: peak memory vs the hand loop."""
    # Tasks must outlast the whole submit phase (~20 s for 10,000 submits here, checked
    # below) so that every one is outstanding at once; at speed 6 they last 30-35 s, or
    # 3-3.5 minutes of task time.
    n, duration = (2000, (40.0, 60.0)) if quick else (10_000, (180.0, 210.0))
    speed = 6.0
    result = ScenarioResult("4", f"{n} tasks outstanding at once, ScaledClock speed {speed:g}")
    sim = SimulatorSpec(task_duration=duration, seed=400, speed=speed)
    mine = run("4", 0, sim, ours("novita_video", n, submit_rpm="inf"), n)
    hand = run("4", 0, sim, HAND_LOOP, n)
    result.runs = [mine, hand]
    all_out = min(mine.peak_outstanding, hand.peak_outstanding) == n
    ratio = value(mine, mine.peak_rss_mib) / value(hand, hand.peak_rss_mib)
    result.targets = [
        Target(
            "4a",
            "peak memory, novita_video / hand_loop",
            ratio if all_out else math.nan,
            1.0,
            "x",
            f"{mine.peak_rss_mib:.1f} vs {hand.peak_rss_mib:.1f} MiB "
            f"(after imports {mine.peak_rss_at_start_mib:.1f} vs {hand.peak_rss_at_start_mib:.1f})"
            if all_out
            else f"invalid: peak outstanding {mine.peak_outstanding} / {hand.peak_outstanding}",
        )
    ]
    return result


def scenario_5(run: Runner, *, quick: bool) -> ScenarioResult:
    """Webhooks: the polls saved and the latency gained on tasks of 2-5 minutes.

    The same tasks (scenario 3's, with an exact eta) three ways: polling alone; events
    that only trigger a check (the default, since events are unsigned); trusted events.
    With webhooks, the fallback polls come 30 s later than usual.
    """
    n, speed = (50, 60.0) if quick else (200, 60.0)
    result = ScenarioResult("5", f"{n} tasks of 2-5 min with webhooks, ScaledClock speed {speed:g}")
    sim = SimulatorSpec(task_duration=(120.0, 300.0), seed=500, speed=speed)
    polling = run("5", 0, sim, ours("polling only", n, submit_rpm="inf"), n)
    verify = run("5", 0, sim, ours("webhook, verified", n, submit_rpm="inf", webhook="verify"), n)
    trust = run("5", 0, sim, ours("webhook, trusted", n, submit_rpm="inf", webhook="trust"), n)
    result.runs = [polling, verify, trust]
    base_polls = value(polling, polling.polls_per_task)
    result.targets = [
        Target(
            "5a",
            "polls per task, verified webhooks / polling",
            value(verify, verify.polls_per_task) / base_polls,
            0.7,
            "x",
            f"{verify.polls_per_task:.2f} vs {polling.polls_per_task:.2f}",
        ),
        Target(
            "5b",
            "polls per task, trusted webhooks / polling",
            value(trust, trust.polls_per_task) / base_polls,
            0.4,
            "x",
            f"{trust.polls_per_task:.2f} vs {polling.polls_per_task:.2f}",
        ),
        Target(
            "5c",
            "notice latency p95, verified webhooks / polling",
            value(verify, verify.latency_p95_s) / value(polling, polling.latency_p95_s),
            1.0,
            "x",
            f"{verify.latency_p95_s:.2f} vs {polling.latency_p95_s:.2f} virtual s",
        ),
    ]
    return result


#: Scenario 6's regimes: how the server's eta relates to the real end.
REGIMES: dict[str, dict[str, object]] = {
    "exact": {},
    "biased": {"eta_bias": (0.6, 1.5)},
    "absent": {"no_eta": True},
}


def scenario_6(run: Runner, *, quick: bool) -> ScenarioResult:
    """Real Minimax tasks at the client's defaults: 2-5 minutes after a 0-60 s queue.

    The eta is whole seconds (rounded, so it may read 0 a moment before the end), in
    three regimes: exact, off by a per-task factor of 0.6-1.5, and absent (progress
    only). Submits are limited as Novita's default (20 a minute), the client keeps its
    defaults, and hand loops polling every 5 and every 30 seconds face the same tasks.
    """
    n, repeats, speed = (60, 1, 30.0) if quick else (200, 2, 30.0)
    result = ScenarioResult(
        "6", f"{n} tasks of 2-5 min + 0-60 s queue, defaults, ScaledClock speed {speed:g}"
    )
    mine = ours_at_defaults("novita_video defaults")
    loops = (hand_loop("hand_loop 5 s", 5.0), hand_loop("hand_loop 30 s", 30.0))
    targets: list[Target] = []
    for regime, knobs in REGIMES.items():
        ours_runs: list[RunResult] = []
        for repeat in range(repeats):
            sim = SimulatorSpec(
                task_duration=(120.0, 300.0),
                seed=600 + repeat,
                speed=speed,
                submit_limit=(20, 60.0),
                queue_time=(0.0, 60.0),
                eta_rounding="round",
                **knobs,  # type: ignore[arg-type]
            )
            spec = ContenderSpec(f"{mine.label}, {regime}", mine.module, mine.flags)
            ours_runs.append(run("6", repeat, sim, spec, n))
            if repeat == 0:
                # The baselines once, on the same seed, so on the same task durations.
                for loop in loops:
                    labelled = ContenderSpec(f"{loop.label}, {regime}", loop.module, loop.flags)
                    result.runs.append(run("6", repeat, sim, labelled, n))
        result.runs += ours_runs
        of = f"median of {repeats}, virtual s"
        targets += [
            Target(
                f"6-{regime}-latency",
                f"notice latency p95, {regime} eta",
                median([value(r, r.latency_p95_s) for r in ours_runs]),
                3.0,
                "s",
                of,
            ),
            Target(
                f"6-{regime}-polls",
                f"polls per task, {regime} eta",
                median([value(r, r.polls_per_task) for r in ours_runs]),
                6.0,
                note=f"median of {repeats}",
            ),
        ]
    result.targets = targets
    return result


#: Scenario 7's scales: (task run, queue) in seconds, and the ScaledClock speed that
#: keeps each cell to seconds of real time.
SCALES: dict[str, tuple[tuple[float, float], tuple[float, float], float]] = {
    "8-15 s": ((8.0, 15.0), (0.0, 3.0), 2.0),
    "20-45 s": ((20.0, 45.0), (0.0, 8.0), 5.0),
    "2-5 min": ((120.0, 300.0), (0.0, 60.0), 30.0),
}


def scenario_7(run: Runner, *, quick: bool) -> ScenarioResult:
    """A cold burst at three scales: every prompt submitted at once, nothing learned.

    200 tasks of each scale (queued first), the eta rounded to whole seconds, exact,
    off by a per-task factor of 0.6-1.5, or absent (progress only). Our client at its
    defaults but for no submit limit and room for all outstanding; hand loops polling
    every 1 s and every 5 s of task time on the same tasks. The ScaledClock speed makes
    each cell take seconds; latencies are virtual seconds, so a millisecond of the
    client's own delay counts ``speed`` milliseconds here (an overstatement, not a gift).
    """
    n, repeats = (60, 1) if quick else (200, 3)
    result = ScenarioResult("7", f"cold burst at three scales, {n} tasks each, all at once")
    mine = ours_at_defaults("novita_video", submit_rpm="inf", max_outstanding=str(n))
    loops = (hand_loop("hand_loop 1 s", 1.0), hand_loop("hand_loop 5 s", 5.0))
    for scale, (duration, queue, speed) in SCALES.items():
        for regime, knobs in REGIMES.items():
            ours_runs: list[RunResult] = []
            for repeat in range(repeats):
                sim = SimulatorSpec(
                    task_duration=duration,
                    seed=700 + repeat,
                    speed=speed,
                    queue_time=queue,
                    eta_rounding="round",
                    **knobs,  # type: ignore[arg-type]
                )
                label = f"{scale} {regime}"
                spec = ContenderSpec(f"{mine.label}, {label}", mine.module, mine.flags)
                ours_runs.append(run("7", repeat, sim, spec, n))
                if repeat == 0:
                    for loop in loops:
                        named = ContenderSpec(f"{loop.label}, {label}", loop.module, loop.flags)
                        result.runs.append(run("7", repeat, sim, named, n))
            result.runs += ours_runs
            of = f"median of {repeats}, virtual s"
            result.targets += [
                Target(
                    f"7-{scale}-{regime}-latency".replace(" ", ""),
                    f"notice latency p95, {scale}, {regime} eta",
                    median([value(r, r.latency_p95_s) for r in ours_runs]),
                    2.0,
                    "s",
                    of,
                ),
                Target(
                    f"7-{scale}-{regime}-polls".replace(" ", ""),
                    f"polls per task, {scale}, {regime} eta",
                    median([value(r, r.polls_per_task) for r in ours_runs]),
                    6.0,
                    note=f"median of {repeats}",
                ),
            ]
    return result


class Scenario(Protocol):
    def __call__(self, run: Runner, *, quick: bool) -> ScenarioResult: ...


SCENARIOS: dict[str, Scenario] = {
    "1": scenario_1,
    "2": scenario_2,
    "3": scenario_3,
    "4": scenario_4,
    "5": scenario_5,
    "6": scenario_6,
    "7": scenario_7,
}
