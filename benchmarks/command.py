"""The command itself at 10,000 prompts: ``python -m benchmarks.command [--n 10000]``.

One run of ``novita-video batch`` on N prompts against the simulator in its own
process (its submit limit lifted, ``--rpm`` raised to match, tasks of 3 to 8 s as
``--simulate`` makes them), then its gallery opened in headless Chromium (Debian's
``chromium``, driven offline over the DevTools protocol: ``tests/cli/browser_support.py``).

Figures: wall time, the command's peak resident memory (``VmHWM``, read by the command's
own process as it ends: ``benchmarks/_peak.py``), the sizes of the ledger (with its WAL),
the manifest and the gallery, how far the plain progress lines' ETA was from the real
remaining time from a tenth to four fifths of the prompts settled (and at every line),
and the gallery in the browser: the first screen painted (navigation start to the frame
after the first page of cards), and a search typed at once, answered (input to the next
render), medians of 3 fresh tabs. The baseline, in the same run, is the gallery before
this one (commit ce9b7fd: a ``<video preload="metadata">`` per clip) on the same
manifest: its first contentful paint and its load event.

Targets: peak memory <= 80 MiB; first screen <= 2 s; the search answered within 2 s of
opening (first screen + input to results); the ETA within +-50 % from a tenth to four
fifths settled. Every figure goes to ``benchmarks/results/command-*.json``; the exit
status is 1 when a target is missed (unless ``--no-fail``).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio

from benchmarks._harness import API_KEY, REPO_ROOT, SimulatorSpec, _env, simulator
from novita_video.cli._outputs import read_manifest

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024
PEAK_TARGET_MIB = 80.0
SCREEN_TARGET_S = 2.0
ETA_TARGET = 0.5
TABS = 3

# "ETA 2m05s", "ETA at least 2m05s" (a bound) or "ETA 1m10s to 3m05s" (a range).
_PROGRESS = re.compile(r"elapsed: (\d+) of (\d+) settled .* ETA (at least )?(\S+)(?: to (\S+))?$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def _seconds(text: str) -> float:
    found = _DURATION.match(text)
    if found is None or not any(found.groups()):
        raise ValueError(text)
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return 3600 * hours + 60 * minutes + seconds


def run_command(n: int, folder: Path, seed: int) -> dict[str, Any]:
    """One ``novita-video batch`` of ``n`` prompts into ``folder``; its figures."""
    prompts = folder / "prompts.txt"
    prompts.write_text(
        "".join(f"a lighthouse in a storm, seen from boat number {i}\n" for i in range(n))
    )
    out = folder / "clips"
    report = folder / "peak.json"
    spec = SimulatorSpec(task_duration=(3.0, 8.0), seed=seed)  # no submit limit
    with simulator(spec, origin=time.time()) as sim:
        env = _env() | {"NOVITA_API_KEY": API_KEY, "NOVITA_BASE_URL": sim.url}
        argv = [sys.executable, "-m", "benchmarks._peak", str(report)]
        argv += ["batch", str(prompts), "--out", str(out), "--rpm", "60000"]
        lines: list[tuple[float, str]] = []
        started = time.monotonic()
        with subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        ) as process:
            assert process.stderr is not None

            def collect() -> None:
                assert process.stderr is not None
                for line in process.stderr:
                    lines.append((time.monotonic() - started, line.rstrip("\n")))

            reader = threading.Thread(target=collect)
            reader.start()
            code = process.wait(timeout=900)
            reader.join()
        wall = time.monotonic() - started
        tasks = sim.stats()["task_count"]
    ledger = sum(
        path.stat().st_size for path in (out / ".novita").glob("ledger.sqlite*") if path.is_file()
    )
    entries = list(read_manifest(out / "manifest.jsonl"))
    return {
        "n": n,
        "exit": code,
        "wall_s": wall,
        "tasks": tasks,
        "made": sum(entry.file is not None for entry in entries),
        "peak_mib": json.loads(report.read_text())["peak_kib"] / 1024,
        "ledger_bytes": ledger,
        "manifest_bytes": (out / "manifest.jsonl").stat().st_size,
        "gallery_bytes": (out / "index.html").stat().st_size,
        "eta": _eta_errors(lines),
        "stderr_tail": [line for _, line in lines[-3:]],
    }


def _eta_errors(lines: list[tuple[float, str]]) -> dict[str, Any]:
    """Each progress line's ETA against the time the run really took from there (to its
    summary line)."""
    end = next((at for at, line in lines if " clips made" in line), None)
    if end is None:
        return {"error": "no summary line"}
    seen = []
    for at, line in lines:
        found = _PROGRESS.search(line)
        if found is None or at >= end:
            continue
        settled, total = int(found.group(1)), int(found.group(2))
        eta = _seconds(found.group(4))
        # A range is right when the real time lies in it; otherwise its error is that of
        # the nearer end (a range is never scored as its midpoint, which it did not say).
        high = _seconds(found.group(5)) if found.group(5) else eta
        real = end - at
        nearest = min(max(real, eta), high)
        seen.append(
            {
                "at_s": round(at, 2),
                "settled": settled / total,
                "eta_s": eta,
                "eta_high_s": high,
                "bound": bool(found.group(3)),
                "real_s": round(real, 2),
                "error": (nearest - real) / real if real > 0 else 0.0,
            }
        )
    window = [line["error"] for line in seen if 0.1 <= line["settled"] <= 0.8]
    return {
        "lines": seen,
        "first_line_s": seen[0]["at_s"] if seen else None,
        "first_eta": seen[0]["eta_s"] if seen else None,
        "worst_in_window": max(window, key=abs) if window else float("nan"),
    }


def _old_gallery(manifest: Path, path: Path) -> None:
    """The gallery as commit ce9b7fd wrote it: a figure, and a player, per prompt."""
    parts = ['<!doctype html>\n<html lang="en"><head><meta charset="utf-8"></head><body><main>']
    for entry in read_manifest(manifest):
        caption = f"<figcaption>#{entry.index} {html.escape(entry.prompt)}</figcaption>"
        if entry.file is not None:
            source = html.escape(quote(entry.file))
            parts.append(
                f'<figure><video src="{source}" controls muted loop playsinline '
                f'preload="metadata"></video>{caption}</figure>\n'
            )
        else:
            parts.append(f'<figure><div class="missing">{entry.status}</div>{caption}</figure>\n')
    parts.append("</main></body></html>\n")
    path.write_text("".join(parts), encoding="utf-8")


async def _open(gallery: Path, tabs: int, old: Path | None) -> dict[str, Any]:
    from tests.cli.browser_support import chromium

    screens, answers, loads, requested = [], [], [], set()
    old_figures: dict[str, float] = {}
    async with chromium() as browser:
        for _ in range(tabs):
            page = await browser.new_page(1280, 900)
            await page.goto(gallery.as_uri())
            await page.wait_for("document.body.dataset.ready === '1'")
            screens.append(
                await page.evaluate(
                    "performance.getEntriesByName('gallery-first-screen')[0].startTime"
                )
                / 1000
            )
            loads.append(
                await page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                / 1000
            )
            await page.evaluate(
                "window.__before = Number(document.body.dataset.rendered);"
                " document.getElementById('search').addEventListener('input',"
                " () => { window.__typed = performance.now(); }, {capture: true, once: true})"
            )
            await page.type("#search", "boat number 9999")
            await page.wait_for("Number(document.body.dataset.rendered) > window.__before")
            # Painted: the frame after the render.
            await page.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r)))")
            answers.append(
                await page.evaluate(
                    "(performance.getEntriesByName('gallery-render-'"
                    " + document.body.dataset.rendered)[0].startTime - window.__typed)"
                )
                / 1000
            )
            requested.update(url.split(":", 1)[0] for url in page.requested())
            await page.send("Page.close")
        if old is not None:
            page = await browser.new_page(1280, 900)
            started = time.monotonic()
            await page.goto(old.as_uri(), timeout=600)
            old_figures = {
                "load_s": time.monotonic() - started,
                "fcp_s": await page.evaluate(
                    "(performance.getEntriesByType('paint')"
                    ".find(e => e.name === 'first-contentful-paint') || {startTime: NaN})"
                    ".startTime"
                )
                / 1000,
            }
    return {
        "first_screen_s": statistics.median(screens),
        "search_answered_s": statistics.median(answers),
        "open_and_search_s": statistics.median(
            s + a for s, a in zip(screens, answers, strict=True)
        ),
        "load_event_s": statistics.median(loads),
        "runs": {"first_screen_s": screens, "search_answered_s": answers},
        "schemes_requested": sorted(requested),
        "baseline": old_figures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.command", description=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="prompts (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true", help="skip the old gallery")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 when a target fails")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="novita-command-bench-") as scratch:
        folder = Path(scratch)
        print(f"novita-video batch, {args.n} prompts ...", file=sys.stderr, flush=True)
        run = run_command(args.n, folder, args.seed)
        if run["exit"] != 0:
            print("the command failed:", *run["stderr_tail"], sep="\n", file=sys.stderr)
            return 1
        out = folder / "clips"
        old = None
        if not args.no_baseline:
            old = folder / "clips" / "old-index.html"
            _old_gallery(out / "manifest.jsonl", old)
        print("the gallery in chromium ...", file=sys.stderr, flush=True)
        browser = anyio.run(_open, out / "index.html", TABS, old)
    results = {"run": run, "browser": browser}
    _print(results)
    targets = _targets(results)
    for name, measured, limit, ok in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {measured} (target {limit})")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"command-{stamp}.json").write_text(
        json.dumps(
            results | {"targets": targets, "python": sys.version, "pid": os.getpid()},
            indent=2,
            default=str,
        )
    )
    return 0 if args.no_fail or all(ok for *_, ok in targets) else 1


def _print(results: dict[str, Any]) -> None:
    run, browser = results["run"], results["browser"]
    print(f"prompts {run['n']}, tasks {run['tasks']}, clips {run['made']}, exit {run['exit']}")
    print(f"wall {run['wall_s']:.1f} s, peak {run['peak_mib']:.1f} MiB")
    print(
        f"ledger {run['ledger_bytes'] / MIB:.1f} MiB, manifest {run['manifest_bytes'] / MIB:.1f}"
        f" MiB, gallery {run['gallery_bytes'] / MIB:.1f} MiB"
    )
    eta = run["eta"]
    print(
        f"ETA: first line at {eta['first_line_s']} s said {eta['first_eta']} s; worst from a "
        f"tenth to four fifths settled {eta['worst_in_window']:+.0%}"
    )
    print(
        f"gallery: first screen {browser['first_screen_s']:.2f} s, search answered "
        f"{browser['search_answered_s']:.3f} s after input, load event "
        f"{browser['load_event_s']:.2f} s; asked for {', '.join(browser['schemes_requested'])}"
    )
    if browser["baseline"]:
        old = browser["baseline"]
        print(
            f"baseline (a player per clip): first contentful paint {old['fcp_s']:.2f} s, "
            f"load {old['load_s']:.1f} s ({old['load_s'] / browser['load_event_s']:.0f}x)"
        )


def _targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    run, browser = results["run"], results["browser"]
    worst = run["eta"]["worst_in_window"]
    opened = browser["open_and_search_s"]
    return [
        (
            "peak memory",
            f"{run['peak_mib']:.1f} MiB",
            f"<= {PEAK_TARGET_MIB:g} MiB",
            run["peak_mib"] <= PEAK_TARGET_MIB,
        ),
        (
            "gallery first screen",
            f"{browser['first_screen_s']:.2f} s",
            f"<= {SCREEN_TARGET_S:g} s",
            browser["first_screen_s"] <= SCREEN_TARGET_S,
        ),
        (
            "gallery opened and a search answered",
            f"{opened:.2f} s",
            f"<= {SCREEN_TARGET_S:g} s",
            opened <= SCREEN_TARGET_S,
        ),
        (
            "gallery offline",
            ", ".join(browser["schemes_requested"]),
            "file, data",
            set(browser["schemes_requested"]) <= {"file", "data"},
        ),
        (
            "ETA, a tenth to four fifths settled",
            f"{worst:+.0%}",
            f"within +-{ETA_TARGET:.0%}",
            abs(worst) <= ETA_TARGET,
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
