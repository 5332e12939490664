"""The submit endpoints the simulator serves, and the bodies each one accepts.

Every Novita async video model has its own ``POST /v3/async/<endpoint>`` with its own
fields; the answer (a task id) and the task-result endpoint are shared. Here each
endpoint is one function from a decoded JSON object to the fields it keeps, validated,
with documented defaults filled in (what makes two submits the same request). A wrong
field raises :class:`ApiError` 400 ``INVALID_REQUEST_BODY`` naming it; unknown fields
are ignored, as a lenient server does.

=====================  =============================================================
endpoint               fields (``*`` required)
=====================  =============================================================
``minimax-video-01``   prompt* (1..2000), image_url, enable_prompt_expansion (true)
``minimax-hailuo-02``  prompt* (1..2000), image_url, duration (6 or 10; 6),
                       resolution ("768P" or "1080P", 1080P only for 6 s; "768P"),
                       enable_prompt_expansion (true)
``kling-v1.6-i2v``     image_url*, prompt* (1..2500), end_image_url, negative_prompt
                       (0..2500), guidance_scale (0..1; 0.5), mode ("Standard" or
                       "Professional"; "Standard")
``wan-t2v``            model_name*, prompt* (1..2000), width* and height* (480x832,
                       832x480, 720x1280 or 1280x720), seed* (-1..9999999999),
                       negative_prompt, steps (1..100), guidance_scale, flow_shift,
                       loras (up to 3 of {path, scale}), enable_safety_checker
=====================  =============================================================

Every endpoint also takes ``extra.webhook.url`` (documented for Wan, unconfirmed for
the others): where the simulator POSTs the task's result when it ends. For safety the
simulator only ever calls loopback hosts, so any other URL is refused here.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from ._errors import ApiError
from ._tasks import SubmitRequest

__all__ = ["ENDPOINTS", "is_loopback", "parse_body"]

#: The longest prompt Minimax (and, as the simulator assumes, Wan) accepts.
PROMPT_MAX_CHARS: Final = 2000
#: Kling's limit, as the SDK's KlingI2VRequest has it.
KLING_PROMPT_MAX_CHARS: Final = 2500
#: Wan's documented (width, height) pairs.
WAN_SIZES: Final = frozenset({(480, 832), (832, 480), (720, 1280), (1280, 720)})
WAN_MAX_LORAS: Final = 3


_Body = Mapping[str, Any]
_MISSING: Final = object()


def _is_absolute_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (a bad port raises ValueError only when read)
    except ValueError:  # an unbalanced "[" in the host, a port that is not a number
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _text(
    body: _Body, name: str, *, limit: int, required: bool = False, empty: bool = False
) -> Any:
    value = body.get(name, _MISSING)
    if value is _MISSING:
        if required:
            raise ApiError.invalid_body(f"{name} is required")
        return _MISSING
    if not isinstance(value, str):
        raise ApiError.invalid_body(f"{name} must be a string")
    low = 0 if empty else 1
    if not low <= len(value) <= limit:
        raise ApiError.invalid_body(f"{name} must be {low} to {limit} characters, not {len(value)}")
    return value


def _url(body: _Body, name: str, *, required: bool = False, label: str | None = None) -> Any:
    """``body[name]`` if it is an absolute http(s) URL; errors call it ``label`` (or name)."""
    label = label or name
    value = body.get(name, _MISSING)
    if value is _MISSING:
        if required:
            raise ApiError.invalid_body(f"{label} is required")
        return _MISSING
    if not isinstance(value, str):
        raise ApiError.invalid_body(f"{label} must be a string")
    if not _is_absolute_http_url(value):
        raise ApiError.invalid_body(f"{label} must be an absolute http(s) URL")
    return value


def _bool(body: _Body, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError.invalid_body(f"{name} must be a boolean")
    return value


def _choice(body: _Body, name: str, options: tuple[Any, ...], default: Any) -> Any:
    value = body.get(name, default)
    # `True == 1` in Python: a bool is never one of the options (none is a bool).
    if isinstance(value, bool) or value not in options:
        shown = " or ".join(repr(option) for option in options)
        raise ApiError.invalid_body(f"{name} must be {shown}, not {value!r}")
    return value


def _number(
    body: _Body,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    integer: bool = False,
    required: bool = False,
    default: Any = _MISSING,
) -> Any:
    value: Any = body.get(name, _MISSING)
    if value is _MISSING:
        if required:
            raise ApiError.invalid_body(f"{name} is required")
        return default
    # A bool is an int to Python, never a number to JSON.
    typed = isinstance(value, int) if integer else isinstance(value, int | float)
    what = "an integer" if integer else "a number"
    if isinstance(value, bool) or not typed or not math.isfinite(value):
        raise ApiError.invalid_body(f"{name} must be {what}")
    if not low <= value <= high:
        raise ApiError.invalid_body(f"{name} must be {what} from {low:g} to {high:g}, not {value}")
    return value


def _kept(**fields: Any) -> dict[str, Any]:
    """The fields that were given or have a default (absent optional ones are left out)."""
    return {name: value for name, value in fields.items() if value is not _MISSING}


def _minimax_video_01(body: _Body) -> dict[str, Any]:
    return _kept(
        prompt=_text(body, "prompt", limit=PROMPT_MAX_CHARS, required=True),
        image_url=_url(body, "image_url"),
        enable_prompt_expansion=_bool(body, "enable_prompt_expansion", True),
    )


def _minimax_hailuo_02(body: _Body) -> dict[str, Any]:
    fields = _kept(
        prompt=_text(body, "prompt", limit=PROMPT_MAX_CHARS, required=True),
        image_url=_url(body, "image_url"),
        duration=_choice(body, "duration", (6, 10), 6),
        resolution=_choice(body, "resolution", ("768P", "1080P"), "768P"),
        enable_prompt_expansion=_bool(body, "enable_prompt_expansion", True),
    )
    if fields["resolution"] == "1080P" and fields["duration"] != 6:
        raise ApiError.invalid_body("resolution 1080P is only made for duration 6")
    return fields


def _kling_v1_6_i2v(body: _Body) -> dict[str, Any]:
    return _kept(
        image_url=_url(body, "image_url", required=True),
        prompt=_text(body, "prompt", limit=KLING_PROMPT_MAX_CHARS, required=True),
        end_image_url=_url(body, "end_image_url"),
        negative_prompt=_text(body, "negative_prompt", limit=KLING_PROMPT_MAX_CHARS, empty=True),
        guidance_scale=_number(body, "guidance_scale", low=0, high=1, default=0.5),
        mode=_choice(body, "mode", ("Standard", "Professional"), "Standard"),
    )


def _loras(body: _Body) -> Any:
    loras = body.get("loras", _MISSING)
    if loras is _MISSING:
        return _MISSING
    if not isinstance(loras, list) or len(loras) > WAN_MAX_LORAS:
        raise ApiError.invalid_body(f"loras must be a list of at most {WAN_MAX_LORAS} objects")
    for number, lora in enumerate(loras):
        path = lora.get("path") if isinstance(lora, dict) else None
        scale = lora.get("scale") if isinstance(lora, dict) else None
        if not isinstance(path, str) or not path:
            raise ApiError.invalid_body(f"loras[{number}].path must be a non-empty string")
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not math.isfinite(scale)
        ):
            raise ApiError.invalid_body(f"loras[{number}].scale must be a number")
    return loras


def _wan_t2v(body: _Body) -> dict[str, Any]:
    fields = _kept(
        model_name=_text(body, "model_name", limit=100, required=True),
        prompt=_text(body, "prompt", limit=PROMPT_MAX_CHARS, required=True),
        width=_number(body, "width", integer=True, low=1, high=4096, required=True),
        height=_number(body, "height", integer=True, low=1, high=4096, required=True),
        seed=_number(body, "seed", integer=True, low=-1, high=9_999_999_999, required=True),
        negative_prompt=_text(body, "negative_prompt", limit=PROMPT_MAX_CHARS, empty=True),
        steps=_number(body, "steps", integer=True, low=1, high=100),
        guidance_scale=_number(body, "guidance_scale", low=0, high=100),
        flow_shift=_number(body, "flow_shift", low=0, high=100),
        loras=_loras(body),
        enable_safety_checker=_bool(body, "enable_safety_checker", True),
    )
    if (fields["width"], fields["height"]) not in WAN_SIZES:
        sizes = ", ".join(f"{w}x{h}" for w, h in sorted(WAN_SIZES))
        raise ApiError.invalid_body(f"width x height must be one of {sizes}")
    return fields


#: The submit endpoints by path segment: ``POST /v3/async/<endpoint>``.
ENDPOINTS: Final[Mapping[str, Callable[[_Body], dict[str, Any]]]] = {
    "minimax-video-01": _minimax_video_01,
    "minimax-hailuo-02": _minimax_hailuo_02,
    "kling-v1.6-i2v": _kling_v1_6_i2v,
    "wan-t2v": _wan_t2v,
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a URL's hostname) is this machine: 127.0.0.0/8, ::1 or localhost."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: it may resolve anywhere
        return False


def _webhook_url(body: _Body) -> str | None:
    extra = body.get("extra", _MISSING)
    if extra is _MISSING:
        return None
    if not isinstance(extra, dict):
        raise ApiError.invalid_body("extra must be an object")
    webhook = extra.get("webhook", _MISSING)
    if webhook is _MISSING:
        return None
    if not isinstance(webhook, dict):
        raise ApiError.invalid_body("extra.webhook must be an object")
    url = _url(webhook, "url", required=True, label="extra.webhook.url")
    hostname = urlsplit(url).hostname or ""
    if not is_loopback(hostname):
        # The simulator must never be made to call out to the internet.
        raise ApiError.invalid_body(
            "extra.webhook.url must point at this machine (127.0.0.0/8, ::1 or localhost) "
            f"in the simulator, not {hostname!r}"
        )
    return str(url)


def parse_body(endpoint: str, body: Any) -> SubmitRequest:
    """Validate a decoded submit ``body`` for ``endpoint`` (a key of :data:`ENDPOINTS`)."""
    if not isinstance(body, dict):
        raise ApiError.invalid_body("request body must be a JSON object")
    fields = ENDPOINTS[endpoint](body)
    return SubmitRequest(endpoint, fields, webhook_url=_webhook_url(body))
