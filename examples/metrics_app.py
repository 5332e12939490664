"""The FastAPI example with Prometheus metrics at ``GET /metrics``.

From the repository root, with the simulator on port 8001 (see ``examples/README.md``)::

    pip install fastapi uvicorn prometheus-client
    NOVITA_BASE_URL=http://127.0.0.1:8001 NOVITA_API_KEY=sk-simulated \\
        uvicorn examples.metrics_app:app

Two sources, one page: the client's event hooks count every request it makes (by
method, path and status) and time them, and a collector reads ``client.statistics()``
at each scrape (outstanding tasks, submits, polls, retries, 429s). Everything else is
``examples/fastapi_app.py`` as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from examples import clips, fastapi_app
from novita_video import Client, ResponseEvent

#: ``client.statistics()`` fields that only grow (Prometheus counters) and the others.
COUNTERS = ("submitted", "polls", "retries", "rate_limited", "unknown_submissions", "webhooks")
GAUGES = ("outstanding", "queued", "processing", "pollers", "submit_rpm", "poll_rpm")


class ClientStatistics(Collector):
    """``client.statistics()``, read at each scrape (nothing to keep in step)."""

    def __init__(self, client: Callable[[], Client | None]) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        client = self._client()
        if client is None:  # not started yet
            return
        stats = client.statistics()
        for name in COUNTERS:
            yield CounterMetricFamily(f"novita_client_{name}", name, value=getattr(stats, name))
        for name in GAUGES:
            value = getattr(stats, name)
            # A rate of None is no limit: +Inf says so in Prometheus' own terms.
            shown = math.inf if value is None else float(value)
            yield GaugeMetricFamily(f"novita_client_{name}", name, value=shown)


def create_app(make_client: Callable[..., Client] = clips.default_client) -> FastAPI:
    """The FastAPI example, its client made with metrics hooks, and ``/metrics``."""
    registry = CollectorRegistry()  # the app's own: two apps in a process do not clash
    requests = Counter(
        "novita_requests",
        "Requests to Novita by method, path and status (none: no answer)",
        ["method", "path", "status"],
        registry=registry,
    )
    seconds = Histogram(
        "novita_request_seconds", "Time to Novita's answer", ["method", "path"], registry=registry
    )

    def count(event: ResponseEvent) -> None:
        # A clip's path names its task: one label for all of them keeps the series few.
        path = "clip download" if event.download else event.path
        status = "none" if event.status is None else str(event.status)
        requests.labels(event.method, path, status).inc()
        seconds.labels(event.method, path).observe(event.elapsed)

    made: list[Client] = []

    def client_with_metrics(**settings: Any) -> Client:
        client = make_client(event_hooks={"response": [count]}, **settings)
        made[:] = [client]
        return client

    registry.register(ClientStatistics(lambda: made[0] if made else None))
    app = fastapi_app.create_app(client_with_metrics)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """What Prometheus scrapes."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


app = create_app()
