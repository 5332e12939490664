"""What the client needs of a transport, and what crosses it: detached from aiohttp.

:class:`Transport` is the seam between the client's logic (submitting, polling,
downloading) and the network. :class:`~novita_video._http.HTTPTransport` is the real
one, the only user of aiohttp; ``novita_video.testing.MemoryTransport`` answers from
the simulator's own handlers without a socket, so that the poller and batches can be
tested on virtual time. A transport keeps the API key in the requests it sends to the
API and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

import attrs

from ._errors import APIStatusError, status_error_class
from ._retry import parse_retry_after
from ._wire import parse_error

__all__ = ["Response", "Sending", "Transport"]

_REQUEST_ID_HEADERS = ("x-request-id", "x-trace-id", "request-id")


@attrs.frozen
class Response:
    """An answer of any status: what the caller needs of it, detached from aiohttp."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    @property
    def request_id(self) -> str | None:
        for name in _REQUEST_ID_HEADERS:
            if name in self.headers:
                return self.headers[name]
        return None

    def error(self, what: str, *, now_wall: float) -> APIStatusError:
        """The :class:`APIStatusError` subclass for this (non-2xx) answer."""
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
    """Tracks one request's point of no return: its headers leaving for the server.

    Before that, a failure or a cancellation proves the server saw nothing; after it,
    the server may act on the request. ``on_sent`` is called at that moment, inside
    the request (the client shields a submit there, so that a cancellation cannot cut
    short a POST that may already be creating, and billing, a task).
    """

    on_sent: Callable[[], None] | None = None
    sent: bool = False

    def mark_sent(self) -> None:
        self.sent = True
        if self.on_sent is not None:
            self.on_sent()


@runtime_checkable
class Transport(Protocol):
    """Sends API requests (with the key) and downloads clips (without it).

    Errors are the SDK's own: :class:`~novita_video.APIConnectionError` (whose
    ``maybe_sent`` says whether the server may have seen the request),
    :class:`~novita_video.APITimeoutError`, :class:`~novita_video.ProtocolError`; any
    status comes back as a :class:`Response`.

    A transport that sets ``reports_sending = True`` promises to call
    ``sending.mark_sent()`` the moment a POST leaves, and to raise
    ``APIConnectionError(maybe_sent=False)`` only for a request that never left: a
    submit is then cancellable until it leaves. With one that does not (the default),
    each POST is taken as sent the moment it is called: shielded, and in doubt until an
    answer comes back.
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
        """Send one API request to ``path`` (under the base URL); a POST passes a
        :class:`Sending`, whose ``mark_sent`` the transport calls as the request leaves."""
        ...

    async def download(self, url: str, file: BinaryIO) -> Response:
        """Stream a clip at ``url`` into ``file`` (no key sent); its status and headers."""
        ...
