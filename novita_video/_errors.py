"""Every exception the SDK raises, and which of them doom a batch.

The tree::

    NovitaError
    ├── UsageError (RuntimeError)             the library was misused
    │   └── ClientClosedError                 the client is not open (never entered, or closed)
    ├── InvalidRequestError (ValueError)      bad input or settings, found before anything is sent
    │   └── MissingAPIKeyError                no key given and NOVITA_API_KEY unset or blank
    ├── APIConnectionError                    no answer: the connection failed or dropped
    │   ├── APITimeoutError                   no answer in time
    │   └── APIUnreachableError               the API was never reached (dooms a batch)
    ├── SubmissionUnknownError                a POST may have created a task, but we cannot know
    ├── ProtocolError                         an answer that is not the documented shape
    ├── APIStatusError                        the server answered no (status, reason, message)
    │   ├── BadRequestError                   400: INVALID_REQUEST_BODY, ILLEGAL_PROMPT, ...
    │   │   └── InsufficientBalanceError      400 BILLING_BALANCE_NOT_ENOUGH (dooms a batch)
    │   ├── AuthenticationError               401, 403 INVALID_API_KEY, ... (dooms a batch)
    │   ├── PermissionDeniedError             403 API_NOT_ALLOWED, FEATURE_NOT_ALLOWED, ...
    │   ├── NotFoundError                     404 TASK_NOT_FOUND, API_NOT_FOUND
    │   ├── RateLimitError                    429 RATE_LIMIT_EXCEEDED (carries retry_after)
    │   └── ServerError                       5xx
    ├── TaskFailedError                       a task ended without a clip (FAILED, CANCELLED)
    ├── TaskTimeoutError (TimeoutError)       a task was not final by its deadline
    ├── DownloadError                         storage refused a clip (after retries, one renewal)
    ├── LocalFileError (OSError)              a clip could not be written here (a full disk)
    ├── SpendCapReachedError                  a batch's spend cap stopped its submits (dooms it)
    ├── BatchAbortedError                     a prompt never sent: the batch was stopped first
    └── BackPressureError                     a submit's turn is further off than its max_wait

``TaskFailedError`` and ``TaskTimeoutError`` carry a :class:`TaskResult`, so they live
beside it in ``_models`` (this module is the leaf every other imports).

Every error answers :attr:`NovitaError.dooms_batch`: ``True`` when the same request with
any other prompt would fail the same way (bad key, no balance, API not allowed), so a batch
must stop submitting; ``False`` when it concerns one prompt or one moment.

Exceptions keep every constructor argument in ``args``, so they pickle and cross process
boundaries intact. None of them ever holds the API key.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "APIUnreachableError",
    "AuthenticationError",
    "BackPressureError",
    "BadRequestError",
    "BatchAbortedError",
    "ClientClosedError",
    "DownloadError",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "LocalFileError",
    "MissingAPIKeyError",
    "NotFoundError",
    "NovitaError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "SpendCapReachedError",
    "SubmissionUnknownError",
    "UsageError",
]

#: Reasons after which every further request of a batch would fail the same way.
FATAL_REASONS = frozenset(
    {
        "MISSING_API_KEY",
        "INVALID_API_KEY",
        "BILLING_AUTH_FAILED",
        "BILLING_BALANCE_NOT_ENOUGH",
        "API_NOT_ALLOWED",
        "FEATURE_NOT_ALLOWED",
        "NEED_REAL_NAME_VERIFY",
    }
)


class NovitaError(Exception):
    """Root of every exception raised by :mod:`novita_video`."""

    #: Whether this error dooms every later request of a batch (see the module docstring).
    dooms_batch: bool = False

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class UsageError(NovitaError, RuntimeError):
    """The library was used in a way it does not support."""


class ClientClosedError(UsageError):
    """The client is not open: use it inside ``async with Client() as client:``."""


class InvalidRequestError(NovitaError, ValueError):
    """Bad input or settings, caught before anything was sent.

    ``field`` names what is wrong (``"prompt"``, ``"image_url"``, ``"base_url"``, ...).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field)

    @property
    def field(self) -> str | None:
        """The name of what is wrong (``"prompt"``, ``"image_url"``, ...)."""
        return self.args[1]  # type: ignore[no-any-return]


class MissingAPIKeyError(InvalidRequestError):
    """No API key: pass ``api_key=`` or set ``NOVITA_API_KEY``."""

    dooms_batch = True


class APIConnectionError(NovitaError):
    """No answer from the server: the connection could not be made, or dropped.

    ``maybe_sent`` is ``False`` only when the request certainly never reached the
    server (the connection never opened), which is what makes a POST safe to repeat.
    """

    def __init__(self, message: str, maybe_sent: bool = True) -> None:
        super().__init__(message, maybe_sent)

    @property
    def maybe_sent(self) -> bool:
        """Whether the request may have reached the server (``False``: it certainly did not)."""
        return bool(self.args[1])


class APITimeoutError(APIConnectionError):
    """No answer in time."""


class APIUnreachableError(APIConnectionError):
    """The API has never answered this client: its host does not resolve, or a short run
    of connections to it failed. Nothing was sent, so nothing was created or billed; a
    batch stops at once (a mistyped ``base_url`` fails every prompt alike). ``host`` is
    the host that could not be reached."""

    dooms_batch = True

    def __init__(self, message: str, host: str) -> None:
        Exception.__init__(self, message, host)

    @property
    def maybe_sent(self) -> bool:
        """Always ``False``: no connection was ever made."""
        return False

    @property
    def host(self) -> str:
        """The host that could not be reached."""
        return str(self.args[1])


class SubmissionUnknownError(NovitaError):
    """A submit may have created (and billed) a task, but no task id came back.

    The POST reached the server or may have (a timeout or a dropped connection after
    sending, a 500), and Novita has no idempotency key, so sending it again could pay
    for the same clip twice. The client never repeats it on its own. ``request`` is
    what was being submitted; the underlying error is chained as ``__cause__``.
    Check your Novita dashboard before you submit it again.
    """

    def __init__(self, message: str, request: Any = None) -> None:
        super().__init__(message, request)

    @property
    def request(self) -> Any:
        """The request whose submit may have created a task."""
        return self.args[1]


class ProtocolError(NovitaError):
    """An answer that is not the documented shape. ``snippet`` quotes a short part of it."""

    def __init__(self, message: str, snippet: str = "") -> None:
        super().__init__(message, snippet)

    @property
    def snippet(self) -> str:
        """A short quote of the answer (never the key)."""
        return str(self.args[1])


class APIStatusError(NovitaError):
    """The server answered with an error status.

    ``status_code`` is the HTTP status, ``reason`` Novita's reason enum (such as
    ``"ILLEGAL_PROMPT"``; empty when the body had none), ``message`` its explanation,
    ``request_id`` the server's request id when it sent one.
    """

    def __init__(
        self,
        message: str,
        status_code: int,
        reason: str = "",
        request_id: str | None = None,
        retry_after: float | None = None,
        server_message: str = "",
    ) -> None:
        super().__init__(message, status_code, reason, request_id, retry_after, server_message)

    @property
    def status_code(self) -> int:
        """The HTTP status of the answer."""
        return int(self.args[1])

    @property
    def reason(self) -> str:
        """Novita's reason enum, such as ``"ILLEGAL_PROMPT"`` (empty if the body had none)."""
        return str(self.args[2])

    @property
    def request_id(self) -> str | None:
        """The server's request id, when it sent one."""
        return self.args[3]  # type: ignore[no-any-return]

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked us to wait (``Retry-After``), if it said."""
        return self.args[4]  # type: ignore[no-any-return]

    @property
    def dooms_batch(self) -> bool:  # type: ignore[override]
        """Whether the reason dooms every later request of a batch."""
        return self.reason in FATAL_REASONS

    @property
    def message(self) -> str:
        """The server's own explanation (its ``message``, or a quote of a body that had
        none); ``str(error)`` says where it came from as well."""
        return str(self.args[5]) if len(self.args) > 5 and self.args[5] else str(self.args[0])


class BadRequestError(APIStatusError):
    """400: the request was refused (``ILLEGAL_PROMPT``, ``INVALID_IMAGE_FORMAT``, ...)."""


class InsufficientBalanceError(BadRequestError):
    """400 ``BILLING_BALANCE_NOT_ENOUGH``: top up the account; dooms the batch."""

    @property
    def dooms_batch(self) -> bool:  # type: ignore[override]
        """Always: no submit can succeed until the account is topped up."""
        return True


class AuthenticationError(APIStatusError):
    """401, or 403 ``INVALID_API_KEY``, or 400 ``MISSING_API_KEY``: the key is wrong."""

    @property
    def dooms_batch(self) -> bool:  # type: ignore[override]
        """Always: no request can succeed with this key."""
        return True


class PermissionDeniedError(APIStatusError):
    """403 other than a bad key: ``API_NOT_ALLOWED``, ``FEATURE_NOT_ALLOWED``, ..."""


class NotFoundError(APIStatusError):
    """404: ``TASK_NOT_FOUND`` or ``API_NOT_FOUND``."""


class RateLimitError(APIStatusError):
    """429 ``RATE_LIMIT_EXCEEDED``, after the client's own retries ran out."""


class ServerError(APIStatusError):
    """5xx: the server failed or is overloaded."""


class DownloadError(NovitaError):
    """Storage refused a clip's URL: ``status_code`` 403 means it expired (or was
    tampered with); :meth:`Client.download` then asks the API for a fresh one. A 429 or
    5xx is raised only once the client's :class:`RetryPolicy` gave up on it.
    ``retry_after`` is the wait storage asked for (``Retry-After``), if it said."""

    def __init__(self, message: str, status_code: int, retry_after: float | None = None) -> None:
        super().__init__(message, status_code, retry_after)

    @property
    def status_code(self) -> int:
        """The HTTP status storage answered (403: expired or refused)."""
        return int(self.args[1])

    @property
    def retry_after(self) -> float | None:
        """Seconds storage asked us to wait (``Retry-After``), if it said."""
        return self.args[2]  # type: ignore[no-any-return]


class LocalFileError(NovitaError, OSError):
    """A clip could not be written to this machine (a full disk, a read-only file system).

    The network was fine, so no retry mends it: it is raised at once.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class SpendCapReachedError(NovitaError):
    """A batch's spend cap (:class:`~novita_video.SpendCap`) stopped its submits: the
    balance has fallen by ``max_spend`` (US dollars), or would with the tasks already
    accepted but not yet seen charged; ``spent`` is what the cap counted. Nothing more is
    sent; tasks already made are still awaited. Dooms the batch."""

    dooms_batch = True

    def __init__(self, message: str, max_spend: Any = None, spent: Any = None) -> None:
        super().__init__(message, max_spend, spent)

    @property
    def max_spend(self) -> Any:
        """The cap, in US dollars (a :class:`~decimal.Decimal`)."""
        return self.args[1]

    @property
    def spent(self) -> Any:
        """What the cap counted as spent when it stopped (a :class:`~decimal.Decimal`)."""
        return self.args[2]


class BatchAbortedError(NovitaError):
    """This prompt was never sent: an earlier answer (``cause``) doomed the batch,
    or the batch was stopped before its turn came."""

    def __init__(self, message: str, cause: NovitaError | None = None) -> None:
        super().__init__(message, cause)

    @property
    def cause(self) -> NovitaError | None:
        """The answer that doomed the batch, if one did."""
        return self.args[1]  # type: ignore[no-any-return]

    @property
    def dooms_batch(self) -> bool:  # type: ignore[override]
        """Whether its cause dooms the batch."""
        return self.cause is not None and self.cause.dooms_batch


class BackPressureError(NovitaError):
    """A submit's turn under the rate limit is further off than its ``max_wait``;
    nothing was sent.

    ``retry_after`` is how many seconds until a turn is likely, from the limiter (this
    client's, or the one every worker shares through Redis): what a web service answers
    as ``503`` with ``Retry-After``. It is an estimate: others may take that turn first.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after)

    @property
    def retry_after(self) -> float:
        """Seconds until a turn is likely (an estimate)."""
        return float(self.args[1])


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    429: RateLimitError,
}
_AUTH_REASONS = frozenset({"INVALID_API_KEY", "MISSING_API_KEY"})


def status_error_class(status_code: int, reason: str) -> type[APIStatusError]:
    """The narrowest class for an error answer (a pure function, table-tested)."""
    if reason in _AUTH_REASONS or status_code == 401:
        return AuthenticationError
    if reason == "BILLING_BALANCE_NOT_ENOUGH":
        return InsufficientBalanceError
    if status_code >= 500:
        return ServerError
    return _BY_STATUS.get(status_code, APIStatusError)
