"""A batch: many prompts in, one :class:`Outcome` per prompt out, in the order tasks end.

Two objects, so that a consumer who walks away is noticed:

* :class:`_BatchRun` does the work inside the client's task group: it reads the
  prompts lazily (never more than ``max_outstanding`` ahead of the consumer), submits
  them under the concurrency cap and the rate limiter, registers each task with the
  client's one poller, and sends outcomes into a memory object stream.
* :class:`Batch` is what :meth:`Client.generate` returns: the receiving end. Nothing in
  the run refers back to it, so when the consumer drops it (a ``break`` out of
  ``async for``), it is garbage at once and its finalizer stops the run. ``async with``
  and :meth:`Batch.aclose` do the same deterministically.

A fatal answer (bad key, no balance) stops every later submit of the batch at once:
submitters waiting for their turn are cancelled, POSTs already on the wire finish (so no
created task is lost), tasks already submitted are still polled to the end, and every
prompt not sent is yielded with a :class:`BatchAbortedError` naming the cause.
"""

from __future__ import annotations

import contextlib
import logging
import math
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import anyio
import anyio.abc

from ._clock import Clock
from ._errors import BatchAbortedError, InvalidRequestError, NotFoundError, NovitaError
from ._limits import Limiter
from ._models import Outcome, Submission, TaskResult
from ._poller import Listener, Poller
from ._requests import Request, to_request
from ._submit import Fate, Submitter

if TYPE_CHECKING:
    # Annotations only: anyio loads its streams when the first batch makes one, not on
    # `import novita_video` (benchmarks/imports.py).
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["Batch", "PromptInput"]

logger = logging.getLogger("novita_video")

#: What a batch accepts for each prompt: a request, a prompt, or a mapping of fields.
PromptInput = str | Request | Mapping[str, Any]


async def _items(prompts: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    # A plain async generator without a task group: safe to abandon.
    if isinstance(prompts, AsyncIterable):
        async for item in prompts:
            yield item
    else:
        for item in prompts:
            yield item
            await anyio.lowlevel.checkpoint()


class SpendGate(Protocol):
    """What a batch asks before each submit (``SpendCap``): ``admit`` waits for room or
    raises the error that stops the batch; ``settle`` says whether the admitted submit
    made (or may have made: ``in_doubt``, a task never seen to end) a task; ``ended``
    that one of the batch's tasks ended."""

    async def admit(self, endpoint: str) -> None: ...

    def settle(self, accepted: bool, *, in_doubt: bool = False) -> None: ...

    def ended(self) -> None: ...


class _HookFailed(Exception):
    """A hook of the user's raised ``error``: carried out of the submit path to its batch."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _innermost(error: Exception) -> Exception:
    # A task group's ExceptionGroup of one: the error itself.
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, _HookFailed):
        return error.error
    return error


class _BatchRun:
    """The working half of a batch; see the module docstring."""

    def __init__(
        self,
        prompts: Iterable[PromptInput] | AsyncIterable[PromptInput],
        *,
        submitter: Submitter,
        poller: Poller,
        clock: Clock,
        on_end: Callable[[_BatchRun], None],
        concurrency: int,
        limiter_for: Callable[[str], Limiter],
        max_outstanding: int,
        task_timeout: float,
        model: str,
        before_submit: Callable[[int, Request], None] | None,
        after_submit: Callable[[int, str], None] | None,
        prepare: Callable[[Any], Awaitable[Request]] | None = None,
        spend: SpendGate | None = None,
        after_refused: Callable[[int, NovitaError], None] | None = None,
    ) -> None:
        self._submitter = submitter
        self._poller = poller
        self._clock = clock
        self._on_end = on_end
        self._prompts = prompts
        self._limiter_for = limiter_for
        self._task_timeout = task_timeout
        self._model = model
        # Unbounded: a finished task's outcome never waits (how far ahead the prompts are
        # read is bounded by `slots`, released as the consumer takes outcomes).
        self._send, self.receive = anyio.create_memory_object_stream[Outcome](math.inf)
        self._before_submit = before_submit
        self._after_submit = after_submit
        # Turns an item into a checked request when that needs the network (a catalogue
        # model's schema); raises InvalidRequestError for this item alone.
        self._prepare = prepare
        self._spend = spend
        self._after_refused = after_refused
        self.slots = anyio.Semaphore(max_outstanding)
        self._concurrency = concurrency
        self._scope = anyio.CancelScope()
        # Submits waiting for their turn, by endpoint: a doom cancels them (all, or one
        # endpoint's).
        self._waiting: dict[anyio.CancelScope, str] = {}
        self._listeners: dict[int, Listener] = {}
        self._fatal: NovitaError | None = None
        # Endpoints that answered a submit 404 (a wrong base URL, a retired model): their
        # later prompts are not sent; other models of the batch go on.
        self._dead: dict[str, NovitaError] = {}
        self._pending = 0
        self._input_done = False
        self.input_error: Exception | None = None
        self.user_error: Exception | None = None
        self.ended_by: NovitaError | None = None
        self.complete = False
        self.stopped = False

    async def drive(self) -> None:
        """Read, validate and submit every prompt; run in the client's task group.

        Whatever goes wrong here ends this batch (its consumer gets the error), never the
        client's task group and the other waits and batches in it."""
        try:
            await self._drive()
        except Exception as error:
            self.fail(_innermost(error))

    async def _drive(self) -> None:
        with self._scope:
            try:
                # `concurrency` submitters take prompts from a stream with no buffer: a
                # prompt is read only when a submitter is free to send it.
                send, receive = anyio.create_memory_object_stream[tuple[int, Request]](0)
                async with anyio.create_task_group() as submitters:
                    for _ in range(self._concurrency):
                        submitters.start_soon(self._submit_loop, receive.clone())
                    receive.close()
                    async with send:
                        await self._read(send)
            finally:
                self._input_done = True
                self._maybe_complete()

    async def _read(self, send: MemoryObjectSendStream[tuple[int, Request]]) -> None:
        items = _items(self._prompts)
        index = -1
        try:
            while True:
                await self.slots.acquire()  # lazy: only as far ahead as the consumer allows
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    self.slots.release()
                    return
                except Exception as error:  # the user's iterable failed: say so at the end
                    self.slots.release()
                    self.input_error = error
                    return
                index += 1
                self._pending += 1
                try:
                    if self._prepare is None:
                        request = to_request(item, self._model)
                    else:
                        request = await self._prepare(item)
                except InvalidRequestError as error:
                    self._emit(Outcome(index, None, error=error))
                    continue
                if self._stopper(request.endpoint) is not None:
                    self._emit(Outcome(index, request, error=self._aborted(request.endpoint)))
                    continue
                await send.send((index, request))
        finally:
            with anyio.CancelScope(shield=True):
                await items.aclose()

    async def _submit_loop(self, receive: MemoryObjectReceiveStream[tuple[int, Request]]) -> None:
        async with receive:
            async for index, request in receive:
                if self._stopper(request.endpoint) is not None:
                    self._emit(Outcome(index, request, error=self._aborted(request.endpoint)))
                else:
                    await self._submit_one(index, request)

    def _stopper(self, endpoint: str) -> NovitaError | None:
        """The answer that stops submits to ``endpoint``, if one came."""
        return self._fatal or self._dead.get(endpoint)

    def _aborted(self, endpoint: str) -> BatchAbortedError:
        cause = self._stopper(endpoint)
        if cause is self._fatal:
            what = "the batch"
        else:
            what = f"submits to {endpoint} (it is not there: check the base URL and model)"
        return BatchAbortedError(
            f"not submitted: an earlier answer stopped {what} ({cause})", cause
        )

    async def _submit_one(self, index: int, request: Request) -> None:
        endpoint = request.endpoint

        def before_post() -> None:
            if self._before_submit is not None:
                try:
                    self._before_submit(index, request)
                except Exception as error:  # the user's hook: it ends this batch alone
                    raise _HookFailed(error) from error

        def on_accepted(task_id: str) -> None:
            self._watch(index, request, task_id, self._clock.now())
            if self._after_submit is not None:
                try:
                    self._after_submit(index, task_id)
                except Exception as error:
                    raise _HookFailed(error) from error

        def on_refused(error: NovitaError) -> None:
            if self._after_refused is not None:
                try:
                    self._after_refused(index, error)
                except Exception as failure:
                    raise _HookFailed(failure) from failure

        # What the submit came to is written by the submitter at the wire; whatever
        # ends the call here (an answer, a doom's cancellation, a retry cut short), the
        # outcome carries that, never a guess from how the call ended.
        fate = Fate()
        hook_error: Exception | None = None
        admitted = False
        with anyio.CancelScope() as waiting:
            self._waiting[waiting] = endpoint
            try:
                if self._spend is not None:
                    await self._spend.admit(endpoint)  # may wait, or stop the batch
                    admitted = True
                await self._submitter.submit(
                    request,
                    self._limiter_for(endpoint),
                    abort=lambda: self._stopper(endpoint),
                    before_post=before_post,
                    on_accepted=on_accepted,
                    on_refused=on_refused,
                    fate=fate,
                )
            except NovitaError as refused:
                if fate.error is None and fate.submission is Submission.NOT_SENT:
                    fate.error = refused  # the spend gate's: nothing was sent
                # otherwise the fate holds it
            except _HookFailed as failed:
                hook_error = failed.error
        del self._waiting[waiting]
        if admitted and self._spend is not None:
            self._spend.settle(
                fate.submission in (Submission.ACCEPTED, Submission.IN_DOUBT),
                in_doubt=fate.submission is Submission.IN_DOUBT,
            )
        if hook_error is not None:
            self.fail(hook_error)
            return
        if fate.submission is Submission.ACCEPTED:
            return  # its watch gives the outcome
        error = fate.final_error(request)
        if fate.submission is not Submission.IN_DOUBT and (
            error is None or isinstance(error, BatchAbortedError) or waiting.cancelled_caught
        ):
            # Stopped before it was sent (again); an earlier try that was refused says so.
            error = self._aborted(endpoint)
            if fate.submission is Submission.REFUSED:
                error = BatchAbortedError(
                    f"{error}; its last try was refused ({fate.wire_error})", error.cause
                )
        assert error is not None
        if fate.submission is Submission.REFUSED and isinstance(error, NotFoundError):
            self._doom_endpoint(endpoint, error)
        if error.dooms_batch and self._fatal is None:
            self._doom(error)
        self._emit(Outcome(index, request, error=error, submission=fate.submission))

    def _doom(self, error: NovitaError) -> None:
        logger.warning("batch stops submitting: %s", error)
        self._fatal = error
        for scope in self._waiting:
            scope.cancel()

    def _doom_endpoint(self, endpoint: str, error: NovitaError) -> None:
        if endpoint in self._dead:
            return
        logger.warning("batch stops submitting to %s: %s", endpoint, error)
        self._dead[endpoint] = error
        for scope, waiting_for in self._waiting.items():
            if waiting_for == endpoint:
                scope.cancel()

    def _watch(self, index: int, request: Request, task_id: str, submitted_at: float) -> None:
        if self.stopped:
            logger.warning(
                "task %s was created for prompt %d after its batch stopped", task_id, index
            )
            return

        def on_done(result: TaskResult | None, error: NovitaError | None) -> None:
            self._listeners.pop(index, None)
            if self._spend is not None:
                self._spend.ended()
            if error is not None and error.dooms_batch and self._fatal is None:
                self._doom(error)  # a revoked key shows on a poll as well as on a submit
            if error is None and result is not None:
                # Every outcome that is not ok says why, a failed task's reason included.
                error = result.failure_error()
            self._emit(Outcome(index, request, task_id, result, error))

        self._listeners[index] = self._poller.listen(
            task_id,
            deadline=submitted_at + self._task_timeout,
            submitted_at=submitted_at,
            on_done=on_done,
            model=request.endpoint,
        )

    def _emit(self, outcome: Outcome) -> None:
        self._pending -= 1
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait(outcome)  # raises only when nobody listens any more
        self._maybe_complete()

    def _maybe_complete(self) -> None:
        if self._input_done and self._pending == 0 and not self.complete:
            self.complete = True
            self._send.close()
            self._on_end(self)

    def fail(self, error: Exception) -> None:
        """End the batch with an error of the user's code (a hook that raised): no more
        submits or polls; its consumer gets ``error`` after the outcomes already made."""
        if self.user_error is None:
            self.user_error = error
        self.stop()

    def stop(self, error: NovitaError | None = None) -> None:
        """Stop at once: no more submits, no more polls for this batch's tasks."""
        if self.stopped:
            return
        self.stopped = True
        self.ended_by = error
        self._scope.cancel()
        for listener in self._listeners.values():
            self._poller.forget(listener)
        self._listeners.clear()
        self._send.close()
        self._on_end(self)


def _stop_abandoned(receive: MemoryObjectReceiveStream[Outcome], run: _BatchRun) -> None:
    # Runs when the Batch handle is garbage: its consumer has gone.
    receive.close()
    with contextlib.suppress(RuntimeError):  # no event loop any more (at interpreter exit)
        run.stop()


class _Loop:
    """One ``async for`` over a batch: when the loop lets go of it, the batch stops."""

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        # Synchronous, the moment the loop drops this iterator (CPython frees it at once),
        # so no POST can begin between leaving the loop and the batch stopping.
        weakref.finalize(self, batch._finalizer)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Outcome:
        return await self._batch.__anext__()


class Batch:
    """The outcomes of :meth:`Client.generate`, an async iterator (and context manager).

    Each prompt yields exactly one :class:`Outcome`, in the order the tasks end.
    """

    def __init__(self, run: _BatchRun, *, start: Callable[[_BatchRun], None]) -> None:
        self._run = run
        self._receive = run.receive
        self._start: Callable[[_BatchRun], None] | None = start
        self._finalizer = weakref.finalize(self, _stop_abandoned, self._receive, self._run)

    def _begin(self) -> None:
        # Nothing is read or sent before the batch is entered or first iterated.
        start, self._start = self._start, None
        if start is not None and not self._run.stopped:
            start(self._run)

    def __repr__(self) -> str:
        state = "complete" if self._run.complete else "stopped" if self._run.stopped else "running"
        return f"<novita_video.Batch {state}>"

    def __aiter__(self) -> AsyncIterator[Outcome]:
        # An iterator per loop, held by the loop alone: leaving the loop (break, an
        # exception, a cancellation) frees it at once, and that stops the batch, however
        # long the Batch itself stays referenced.
        self._begin()
        return _Loop(self)

    async def __anext__(self) -> Outcome:
        self._begin()
        try:
            outcome = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            run = self._run
            if run.user_error is not None:
                error, run.user_error = run.user_error, None
                raise error from None
            if run.input_error is not None:
                error, run.input_error = run.input_error, None
                raise error from None
            if not run.complete and run.ended_by is not None:
                raise run.ended_by from None
            raise StopAsyncIteration from None
        self._run.slots.release()
        return outcome

    async def aclose(self) -> None:
        """Stop submitting and polling for this batch now; outcomes not yet read are dropped."""
        self._finalizer()
        await anyio.lowlevel.checkpoint()

    async def __aenter__(self) -> Self:
        self._begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
