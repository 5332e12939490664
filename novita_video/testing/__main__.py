"""Run the simulator on its own: ``python -m novita_video.testing --port 0``.

Once listening it prints exactly one line to stdout, for people and for
benchmarks that start it as a subprocess and parse the URL out of it::

    Simulated Novita API on http://127.0.0.1:54321 (key: sk-simulated)

and, on stderr, how to point a client at it. ``novita-video simulate`` is this same
command, with the same knobs, defaults and output.

It serves until SIGINT or SIGTERM, then closes its sockets and exits 0.

Chaos is off unless asked for: every :class:`Chaos` knob has a ``--chaos-<knob>``
flag (``--chaos-submit-drops-after 0.1``), and ``--chaos-server-errors``,
``--chaos-malformed``, ``--chaos-slow`` and ``--chaos-rate-limits`` set a rate for
submit and task-result at once (a flag for one endpoint wins over them).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

from .._clock import Clock, ScaledClock
from ._chaos import Chaos
from ._endpoints import ENDPOINTS
from ._ratelimit import RateLimit
from ._server import FakeNovita

__all__ = ["build_parser", "chaos_from_args", "main"]

DEFAULT_PORT = 8000

#: Shorthand flags: one rate for the same fault on both API endpoints.
CHAOS_BOTH: Final = {
    "server_errors": ("submit_server_errors", "result_server_errors"),
    "malformed": ("submit_malformed", "result_malformed"),
    "slow": ("submit_slow", "result_slow"),
    "rate_limits": ("submit_rate_limits", "result_rate_limits"),
}


def _rate_limit(text: str) -> RateLimit:
    try:
        return RateLimit.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _statuses(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"statuses look like 502,503, not {text!r}") from None


def _optional_int(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 'none', not {text!r}") from None


def _chaos_parse(field: attrs.Attribute[Any]) -> tuple[Callable[[str], Any], str]:
    """How a Chaos field reads from the command line, from its default's type."""
    if field.name == "server_error_statuses":
        return _statuses, "S,S"
    if field.name in ("rate_limit_retry_after", "revoke_key_after"):
        return _optional_int, "N"
    if isinstance(field.default, int) and not isinstance(field.default, bool):
        return int, "N"
    return float, "SECONDS" if field.name == "slow_seconds" else "RATE"


def _add_chaos_flags(parser: argparse.ArgumentParser) -> None:
    # Built from Chaos's fields, so a new knob gets its flag (and its help) for free.
    group = parser.add_argument_group("chaos (every fault off by default)")
    for short, (submit, result) in CHAOS_BOTH.items():
        group.add_argument(
            f"--chaos-{short.replace('_', '-')}",
            type=float,
            metavar="RATE",
            dest=f"chaos_both_{short}",
            help=f"sets --chaos-{submit.replace('_', '-')} and --chaos-{result.replace('_', '-')}",
        )
    for field in attrs.fields(Chaos):
        parse, metavar = _chaos_parse(field)
        group.add_argument(
            f"--chaos-{field.name.replace('_', '-')}",
            type=parse,
            metavar=metavar,
            dest=f"chaos_{field.name}",
            default=argparse.SUPPRESS,
            help=field.metadata["help"],
        )


def chaos_from_args(args: argparse.Namespace) -> Chaos:
    """The :class:`Chaos` the ``--chaos-...`` flags ask for (ValueError if a value is bad)."""
    knobs: dict[str, Any] = {}
    for short, names in CHAOS_BOTH.items():
        rate = getattr(args, f"chaos_both_{short}", None)
        if rate is not None:
            knobs.update(dict.fromkeys(names, rate))
    for field in attrs.fields(Chaos):
        dest = f"chaos_{field.name}"
        if hasattr(args, dest):
            knobs[field.name] = getattr(args, dest)
    return Chaos(**knobs)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command line's flags, one per :class:`FakeNovita` knob."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m novita_video.testing",
        description=(
            f"Serve a simulated Novita video API ({', '.join(ENDPOINTS)}; the unified "
            "/v3/video/create for its catalogue's models; the balance; webhooks to "
            "loopback URLs) on this machine until Ctrl-C."
        ),
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
    eta.add_argument(
        "--eta-bias",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="the server believes a task runs U(LO, HI) times its real time, e.g. 0.6 1.5",
    )
    add(
        "--eta-rounding",
        choices=("ceil", "round", "floor", "none"),
        default="ceil",
        help="how the eta becomes whole seconds; none sends fractions (default: %(default)s)",
    )
    add(
        "--queue-time",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="QUEUED for U(LO, HI) seconds, then run for the task duration",
    )
    add("--no-progress", action="store_true", help="progress_percent stays 0 until the end")
    add(
        "--progress-curve",
        choices=("linear", "slow-start", "stall"),
        default="linear",
        help="how progress grows with the running time (default: %(default)s)",
    )
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
    add(
        "--starting-balance",
        metavar="USD",
        help=(
            "the account's dollars at start, falling by a made-up price per task; an empty "
            "balance answers BILLING_BALANCE_NOT_ENOUGH (default: bottomless)"
        ),
    )
    add(
        "--charge-at",
        choices=("submit", "end", "end-pending"),
        default="submit",
        help="when a task is charged (Novita does not say; default: %(default)s)",
    )
    add(
        "--bare-key",
        choices=("refuse", "accept"),
        default="refuse",
        help="a key sent without 'Bearer ' (default: %(default)s, with a 401 saying so)",
    )
    add(
        "--webhook-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="a webhook try slower than this is retried (simulator seconds; default: 5)",
    )
    _add_chaos_flags(parser)
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
        queue_time=None if args.queue_time is None else tuple(args.queue_time),
        eta_rounding=args.eta_rounding,
        eta_bias=None if args.eta_bias is None else tuple(args.eta_bias),
        progress_curve=args.progress_curve,
        failure_rate=args.failure_rate,
        submit_limit=args.submit_limit,
        result_limit=args.result_limit,
        retry_after=not args.no_retry_after,
        video_ttl=args.video_ttl,
        clock=clock,
        seed=args.seed,
        illegal_marker=args.illegal_marker,
        balance=args.balance,
        starting_balance=args.starting_balance,
        charge_at=args.charge_at,
        webhook_timeout=args.webhook_timeout,
        bare_key=args.bare_key,
        chaos=chaos_from_args(args),
    )


async def _serve(fake: FakeNovita) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with fake:
            print(f"Simulated Novita API on {fake.url} (key: {fake.api_key})", flush=True)
            print(
                f"  export NOVITA_BASE_URL={fake.url} NOVITA_API_KEY={fake.api_key}\n"
                "Ctrl-C stops it.",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv``, serve until SIGINT/SIGTERM, return the exit status (``prog``
    names the command in its usage: ``novita-video simulate`` runs this too)."""
    parser = build_parser(prog)
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
