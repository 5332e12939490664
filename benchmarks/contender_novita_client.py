"""Contender: Novita's own synchronous SDK, ``novita-client`` 0.7.1, on a thread pool.

``NovitaClient`` has no Minimax method, so a task is submitted through its generic
``_post(api_path, data)`` (the method all of its own ``async_*`` calls use) to
``/v3/async/minimax-video-01``, and awaited with its ``wait_for_task_v3(task_id)``,
which polls every 0.5 s (``settings.DEFAULT_POLL_INTERVAL``). Each worker thread
gets its own ``NovitaClient``: one shared ``requests.Session`` would keep only 10
pooled connections for all the threads and is not documented as thread-safe.

It sleeps real seconds (``time.sleep``), so it is only run in real-time scenarios.

One patch, which any user of 0.7.1 needs: its ``V3TaskResponseDebugInfo`` wants whole
numbers in ``extra.debug_info``, where Novita's reference (and so the simulator) sends
``""`` for a time not reached yet, so ``wait_for_task_v3`` dies with a ``ParseError`` on
the first answer of a task still queued. :func:`wait_for_task` is that method's loop
(its poll interval, its parser) with those ``""`` read as ``"0"``.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from novita_client import NovitaClient, settings
from novita_client.proto import V3TaskResponse

from . import _report


def wait_for_task(client: NovitaClient, task_id: str) -> V3TaskResponse:
    """``client.wait_for_task_v3(task_id)``, able to read a task not finished yet."""
    while True:
        answer: dict[str, Any] = client._get("/v3/async/task-result", {"task_id": task_id})
        debug = answer.get("extra", {}).get("debug_info") or {}
        for name, value in debug.items():
            if name.endswith("_time_ms") and value == "":
                debug[name] = "0"
        progress = V3TaskResponse.from_dict(answer)
        if progress.finished():
            return progress
        time.sleep(settings.DEFAULT_POLL_INTERVAL)


class _Work:
    def __init__(self, args: argparse.Namespace, meter: _report.Meter) -> None:
        self._url: str = args.url
        self._key: str = args.api_key
        self._meter = meter
        self._wall = _report.SharedWall(args.speed, args.origin)
        self._local = threading.local()

    def _client(self) -> NovitaClient:
        client: NovitaClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = NovitaClient(self._key, base_url=self._url)
        return client

    def one(self, prompt: str) -> None:
        client = self._client()
        task_id = client._post(_report.SUBMIT_PATH, {"prompt": prompt})["task_id"]
        result = wait_for_task(client, task_id)
        # Only the GIL guards the meter's dict and list: one store or append at a time.
        self._meter.hand_over(task_id, self._wall())
        if result.task.status.value != "TASK_STATUS_SUCCEED":
            self._meter.fail(f"task {task_id}: {result.task.reason}")


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--workers", type=int, required=True, help="threads in the pool")
    args = p.parse_args()
    meter = _report.Meter()
    work = _Work(args, meter)
    meter.start()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(work.one, prompt) for prompt in _report.prompts(args.n)]
    meter.stop()
    for future in futures:
        if (error := future.exception()) is not None:
            meter.fail(repr(error))
    meter.report("novita_client")


if __name__ == "__main__":
    main()
