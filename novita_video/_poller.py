"""The one poller: a single coroutine that checks every outstanding task of a client.

Whoever wants a task's final result (a :meth:`Client.wait` call, a batch of
:meth:`Client.generate`) registers a :class:`Listener` for its task id. Listeners of one
task id share one :class:`_Watch`; watches sit in a heap ordered by when each is due
(its next check, or its earliest listener's deadline). The poller sleeps until the top
of the heap is due, expires the listeners whose deadline passed (also while their task
is being checked), and queues each due check, with those due within a short window
after it (half of ``min_interval``: checking early never notices an end later, and one
wakeup of the event loop then serves many polls). A dispatcher of its own hands the
queued checks to a few worker tasks (at most ``concurrency`` kept, started once and
woken per check, in the poller's task group), paced by the poller's
:class:`RateLimiter`: a limiter
paused by a 429's ``Retry-After`` holds back checks, never a deadline. A check either
finishes the watch (a final status, or an error that retrying cannot mend) or plans the
next one from the answer (:func:`plan_next_check`). A 429 pauses and slows every poll,
not just one. Transient failures (an outage of the API) are retried on the
:class:`RetryPolicy` backoff for as long as some listener's deadline allows, however
many. Whatever else a check raises ends that task's listeners alone
(:class:`ProtocolError`, the original as its ``__cause__``), never the poller.

A webhook event that arrives while its task is being checked is kept, and acted on when
the check returns.

The dispatcher never waits for a worker: due checks queue in order, and a check that
takes longer than ``slow_check`` (1 s: a server dripping its answer) stops counting
against ``concurrency``, so a few stuck answers cannot hold up every other task's
checks; each task has at most one check in flight, so stragglers stay bounded too.

When a task ends, the poller learns from it (per model submitted, which listen() is told
or submitted() recorded, else per ``task_type``: models differ): how long
tasks take, and how the server's eta and progress related to the real end
(:class:`Calibration`). Later plans use what it learned.

Ten thousand waiting web requests cost ten thousand heap entries, not ten thousand
polling loops; registering or forgetting one is O(log n). An ended or rescheduled watch
leaves its old heap entry behind (lazy deletion), but once those outnumber the live
ones the heap is rebuilt, so it stays within a constant factor of the live watches.
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
from ._schedule import (
    Calibration,
    Observation,
    PollSchedule,
    first_look,
    plan_next_check,
    remaining_from_progress,
)
from ._wire import snippet

logger = logging.getLogger("novita_video")

#: How many recent task durations (and estimate ratios) the poller remembers.
_DURATIONS_KEPT = 64
#: Tasks that must end before typical durations are believed (their 10th percentile
#: errs quick with few), and before a calibration of the estimates is.
_DURATIONS_AFTER = 3
_LEARN_AFTER = 5
#: The eta is whole seconds: one graded must be long enough that this is within
#: _LEARN_PRECISION of it (a resolution of the API's, not a scale of the tasks').
_ETA_RESOLUTION = 1.0
#: An end is known to within half the gap between the last two checks; it grades an
#: estimate only if that gap is at most this share of the time the estimate gave.
_LEARN_PRECISION = 0.1
#: A check slower than this (seconds of the client's clock) frees its place: answers
#: take a fraction of a second, so one still coming after this is stuck or dripping.
SLOW_CHECK = 1.0
#: The progress at which a run may end (servers that never show 100 end from 99).
_DONE_AT = 99.0
#: How many submitted task ids the poller remembers the model of, for a wait that comes
#: after the submit (Client.submit, then Client.wait): the oldest are forgotten first.
_MODELS_KEPT = 4096
#: When the poller wakes for a due check, it also takes those due within this share of
#: ``min_interval`` after it, so that one wakeup of the event loop serves many polls
#: (each woke it alone, at some 0.1 ms of CPU a wakeup). A check taken early can only
#: notice an end sooner; a share of min_interval is a bound of lateness already, not a
#: time scale of tasks, and a deadline is never taken early.
_GROUP_SHARE = 0.5
#: Stale heap entries tolerated beyond the live ones before the heap is rebuilt.
_STALE_SLACK = 64


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
    error: NovitaError | None = None  # what the failures since the last answer ended in
    ticket: int = 0
    checking: bool = False  # queued or in flight: its answer plans what comes next
    in_flight: bool = False
    # Webhook events that came while a check was in flight, acted on when it returns.
    pushed: TaskResult | None = None
    recheck: bool = False
    seq: int = 0
    due: float = math.inf  # when the watch's live heap entry is due
    # What the schedule needs (see Observation) and what the poller learns from.
    since: tuple[float, float] | None = None
    expected_end: float | None = None
    last_age: float = 0.0
    queued_until: float = 0.0
    eta_first: tuple[float, float] | None = None  # (age, time left) of its first eta
    eta_said: tuple[float, float] | None = None  # and of its latest
    progress_said: tuple[float, float] | None = None
    unknown_since: float | None = None  # when a run of statuses this client cannot read began
    # The model (endpoint) submitted, when known: what is learned is kept per model.
    model: str | None = None
    # The shortest its run can be, as far as its progress readings tell (0: unknown).
    run_floor: float = 0.0

    def earliest_deadline(self) -> float:
        while self.deadlines and self.deadlines[0][2].done:
            heapq.heappop(self.deadlines)
        return self.deadlines[0][0] if self.deadlines else math.inf

    def drop_listener(self, listener: Listener) -> None:
        self.listeners.pop(listener, None)
        # Its deadline entry goes when it comes to the top; a long task whose waiters
        # come and go rebuilds the heap once the departed outnumber the waiting.
        if len(self.deadlines) > 2 * len(self.listeners) + 8:
            self.deadlines = [entry for entry in self.deadlines if not entry[2].done]
            heapq.heapify(self.deadlines)
            self.listeners = dict(self.listeners)  # a dict never shrinks by itself


@attrs.define(eq=False)
class _Worker:
    """A task that runs checks one after another: the dispatcher hands it the next."""

    job: tuple[_Watch, _Flight] | None
    ready: anyio.Event = attrs.field(factory=anyio.Event)


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
    """What ended tasks of one model (or ``task_type``) taught: durations and estimate ratios."""

    def __init__(self) -> None:
        self.durations: deque[float] = deque(maxlen=_DURATIONS_KEPT)
        self.runs: deque[float] = deque(maxlen=_DURATIONS_KEPT)
        self.eta: deque[float] = deque(maxlen=_DURATIONS_KEPT)
        self.progress: deque[float] = deque(maxlen=_DURATIONS_KEPT)
        self.eta_tasks = 0  # tasks whose etas were graded
        self.typical: float | None = None
        self.quick_run: float | None = None
        self.calibration = Calibration()

    def _runs_changed(self) -> None:
        # The shortest, not a percentile: plans take every run to last at least this
        # long, and a task that runs shorter would be noticed late.
        if len(self.runs) >= _DURATIONS_AFTER:
            self.quick_run = min(self.runs)

    def timed(self, watch: _Watch, floor: float) -> None:
        """``watch``'s task, still running, runs at least ``floor`` (its progress says):
        learned once a task, before any task ended, so that a cold client's plans for
        queued tasks know how soon a run can end."""
        if watch.run_floor == 0:
            self.runs.append(floor)
            self._runs_changed()
        watch.run_floor = max(watch.run_floor, floor)

    def learn(self, watch: _Watch, age: float) -> None:
        """Learn from ``watch``'s task, seen final at ``age`` (since its submission)."""
        self.durations.append(age)
        self.typical = _quick(self.durations)
        if watch.run_floor > 0:
            self.runs.append(max(watch.run_floor, watch.last_age - (watch.since or (age, 0))[0]))
            self._runs_changed()
        # The task ended between the last check that saw it running and this one.
        gap = age - watch.last_age
        end_age = age - gap / 2
        learned = False
        graded = (
            (watch.eta_first, self.eta),
            (watch.eta_said if watch.eta_said != watch.eta_first else None, self.eta),
            (watch.progress_said, self.progress),
        )
        for said, ratios in graded:
            if said is not None and gap <= _LEARN_PRECISION * said[1]:
                at, left = said
                ratios.append((end_age - at) / left)
                learned = True
        if learned:
            if watch.eta_first is not None and gap <= _LEARN_PRECISION * watch.eta_first[1]:
                self.eta_tasks += 1
            # _LEARN_AFTER tasks, not ratios: two of one task are no second opinion.
            eta = self.eta if self.eta_tasks >= _LEARN_AFTER else ()
            self.calibration = Calibration.learn(eta, self.progress, after=_LEARN_AFTER)


class Poller:
    """Checks the results of every task some listener waits for; see the module docstring."""

    def __init__(
        self,
        fetch: Callable[[str, int], Awaitable[TaskResult]],
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
        self._woken: anyio.Event | None = None  # the loop's, when nothing is due
        # What the loop sleeps until (math.inf: it waits for an event, or is awake).
        self._sleeping_until = math.inf
        # The dispatcher's event, when idle, and when the loop must kick it even so
        # (the oldest check in flight turns slow then, and frees its place).
        self._kicked: anyio.Event | None = None
        self._alarm = math.inf
        self._learned: defaultdict[str, _Learned] = defaultdict(_Learned)
        # Task id -> model of the latest submits, for listen() calls that name none.
        self._models: dict[str, str] = {}
        # Due checks wait here, in order, for a place among `concurrency`.
        self._queue: deque[_Watch] = deque()
        # Checks in flight that still count against `concurrency`, and every check begun
        # in the last `slow_check` seconds, oldest first (see the module docstring).
        self._busy = 0
        self._started: deque[_Flight] = deque()
        # Workers waiting for a check to run (see _work), the latest idle last.
        self._workers: list[_Worker] = []
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

    def submitted(self, task_id: str, model: str) -> None:
        """``task_id`` was made by a submit to ``model``: a later :meth:`listen` that names
        no model learns under this one (only the latest few thousand are kept)."""
        self._models[task_id] = model
        if len(self._models) > _MODELS_KEPT:
            del self._models[next(iter(self._models))]  # the oldest: dicts keep order

    def listen(
        self,
        task_id: str,
        *,
        deadline: float,
        on_done: Callable[[TaskResult | None, NovitaError | None], None],
        on_progress: Callable[[TaskResult], None] | None = None,
        submitted_at: float | None = None,
        model: str | None = None,
    ) -> Listener:
        """Wait for ``task_id`` to end. ``submitted_at`` (clock time) means the task is new:
        its first check is planned from the schedule; otherwise it is checked at once.
        ``model`` (the endpoint submitted) keys what its end teaches; without it, the model
        :meth:`submitted` recorded for it, else the ``task_type`` its answers report."""
        now = self._clock.now()
        listener = Listener(task_id, deadline, on_done, on_progress)
        watch = self._watches.get(task_id)
        if model is None:
            model = self._models.get(task_id)
        if watch is None:
            if submitted_at is None:
                started, first = now, now
            else:
                first = submitted_at + self._first_delay(model) + self._fallback_delay
                started = submitted_at
            watch = self._watches[task_id] = _Watch(task_id, started, first, model=model)
        watch.listeners[listener] = None
        heapq.heappush(watch.deadlines, (deadline, next(self._seq), listener))
        if watch.next_check <= now and not watch.checking:
            self._queue_now(watch)
        else:
            self._reschedule(watch)
        return listener

    def forget(self, listener: Listener) -> None:
        """Stop waiting for this listener (its owner went away); it is not called."""
        listener.done = True
        watch = self._watches.get(listener.task_id)
        if watch is None:
            return
        watch.drop_listener(listener)
        if not watch.listeners:
            self._remove(watch)

    def hint(self, task_id: str) -> bool:
        """Someone says ``task_id`` changed (a webhook): check it now, if it is watched.

        If a check of it is in flight, its answer may predate the change: another
        check follows as soon as it returns."""
        watch = self._watches.get(task_id)
        if watch is None:
            return False
        if watch.in_flight:
            watch.recheck = True
        elif watch.next_check > self._clock.now():
            watch.next_check = self._clock.now()
            self._queue_now(watch)  # (a check queued already is coming anyway)
        return True

    def push(self, result: TaskResult) -> bool:
        """Take ``result`` as if a check had answered it (a trusted webhook), if watched.

        If a check of it is in flight, ``result`` is taken when that check returns,
        unless its own answer ended the task."""
        watch = self._watches.get(result.task_id)
        if watch is None:
            return False  # unknown, or finished already
        if watch.in_flight:
            if watch.pushed is None or not watch.pushed.is_final:
                watch.pushed = result
            return True
        self._answered(watch, result)
        return True

    def close(self, error: NovitaError) -> None:
        """Finish every listener with ``error`` (the client is closing)."""
        watches, self._watches = self._watches, {}
        self._heap.clear()
        for watch in watches.values():
            for listener in list(watch.listeners):
                listener._finish(None, error)

    # The loop.

    async def run(self) -> None:
        """Poll until cancelled. Run it once, in the client's task group."""
        self.running = True
        try:
            async with anyio.create_task_group() as checks:
                # This loop keeps time (deadlines, due checks) and never waits for the
                # limiter: the dispatcher does, so a pause cannot hold a deadline back.
                checks.start_soon(self._dispatch, checks)
                while True:
                    await self._sleep_until_due()
                    self._expire_due()
        finally:
            self.running = False

    def _expire_due(self) -> None:
        """Pop every heap entry that is due: expire deadlines, queue due checks, and
        the checks due within a short window after now (see _GROUP_SHARE)."""
        now = self._clock.now()
        soon = now + self._schedule.min_interval * _GROUP_SHARE
        later: list[_Watch] = []
        queued = False
        while self._heap and self._heap[0][0] <= soon:
            _, seq, task_id = heapq.heappop(self._heap)
            watch = self._watches.get(task_id)
            if watch is None or watch.seq != seq:
                continue  # a stale entry: the watch ended or was rescheduled
            watch.due = math.inf
            self._expire(watch, now)  # a deadline is never taken early
            if self._watches.get(task_id) is not watch:
                continue
            if watch.checking or watch.next_check > soon:
                # Being checked (its answer plans what comes next), or only a deadline
                # was due (or soon due): wait for the next of either, once this
                # loop is done (an entry within the window would pop again).
                later.append(watch)
                continue
            watch.checking = True
            self._queue.append(watch)
            later.append(watch)  # its listeners' deadlines stand while it is checked
            queued = True
        for watch in later:
            if self._watches.get(watch.task_id) is watch:
                self._reschedule(watch)
        if queued:
            self._kick()

    def _queue_now(self, watch: _Watch) -> None:
        """Queue ``watch``'s check, due now, without waking the loop to pop it: its heap
        entry goes stale, and what is left to be due is its listeners' deadlines."""
        if watch.checking or self._watches.get(watch.task_id) is not watch:
            return
        watch.checking = True
        self._queue.append(watch)
        watch.due = math.inf
        self._reschedule(watch)
        self._kick()

    async def _dispatch(self, checks: anyio.abc.TaskGroup) -> None:
        """Start the queued checks in order, as places free up and the limiter allows."""
        while True:
            self._release_slow()
            self._skip_ended()
            if not self._queue or self._busy >= self._concurrency:
                await self._idle()
                continue
            ticket = await self._limiter.acquire()
            # Its turn goes to the first check still wanted when it comes (listeners may
            # have left, or a webhook ended a task, during a pause).
            self._skip_ended()
            if not self._queue:
                continue
            watch = self._queue.popleft()
            watch.ticket = ticket
            watch.in_flight = True
            flight = _Flight(self._clock.now())
            self._busy += 1
            self._started.append(flight)
            if self._workers:
                # An idle worker takes it: waking a waiting task costs a fraction of
                # starting one (its coroutine, its task, the group's bookkeeping).
                worker = self._workers.pop()
                worker.job = (watch, flight)
                worker.ready.set()
            else:
                checks.start_soon(self._work, _Worker((watch, flight)))

    async def _work(self, worker: _Worker) -> None:
        """Run the checks handed to ``worker``, then wait idle for the next; at most
        ``concurrency`` wait idle: the extra ones a slow check made room for end."""
        while worker.job is not None:
            watch, flight = worker.job
            worker.job = None
            await self._check(watch, flight)
            if len(self._workers) >= self._concurrency:
                return
            worker.ready = anyio.Event()
            self._workers.append(worker)
            await worker.ready.wait()

    def _skip_ended(self) -> None:
        while self._queue and self._watches.get(self._queue[0].task_id) is not self._queue[0]:
            self._queue.popleft().checking = False  # ended while it waited

    async def _idle(self) -> None:
        # Until a check is queued or a place frees up (_kick), or, when every place is
        # taken, until the oldest check in flight turns slow and frees its place: an
        # alarm the poller's loop keeps (it keeps time anyway). An event, never a
        # cancelled sleep: the dispatcher is kicked once a check or two, and delivering
        # a cancellation costs several times as much as setting an event.
        self._kicked = anyio.Event()
        if self._queue and self._started:
            self._alarm = self._started[0].began + self._slow_check
            if self._alarm < self._sleeping_until:
                self._wake()
        await self._kicked.wait()
        self._kicked = None
        self._alarm = math.inf

    def _kick(self) -> None:
        if self._kicked is not None:
            self._kicked.set()

    def _release_slow(self) -> None:
        # Checks begun `slow_check` ago or more no longer hold a place (those that ended
        # gave theirs back already). The same sum as _idle's: it never waits for nothing.
        now = self._clock.now()
        while self._started and self._started[0].began + self._slow_check <= now:
            self._give_back(self._started.popleft())

    def _give_back(self, flight: _Flight) -> None:
        if flight.holds_place:
            flight.holds_place = False
            self._busy -= 1
        # Checks that ended have nothing left to free: a burst of them is not kept
        # until the next dispatch.
        while self._started and not self._started[0].holds_place:
            self._started.popleft()

    async def _sleep_until_due(self) -> None:
        while True:
            now = self._clock.now()
            if self._alarm <= now:
                self._alarm = math.inf
                self._kick()  # a check in flight turned slow: the dispatcher looks
            top = self._heap[0][0] if self._heap else math.inf
            if top <= now:
                return
            due = min(top, self._alarm)
            if due == math.inf:
                # Nothing is due: an event to wake it, cheaper than a cancellation.
                self._woken = anyio.Event()
                await self._woken.wait()
                self._woken = None
                continue
            with anyio.CancelScope() as scope:
                self._sleep_scope, self._sleeping_until = scope, due
                await self._clock.sleep(due - now)
            self._sleep_scope, self._sleeping_until = None, math.inf
            if not scope.cancelled_caught and due == top:
                return

    def _wake(self) -> None:
        if self._woken is not None:
            self._woken.set()
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
        self._compact()

    def _remove(self, watch: _Watch) -> None:
        """Stop watching (its heap entry is stale from now on)."""
        if self._watches.get(watch.task_id) is watch:
            del self._watches[watch.task_id]
            self._compact()

    def _compact(self) -> None:
        # Entries of ended or rescheduled watches stay in the heap until they come to
        # its top (a deadline may be half an hour away). Once they outnumber the live
        # ones (one a watch at most), rebuild: amortized O(1) a push, memory O(watches).
        if len(self._heap) <= 2 * len(self._watches) + _STALE_SLACK:
            return
        self._watches = dict(self._watches)  # a dict never shrinks by itself
        watches = self._watches.values()
        self._heap = [(w.due, w.seq, w.task_id) for w in watches if w.due != math.inf]
        heapq.heapify(self._heap)

    def _expire(self, watch: _Watch, now: float) -> None:
        while watch.deadlines and watch.deadlines[0][0] <= now:
            _, _, listener = heapq.heappop(watch.deadlines)
            if listener.done:
                continue
            watch.listeners.pop(listener, None)
            listener._finish(watch.last, self._timed_out(watch))
        if not watch.listeners:
            self._remove(watch)

    @staticmethod
    def _timed_out(watch: _Watch) -> TaskTimeoutError:
        failing = ""
        if watch.error is not None:
            # An outage outlasted this wait: say so, the error it ended in as the cause.
            failing = f"; its last check failed with: {watch.error}"
        error = TaskTimeoutError(
            f"task {watch.task_id} was not final after its deadline{failing}",
            watch.task_id,
            watch.last,
        )
        error.__cause__ = watch.error
        return error

    def _first_delay(self, model: str | None) -> float:
        # Its model's typical duration, if known; without a model (or before it taught
        # anything), the quickest seen.
        own = self._learned.get(model) if model is not None else None
        typical = own.typical if own is not None else None
        if typical is None:
            typical = min(
                (learned.typical for learned in self._learned.values() if learned.typical),
                default=None,
            )
        return first_look(self._schedule, typical)

    # One check.

    async def _check(self, watch: _Watch, flight: _Flight) -> None:
        try:
            try:
                # The attempt, for the event hooks and the log: the failed checks in a row.
                result = await self._fetch(watch.task_id, watch.failures + 1)
            except NovitaError as error:
                self._failed(watch, error)
            else:
                self._limiter.accepted()
                self._answered(watch, result)
            self._take_events(watch)
        except Exception as error:
            # One check, one barrier: a custom transport's bug (or this SDK's) ends this
            # task's listeners alone; the poller and every other wait go on.
            self._broken(watch, error)
        finally:
            self._give_back(flight)
            watch.checking = watch.in_flight = False
            watch.pushed, watch.recheck = None, False
            if self._watches.get(watch.task_id) is watch:
                self._reschedule(watch)
            if self._queue:
                self._kick()  # a place is free: a queued check may go

    def _take_events(self, watch: _Watch) -> None:
        """Act on the webhook events that came while ``watch``'s check was in flight."""
        watch.in_flight = False
        pushed, recheck = watch.pushed, watch.recheck
        watch.pushed, watch.recheck = None, False
        if self._watches.get(watch.task_id) is not watch:
            return  # the check's own answer ended the task (or its listeners left)
        if pushed is not None:
            self._answered(watch, pushed)
        elif recheck:
            # The answer may predate the event: look again now.
            watch.next_check = min(watch.next_check, self._clock.now())

    def _broken(self, watch: _Watch, error: Exception) -> None:
        name = type(error).__name__
        logger.error(
            "task %s: its check raised %s; its waiters end with a ProtocolError, the "
            "poller and other waits go on",
            watch.task_id,
            name,
            exc_info=error,
        )
        wrapped = ProtocolError(
            f"task {watch.task_id}: checking it raised {name} ({snippet(str(error))}), "
            "which no transport should: a bug in the transport or in novita_video",
        )
        wrapped.__cause__ = error
        self._end(watch, watch.last, wrapped)

    def _answered(self, watch: _Watch, result: TaskResult) -> None:
        watch.failures = 0
        watch.error = None
        watch.last = result
        now = self._clock.now()
        age = now - watch.started
        # Per model: tasks of the unified endpoint may all report one task_type.
        learned = self._learned[watch.model or result.task_type]
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
            runs_seen=len(learned.runs),
            calibration=learned.calibration,
        )
        bounds = remaining_from_progress(observation)
        if bounds is not None and watch.since is not None:
            # The fastest speed the readings allow: the whole run takes at least this.
            fastest = (result.progress - watch.since[1] + 1) / (age - watch.since[0])
            learned.timed(watch, _DONE_AT / fastest)
        plan = plan_next_check(observation, self._schedule, fallback=self._fallback_delay)
        watch.last_age = age
        if plan.expected_end is not None:
            watch.expected_end = plan.expected_end
        # The latest long estimate of each kind is what the task's end will grade.
        # What the task's end grades: its first and its latest eta long enough to grade
        # (a server's etas may err by a share of the whole task, so that the ratio drifts
        # as the task goes: both ends of its life go into the calibration, whose spread
        # then says how far any eta of it can be believed), and its latest progress
        # estimate with a tenth of the run or more left (whole percent of the run).
        if plan.eta_left is not None and plan.eta_left * _LEARN_PRECISION >= _ETA_RESOLUTION:
            if watch.eta_first is None:
                watch.eta_first = (age, plan.eta_left)
            watch.eta_said = (age, plan.eta_left)
        if plan.progress_left is not None and (
            (_DONE_AT - result.progress) * _LEARN_PRECISION >= 1
        ):
            watch.progress_said = (age, plan.progress_left)
        watch.next_check = now + plan.delay
        self._continue(watch)

    def _failed(self, watch: _Watch, error: NovitaError) -> None:
        # A 429 pauses and slows the whole poller, and this task is not to blame for it:
        # it uses up none of the task's attempts, and however short the server's
        # Retry-After (even 0), it never makes polls faster than min_interval.
        # Any other transient failure (an outage) is retried on the policy's backoff,
        # however many times, until the last listener's deadline ends the watch.
        rate_limited = isinstance(error, RateLimitError)
        if not rate_limited:
            watch.failures += 1
        watch.error = error
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
        self._remove(watch)
        for listener in list(watch.listeners):
            listener._finish(result, error)
