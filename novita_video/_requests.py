"""What can be submitted: one frozen, self-validating request type per Novita video model.

Every Novita async video endpoint takes ``POST /v3/async/<endpoint>`` and answers a task id
whose result comes from the same task-result endpoint, so one submit path and one poller
serve them all; only the request bodies differ. Each request type checks its fields when
it is made, before anything is sent, and a bad value raises
:class:`~novita_video.InvalidRequestError` naming the field and the rule.

* :class:`VideoRequest`: Minimax Video-01 (``minimax-video-01``), the default.
* :class:`HailuoRequest`: Minimax Hailuo-02 (``minimax-hailuo-02``): 6 or 10 s, 768P or 1080P.
* :class:`KlingI2VRequest`: Kling v1.6 image-to-video (``kling-v1.6-i2v``).
* :class:`AsyncRequest`: any other async endpoint, by name, with a JSON body of your own.

:data:`MODELS` maps endpoint names to the typed classes; :func:`to_request` turns a str or
a mapping into the right one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, TypeAlias
from urllib.parse import urlsplit

import attrs

__all__ = [
    "MODELS",
    "AsyncRequest",
    "HailuoRequest",
    "KlingI2VRequest",
    "Request",
    "VideoRequest",
    "to_request",
]

MAX_PROMPT_LENGTH = 2000
MAX_URL_LENGTH = 8192
KLING_MODES = ("Standard", "Professional")
_ENDPOINT = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


def _reject(field: str, message: str) -> None:
    from ._errors import InvalidRequestError  # late: _errors imports the models for types

    raise InvalidRequestError(f"{field}: {message}", field)


def check_text(field: str, value: object, *, limit: int, required: bool = True) -> None:
    """A str of 1 to ``limit`` characters, not blank, without NUL (``None`` if optional)."""
    if value is None and not required:
        return
    if not isinstance(value, str):
        _reject(field, f"must be a str of 1 to {limit} characters, not {type(value).__name__}")
    assert isinstance(value, str)
    if not value.strip():
        _reject(field, "must not be empty or only white space")
    if len(value) > limit:
        _reject(field, f"must be at most {limit} characters, this one has {len(value)}")
    if "\x00" in value:
        _reject(field, "must not contain NUL characters")
    _check_encodable(field, value)


def _check_encodable(field: str, value: str) -> None:
    # A lone surrogate (JSON's "\ud800") is a str, but no UTF-8 text: no server can store it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        _reject(field, f"must be valid Unicode text; character {error.start} is a lone surrogate")


def check_http_url(field: str, value: object) -> None:
    """Raise :class:`InvalidRequestError` unless ``value`` is an absolute http(s) URL."""
    if not isinstance(value, str):
        _reject(field, f"must be an absolute http(s) URL, not {type(value).__name__}")
    assert isinstance(value, str)
    if len(value) > MAX_URL_LENGTH:
        _reject(field, f"must be at most {MAX_URL_LENGTH} characters, this one has {len(value)}")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        _reject(field, "must not contain white space or control characters")
    _check_encodable(field, value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (a bad port raises ValueError here, not later)
    except ValueError as err:
        _reject(field, f"is not a valid URL ({err})")
        raise  # unreachable, for the type checker
    if parts.scheme not in ("http", "https"):
        shown = f"{parts.scheme!r}" if parts.scheme else "none"
        _reject(field, f"must be an absolute http(s) URL; its scheme is {shown}")
    if not parts.hostname:
        _reject(field, "must be an absolute http(s) URL with a host")


def _prompt(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    check_text(attribute.name, value, limit=MAX_PROMPT_LENGTH)


def _negative_prompt(_: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    # Unlike a prompt, a negative prompt may be empty (Novita's reference: 0 to 2000).
    if value == "":
        return
    check_text(attribute.name, value, limit=MAX_PROMPT_LENGTH, required=False)


def _url(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    check_http_url(attribute.name, value)


def _optional_url(_: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        check_http_url(attribute.name, value)


def _bool(_: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        _reject(attribute.name, f"must be True or False, not {value!r}")


def _one_of(*allowed: object) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        # `True == 1`: a bool is never a duration.
        if isinstance(value, bool) or value not in allowed:
            shown = " or ".join(repr(option) for option in allowed)
            _reject(attribute.name, f"must be {shown}, not {value!r}")

    return check


def _unit_interval(_: object, attribute: attrs.Attribute[float | None], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        _reject(attribute.name, f"must be a number from 0 to 1, not {value!r}")


@attrs.frozen
class VideoRequest:
    """One Minimax Video-01 clip: text-to-video, or image-to-video with ``image_url``.

    ``prompt`` is a str of 1 to 2000 characters; ``image_url`` an absolute http(s) URL of
    the first frame.

    >>> VideoRequest("A panda walks through bamboo").endpoint
    'minimax-video-01'
    """

    #: The path segment of the submit endpoint, ``POST /v3/async/<endpoint>``.
    endpoint: ClassVar[str] = "minimax-video-01"

    prompt: str = attrs.field(validator=_prompt)
    image_url: str | None = attrs.field(default=None, validator=_optional_url, kw_only=True)
    enable_prompt_expansion: bool = attrs.field(default=True, validator=_bool, kw_only=True)


def _hailuo_resolution(
    instance: HailuoRequest, attribute: attrs.Attribute[str], value: str
) -> None:
    _one_of("768P", "1080P")(instance, attribute, value)
    if value == "1080P" and instance.duration != 6:
        _reject("resolution", "1080P is only made for 6-second clips (duration=6)")


@attrs.frozen
class HailuoRequest:
    """One Minimax Hailuo-02 clip: ``duration`` 6 or 10 seconds, ``resolution`` ``"768P"``
    or ``"1080P"`` (1080P only with 6 seconds).

    >>> HailuoRequest("A kite over the dunes", duration=10).resolution
    '768P'
    """

    endpoint: ClassVar[str] = "minimax-hailuo-02"

    prompt: str = attrs.field(validator=_prompt)
    image_url: str | None = attrs.field(default=None, validator=_optional_url, kw_only=True)
    duration: Literal[6, 10] = attrs.field(default=6, validator=_one_of(6, 10), kw_only=True)
    resolution: Literal["768P", "1080P"] = attrs.field(
        default="768P", validator=_hailuo_resolution, kw_only=True
    )
    enable_prompt_expansion: bool = attrs.field(default=True, validator=_bool, kw_only=True)


@attrs.frozen
class KlingI2VRequest:
    """One Kling v1.6 image-to-video clip from ``image_url`` (and optionally ending at
    ``end_image_url``), guided by ``prompt`` and ``negative_prompt``.

    ``prompt`` and ``negative_prompt`` are at most 2000 characters, ``guidance_scale`` is
    0 to 1, ``mode`` is ``"Standard"`` (Novita's default) or ``"Professional"``, which an
    ``end_image_url`` needs.
    """

    endpoint: ClassVar[str] = "kling-v1.6-i2v"

    image_url: str = attrs.field(validator=_url)
    prompt: str = attrs.field(validator=_prompt)
    end_image_url: str | None = attrs.field(default=None, validator=_optional_url, kw_only=True)
    negative_prompt: str | None = attrs.field(
        default=None, validator=_negative_prompt, kw_only=True
    )
    guidance_scale: float | None = attrs.field(default=None, validator=_unit_interval, kw_only=True)
    mode: Literal["Standard", "Professional"] | None = attrs.field(
        default=None, validator=attrs.validators.optional(_one_of(*KLING_MODES)), kw_only=True
    )

    def __attrs_post_init__(self) -> None:
        if self.end_image_url is not None and self.mode != "Professional":
            _reject(
                "end_image_url",
                "needs mode='Professional' (Kling's Standard mode has no end frame)",
            )


def _frozen_json(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        _reject(
            "body", f"must be a JSON object (a mapping with str keys), not {type(value).__name__}"
        )
    assert isinstance(value, Mapping)
    try:
        # A round trip proves it is JSON and detaches it from the caller's mutable dict.
        copy = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        _reject("body", f"must be JSON-serialisable ({err})")
        raise  # unreachable, for the type checker
    return MappingProxyType(copy)


def _endpoint(_: object, __: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not _ENDPOINT.fullmatch(value):
        _reject("endpoint", f"must be an endpoint name such as 'wan-t2v', not {value!r}")


@attrs.frozen
class AsyncRequest:
    """A request to any Novita async endpoint, by name: ``POST /v3/async/<endpoint>`` with
    ``body`` as JSON. Use it for a model this SDK has no typed request for yet.

    >>> AsyncRequest("wan-t2v", {"prompt": "a fox", "width": 832, "height": 480}).prompt
    'a fox'
    """

    endpoint: str = attrs.field(validator=_endpoint)
    body: Mapping[str, Any] = attrs.field(converter=_frozen_json)

    @property
    def prompt(self) -> str:
        """The body's ``prompt``, if it has a str one (for names and logs)."""
        prompt = self.body.get("prompt")
        return prompt if isinstance(prompt, str) else ""


#: Anything :meth:`Client.submit` and :meth:`Client.generate` accept as a request.
Request: TypeAlias = VideoRequest | HailuoRequest | KlingI2VRequest | AsyncRequest

#: The typed request class of each model, by endpoint name.
MODELS: Final[Mapping[str, type[VideoRequest | HailuoRequest | KlingI2VRequest]]] = (
    MappingProxyType({cls.endpoint: cls for cls in (VideoRequest, HailuoRequest, KlingI2VRequest)})
)


def to_request(item: object, model: str = VideoRequest.endpoint) -> Request:
    """A request from a request, a prompt str, or a mapping of ``model``'s fields.

    A ``None`` for a field with a default means the default (JSON's ``null``). Raises
    :class:`InvalidRequestError` naming the field that is wrong.
    """
    if isinstance(item, VideoRequest | HailuoRequest | KlingI2VRequest | AsyncRequest):
        return item
    cls = MODELS.get(model)
    if cls is None:
        _reject("model", f"unknown model {model!r}; known: {', '.join(sorted(MODELS))}")
        raise AssertionError  # unreachable, for the type checker
    if isinstance(item, str):
        item = {"prompt": item}
    if not isinstance(item, Mapping):
        _reject("prompt", f"must be a str, a request or a mapping, not {type(item).__name__}")
    assert isinstance(item, Mapping)
    fields = attrs.fields_dict(cls)
    unknown = sorted(str(key) for key in item if key not in fields)
    if unknown:
        known = ", ".join(sorted(fields))
        _reject(unknown[0], f"{model} has no field {', '.join(unknown)}; its fields: {known}")
    missing = sorted(
        name for name, f in fields.items() if f.default is attrs.NOTHING and name not in item
    )
    if missing:
        _reject(missing[0], f"{model} needs {', '.join(missing)}")
    given = {
        name: value
        for name, value in item.items()
        if value is not None or fields[name].default is attrs.NOTHING
    }
    return cls(**given)
