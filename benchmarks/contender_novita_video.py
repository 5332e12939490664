"""Contender: this project's client, one ``Client.generate`` batch over all the tasks.

Every knob that shapes the run is a flag, so the harness states (and the JSON
results record) exactly how the client was configured in each scenario; a flag left
out keeps the client's default (what users get).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from novita_video import Client, Clock, ScaledClock, SystemClock
from novita_video.webhooks import aiohttp_handler

from . import _report

#: A flag left out: the client's own default applies.
_DEFAULT: Any = object()


def _rate(text: str) -> float | None:
    # Client takes both None (no limiter) and inf; "none" spells the former on a command line.
    return None if text == "none" else float(text)


@asynccontextmanager
async def _receiver(mode: str) -> AsyncIterator[tuple[str | None, list[Client]]]:
    """With ``mode`` verify or trust, a webhook receiver on loopback for the client that is
    put in the list (the client needs the URL first, the receiver needs the client)."""
    clients: list[Client] = []
    if mode == "off":
        yield None, clients
        return

    async def handle(request: web.Request) -> web.StreamResponse:
        return await aiohttp_handler(clients[0])(request)

    app = web.Application()
    app.router.add_post("/webhook", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/webhook", clients
    finally:
        await runner.cleanup()


async def _run(args: argparse.Namespace, meter: _report.Meter) -> dict[str, Any]:
    clock: Clock = (
        SystemClock() if args.speed == 1.0 else ScaledClock(args.speed, origin=args.origin)
    )
    async with _receiver(args.webhook) as (webhook_url, clients):
        meter.start()
        knobs = {
            name: getattr(args, name)
            for name in (
                "concurrency",
                "submit_rpm",
                "poll_rpm",
                "poll_concurrency",
                "max_outstanding",
            )
            if getattr(args, name) is not _DEFAULT
        }
        async with Client(
            args.api_key,
            base_url=args.url,
            **knobs,
            webhook_url=webhook_url,
            trust_webhooks=args.webhook == "trust",
            clock=clock,
            redis_url=args.redis_url or "",
        ) as client:
            clients.append(client)
            async for outcome in client.generate(_report.prompts(args.n, args.prompt_prefix)):
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
        "client_poll_rpm_at_end": stats.poll_rpm,
        "client_webhooks": stats.webhooks,
        "client_shared": stats.shared,
    }


def main() -> None:
    p = _report.parser(__doc__ or "")
    default = {"default": _DEFAULT, "help": "(default: the client's)"}
    p.add_argument("--concurrency", type=int, **default)
    p.add_argument("--submit-rpm", type=_rate, **default | {"help": "a number, inf or none"})
    p.add_argument("--poll-rpm", type=_rate, **default | {"help": "a number, inf or none"})
    p.add_argument("--poll-concurrency", type=int, **default)
    p.add_argument("--max-outstanding", type=int, **default)
    p.add_argument(
        "--webhook",
        choices=("off", "verify", "trust"),
        default="off",
        help="receive task-end events: check each (verify) or take it as the answer (trust)",
    )
    p.add_argument("--redis-url", help="share the key's limits with other workers (Redis)")
    p.add_argument("--prompt-prefix", default="benchmark clip", help="tells workers' prompts apart")
    args = p.parse_args()
    meter = _report.Meter()
    extra = asyncio.run(_run(args, meter))
    meter.report("novita_video", **extra)


if __name__ == "__main__":
    main()
