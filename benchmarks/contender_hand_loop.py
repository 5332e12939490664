"""Contender: the loop a user writes by hand with aiohttp.

``asyncio.gather`` of one coroutine per task: submit, then poll every
``--poll-interval`` seconds until the task is final. Written decently rather than
as a strawman: one ``ClientSession`` with keep-alive, a semaphore bounding the
requests in flight, and a 429 waits out ``Retry-After`` and is retried.

Its ``--poll-interval`` is in task seconds: under a ScaledClock it sleeps
``interval / speed`` real seconds, as the same loop would against tasks that take
``speed`` times longer (so does its wait on a ``Retry-After``).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp

from . import _report


class _Loop:
    def __init__(
        self, session: aiohttp.ClientSession, args: argparse.Namespace, meter: _report.Meter
    ) -> None:
        self._session = session
        self._requests = asyncio.Semaphore(args.concurrency)
        self._interval: float = args.poll_interval / args.speed
        self._speed: float = args.speed
        self._meter = meter
        self._wall = _report.SharedWall(args.speed, args.origin)
        self.retries_429 = 0

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        while True:
            async with (
                self._requests,
                self._session.request(method, path, **kwargs) as response,
            ):
                if response.status != 429:
                    response.raise_for_status()
                    return await response.json()
                wait = float(response.headers.get("Retry-After", "1"))
            self.retries_429 += 1
            # Outside the semaphore: others may go meanwhile.
            await asyncio.sleep(wait / self._speed)

    async def one(self, prompt: str) -> None:
        submitted = await self._call("POST", _report.SUBMIT_PATH, json={"prompt": prompt})
        task_id = submitted["task_id"]
        while True:
            await asyncio.sleep(self._interval)
            body = await self._call("GET", _report.RESULT_PATH, params={"task_id": task_id})
            task = body["task"]
            if task["status"] in _report.FINAL_STATUSES:
                self._meter.hand_over(task_id, self._wall())
                if task["status"] != "TASK_STATUS_SUCCEED":
                    self._meter.fail(f"task {task_id}: {task['reason']}")
                return


async def _run(args: argparse.Namespace, meter: _report.Meter) -> dict[str, Any]:
    meter.start()
    headers = {"Authorization": f"Bearer {args.api_key}"}
    async with aiohttp.ClientSession(args.url, headers=headers) as session:
        loop = _Loop(session, args, meter)
        results = await asyncio.gather(
            *(loop.one(prompt) for prompt in _report.prompts(args.n)), return_exceptions=True
        )
    meter.stop()
    for result in results:
        if isinstance(result, BaseException):
            meter.fail(repr(result))
    return {"retries_429": loop.retries_429}


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--concurrency", type=int, required=True, help="requests in flight at most")
    p.add_argument("--poll-interval", type=float, default=1.0, help="task seconds")
    args = p.parse_args()
    meter = _report.Meter()
    extra = asyncio.run(_run(args, meter))
    meter.report("hand_loop", **extra)


if __name__ == "__main__":
    main()
