"""Every request the client makes, seen from just above the transport: hooks and log lines.

The client wraps its transport (its own, or one passed as ``Client(transport=...)``) in
an :class:`Observed`, so that every request (submits, ``get_result``, the poller's
checks, clip downloads) passes here with what only its caller knows: the attempt
number (counted by the retry driver, by the poller for a task's checks, by a
download) and the task id. Here, and nowhere else, a request becomes a
:class:`RequestEvent` and a :class:`ResponseEvent` for ``Client(event_hooks=...)``, and
one debug line for ``NOVITA_LOG``. Being above the transport, hooks see the requests of
a user's own transport too.

A hook is a plain or an async callable, called in order. Unlike httpx, a hook that
raises does not stop the request: the error is logged (with its traceback) and the
request goes on, and so do the other hooks. An async hook gets at most
:data:`HOOK_TIMEOUT` seconds; past that it is cancelled and a warning logged (a plain
hook runs on the event loop to its end: keep it quick). Every request event is followed
by exactly one response event, also when the request failed or was cancelled (then
run shielded, within the same bound), so that a span opened on one is always closed.

Nothing here sees the key: it stays inside the transport. A clip's link is reduced to
its path, because its query string is a signature, a credential of its own.
"""

from __future__ import annotations

import inspect
import itertools
import json as json_module
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, BinaryIO, Literal
from urllib.parse import urlsplit

import anyio
import attrs

from ._errors import InvalidRequestError
from ._transport import Response, Sending, Transport

__all__ = ["HOOK_TIMEOUT", "EventHooks", "Observed", "RequestEvent", "ResponseEvent"]

logger = logging.getLogger("novita_video")

#: Seconds an async event hook may take (on the event loop's clock) before it is
#: cancelled: a slow exporter must not hold a request, nor a client's shutdown.
HOOK_TIMEOUT = 1.0

#: ``Client(event_hooks=...)``: lists of callables under ``"request"`` and ``"response"``.
EventHooks = Mapping[str, Sequence[Callable[[Any], Any]]]


@attrs.frozen
class RequestEvent:
    """A request about to leave, as ``event_hooks["request"]`` hooks receive it.

    ``number`` counts this client's requests (1, 2, ...) and pairs each response event
    with its request. ``path`` is the API path (``/v3/async/minimax-video-01``) or, for a
    clip ``download``, the link's path without its query (a signature). ``attempt`` is 1
    for a first try and counts up with each retry of the same request (for the poller:
    the failed checks of the task in a row, plus one). ``task_id`` is the task the
    request is about, when known (not yet for a submit). There is no header, no body,
    and never the key.
    """

    number: int
    method: Literal["GET", "POST"]
    path: str
    attempt: int = 1
    task_id: str | None = None
    download: bool = False


@attrs.frozen
class ResponseEvent:
    """How a request ended, as ``event_hooks["response"]`` hooks receive it.

    The request's own fields, then: ``status`` (``None``: no answer), ``elapsed``
    seconds from the request leaving to its end (the event loop's clock), ``task_id``
    (for a submit, the task its answer created), the server's ``request_id`` if it gave
    one, ``error`` (why there was no answer: the transport's
    :class:`~novita_video.APIConnectionError`, say) and ``cancelled`` (the caller
    stopped waiting; a submit's POST is never cancelled once it left).
    """

    number: int
    method: Literal["GET", "POST"]
    path: str
    attempt: int
    task_id: str | None
    download: bool
    status: int | None
    elapsed: float
    request_id: str | None = None
    error: Exception | None = None
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        """Whether the server answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


def check_event_hooks(
    hooks: EventHooks | None,
) -> tuple[tuple[Callable[[Any], Any], ...], tuple[Callable[[Any], Any], ...]]:
    """The request and response hooks, or :class:`InvalidRequestError` naming what is wrong."""
    if hooks is None:
        return (), ()
    if not isinstance(hooks, Mapping):
        raise InvalidRequestError(
            'event_hooks: must be a mapping such as {"request": [...], "response": [...]}',
            "event_hooks",
        )
    unknown = sorted(set(hooks) - {"request", "response"})
    if unknown:
        raise InvalidRequestError(
            f"event_hooks: unknown event {unknown[0]!r}; the events are 'request' and 'response'",
            "event_hooks",
        )
    found: dict[str, tuple[Callable[[Any], Any], ...]] = {}
    for name in ("request", "response"):
        listed = hooks.get(name, ())
        if callable(listed) or not isinstance(listed, Iterable):
            raise InvalidRequestError(
                f"event_hooks[{name!r}]: must be a list of callables", "event_hooks"
            )
        found[name] = tuple(listed)
        for hook in found[name]:
            if not callable(hook):
                raise InvalidRequestError(
                    f"event_hooks[{name!r}]: {hook!r} is not callable", "event_hooks"
                )
    return found["request"], found["response"]


def _hook_name(hook: Callable[[Any], Any]) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)


async def _call_hooks(hooks: Sequence[Callable[[Any], Any]], event: object) -> None:
    for hook in hooks:
        try:
            returned = hook(event)
            if inspect.isawaitable(returned):
                with anyio.move_on_after(HOOK_TIMEOUT) as bound:
                    await returned
                if bound.cancelled_caught:
                    logger.warning(
                        "event hook %s took more than %g s and was cancelled; the request went on",
                        _hook_name(hook),
                        HOOK_TIMEOUT,
                    )
        except Exception:
            # The user's hook: its failure is theirs to see, and harms nothing else.
            logger.warning(
                "event hook %s raised; ignored, the request went on",
                _hook_name(hook),
                exc_info=True,
            )


def _created_task(method: str, response: Response) -> str | None:
    """The task id a submit's 2xx answer names, read leniently (the submitter judges it)."""
    if method != "POST" or not 200 <= response.status < 300:
        return None
    try:
        task_id = json_module.loads(response.body).get("task_id")
    except Exception:  # any body at all (a bomb of nesting too): the submitter judges it
        return None
    return task_id if isinstance(task_id, str) else None


class Observed:
    """The client's transport, observed: see the module docstring. It is itself a
    :class:`~novita_video.Transport` (``attempt`` and ``task_id`` default to a first
    try about no task), so code that only knows the protocol goes through it too."""

    def __init__(
        self,
        transport: Transport,
        *,
        on_request: Sequence[Callable[[Any], Any]] = (),
        on_response: Sequence[Callable[[Any], Any]] = (),
    ) -> None:
        self.inner = transport
        self._on_request = tuple(on_request)
        self._on_response = tuple(on_response)
        self._numbers = itertools.count(1)

    def __repr__(self) -> str:
        return repr(self.inner)

    @property
    def reports_sending(self) -> bool:
        """Whether ``sending.mark_sent()`` is called as a POST leaves (the inner's word)."""
        return bool(getattr(self.inner, "reports_sending", False))

    async def open(self) -> None:
        """Open the inner transport."""
        await self.inner.open()

    async def close(self) -> None:
        """Close the inner transport."""
        await self.inner.close()

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        sending: Sending | None = None,
        attempt: int = 1,
        task_id: str | None = None,
    ) -> Response:
        """One API request through the inner transport, told to the hooks and the log."""
        number = next(self._numbers)
        if not self._watched():
            # Nobody listens: no event is built and no answer decoded for one (a poll is
            # the hot path, thousands a batch).
            return await self.inner.request(method, path, params=params, json=json, sending=sending)
        event = RequestEvent(number, method, path, attempt, task_id)
        return await self._observe(
            event,
            lambda: self.inner.request(method, path, params=params, json=json, sending=sending),
        )

    async def download(
        self, url: str, file: BinaryIO, *, attempt: int = 1, task_id: str | None = None
    ) -> Response:
        """One clip download through the inner transport (its link's query never shown)."""
        path = urlsplit(url).path or "/"
        event = RequestEvent(next(self._numbers), "GET", path, attempt, task_id, download=True)
        return await self._observe(event, lambda: self.inner.download(url, file))

    def _watched(self) -> bool:
        # Hooks are fixed for the client's life; NOVITA_LOG's level is read per request
        # (logging caches isEnabledFor, so this costs a dict lookup).
        return bool(self._on_request or self._on_response) or logger.isEnabledFor(logging.DEBUG)

    async def _observe(
        self, event: RequestEvent, send: Callable[[], Awaitable[Response]]
    ) -> Response:
        started: float | None = None
        try:
            if self._on_request:
                await _call_hooks(self._on_request, event)
            started = anyio.current_time()
            response = await send()
        except BaseException as error:
            # Told here, inside the except clause, whose name Python drops at its end:
            # a local holding the error would keep it, its traceback and every frame in
            # it alive in a cycle (the soak test counts what a run leaves behind).
            await self._ended(event, started, None, error)
            raise
        await self._ended(event, started, response, None)
        return response

    async def _ended(
        self,
        event: RequestEvent,
        started: float | None,
        response: Response | None,
        failure: BaseException | None,
    ) -> None:
        elapsed = 0.0 if started is None else anyio.current_time() - started
        cancelled = failure is not None and not isinstance(failure, Exception)
        ended = ResponseEvent(
            event.number,
            event.method,
            event.path,
            event.attempt,
            (response and _created_task(event.method, response)) or event.task_id,
            event.download,
            None if response is None else response.status,
            elapsed,
            None if response is None else response.request_id,
            failure if isinstance(failure, Exception) else None,
            cancelled,
        )
        _log(ended)
        if self._on_response:
            # A cancelled request still closes what its request hooks opened.
            with anyio.CancelScope(shield=cancelled):
                await _call_hooks(self._on_response, ended)


def _log(event: ResponseEvent) -> None:
    if not logger.isEnabledFor(logging.DEBUG):
        return
    about = [f"attempt {event.attempt}"]
    if event.task_id is not None:
        about.append(f"task {event.task_id}")
    if event.download:
        about.append("clip download")
    milliseconds = event.elapsed * 1000
    if event.status is not None:
        outcome = f"{event.status} in {milliseconds:.0f} ms"
    elif event.cancelled:
        outcome = f"cancelled after {milliseconds:.0f} ms"
    else:
        outcome = (
            f"no answer after {milliseconds:.0f} ms ({type(event.error).__name__}: {event.error})"
        )
    logger.debug("%s %s -> %s (%s)", event.method, event.path, outcome, ", ".join(about))
