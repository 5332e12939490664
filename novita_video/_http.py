"""The only module that talks to aiohttp.

It turns one request into one aiohttp call, maps every aiohttp and socket exception
to the SDK's own (:class:`APIConnectionError`, :class:`APITimeoutError`), and keeps
the API key in the ``Authorization`` header of requests to the API base URL, nowhere
else: not in the session's default headers (so a video download cannot carry it), not
in a log line, not in an exception.

Two connection pools: polls (GET) keep connections alive as usual, while submits (POST)
reuse a connection only within :data:`SUBMIT_KEEPALIVE` seconds of its last use. A
server that closes an idle connection just as we reuse it makes a request fail in a way
indistinguishable from one that reached the server; servers keep idle connections open
for 5 seconds at the very least (Node's default; nginx and cloud balancers 60 s and
more), so within 3 seconds that race cannot happen, and a POST that fails to connect
proves it was never sent. Bursts of submits still share connections.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any, BinaryIO, Literal
from urllib.parse import urlsplit

import aiohttp
import attrs

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    status_error_class,
)
from ._retry import parse_retry_after
from ._wire import parse_error

logger = logging.getLogger("novita_video")

#: Seconds a submit connection may sit idle and still be reused (see the docstring).
SUBMIT_KEEPALIVE = 3.0

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
        )


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


async def _headers_sent(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    sending = context.trace_request_ctx
    if isinstance(sending, Sending):
        sending.mark_sent()


def _trace_sending() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_request_headers_sent.append(_headers_sent)
    return config


def _map_error(err: BaseException, what: str, sending: Sending | None = None) -> APIConnectionError:
    if sending is not None and not sending.sent:
        # Whatever went wrong, it went wrong before the request left: nothing to fear.
        if isinstance(err, aiohttp.ConnectionTimeoutError):
            return APITimeoutError(f"{what}: timed out connecting to the server", False)
        return APIConnectionError(f"{what}: could not send the request ({_detail(err)})", False)
    # Order matters: aiohttp's connect timeout is also a ServerTimeoutError, and its
    # connector errors are also OSErrors.
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"{what}: timed out connecting to the server", False)
    if isinstance(err, aiohttp.ClientConnectorError):
        return APIConnectionError(
            f"{what}: could not connect to the server ({err.os_error})", False
        )
    if isinstance(err, TimeoutError | aiohttp.ServerTimeoutError):
        return APITimeoutError(f"{what}: no answer in time", True)
    return APIConnectionError(f"{what}: the connection failed ({_detail(err)})", True)


def _detail(err: BaseException) -> str:
    if isinstance(err, aiohttp.ClientConnectorError):
        return str(err.os_error)
    return type(err).__name__


class HTTPTransport:
    """Sends requests to the Novita API (the key in each one's Authorization header) and
    downloads clips from storage (with no key at all)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float,
        connect_timeout: float,
        max_connections: int,
        user_agent: str,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._auth = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=timeout
        )
        self._max_connections = max_connections
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._pooled: aiohttp.ClientSession | None = None
        self._submits: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HTTPTransport(base_url={self._base_url!r})"

    async def open(self) -> None:
        self._pooled = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            timeout=self._timeout,
            headers=self._headers,
        )
        self._submits = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=SUBMIT_KEEPALIVE
            ),
            timeout=self._timeout,
            headers=self._headers,
            trace_configs=[_trace_sending()],
        )

    async def close(self) -> None:
        sessions, self._pooled, self._submits = (self._pooled, self._submits), None, None
        for session in sessions:
            if session is not None:
                await session.close()

    def _session(self, submit: bool) -> aiohttp.ClientSession:
        session = self._submits if submit else self._pooled
        if session is None:
            raise ClientClosedError("the client is not open: use 'async with Client() as client:'")
        return session

    async def request(
        self,
        method: Literal["GET", "POST"],
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        sending: Sending | None = None,
    ) -> Response:
        """Send one API request; any status comes back as a :class:`Response`.

        Raises :class:`APIConnectionError` (``maybe_sent`` says whether it may have
        reached the server) or :class:`APITimeoutError` when there is no answer. A POST
        may pass a :class:`Sending` to learn when it left, and to be told.
        """
        session = self._session(submit=method == "POST")
        what = f"{method} {path}"
        started = time.perf_counter()
        try:
            async with session.request(
                method,
                self._base_url + path,
                params=params,
                json=json,
                headers={"Authorization": self._auth},
                # The API never redirects; following one could carry the key elsewhere.
                allow_redirects=False,
                trace_request_ctx=sending,
            ) as answer:
                body = await answer.read()
                # Lower-cased keys make header lookups case-blind.
                headers = {key.lower(): value for key, value in answer.headers.items()}
                response = Response(answer.status, body, headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            mapped = _map_error(err, what, sending)
            logger.debug("%s -> no answer: %s", what, mapped)
            raise mapped from err
        logger.debug(
            "%s -> %d in %.0f ms", what, response.status, (time.perf_counter() - started) * 1e3
        )
        return response

    async def download(self, url: str, file: BinaryIO) -> Response:
        """Stream ``url`` into ``file``; the answer's status and headers, with an empty body.

        No Authorization header is sent: the URL is presigned storage, not the API, and a
        redirect cannot carry a key that this request never had. A non-2xx answer writes
        nothing. A body shorter than its Content-Length raises :class:`APIConnectionError`.
        """
        session = self._session(submit=False)
        what = f"GET {urlsplit(url).path}"  # never the query string: it is a signature
        written = 0
        try:
            async with session.get(url, headers={"Accept": "*/*"}) as answer:
                headers = {key.lower(): value for key, value in answer.headers.items()}
                if 200 <= answer.status < 300:
                    async for chunk in answer.content.iter_chunked(1 << 16):
                        file.write(chunk)
                        written += len(chunk)
                else:
                    await answer.read()
                response = Response(answer.status, b"", headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise _map_error(err, what) from err
        expected = response.headers.get("content-length")
        if 200 <= response.status < 300 and expected is not None and expected != str(written):
            raise APIConnectionError(f"{what}: got {written} of {expected} bytes", True)
        logger.debug("%s -> %d, %d bytes", what, response.status, written)
        return response
