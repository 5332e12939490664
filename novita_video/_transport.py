"""The transport seam: what the client needs of the network, and what crosses it.

:class:`Transport` is the seam between the client's logic (submitting, polling,
downloading) and the network, public so that a test double, a recording proxy or a
transport of your own is written against public names alone (as httpx's
``BaseTransport`` and ``MockTransport``). The real one is the client's default (the only
user of aiohttp, ``_http``); :class:`MockTransport` answers from a plain function;
``novita_video.testing.MemoryTransport`` answers from the simulator without a socket.

What crosses it: a :class:`Response` (any status) back, a :class:`TransportRequest` to a
:class:`MockTransport`'s handler, and, with each POST, a :class:`Sending` on which a
transport says the moment the request left (the point after which a task may exist,
and be billed). A transport keeps the API key in the requests it sends to the API and
nowhere else.
"""

from __future__ import annotations

import inspect
import json as json_module
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

import attrs

from ._errors import APIConnectionError, APIStatusError, status_error_class
from ._retry import parse_retry_after
from ._wire import parse_error

__all__ = ["MockTransport", "Response", "Sending", "Transport", "TransportRequest"]

_REQUEST_ID_HEADERS = ("x-request-id", "x-trace-id", "request-id")


class LowerHeaders(dict[str, str]):
    """Headers whose names a transport has lower-cased already (the real one does, for
    every answer): :class:`Response` keeps them as they are instead of copying them."""


def _lower_keys(headers: Mapping[str, str] | None) -> Mapping[str, str]:
    # Lower-cased names make header lookups case-blind, whoever built the answer.
    if type(headers) is LowerHeaders:
        return headers
    return {} if headers is None else {key.lower(): value for key, value in headers.items()}


@attrs.frozen
class Response:
    """An answer of any status, as a transport hands it back: detached from aiohttp.

    ``headers`` are kept with lower-case names (whatever case they are given in). For
    an API request ``body`` is the whole answer; for a download it is empty (the clip
    went to the file).

    >>> Response(200, b'{"task_id": "t-1"}').status
    200
    >>> Response.of_json(429, {"code": 429}, headers={"Retry-After": "2"})
    Response(status=429, body=b'{"code": 429}', headers={'retry-after': '2'})
    """

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_lower_keys)

    @classmethod
    def of_json(
        cls, status: int, data: Any, *, headers: Mapping[str, str] | None = None
    ) -> Response:
        """An answer whose body is ``data`` as JSON (what a test double usually needs)."""
        return cls(status, json_module.dumps(data).encode(), headers)

    @property
    def request_id(self) -> str | None:
        """The server's id of this request (``X-Request-Id`` or the like), if it gave one."""
        for name in _REQUEST_ID_HEADERS:
            if name in self.headers:
                return self.headers[name]
        return None

    def error(self, what: str, *, now_wall: float) -> APIStatusError:
        """The :class:`APIStatusError` subclass the client raises for this (non-2xx)
        answer to ``what``; ``now_wall`` (Unix time) dates a ``Retry-After`` date."""
        reason, message = parse_error(self.body)
        cls = status_error_class(self.status, reason)
        shown = f"{reason}: {message}" if reason else message or "no details"
        return cls(
            f"{what} failed with HTTP {self.status} ({shown})",
            self.status,
            reason,
            self.request_id,
            parse_retry_after(self.headers.get("retry-after"), now_wall=now_wall),
            message,
        )


@attrs.define
class Sending:
    """One POST's point of no return: a transport calls :meth:`mark_sent` as it leaves.

    Before that moment a failure or a cancellation proves the server saw nothing (the
    submit is cancellable, and a failure is retried); after it, the server may have
    created, and billed, a task. The client passes one with every POST and reads
    ``sent`` afterwards; ``on_sent`` is its own business (it shields the submit there,
    so that a cancellation cannot cut short a POST that may be creating a task).
    A transport only calls :meth:`mark_sent`, once, as the request's first byte leaves.
    """

    on_sent: Callable[[], None] | None = None
    sent: bool = False

    def mark_sent(self) -> None:
        """Say that the request has left: from now on the server may act on it."""
        self.sent = True
        if self.on_sent is not None:
            self.on_sent()


@runtime_checkable
class Transport(Protocol):
    """What ``Client(transport=...)`` needs: sends API requests (with the key) and
    downloads clips (without it).

    Failures are the SDK's own errors: :class:`~novita_video.APIConnectionError` (whose
    ``maybe_sent`` says whether the server may have seen the request),
    :class:`~novita_video.APITimeoutError`, :class:`~novita_video.ProtocolError`; any
    status comes back as a :class:`Response`. Anything else a transport raises is taken
    as its bug: a submit whose request may have left then ends in doubt (never resent),
    a check of a task ends that task's waits with a :class:`~novita_video.ProtocolError`.

    **Saying when a POST leaves.** A transport that sets ``reports_sending = True``
    promises to call ``sending.mark_sent()`` the moment a POST leaves, and to raise
    ``APIConnectionError(..., maybe_sent=False)`` only for a request that never left: a
    submit is then cancellable until it leaves, and a connection that could not be
    opened is retried. Without it (the default), each POST is taken as sent the moment
    the transport is called: shielded from cancellation, and in doubt unless an answer
    comes back or the transport raises ``maybe_sent=False``.

    The client calls :meth:`open` once as it is entered and :meth:`close` as it is
    left, and the methods concurrently in between.
    """

    async def open(self) -> None:
        """Get ready to send (the client's ``async with`` calls it once)."""
        ...

    async def close(self) -> None:
        """Release everything :meth:`open` took (safe to call twice)."""
        ...

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        sending: Sending | None = None,
    ) -> Response:
        """Send one API request to ``path`` (under the API's base URL, which is the
        transport's business) with the query ``params`` and the JSON body ``json``; a
        POST passes a :class:`Sending`, whose ``mark_sent`` a transport that reports
        sending calls as the request leaves."""
        ...

    async def download(self, url: str, file: BinaryIO) -> Response:
        """Stream a clip at ``url`` (a presigned storage link: no key is sent to it)
        into ``file``; its status and headers, with an empty body. Nothing is written
        for a non-2xx answer."""
        ...


@attrs.frozen
class TransportRequest:
    """One request as a :class:`MockTransport`'s handler sees it.

    ``url`` is ``None`` for an API request (``path`` is under the API's base URL, and
    ``params`` its query) and the whole link for a clip download (``path`` and
    ``params`` are then that link's).
    """

    method: Literal["GET", "POST"]
    path: str
    params: Mapping[str, str] = attrs.field(factory=dict)
    json: Any = None
    url: str | None = None

    @property
    def is_download(self) -> bool:
        """Whether this is a clip download from storage (not an API request)."""
        return self.url is not None


#: What a :class:`MockTransport` calls: a plain or an async function.
Handler = Callable[[TransportRequest], "Response | Awaitable[Response]"]


class MockTransport:
    """A transport that answers every request with ``handler(request)``: a test double.

    ``handler`` takes a :class:`TransportRequest` and returns a :class:`Response`; it may
    be a plain function or an async one. It plays the server, and what it raises decides
    what the client believes, as a real connection would. Raise
    ``APIConnectionError(..., maybe_sent=False)`` to play a connection that could not be
    opened (the client retries it, nothing was created), ``maybe_sent=True`` for one
    dropped after the request left (a submit then ends in doubt, never resent). A POST
    is reported sent (``Sending.mark_sent``) once the handler has answered, or raised
    anything but a connection that never opened; a cancellation inside an async handler
    leaves that submit in doubt. A clip download writes the body of a 2xx answer to the
    file.

    >>> import novita_video
    >>> def handler(request: novita_video.TransportRequest) -> novita_video.Response:
    ...     if request.method == "POST":
    ...         return novita_video.Response.of_json(200, {"task_id": "t-1"})
    ...     return novita_video.Response.of_json(404, {"reason": "TASK_NOT_FOUND"})
    >>> client = novita_video.Client(transport=novita_video.MockTransport(handler))

    ``requests`` lists every request it was sent, in order.
    """

    #: It says when a POST was sent, after its handler (see the class docstring).
    reports_sending = True

    def __init__(self, handler: Handler) -> None:
        if not callable(handler):
            raise TypeError(f"handler: must be callable, not {handler!r}")
        self._handler = handler
        #: Every request sent so far, in order.
        self.requests: list[TransportRequest] = []

    def __repr__(self) -> str:
        return f"MockTransport({getattr(self._handler, '__name__', self._handler)!r})"

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to release."""

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        sending: Sending | None = None,
    ) -> Response:
        """The handler's answer to one API request."""
        try:
            response = await self._answer(TransportRequest(method, path, dict(params or {}), json))
        except APIConnectionError as error:
            if error.maybe_sent and sending is not None:
                sending.mark_sent()
            raise
        except BaseException:
            if sending is not None:
                sending.mark_sent()  # the handler (the server) may have acted
            raise
        if sending is not None:
            sending.mark_sent()
        return response

    async def download(self, url: str, file: BinaryIO) -> Response:
        """The handler's answer to a clip download; a 2xx body goes into ``file``."""
        parts = urlsplit(url)
        request = TransportRequest("GET", parts.path, dict(parse_qsl(parts.query)), url=url)
        response = await self._answer(request)
        if 200 <= response.status < 300:
            file.write(response.body)
        return Response(response.status, b"", response.headers)

    async def _answer(self, request: TransportRequest) -> Response:
        self.requests.append(request)
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if not isinstance(answer, Response):
            raise TypeError(
                f"MockTransport: the handler must return a novita_video.Response, not {answer!r}"
            )
        return answer
