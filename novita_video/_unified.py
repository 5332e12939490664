"""Today's catalogue: every Novita video model, discovered from the API, checked by its schema.

Novita serves its 30-odd video models through one endpoint, ``POST /v3/video/create``
with a ``model`` field, and describes each model in a catalogue,
``GET /v3/admin/video-unify-api/config``: ``{"configs": [{"model", "description",
"json_schema", ...}, ...]}``. :func:`parse_catalog` reads it leniently (an entry that is
odd or unknown is skipped with a log line, never a crash) into :class:`CatalogModel`
objects: a name, a description, the fields read from the JSON Schema (types, choices,
ranges, defaults) and the schema itself.

A :class:`CatalogRequest` is "model X of the catalogue, with these fields". It is checked
against the model's JSON Schema before anything is sent (:meth:`CatalogModel.check`) by
the ``jsonschema`` package, an extra (``pip install 'novita-video[catalog]'``): a
well-kept implementation of every draft Novita may write (2020-12, 2019-09, 7, 6, 4),
used rather than a validator of our own. Without it a catalogue request is refused,
naming the extra, and never sent unchecked.

Two routes, one model: a catalogue model that also has a table of ours (``hailuo-02`` in
the catalogue is ``minimax-hailuo-02`` in ``_catalog``, see :data:`ALIASES`) goes the
typed route, ``POST /v3/async/minimax-hailuo-02`` with :class:`HailuoRequest`: its answer
and ``task_type`` are documented, it needs neither the catalogue nor ``jsonschema``, and a
folder of clips made before knows its prompts by that name. :func:`canonical_model` is
the name the command's ledger knows a model by, whichever name it was asked for.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType, ModuleType
from typing import Any, Final, NoReturn

import anyio
import attrs

from ._clock import Clock
from ._errors import InvalidRequestError, ProtocolError

__all__ = [
    "ALIASES",
    "CATALOG_PATH",
    "UNIFIED_PATH",
    "CatalogCache",
    "CatalogField",
    "CatalogModel",
    "CatalogRequest",
    "canonical_model",
    "parse_catalog",
    "require_jsonschema",
]

logger = logging.getLogger("novita_video")

#: The one submit endpoint of every catalogue model.
UNIFIED_PATH: Final = "/v3/video/create"
#: The catalogue: each model's name, description and JSON Schema.
CATALOG_PATH: Final = "/v3/admin/video-unify-api/config"
#: What to install for catalogue requests.
INSTALL_HINT: Final = "pip install 'novita-video[catalog]'"

#: Catalogue names of models this SDK has a table and typed request for, to the name of
#: that table: such a model goes its typed route, and is known by that name.
ALIASES: Final[Mapping[str, str]] = MappingProxyType({"hailuo-02": "minimax-hailuo-02"})

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: Characters of a value quoted in an error message.
_SHOWN = 60


def canonical_model(name: str) -> str:
    """The name a model is known by in a ledger: our table's name for a catalogue model
    that has one (``hailuo-02`` -> ``minimax-hailuo-02``), else ``name`` itself."""
    return ALIASES.get(name, name)


def _reject(field: str, message: str) -> NoReturn:
    raise InvalidRequestError(f"{field}: {message}", field)


def require_jsonschema() -> ModuleType:
    """The ``jsonschema`` module, or :class:`InvalidRequestError` naming the extra."""
    try:
        import jsonschema
    except ImportError as error:
        raise InvalidRequestError(
            "model: a request of Novita's catalogue is checked against its JSON Schema "
            f"before it is sent, which needs the jsonschema package: {INSTALL_HINT}",
            "model",
        ) from error
    return jsonschema


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@attrs.frozen
class CatalogField:
    """One field of a catalogue model, as its JSON Schema describes it.

    ``type`` is the JSON type (``"string"``, ``"integer"``, ``"number"``, ``"boolean"``,
    ``"array"``, ``"object"``; ``None`` when the schema does not say), ``choices`` its
    ``enum``, ``minimum``/``maximum`` a number's range, ``min_length``/``max_length`` a
    string's, ``default`` what the server applies when it is left out (``None``: the
    schema names none).
    """

    name: str
    type: str | None = None
    required: bool = False
    description: str = ""
    default: Any = attrs.field(default=None, eq=False)
    choices: tuple[Any, ...] = attrs.field(default=(), eq=False)
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    @classmethod
    def from_schema(cls, name: str, schema: Mapping[str, Any], *, required: bool) -> CatalogField:
        """Read one property's schema; keywords it does not know are left to the validator."""
        kind = schema.get("type")
        if isinstance(kind, list):  # ["string", "null"]: the type it is when it is given
            kind = next((k for k in kind if isinstance(k, str) and k != "null"), None)
        choices: tuple[Any, ...] = ()
        if isinstance(schema.get("enum"), list):
            choices = tuple(schema["enum"])
        elif "const" in schema:
            choices = (schema["const"],)
        description = schema.get("description")
        return cls(
            name,
            kind if isinstance(kind, str) else None,
            required,
            description.strip() if isinstance(description, str) else "",
            schema.get("default"),
            choices,
            _number(schema.get("minimum")),
            _number(schema.get("maximum")),
            _count(schema.get("minLength")),
            _count(schema.get("maxLength")),
        )

    def allows(self) -> str:
        """What the schema allows, in words: ``"an integer from 3 to 15 (default 5)"``."""
        kind = {
            "string": "a string",
            "integer": "an integer",
            "number": "a number",
            "boolean": "true or false",
            "array": "a list",
            "object": "an object",
        }.get(self.type or "", "a value")
        if self.choices:
            words = f"one of {', '.join(_shown(choice) for choice in self.choices)}"
        elif self.minimum is not None or self.maximum is not None:
            low = "" if self.minimum is None else f"{self.minimum:g}"
            high = "" if self.maximum is None else f"{self.maximum:g}"
            words = (
                f"{kind} from {low} to {high}"
                if low and high
                else f"{kind} of at least {low}"
                if low
                else f"{kind} of at most {high}"
            )
        elif self.max_length is not None:
            words = f"{kind} of {self.min_length or 0} to {self.max_length} characters"
        else:
            words = kind
        if self.default is not None:
            words += f" (default {_shown(self.default)})"
        return words


def _frozen_json(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        _reject("body", f"must be a mapping of field names, not {type(value).__name__}")
    try:
        # A round trip proves it is JSON and detaches it from the caller's mutable dict.
        copy = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as error:
        _reject("body", f"must be JSON-serialisable ({error})")
    return MappingProxyType(copy)


def _model_name(_: object, __: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        _reject("model", f"must be a model name such as 'kling-v3.0-pro-t2v', not {value!r}")


@attrs.frozen
class CatalogRequest:
    """One clip of a model of Novita's catalogue, by name: ``POST /v3/video/create`` with
    ``{"model": model, **body}``.

    It is checked against the model's JSON Schema (from :meth:`Client.models`) before
    anything is sent, by :meth:`Client.submit` and :meth:`Client.generate`; a wrong field
    raises :class:`InvalidRequestError` naming it and what the schema allows. That needs
    ``pip install 'novita-video[catalog]'`` (``jsonschema``). A model that has a typed
    request too (``hailuo-02``: :class:`HailuoRequest`) is sent that way instead.

    >>> CatalogRequest("kling-v3.0-pro-t2v", {"prompt": "a fox", "duration": 5}).endpoint
    'kling-v3.0-pro-t2v'
    """

    model: str = attrs.field(validator=_model_name)
    body: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_json)

    @property
    def endpoint(self) -> str:
        """The model's name: what its rate limit and a ledger know it by."""
        return self.model

    @property
    def prompt(self) -> str:
        """The body's ``prompt``, if it has a str one (for names and logs)."""
        prompt = self.body.get("prompt")
        return prompt if isinstance(prompt, str) else ""


@attrs.frozen
class CatalogModel:
    """One model of Novita's catalogue: its ``name``, ``description``, ``fields`` (read
    from its JSON Schema, in the schema's order) and the ``schema`` itself.

    >>> model.request({"prompt": "a fox", "duration": 5})     # doctest: +SKIP
    CatalogRequest(model='kling-v3.0-pro-t2v', body=...)
    """

    name: str
    description: str
    fields: tuple[CatalogField, ...]
    schema: Mapping[str, Any] = attrs.field(eq=False, repr=False)

    def field(self, name: str) -> CatalogField:
        """The field called ``name``; ``KeyError`` if the schema has none."""
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(name)

    @property
    def required(self) -> tuple[str, ...]:
        """The names of the fields a request must give."""
        return tuple(field.name for field in self.fields if field.required)

    def check(self, body: Mapping[str, Any]) -> None:
        """Raise :class:`InvalidRequestError` naming the first field of ``body`` that the
        schema refuses, and what it allows; fields it does not list are refused too (a
        misspelt field would make another clip). Needs ``jsonschema``."""
        if "model" in body:
            _reject("model", f"is the request's model ({self.name}), not a field of its body")
        names = [field.name for field in self.fields]
        unknown = sorted(str(key) for key in body if key not in names)
        if unknown and names:
            _reject(
                unknown[0],
                f"{self.name} has no field {', '.join(unknown)}; its fields: {', '.join(names)}",
            )
        jsonschema = require_jsonschema()
        # jsonschema >= 4.18 (the extra's floor) resolves $ref with referencing.
        from referencing.exceptions import Unresolvable

        validator_class = jsonschema.validators.validator_for(
            self.schema, default=jsonschema.Draft202012Validator
        )
        try:
            errors = list(validator_class(dict(self.schema)).iter_errors(dict(body)))
        except (Unresolvable, RecursionError) as error:
            # A schema that passes check_schema may still point nowhere ($ref to a
            # missing definition, or round in a circle): it cannot check this request,
            # and a request it cannot check is not sent.
            raise InvalidRequestError(
                f"model: the catalogue's JSON Schema of {self.name} cannot be used to check "
                f"a request ({_first_line(error)}); nothing is sent",
                "model",
            ) from error
        if errors:
            self._explain(jsonschema.exceptions.best_match(errors), body)

    def request(self, body: Mapping[str, Any] | None = None, /, **fields: Any) -> CatalogRequest:
        """A :class:`CatalogRequest` of this model, checked (see :meth:`check`)."""
        request = CatalogRequest(self.name, {**(body or {}), **fields})
        self.check(request.body)
        return request

    def _explain(self, error: Any, body: Mapping[str, Any]) -> NoReturn:
        # One error, in the words the typed requests use: the field, what is wrong with
        # it, and what the schema allows (jsonschema's own words for anything deeper).
        path = list(error.absolute_path)
        if error.validator == "required" and not path:
            missing = [name for name in self.required if name not in body] or ["body"]
            _reject(missing[0], f"is required ({self.name} needs {', '.join(self.required)})")
        if not path:
            _reject("body", str(error.message)[:200])
        name = str(path[0])
        if len(path) > 1:
            where = name + "".join(f"[{part}]" for part in path[1:])
            _reject(name, f"{where}: {str(error.message)[:200]}")
        value = error.instance
        if error.validator in ("maxLength", "minLength") and isinstance(value, str):
            what = f"has {len(value)} characters"
        else:
            what = f"cannot be {_shown(value)}"
        try:
            allows = self.field(name).allows()
        except KeyError:
            _reject(name, str(error.message)[:200])
        _reject(name, f"{what}; {self.name} allows {allows}")


def _entries(data: Any) -> list[Any] | None:
    # {"configs": [...]} as documented; a {"data": ...} wrapper or a bare list is read too.
    if isinstance(data, dict) and isinstance(data.get("data"), dict | list):
        data = data["data"]
    if isinstance(data, dict):
        configs = data.get("configs")
        return configs if isinstance(configs, list) else None
    return data if isinstance(data, list) else None


def _schema_of(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    schema = entry.get("json_schema", entry.get("schema"))
    if isinstance(schema, str):  # a schema sent as a JSON string
        try:
            schema = json.loads(schema)
        except ValueError:
            return None
    return schema if isinstance(schema, Mapping) else None


def _model(entry: object, number: int) -> CatalogModel | None:
    if not isinstance(entry, Mapping):
        logger.warning("catalogue entry %d skipped: not an object", number)
        return None
    name = entry.get("model")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        logger.warning("catalogue entry %d skipped: no usable model name (%r)", number, name)
        return None
    schema = _schema_of(entry)
    if schema is None:
        logger.warning("catalogue model %s skipped: no JSON Schema", name)
        return None
    problem = _schema_problem(schema)
    if problem is not None:
        logger.warning("catalogue model %s skipped: its JSON Schema is broken (%s)", name, problem)
        return None
    properties = schema.get("properties")
    required = schema.get("required")
    needed = {str(item) for item in required} if isinstance(required, list) else set()
    fields: list[CatalogField] = []
    for field_name, field_schema in (properties or {}).items():
        if not isinstance(field_schema, Mapping):
            continue  # a boolean schema (true/false): a field without a description
        fields.append(
            CatalogField.from_schema(str(field_name), field_schema, required=field_name in needed)
        )
    description = entry.get("description")
    return CatalogModel(
        name,
        description.strip() if isinstance(description, str) else "",
        tuple(fields),
        MappingProxyType(json.loads(json.dumps(schema))),
    )


def _first_line(error: BaseException) -> str:
    """An exception's message, on one line and short (a schema error can be long)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]


def _schema_problem(schema: Mapping[str, Any]) -> str | None:
    if "properties" in schema and not isinstance(schema["properties"], Mapping):
        return "its properties are not an object"
    try:
        jsonschema = require_jsonschema()
    except InvalidRequestError:
        return None  # checked when a request is, which then names the extra
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    try:
        validator_class.check_schema(dict(schema))
    except jsonschema.exceptions.SchemaError as error:
        return str(error.message)[:200]
    return None


def parse_catalog(data: Any, *, body: bytes = b"") -> tuple[CatalogModel, ...]:
    """The models of a decoded catalogue answer, in its order; odd entries are skipped
    with a log line. :class:`ProtocolError` if it is not a catalogue at all."""
    entries = _entries(data)
    if entries is None:
        raise ProtocolError(
            "catalogue: the answer is not the documented shape (no list of configs)",
            body.decode("utf-8", "replace")[:200],
        )
    models: dict[str, CatalogModel] = {}
    for number, entry in enumerate(entries):
        model = _model(entry, number)
        if model is None:
            continue
        if model.name in models:
            logger.warning("catalogue model %s is listed twice; the first is kept", model.name)
            continue
        models[model.name] = model
    return tuple(models.values())


def known(models: Iterable[CatalogModel]) -> str:
    """The names of ``models``, for an error message."""
    names = sorted(model.name for model in models)
    return ", ".join(names) if names else "none"


class CatalogCache:
    """One client's catalogue: fetched on first use, kept ``max_age`` seconds, and
    fetched once however many callers ask at the same moment."""

    def __init__(
        self, fetch: Callable[[], Awaitable[tuple[CatalogModel, ...]]], *, clock: Clock
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock: anyio.Lock | None = None
        self._kept: tuple[float, tuple[CatalogModel, ...]] | None = None
        self._fetches = 0

    def _fresh(self, max_age: float) -> tuple[CatalogModel, ...] | None:
        if self._kept is None:
            return None
        fetched_at, models = self._kept
        return models if self._clock.now() - fetched_at < max_age else None

    async def get(self, max_age: float) -> tuple[CatalogModel, ...]:
        """The catalogue, fetched again when the one kept is ``max_age`` seconds old."""
        models = self._fresh(max_age)
        if models is not None:
            return models
        if self._lock is None:
            self._lock = anyio.Lock()
        fetches = self._fetches
        async with self._lock:
            # Someone else may have fetched it while this call waited for the lock.
            if self._kept is not None and self._fetches > fetches:
                return self._kept[1]
            models = await self._fetch()
            self._kept = (self._clock.now(), models)
            self._fetches += 1
            return models
