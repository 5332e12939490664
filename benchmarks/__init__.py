"""Benchmarks: novita_video against the loops people write today (``python -m benchmarks.run``).

Kept empty on purpose: every contender process imports this package, and whatever
it imported would count against that contender's peak memory.
"""
