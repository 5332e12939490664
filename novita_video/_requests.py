"""What can be submitted: one frozen, self-validating request type per Novita video model.

Every Novita async video endpoint takes ``POST /v3/async/<endpoint>`` and answers a task id
whose result comes from the same task-result endpoint, so one submit path and one poller
serve them all; only the request bodies differ. Each request type checks its fields when
it is made, before anything is sent, and a bad value raises
:class:`~novita_video.InvalidRequestError` naming the field and the rule.

* :class:`VideoRequest`: Minimax Video-01 (``minimax-video-01``), the default.
* :class:`HailuoRequest`: Minimax Hailuo-02 (``minimax-hailuo-02``): 6 or 10 s, 768P or 1080P.
* :class:`KlingT2VRequest`, :class:`KlingI2VRequest`: Kling v1.6 (``kling-v1.6-t2v``,
  ``kling-v1.6-i2v``).
* :class:`WanT2VRequest`, :class:`WanI2VRequest`: Wan 2.1 (``wan-t2v``, ``wan-i2v``).
* :class:`AsyncRequest`: any other async endpoint, by name, with a JSON body of your own.
* :class:`CatalogRequest` (``_unified``): any model of Novita's catalogue, by name, checked
  against its JSON Schema before it is sent to ``POST /v3/video/create``.

The fields, ranges and defaults come from one table per model (``_catalog``), the same
tables the simulator serves; a field left ``None`` is not sent, so the server applies its
own default. :data:`MODELS` maps endpoint names to the typed classes; :func:`to_request`
turns a str or a mapping into the right one.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, NoReturn, TypeAlias
from urllib.parse import urlsplit

import attrs

from ._catalog import (
    KLING_V16_I2V,
    KLING_V16_T2V,
    MAX_IMAGE_BYTES,
    MINIMAX_HAILUO_02,
    MINIMAX_VIDEO_01,
    WAN_I2V,
    WAN_T2V,
    Model,
    check_field,
)
from ._errors import InvalidRequestError
from ._unified import UNIFIED_PATH, CatalogRequest

__all__ = [
    "MODELS",
    "AsyncRequest",
    "CatalogRequest",
    "HailuoRequest",
    "KlingI2VRequest",
    "KlingT2VRequest",
    "Lora",
    "Request",
    "VideoRequest",
    "WanI2VRequest",
    "WanT2VRequest",
    "submit_path",
    "to_request",
]

MAX_PROMPT_LENGTH = 2000
MAX_URL_LENGTH = 8192
_ENDPOINT = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


def _reject(field: str, message: str) -> NoReturn:
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
        hint = ""
        if not parts.scheme or len(parts.scheme) == 1:  # "cat.png", "/img/cat.png", "C:\\..."
            hint = (
                f" ({value[:60]!r} looks like a file: Novita fetches images by public URL; "
                "put it online, or send it inline where a model takes one, as "
                "minimax-hailuo-02's image does)"
            )
        _reject(field, f"must be an absolute http(s) URL; its scheme is {shown}{hint}")
    if not parts.hostname:
        _reject(field, "must be an absolute http(s) URL with a host")


def _table(model: Model, name: str) -> Any:
    """The attrs validator of ``model``'s field ``name``: the SDK's own clear words for
    text and URLs first (blank, NUL, lone surrogates, a missing scheme), then the rule
    of the model's table, which the simulator applies too. ``None`` is "not sent"."""
    field = model.field(name)

    def check(_: object, __: attrs.Attribute[Any], value: object) -> None:
        if value is None and not field.required:
            return
        if field.kind == "text":
            if value == "" and not field.low:
                return  # a negative prompt may be empty
            check_text(name, value, limit=int(field.high or MAX_PROMPT_LENGTH))
        elif field.kind == "url":
            check_http_url(name, value)
        problem = check_field(field, value)
        if problem is not None:
            _reject(name, problem)

    return check


def _check_rules(model: Model, request: attrs.AttrsInstance) -> None:
    """Apply ``model``'s rules between fields to ``request``, the server's defaults filled in."""
    given = {
        name: value
        for name, value in attrs.asdict(request, recurse=False).items()
        if value is not None
    }
    body = {field.name: field.default for field in model.fields if field.default is not None}
    body.update(given)
    for rule in model.rules:
        problem = rule.check(body)
        if problem is not None:
            _reject(rule.field, problem)


def _image(value: object) -> str | None:
    """An image field's value as sent: a URL or data URI as given; the bytes of a local
    file (a :class:`os.PathLike`) or ``bytes`` as a base64 data URI, checked first."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return _data_uri("image", bytes(value))
    if isinstance(value, os.PathLike):
        path = Path(value)
        try:
            size = path.stat().st_size
            if size > MAX_IMAGE_BYTES:
                _reject("image", f"{path} has {size} bytes; at most {MAX_IMAGE_BYTES} are sent")
            data = path.read_bytes()
        except OSError as error:
            _reject("image", f"cannot read {path} ({error.strerror or error})")
            raise  # unreachable, for the type checker
        return _data_uri("image", data, source=str(path))
    return value  # type: ignore[return-value]  # the validator names what it is


_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"))


def _data_uri(field: str, data: bytes, *, source: str = "the bytes given") -> str:
    if len(data) > MAX_IMAGE_BYTES:
        _reject(field, f"{source} has {len(data)} bytes; at most {MAX_IMAGE_BYTES} are sent")
    kind = next((name for magic, name in _MAGIC if data.startswith(magic)), None)
    if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "webp"
    if kind is None:
        _reject(field, f"{source} is not a JPEG, PNG or WebP image")
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _image_check(model: Model, name: str) -> Any:
    check = _table(model, name)

    def validate(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, str) and not value.startswith("data:"):
            if "://" not in value:
                _reject(
                    name,
                    "must be an http(s) URL or a data:image/...;base64, URI; for a local "
                    f"file pass pathlib.Path({value[:60]!r}) (sent inline as base64)",
                )
            check_http_url(name, value)  # the SDK's clearer words for a bad URL
        check(instance, attribute, value)

    return validate


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

    prompt: str = attrs.field(validator=_table(MINIMAX_VIDEO_01, "prompt"))
    image_url: str | None = attrs.field(
        default=None, validator=_table(MINIMAX_VIDEO_01, "image_url"), kw_only=True
    )
    enable_prompt_expansion: bool = attrs.field(
        default=True, validator=_table(MINIMAX_VIDEO_01, "enable_prompt_expansion"), kw_only=True
    )


#: What an image field takes: a public http(s) URL, a ``data:image/...;base64,`` URI, or
#: a local file (a path) or its bytes, sent inline as base64.
ImageInput: TypeAlias = "str | bytes | os.PathLike[str]"


@attrs.frozen
class HailuoRequest:
    """One Minimax Hailuo-02 clip: ``duration`` 6 or 10 seconds, ``resolution`` ``"768P"``
    or ``"1080P"`` (1080P only with 6 seconds).

    ``image`` (the first frame) and ``end_image`` (the last) are each a public http(s)
    URL, a ``data:image/...;base64,`` URI, or a local file (:class:`pathlib.Path`) or
    bytes of a JPEG, PNG or WebP image, sent inline as base64 (at most 10 MiB, checked
    before anything is sent). ``fast_pretreatment`` shortens the prompt optimisation.

    >>> HailuoRequest("A kite over the dunes", duration=10).resolution
    '768P'
    """

    endpoint: ClassVar[str] = "minimax-hailuo-02"

    prompt: str = attrs.field(validator=_table(MINIMAX_HAILUO_02, "prompt"))
    image: str | None = attrs.field(
        default=None,
        converter=_image,
        validator=_image_check(MINIMAX_HAILUO_02, "image"),
        kw_only=True,
    )
    end_image: str | None = attrs.field(
        default=None,
        converter=_image,
        validator=_image_check(MINIMAX_HAILUO_02, "end_image"),
        kw_only=True,
    )
    duration: Literal[6, 10] = attrs.field(
        default=6, validator=_table(MINIMAX_HAILUO_02, "duration"), kw_only=True
    )
    resolution: Literal["768P", "1080P"] = attrs.field(
        default="768P", validator=_table(MINIMAX_HAILUO_02, "resolution"), kw_only=True
    )
    enable_prompt_expansion: bool = attrs.field(
        default=True, validator=_table(MINIMAX_HAILUO_02, "enable_prompt_expansion"), kw_only=True
    )
    fast_pretreatment: bool = attrs.field(
        default=False, validator=_table(MINIMAX_HAILUO_02, "fast_pretreatment"), kw_only=True
    )

    def __attrs_post_init__(self) -> None:
        _check_rules(MINIMAX_HAILUO_02, self)


@attrs.frozen
class KlingT2VRequest:
    """One Kling v1.6 text-to-video clip: ``duration`` 5 or 10 seconds, ``prompt`` and
    ``negative_prompt`` of at most 2000 characters, ``guidance_scale`` 0 to 1 (Novita's
    default 0.5), ``mode`` ``"Standard"`` (the only one the page offers)."""

    endpoint: ClassVar[str] = "kling-v1.6-t2v"

    prompt: str = attrs.field(validator=_table(KLING_V16_T2V, "prompt"))
    negative_prompt: str | None = attrs.field(
        default=None, validator=_table(KLING_V16_T2V, "negative_prompt"), kw_only=True
    )
    duration: Literal[5, 10] = attrs.field(
        default=5, validator=_table(KLING_V16_T2V, "duration"), kw_only=True
    )
    guidance_scale: float | None = attrs.field(
        default=None, validator=_table(KLING_V16_T2V, "guidance_scale"), kw_only=True
    )
    mode: Literal["Standard"] | None = attrs.field(
        default=None, validator=_table(KLING_V16_T2V, "mode"), kw_only=True
    )


@attrs.frozen
class KlingI2VRequest:
    """One Kling v1.6 image-to-video clip from ``image_url`` (and optionally ending at
    ``end_image_url``), guided by ``prompt`` and ``negative_prompt``.

    ``prompt`` and ``negative_prompt`` are at most 2000 characters, ``guidance_scale`` is
    0 to 1, ``mode`` is ``"Standard"`` (Novita's default) or ``"Professional"``, which an
    ``end_image_url`` needs.
    """

    endpoint: ClassVar[str] = "kling-v1.6-i2v"

    image_url: str = attrs.field(validator=_table(KLING_V16_I2V, "image_url"))
    prompt: str = attrs.field(validator=_table(KLING_V16_I2V, "prompt"))
    end_image_url: str | None = attrs.field(
        default=None, validator=_table(KLING_V16_I2V, "end_image_url"), kw_only=True
    )
    negative_prompt: str | None = attrs.field(
        default=None, validator=_table(KLING_V16_I2V, "negative_prompt"), kw_only=True
    )
    guidance_scale: float | None = attrs.field(
        default=None, validator=_table(KLING_V16_I2V, "guidance_scale"), kw_only=True
    )
    mode: Literal["Standard", "Professional"] | None = attrs.field(
        default=None, validator=_table(KLING_V16_I2V, "mode"), kw_only=True
    )

    def __attrs_post_init__(self) -> None:
        _check_rules(KLING_V16_I2V, self)


@attrs.frozen
class Lora:
    """A LoRA for Wan: ``path`` (a URL or name Novita knows) and ``scale`` 0 to 4."""

    path: str
    scale: float = 1.0


def _loras(value: object) -> tuple[Lora, ...] | None:
    """Loras as given (:class:`Lora` objects, or ``{"path", "scale"}`` mappings)."""
    if value is None:
        return None
    if isinstance(value, list | tuple) and all(isinstance(lora, Lora | Mapping) for lora in value):
        problem = check_field(
            WAN_T2V.field("loras"),
            [
                {"path": lora.path, "scale": lora.scale} if isinstance(lora, Lora) else dict(lora)
                for lora in value
            ],
        )
        if problem is not None:
            _reject("loras", problem)
        return tuple(
            lora if isinstance(lora, Lora) else Lora(lora["path"], lora["scale"]) for lora in value
        )
    _reject("loras", "must be a list of at most 3 Lora(path, scale) or {path, scale} objects")
    raise AssertionError  # unreachable, for the type checker


@attrs.frozen
class _WanOptions:
    # Wan 2.1's optional fields, the same for text- and image-to-video (one table row each).
    negative_prompt: str | None = attrs.field(
        default=None, validator=_table(WAN_T2V, "negative_prompt"), kw_only=True
    )
    width: Literal[480, 720, 832, 1280] | None = attrs.field(
        default=None, validator=_table(WAN_T2V, "width"), kw_only=True
    )
    height: Literal[480, 720, 832, 1280] | None = attrs.field(
        default=None, validator=_table(WAN_T2V, "height"), kw_only=True
    )
    loras: tuple[Lora, ...] | None = attrs.field(default=None, converter=_loras, kw_only=True)
    seed: int | None = attrs.field(default=None, validator=_table(WAN_T2V, "seed"), kw_only=True)
    steps: int | None = attrs.field(default=None, validator=_table(WAN_T2V, "steps"), kw_only=True)
    guidance_scale: float | None = attrs.field(
        default=None, validator=_table(WAN_T2V, "guidance_scale"), kw_only=True
    )
    flow_shift: float | None = attrs.field(
        default=None, validator=_table(WAN_T2V, "flow_shift"), kw_only=True
    )
    enable_safety_checker: bool | None = attrs.field(
        default=None, validator=_table(WAN_T2V, "enable_safety_checker"), kw_only=True
    )
    fast_mode: bool | None = attrs.field(
        default=None, validator=_table(WAN_T2V, "fast_mode"), kw_only=True
    )

    def __attrs_post_init__(self) -> None:
        _check_rules(WAN_T2V, self)


@attrs.frozen
class WanT2VRequest(_WanOptions):
    """One Wan 2.1 text-to-video clip (5 s). Every field but ``prompt`` may stay ``None``
    for Novita's default: ``width`` x ``height`` 832x480 (or 480x832, 1280x720,
    720x1280), ``seed`` -1 (random), ``steps`` 30 (1 to 40), ``guidance_scale`` 5 (0 to
    10), ``flow_shift`` 5 (1 to 10), up to 3 ``loras`` (scale 0 to 4),
    ``enable_safety_checker`` true, ``fast_mode`` false."""

    endpoint: ClassVar[str] = "wan-t2v"

    prompt: str = attrs.field(validator=_table(WAN_T2V, "prompt"))


@attrs.frozen
class WanI2VRequest(_WanOptions):
    """One Wan 2.1 image-to-video clip from ``image_url``; the other fields as
    :class:`WanT2VRequest` (``width`` x ``height`` sets the clarity, the image its shape)."""

    endpoint: ClassVar[str] = "wan-i2v"

    image_url: str = attrs.field(validator=_table(WAN_I2V, "image_url"))
    prompt: str = attrs.field(validator=_table(WAN_I2V, "prompt"))


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


#: A request of one of the models this SDK has a type for.
TypedRequest: TypeAlias = (
    VideoRequest | HailuoRequest | KlingT2VRequest | KlingI2VRequest | WanT2VRequest | WanI2VRequest
)
_TYPED: Final = (
    VideoRequest,
    HailuoRequest,
    KlingT2VRequest,
    KlingI2VRequest,
    WanT2VRequest,
    WanI2VRequest,
)

#: Anything :meth:`Client.submit` and :meth:`Client.generate` accept as a request.
Request: TypeAlias = TypedRequest | AsyncRequest | CatalogRequest

#: The typed request class of each model, by endpoint name.
MODELS: Final[Mapping[str, type[TypedRequest]]] = MappingProxyType(
    {cls.endpoint: cls for cls in _TYPED}
)


def to_request(item: object, model: str = VideoRequest.endpoint) -> Request:
    """A request from a request, a prompt str, or a mapping of ``model``'s fields.

    A ``None`` for a field with a default means the default (JSON's ``null``). Raises
    :class:`InvalidRequestError` naming the field that is wrong.
    """
    if isinstance(item, (*_TYPED, AsyncRequest, CatalogRequest)):
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


def submit_path(request: Request) -> str:
    """Where ``request`` is POSTed: ``/v3/video/create`` for a catalogue model, else its
    own ``/v3/async/<endpoint>``."""
    if isinstance(request, CatalogRequest):
        return UNIFIED_PATH
    return f"/v3/async/{request.endpoint}"
