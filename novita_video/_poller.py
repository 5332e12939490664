"""The one poller: a single coroutine that checks every outstanding task of a client.

Whoever wants a task's final result (a :meth:`Client.wait` call, a batch of
:meth:`Client.generate`) registers a :class:`Listener` for its task id. Listeners of one
task id share one :class:`_Watch`; watches sit in a heap ordered by when each is due
(its next check, or its earliest listener's deadline). The poller sleeps until the top
of the heap is due, then runs the due checks concurrently, bounded by ``concurrency``
and by its own :class:`RateLimiter`. A check either finishes the watch (a final status,
or an error that retrying cannot mend) or plans the next check from the answer
(:func:`next_check_delay`). A 429 pauses and slows every poll, not just one.

Ten thousand waiting web requests cost ten thousand heap entries, not ten thousand
polling loops.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import statistics
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import attrs

from ._clock import Clock
from ._errors import NovitaError, ProtocolError, RateLimitError, TaskTimeoutError
from ._limits import RateLimiter
from ._models import TaskResult, TaskStatus
from ._retry import Decision, RetryPolicy, decide, retry_delay
from ._schedule import Observation, PollSchedule, next_check_delay

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._client import _Counters

logger = logging.getLogger("novita_video")

#: How many recent task durations the poller remembers to guess the next ones.
_DURATIONS_KEPT = 64


@attrs.define(eq=False)
class Listener:
    """One party waiting for a task: ``on_done`` is called once, with the final result or
    an error; ``on_progress``, if given, with each answer that is not final yet."""

    task_id: str
    deadline: float
    on_done: Callable[[TaskResult | None, NovitaError | None], None]
    on_progress: Callable[[TaskResult], None] | None = None
    done: bool = False

    def _finish(self, result: TaskResult | None, error: NovitaError | None) -> None:
        if not self.done:
            self.done = True
            self.on_done(result, error)


@attrs.define(eq=False)
class _Watch:
    task_id: str
    started: float
    next_check: float
    listeners: list[Listener] = attrs.Factory(list)
    last: TaskResult | None = None
    anchor: tuple[float, int] | None = None
    failures: int = 0
    ticket: int = 0
    checking: bool = False
    seq: int = 0


class Poller:
    """Checks the results of every task some listener waits for; see the module docstring."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[TaskResult]],
        *,
        clock: Clock,
        schedule: PollSchedule,
        limiter: RateLimiter,
        concurrency: int,
        retry: RetryPolicy,
        counters: _Counters,
        fallback_delay: float = 0.0,
    ) -> None:
        self._fetch = fetch
        # With webhooks, polls are the fallback for lost events: each comes this late.
        self._fallback_delay = fallback_delay
        self._clock = clock
        self._schedule = schedule
        self._limiter = limiter
        self._concurrency = concurrency
        self._retry = retry
        self._counters = counters
        self._watches: dict[str, _Watch] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._sleep_scope: anyio.CancelScope | None = None
        self._durations: deque[float] = deque(maxlen=_DURATIONS_KEPT)
        self._typical: float | None = None
        self._random = random.Random()
        #: Whether run() is running (the client's statistics report it).
        self.running = False

    @property
    def outstanding(self) -> int:
        """Task ids some listener is waiting for."""
        return len(self._watches)

    def statuses(self) -> Counter[TaskStatus | None]:
        """Outstanding tasks by the status their last check saw (``None``: not checked yet)."""
        return Counter(
            None if watch.last is None else watch.last.status for watch in self._watches.values()
        )

    # Registration (synchronous: safe to call from callbacks and shielded sections).

    def listen(
        self,
        task_id: str,
        *,
        deadline: float,
        on_done: Callable[[TaskResult | None, NovitaError | None], None],
        on_progress: Callable[[TaskResult], None] | None = None,
        submitted_at: float | None = None,
    ) -> Listener:
        """Wait for ``task_id`` to end. ``submitted_at`` (clock time) means the task is new:
        its first check is planned from the schedule; otherwise it is checked at once."""
        now = self._clock.now()
        listener = Listener(task_id, deadline, on_done, on_progress)
        watch = self._watches.get(task_id)
        if watch is None:
            if submitted_at is None:
                started, first = now, now
            else:
                first = submitted_at + self._first_delay() + self._fallback_delay
                started = submitted_at
            watch = self._watches[task_id] = _Watch(task_id, started, first)
        watch.listeners.append(listener)
        self._reschedule(watch)
        return listener

    def forget(self, listener: Listener) -> None:
        """Stop waiting for this listener (its owner went away); it is not called."""
        listener.done = True
        watch = self._watches.get(listener.task_id)
        if watch is None:
            return
        watch.listeners = [other for other in watch.listeners if other is not listener]
        if not watch.listeners:
            del self._watches[listener.task_id]

    def hint(self, task_id: str) -> bool:
        """Someone says ``task_id`` changed (a webhook): check it now, if it is watched."""
        watch = self._watches.get(task_id)
        if watch is None:
            return False
        if watch.next_check > self._clock.now():
            watch.next_check = self._clock.now()
            self._reschedule(watch)
        return True

    def push(self, result: TaskResult) -> bool:
        """Take ``result`` as if a check had answered it (a trusted webhook), if watched."""
        watch = self._watches.get(result.task_id)
        if watch is None or watch.checking:
            return False  # unknown, finished already, or being checked right now
        self._answered(watch, result)
        return True

    def close(self, error: NovitaError) -> None:
        """Finish every listener with ``error`` (the client is closing)."""
        watches, self._watches = self._watches, {}
        for watch in watches.values():
            for listener in watch.listeners:
                listener._finish(None, error)

    # The loop.

    async def run(self) -> None:
        """Poll until cancelled. Run it once, in the client's task group."""
        # A fixed set of workers takes due checks from a stream with no buffer: handing
        # one over waits for an idle worker, which bounds the checks in flight without a
        # task spawned per check.
        send, receive = anyio.create_memory_object_stream[_Watch](0)
        self.running = True
        try:
            await self._serve(send, receive)
        finally:
            self.running = False

    async def _serve(
        self, send: MemoryObjectSendStream[_Watch], receive: MemoryObjectReceiveStream[_Watch]
    ) -> None:
        async with anyio.create_task_group() as workers:
            for _ in range(self._concurrency):
                workers.start_soon(self._work, receive.clone())
            receive.close()
            async with send:
                while True:
                    await self._sleep_until_due()
                    await self._dispatch_due(send)

    async def _dispatch_due(self, send: MemoryObjectSendStream[_Watch]) -> None:
        now = self._clock.now()
        while self._heap and self._heap[0][0] <= now:
            _, seq, task_id = heapq.heappop(self._heap)
            watch = self._watches.get(task_id)
            if watch is None or watch.seq != seq or watch.checking:
                continue  # a stale entry: the watch ended or was rescheduled
            self._expire(watch, now)
            if task_id not in self._watches:
                continue
            if watch.next_check > now:
                self._reschedule(watch)
                continue
            watch.checking = True
            watch.ticket = await self._limiter.acquire()
            await send.send(watch)
            now = self._clock.now()

    async def _work(self, receive: MemoryObjectReceiveStream[_Watch]) -> None:
        async with receive:
            async for watch in receive:
                await self._check(watch)
                # An idle worker must not keep the last watch (and, through its listeners,
                # a finished batch) alive until its next check.
                del watch

    async def _sleep_until_due(self) -> None:
        while True:
            delay = self._heap[0][0] - self._clock.now() if self._heap else None
            if delay is not None and delay <= 0:
                return
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                if delay is None:
                    await anyio.sleep_forever()
                else:
                    await self._clock.sleep(delay)
            self._sleep_scope = None
            if not scope.cancelled_caught:
                return

    def _reschedule(self, watch: _Watch) -> None:
        live = [listener.deadline for listener in watch.listeners if not listener.done]
        due = min([watch.next_check, *live])
        watch.seq = next(self._seq)
        heapq.heappush(self._heap, (due, watch.seq, watch.task_id))
        if self._heap[0][1] == watch.seq and self._sleep_scope is not None:
            self._sleep_scope.cancel()  # wake the loop: this one is due sooner

    def _expire(self, watch: _Watch, now: float) -> None:
        for listener in watch.listeners:
            if listener.deadline <= now:
                error = TaskTimeoutError(
                    f"task {watch.task_id} was not final after its deadline",
                    watch.task_id,
                    watch.last,
                )
                listener._finish(watch.last, error)
        watch.listeners = [listener for listener in watch.listeners if not listener.done]
        if not watch.listeners:
            self._watches.pop(watch.task_id, None)

    def _first_delay(self) -> float:
        if self._typical is not None:
            # Tasks like the quickest seen so far would not be done before half their
            # time: a first look then still learns the eta, one poll later than never.
            return max(self._schedule.first_check, 0.5 * self._typical)
        return self._schedule.first_check

    # One check.

    async def _check(self, watch: _Watch) -> None:
        try:
            result = await self._fetch_result(watch.task_id)
        except NovitaError as error:
            self._failed(watch, error)
        else:
            self._limiter.accepted()
            self._answered(watch, result)
        finally:
            watch.checking = False

    async def _fetch_result(self, task_id: str) -> TaskResult:
        result = await self._fetch(task_id)
        if result.task_id != task_id:
            raise ProtocolError(
                f"task-result: asked for task {task_id}, the answer is for {result.task_id}"
            )
        return result

    def _answered(self, watch: _Watch, result: TaskResult) -> None:
        watch.failures = 0
        watch.last = result
        now = self._clock.now()
        if result.is_final:
            self._learn(now - watch.started)
            self._end(watch, result, None)
            return
        for listener in watch.listeners:
            if listener.on_progress is not None and not listener.done:
                listener.on_progress(result)
        age = now - watch.started
        if result.progress > 0 and watch.anchor is None:
            watch.anchor = (age, result.progress)
        observation = Observation(
            age=age,
            status=result.status,
            eta=result.eta,
            progress=result.progress,
            previous=watch.anchor,
            typical=self._typical,
        )
        delay = next_check_delay(observation, self._schedule, fallback=self._fallback_delay)
        watch.next_check = now + delay
        self._continue(watch)

    def _failed(self, watch: _Watch, error: NovitaError) -> None:
        if isinstance(error, RateLimitError):
            # The whole poller slows down, and this task is not to blame for it.
            pause = retry_delay(
                1, self._retry, retry_after=error.retry_after, rand=self._random.random()
            )
            self._limiter.throttled(pause, watch.ticket)
            self._counters.rate_limited += 1
            watch.next_check = self._clock.now() + pause
            self._continue(watch)
            return
        watch.failures += 1
        if decide("GET", error, watch.failures, self._retry) is not Decision.RETRY:
            self._end(watch, watch.last, error)
            return
        self._counters.retries += 1
        delay = retry_delay(watch.failures, self._retry, rand=self._random.random())
        watch.next_check = self._clock.now() + delay
        self._continue(watch)

    def _continue(self, watch: _Watch) -> None:
        if self._watches.get(watch.task_id) is watch:
            self._reschedule(watch)

    def _end(self, watch: _Watch, result: TaskResult | None, error: NovitaError | None) -> None:
        if self._watches.get(watch.task_id) is watch:
            del self._watches[watch.task_id]
        for listener in watch.listeners:
            listener._finish(result, error)

    def _learn(self, duration: float) -> None:
        self._durations.append(duration)
        if len(self._durations) >= 5:
            # The 10th percentile: "typical" errs towards quick, so a guess costs a poll
            # rather than a late notice.
            self._typical = statistics.quantiles(self._durations, n=10)[0]
