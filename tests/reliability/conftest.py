"""The reliability suite: the issue's promise, each part proven by a test.

Under load, faults and bad input, every prompt ends accounted for, no clip the user
paid for is lost, no task is paid for twice by our doing, and the API key goes nowhere
but Novita. ``docs/reliability.md`` maps each promise to its test and its figures.
"""

from __future__ import annotations
