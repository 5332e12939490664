"""The only module that talks to aiohttp.

It turns one request into one aiohttp call, maps every aiohttp and socket exception
to the SDK's own (:class:`APIConnectionError`, :class:`APITimeoutError`), and keeps
the API key in the ``Authorization`` header of requests to the API base URL, nowhere
else: not in the session's default headers (so a video download cannot carry it), not
in a log line, not in an exception.

Nothing it reads can hang or grow without bound: every API request has a total
deadline (``deadline`` seconds of real time, however slowly the answer drips in) and
every body a size cap, counted after decoding (it decodes gzip and deflate itself, so
a small compressed bomb stops at the cap); clip downloads have their own deadline and
cap. The key is redacted from every body and header it hands on, so a proxy echoing
the Authorization header cannot put it into an exception, and no aiohttp exception
(which keeps the request's headers) stays chained to the SDK's own.

Two connection pools: polls (GET) keep connections alive as usual, while submits (POST)
reuse a connection only within :data:`SUBMIT_KEEPALIVE` seconds of its last use. A
server that closes an idle connection just as we reuse it makes a request fail in a way
indistinguishable from one that reached the server; servers keep idle connections open
for 5 seconds at the very least (Node's default; nginx and cloud balancers 60 s and
more), so within 3 seconds that race cannot happen, and a POST that fails to connect
proves it was never sent. Bursts of submits still share connections.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
import socket
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, BinaryIO, Literal
from urllib.parse import urlsplit

import aiohttp
import anyio

from ._errors import (
    APIConnectionError,
    APITimeoutError,
    APIUnreachableError,
    ClientClosedError,
    DownloadError,
    LocalFileError,
    ProtocolError,
)
from ._settings import HTTPSettings
from ._transport import LowerHeaders, Response, Sending

#: Seconds a submit connection may sit idle and still be reused (see the docstring).
SUBMIT_KEEPALIVE = 3.0
#: What stands in a body or header where the API key was.
REDACTED = "[redacted]"
#: Connections in a row that may fail, before the API has ever answered, until a client
#: says it cannot reach the API (a host that does not resolve says so at once).
UNREACHABLE_AFTER = 3
#: Resolver answers that say the name does not exist (not "try again later").
_NO_SUCH_NAME = frozenset(
    code
    for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)
#: Query parameters of presigned links that are credentials (S3, GCS, Azure, ours).
_SIGNATURE = re.compile(
    r"((?:signature|x-amz-signature|x-goog-signature|sig|token|x-amz-security-token)=)[^&\s'\"]+",
    re.IGNORECASE,
)
_CHUNK = 1 << 16
#: Bytes of a storage error's body read at most (and thrown away): a usual XML error
#: document is a few hundred, and read whole its connection can be reused; a broken host
#: may send 200 MB, so past this the connection is closed instead.
MAX_ERROR_BODY = 1 << 16


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: The POST being sent by this task, for :class:`_SubmitRequest` (a context variable:
#: aiohttp builds the request object itself, from the class it is given).
_SENDING: contextvars.ContextVar[Sending | None] = contextvars.ContextVar(
    "novita_video_sending", default=None
)


class _SubmitRequest(aiohttp.ClientRequest):
    """aiohttp's request, telling its :class:`Sending` as its headers start to go out.

    ``send`` runs once the connection is open, and begins by writing the request line
    and headers: the moment aiohttp's ``on_request_headers_sent`` signal marks too. A
    trace config would say the same, but aiohttp then builds and sends some ten trace
    events for every request, 10 to 17 us of CPU a submit."""

    async def send(self, conn: Any) -> aiohttp.ClientResponse:
        sending = _SENDING.get()
        if sending is not None:
            sending.mark_sent()
        return await super().send(conn)


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


def _past_deadline(err: BaseException) -> bool:
    """Whether ``err`` is aiohttp's total deadline passing once the connection was made:
    a bare :class:`TimeoutError` (a read's own timeout is a ``ServerTimeoutError``, a
    connection's a ``ConnectionTimeoutError``, the system's an ``OSError`` with an errno)."""
    return type(err) is TimeoutError and err.errno is None


def _detail(err: BaseException) -> str:
    if isinstance(err, aiohttp.ClientConnectorError):
        return str(err.os_error)
    return type(err).__name__


class TransportError(Exception):
    """What an aiohttp or socket error said, detached from it: the ``__cause__`` of the
    SDK's connection errors. aiohttp's own exceptions keep the request (and so its
    Authorization header); this keeps only their type and redacted message."""


def _decoder(encoding: str, what: str) -> zlib._Decompress | None:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise ProtocolError(f"{what}: the answer is encoded as {encoding!r}, which is not supported")


def _inflate(decoder: zlib._Decompress, data: bytes, room: int) -> list[bytes]:
    """``data`` decoded, never more than ``room`` bytes in all (at least one byte more
    is asked for, to tell "exactly full" from "over"): a bomb stops here, not in memory."""
    pieces: list[bytes] = []
    while data and room > 0:
        piece = decoder.decompress(data, room)
        pieces.append(piece)
        room -= len(piece)
        data = decoder.unconsumed_tail
    return pieces


async def _decoded(
    chunks: AsyncIterator[bytes], encoding: str, limit: int, what: str
) -> AsyncIterator[bytes]:
    """The body's bytes decoded, raising :class:`ProtocolError` past ``limit`` of them."""
    decoder = _decoder(encoding, what)
    total = 0
    async for chunk in chunks:
        try:
            pieces = [chunk] if decoder is None else _inflate(decoder, chunk, limit + 1 - total)
        except zlib.error as err:
            raise ProtocolError(f"{what}: the answer does not decode as {encoding}") from err
        for piece in pieces:
            total += len(piece)
            if total > limit:
                raise ProtocolError(f"{what}: the answer is more than {limit} bytes")
            yield piece
    if decoder is not None:
        rest = decoder.flush(limit + 1 - total)  # what the decoder still held back
        if total + len(rest) > limit:
            raise ProtocolError(f"{what}: the answer is more than {limit} bytes")
        if rest:
            yield rest


async def _read_capped(
    content: aiohttp.StreamReader, encoding: str, limit: int, what: str
) -> bytes:
    """An API answer's whole body, decoded, raising :class:`ProtocolError` past ``limit``
    bytes: :func:`_decoded`'s rule, read in a plain loop (an API answer is one chunk or
    two, and this runs for every poll)."""
    decoder = _decoder(encoding, what) if encoding else None
    pieces: list[bytes] = []
    total = 0
    while chunk := await content.read(_CHUNK):
        if decoder is not None:
            try:
                chunk = b"".join(_inflate(decoder, chunk, limit + 1 - total))
            except zlib.error as err:
                raise ProtocolError(f"{what}: the answer does not decode as {encoding}") from err
        total += len(chunk)
        if total > limit:
            raise ProtocolError(f"{what}: the answer is more than {limit} bytes")
        pieces.append(chunk)
    if decoder is not None:
        rest = decoder.flush(limit + 1 - total)  # what the decoder still held back
        total += len(rest)
        if total > limit:
            raise ProtocolError(f"{what}: the answer is more than {limit} bytes")
        pieces.append(rest)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class HTTPTransport:
    """Sends requests to the Novita API (the key in each one's Authorization header) and
    downloads clips from storage (with no key at all)."""

    #: It calls ``sending.mark_sent()`` as a POST's headers leave (see ``Transport``).
    reports_sending = True

    def __init__(
        self, *, base_url: str, api_key: str, settings: HTTPSettings, user_agent: str
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._auth = f"Bearer {api_key}"
        # The key as a whole token: a short test key ("sk") must not mangle "task".
        self._secret = api_key.encode()
        self._secret_text = api_key
        self._secret_token = re.compile(
            rb"(?<![A-Za-z0-9_\-])" + re.escape(self._secret) + rb"(?![A-Za-z0-9_\-])"
        )
        # The total deadline of an API request is aiohttp's own: one timer from the wait
        # for a pooled connection to the body's last byte (its reads time out too), at
        # less than half the CPU of a cancel scope around every request (5 us against 13;
        # benchmarks/cpu_profile.py).
        # Clip downloads have a deadline of their own, and no total here.
        self._timeout = aiohttp.ClientTimeout(
            total=settings.total, sock_connect=settings.connect_timeout, sock_read=settings.timeout
        )
        self._download_reads = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.timeout
        )
        self._deadline = settings.total
        self._max_response_bytes = settings.max_response_bytes
        self._download_timeout = settings.download_timeout
        self._max_clip_bytes = settings.max_clip_bytes
        self._max_connections = settings.max_connections
        # The SDK decodes bodies itself (aiohttp would decode a bomb whole): it asks for
        # what it can decode under a cap.
        self._headers = {
            "User-Agent": user_agent,
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
        }
        self._pooled: aiohttp.ClientSession | None = None
        self._submits: aiohttp.ClientSession | None = None
        # Until the API answers once, connections that fail count towards giving up.
        self._host = urlsplit(self._base_url).hostname or self._base_url
        self.reached = False
        self._unreached = 0

    def __repr__(self) -> str:
        return f"HTTPTransport(base_url={self._base_url!r})"

    def redact(self, data: bytes) -> bytes:
        """``data`` with the API key (wherever it stands as a whole token) replaced by
        :data:`REDACTED`."""
        if self._secret not in data:
            return data
        return self._secret_token.sub(REDACTED.encode(), data)

    def _redact_text(self, text: str) -> str:
        return self.redact(text.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )

    def _failure(
        self, err: BaseException, mapped: APIConnectionError, *, url: str = ""
    ) -> APIConnectionError:
        # Chained to a detached copy: aiohttp's exception keeps the request's headers, and
        # its message may quote a storage link whose query string is a signature.
        text = self._redact_text(f"{type(err).__name__}: {err}")
        query = urlsplit(url).query
        if query:
            text = text.replace(query, REDACTED)
        mapped.__cause__ = TransportError(_SIGNATURE.sub(rf"\1{REDACTED}", text))
        return mapped

    async def open(self) -> None:
        self._pooled = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            timeout=self._timeout,
            headers=self._headers,
            auto_decompress=False,
        )
        self._submits = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=SUBMIT_KEEPALIVE
            ),
            timeout=self._timeout,
            headers=self._headers,
            request_class=_SubmitRequest,
            auto_decompress=False,
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
        reached the server) or :class:`APITimeoutError` when there is no whole answer
        within the total deadline, and :class:`ProtocolError` for an answer over the
        size cap. A POST may pass a :class:`Sending` to learn when it left, and to be
        told. The key is redacted from the body and headers of the answer.
        """
        session = self._session(submit=method == "POST")
        what = f"{method} {path}"
        failure: APIConnectionError | None = None
        response: Response | None = None
        told = _SENDING.set(sending) if sending is not None else None
        try:
            async with session.request(
                method,
                self._base_url + path,
                params=params,
                json=json,
                headers={"Authorization": self._auth},
                # The API never redirects; following one could carry the key elsewhere.
                allow_redirects=False,
            ) as answer:
                body = await _read_capped(
                    answer.content,
                    answer.headers.get("Content-Encoding", ""),
                    self._max_response_bytes,
                    what,
                )
                response = self._response(answer, body)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            if _past_deadline(err):
                maybe_sent = sending is None or sending.sent
                failure = APITimeoutError(
                    f"{what}: no whole answer within the total deadline of {self._deadline:g} s",
                    maybe_sent,
                )
            else:
                failure = self._unreachable(err, self._failure(err, _map_error(err, what, sending)))
        finally:
            if told is not None:
                _SENDING.reset(told)
        if failure is not None:
            # Raised here, outside the except block, so that no aiohttp exception is its
            # __context__ either. (The client logs each request, above the transport.)
            raise failure
        assert response is not None
        return response

    def _unreachable(self, err: BaseException, failure: APIConnectionError) -> APIConnectionError:
        """``failure``, or :class:`APIUnreachableError` if the API has never answered and
        this failure proves it cannot: a host that does not resolve, or the
        :data:`UNREACHABLE_AFTER`-th connection in a row that could not be made."""
        if self.reached or failure.maybe_sent:
            return failure
        os_error = err.os_error if isinstance(err, aiohttp.ClientConnectorError) else err
        if isinstance(os_error, socket.gaierror) and os_error.errno in _NO_SUCH_NAME:
            cause = f"the name {self._host} does not resolve"
        else:  # refused, timed out, or a resolver that failed for now (EAI_AGAIN): count
            self._unreached += 1
            if self._unreached < UNREACHABLE_AFTER:
                return failure
            if isinstance(failure, APITimeoutError):
                cause = "connecting timed out"
            elif isinstance(os_error, ConnectionRefusedError):
                cause = "the connection was refused"
            else:
                cause = _detail(err)
        unreachable = APIUnreachableError(
            f"cannot reach the Novita API at {self._base_url}: {cause}; nothing was sent",
            self._host,
        )
        unreachable.__cause__ = failure.__cause__
        return unreachable

    def _response(self, answer: aiohttp.ClientResponse, body: bytes) -> Response:
        self.reached = True
        # Lower-cased keys make header lookups case-blind; a value is redacted only where
        # the key is in it at all (a plain substring test, before any regex).
        secret = self._secret_text
        headers = LowerHeaders(
            (key.lower(), self._redact_text(value) if secret in value else value)
            for key, value in answer.headers.items()
        )
        return Response(answer.status, self.redact(body), headers)

    async def download(self, url: str, file: BinaryIO) -> Response:
        """Stream ``url`` into ``file``; the answer's status and headers, with an empty body.

        No Authorization header is sent: the URL is presigned storage, not the API, and a
        redirect cannot carry a key that this request never had. A non-2xx answer writes
        nothing, and no more than :data:`MAX_ERROR_BODY` bytes of its body are read. A body
        shorter than its Content-Length raises :class:`APIConnectionError`, one that does
        not end within ``download_timeout`` :class:`APITimeoutError`, one over
        ``max_clip_bytes`` (decoded) :class:`DownloadError`; a failed write to ``file`` (a
        full disk) :class:`LocalFileError`, which no retry can mend.
        """
        session = self._session(submit=False)
        what = f"GET {urlsplit(url).path}"  # never the query string: it is a signature
        received = 0
        failure: APIConnectionError | None = None
        response: Response | None = None
        with anyio.move_on_after(self._download_timeout) as deadline:
            try:
                async with session.get(
                    url, headers={"Accept": "*/*"}, timeout=self._download_reads
                ) as answer:
                    headers = {key.lower(): value for key, value in answer.headers.items()}
                    if 200 <= answer.status < 300:

                        async def counted() -> AsyncIterator[bytes]:
                            nonlocal received
                            async for chunk in answer.content.iter_chunked(_CHUNK):
                                received += len(chunk)
                                yield chunk

                        encoding = headers.get("content-encoding", "")
                        try:
                            async for piece in _decoded(
                                counted(), encoding, self._max_clip_bytes, what
                            ):
                                _write(file, piece, what)
                        except ProtocolError as err:
                            raise DownloadError(f"{err} (the clip cap)", answer.status) from None
                    else:
                        await _skim(answer)
                    response = Response(answer.status, b"", headers)
            except LocalFileError:
                raise  # this machine's fault, not the network's
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                failure = self._failure(err, _map_error(err, what), url=url)
        if deadline.cancelled_caught:
            failure = APITimeoutError(
                f"{what}: the clip did not arrive within {self._download_timeout:g} s", True
            )
        if failure is not None:
            raise failure
        assert response is not None
        expected = response.headers.get("content-length")
        if 200 <= response.status < 300 and expected is not None and expected != str(received):
            raise APIConnectionError(f"{what}: got {received} of {expected} bytes", True)
        return response


async def _skim(answer: aiohttp.ClientResponse) -> None:
    """Read and drop an error answer's body, :data:`MAX_ERROR_BODY` bytes at most: a
    short one whole (its connection goes back to the pool), a longer one not at all
    past that (its connection is closed: nothing more is read of it)."""
    left = MAX_ERROR_BODY
    while left > 0:
        chunk = await answer.content.read(left)
        if not chunk:
            return
        left -= len(chunk)
    if not answer.content.at_eof():
        answer.close()


def _write(file: BinaryIO, data: bytes, what: str) -> None:
    try:
        file.write(data)
    except OSError as err:
        raise LocalFileError(f"{what}: could not write the clip ({err.strerror or err})") from err
