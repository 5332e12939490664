"""The money-critical submit path: the rate limiter, the POST, and the rule that a POST
which may have created a task is never sent again on its own.

A :class:`Submitter` is shared by :meth:`Client.submit` and every batch of a client. Novita
has no idempotency key, so everything here turns on one question: could this request
have created (and billed) a task? A request is cancellable until it leaves the machine
and shielded from then on (a created task's id is never lost to a cancellation); it is
repeated only when it certainly created nothing (:func:`~novita_video._retry.decide`).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ._clock import Clock
from ._errors import BatchAbortedError, NovitaError
from ._limits import Limiter
from ._requests import Request
from ._retrier import Retrier
from ._stats import Counters
from ._transport import Response, Sending, Transport
from ._wire import dump_request, parse_submitted

__all__ = ["Submitter"]


class Submitter:
    """Submits requests for one client; see the module docstring."""

    def __init__(
        self,
        transport: Transport,
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
    ) -> str:
        """POST ``request``, retrying only when no task can have been created.

        ``abort`` is asked right before each POST (a batch's fatal error stops it there);
        ``before_post`` is told as the request leaves the machine, before the server can
        have created anything (a ledger records the intent there; a request that could
        not connect never tells it);
        ``on_accepted`` is told the task id inside the shielded section, so a task that
        was created is never lost to a cancellation that arrives while the POST runs; a
        cancellation that arrives before the request left stops it, and nothing is sent.
        """
        body = dump_request(request)
        if self._webhook_url is not None:
            extra = body.setdefault("extra", {})
            if isinstance(extra, dict):
                extra.setdefault("webhook", {"url": self._webhook_url})
        path = f"/v3/async/{request.endpoint}"

        async def attempt() -> str:
            cause = abort()
            if cause is not None:
                raise BatchAbortedError(f"not submitted: {cause}", cause)
            # Cancellable until the request leaves; from then on shielded, so that a task
            # that may be created (and billed) is never lost to a cancellation. The intent
            # is told as it leaves: a request that never left created nothing.
            with anyio.CancelScope() as guard:

                def on_sent() -> None:
                    guard.shield = True
                    if before_post is not None:
                        before_post()

                sending = Sending(on_sent=on_sent)
                response = await self._transport.request("POST", path, json=body, sending=sending)
                task_id = self._submitted(response)
                self._counters.submitted += 1
                if on_accepted is not None:
                    on_accepted(task_id)
                return task_id
            raise AssertionError("unreachable: the guard scope is never cancelled itself")

        return await self._retrier.call("POST", attempt, limiter=limiter, request=request)

    def _submitted(self, response: Response) -> str:
        if 200 <= response.status < 300:
            return parse_submitted(response.body)
        raise response.error("submit", now_wall=self._clock.wall())
