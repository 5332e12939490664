"""``novita-video``: the command line, from a file of prompts to a folder of clips.

``novita-video batch prompts.txt --out clips`` checks the whole file, submits every
prompt under the rate limit, waits for the tasks with the SDK's one poller, downloads
each clip and writes a manifest and a gallery; ``status``, ``wait`` and ``simulate``
handle one task or serve the built-in simulator; ``models`` lists Novita's catalogue. The
modules, in the order a run uses them:

    _commands  the parser, the commands, exit codes and messages
    _inputs    .txt / .jsonl / .csv / stdin, read lazily with line numbers, checked first
    _ledger    DIR/.novita/ledger.sqlite: intent before each POST, task id after, outcome
    _run       the second pass: submit, resume, poll, download, record
    _progress  counts, elapsed time and ETA on stderr (rich on a terminal, plain lines otherwise)
    _outputs   clip names and manifest.jsonl
    _gallery   index.html: the manifest as data, drawn a page at a time, offline
    _spend     DIR/.novita/spend.json (the folder's spend cap) and DIR/runs.jsonl
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence

__all__ = ["main"]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    print(f"novita-video: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); the exit status.

    >>> main(["batch", "examples/prompts.txt", "--out", "clips", "--simulate"])  # doctest: +SKIP
    0
    """
    from ._commands import INTERRUPTED, run_command

    # A warning (plain-http API URL) is one line for a person, not a source location.
    warnings.showwarning = _show_warning
    # The SDK's warnings (a batch stopped, a task created after a stop) are said by the
    # command in its own words; only errors are worth showing as they come.
    # NOVITA_LOG=debug|info asks for the SDK's own lines (set up on import): left as asked.
    if not os.environ.get("NOVITA_LOG", "").strip():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("novita-video: %(message)s"))
        logger = logging.getLogger("novita_video")
        logger.addHandler(handler)
        logger.setLevel(logging.ERROR)
    try:
        return run_command(argv)
    except KeyboardInterrupt:
        print("novita-video: interrupted", file=sys.stderr)
        return INTERRUPTED
