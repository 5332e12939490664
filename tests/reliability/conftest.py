"""The reliability suite: the issue's promise, each part proven by a test.

Under load, faults and bad input, every prompt ends accounted for, no clip the user
paid for is lost, no task is paid for twice by our doing, and the API key goes nowhere
but Novita. ``docs/reliability.md`` maps each promise to its test and its figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The command-line tests' helpers (run the command, read its manifest and ledger) are
# reused here; pytest puts a test file's own folder on sys.path, not its sibling's.
_CLI_TESTS = str(Path(__file__).resolve().parents[1] / "cli")
if _CLI_TESTS not in sys.path:
    sys.path.insert(0, _CLI_TESTS)
