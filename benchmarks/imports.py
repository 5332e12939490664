"""Import time: ``import novita_video`` against ``import aiohttp``, in fresh interpreters.

``python -m benchmarks.imports`` runs ``--repeats`` fresh interpreters of each, in
alternating order, and prints the median CPU (``time.process_time()`` around the import
alone, interpreter start-up left out) and the ratio of the medians. The package imports
aiohttp itself, so the ratio is 1 plus what the package adds, relative to aiohttp.

Bytecode is written and read as an installed package's is: one warm-up import of each
first, with ``PYTHONDONTWRITEBYTECODE`` unset (with it set, every import compiles the
package's sources again, which no installed copy does). ``--detail`` also lists the
modules the package adds on top of aiohttp's, by ``python -X importtime`` self time.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence

from ._harness import REPO_ROOT

_TIMED = "import time; t = time.process_time(); import {module}; print(time.process_time() - t)"
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _python(*argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"python {' '.join(argv)} failed:\n{done.stderr}")
    return done


def import_cpu(module: str) -> float:
    """Seconds of CPU that importing ``module`` took in a fresh interpreter."""
    return float(_python("-c", _TIMED.format(module=module)).stdout)


def self_times(module: str) -> dict[str, int]:
    """Each module's own import time (µs) when ``module`` is imported, by ``-X importtime``."""
    found: dict[str, int] = {}
    for line in _python("-X", "importtime", "-c", f"import {module}").stderr.splitlines():
        match = _LINE.match(line)
        if match is not None:
            found[match.group(3)] = int(match.group(1))
    return found


def measure(repeats: int) -> dict[str, list[float]]:
    """CPU seconds per import, ``repeats`` fresh interpreters each, alternating."""
    for module in ("aiohttp", "novita_video"):
        import_cpu(module)  # writes the bytecode caches, as installing the package does
    seconds: dict[str, list[float]] = {"aiohttp": [], "novita_video": []}
    for repeat in range(repeats):
        order = ["aiohttp", "novita_video"]
        if repeat % 2:
            order.reverse()
        for module in order:
            seconds[module].append(import_cpu(module))
    return seconds


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=11, help="fresh interpreters of each")
    p.add_argument("--detail", action="store_true", help="list the modules the package adds")
    args = p.parse_args(argv)
    seconds = measure(args.repeats)
    ours, theirs = statistics.median(seconds["novita_video"]), statistics.median(seconds["aiohttp"])
    print("| import | ms CPU (median) |")
    print("| --- | ---: |")
    print(f"| aiohttp | {theirs * 1000:.0f} |")
    print(f"| novita_video | {ours * 1000:.0f} |")
    print(f"| ratio | {ours / theirs:.2f}x |")
    if args.detail:
        base = self_times("aiohttp")
        added = {k: v for k, v in self_times("novita_video").items() if k not in base}
        print(f"\nmodules added to aiohttp's: {len(added)}, {sum(added.values()) / 1000:.1f} ms")
        for name, micros in sorted(added.items(), key=lambda item: -item[1])[:25]:
            print(f"{micros / 1000:6.1f} ms  {name}")


if __name__ == "__main__":
    main()
