"""``examples/metrics_app.py``: the Prometheus recipe of the Observability guide, served by
uvicorn against the simulator and scraped as Prometheus would."""

from __future__ import annotations

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from novita_video.testing import Chaos, FakeNovita
from tests.examples.examples_support import serving

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]


async def test_metrics_count_each_request_and_read_the_clients_statistics() -> None:
    # One submit in two is answered 503 first (retried: it created nothing).
    chaos = Chaos(submit_server_errors=0.5, server_error_statuses=(503,))
    async with (
        FakeNovita(task_duration=(0.5, 1.0), chaos=chaos, seed=3) as fake,
        # The retries' waits may add up past the app's default 2 s: let them.
        serving("metrics", fake, env={"CLIPS_MAX_SUBMIT_WAIT": "60"}) as url,
        aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        task_ids = []
        for index in range(4):
            async with http.post("/clips", json={"prompt": f"clip {index}"}) as got:
                assert got.status == 202, await got.text()
                task_ids.append((await got.json())["task_id"])
        for task_id in task_ids:
            async with http.get(f"/clips/{task_id}", params={"timeout": "30"}) as got:
                assert (await got.json())["final"]
        with anyio.fail_after(10):
            async with http.get("/metrics") as got:
                assert got.status == 200
                assert got.headers["Content-Type"].startswith("text/plain")
                text = await got.text()
        truth = fake.stats
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def requests(path: str, status: str) -> float:
        labels = (("method", "POST" if "minimax" in path else "GET"), ("path", path))
        return samples.get(("novita_requests_total", (*labels, ("status", status))), 0.0)

    submit = "/v3/async/minimax-video-01"
    assert requests(submit, "200") == 4
    assert requests(submit, "503") == truth.chaos["server_error_503"]["submit"] > 0
    assert requests(submit, "200") + requests(submit, "503") == truth.requests["submit"]
    polls = requests("/v3/async/task-result", "200")
    assert polls == sum(truth.polls.values())
    assert samples[("novita_client_submitted_total", ())] == 4
    assert samples[("novita_client_retries_total", ())] == requests(submit, "503")
    assert samples[("novita_client_polls_total", ())] == polls
    assert samples[("novita_client_pollers", ())] == 1
    assert samples[("novita_client_outstanding", ())] == 0
    hist = ("novita_request_seconds_count", (("method", "POST"), ("path", submit)))
    assert samples[hist] == truth.requests["submit"]
