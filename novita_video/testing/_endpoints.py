"""The submit endpoints the simulator serves, and the bodies each one accepts.

Every Novita async video model has its own ``POST /v3/async/<endpoint>`` with its own
fields; the answer (a task id) and the task-result endpoint are shared. The simulator
serves every model of the SDK's catalog (``novita_video._catalog``: one table per
reference page) from its table alone: a body is checked field by field, the page's
defaults are filled in (what makes two submits the same request), and a wrong field is a
400 ``INVALID_REQUEST_BODY`` naming it. Fields a page does not list are ignored, as a
lenient server does, and recorded (``SubmitRequest.ignored``): an ``image_url`` sent to
``minimax-hailuo-02``, whose page now reads ``image``, makes a text-to-video task, as it
would on Novita.

Every endpoint also takes ``extra.webhook.url`` (documented for Wan, unconfirmed for
the others; ``test_mode`` sends a mock event at once) and ``extra.enable_nsfw_detection``.
For safety the simulator only ever calls loopback hosts, so any other webhook URL is
refused here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from .._catalog import CATALOG, BodyError, Model, fill, is_http_url
from ._errors import ApiError
from ._tasks import SubmitRequest

__all__ = ["ENDPOINTS", "WebhookSettings", "extra_of", "is_loopback", "parse_body"]

#: The submit endpoints by path segment: ``POST /v3/async/<endpoint>``.
ENDPOINTS: Final[Mapping[str, Model]] = CATALOG
_MISSING: Final = object()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a URL's hostname) is this machine: 127.0.0.0/8, ::1 or localhost."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: it may resolve anywhere
        return False


@attrs.frozen
class WebhookSettings:
    """``extra.webhook`` of a submit: where the task's end goes, and its test mode
    (``test_mode.enabled``: a mock event with ``return_task_status`` is sent at once)."""

    url: str
    test_status: str | None = None


_TEST_STATUSES: Final = ("TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED")


def extra_of(body: Mapping[str, Any]) -> tuple[WebhookSettings | None, dict[str, Any]]:
    """A submit's ``extra``: its webhook (if any), and what is kept of it."""
    extra = body.get("extra", _MISSING)
    if extra is _MISSING:
        return None, {}
    if not isinstance(extra, dict):
        raise ApiError.invalid_body("extra must be an object")
    kept: dict[str, Any] = {}
    nsfw = extra.get("enable_nsfw_detection", _MISSING)
    if nsfw is not _MISSING:
        if not isinstance(nsfw, bool):
            raise ApiError.invalid_body("extra.enable_nsfw_detection must be true or false")
        kept["enable_nsfw_detection"] = nsfw
    webhook = extra.get("webhook", _MISSING)
    if webhook is _MISSING:
        return None, kept
    if not isinstance(webhook, dict):
        raise ApiError.invalid_body("extra.webhook must be an object")
    url = webhook.get("url", _MISSING)
    if url is _MISSING:
        raise ApiError.invalid_body("extra.webhook.url is required")
    if not isinstance(url, str) or not is_http_url(url):
        raise ApiError.invalid_body("extra.webhook.url must be an absolute http(s) URL")
    hostname = urlsplit(url).hostname or ""
    if not is_loopback(hostname):
        # The simulator must never be made to call out to the internet.
        raise ApiError.invalid_body(
            "extra.webhook.url must point at this machine (127.0.0.0/8, ::1 or localhost) "
            f"in the simulator, not {hostname!r}"
        )
    kept["webhook"] = dict(webhook)
    return WebhookSettings(url, _test_status(webhook)), kept


def _test_status(webhook: Mapping[str, Any]) -> str | None:
    test_mode = webhook.get("test_mode", _MISSING)
    if test_mode is _MISSING:
        return None
    if not isinstance(test_mode, dict) or not isinstance(test_mode.get("enabled"), bool):
        raise ApiError.invalid_body("extra.webhook.test_mode.enabled must be true or false")
    if not test_mode["enabled"]:
        return None
    status = test_mode.get("return_task_status", "TASK_STATUS_SUCCEED")
    if status not in _TEST_STATUSES:
        shown = " or ".join(_TEST_STATUSES)
        raise ApiError.invalid_body(f"extra.webhook.test_mode.return_task_status must be {shown}")
    return str(status)


def parse_body(endpoint: str, body: Any) -> SubmitRequest:
    """Validate a decoded submit ``body`` for ``endpoint`` (a key of :data:`ENDPOINTS`)."""
    if not isinstance(body, dict):
        raise ApiError.invalid_body("request body must be a JSON object")
    model = ENDPOINTS[endpoint]
    try:
        fields = fill(model, body)
    except BodyError as error:
        raise ApiError.invalid_body(str(error)) from None
    webhook, extra = extra_of(body)
    ignored = tuple(sorted(name for name in body if name not in fields and name != "extra"))
    return SubmitRequest(
        endpoint,
        fields,
        webhook_url=None if webhook is None else webhook.url,
        webhook_test_status=None if webhook is None else webhook.test_status,
        extra=extra,
        ignored=ignored,
    )
