"""Run the simulator on its own: ``python -m novita_video.testing --port 0``.

Once listening it prints exactly one line to stdout, for people and for
benchmarks that start it as a subprocess and parse the URL out of it::

    Simulated Novita API on http://127.0.0.1:54321 (key: sk-simulated)

It serves until SIGINT or SIGTERM, then closes its sockets and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from .._clock import Clock, ScaledClock
from ._ratelimit import RateLimit
from ._server import FakeNovita

__all__ = ["build_parser", "main"]

DEFAULT_PORT = 8000


def _rate_limit(text: str) -> RateLimit:
    try:
        return RateLimit.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line's flags, one per :class:`FakeNovita` knob."""
    parser = argparse.ArgumentParser(
        prog="python -m novita_video.testing",
        description="Serve a simulated Novita video API (Minimax Video-01) on this machine.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    add("--port", type=int, default=DEFAULT_PORT, help="0 picks a free one (default: %(default)s)")
    add("--api-key", default="sk-simulated", help="the accepted key (default: %(default)s)")
    add(
        "--task-duration",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        default=(2.0, 6.0),
        help="each task takes U(LO, HI) seconds of simulator time (default: 2 6)",
    )
    add("--queue-fraction", type=float, default=0.1, help="share of a task spent QUEUED")
    eta = parser.add_mutually_exclusive_group()
    eta.add_argument(
        "--eta-error", type=float, default=0.0, help="etas off by up to this factor, e.g. 0.3"
    )
    eta.add_argument("--no-eta", action="store_true", help="answer eta 0 (no estimate)")
    add("--no-progress", action="store_true", help="progress_percent stays 0 until the end")
    add("--failure-rate", type=float, default=0.0, help="probability a task ends FAILED")
    add("--submit-limit", type=_rate_limit, metavar="N/SECONDS", help="e.g. 20/60")
    add("--result-limit", type=_rate_limit, metavar="N/SECONDS", help="limit on task-result")
    add("--no-retry-after", action="store_true", help="send no Retry-After header with 429")
    add("--video-ttl", type=int, default=3600, help="seconds a video link stays valid")
    add("--speed", type=float, help="run simulator time this many times faster (ScaledClock)")
    add("--origin", type=float, help="Unix time where scaled and real time agree (with --speed)")
    add("--seed", type=int, help="replay the same task ids, durations and failures")
    add("--illegal-marker", default="[illegal]", help="prompts containing it get ILLEGAL_PROMPT")
    add("--balance", type=int, help="accept this many tasks, then BILLING_BALANCE_NOT_ENOUGH")
    return parser


def _fake_from_args(args: argparse.Namespace) -> FakeNovita:
    clock: Clock | None = None
    if args.speed is not None or args.origin is not None:
        speed = 1.0 if args.speed is None else args.speed
        clock = ScaledClock(speed, origin=args.origin)
    low, high = args.task_duration
    return FakeNovita(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        task_duration=(low, high),
        queue_fraction=args.queue_fraction,
        eta_error=None if args.no_eta else args.eta_error,
        report_progress=not args.no_progress,
        failure_rate=args.failure_rate,
        submit_limit=args.submit_limit,
        result_limit=args.result_limit,
        retry_after=not args.no_retry_after,
        video_ttl=args.video_ttl,
        clock=clock,
        seed=args.seed,
        illegal_marker=args.illegal_marker,
        balance=args.balance,
    )


async def _serve(fake: FakeNovita) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with fake:
            print(f"Simulated Novita API on {fake.url} (key: {fake.api_key})", flush=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve until SIGINT/SIGTERM, return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        fake = _fake_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    try:
        asyncio.run(_serve(fake))
    except OSError as err:  # the port is taken, the host is not ours, ...
        print(f"cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
