"""Contender: this project's client, one ``Client.generate`` batch over all the tasks.

Every knob that shapes the run is a flag, so the harness states (and the JSON
results record) exactly how the client was configured in each scenario.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from novita_video import Client, Clock, ScaledClock, SystemClock

from . import _report


def _rate(text: str) -> float | None:
    # Client takes both None (no limiter) and inf; "none" spells the former on a command line.
    return None if text == "none" else float(text)


async def _run(args: argparse.Namespace, meter: _report.Meter) -> dict[str, Any]:
    clock: Clock = (
        SystemClock() if args.speed == 1.0 else ScaledClock(args.speed, origin=args.origin)
    )
    meter.start()
    async with Client(
        args.api_key,
        base_url=args.url,
        concurrency=args.concurrency,
        submit_rpm=args.submit_rpm,
        poll_rpm=args.poll_rpm,
        poll_concurrency=args.poll_concurrency,
        max_outstanding=args.max_outstanding,
        clock=clock,
    ) as client:
        async for outcome in client.generate(_report.prompts(args.n)):
            if outcome.task_id is not None:
                meter.hand_over(outcome.task_id, clock.wall())
            if not outcome.ok:
                meter.fail(f"prompt {outcome.index}: {outcome.error or outcome.result}")
        stats = client.statistics()
    meter.stop()
    return {
        "client_polls": stats.polls,
        "client_retries": stats.retries,
        "client_rate_limited": stats.rate_limited,
        "client_submit_rpm_at_end": stats.submit_rpm,
    }


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--submit-rpm", type=_rate, required=True, help="a number, inf or none")
    p.add_argument("--poll-rpm", type=_rate, required=True, help="a number, inf or none")
    p.add_argument("--poll-concurrency", type=int, required=True)
    p.add_argument("--max-outstanding", type=int, required=True)
    args = p.parse_args()
    meter = _report.Meter()
    extra = asyncio.run(_run(args, meter))
    meter.report("novita_video", **extra)


if __name__ == "__main__":
    main()
