"""The harness: one simulator process and one contender process per run, and their figures.

Each run gets a fresh simulator (so its statistics are that run's alone) started as
``python -m novita_video.testing --port 0 ...``; its URL is read from the first line
it prints. The contender then runs in its own process against it and reports on
stdout (see ``_report``); afterwards the harness reads ``GET /_simulator/stats``
and joins the two: the simulator knows when each task finished and how many
requests arrived, the contender knows when it handed each result over.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-benchmark"
_URL_LINE = re.compile(r"Simulated Novita API on (http://127\.0\.0\.1:\d+)")
_START_TIMEOUT = 20.0


class BenchmarkError(RuntimeError):
    """A simulator or contender process did not do its part."""


def _env() -> dict[str, str]:
    # The contenders run as `python -m benchmarks.<name>` from the repository root.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass(frozen=True)
class SimulatorSpec:
    """How to start the simulator for one run."""

    task_duration: tuple[float, float]
    seed: int
    speed: float = 1.0
    no_eta: bool = False
    #: At most this many submits accepted in any this many seconds: (requests, per).
    submit_limit: tuple[int, float] | None = None
    #: QUEUED for U(lo, hi) seconds before running for task_duration (None: 10 % of it).
    queue_time: tuple[float, float] | None = None
    #: How the server rounds its eta to whole seconds: ceil, round or floor.
    eta_rounding: str = "ceil"
    #: The server believes a task runs U(lo, hi) times its real time (None: exact).
    eta_bias: tuple[float, float] | None = None

    def argv(self, origin: float) -> list[str]:
        low, high = self.task_duration
        argv = ["--port", "0", "--api-key", API_KEY, "--seed", str(self.seed)]
        argv += ["--task-duration", str(low), str(high)]
        if self.speed != 1.0:
            argv += ["--speed", str(self.speed), "--origin", repr(origin)]
        if self.no_eta:
            argv.append("--no-eta")
        if self.submit_limit is not None:
            requests, per = self.submit_limit
            argv += ["--submit-limit", f"{requests}/{per:g}"]
        if self.queue_time is not None:
            argv += ["--queue-time", *(str(t) for t in self.queue_time)]
        if self.eta_rounding != "ceil":
            argv += ["--eta-rounding", self.eta_rounding]
        if self.eta_bias is not None:
            argv += ["--eta-bias", *(str(b) for b in self.eta_bias)]
        return argv


class Simulator:
    """A running simulator process: its URL and its statistics (see :func:`simulator`)."""

    def __init__(self, url: str, errors: IO[str]) -> None:
        self.url = url
        self._errors = errors

    def stats(self) -> dict[str, Any]:
        """The simulator's ``/_simulator/stats``, per-task records included."""
        try:
            with urllib.request.urlopen(f"{self.url}/_simulator/stats", timeout=60) as answer:
                body: dict[str, Any] = json.load(answer)
        except OSError as err:
            raise BenchmarkError(
                f"no statistics from the simulator: {err} {_tail(self._errors)}"
            ) from err
        return body


def _tail(file: IO[str]) -> str:
    file.seek(0)
    return file.read()[-2000:]


@contextlib.contextmanager
def simulator(spec: SimulatorSpec, origin: float) -> Iterator[Simulator]:
    """``python -m novita_video.testing`` in a child process, for one ``with`` block."""
    argv = [sys.executable, "-m", "novita_video.testing", *spec.argv(origin)]
    # stderr goes to a file, not a pipe: a pipe nobody reads during the run could fill
    # up and stall the simulator.
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(
            argv, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=errors, text=True
        ) as process,
    ):
        try:
            assert process.stdout is not None
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                ready = selector.select(_START_TIMEOUT)
            line = process.stdout.readline() if ready else ""
            match = _URL_LINE.search(line)
            if match is None:
                raise BenchmarkError(f"the simulator did not start: {line!r} {_tail(errors)}")
            yield Simulator(match.group(1), errors)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


@dataclass(frozen=True)
class ContenderSpec:
    """One contender configuration: its module under ``benchmarks`` and its own flags."""

    label: str
    module: str
    flags: tuple[str, ...] = ()


def run_contender(
    spec: ContenderSpec, *, url: str, n: int, speed: float, origin: float, timeout: float
) -> dict[str, Any]:
    """Run one contender process to the end and return its JSON report."""
    argv = [sys.executable, "-m", f"benchmarks.{spec.module}"]
    argv += ["--url", url, "--api-key", API_KEY, "--n", str(n)]
    argv += ["--speed", str(speed), "--origin", repr(origin), *spec.flags]
    try:
        done = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise BenchmarkError(f"{spec.label} did not finish within {timeout:.0f} s") from err
    if done.returncode != 0:
        raise BenchmarkError(
            f"{spec.label} exited with {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    try:
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as err:
        raise BenchmarkError(f"{spec.label} printed no report: {done.stdout[-500:]!r}") from err
    return report


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _peak_outstanding(starts: Sequence[float], ends: Sequence[float]) -> int:
    # At equal times an end sorts before a start: a task handed over as another is
    # submitted does not count as overlapping it.
    events = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


@dataclass(frozen=True)
class RunResult:
    """The figures of one contender run. A run that broke has ``error`` and NaN figures."""

    scenario: str
    label: str
    repeat: int
    n: int
    settings: dict[str, Any]
    error: str | None = None
    wall_s: float = math.nan
    ideal_wall_s: float = math.nan
    cpu_s: float = math.nan
    peak_rss_mib: float = math.nan
    peak_rss_at_start_mib: float = math.nan
    requests_per_task: float = math.nan
    polls_per_task: float = math.nan
    latency_p50_s: float = math.nan
    latency_p95_s: float = math.nan
    latency_max_s: float = math.nan
    submit_requests: int = 0
    submit_429: int = 0
    result_429: int = 0
    mean_task_s: float = math.nan
    submit_span_s: float = math.nan
    peak_outstanding: int = 0
    handed_over: int = 0
    accepted_tasks: int = 0
    duplicate_submissions: int = 0
    failures: int = 0
    client: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The run finished and every one of its ``n`` tasks was handed over, exactly once."""
        return (
            self.error is None
            and self.handed_over == self.n == self.accepted_tasks
            and self.failures == 0
        )

    @property
    def cpu_ms_per_task(self) -> float:
        return 1000.0 * self.cpu_s / self.n

    @property
    def submit_429_share(self) -> float:
        return self.submit_429 / self.submit_requests if self.submit_requests else math.nan


_CLIENT_KEYS = (
    "contender",
    "wall_s",
    "cpu_s",
    "peak_rss_kib",
    "peak_rss_at_start_kib",
    "handed",
    "failures",
)


def _ideal_wall(spec: SimulatorSpec, durations: Sequence[float]) -> float:
    """The real seconds the quickest possible client would take for these tasks.

    It sends each submit the moment the server's limit allows (the k-th accepted
    submit no earlier than ``k // requests * per``: a sliding window admits a full
    window at once) and learns of each end at once. ``durations`` are in the order
    the tasks were accepted, which is the order the seeded simulator drew them in.
    """
    requests, per = spec.submit_limit or (len(durations) or 1, 0.0)
    virtual = max(((k // requests) * per + d for k, d in enumerate(durations)), default=math.nan)
    return virtual / spec.speed


def summarize(
    *,
    scenario: str,
    repeat: int,
    n: int,
    sim_spec: SimulatorSpec,
    contender: ContenderSpec,
    report: dict[str, Any],
    stats: dict[str, Any],
) -> RunResult:
    """Join a contender's report with the simulator's statistics of the same run."""
    handed: dict[str, float] = report["handed"]
    tasks: dict[str, dict[str, Any]] = stats["tasks"]
    latencies = [handed[t] - task["finishes_wall"] for t, task in tasks.items() if t in handed]
    starts = [task["submitted_wall"] for t, task in tasks.items() if t in handed]
    in_order = sorted(tasks.values(), key=lambda task: task["submitted_wall"])
    durations = [task["finishes_wall"] - task["submitted_wall"] for task in in_order]
    submitted = [task["submitted_wall"] for task in in_order]
    requests: dict[str, int] = stats["requests"]
    limited: dict[str, int] = stats["rate_limited"]
    api_requests = requests["submit"] + requests["task_result"]
    return RunResult(
        scenario=scenario,
        label=contender.label,
        repeat=repeat,
        n=n,
        settings=_settings(sim_spec, contender),
        wall_s=report["wall_s"],
        ideal_wall_s=_ideal_wall(sim_spec, durations),
        cpu_s=report["cpu_s"],
        peak_rss_mib=report["peak_rss_kib"] / 1024,
        peak_rss_at_start_mib=report["peak_rss_at_start_kib"] / 1024,
        requests_per_task=api_requests / n,
        polls_per_task=requests["task_result"] / n,
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        latency_max_s=max(latencies, default=math.nan),
        submit_requests=requests["submit"],
        submit_429=limited["submit"],
        result_429=limited["task_result"],
        mean_task_s=sum(durations) / len(durations) if durations else math.nan,
        # Virtual seconds, like every time the simulator keeps; real ones for the table.
        submit_span_s=(max(submitted, default=math.nan) - min(submitted, default=math.nan))
        / sim_spec.speed,
        peak_outstanding=_peak_outstanding(starts, [handed[t] for t in tasks if t in handed]),
        handed_over=len(latencies),
        accepted_tasks=stats["task_count"],
        duplicate_submissions=stats["duplicate_submissions"],
        failures=report["failures"],
        client={k: v for k, v in report.items() if k not in _CLIENT_KEYS},
    )


def _settings(sim_spec: SimulatorSpec, contender: ContenderSpec) -> dict[str, Any]:
    return {"simulator": asdict(sim_spec), "contender": list(contender.flags)}


def measure(
    *,
    scenario: str,
    repeat: int,
    sim_spec: SimulatorSpec,
    contender: ContenderSpec,
    n: int,
    timeout: float,
) -> RunResult:
    """One run: a fresh simulator, one contender against it, the joined figures."""
    origin = time.time()
    try:
        with simulator(sim_spec, origin) as sim:
            report = run_contender(
                contender, url=sim.url, n=n, speed=sim_spec.speed, origin=origin, timeout=timeout
            )
            stats = sim.stats()
    except BenchmarkError as err:
        settings = _settings(sim_spec, contender)
        return RunResult(scenario, contender.label, repeat, n, settings, error=str(err))
    return summarize(
        scenario=scenario,
        repeat=repeat,
        n=n,
        sim_spec=sim_spec,
        contender=contender,
        report=report,
        stats=stats,
    )
