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

SIGINT stops it at once: no more submits; POSTs already on the wire finish (the SDK
shields them) and their task ids are written, so the next run waits for those tasks.
A second SIGINT quits without waiting for them; the ledger is consistent even then.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._client import Client
from .._errors import (
    APIConnectionError,
    BatchAbortedError,
    NotFoundError,
    NovitaError,
    SubmissionUnknownError,
)
from .._models import TaskResult
from .._requests import Request
from ._inputs import InputError, PromptSource, Row
from ._ledger import Ledger, Record, State
from ._outputs import Entry, changed_since_sent, clip_name
from ._progress import Reporter, Tally

__all__ = ["DOWNLOADS", "Run", "Settings"]

#: Clips downloaded at once.
DOWNLOADS: Final = 4
#: Finished clips that may wait for a download before the batch is made to wait too.
_DOWNLOAD_BACKLOG: Final = 64
#: Resumed tasks awaited at once (each is a cheap entry in the one poller).
_RESUMED: Final = 1000


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


class Run:
    """Drives one batch run; read :attr:`fatal`, :attr:`interrupted`, :attr:`input_error`."""

    def __init__(
        self,
        client: Client,
        source: PromptSource,
        ledger: Ledger,
        settings: Settings,
        tally: Tally,
        reporter: Reporter,
        emit: Callable[[Entry], None] | None = None,
    ) -> None:
        self._client = client
        self._source = source
        self._ledger = ledger
        self._settings = settings
        self._tally = tally
        self._reporter = reporter
        self._emit = emit
        #: The first answer that doomed the batch (bad key, no balance), if any.
        self.fatal: NovitaError | None = None
        self.interrupted = False
        #: The input changed between the passes.
        self.input_error: InputError | None = None
        self._pending: dict[int, Row] = {}  # the SDK batch's index -> the row it came from
        self._before_sending: dict[str, Record | None] = {}  # see _before_submit
        self._sent = 0
        self._downloads = anyio.CapacityLimiter(DOWNLOADS)
        self._backlog = anyio.Semaphore(_DOWNLOAD_BACKLOG)
        self._resumed = anyio.Semaphore(_RESUMED)
        self._work: anyio.CancelScope | None = None

    async def run(self) -> None:
        """Run until every prompt is settled, the input fails, or SIGINT."""
        try:
            async with anyio.create_task_group() as watchers:
                watchers.start_soon(self._stop_on_sigint)
                if math.isfinite(self._reporter.interval):
                    watchers.start_soon(self._show_progress)
                async with anyio.create_task_group() as work:
                    self._work = work.cancel_scope
                    send, receive = anyio.create_memory_object_stream[Request]()
                    work.start_soon(self._read, send, work)
                    work.start_soon(self._consume, receive, work)
                watchers.cancel_scope.cancel()
        finally:
            self._reporter.close(self._tally)

    def _stop(self) -> None:
        if self._work is not None:
            self._work.cancel()

    async def _stop_on_sigint(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                break
        # From here on a second Ctrl-C is a KeyboardInterrupt: it quits without waiting
        # for the POSTs on the wire, and the ledger, committed a statement at a time,
        # stays consistent (their prompts show as unknown next time).
        self.interrupted = True
        print("novita-video: stopping (Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
        self._stop()

    async def _show_progress(self) -> None:
        while True:
            self._reporter.show(self._tally)
            await anyio.sleep(self._reporter.interval)

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
            if self.fatal is not None:
                return  # the rest stays unsent, and so unrecorded
            if count % 100 == 0:
                # Rows settled from the ledger alone never wait: let the rest run.
                await anyio.lowlevel.checkpoint()
            await self._dispatch(row, send, work)

    async def _dispatch(
        self, row: Row, send: MemoryObjectSendStream[Request], work: anyio.abc.TaskGroup
    ) -> None:
        record = self._ledger.get(row.key)
        if (changed := changed_since_sent(row, record)) is not None:
            print(f"novita-video: {changed}", file=sys.stderr, flush=True)
        state = None if record is None else record.state
        survive = self._settings.tasks_survive
        if record is None or state is State.REJECTED:
            await self._submit(row, send)
        elif state is State.FAILED or (state is State.SUCCEEDED and self._has_clip(record)):
            self._tally.finished_before += 1
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
            self._tally.move("queued", "processing")
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
        row = self._pending[index]
        # What the ledger said before this run first sent the prompt (a retry may send it
        # again): put back if no try of this run made anything.
        self._before_sending.setdefault(row.key, self._ledger.get(row.key))
        self._ledger.write(row, State.SENDING)

    def _after_submit(self, index: int, task_id: str) -> None:
        row = self._pending[index]
        self._before_sending.pop(row.key, None)
        self._ledger.write(row, State.SUBMITTED, task_id=task_id)
        self._tally.move("queued", "processing")

    # Outcomes.

    async def _consume(
        self, receive: MemoryObjectReceiveStream[Request], work: anyio.abc.TaskGroup
    ) -> None:
        batch = self._client.generate(
            receive,
            model=self._settings.model,
            before_submit=self._before_submit,
            after_submit=self._after_submit,
        )
        async with batch:
            async for outcome in batch:
                row = self._pending.pop(outcome.index)
                result = outcome.result
                if outcome.error is not None and (result is None or not result.is_final):
                    self._failed(row, outcome.task_id, outcome.error)
                    continue
                assert result is not None
                assert outcome.task_id is not None
                if self._settle(row, outcome.task_id, result):
                    await self._backlog.acquire()
                    work.start_soon(self._download_later, row, outcome.task_id, result)

    async def _resume(self, row: Row, record: Record) -> None:
        task_id = record.task_id
        assert task_id is not None
        try:
            if record.state is State.SUCCEEDED:  # made, but its file is missing
                self._tally.move("processing", "downloading")
                await self._download(row, task_id, task_id)
                return
            try:
                result = await self._client.wait(task_id, timeout=self._settings.task_timeout)
            except NovitaError as error:
                self._failed(row, task_id, error)
                return
            if self._settle(row, task_id, result):
                await self._download(row, task_id, result)
        finally:
            self._resumed.release()

    def _failed(self, row: Row, task_id: str | None, error: NovitaError) -> None:
        """Record a prompt that ended with an error (its task, if any, may live on)."""
        if error.dooms_batch and self.fatal is None:
            self.fatal = error
        never_left = isinstance(error, APIConnectionError) and not error.maybe_sent
        if isinstance(error, BatchAbortedError) or (task_id is None and never_left):
            # Never sent: the manifest says not_submitted and the next run sends it (it was
            # read before the batch was doomed, or could not connect: Novita made nothing).
            if row.key in self._before_sending:
                # An earlier try of this run left, and provably made nothing (it was tried
                # again): the record goes back to what it was before this run sent it.
                self._ledger.restore(row, self._before_sending.pop(row.key))
            self._finish(row, "queued", "failed", unsent=True)
            return
        if task_id is None:
            # No task id: either none was created (sent again next run), or one may have been.
            unknown = isinstance(error, SubmissionUnknownError)
            state = State.UNKNOWN if unknown else State.REJECTED
            source, target = "queued", "unknown" if unknown else "failed"
        else:
            # A task that timed out or could not be checked may still finish: the next run
            # waits for it again. One the server does not know is gone.
            state = State.FAILED if isinstance(error, NotFoundError) else State.SUBMITTED
            source, target = "processing", "failed"
        self._ledger.write(row, state, task_id=task_id, error=str(error))
        self._finish(row, source, target)

    def _settle(self, row: Row, task_id: str, result: TaskResult) -> bool:
        """Record a final task; True when its clip is now to be downloaded."""
        if result.ok:
            self._ledger.write(row, State.SUCCEEDED, task_id=task_id)
            if self._settings.download:
                self._tally.move("processing", "downloading")
                return True
            self._finish(row, "processing", "done")
            return False
        error = f"the task {result.failure()}"
        self._ledger.write(row, State.FAILED, task_id=task_id, error=error)
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
        try:
            async with self._downloads:
                await self._client.download(source, self._settings.out / name)
        except (NovitaError, OSError) as error:
            if isinstance(error, NovitaError) and error.dooms_batch and self.fatal is None:
                self.fatal = error
            self._ledger.write(
                row, State.SUCCEEDED, task_id=task_id, error=f"download failed: {error}"
            )
            self._finish(row, "downloading", "failed")
            return
        self._ledger.write(row, State.SUCCEEDED, task_id=task_id, file=name)
        self._finish(row, "downloading", "done")

    def _finish(
        self,
        row: Row,
        source: str,
        target: str,
        record: Record | None = None,
        *,
        unsent: bool = False,
    ) -> None:
        self._tally.move(source, target)
        if self._emit is not None:
            known = None if unsent else record or self._ledger.get(row.key)
            self._emit(Entry.of(row, known))
