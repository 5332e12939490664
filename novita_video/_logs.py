"""``NOVITA_LOG``: the ``novita_video`` logger on demand, with credentials filtered out.

As openai-python reads ``OPENAI_LOG``: ``NOVITA_LOG=debug`` (one line per request:
method, path, status, milliseconds, attempt, task id) or ``NOVITA_LOG=info`` (retries,
429s, slow-downs, batches stopped, webhook events) gives the ``novita_video`` logger a
handler to stderr at that level when the package is imported. Only this logger:
aiohttp's are left to the application, because they may print whole URLs.

One filter, on the logger itself (so it also guards an application's own logging
setup), takes out whatever is a credential wherever it would appear in a line or a
traceback: a ``Bearer`` token, an API key given to a client of this process, and the
query string of any URL (a presigned clip link's signature is a credential too).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping

__all__ = ["LOGGER_NAME", "SecretsFilter", "redact", "remember_secret", "setup_logging"]

LOGGER_NAME = "novita_video"
#: What stands where a credential was.
REDACTED = "[redacted]"
#: The levels ``NOVITA_LOG`` may name.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}

_BEARER = re.compile(r"(\bBearer\s+)[^\s'\",;]+", re.IGNORECASE)
# The query of a URL: presigned links carry their signature there.
_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"<>]+)\?[^\s#'\"<>]*", re.IGNORECASE)
_SIGNATURE = re.compile(
    r"\b((?:signature|x-amz-signature|x-goog-signature|sig|token|x-amz-security-token)=)"
    r"[^&\s'\"]+",
    re.IGNORECASE,
)
# The keys given to clients of this process, each as a whole token ("sk" must not
# mangle "task"); only ever compared, never written anywhere.
_secrets: dict[str, re.Pattern[str]] = {}
_HANDLER_MARK = "_novita_log_handler"


def remember_secret(secret: str | None) -> None:
    """Redact ``secret`` (an API key) from every line the logger writes from now on."""
    if secret and secret.strip() and secret not in _secrets:
        _secrets[secret] = re.compile(
            r"(?<![A-Za-z0-9_\-])" + re.escape(secret) + r"(?![A-Za-z0-9_\-])"
        )


def redact(text: str) -> str:
    """``text`` without credentials (see the module docstring)."""
    for pattern in _secrets.values():
        text = pattern.sub(REDACTED, text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    text = _QUERY.sub(rf"\1?{REDACTED}", text)
    return _SIGNATURE.sub(rf"\1{REDACTED}", text)


class SecretsFilter(logging.Filter):
    """Redacts each record's message and traceback once, before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The message is made here, once, and the arguments dropped: a handler that keeps
        # records (pytest's, a buffer) then holds a line, not the error it was made from
        # (and through its traceback every frame of the request that failed).
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            # Formatted once here, redacted, and cached where every formatter looks first.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def setup_logging(environ: Mapping[str, str] = os.environ) -> None:
    """Filter the ``novita_video`` logger, and give it a stderr handler at the level
    ``NOVITA_LOG`` names (once: importing again adds nothing)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, SecretsFilter) for f in logger.filters):
        logger.addFilter(SecretsFilter())
    wanted = environ.get("NOVITA_LOG", "").strip().lower()
    if not wanted:
        return
    level = LEVELS.get(wanted)
    if level is None:
        # Said once, plainly: a switch that is silently ignored wastes an afternoon.
        print(
            f"novita_video: NOVITA_LOG={wanted!r} is not one of {', '.join(LEVELS)}; ignored",
            file=sys.stderr,
        )
        return
    if any(getattr(handler, _HANDLER_MARK, False) for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "[%(asctime)s.%(msecs)03d %(levelname)s] novita_video: %(message)s", "%H:%M:%S"
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
    logger.setLevel(level)
