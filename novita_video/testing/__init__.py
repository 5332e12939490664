"""A local Novita: a real HTTP server that plays the video API, for tests and benchmarks.

:class:`FakeNovita` listens on 127.0.0.1 and answers like Novita's async video API
(Minimax Video-01 and Hailuo-02, Kling v1.6 image-to-video, Wan text-to-video, and the
unified endpoint of its catalogue's models: Kling 3.0, Hailuo 2.3, Seedance 1.5, ...):
bearer auth, each model's body validation, an account whose balance falls by a price per
task, tasks that move QUEUED -> PROCESSING -> SUCCEED
(or FAILED) as simulator time passes, presigned video links that expire, 429s
under a :class:`RateLimit`, and webhook events POSTed to a loopback URL when a task
ends (retried, and lost or doubled on demand). It counts what clients do in
:class:`SimulatorStats` (polls per task, duplicate submissions, keys leaked to
storage, webhook deliveries per task)::

    import aiohttp
    from novita_video.testing import FakeNovita, RateLimit

    async def main() -> None:
        async with FakeNovita(task_duration=(1, 2), submit_limit=RateLimit(20, per=60)) as fake:
            headers = {"Authorization": f"Bearer {fake.api_key}"}
            async with aiohttp.ClientSession(fake.url, headers=headers) as http:
                async with http.post("/v3/async/minimax-video-01", json={"prompt": "a cat"}) as r:
                    task_id = (await r.json())["task_id"]
            print(fake.stats.task_count, fake.task(task_id).finishes_at)

A :class:`Chaos` makes it misbehave on purpose, seeded and changeable mid-run:
5xx (HTML or JSON), dropped connections, broken JSON, slow answers, 429 storms,
unknown statuses, stuck tasks, stale links, cut downloads, a key revoked after K
tasks. The stats keep the ground truth, above all which created tasks a client
never got an answer for (``FakeNovita(chaos=Chaos(submit_drops_after=0.1))``).

The same server runs on its own with ``python -m novita_video.testing --port 0``
(see ``--help``), and pytest gets a ``fake_novita`` fixture from
``novita_video.testing.pytest_plugin``.

Layout, one concept per module: ``_config`` (the knobs), ``_tasks`` (a task's life
as a function of time), ``_ratelimit`` (sliding-window log), ``_chaos`` (faults: how
often, and the seeded decisions), ``_errors`` (the error answer), ``_endpoints`` (each
model's submit body), ``_unified`` (the catalogue and its bodies), ``_account`` (the
balance and the made-up prices), ``_wire`` (JSON in and out), ``_storage`` (presigned
links to ``assets/clip.mp4``), ``_webhooks`` (the one dispatcher of webhook events),
``_stats`` (what was seen), ``_server`` (aiohttp and the request pipeline), ``_memory``
(:class:`MemoryTransport`: a client answered by that pipeline without a socket) and
``_virtual`` (:class:`VirtualTimeLoop`: an event loop on virtual time, for both).
"""

from ._chaos import Chaos as Chaos
from ._config import SimulatorConfig as SimulatorConfig
from ._memory import MemoryTransport as MemoryTransport
from ._ratelimit import RateLimit as RateLimit
from ._server import FakeNovita as FakeNovita
from ._stats import SimulatorStats as SimulatorStats
from ._stats import WebhookStats as WebhookStats
from ._tasks import SubmitRequest as SubmitRequest
from ._tasks import TaskRecord as TaskRecord
from ._tasks import TaskState as TaskState
from ._virtual import VirtualTimeLoop as VirtualTimeLoop

__all__ = [
    "Chaos",
    "FakeNovita",
    "MemoryTransport",
    "RateLimit",
    "SimulatorConfig",
    "SimulatorStats",
    "SubmitRequest",
    "TaskRecord",
    "TaskState",
    "VirtualTimeLoop",
    "WebhookStats",
]
