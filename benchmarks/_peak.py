"""``python -m benchmarks._peak REPORT ARGS...``: ``novita-video ARGS`` in this process, then
its exit status and peak resident memory written to REPORT as JSON.

The peak is ``VmHWM`` from ``/proc/self/status``, read as the command ends: imports and
everything the run held, the whole process. Not ``ru_maxrss`` of a child: Linux carries
the parent's peak into it across fork and exec (see README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main() -> None:
    report, *argv = sys.argv[1:]
    from novita_video.cli import main as command

    try:
        code = command(argv)
    finally:
        Path(report).write_text(json.dumps({"peak_kib": _peak_kib()}))
    sys.exit(code)


if __name__ == "__main__":
    main()
