"""What the poller learns is kept per model, also for ``Client.submit`` then ``Client.wait``.

Tasks of the unified endpoint may all report one ``task_type``: two models whose etas
differ must not teach each other. A transport of the test's own (the public seam) plays
two models that report the same ``task_type`` on virtual time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal

import anyio
import pytest

from novita_video import Client, HailuoRequest, Response, Sending, TaskStatus

pytestmark = pytest.mark.anyio

#: How long each model's tasks run, and how many times that their etas say.
MODELS = {"minimax-video-01": (60.0, 1.0), "minimax-hailuo-02": (40.0, 2.0)}


class TwoModels:
    """Tasks of two models, one ``task_type``: no progress, an eta in whole seconds."""

    reports_sending = True

    def __init__(self) -> None:
        self.tasks: dict[str, tuple[str, float]] = {}  # task id -> (model, submitted at)

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to release."""

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        sending: Sending | None = None,
    ) -> Response:
        now = anyio.current_time()
        if method == "POST":
            if sending is not None:
                sending.mark_sent()
            task_id = f"task-{len(self.tasks)}"
            self.tasks[task_id] = (path.rsplit("/", 1)[-1], now)
            return _json({"task_id": task_id})
        assert params is not None
        task_id = params["task_id"]
        model, submitted = self.tasks[task_id]
        runs, says = MODELS[model]
        left = submitted + runs - now
        task: dict[str, Any] = {"task_id": task_id, "task_type": "ONE_TYPE_FOR_ALL"}
        if left <= 0:
            url = f"https://storage.example/{task_id}.mp4"
            video = {"video_url": url, "video_url_ttl": "3600", "video_type": "mp4"}
            return _json({"task": task | {"status": "TASK_STATUS_SUCCEED"}, "videos": [video]})
        status = {"status": "TASK_STATUS_PROCESSING", "eta": math.ceil(left * says)}
        return _json({"task": task | status, "videos": []})

    async def download(self, url: str, file: Any) -> Response:
        raise AssertionError("no downloads here")


def _json(body: object) -> Response:
    return Response(200, json.dumps(body).encode(), {"content-type": "application/json"})


async def test_a_wait_learns_with_the_model_submitted_not_the_task_type() -> None:
    transport = TwoModels()
    async with Client("sk-test", transport=transport) as client:
        # Six tasks of one model whose etas are exact: the poller learns to believe them.
        async with anyio.create_task_group() as group:
            for n in range(6):
                task_id = await client.submit(f"clip {n}")
                group.start_soon(client.wait, task_id)
        # Another model, the same task_type, etas twice too long. Learned under the
        # task_type, its eta would be believed whole: its end noticed 40 s late.
        start = anyio.current_time()
        task_id = await client.submit(HailuoRequest("a cat"))
        result = await client.wait(task_id)
        late = anyio.current_time() - (start + MODELS["minimax-hailuo-02"][0])
    assert result.status is TaskStatus.SUCCEED
    # Cold for its own model: the eta believed only part of the way (no progress to
    # check it), so the end is noticed within a fraction of that eta.
    assert 0 <= late <= 10.0
