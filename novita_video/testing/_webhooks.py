"""Webhook delivery: when a task ends, POST its result to the URL its submit named.

Novita POSTs ``{"event_type": "ASYNC_TASK_RESULT", "payload": <task-result body>}`` to
``extra.webhook.url`` when a task ends, and retries up to 5 times if the receiver is slow
(over 5 s) or answers non-2xx. The simulator does the same, on its own clock.

Tasks run no code of their own (their state is computed on each poll), so nothing would
notice a task ending. One :class:`WebhookDispatcher` does: a single asyncio task, started
with the server and stopped on close, keeps a heap of ``(due time, order, event)`` on the
simulator clock, sleeps until the earliest is due (or a new one arrives), and hands due
events to at most :data:`CONCURRENCY` deliveries at once, all over one aiohttp session.
A retry goes back on the heap rather than sleeping in a delivery, so a slow receiver
holds no slot while it waits for its next try. 10,000 pending events are 10,000 heap
entries and no timers.

Only loopback URLs are ever accepted (``_endpoints`` refuses the rest at submit), and
redirects are not followed, so the simulator never calls out to another machine.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
import attrs

from .._clock import Clock
from ._stats import Counters, WebhookStats

__all__ = ["CONCURRENCY", "RETRY_DELAYS", "WebhookDispatcher"]

#: Simulator seconds before each retry: 5 retries after the first try, each wait longer.
RETRY_DELAYS: Final = (1.0, 2.0, 4.0, 8.0, 16.0)
#: Deliveries in flight at once, whatever the number of due events.
CONCURRENCY: Final = 32


@attrs.frozen
class _Event:
    """One copy of one task's event (a duplicated event has copies 0 and 1)."""

    task_id: str
    url: str
    copy: int = 0
    #: Retries made so far: 0 on the first try.
    retries: int = 0


async def _first(*waits: Awaitable[Any]) -> set[asyncio.Future[Any]]:
    """Run ``waits`` until one ends; cancel the others and wait for them to go.

    The simulator clock's ``sleep`` is the only timer that respects a scaled clock, so
    every "whichever comes first" here is a race of tasks rather than asyncio.timeout.
    """
    futures: list[asyncio.Future[Any]] = [asyncio.ensure_future(wait) for wait in waits]
    done: set[asyncio.Future[Any]] = set()
    try:
        done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
        # Wait until they are really gone, so close() leaves no task behind.
        await asyncio.wait(futures)
    return done


class WebhookDispatcher:
    """Delivers every task's webhook event when the task ends; see the module docstring.

    ``payload(task_id)`` builds the task-result body at completion (the server's job: it
    signs the video link); the dispatcher wraps it in the event, once per task, so every
    try and every copy sends the same bytes. What happens is counted in
    ``counters.webhooks`` (a :class:`WebhookStats` per task).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        timeout: float,
        counters: Counters,
        payload: Callable[[str], bytes],
    ) -> None:
        self._clock = clock
        self._timeout = timeout
        self._counters = counters
        self._payload = payload
        self._heap: list[tuple[float, int, _Event]] = []
        self._order = itertools.count()  # ties on the due time go in scheduling order
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._bodies: dict[str, bytes] = {}
        self._copies_left: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the session and start the dispatching task (on the running loop)."""
        # No real-time limit: the simulator clock's webhook_timeout decides when a try is slow.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None),
            # A connection per event, as Novita's deliveries come through a load balancer:
            # several workers behind one socket each get their share, not one of them all.
            connector=aiohttp.TCPConnector(limit=CONCURRENCY, force_close=True),
        )
        self._task = asyncio.create_task(self._run(), name="novita_video simulator webhooks")

    async def close(self) -> None:
        """Stop dispatching (pending and in-flight events are dropped), close the session."""
        task, self._task = self._task, None
        session, self._session = self._session, None
        try:
            if task is not None:
                task.cancel()
                # asyncio.wait, not `await task`: a cancellation of close() itself must not
                # be mistaken for the dispatcher's, nor swallowed with it.
                await asyncio.wait([task])
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error  # a bug in the dispatcher: the test that closes us sees it
        finally:
            if session is not None:
                await session.close()

    def schedule(
        self, task_id: str, url: str, *, due: float | None, lost: bool, duplicated: bool
    ) -> None:
        """Deliver ``task_id``'s event to ``url`` at ``due`` (simulator ``now()``).

        ``due=None`` is a task that never ends: its event is recorded, never sent. A
        ``lost`` event is recorded and dropped; a ``duplicated`` one is sent twice.
        """
        self._counters.webhooks[task_id] = WebhookStats(url=url, lost=lost, duplicated=duplicated)
        if due is None or lost:
            return
        copies = 2 if duplicated else 1
        self._copies_left[task_id] = copies
        for copy in range(copies):
            self._push(due, _Event(task_id, url, copy))

    def _push(self, due: float, event: _Event) -> None:
        heapq.heappush(self._heap, (due, next(self._order), event))
        self._wake.set()

    def _count(self, task_id: str, **changes: Any) -> None:
        stats = self._counters.webhooks[task_id]
        self._counters.webhooks[task_id] = attrs.evolve(stats, **changes)

    # The one dispatching task.

    async def _run(self) -> None:
        # Deliveries are children of this task group: cancelling the dispatcher ends them.
        async with asyncio.TaskGroup() as deliveries:
            while True:
                event = await self._next_due()
                await self._slots.acquire()
                deliveries.create_task(self._deliver(event))

    async def _next_due(self) -> _Event:
        while True:
            # Cleared before looking, so an event pushed while we sleep wakes us up.
            self._wake.clear()
            if not self._heap:
                await self._wake.wait()
                continue
            due, _, event = self._heap[0]
            delay = due - self._clock.now()
            if delay <= 0:
                heapq.heappop(self._heap)
                return event
            await _first(self._clock.sleep(delay), self._wake.wait())

    async def _deliver(self, event: _Event) -> None:
        try:
            error = await self._attempt(event)
        finally:
            self._slots.release()
        task_id = event.task_id
        if error is None:
            self._count(task_id, delivered=self._counters.webhooks[task_id].delivered + 1)
            self._settled(task_id)
        elif event.retries < len(RETRY_DELAYS):
            self._count(task_id, last_error=error)
            again = self._clock.now() + RETRY_DELAYS[event.retries]
            self._push(again, attrs.evolve(event, retries=event.retries + 1))
        else:
            failed = self._counters.webhooks[task_id].failed + 1
            self._count(task_id, failed=failed, last_error=error)
            self._settled(task_id)

    def _settled(self, task_id: str) -> None:
        """One copy is done with; the body is dropped with the last one."""
        self._copies_left[task_id] -= 1
        if not self._copies_left[task_id]:
            del self._copies_left[task_id]
            self._bodies.pop(task_id, None)

    async def _attempt(self, event: _Event) -> str | None:
        """One POST of ``event``: None if taken in time, else why not."""
        body = self._bodies.get(event.task_id)
        if body is None:
            body = self._bodies[event.task_id] = self._payload(event.task_id)
        self._count(event.task_id, sent=self._counters.webhooks[event.task_id].sent + 1)
        post = asyncio.ensure_future(self._post(event.url, body))
        await _first(post, self._clock.sleep(self._timeout))
        if post.cancelled():
            return f"timeout: no answer within {self._timeout:g} s"
        return post.result()

    async def _post(self, url: str, body: bytes) -> str | None:
        assert self._session is not None, "start() opens the session"
        try:
            async with self._session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                # A loopback receiver must not send the simulator elsewhere.
                allow_redirects=False,
            ) as response:
                await response.read()
        except (aiohttp.ClientError, OSError) as error:
            return f"{type(error).__name__}: {error}"
        if 200 <= response.status < 300:
            return None
        return f"HTTP {response.status}"
