"""The one poller: a single coroutine that checks every outstanding task of a client.

Whoever wants a task's final result (a :meth:`Client.wait` call, a batch of
:meth:`Client.generate`) registers a :class:`Listener` for its task id. Listeners of one
task id share one :class:`_Watch`; watches sit in a heap ordered by when each is due
(its next check, or its earliest listener's deadline). The poller sleeps until the top
of the heap is due, expires the listeners whose deadline passed (also while their task
is being checked), and starts each due check as a short task of its own, paced by its
own :class:`RateLimiter`. A check either finishes the watch (a final status, or an
error that retrying cannot mend) or plans the next one from the answer
(:func:`plan_next_check`). A 429 pauses and slows every poll, not just one.

The dispatcher never waits for a worker: due checks queue in order, and a check that
takes longer than ``slow_check`` (1 s: a server dripping its answer) stops counting
against ``concurrency``, so a few stuck answers cannot hold up every other task's
checks; each task has at most one check in flight, so stragglers stay bounded too.

When a task ends, the poller learns from it (per ``task_type``: models differ): how long
tasks take, and how the server's eta and progress related to the real end
(:class:`Calibration`). Later plans use what it learned.

Ten thousand waiting web requests cost ten thousand heap entries, not ten thousand
polling loops; registering or forgetting one is O(log n).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import statistics
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import attrs

from ._clock import Clock
from ._errors import NovitaError, ProtocolError, RateLimitError
from ._limits import Limiter
from ._models import TaskResult, TaskStatus, TaskTimeoutError
from ._retrier import Retrier
from ._retry import Decision
from ._schedule import Calibration, Observation, PollSchedule, plan_next_check

logger = logging.getLogger("novita_video")

#: How many recent task durations (and estimate ratios) the poller remembers.
_DURATIONS_KEPT = 64
#: Tasks that must end before typical durations are believed (their 10th percentile
#: errs quick with few), and before a calibration of the estimates is.
_DURATIONS_AFTER = 3
_LEARN_AFTER = 5
#: Estimates of less time left than this are not learned from (whole-second rounding
#: would dominate their ratios); those of more are the long jumps worth calibrating.
_LEARN_HORIZON = 20.0
#: An end is known to within half the gap between the last two checks; it grades an
#: estimate only if that gap is at most this share of the time the estimate gave.
_LEARN_PRECISION = 0.1
#: A check slower than this (seconds of the client's clock) frees its place: answers
#: take a fraction of a second, so one still coming after this is stuck or dripping.
SLOW_CHECK = 1.0


@attrs.define(eq=False)
class Listener:
    """One party waiting for a task: ``on_done`` is called once, with the final result or
    an error; ``on_progress``, if given, with each answer that is not final yet."""

    task_id: str
    deadline: float
    on_done: Callable[[TaskResult | None, NovitaError | None], None]
    on_progress: Callable[[TaskResult], None] | None = None
    done: bool = False
    #: What the listener's own ``on_progress`` raised: it ended this listener alone.
    user_error: Exception | None = None

    def _finish(self, result: TaskResult | None, error: NovitaError | None) -> None:
        if not self.done:
            self.done = True
            self.on_done(result, error)


@attrs.define(eq=False)
class _Watch:
    task_id: str
    started: float
    next_check: float
    # Insertion-ordered, O(1) to add and remove; deadlines in a heap beside them.
    listeners: dict[Listener, None] = attrs.Factory(dict)
    deadlines: list[tuple[float, int, Listener]] = attrs.Factory(list)
    last: TaskResult | None = None
    failures: int = 0
    ticket: int = 0
    checking: bool = False
    seq: int = 0
    due: float = math.inf  # when the watch's live heap entry is due
    # What the schedule needs (see Observation) and what the poller learns from.
    since: tuple[float, float] | None = None
    expected_end: float | None = None
    last_age: float = 0.0
    queued_until: float = 0.0
    eta_said: tuple[float, float] | None = None  # (age, time left) of a long eta
    progress_said: tuple[float, float] | None = None
    unknown_since: float | None = None  # when a run of statuses this client cannot read began

    def earliest_deadline(self) -> float:
        while self.deadlines and self.deadlines[0][2].done:
            heapq.heappop(self.deadlines)
        return self.deadlines[0][0] if self.deadlines else math.inf


@attrs.define(eq=False)
class _Flight:
    """One check in flight: it holds a place until it ends or turns slow."""

    began: float
    holds_place: bool = True


def _quick(seconds: deque[float]) -> float | None:
    """The 10th percentile, once there are enough: it errs towards quick, so a guess
    costs a poll rather than a late notice."""
    if len(seconds) < _DURATIONS_AFTER:
        return None
    return statistics.quantiles(seconds, n=10)[0]


class _Learned:
    """What ended tasks of one ``task_type`` taught: durations and estimate ratios."""

    def __init__(self) -> None:
        self.durations: deque[float] = deque(maxlen=_DURATIONS_KEPT)
        self.runs: deque[float] = deque(maxlen=_DURATIONS_KEPT)
        self.eta: deque[float] = deque(maxlen=_DURATIONS_KEPT)
        self.progress: deque[float] = deque(maxlen=_DURATIONS_KEPT)
        self.typical: float | None = None
        self.quick_run: float | None = None
        self.calibration = Calibration()

    def learn(self, watch: _Watch, age: float) -> None:
        """Learn from ``watch``'s task, seen final at ``age`` (since its submission)."""
        self.durations.append(age)
        self.typical = _quick(self.durations)
        if watch.since is not None:
            # It ran at least from the first check that saw it running to the last
            # check that saw it unfinished.
            self.runs.append(max(0.0, watch.last_age - watch.since[0]))
            # The shortest, not a percentile: plans take every run to last at least
            # this long, and a task that runs shorter would be noticed late.
            if len(self.runs) >= _DURATIONS_AFTER:
                self.quick_run = min(self.runs)
        # The task ended between the last check that saw it running and this one.
        gap = age - watch.last_age
        end_age = age - gap / 2
        learned = False
        for said, ratios in ((watch.eta_said, self.eta), (watch.progress_said, self.progress)):
            if said is not None and gap <= _LEARN_PRECISION * said[1]:
                at, left = said
                ratios.append((end_age - at) / left)
                learned = True
        if learned:
            self.calibration = Calibration.learn(self.eta, self.progress, after=_LEARN_AFTER)


class Poller:
    """Checks the results of every task some listener waits for; see the module docstring."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[TaskResult]],
        *,
        clock: Clock,
        schedule: PollSchedule,
        limiter: Limiter,
        concurrency: int,
        retrier: Retrier,
        fallback_delay: float = 0.0,
        slow_check: float = SLOW_CHECK,
    ) -> None:
        self._fetch = fetch
        # With webhooks, polls are the fallback for lost events: each comes this late.
        self._fallback_delay = fallback_delay
        self._clock = clock
        self._schedule = schedule
        self._limiter = limiter
        self._concurrency = concurrency
        self._slow_check = slow_check
        self._retrier = retrier
        self._watches: dict[str, _Watch] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._sleep_scope: anyio.CancelScope | None = None
        self._learned: defaultdict[str, _Learned] = defaultdict(_Learned)
        # Due checks wait here, in order, for a place among `concurrency`.
        self._queue: deque[_Watch] = deque()
        # Checks in flight that still count against `concurrency`, and every check begun
        # in the last `slow_check` seconds, oldest first (see the module docstring).
        self._busy = 0
        self._started: deque[_Flight] = deque()
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
        watch.listeners[listener] = None
        heapq.heappush(watch.deadlines, (deadline, next(self._seq), listener))
        self._reschedule(watch)
        return listener

    def forget(self, listener: Listener) -> None:
        """Stop waiting for this listener (its owner went away); it is not called."""
        listener.done = True
        watch = self._watches.get(listener.task_id)
        if watch is None:
            return
        watch.listeners.pop(listener, None)
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
            for listener in list(watch.listeners):
                listener._finish(None, error)

    # The loop.

    async def run(self) -> None:
        """Poll until cancelled. Run it once, in the client's task group."""
        self.running = True
        try:
            async with anyio.create_task_group() as checks:
                while True:
                    await self._sleep_until_due()
                    self._expire_due()
                    await self._dispatch(checks)
        finally:
            self.running = False

    def _expire_due(self) -> None:
        """Pop every heap entry that is due: expire deadlines, queue due checks."""
        now = self._clock.now()
        while self._heap and self._heap[0][0] <= now:
            _, seq, task_id = heapq.heappop(self._heap)
            watch = self._watches.get(task_id)
            if watch is None or watch.seq != seq:
                continue  # a stale entry: the watch ended or was rescheduled
            watch.due = math.inf
            self._expire(watch, now)
            if self._watches.get(task_id) is not watch:
                continue
            if watch.checking or watch.next_check > now:
                # Being checked (its answer plans what comes next), or only a deadline
                # was due: wait for the next of either.
                self._reschedule(watch)
                continue
            watch.checking = True
            self._queue.append(watch)
            self._reschedule(watch)  # its listeners' deadlines stand while it is checked

    async def _dispatch(self, checks: anyio.abc.TaskGroup) -> None:
        """Start the queued checks that have a place and the limiter's leave."""
        self._release_slow()
        while self._queue and self._busy < self._concurrency:
            watch = self._queue.popleft()
            if self._watches.get(watch.task_id) is not watch:
                watch.checking = False
                continue  # ended (every listener gone) while it waited
            watch.ticket = await self._limiter.acquire()
            flight = _Flight(self._clock.now())
            self._busy += 1
            self._started.append(flight)
            checks.start_soon(self._check, watch, flight)

    def _release_slow(self) -> None:
        # Checks begun over `slow_check` ago no longer hold a place (those that ended
        # gave theirs back already).
        limit = self._clock.now() - self._slow_check
        while self._started and self._started[0].began <= limit:
            self._give_back(self._started.popleft())

    def _give_back(self, flight: _Flight) -> None:
        if flight.holds_place:
            flight.holds_place = False
            self._busy -= 1

    async def _sleep_until_due(self) -> None:
        while True:
            now = self._clock.now()
            due = self._heap[0][0] if self._heap else math.inf
            if self._queue:
                if self._busy < self._concurrency:
                    return
                # Full: the oldest check in flight turns slow (and frees its place) then.
                if self._started:
                    due = min(due, self._started[0].began + self._slow_check)
            if due <= now:
                return
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                if due == math.inf:
                    await anyio.sleep_forever()
                else:
                    await self._clock.sleep(due - now)
            self._sleep_scope = None
            if not scope.cancelled_caught:
                return

    def _wake(self) -> None:
        if self._sleep_scope is not None:
            self._sleep_scope.cancel()

    def _reschedule(self, watch: _Watch) -> None:
        due = watch.next_check if not watch.checking else math.inf
        due = min(due, watch.earliest_deadline())
        if due >= watch.due:
            return  # the live entry comes first; when it pops, it plans again
        watch.due = due
        watch.seq = next(self._seq)
        heapq.heappush(self._heap, (due, watch.seq, watch.task_id))
        if self._heap[0][1] == watch.seq:
            self._wake()  # this one is due sooner than the loop sleeps

    def _expire(self, watch: _Watch, now: float) -> None:
        while watch.deadlines and watch.deadlines[0][0] <= now:
            _, _, listener = heapq.heappop(watch.deadlines)
            if listener.done:
                continue
            watch.listeners.pop(listener, None)
            error = TaskTimeoutError(
                f"task {watch.task_id} was not final after its deadline",
                watch.task_id,
                watch.last,
            )
            listener._finish(watch.last, error)
        if not watch.listeners:
            self._watches.pop(watch.task_id, None)

    def _first_delay(self) -> float:
        # Before a task's first answer its type is unknown: the quickest type seen.
        typical = min(
            (learned.typical for learned in self._learned.values() if learned.typical),
            default=None,
        )
        if typical is not None:
            # Tasks like the quickest seen so far would not be done before half their
            # time: a first look then still learns the eta, one poll later than never.
            return max(self._schedule.first_check, 0.5 * typical)
        return self._schedule.first_check

    # One check.

    async def _check(self, watch: _Watch, flight: _Flight) -> None:
        try:
            result = await self._fetch(watch.task_id)
        except NovitaError as error:
            self._failed(watch, error)
        else:
            self._limiter.accepted()
            self._answered(watch, result)
        finally:
            self._give_back(flight)
            watch.checking = False
            if self._watches.get(watch.task_id) is watch:
                self._reschedule(watch)
            if self._queue:
                self._wake()  # a place is free: a queued check may go

    def _answered(self, watch: _Watch, result: TaskResult) -> None:
        watch.failures = 0
        watch.last = result
        now = self._clock.now()
        age = now - watch.started
        learned = self._learned[result.task_type]
        if result.is_final:
            learned.learn(watch, age)
            self._end(watch, result, None)
            return
        for listener in list(watch.listeners):
            if listener.on_progress is not None and not listener.done:
                try:
                    listener.on_progress(result)
                except Exception as error:  # the user's callback: it harms its own wait only
                    self._drop(listener, error)
        if self._watches.get(watch.task_id) is not watch:
            return  # every listener went with its callback
        if result.status is TaskStatus.UNKNOWN:
            if watch.unknown_since is None:
                watch.unknown_since = now
            elif now - watch.unknown_since >= self._schedule.unknown_status_limit:
                # A status this client cannot read may be final: it never waits on it forever.
                self._end(
                    watch,
                    result,
                    ProtocolError(
                        f"task {watch.task_id}: the server has answered status "
                        f"{result.raw_status!r} for {now - watch.unknown_since:.0f} s; this "
                        "client does not know that status, so it stopped waiting (the task "
                        "may still end on Novita's side: check it with get_result)"
                    ),
                )
                return
        else:
            watch.unknown_since = None
        if result.status is TaskStatus.QUEUED:
            watch.queued_until = age
        elif watch.since is None and result.status is TaskStatus.PROCESSING:
            watch.since = (age, result.progress)
        observation = Observation(
            age=age,
            status=result.status,
            eta=result.eta,
            progress=result.progress,
            since=watch.since,
            queued_until=watch.queued_until,
            expected_end=watch.expected_end,
            typical=learned.typical,
            quick_run=learned.quick_run,
            calibration=learned.calibration,
        )
        plan = plan_next_check(observation, self._schedule, fallback=self._fallback_delay)
        watch.last_age = age
        if plan.expected_end is not None:
            watch.expected_end = plan.expected_end
        # The latest long estimate of each kind is what the task's end will grade.
        if plan.eta_left is not None and plan.eta_left >= _LEARN_HORIZON:
            watch.eta_said = (age, plan.eta_left)
        if plan.progress_left is not None and plan.progress_left >= _LEARN_HORIZON:
            watch.progress_said = (age, plan.progress_left)
        watch.next_check = now + plan.delay
        self._continue(watch)

    def _failed(self, watch: _Watch, error: NovitaError) -> None:
        # A 429 pauses and slows the whole poller, and this task is not to blame for it:
        # it uses up none of the task's attempts, and however short the server's
        # Retry-After (even 0), it never makes polls faster than min_interval.
        rate_limited = isinstance(error, RateLimitError)
        if not rate_limited:
            watch.failures += 1
        retry = self._retrier.plan(
            "GET",
            error,
            watch.failures,
            limiter=self._limiter,
            ticket=watch.ticket,
            patient=True,
            min_delay=self._schedule.min_interval if rate_limited else 0.0,
        )
        if retry.decision is not Decision.RETRY:
            self._end(watch, watch.last, error)
            return
        watch.next_check = self._clock.now() + retry.delay
        self._continue(watch)

    def _drop(self, listener: Listener, error: Exception) -> None:
        """End ``listener`` alone with the error its own callback raised."""
        listener.user_error = error
        listener._finish(None, None)
        self.forget(listener)

    def _continue(self, watch: _Watch) -> None:
        if self._watches.get(watch.task_id) is watch and not watch.checking:
            self._reschedule(watch)

    def _end(self, watch: _Watch, result: TaskResult | None, error: NovitaError | None) -> None:
        if self._watches.get(watch.task_id) is watch:
            del self._watches[watch.task_id]
        for listener in list(watch.listeners):
            listener._finish(result, error)
