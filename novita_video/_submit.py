"""The money-critical submit path: the rate limiter, the POST, and the rule that a POST
which may have created a task is never sent again on its own.

A :class:`Submitter` is shared by :meth:`Client.submit` and every batch of a client. Novita
has no idempotency key, so everything here turns on one question: could this request
have created (and billed) a task? A request is cancellable until it leaves the machine
and shielded from then on (a created task's id is never lost to a cancellation); it is
repeated only when it certainly created nothing (:func:`~novita_video._retry.decide`).

What a submit came to (:class:`~novita_video.Submission`: accepted, not sent, refused,
in doubt) is written into its :class:`Fate` here, at the wire, as each attempt leaves
and as its answer (or failure) comes back, and nowhere else. Whoever holds the
:class:`Fate` reads it after the call, also when the call was cancelled: a cancellation
or a stopped batch never changes what the wire decided.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import attrs

from ._clock import Clock
from ._errors import APIConnectionError, BatchAbortedError, NovitaError
from ._limits import Limiter
from ._models import Submission
from ._observe import Observed
from ._requests import Request, submit_path
from ._retrier import Retrier, unknown_submission
from ._retry import submit_may_have_landed
from ._stats import Counters
from ._transport import Response, Sending
from ._wire import dump_request, parse_submitted

__all__ = ["Fate", "Submitter"]


@attrs.define
class Fate:
    """What one submit came to, as the wire decided it (see the module docstring).

    ``submission`` starts ``NOT_SENT`` and changes only in :meth:`Submitter.submit`: to
    ``IN_DOUBT`` the moment a request leaves, then to ``ACCEPTED`` (``task_id``),
    ``REFUSED`` or stays ``IN_DOUBT`` by its answer. A later attempt of the same submit is
    made only after one that created nothing, so the last decision stands for them all.
    """

    submission: Submission = Submission.NOT_SENT
    task_id: str | None = None
    #: The last attempt's failure, as the wire gave it.
    wire_error: NovitaError | None = None
    #: What the submit raised in the end (None: it returned, or was cancelled first).
    error: NovitaError | None = None
    # The fate before the attempt under way: what a request that never left keeps.
    _before: Submission = Submission.NOT_SENT

    def begin(self) -> None:
        """An attempt starts; nothing has left yet."""
        self._before = self.submission

    def left(self) -> None:
        """The attempt's request left the machine: from now on a task may exist."""
        self.submission = Submission.IN_DOUBT

    def answered(self, task_id: str) -> None:
        """The server created task ``task_id``."""
        self.submission, self.task_id, self.wire_error = Submission.ACCEPTED, task_id, None

    def failed(self, error: NovitaError) -> None:
        """The attempt ended in ``error``: an answer, or no answer."""
        self.wire_error = error
        if submit_may_have_landed(error):
            self.submission = Submission.IN_DOUBT
        elif isinstance(error, APIConnectionError):
            self.submission = self._before  # it never left: this attempt changed nothing
        else:
            self.submission = Submission.REFUSED  # an answer that created nothing

    def final_error(self, request: object) -> NovitaError | None:
        """The error a caller reports for this submit, built from the wire's last word
        when the call itself was cancelled before it raised."""
        if self.error is not None:
            return self.error
        if self.submission is Submission.IN_DOUBT and self.wire_error is not None:
            return unknown_submission(self.wire_error, request)
        return self.wire_error


class Submitter:
    """Submits requests for one client; see the module docstring."""

    def __init__(
        self,
        transport: Observed,
        *,
        clock: Clock,
        retrier: Retrier,
        counters: Counters,
        webhook_url: str | None = None,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._retrier = retrier
        self._counters = counters
        self._webhook_url = webhook_url

    async def submit(
        self,
        request: Request,
        limiter: Limiter,
        *,
        abort: Callable[[], NovitaError | None] = lambda: None,
        before_post: Callable[[], None] | None = None,
        on_accepted: Callable[[str], None] | None = None,
        on_refused: Callable[[NovitaError], None] | None = None,
        fate: Fate | None = None,
        max_wait: float | None = None,
    ) -> str:
        """POST ``request``, retrying only when no task can have been created.

        ``abort`` is asked right before each POST (a batch's fatal error stops it there);
        ``before_post`` is told as the request leaves the machine, before the server can
        have created anything (a ledger records the intent there; a request that could
        not connect never tells it);
        ``on_accepted`` is told the task id inside the shielded section, so a task that
        was created is never lost to a cancellation that arrives while the POST runs; a
        cancellation that arrives before the request left stops it, and nothing is sent.
        ``on_refused`` is told when a try that left comes to nothing (an answer that
        created nothing): the intent ``before_post`` recorded is void.
        ``fate`` is written as the wire decides (see :class:`Fate`), so a caller that
        cancels this call still knows what it came to. ``max_wait`` bounds the wait for
        turns (see :meth:`Retrier.call`): past it, :class:`BackPressureError`, and no more
        is sent; a POST that left is never cut short by it.
        """
        fate = Fate() if fate is None else fate
        body = dump_request(request)
        if self._webhook_url is not None:
            extra = body.setdefault("extra", {})
            if isinstance(extra, dict):
                extra.setdefault("webhook", {"url": self._webhook_url})
        path = submit_path(request)
        # A transport that does not say when a request leaves (a user's own) is taken to
        # send it the moment it is called: shielded from the start, in doubt until an
        # answer says otherwise.
        reports = bool(getattr(self._transport, "reports_sending", False))

        async def attempt(number: int) -> str:
            cause = abort()
            if cause is not None:
                raise BatchAbortedError(f"not submitted: {cause}", cause)
            fate.begin()
            # Cancellable until the request leaves; from then on shielded, so that a task
            # that may be created (and billed) is never lost to a cancellation. The intent
            # is told as it leaves: a request that never left created nothing.
            with anyio.CancelScope() as guard:
                hook_failed: list[Exception] = []
                sending_left = False

                def on_sent() -> None:
                    nonlocal sending_left
                    guard.shield = True
                    sending_left = True
                    fate.left()
                    if before_post is not None:
                        try:
                            before_post()
                        except Exception as error:  # the caller's: it passes through as is
                            hook_failed.append(error)
                            raise

                sending = Sending(on_sent=on_sent if reports else None)
                if not reports:
                    on_sent()
                try:
                    response = await self._transport.request(
                        "POST", path, json=body, sending=sending, attempt=number
                    )
                    task_id = self._submitted(response)
                except NovitaError as error:
                    failure = error
                    if isinstance(error, APIConnectionError) and (sending.sent or not reports):
                        failure = _maybe_sent(error)  # it left, whatever the error says
                    fate.failed(failure)
                    made_nothing = fate.submission is not Submission.IN_DOUBT
                    if sending_left and made_nothing and on_refused is not None:
                        on_refused(failure)  # this try left, and its intent is void
                    if failure is error:
                        raise
                    raise failure from error
                except Exception as error:
                    if hook_failed:
                        raise
                    # A transport's own bug: the request may have left (openai-python
                    # maps such failures to a connection error too).
                    failure = APIConnectionError(
                        f"submit: the transport failed ({type(error).__name__}: {error})",
                        maybe_sent=sending.sent or not reports,
                    )
                    fate.failed(failure)
                    raise failure from error
                fate.answered(task_id)
                self._counters.submitted += 1
                if on_accepted is not None:
                    on_accepted(task_id)
                return task_id
            raise AssertionError("unreachable: the guard scope is never cancelled itself")

        try:
            return await self._retrier.call(
                "POST", attempt, limiter=limiter, request=request, max_wait=max_wait
            )
        except NovitaError as error:
            fate.error = error
            raise

    def _submitted(self, response: Response) -> str:
        if 200 <= response.status < 300:
            return parse_submitted(response.body)
        raise response.error("submit", now_wall=self._clock.wall())


def _maybe_sent(error: APIConnectionError) -> APIConnectionError:
    if error.maybe_sent:
        return error
    return APIConnectionError(str(error), maybe_sent=True)
