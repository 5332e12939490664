"""What a client has done so far: the counters every room adds to (a leaf module).

The submitter counts submits, unknown submits, retries and 429s; the poller counts polls;
the client counts webhook events, and turns the counters into a frozen
:class:`~novita_video.ClientStatistics` when asked.
"""

from __future__ import annotations

import attrs

__all__ = ["Counters"]


@attrs.define
class Counters:
    """Running totals of one client's requests (mutable; read a snapshot instead)."""

    submitted: int = 0
    polls: int = 0
    retries: int = 0
    rate_limited: int = 0
    unknown_submissions: int = 0
    webhooks: int = 0
