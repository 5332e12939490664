"""CPU per request: our client against a bare aiohttp request, and where ours goes.

``python -m benchmarks.cpu_profile`` starts the simulator (``python -m
novita_video.testing``) in its own process, so that its CPU is not ours, and then, in
this one process, sends the same requests two ways, in alternating order, ``--repeats``
times:

* **bare**: one ``aiohttp.ClientSession`` with the client's own session settings (its
  connector limit, timeouts and default headers), the ``Authorization`` header per
  request, ``raise_for_status()`` and ``await response.json()``: what a hand loop does;
* **ours**: a :class:`novita_video.Client` at its defaults except ``submit_rpm=None``
  (no submit limit: the bare side has none either), and ``poll_rpm=None``.

Five kinds of request, each ``--n`` times from ``--concurrency`` coroutines:
``poll`` (``client.get_result`` of a running task: the hot path, thousands a batch),
``submit`` (``client.submit``), ``batch submit`` (the submitter alone, as ``generate``
calls it for each prompt), ``check`` (one check by the client's poller,
through ``client.wait``: the wait's own event, the heap, the schedule, the dispatcher
and a check worker on top of a poll; its bare counterpart is the same GET) and ``batch
check`` (the same checks with a listener each on the poller and no wait per task, as
``generate`` uses it: what the poller alone adds to a poll). It prints
``time.process_time()`` per request (medians of the repeats) and each ratio, then the
per-layer breakdown of our side: a cProfile of one more round, each function's own time
charged to the layer of the file it is written in (cProfile's clock is the wall's, so
the time spent waiting in ``epoll`` is left out; its overhead per call inflates every
figure alike, so read the shares, not the totals).

No new dependency: the standard library's cProfile, and what the client uses anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

import novita_video
from novita_video._settings import DEFAULT_HTTP

from ._harness import API_KEY, SimulatorSpec, simulator
from ._report import RESULT_PATH, SUBMIT_PATH

#: The layers a function's own time is charged to, by the file it is written in (the
#: first fragment that matches wins).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "models: attrs/cattrs, _models, _requests, _wire",
        (
            "novita_video/_models.py",
            "novita_video/_requests.py",
            "novita_video/_wire.py",
            "/cattrs/",
            "/attr/",
            "/attrs/",
            "<attrs generated",
            "<cattrs generated",
        ),
    ),
    ("json", ("/json/",)),
    ("limiter: _limits", ("novita_video/_limits.py",)),
    ("retry driver: _retrier, _retry", ("novita_video/_retrier.py", "novita_video/_retry.py")),
    (
        "transport + body cap: _http, _transport",
        (
            "novita_video/_http.py",
            "novita_video/_transport.py",
            "/zlib",
        ),
    ),
    (
        "hooks and logging: _observe, _logs, logging",
        (
            "novita_video/_observe.py",
            "novita_video/_logs.py",
            "/logging/",
        ),
    ),
    ("client and submit: _client, _submit", ("novita_video/_client.py", "novita_video/_submit.py")),
    (
        "poller heap and schedule: _poller, _schedule",
        (
            "novita_video/_poller.py",
            "novita_video/_schedule.py",
            "heapq",
        ),
    ),
    ("clock: _clock", ("novita_video/_clock.py",)),
    ("anyio: cancel scopes, deadlines, task groups", ("/anyio/",)),
    ("aiohttp, yarl, multidict", ("/aiohttp/", "/yarl/", "/multidict/", "/propcache/")),
    ("asyncio event loop, sockets", ("/asyncio/", "selectors", "socket", "/ssl")),
)
OTHER = "other (builtins, stdlib)"


def layer_of(filename: str) -> str:
    """The layer a function written in ``filename`` belongs to."""
    for name, fragments in LAYERS:
        if any(fragment in filename for fragment in fragments):
            return name
    return OTHER


def by_layer(profile: cProfile.Profile) -> dict[str, float]:
    """Seconds of own time (cProfile's ``tottime``) per layer."""
    totals: dict[str, float] = defaultdict(float)
    stats: Any = pstats.Stats(profile).stats
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        where = filename
        if function == "<method 'poll' of 'select.epoll' objects>":
            continue  # waiting for the network: cProfile's clock is the wall's
        if filename == "~":  # a builtin: charged by its name ("<method 'loads' of ...>")
            where = OTHER
            if "json" in function or "scanner" in function:
                where = "/json/"
            elif "zlib" in function or "Decompress" in function:
                where = "/zlib"
            elif "heap" in function:
                where = "heapq"
            elif "select" in function or "socket" in function or "recv" in function:
                where = "selectors"
        totals[layer_of(where)] += tottime
    return totals


async def _spread(n: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> None:
    """``one(i)`` for i in range(n), from ``concurrency`` coroutines."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class Bare:
    """The same requests through a bare aiohttp session with the client's settings."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._auth = {"Authorization": f"Bearer {API_KEY}"}
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Bare:
        self.session = aiohttp.ClientSession(
            self._url,
            connector=aiohttp.TCPConnector(limit=DEFAULT_HTTP.max_connections),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=DEFAULT_HTTP.connect_timeout,
                sock_read=DEFAULT_HTTP.timeout,
            ),
            headers={
                "User-Agent": "bare",
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate",
            },
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def poll(self, task_id: str) -> Any:
        assert self.session is not None
        async with self.session.get(
            RESULT_PATH, params={"task_id": task_id}, headers=self._auth
        ) as response:
            response.raise_for_status()
            return await response.json()

    async def submit(self, prompt: str) -> Any:
        assert self.session is not None
        async with self.session.post(
            SUBMIT_PATH, json={"prompt": prompt}, headers=self._auth
        ) as response:
            response.raise_for_status()
            return (await response.json())["task_id"]


class _Seen(Exception):
    """Ends a ``client.wait`` after its first answer (one check by the poller)."""


def _stop(_: novita_video.TaskResult) -> None:
    raise _Seen


async def _one_check(client: novita_video.Client, task_id: str) -> None:
    try:
        await client.wait(task_id, on_progress=_stop)
    except _Seen:
        return
    raise AssertionError(f"task {task_id} ended during the benchmark")


async def _batch_checks(client: novita_video.Client, todo: list[str]) -> None:
    """One check each of ``todo`` by the poller, as a batch uses it: a listener per task
    and no wait of its own (``generate`` registers them, then reads their ends)."""
    poller = client._poller
    listeners: dict[str, Any] = {}
    left = [len(todo)]
    finished = asyncio.Event()

    def seen(result: novita_video.TaskResult) -> None:
        poller.forget(listeners.pop(result.task_id))
        left[0] -= 1
        if not left[0]:
            finished.set()

    def ended(result: novita_video.TaskResult | None, error: Exception | None) -> None:
        raise AssertionError(f"a task ended during the benchmark: {result or error}")

    for task_id in todo:
        listeners[task_id] = poller.listen(
            task_id, deadline=float("inf"), on_done=ended, on_progress=seen
        )
    await finished.wait()


def _cpu(run: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[float]]:
    async def measured() -> float:
        started = time.process_time()
        await run()
        return time.process_time() - started

    return measured


async def _main(args: argparse.Namespace, url: str) -> dict[str, Any]:
    n, conc = args.n, args.concurrency
    prompts = iter(f"cpu profile clip {i}: a lighthouse at dusk" for i in range(10**9))
    async with (
        Bare(url) as bare,
        novita_video.Client(
            API_KEY, base_url=url, submit_rpm=None, poll_rpm=None, concurrency=conc
        ) as client,
    ):
        # Running tasks to poll (the simulator's run for an hour), and warm connections.
        tasks = [await client.submit(next(prompts)) for _ in range(conc)]
        await bare.poll(tasks[0])

        def ours_polls() -> Awaitable[None]:
            return _spread(n, conc, lambda i: client.get_result(tasks[i % conc]))

        def bare_polls() -> Awaitable[None]:
            return _spread(n, conc, lambda i: bare.poll(tasks[i % conc]))

        def ours_submits() -> Awaitable[None]:
            return _spread(n // 4, conc, lambda i: client.submit(next(prompts)))

        def batch_submits() -> Awaitable[None]:
            # What generate() does per prompt (the burst's path): the submitter under the
            # client's limiter, without client.submit's hop into the client's task group.
            return _spread(
                n // 4,
                conc,
                lambda i: client._submitter.submit(
                    novita_video.VideoRequest(next(prompts)), client._submit_limiter
                ),
            )

        def bare_submits() -> Awaitable[None]:
            return _spread(n // 4, conc, lambda i: bare.submit(next(prompts)))

        # One check each of many tasks (fresh ones: a task's first check goes at once).
        # Fresh tasks for every round (and one to profile): checks are noisy, so as many
        # rounds of them as of the rest.
        rounds = args.repeats + 1
        checked = [await bare.submit(next(prompts)) for _ in range(rounds * (n // 4))]
        pending = {"ours": list(checked), "bare": list(checked)}

        def ours_checks() -> Awaitable[None]:
            todo, pending["ours"] = pending["ours"][: n // 4], pending["ours"][n // 4 :]
            return _spread(len(todo), conc, lambda i: _one_check(client, todo[i]))

        def bare_checks() -> Awaitable[None]:
            todo, pending["bare"] = pending["bare"][: n // 4], pending["bare"][n // 4 :]
            return _spread(len(todo), conc, lambda i: bare.poll(todo[i]))

        # The same, for the poller alone (what a batch's checks cost): tasks of their own.
        batch_checked = [await bare.submit(next(prompts)) for _ in range(rounds * (n // 4))]
        pending["batch ours"], pending["batch bare"] = list(batch_checked), list(batch_checked)

        def ours_batch_checks() -> Awaitable[None]:
            todo = pending["batch ours"][: n // 4]
            pending["batch ours"] = pending["batch ours"][n // 4 :]
            return _batch_checks(client, todo)

        def bare_batch_checks() -> Awaitable[None]:
            todo = pending["batch bare"][: n // 4]
            pending["batch bare"] = pending["batch bare"][n // 4 :]
            return _spread(len(todo), conc, lambda i: bare.poll(todo[i]))

        kinds: dict[str, tuple[int, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]]
        kinds = {
            "poll": (n, ours_polls, bare_polls),
            "submit": (n // 4, ours_submits, bare_submits),
            "batch submit": (n // 4, batch_submits, bare_submits),
            "check": (n // 4, ours_checks, bare_checks),
            "batch check": (n // 4, ours_batch_checks, bare_batch_checks),
        }
        # Warm-up of both (first-time costs: cattrs' generated code, connections).
        await ours_polls()
        await bare_polls()
        samples: dict[str, dict[str, list[float]]] = {
            kind: {"ours": [], "bare": []} for kind in kinds
        }
        for repeat in range(args.repeats):
            for kind, (count, ours, bares) in kinds.items():
                order = [("ours", ours), ("bare", bares)]
                if repeat % 2:
                    order.reverse()
                for who, run in order:
                    seconds = await _cpu(run)()
                    samples[kind][who].append(seconds / count * 1e6)
        # One more round of each, under cProfile, for the per-layer table.
        layers: dict[str, tuple[int, dict[str, float]]] = {}
        for label, count, run in (
            ("bare poll", n, bare_polls),
            ("ours poll", n, ours_polls),
            ("ours submit", n // 4, ours_submits),
            ("ours batch submit", n // 4, batch_submits),
            ("ours check", n // 4, ours_checks),
            ("ours batch check", n // 4, ours_batch_checks),
        ):
            profile = cProfile.Profile()
            profile.enable()
            await run()
            profile.disable()
            layers[label] = (count, by_layer(profile))
            if args.top:
                print(f"--- {label}: the top {args.top} functions by own time")
                pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    return {"samples": samples, "layers": layers}


def _table(samples: dict[str, dict[str, list[float]]]) -> list[str]:
    lines = [
        "| request | ours µs CPU | bare aiohttp µs CPU | ours / bare |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, sides in samples.items():
        ours, bare = statistics.median(sides["ours"]), statistics.median(sides["bare"])
        ratios = [o / b for o, b in zip(sides["ours"], sides["bare"], strict=True)]
        lines.append(f"| {kind} | {ours:.0f} | {bare:.0f} | {statistics.median(ratios):.2f}x |")
    return lines


def _layers(layers: dict[str, tuple[int, dict[str, float]]]) -> list[str]:
    names = [name for name, _ in LAYERS] + [OTHER]
    lines = [
        "| layer (µs per request, under cProfile) | " + " | ".join(layers) + " |",
        "| --- |" + " ---: |" * len(layers),
    ]
    for name in [*names, "total"]:
        cells = []
        for count, seconds in layers.values():
            value = sum(seconds.values()) if name == "total" else seconds.get(name, 0.0)
            cells.append(f"{value / count * 1e6:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="polls per round (submits: n/4)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--repeats", type=int, default=5, help="rounds of each, alternating")
    p.add_argument("--top", type=int, default=0, help="also print each profile's top functions")
    args = p.parse_args(argv)
    spec = SimulatorSpec(task_duration=(3600.0, 3600.0), seed=21)
    with simulator(spec, origin=time.time()) as sim:
        found = asyncio.run(_main(args, sim.url))
    print("\n".join(_table(found["samples"])))
    print()
    print("\n".join(_layers(found["layers"])))


if __name__ == "__main__":
    main()
