"""The unified video endpoint the simulator serves: its catalogue, and the bodies it takes.

Novita's reference lists its video models on one page, served from
``GET /v3/admin/video-unify-api/config`` (``{"configs": [{"model", "description",
"json_schema"}, ...]}``), and takes them all at ``POST /v3/video/create`` with a ``model``
field. The simulator's catalogue is :data:`UNIFIED_MODELS`: each model's JSON Schema
written from that model's own reference page (the URL and the date it was read are kept
with it; the per-model pages give the same fields as ``/v3/async/<slug>`` bodies). What
the unified catalogue itself says for a model, and the ``task_type`` its tasks report,
were not on any page we could read: these are the per-model pages' facts in the
catalogue's documented shape. Other keys per entry (``category``) are served as a real
catalogue may have them, for the SDK to ignore.

``hailuo-02`` is also our own table ``minimax-hailuo-02`` (``novita_video._catalog``);
``tests/test_unified.py`` holds the two to agree, field by field.

A body is checked against its model's schema with ``jsonschema`` when it is installed
(the ``catalog`` extra); without it the simulator checks only the required fields and
the field names, as a lenient server would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import attrs

from ._endpoints import extra_of
from ._errors import ApiError
from ._tasks import SubmitRequest

__all__ = ["UNIFIED_MODELS", "UnifiedModel", "catalog_body", "parse_unified"]

_CHECKED: Final = "2026-12-06"
_PAGES: Final = "https://novita.ai/docs/api-reference/"


@attrs.frozen
class UnifiedModel:
    """One model of the simulated catalogue: its ``schema``, the reference ``page`` its
    fields come from and the date it was ``checked``, and ``extra`` keys served with it."""

    name: str
    description: str
    schema: Mapping[str, Any] = attrs.field(eq=False)
    page: str = ""
    checked: str = _CHECKED
    extra: Mapping[str, Any] = attrs.field(factory=dict, eq=False)

    def entry(self) -> dict[str, Any]:
        """The model's entry in the catalogue answer."""
        return {
            "model": self.name,
            "description": self.description,
            "json_schema": dict(self.schema),
            **self.extra,
        }


def _object(properties: dict[str, Any], required: Sequence[str], **keywords: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), **keywords}


def _text(description: str, high: int, low: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": description, "maxLength": high}
    if low:
        schema["minLength"] = low
    return schema


def _choice(kind: str, choices: Sequence[Any], default: Any = None, **more: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, "enum": list(choices), **more}
    if default is not None:
        schema["default"] = default
    return schema


def _flag(description: str, default: bool | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "boolean", "description": description}
    if default is not None:
        schema["default"] = default
    return schema


def _range(kind: str, low: float, high: float, default: Any = None, **more: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, "minimum": low, "maximum": high, **more}
    if default is not None:
        schema["default"] = default
    return schema


_IMAGE: Final = {
    "type": "string",
    "description": "A public image URL, or Base64 (data:image/jpeg;base64,...).",
}
# Minimax: 1080P is made for 6-second clips only (a rule between fields, as if/then).
_HAILUO_1080P: Final = {
    "if": {"properties": {"resolution": {"const": "1080P"}}, "required": ["resolution"]},
    "then": {"properties": {"duration": {"const": 6}}},
}
_HAILUO_DURATION: Final = _choice("integer", (6, 10), 6, description="Seconds of video.")
_HAILUO_RESOLUTION: Final = _choice(
    "string", ("768P", "1080P"), "768P", description="768P, or 1080P for 6-second clips only."
)
_HAILUO_PROMPT: Final = _text("Prompt text required to guide the generation.", 2000, 1)
_EXPANSION: Final = _flag("Whether to enable prompt optimization.", True)
_KLING_RATIOS: Final = ("16:9", "9:16", "1:1")
_KLING_PROMPT: Final = _text("Positive prompt; at most 2500 characters.", 2500)
_KLING_NEGATIVE: Final = _text("Negative prompt; at most 2500 characters.", 2500)
_KLING_CFG: Final = _range("number", 0, 1, 0.5, description="Higher follows the prompt closer.")
_MULTI_PROMPT: Final = {
    "type": "array",
    "description": "Prompts of a multi-shot video; not with prompt.",
    "items": _object({"prompt": {"type": "string"}, "duration": {"type": "integer"}}, []),
}


def _model(
    name: str, page: str, description: str, schema: dict[str, Any], **extra: Any
) -> UnifiedModel:
    return UnifiedModel(
        name,
        description,
        MappingProxyType(schema),
        page=_PAGES + page,
        extra=MappingProxyType({"category": "video", **extra}),
    )


#: The simulated catalogue, in the order it is served (at least one model per family the
#: reference lists: Kling 3.0 and 2.6, Hailuo 02 and 2.3, Seedance 1.5, Wan 2.6, Vidu Q3,
#: Hunyuan).
UNIFIED_MODELS: Final[Mapping[str, UnifiedModel]] = MappingProxyType(
    {
        model.name: model
        for model in (
            _model(
                "kling-v3.0-pro-t2v",
                "model-apis-kling-v3.0-pro-t2v",
                "Kling v3.0 Pro text-to-video: 3 to 15 s, audio co-generation, multi-shot.",
                _object(
                    {
                        "sound": _flag("Generate audio with the video.", False),
                        "prompt": _KLING_PROMPT,
                        "duration": _range("integer", 3, 15, 5, description="Seconds."),
                        "cfg_scale": _KLING_CFG,
                        "aspect_ratio": _choice("string", _KLING_RATIOS, "16:9"),
                        "multi_prompt": _MULTI_PROMPT,
                        "negative_prompt": _KLING_NEGATIVE,
                    },
                    ["prompt"],
                    additionalProperties=False,
                ),
            ),
            _model(
                "kling-v3.0-std-i2v",
                "model-apis-kling-v3.0-std-i2v",
                "Kling v3.0 Standard image-to-video, with an optional end frame.",
                _object(
                    {
                        "image": _IMAGE,
                        "sound": _flag("Generate audio with the video.", False),
                        "prompt": _KLING_PROMPT,
                        "duration": _choice("integer", range(3, 16), 5),
                        "cfg_scale": _KLING_CFG,
                        "end_image": _IMAGE,
                        "multi_prompt": _MULTI_PROMPT,
                        "negative_prompt": _KLING_NEGATIVE,
                    },
                    ["image"],
                ),
            ),
            _model(
                "kling-v2.6-pro-t2v",
                "model-apis-kling-v2.6-pro-t2v",
                "Kling v2.6 Pro text-to-video with synchronized audio.",
                _object(
                    {
                        "sound": _flag("Whether to generate audio along with the video.", True),
                        "prompt": _KLING_PROMPT,
                        "duration": _choice("integer", (5, 10), 5),
                        "cfg_scale": _range("number", 0, 1),
                        "aspect_ratio": _choice("string", _KLING_RATIOS, "1:1"),
                        "negative_prompt": _KLING_NEGATIVE,
                    },
                    ["prompt"],
                ),
            ),
            _model(
                "hailuo-02",
                "model-apis-minimax-hailuo-02",
                "Minimax Hailuo-02: 6 s at 768P or 1080P, 10 s at 768P; text or image to video.",
                _object(
                    {
                        "prompt": _HAILUO_PROMPT,
                        "image": _IMAGE,
                        "end_image": _IMAGE,
                        "duration": _HAILUO_DURATION,
                        "resolution": _HAILUO_RESOLUTION,
                        "enable_prompt_expansion": _EXPANSION,
                        "fast_pretreatment": _flag("Shorten the prompt optimization.", False),
                    },
                    ["prompt"],
                    allOf=[_HAILUO_1080P],
                ),
            ),
            _model(
                "hailuo-2.3-t2v",
                "model-apis-minimax-hailuo-2.3-t2v",
                "Minimax Hailuo 2.3 text-to-video, with camera commands in the prompt.",
                _object(
                    {
                        "prompt": _HAILUO_PROMPT,
                        "duration": _HAILUO_DURATION,
                        "resolution": _HAILUO_RESOLUTION,
                        "enable_prompt_expansion": _EXPANSION,
                    },
                    ["prompt"],
                    allOf=[_HAILUO_1080P],
                    **{"$schema": "http://json-schema.org/draft-07/schema#"},
                ),
            ),
            _model(
                "hailuo-2.3-fast-i2v",
                "model-apis-minimax-hailuo-2.3-fast-i2v",
                "Minimax Hailuo 2.3 Fast image-to-video: quicker, and cheaper.",
                _object(
                    {
                        "prompt": _HAILUO_PROMPT,
                        "image": _IMAGE,
                        "duration": _HAILUO_DURATION,
                        "resolution": _HAILUO_RESOLUTION,
                        "enable_prompt_expansion": _EXPANSION,
                    },
                    ["prompt", "image"],
                    allOf=[_HAILUO_1080P],
                ),
            ),
            _model(
                "seedance-v1.5-pro-t2v",
                "model-apis-seedance-v1.5-pro-t2v",
                "Seedance 1.5 pro text-to-video API.",
                _object(
                    {
                        "fps": _choice("integer", (24,), 24),
                        "seed": _range("integer", -1, 4294967295, -1),
                        "ratio": _choice(
                            "string",
                            ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"),
                            "adaptive",
                        ),
                        "prompt": {"type": "string", "description": "At most 500 is advised."},
                        "duration": _range("integer", 4, 12, description="Affects billing."),
                        "watermark": _flag("Whether the video has a watermark."),
                        "resolution": _choice("string", ("480p", "720p")),
                        "camera_fixed": _flag("Whether to fix the camera position."),
                        "service_tier": _choice("string", ("default", "flex"), "default"),
                        "generate_audio": _flag("Whether the video has synchronized audio."),
                    },
                    ["prompt"],
                ),
            ),
            _model(
                # The per-model pages (wan2.6-t2v, read through a mirror of Novita's docs,
                # and model-apis-wan2.6-i2v) nest these fields under "input" and
                # "parameters"; flattened here like the other models' (the unified shape
                # is unconfirmed). The sizes are the ones the mirrors list.
                "wan-2.6-t2v",
                "model-apis-wan2.6-t2v",
                "Wan 2.6 text-to-video: multi-shot, with audio.",
                _object(
                    {
                        "prompt": _text("What the video shows.", 2000),
                        "negative_prompt": _text("What to avoid.", 500),
                        "audio_url": {"type": "string", "description": "wav or mp3, 3 to 30 s."},
                        "size": _choice(
                            "string",
                            (
                                "1280*720",
                                "720*1280",
                                "960*960",
                                "1088*832",
                                "832*1088",
                                "1920*1080",
                                "1080*1920",
                                "1440*1440",
                                "1632*1248",
                                "1248*1632",
                            ),
                            "1920*1080",
                        ),
                        "duration": _choice("integer", (5, 10, 15), 5),
                        "shot_type": _choice("string", ("single", "multi"), "single"),
                        "audio": _flag("Add audio when no audio_url is given.", True),
                        "watermark": _flag("Add a watermark.", False),
                        "prompt_extend": _flag("Let a model rewrite the prompt.", True),
                        "seed": _range("integer", 0, 2147483647),
                    },
                    ["prompt"],
                ),
            ),
            _model(
                "vidu-q3-text2video",
                "model-apis-vidu-q3-pro-t2v",
                "Vidu Q3 text-to-video with synchronized audio, 1 to 16 s, up to 1080p.",
                _object(
                    {
                        "seed": _range("integer", 0, 2147483647, description="0 for random."),
                        "audio": _flag("Synchronized dialogue and sound effects.", True),
                        "prompt": _text("What the video shows.", 2000),
                        "wm_url": {"type": "string"},
                        "duration": _range("integer", 1, 16, 5),
                        "off_peak": _flag("Off-peak pricing, done within 48 hours.", False),
                        "watermark": _flag("Add a watermark.", False),
                        "resolution": _choice("string", ("540p", "720p", "1080p"), "720p"),
                        "wm_position": _range("integer", 1, 4),
                        "aspect_ratio": _choice(
                            "string", ("16:9", "9:16", "4:3", "3:4", "1:1"), "16:9"
                        ),
                    },
                    ["prompt"],
                ),
            ),
            _model(
                "hunyuan-video-fast",
                "model-apis-hunyuan-video-fast",
                "HunyuanVideo, accelerated: text-to-video at high resolution.",
                _object(
                    {
                        "width": _choice("integer", (480, 640, 720, 864, 1280)),
                        "height": _choice("integer", (480, 640, 720, 864, 1280)),
                        "seed": _range("integer", -1, 9999999999),
                        "steps": _range("integer", 2, 30),
                        "prompt": _text("Prompt text required to guide the generation.", 2000, 1),
                        "frames": _range("integer", 85, 129),
                    },
                    ["width", "height", "seed", "steps", "prompt"],
                ),
            ),
        )
    }
)


def catalog_body(entries: Sequence[Any] | None) -> dict[str, Any]:
    """The catalogue answer: ``entries`` as given (a test's odd ones), or the models'."""
    if entries is None:
        entries = [model.entry() for model in UNIFIED_MODELS.values()]
    return {"configs": list(entries)}


def models_of(entries: Sequence[Any] | None) -> Mapping[str, Mapping[str, Any]]:
    """The schema of each model the unified endpoint takes, by name."""
    if entries is None:
        return {name: model.schema for name, model in UNIFIED_MODELS.items()}
    found: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("json_schema"), dict):
            found.setdefault(str(entry.get("model")), entry["json_schema"])
    return found


def _problem(body: Mapping[str, Any], schema: Mapping[str, Any]) -> str | None:
    try:
        import jsonschema
    except ImportError:
        properties = schema.get("properties") or {}
        missing = [name for name in schema.get("required", ()) if name not in body]
        if missing:
            return f"{missing[0]} is required"
        unknown = [name for name in body if properties and name not in properties]
        return f"{unknown[0]} is not a field of this model" if unknown else None
    checker = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(checker(dict(schema)).iter_errors(dict(body)))
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path)
    return f"{where or 'body'}: {error.message[:200]}"


def parse_unified(body: Any, schemas: Mapping[str, Mapping[str, Any]]) -> SubmitRequest:
    """Validate a decoded ``POST /v3/video/create`` body against its model's schema; the
    fields, with the schema's defaults filled in (what makes two submits the same)."""
    if not isinstance(body, dict):
        raise ApiError.invalid_body("request body must be a JSON object")
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError.invalid_body("model is required: the name of a model of the catalogue")
    schema = schemas.get(name)
    if schema is None:
        raise ApiError.invalid_body(f"model {name!r} is not in the catalogue")
    fields = {key: value for key, value in body.items() if key not in ("model", "extra")}
    problem = _problem(fields, schema)
    if problem is not None:
        raise ApiError.invalid_body(problem)
    properties = schema.get("properties") or {}
    filled = {
        key: spec["default"]
        for key, spec in properties.items()
        if isinstance(spec, dict) and "default" in spec
    }
    filled.update(fields)
    webhook, extra = extra_of(body)
    return SubmitRequest(
        name,
        filled,
        webhook_url=None if webhook is None else webhook.url,
        webhook_test_status=None if webhook is None else webhook.test_status,
        extra=extra,
    )
