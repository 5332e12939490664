"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--only 1,3] [--no-fail]``.

Prints one table of runs per scenario, then every target with PASS or MISS, writes
the figures as JSON to ``benchmarks/results/``, and exits 1 if a target failed
(unless ``--no-fail``). See ``benchmarks/README.md`` for what each scenario measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import novita_video

from ._harness import ContenderSpec, RunResult, SimulatorSpec, measure
from ._scenarios import SCENARIOS, ScenarioResult, Target, median

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Far above any healthy run (the longest takes under a minute): a hung contender fails.
CONTENDER_TIMEOUT = 300.0


def _only(text: str) -> list[str]:
    keys = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [key for key in keys if key not in SCENARIOS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"choose among {', '.join(SCENARIOS)} (comma-separated), not {text!r}"
        )
    return sorted(set(keys))


def _runner(
    scenario: str, repeat: int, sim: SimulatorSpec, spec: ContenderSpec, n: int
) -> RunResult:
    print(
        f"  [{scenario}] {spec.label} (repeat {repeat + 1}) ...",
        end="",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    result = measure(
        scenario=scenario,
        repeat=repeat,
        sim_spec=sim,
        contender=spec,
        n=n,
        timeout=CONTENDER_TIMEOUT,
    )
    status = "ok" if result.ok else f"BROKEN: {result.error or _lost(result)}"
    print(f" {time.perf_counter() - started:.0f} s, {status}", file=sys.stderr, flush=True)
    return result


def _lost(run: RunResult) -> str:
    return (
        f"{run.handed_over} of {run.n} handed over, {run.accepted_tasks} accepted, "
        f"{run.failures} failed {run.client.get('failure_examples', [])}"
    )


def _fmt(number: float, digits: int = 2) -> str:
    return "-" if math.isnan(number) else f"{number:.{digits}f}"


_COLUMNS = (
    ("run", 26),
    ("wall s", 7),
    ("ideal s", 7),
    ("submits s", 9),
    ("CPU s", 7),
    ("CPU ms/task", 11),
    ("peak MiB", 8),
    ("req/task", 8),
    ("polls/task", 10),
    ("lat p50", 7),
    ("lat p95", 7),
    ("429 sub/res", 11),
)


def _row(cells: list[str]) -> str:
    first, *rest = cells
    line = f"{first:<{_COLUMNS[0][1]}}"
    for cell, (_, width) in zip(rest, _COLUMNS[1:], strict=True):
        line += f" {cell:>{width}}"
    return line


def _run_cells(label: str, runs: list[RunResult]) -> list[str]:
    # One run, or the median of a label's repeats (429 counts are summed).
    def m(figure: str) -> float:
        return median([getattr(r, figure) for r in runs])

    return [
        label,
        _fmt(m("wall_s")),
        _fmt(m("ideal_wall_s")),
        _fmt(m("submit_span_s")),
        _fmt(m("cpu_s")),
        _fmt(m("cpu_ms_per_task")),
        _fmt(m("peak_rss_mib"), 1),
        _fmt(m("requests_per_task")),
        _fmt(m("polls_per_task")),
        _fmt(m("latency_p50_s")),
        _fmt(m("latency_p95_s")),
        f"{sum(r.submit_429 for r in runs)}/{sum(r.result_429 for r in runs)}",
    ]


def print_scenario(result: ScenarioResult) -> None:
    print(f"\nScenario {result.key}: {result.title}")
    print(_row([name for name, _ in _COLUMNS]))
    labels = list(dict.fromkeys(run.label for run in result.runs))
    for label in labels:
        runs = [run for run in result.runs if run.label == label]
        for run in runs:
            name = f"{label} #{run.repeat + 1}" if len(runs) > 1 else label
            print(_row(_run_cells(name, [run])) + ("" if run.ok else "  BROKEN"))
        if len(runs) > 1:
            print(_row(_run_cells(f"{label} median", runs)))


def print_targets(targets: list[Target]) -> None:
    print("\nTargets (measured <= limit)")
    for t in targets:
        verdict = "PASS" if t.passed else "MISS"
        headroom = "" if math.isnan(t.headroom) else f"{t.headroom:+.0%} headroom"
        measured = f"{_fmt(t.measured)}{t.unit}"
        limit = f"{t.limit:g}{t.unit}"
        print(
            f"  {verdict}  {t.key}  {t.text:<42} {measured:>9} <= {limit:<6} "
            f"{headroom:<15} {t.note}"
        )


def _clean(value: Any) -> Any:
    # JSON has no NaN: a figure that does not exist is null.
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(results: list[ScenarioResult], args: argparse.Namespace) -> Path:
    now = datetime.now(UTC)
    body = {
        "date": now.isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "novita_video": novita_video.__version__,
        },
        "scenarios": {
            r.key: {
                "title": r.title,
                "runs": [
                    {
                        **dataclasses.asdict(run),
                        "ok": run.ok,
                        "cpu_ms_per_task": run.cpu_ms_per_task,
                    }
                    for run in r.runs
                ],
                "targets": [{**dataclasses.asdict(t), "passed": t.passed} for t in r.targets],
            }
            for r in results
        },
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{now:%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(_clean(body), indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, one repeat: a smoke check")
    parser.add_argument("--only", type=_only, default=list(SCENARIOS), help="e.g. 1,3")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a target fails")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: list[ScenarioResult] = []
    for key in args.only:
        print(f"Scenario {key} ...", file=sys.stderr, flush=True)
        results.append(SCENARIOS[key](_runner, quick=args.quick))
    for result in results:
        print_scenario(result)
    targets = [t for r in results for t in r.targets]
    print_targets(targets)
    failed = [t.key for t in targets if not t.passed]
    path = write_json(results, args)
    print(
        f"\n{len(targets) - len(failed)} of {len(targets)} targets met"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
        + f". {time.perf_counter() - started:.0f} s in all; JSON: {path}"
    )
    return 1 if failed and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
