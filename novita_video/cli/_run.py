"""One ``batch`` run: the second pass over the input, from prompts to clips on disk.

Inside one task group:

* the *reader* streams the rows of the input and asks the ledger about each: a prompt
  never sent goes to the SDK's batch (``Client.generate``) through a memory stream; a
  prompt with a task id is *resumed* (``Client.wait``, every wait sharing the client's
  one poller, then downloaded); a prompt already finished is only reported;
* the *consumer* takes the batch's outcomes as tasks end and hands each clip to a
  *download*, at most :data:`DOWNLOADS` at a time, alongside the polling;
* the ledger is written in the batch's ``before_submit`` / ``after_submit`` hooks (the
  intent before a POST, the task id right after it) and when a prompt settles.

A prompt whose task failed is only reported, unless ``--retry-failed`` asked for it to
be sent again: it then goes to the batch as a new prompt does (every limit applies), and
the ledger keeps its failed task as an earlier attempt.

What a submit came to is the SDK's word, ``Outcome.submission`` (decided where the request
left the machine), never a guess from the error's type: not sent, its record goes back
to what it was; refused, ``rejected`` (sent again by a later run); in doubt, ``unknown``
(sent again only with ``--resubmit-unknown``); accepted, its task id is in the ledger.

SIGINT, SIGTERM (``docker stop``, Kubernetes) and SIGHUP (a closed terminal) stop it the
same way: no more submits; POSTs already on the wire (the SDK shields them) get
:data:`STOP_TIMEOUT` seconds (``--stop-timeout``) to finish, and their task ids are
written, so the next run waits for those tasks. A POST still on the wire after that, or
at a second signal, is given up (:class:`Wire` cuts it): its prompt stays in doubt,
``unknown`` in the ledger, never taken as not sent. Then the command writes the manifest
and the gallery as after any other end.

A ledger that cannot be written (a full disk, a read-only file system) stops the run the
same way; every task id it could not record is kept in :attr:`Run.unrecorded`, for the
command to print.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._balance import SpendCap
from .._client import Client
from .._errors import APIConnectionError, BatchAbortedError, NotFoundError, NovitaError
from .._models import Outcome, Submission, TaskResult
from .._requests import Request
from .._transport import Response, Sending, Transport
from .._unified import canonical_model
from ._inputs import InputError, PromptSource, Row
from ._ledger import Ledger, Record, State
from ._outputs import Entry, changed_since_sent, clip_name
from ._progress import Reporter, Tally

__all__ = ["DOWNLOADS", "STOP_SIGNALS", "STOP_TIMEOUT", "Run", "Settings", "Wire"]

#: Clips downloaded at once.
DOWNLOADS: Final = 4
#: Finished clips that may wait for a download before the batch is made to wait too.
_DOWNLOAD_BACKLOG: Final = 64
#: Resumed tasks awaited at once (each is a cheap entry in the one poller).
_RESUMED: Final = 1000
#: The signals that stop a run: Ctrl-C, ``docker stop`` and Kubernetes, a closed terminal.
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Seconds the POSTs on the wire get to finish after a stop: inside the 10 s that
#: ``docker stop`` (and Kubernetes, by default 30 s) waits before SIGKILL, with time left
#: to write the manifest and the gallery.
STOP_TIMEOUT: Final = 8.0

# Where a prompt stands in the progress counts, by its ledger state.
_COUNTED: Final = {
    State.SENDING: "unknown",
    State.UNKNOWN: "unknown",
    State.REJECTED: "failed",
    State.FAILED: "failed",
    State.SUBMITTED: "processing",
    State.SUCCEEDED: "done",
}


@attrs.frozen(kw_only=True)
class Settings:
    """The choices of one run that the engine needs."""

    out: Path
    #: The model every prompt is for: ``client.generate(..., model=...)``.
    model: str
    download: bool
    resubmit_unknown: bool
    #: False with ``--simulate``: a new simulator knows none of an earlier one's tasks.
    tasks_survive: bool
    task_timeout: float
    #: Seconds the POSTs on the wire get after a stop (``--stop-timeout``).
    stop_timeout: float = STOP_TIMEOUT
    #: The folder's spend cap (``--max-spend``): it stops the batch as a fatal answer does.
    spend_cap: SpendCap | None = None
    #: Send again the prompts whose task failed (``--retry-failed``): paying again, asked.
    retry_failed: bool = False


class Wire:
    """The client's transport, able to give up the POSTs on the wire.

    The SDK shields a submit from the moment it leaves (a cancellation must not lose a
    task that may be billed), so nothing outside can end it early; a stop that must end
    within ``docker stop``'s grace ends it here, inside the shield, as a dropped
    connection would: the SDK then records it in doubt (``Submission.IN_DOUBT``), never
    as not sent. Everything else passes through unchanged.
    """

    def __init__(self, inner: Transport) -> None:
        self._inner = inner
        self._posts: set[anyio.CancelScope] = set()
        #: Why the POSTs on the wire were given up, once they were.
        self.cut_reason: str | None = None

    @property
    def reports_sending(self) -> bool:
        """Whether ``sending.mark_sent()`` is called as a POST leaves (the inner's word)."""
        return bool(getattr(self._inner, "reports_sending", False))

    def __repr__(self) -> str:
        return repr(self._inner)

    async def open(self) -> None:
        """Open the inner transport."""
        await self._inner.open()

    async def close(self) -> None:
        """Close the inner transport."""
        await self._inner.close()

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        sending: Sending | None = None,
    ) -> Response:
        """One API request; a POST may be cut off by :meth:`cut`."""
        if method != "POST":
            return await self._inner.request(
                method, path, params=params, json=json, sending=sending
            )
        if self.cut_reason is not None:
            raise APIConnectionError(f"{method} {path}: not sent ({self.cut_reason})", False)
        with anyio.CancelScope() as scope:
            self._posts.add(scope)
            try:
                return await self._inner.request(
                    method, path, params=params, json=json, sending=sending
                )
            finally:
                self._posts.discard(scope)
        maybe_sent = sending is None or sending.sent or not self.reports_sending
        raise APIConnectionError(
            f"{method} {path}: given up on the wire ({self.cut_reason})", maybe_sent
        )

    async def download(self, url: str, file: BinaryIO) -> Response:
        """Download through the inner transport."""
        return await self._inner.download(url, file)

    def cut(self, reason: str) -> None:
        """Give up every POST on the wire now, and refuse any later one."""
        if self.cut_reason is None:
            self.cut_reason = reason
        for scope in self._posts:
            scope.cancel()


class _Stopped(Exception):
    """Raised by ``before_submit`` once the run is stopping: that POST is not sent."""


def _tell(message: str) -> None:
    # After SIGHUP the terminal may be gone: a message that cannot be shown must not
    # stop the run from writing what it owes (the ledger, the manifest).
    with contextlib.suppress(OSError):
        print(f"novita-video: {message}", file=sys.stderr, flush=True)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15."""
    return signal.Signals(signum).name


class Run:
    """Drives one batch run; read :attr:`fatal`, :attr:`stopped_by`, :attr:`input_error`,
    :attr:`ledger_error`, :attr:`unrecorded` and :attr:`in_doubt` after :meth:`run`."""

    def __init__(
        self,
        client: Client,
        source: PromptSource,
        ledger: Ledger,
        settings: Settings,
        tally: Tally,
        reporter: Reporter,
        emit: Callable[[Entry], None] | None = None,
        wire: Wire | None = None,
    ) -> None:
        self._client = client
        self._source = source
        self._ledger = ledger
        self._settings = settings
        self._tally = tally
        self._reporter = reporter
        self._emit = emit
        self._wire = wire
        #: The first answer that doomed the batch (bad key, no balance, no such model
        #: at this URL), if any.
        self.fatal: NovitaError | None = None
        #: The signal that stopped the run, if one did.
        self.stopped_by: signal.Signals | None = None
        #: The input changed between the passes.
        self.input_error: InputError | None = None
        #: The first failure to write the ledger, if any: it stopped the run.
        self.ledger_error: sqlite3.Error | OSError | None = None
        #: Tasks Novita made whose ids the ledger could not record: (row, task id).
        self.unrecorded: list[tuple[Row, str]] = []
        #: Prompts whose POST left in this run and never told what it came to (on the
        #: wire at a stop): ``unknown`` in the ledger.
        self.in_doubt: list[Row] = []
        self._pending: dict[int, Row] = {}  # the SDK batch's index -> the row it came from
        self._before_sending: dict[str, Record | None] = {}  # see _before_submit
        # Prompts whose intent (``sending``) this run committed, with no word back yet.
        self._on_wire: dict[str, Row] = {}
        self._sent = 0
        self._stopping = False
        self._downloads = anyio.CapacityLimiter(DOWNLOADS)
        self._backlog = anyio.Semaphore(_DOWNLOAD_BACKLOG)
        self._resumed = anyio.Semaphore(_RESUMED)
        self._work: anyio.CancelScope | None = None
        self._watchers: anyio.abc.TaskGroup | None = None

    @property
    def cut_reason(self) -> str | None:
        """Why the POSTs on the wire were given up, if they were."""
        return None if self._wire is None else self._wire.cut_reason

    async def run(self, signals: AsyncIterator[signal.Signals] | None = None) -> None:
        """Open the client and run until every prompt is settled, the input fails, or a
        stop (one of ``signals``, a ledger that cannot be written); the client is closed,
        and every POST has ended, when this returns."""
        try:
            async with anyio.create_task_group() as watchers:
                self._watchers = watchers
                if signals is not None:
                    watchers.start_soon(self._stop_on_signals, signals)
                if math.isfinite(self._reporter.interval):
                    watchers.start_soon(self._show_progress)
                # The client's exit waits for the POSTs on the wire: the watchers see
                # it through, so a stop's deadline (and a second signal) still holds.
                async with self._client:
                    if not self._stopping:
                        async with anyio.create_task_group() as work:
                            self._work = work.cancel_scope
                            send, receive = anyio.create_memory_object_stream[Request]()
                            work.start_soon(self._read, send, work)
                            work.start_soon(self._consume, receive, work)
                watchers.cancel_scope.cancel()
        finally:
            self._watchers = None
            with contextlib.suppress(OSError):
                self._reporter.close(self._tally)
        self._settle_on_wire()

    def _stop(self) -> None:
        """Stop submitting and waiting; the POSTs on the wire get ``stop_timeout``."""
        if self._stopping:
            return
        self._stopping = True
        if self._work is not None:
            self._work.cancel()
        if self._watchers is not None:
            self._watchers.start_soon(self._cut_after, self._settings.stop_timeout)

    async def _cut_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        self._cut(f"still on the wire {seconds:g} s after the stop")

    def _cut(self, reason: str) -> None:
        if self._wire is not None:
            self._wire.cut(reason)

    async def _stop_on_signals(self, signals: AsyncIterator[signal.Signals]) -> None:
        async for signum in signals:
            if self.stopped_by is None:
                self.stopped_by = signal.Signals(signum)
            if self._stopping:
                # A second signal: the POSTs still on the wire are given up, in doubt.
                self._cut(f"{signal_name(signum)} came while waiting for it")
                continue
            if signum == signal.SIGINT:
                _tell("stopping (Ctrl-C again to quit at once)")
            else:
                _tell(
                    f"stopping ({signal_name(signum)}): no more submits; the ones on the "
                    f"wire get {self._settings.stop_timeout:g} s (signal again to quit at once)"
                )
            self._stop()

    async def _show_progress(self) -> None:
        while True:
            # Of the tasks at Novita, those its last check saw processing (not queued).
            self._tally.running = self._client.statistics().processing
            with contextlib.suppress(OSError):  # a terminal that has gone
                self._reporter.show(self._tally)
            await anyio.sleep(self._reporter.interval)

    # The ledger: a write that fails stops the run, and never loses a task id quietly.

    def _write(
        self,
        row: Row,
        state: State,
        *,
        task_id: str | None = None,
        file: str | None = None,
        error: str | None = None,
    ) -> bool:
        """Record ``row``; False (the run stopping) when the ledger cannot be written."""
        try:
            self._ledger.write(row, state, task_id=task_id, file=file, error=error)
        except (sqlite3.Error, OSError) as failure:
            self._ledger_failed(failure)
            return False
        return True

    def _restore(self, row: Row, record: Record | None) -> None:
        try:
            self._ledger.restore(row, record)
        except (sqlite3.Error, OSError) as failure:
            self._ledger_failed(failure)  # it stays `sending`: in doubt, the safe side

    def _ledger_failed(self, failure: sqlite3.Error | OSError) -> None:
        if self.ledger_error is None:
            self.ledger_error = failure
        self._stop()

    # The reader.

    async def _read(self, send: MemoryObjectSendStream[Request], work: anyio.abc.TaskGroup) -> None:
        async with send:
            try:
                with contextlib.closing(self._source.rows()) as rows:  # closed when cancelled too
                    await self._read_rows(rows, send, work)
            except InputError as error:
                self.input_error = error
                self._stop()

    async def _read_rows(
        self,
        rows: Iterable[Row],
        send: MemoryObjectSendStream[Request],
        work: anyio.abc.TaskGroup,
    ) -> None:
        for count, row in enumerate(rows):
            if self.fatal is not None or self._stopping:
                return  # the rest stays unsent, and so unrecorded
            if count % 100 == 0:
                # Rows settled from the ledger alone never wait: let the rest run.
                await anyio.lowlevel.checkpoint()
            await self._dispatch(row, send, work)

    async def _dispatch(
        self, row: Row, send: MemoryObjectSendStream[Request], work: anyio.abc.TaskGroup
    ) -> None:
        record = self._ledger.get(row.key)
        state = None if record is None else record.state
        retried = state is State.FAILED and self._settings.retry_failed
        if not retried and (changed := changed_since_sent(row, record)) is not None:
            # (A failed prompt retried on request is sent with its text as it is now.)
            print(f"novita-video: {changed}", file=sys.stderr, flush=True)
        survive = self._settings.tasks_survive
        if record is None or state is State.REJECTED:
            await self._submit(row, send)
        elif retried:
            await self._submit(row, send)  # its failed task becomes an earlier attempt
        elif state is State.FAILED or (state is State.SUCCEEDED and self._has_clip(record)):
            self._tally.finished_before += 1
            if (took := record.time_to_make) is not None:
                self._tally.learn(took)  # the ETA knows task times from the first second
            self._finish(row, "queued", "failed" if state is State.FAILED else "done", record)
        elif state in (State.SENDING, State.UNKNOWN):
            if self._settings.resubmit_unknown or not survive:
                await self._submit(row, send)
            else:
                self._tally.finished_before += 1
                self._finish(row, "queued", "unknown", record)
        elif not survive:  # a task of a simulator that has gone: make the clip again
            await self._submit(row, send)
        else:
            # A task made before this run: the ETA weighs it by its age (one made, with
            # only its download left, is not timed).
            made = None if state is State.SUCCEEDED else record.submitted_at
            if made is None:
                self._tally.move("queued", "processing")
            else:
                self._tally.move("queued", "processing", row.key, age=time.time() - made)
            await self._resumed.acquire()
            work.start_soon(self._resume, row, record)

    def _has_clip(self, record: Record) -> bool:
        if not self._settings.download:
            return True
        return record.file is not None and (self._settings.out / record.file).is_file()

    async def _submit(self, row: Row, send: MemoryObjectSendStream[Request]) -> None:
        self._pending[self._sent] = row
        self._sent += 1
        await send.send(row.request)

    # The SDK batch's hooks: quick, synchronous, committed before the POST and right after.

    def _before_submit(self, index: int, request: Request) -> None:
        # Raising here stops this POST before any byte of it is written (the transport
        # calls the hook as the request is about to leave); the SDK then ends the batch.
        if self._stopping:
            raise _Stopped
        row = self._pending[index]
        try:
            # What the ledger said before this run first sent the prompt (a retry may
            # send it again): put back if no try of this run made anything.
            before = self._ledger.get(row.key)
        except sqlite3.Error as failure:
            self._ledger_failed(failure)
            raise _Stopped from failure
        if not self._write(row, State.SENDING):
            raise _Stopped  # no intent on record: it must not leave
        self._before_sending.setdefault(row.key, before)
        self._on_wire[row.key] = row

    def _after_submit(self, index: int, task_id: str) -> None:
        row = self._pending[index]
        self._before_sending.pop(row.key, None)
        self._on_wire.pop(row.key, None)
        self._tally.move("queued", "processing", row.key)
        if not self._write(row, State.SUBMITTED, task_id=task_id):
            # The one copy of this id is here now: said at once (a SIGKILL may come before
            # the end), and printed at the end as a `novita-video wait` command.
            self.unrecorded.append((row, task_id))
            _tell(f"the ledger cannot record task {task_id} of prompt #{row.index}")

    def _after_refused(self, index: int, error: NovitaError) -> None:
        # A try that left came to nothing (a 429, a 503): its intent is void. Recorded as
        # refused, so a run stopped before the retry sends it again next time rather than
        # calling it in doubt; the retry, if it comes, records its own intent.
        row = self._pending[index]
        self._on_wire.pop(row.key, None)
        self._refused(row, error, self._before_sending.get(row.key))

    def _refused(self, row: Row, error: NovitaError, before: Record | None) -> None:
        """Record a prompt whose try of this run was refused (it made nothing); ``before``
        is its record before this run first sent it."""
        if before is not None and before.state is State.FAILED:
            # A retry asked for (--retry-failed) that made nothing: the prompt stays the
            # failed one it was, so only another asked-for retry pays for it again.
            self._restore(row, before)
        else:
            self._write(row, State.REJECTED, error=str(error))

    # Outcomes.

    async def _consume(
        self, receive: MemoryObjectReceiveStream[Request], work: anyio.abc.TaskGroup
    ) -> None:
        batch = self._client.generate(
            receive,
            model=self._settings.model,
            before_submit=self._before_submit,
            after_submit=self._after_submit,
            spend_cap=self._settings.spend_cap,
            after_refused=self._after_refused,
        )
        async with anyio.create_task_group() as following:
            self._follow_earlier(following)
            async with batch:
                try:
                    async for outcome in batch:
                        await self._take(outcome, work)
                except _Stopped:
                    pass  # the run is stopping; the batch ended at a POST it did not let go
            following.cancel_scope.cancel()  # the batch is over: nothing waits for them

    def _follow_earlier(self, group: anyio.abc.TaskGroup) -> None:
        """While the cap does not know the price, follow every task of the run's model
        that the ledger holds made and not ended, in the file or not: the cap sends
        nothing until they have ended (their charge is the price), and a prompt edited
        since (a new prompt) leaves its old task with no run to follow it otherwise."""
        cap = self._settings.spend_cap
        if cap is None or cap.price is not None or not self._settings.tasks_survive:
            return
        model = canonical_model(self._settings.model)
        try:
            running = self._ledger.running()
        except sqlite3.Error as failure:
            self._ledger_failed(failure)
            return
        for name, task_id in running:
            if name is not None and canonical_model(name) == model:
                group.start_soon(self._follow, cap, task_id)

    async def _follow(self, cap: SpendCap, task_id: str) -> None:
        """Tell the cap how a task of an earlier run ended (its prompt's own resume, if it
        is in the file, records it in the ledger)."""
        try:
            await self._client.wait(task_id, timeout=self._settings.task_timeout)
        except NovitaError as error:
            cap.resumed(ended=False, made=not isinstance(error, NotFoundError), task=task_id)
        else:
            cap.resumed(ended=True, task=task_id)

    async def _take(self, outcome: Outcome, work: anyio.abc.TaskGroup) -> None:
        row = self._pending.pop(outcome.index)
        result = outcome.result
        if outcome.error is not None and (result is None or not result.is_final):
            if outcome.task_id is None:
                self._not_made(row, outcome, outcome.error)
            else:
                self._failed(row, outcome.task_id, outcome.error)
            return
        assert result is not None
        assert outcome.task_id is not None
        if self._settle(row, outcome.task_id, result):
            await self._backlog.acquire()
            work.start_soon(self._download_later, row, outcome.task_id, result)

    def _not_made(self, row: Row, outcome: Outcome, error: NovitaError) -> None:
        """Record a prompt whose submit brought no task id, by what the submit came to."""
        self._on_wire.pop(row.key, None)
        sent = row.key in self._before_sending  # a try of this run left
        before = self._before_sending.pop(row.key, None)
        stopper = error.cause if isinstance(error, BatchAbortedError) else error
        # A 404 on a submit is the API saying this model is not at this URL: with one
        # model per run, nothing more can be made, as with a bad key.
        if (
            self.fatal is None
            and stopper is not None
            and (stopper.dooms_batch or isinstance(stopper, NotFoundError))
        ):
            self.fatal = stopper
        submission = outcome.submission
        if submission is Submission.NOT_SENT:
            # Nothing left the machine: the record goes back to what it was before this
            # run sent the prompt (none: the manifest says not_submitted).
            if sent:
                self._restore(row, before)
            record = self._ledger.get(row.key)
            target = "queued" if record is None else _COUNTED[record.state]
            self._tally.move("queued", target)
            if self._emit is not None:
                self._emit(Entry.of(row, record, unsent_reason=str(error)))
            return
        if submission is Submission.REFUSED:
            # An answer that created nothing: sent again by a later run (after a top-up).
            self._refused(row, error, before)
            self._finish(row, "queued", "failed")
            return
        # In doubt (or, never seen here, accepted with no id): a task may exist and be
        # billed; it is sent again only when the user asks.
        self._write(row, State.UNKNOWN, error=str(error))
        self._finish(row, "queued", "unknown")

    async def _resume(self, row: Row, record: Record) -> None:
        task_id = record.task_id
        assert task_id is not None
        try:
            if record.state is State.SUCCEEDED:  # made, but its file is missing
                self._tally.move("processing", "downloading")
                await self._download(row, task_id, task_id)
                return
            cap = self._settings.spend_cap  # it may wait for this task to learn the price
            try:
                result = await self._client.wait(task_id, timeout=self._settings.task_timeout)
            except NovitaError as error:
                if cap is not None:
                    made = not isinstance(error, NotFoundError)
                    cap.resumed(ended=False, made=made, task=task_id)
                self._failed(row, task_id, error)
                return
            if cap is not None:
                cap.resumed(ended=True, task=task_id)
            if self._settle(row, task_id, result):
                await self._download(row, task_id, result)
        finally:
            self._resumed.release()

    def _failed(self, row: Row, task_id: str, error: NovitaError) -> None:
        """Record a task that ended with an error (it may live on)."""
        if error.dooms_batch and self.fatal is None:
            self.fatal = error
        # A task that timed out or could not be checked may still finish: the next run
        # waits for it again. One the server does not know is gone.
        state = State.FAILED if isinstance(error, NotFoundError) else State.SUBMITTED
        self._write(row, state, task_id=task_id, error=str(error))
        self._finish(row, "processing", "failed")

    def _settle(self, row: Row, task_id: str, result: TaskResult) -> bool:
        """Record a final task; True when its clip is now to be downloaded."""
        if result.ok:
            if not self._write(row, State.SUCCEEDED, task_id=task_id):
                return False  # stopping: its id is in the ledger, the next run resumes it
            if self._settings.download:
                self._tally.move("processing", "downloading")
                return True
            self._finish(row, "processing", "done")
            return False
        error = f"the task {result.failure()}"
        self._write(row, State.FAILED, task_id=task_id, error=error)
        self._finish(row, "processing", "failed")
        return False

    async def _download_later(self, row: Row, task_id: str, result: TaskResult) -> None:
        try:
            await self._download(row, task_id, result)
        finally:
            self._backlog.release()

    async def _download(self, row: Row, task_id: str, source: TaskResult | str) -> None:
        """Fetch a clip (``source`` a fresh result, or a task id to ask again) to its file."""
        name = clip_name(row, self._settings.out, self._ledger)
        # The name is recorded before the download: a run killed after the clip was
        # renamed into place (whole) leaves a record that names it, so the next run finds
        # it instead of downloading it again beside itself; one killed before finds the
        # name free and fetches the clip into it.
        if not self._write(row, State.SUCCEEDED, task_id=task_id, file=name):
            self._finish(row, "downloading", "failed")
            return
        try:
            async with self._downloads:
                await self._client.download(source, self._settings.out / name)
        except (NovitaError, OSError) as error:
            if isinstance(error, NovitaError) and error.dooms_batch and self.fatal is None:
                self.fatal = error
            self._write(row, State.SUCCEEDED, task_id=task_id, error=f"download failed: {error}")
            self._finish(row, "downloading", "failed")
            return
        except BaseException:
            # Stopped mid-way: no file is there, and the record must not name one.
            self._write(row, State.SUCCEEDED, task_id=task_id, error="download not finished")
            raise
        self._write(row, State.SUCCEEDED, task_id=task_id, file=name)
        self._finish(row, "downloading", "done")

    def _settle_on_wire(self) -> None:
        """After the client closed: a prompt whose POST left and never told what it came
        to (the run stopped while it was on the wire, and it was given up or ended
        unseen) is in doubt, and recorded so, never as not sent."""
        reason = self.cut_reason
        for row in self._on_wire.values():
            self.in_doubt.append(row)
            error = (
                "in doubt: its submit was on the wire when the run stopped"
                + (f" and was given up ({reason})" if reason else "")
                + "; Novita may have made (and billed) a task: check the dashboard, then "
                "run again with --resubmit-unknown to send it again"
            )
            # If this fails too, its record still says `sending`: in doubt all the same.
            self._write(row, State.UNKNOWN, error=error)
            self._finish(row, "queued", "unknown")
        self._on_wire.clear()

    def _finish(self, row: Row, source: str, target: str, record: Record | None = None) -> None:
        self._tally.move(source, target, row.key)
        with contextlib.suppress(OSError):  # a terminal that has gone
            self._reporter.settled(self._tally)
        if self._emit is not None:
            self._emit(Entry.of(row, record or self._ledger.get(row.key)))
