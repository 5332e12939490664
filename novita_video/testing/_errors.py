"""The simulator's one exception: an answer in Novita's error shape.

Handlers anywhere in the pipeline raise :class:`ApiError`; the server renders it as
``{"code", "reason", "message", "metadata"}`` with its status and headers.
"""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """An answer in Novita's error shape; handlers raise it, the server renders it."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, reason, message, headers)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}

    @classmethod
    def invalid_body(cls, message: str) -> ApiError:
        """400 ``INVALID_REQUEST_BODY``, the answer to every malformed request."""
        return cls(400, "INVALID_REQUEST_BODY", message)
