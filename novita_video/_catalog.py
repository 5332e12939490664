"""What each Novita video endpoint takes: one table per model, as its reference page says.

Every Novita async video model has its own ``POST /v3/async/<endpoint>`` and body; the
answer (a task id) and the task-result endpoint are shared. A :class:`Model` here is one
reference page written down as data: its fields with their kinds, ranges and the
server's defaults, the rules between fields, and the ``task_type`` its results carry.

Two rooms read these tables and must agree with them: the SDK's request types
(``_requests``: validators made from the fields here) and the simulator's endpoints
(``testing._endpoints``: the same checks, answered as a 400). ``tests/test_catalog.py``
holds both to every table, over HTTP, so they cannot drift apart again.

Adding a model: write its table here (the page's URL and the date it was read), add it
to :data:`CATALOG`, and give it a request type in ``_requests``; the simulator serves it
from the table alone. ``docs/models.md`` says the same for users.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import attrs

__all__ = ["CATALOG", "BodyError", "Field", "Model", "Rule", "check_field", "fill", "is_http_url"]

Kind = Literal["text", "url", "image", "int", "number", "bool", "choice", "loras"]

#: The largest image, decoded, that the SDK sends inline as base64. Novita's Kling pages
#: state 10 MB; the Hailuo page states none, so the same bound is assumed.
MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024
#: Image types a data URI may carry (the formats Novita's pages name: jpg, jpeg, png; and webp).
IMAGE_TYPES: Final = ("jpeg", "png", "webp")
_DATA_URI = re.compile(r"data:image/(?P<type>[a-z]+);base64,(?P<data>.*)", re.DOTALL)


@attrs.frozen
class Field:
    """One body field: its ``kind``, whether it is ``required``, the ``default`` the
    server applies when it is left out (``None``: none), and its bounds: ``low``/``high``
    (a number's range, a text's length), or ``choices``."""

    name: str
    kind: Kind
    required: bool = False
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()


@attrs.frozen
class Rule:
    """A rule between fields: ``check`` gets the body with defaults filled in and returns
    what is wrong (``None`` if nothing); ``field`` is the field an error names."""

    field: str
    says: str
    check: Callable[[Mapping[str, Any]], str | None]


@attrs.frozen
class Model:
    """One endpoint's reference page as data (``page``, read on ``checked``).

    ``task_type`` is what its task results say; ``{mode}`` stands for the body's mode,
    upper-cased (Kling's Standard and Professional are billed and timed apart)."""

    endpoint: str
    task_type: str
    page: str
    checked: str
    fields: tuple[Field, ...]
    rules: tuple[Rule, ...] = ()

    def field(self, name: str) -> Field:
        """The field called ``name``; ``KeyError`` if this model has none."""
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(name)

    def task_type_of(self, body: Mapping[str, Any]) -> str:
        """The ``task_type`` of a task made from ``body`` (defaults filled in)."""
        return self.task_type.format(mode=str(body.get("mode", "")).upper())


def is_http_url(value: str) -> bool:
    """Whether ``value`` is an absolute http(s) URL with a host (a bad port is not)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (a bad port raises ValueError only when read)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def image_problem(value: str) -> str | None:
    """What is wrong with an image field's value: a public http(s) URL, or a
    ``data:image/<type>;base64,...`` URI of at most :data:`MAX_IMAGE_BYTES`."""
    if value.startswith("data:"):
        found = _DATA_URI.fullmatch(value)
        if found is None:
            return "must be a data:image/<type>;base64,... URI or an http(s) URL"
        if found["type"] not in IMAGE_TYPES:
            return f"must be an image of type {', '.join(IMAGE_TYPES)}, not {found['type']!r}"
        data = found["data"]
        if len(data) > 4 * (MAX_IMAGE_BYTES // 3 + 1):
            return f"must be at most {MAX_IMAGE_BYTES} bytes decoded"
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return "is not valid base64 after 'base64,'"
        return None
    if not is_http_url(value):
        return "must be an http(s) URL or a data:image/<type>;base64,... URI"
    return None


def _number(value: object, *, integer: bool) -> bool:
    # A bool is an int to Python, never a number to JSON.
    if isinstance(value, bool):
        return False
    if integer:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def _range(field: Field) -> str:
    return f"{field.low:g} to {field.high:g}"


def check_field(field: Field, value: object) -> str | None:
    """What is wrong with ``value`` for ``field`` by its page (``None``: nothing), in
    words that follow the field's name: ``"must be 1 to 2000 characters, not 2100"``."""
    kind = field.kind
    if kind == "text":
        if not isinstance(value, str):
            return "must be a string"
        shortest, longest = int(field.low or 0), int(field.high or 0)
        if not shortest <= len(value) <= longest:
            return f"must be {shortest} to {longest} characters, not {len(value)}"
        return None
    if kind == "url":
        if not isinstance(value, str) or not is_http_url(value):
            return "must be an absolute http(s) URL"
        return None
    if kind == "image":
        if not isinstance(value, str):
            return "must be an http(s) URL or a data:image/<type>;base64,... URI"
        return image_problem(value)
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "choice":
        if isinstance(value, bool) or value not in field.choices:
            shown = " or ".join(repr(choice) for choice in field.choices)
            return f"must be {shown}, not {value!r}"
        return None
    if kind in ("int", "number"):
        integer = kind == "int"
        if not _number(value, integer=integer):
            return "must be an integer" if integer else "must be a number"
        assert isinstance(value, int | float)
        low: float = -math.inf if field.low is None else field.low
        high: float = math.inf if field.high is None else field.high
        if not low <= value <= high:
            what = "an integer" if integer else "a number"
            return f"must be {what} from {_range(field)}, not {value}"
        return None
    assert kind == "loras"
    return _loras_problem(value)


#: Wan's LoRAs: at most this many, each ``{"path": str, "scale": 0..4}``.
WAN_MAX_LORAS: Final = 3
WAN_LORA_SCALE: Final = (0.0, 4.0)


def _loras_problem(value: object) -> str | None:
    if not isinstance(value, list) or len(value) > WAN_MAX_LORAS:
        return f"must be a list of at most {WAN_MAX_LORAS} objects"
    low, high = WAN_LORA_SCALE
    for number, lora in enumerate(value):
        path = lora.get("path") if isinstance(lora, dict) else None
        scale = lora.get("scale") if isinstance(lora, dict) else None
        if not isinstance(path, str) or not path:
            return f"[{number}].path must be a non-empty string"
        if not _number(scale, integer=False) or not low <= scale <= high:  # type: ignore[operator]
            return f"[{number}].scale must be a number from {low:g} to {high:g}"
    return None


# The tables. Text lengths are characters; every default is the page's.

_PROMPT = Field("prompt", "text", required=True, low=1, high=2000)
_NEGATIVE = Field("negative_prompt", "text", low=0, high=2000)
_EXPANSION = Field("enable_prompt_expansion", "bool", default=True)


def _hailuo_resolution(body: Mapping[str, Any]) -> str | None:
    if body.get("resolution") == "1080P" and body.get("duration") != 6:
        return "1080P is only made for 6-second clips (duration 6)"
    return None


def _kling_end_frame(body: Mapping[str, Any]) -> str | None:
    if "end_image_url" in body and body.get("mode") != "Professional":
        return "needs mode 'Professional' (Kling's Standard mode has no end frame)"
    return None


#: Wan's (width, height) pairs.
WAN_SIZES: Final = ((480, 832), (832, 480), (720, 1280), (1280, 720))


def _wan_size(body: Mapping[str, Any]) -> str | None:
    if (body.get("width"), body.get("height")) not in WAN_SIZES:
        sizes = ", ".join(f"{w}x{h}" for w, h in WAN_SIZES)
        return f"width x height must be one of {sizes}"
    return None


MINIMAX_VIDEO_01 = Model(
    endpoint="minimax-video-01",
    task_type="MINIMAX_VIDEO_01",
    page="https://novita.ai/docs/api-reference/model-apis-minimax-video-01",
    checked="2026-11-30",
    fields=(_PROMPT, Field("image_url", "url"), _EXPANSION),
)

MINIMAX_HAILUO_02 = Model(
    endpoint="minimax-hailuo-02",
    task_type="MINIMAX_HAILUO_02",
    page="https://novita.ai/docs/api-reference/model-apis-minimax-hailuo-02",
    checked="2026-11-30",
    fields=(
        _PROMPT,
        Field("image", "image"),
        Field("end_image", "image"),
        Field("duration", "choice", default=6, choices=(6, 10)),
        Field("resolution", "choice", default="768P", choices=("768P", "1080P")),
        _EXPANSION,
        Field("fast_pretreatment", "bool", default=False),
    ),
    rules=(Rule("resolution", "1080P only with duration 6", _hailuo_resolution),),
)

_KLING_GUIDANCE = Field("guidance_scale", "number", default=0.5, low=0, high=1)

KLING_V16_T2V = Model(
    endpoint="kling-v1.6-t2v",
    task_type="KLING_V16_T2V_{mode}",
    page="https://novita.ai/docs/api-reference/model-apis-kling-v1.6-t2v",
    checked="2026-11-30",
    fields=(
        Field("mode", "choice", default="Standard", choices=("Standard",)),
        _PROMPT,
        _NEGATIVE,
        Field("duration", "choice", default=5, choices=(5, 10)),
        _KLING_GUIDANCE,
    ),
)

KLING_V16_I2V = Model(
    endpoint="kling-v1.6-i2v",
    task_type="KLING_V16_I2V_{mode}",
    page="https://novita.ai/docs/api-reference/model-apis-kling-v1.6-i2v",
    checked="2026-11-30",
    fields=(
        Field("mode", "choice", default="Standard", choices=("Standard", "Professional")),
        Field("image_url", "url", required=True),
        Field("end_image_url", "url"),
        _PROMPT,
        _NEGATIVE,
        _KLING_GUIDANCE,
    ),
    rules=(Rule("end_image_url", "only with mode Professional", _kling_end_frame),),
)

_WAN_FIELDS = (
    _PROMPT,
    _NEGATIVE,
    Field("width", "choice", default=832, choices=(480, 720, 832, 1280)),
    Field("height", "choice", default=480, choices=(480, 720, 832, 1280)),
    Field("loras", "loras"),
    Field("seed", "int", default=-1, low=-1, high=9_999_999_999),
    Field("steps", "int", default=30, low=1, high=40),
    Field("guidance_scale", "number", default=5.0, low=0, high=10),
    Field("flow_shift", "number", default=5.0, low=1, high=10),
    Field("enable_safety_checker", "bool", default=True),
    Field("fast_mode", "bool", default=False),
)
_WAN_RULES = (Rule("width", "width x height a documented pair", _wan_size),)

WAN_T2V = Model(
    endpoint="wan-t2v",
    task_type="WAN_TXT_TO_VIDEO",
    page="https://novita.ai/docs/api-reference/model-apis-wan-t2v",
    checked="2026-11-30",
    fields=_WAN_FIELDS,
    rules=_WAN_RULES,
)

WAN_I2V = Model(
    endpoint="wan-i2v",
    # Not on the page: the name WAN_TXT_TO_VIDEO's sibling would have.
    task_type="WAN_IMG_TO_VIDEO",
    page="https://novita.ai/docs/api-reference/model-apis-wan-i2v",
    checked="2026-11-30",
    fields=(Field("image_url", "url", required=True), *_WAN_FIELDS),
    rules=_WAN_RULES,
)

#: Every model this SDK and its simulator know, by endpoint.
CATALOG: Final[Mapping[str, Model]] = MappingProxyType(
    {
        model.endpoint: model
        for model in (
            MINIMAX_VIDEO_01,
            MINIMAX_HAILUO_02,
            KLING_V16_T2V,
            KLING_V16_I2V,
            WAN_T2V,
            WAN_I2V,
        )
    }
)


def fill(model: Model, body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``body`` that ``model`` reads, checked, with the page's defaults
    filled in; raises :class:`BodyError` naming the first field that is wrong. Fields the
    page does not list are left out (a lenient server ignores them)."""
    kept: dict[str, Any] = {}
    for field in model.fields:
        if field.name not in body:
            if field.required:
                raise BodyError(field.name, "is required")
            if field.default is not None:
                kept[field.name] = field.default
            continue
        value = body[field.name]
        problem = check_field(field, value)
        if problem is not None:
            raise BodyError(field.name, problem)
        kept[field.name] = value
    for rule in model.rules:
        problem = rule.check(kept)
        if problem is not None:
            raise BodyError(rule.field, problem)
    return kept


class BodyError(ValueError):
    """A body field is wrong: ``name`` and ``problem`` (words that follow the name)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name
        self.problem = problem
