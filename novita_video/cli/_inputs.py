"""Prompt files: ``.txt``, ``.jsonl`` or ``.csv`` (or stdin), read lazily with line numbers.

A batch reads its input twice (three times, counting the manifest): a first pass checks
every line and reports every mistake with its line number before anything is sent, and
later passes stream the same rows again to submit them. Nothing holds the whole file:
rows are parsed one at a time, and stdin, which cannot be read twice, is copied to an
anonymous temporary file during the first pass.

Each row becomes a :class:`Row`: its 1-based position among the prompts (``index``), the
line where it starts, the validated request of the batch's model (a
:class:`~novita_video.VideoRequest` by default, a :class:`~novita_video.HailuoRequest` with
``--model minimax-hailuo-02``, ...) and the user's optional ``id``. A ``.jsonl`` line or a
``.csv`` row may carry any field of that model (``duration``, ``resolution`` for Hailuo;
``image_url``, ``negative_prompt``, ... for Kling); the request is made by the SDK's
``to_request``, so its rules and messages apply, reported with the line number. For a
model of Novita's catalogue (:class:`~novita_video.CatalogModel`, ``--model`` of any
other name) a line may carry any field its JSON Schema lists, and is checked against it
(``CatalogModel.request``); a CSV cell of a list or object field is read as JSON.

``Row.key`` is the prompt's identity in the ledger, by what it is, never where it is
(and by the model's canonical name: ``hailuo-02`` of the catalogue is ``minimax-hailuo-02``
of our tables, so either name finds the same prompts):

* a line with an ``id`` is that id, for its model: its text (or any other field) may be
  corrected and it stays the same prompt. Two lines with one id are an error that names
  both, found in the first pass;
* a line without one is its model, every field of its request (defaults included), and
  which occurrence of that identical content it is among the lines without an id: the
  second identical ``a panda`` line is a prompt of its own, and the first stays the first.

So inserting, deleting, reordering or duplicating lines never makes an existing prompt a
new one. Counting occurrences streams: each pass keeps a dict of a 64-bit content hash to
its count so far (tens of bytes per distinct prompt, never a line), and a dict of the ids
seen to their lines. :func:`prompt_key` is the formula, shared with the ledger's migration
of keys written before (when a key was the line's position with its fields).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import IO, Any, Final, Protocol

import attrs

from .._catalog import CATALOG
from .._errors import InvalidRequestError
from .._requests import MODELS, AsyncRequest, Request, VideoRequest, to_request
from .._unified import ALIASES, CatalogModel, CatalogRequest, canonical_model

__all__ = [
    "FORMATS",
    "InputError",
    "PromptSource",
    "Row",
    "Validation",
    "content_hash",
    "model_fields",
    "prompt_key",
    "request_fields",
]

#: The formats and the file name endings that select them.
FORMATS: Final = {".txt": "txt", ".jsonl": "jsonl", ".csv": "csv"}

_TRUE: Final = frozenset({"true", "1", "yes", "y"})
_FALSE: Final = frozenset({"false", "0", "no", "n"})


#: A model a file's lines are for: one of our tables by name, or a catalogue model.
ModelSpec = str | CatalogModel


def _name(model: ModelSpec) -> str:
    return model.name if isinstance(model, CatalogModel) else model


def model_fields(model: ModelSpec) -> tuple[str, ...]:
    """The fields a line may carry for ``model``: its request's fields, then ``id``."""
    if isinstance(model, CatalogModel):
        return (*(field.name for field in model.fields), "id")
    return (*attrs.fields_dict(MODELS[model]), "id")


def request_fields(request: Request) -> dict[str, Any]:
    """Every field of ``request``, defaults included (JSON-able: what identifies it)."""
    if isinstance(request, AsyncRequest | CatalogRequest):
        return dict(request.body)
    return attrs.asdict(request)


def _canonical(value: object) -> object:
    # A number is its value, not its spelling: 1, 1.0 and a CSV's "1" read as a float
    # are one prompt (a formatter's rewrite must not pay again).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def identity(request: Request) -> tuple[str, dict[str, Any]]:
    """What a prompt is, whichever route it goes: the model's canonical name and its
    fields. A catalogue request of a model of our tables is its typed request's."""
    if isinstance(request, CatalogRequest) and request.model in ALIASES:
        # Fields our table does not know: it is known by what was given.
        with contextlib.suppress(InvalidRequestError):
            request = to_request(dict(request.body), ALIASES[request.model])
    return canonical_model(request.endpoint), request_fields(request)


def _digest(payload: object) -> bytes:
    # sort_keys: the same fields always hash the same, whatever order they came in (a
    # ledger's stored JSON, a JSONL line, attrs' field order).
    return hashlib.sha256(json.dumps(_canonical(payload), sort_keys=True).encode()).digest()


def content_hash(model: str, fields: Mapping[str, Any]) -> int:
    """64 bits of what a request is (its model and every field): for counting occurrences
    of identical content within one pass (a collision merely numbers two prompts as one
    content's occurrences, about once in 10^10 pairs)."""
    return int.from_bytes(_digest([model, fields])[:8], "big")


def prompt_key(
    model: str, user_id: str | None, fields: Mapping[str, Any], occurrence: int = 1
) -> str:
    """The identity of a prompt in the ledger (hex): its ``id`` and model when it has an
    id; otherwise its model, its fields and which occurrence of that content it is."""
    payload: dict[str, Any]
    if user_id is not None:
        payload = {"model": model, "id": user_id}
    else:
        payload = {"model": model, "fields": fields, "occurrence": occurrence}
    return _digest(payload).hex()


@attrs.frozen
class Row:
    """One prompt of the input, validated.

    ``occurrence`` is which line of identical content (model and fields) this one is,
    among the lines without an id (1 for the first, and for every line with an id).
    """

    index: int
    line: int
    request: Request
    id: str | None = None
    occurrence: int = 1

    @property
    def key(self) -> str:
        """The prompt's identity in the ledger (see the module docstring)."""
        model, fields = identity(self.request)
        return prompt_key(model, self.id, fields, self.occurrence)


class InputError(Exception):
    """A line of the input that cannot become a prompt; ``str()`` reads ``name:line: why``."""

    def __init__(self, name: str, line: int, message: str) -> None:
        super().__init__(name, line, message)

    @property
    def line(self) -> int:
        """The line number, or 0 when the error concerns the whole file."""
        return int(self.args[1])

    def __str__(self) -> str:
        name, line, message = self.args
        return f"{name}:{line}: {message}" if line else f"{name}: {message}"


@attrs.frozen
class Validation:
    """What the first pass found: how many prompts, and the first errors (of ``error_count``)."""

    count: int
    errors: tuple[InputError, ...]
    error_count: int


def _local_images(item: Mapping[str, Any], model: ModelSpec, name: str) -> Mapping[str, Any]:
    """Image fields that name a local file (not a URL or a data URI) as paths, relative to
    the prompts file (or, for stdin, the working directory): the SDK sends them inline.
    (A catalogue model's schema does not say which fields are images: they go as given.)"""
    if isinstance(model, CatalogModel):
        return item
    changed = dict(item)
    base = Path.cwd() if name == "<stdin>" else Path(name).parent
    for field in CATALOG[model].fields:
        value = item.get(field.name)
        if field.kind != "image" or not isinstance(value, str) or not value.strip():
            continue
        if "://" not in value and not value.startswith("data:"):
            changed[field.name] = base / value
    return changed


def _request(item: Mapping[str, Any], model: ModelSpec, where: tuple[str, int]) -> Request:
    # Values come straight from JSON or CSV: the SDK checks their types and says what is
    # wrong. The prompt is stripped: surrounding blanks are never meant, and a trailing
    # space left by an editor must not change a prompt's identity.
    prompt = item.get("prompt")
    if isinstance(prompt, str):
        item = {**item, "prompt": prompt.strip()}
    item = _local_images(item, model, where[0])
    try:
        if isinstance(model, CatalogModel):
            # A null (or a blank CSV cell) leaves the field out, as for our own models.
            return model.request({key: value for key, value in item.items() if value is not None})
        return to_request(item, model)
    except InvalidRequestError as error:
        raise InputError(*where, str(error)) from None


#: Bytes a line may have. A prompt is at most 2000 characters (8000 bytes of UTF-8); a
#: JSONL or CSV row adds a few fields. Longer lines are errors, and are never held whole.
MAX_LINE_BYTES = 1 << 16


class _Lines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


def _bounded_lines(binary: _Lines) -> Iterator[bytes | None]:
    """The lines of ``binary``; ``None`` for a line over :data:`MAX_LINE_BYTES`, whose
    rest is skipped in bounded pieces (a 100 MB file with no newline is never read whole)."""
    while line := binary.readline(MAX_LINE_BYTES + 1):
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while (rest := binary.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield None


def _text_lines(binary: _Lines, name: str) -> Iterator[tuple[int, str | InputError]]:
    """``(line number, text with its newline)``, or an error for a line that is not UTF-8
    or too long."""
    for number, raw in enumerate(_bounded_lines(binary), 1):
        if raw is None:
            yield number, InputError(name, number, f"longer than {MAX_LINE_BYTES} bytes")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield number, InputError(name, number, f"not UTF-8 text ({error.reason})")
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")  # a byte order mark from a Windows editor
        yield number, text


_Parser = Callable[
    [Iterable[tuple[int, "str | InputError"]], str, ModelSpec], Iterator["Row | InputError"]
]


def _parse_txt(
    lines: Iterable[tuple[int, str | InputError]], name: str, model: ModelSpec
) -> Iterator[Row | InputError]:
    index = 0
    for number, text in lines:
        if isinstance(text, InputError):
            yield text
            continue
        prompt = text.strip()
        if not prompt or prompt.startswith("#"):
            continue
        index += 1
        try:
            yield Row(index, number, _request({"prompt": prompt}, model, (name, number)))
        except InputError as error:
            yield error


def _user_id(value: object, where: tuple[str, int]) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(*where, f"id: must be a string or a whole number, not {value!r}")
    return _clean_id(str(value))


def _clean_id(value: str | None) -> str | None:
    # An id is the prompt's identity: blanks an editor adds around it must not make it
    # another prompt, and a blank id is no id.
    value = None if value is None else value.strip()
    return value or None


_ONE_OBJECT: Final = 'each line must be one JSON object, such as {"prompt": "a red kite"}'


def _json_problem(text: str, error: json.JSONDecodeError) -> str:
    """Why a line is not JSON, in words about the line (not the decoder's own lines)."""
    if error.pos >= len(text.rstrip()):
        return (
            "not valid JSON: the line ends before its JSON does (a missing closing brace "
            f"or quote, or a line break inside a value?); {_ONE_OBJECT}"
        )
    column = error.pos + 1
    near = text[max(0, error.pos - 15) : error.pos + 15].strip()
    return f"not valid JSON at column {column} ({error.msg.lower()}, near {near!r}); {_ONE_OBJECT}"


def _jsonl_row(text: str, index: int, model: ModelSpec, where: tuple[str, int]) -> Row:
    try:
        item = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(*where, _json_problem(text, error)) from None
    except ValueError as error:
        raise InputError(*where, f"not valid JSON ({error})") from None
    except RecursionError:
        raise InputError(*where, "not valid JSON (nested too deeply)") from None
    if not isinstance(item, dict):
        raise InputError(*where, f"must be a JSON object, not {type(item).__name__}")
    fields = model_fields(model)
    # A catalogue schema that lists no fields takes any (its validator decides).
    listed = not isinstance(model, CatalogModel) or bool(model.fields)
    unknown = sorted(set(item) - set(fields)) if listed else []
    if unknown:
        # Strict, because a misspelt "image_url" would silently make a different clip.
        raise InputError(
            *where,
            f"unknown field(s) {', '.join(unknown)}; {_name(model)} takes {', '.join(fields)} "
            "(--model chooses another model)",
        )
    if "prompt" not in item and "prompt" in fields:
        raise InputError(*where, "no 'prompt'")
    user_id = _user_id(item.pop("id", None), where)
    return Row(index, where[1], _request(item, model, where), user_id)


def _parse_jsonl(
    lines: Iterable[tuple[int, str | InputError]], name: str, model: ModelSpec
) -> Iterator[Row | InputError]:
    index = 0
    for number, text in lines:
        if isinstance(text, InputError):
            yield text
            continue
        if not text.strip():
            continue
        index += 1
        try:
            yield _jsonl_row(text, index, model, (name, number))
        except InputError as error:
            yield error


def _csv_bool(name: str, value: str, where: tuple[str, int]) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InputError(*where, f"{name}: must be true or false, not {value!r}")


def _csv_number(
    name: str, value: str, kind: type[int] | type[float], where: tuple[str, int]
) -> Any:
    try:
        return kind(value.strip())
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InputError(*where, f"{name}: must be {what}, not {value!r}") from None


#: The type a CSV cell of a catalogue field is read as, by its JSON type.
_JSON_KINDS: Final[dict[str | None, type]] = {
    "boolean": bool,
    "integer": int,
    "number": float,
    "array": list,
    "object": dict,
}


def _csv_kinds(model: ModelSpec) -> dict[str, type]:
    """The type a CSV cell of each of ``model``'s fields is read as: bool, int, float or
    str (a catalogue model's list or object fields: JSON)."""
    if isinstance(model, CatalogModel):
        return {field.name: _JSON_KINDS.get(field.type, str) for field in model.fields}
    return _typed_csv_kinds(model)


@cache
def _typed_csv_kinds(model: str) -> dict[str, type]:
    """The kinds of a typed request's fields, read from its class's annotations, so a new
    model's columns need no code here."""
    hints = typing.get_type_hints(MODELS[model])
    kinds: dict[str, type] = {}
    for name in attrs.fields_dict(MODELS[model]):
        hint = hints[name]
        options = set(typing.get_args(hint)) if _is_union_or_literal(hint) else {hint}
        if bool in options or all(isinstance(o, bool) for o in options):
            kinds[name] = bool
        elif int in options or (options and all(type(o) is int for o in options)):
            kinds[name] = int
        elif float in options:
            kinds[name] = float
        else:
            kinds[name] = str
    return kinds


def _is_union_or_literal(hint: object) -> bool:
    origin = typing.get_origin(hint)
    return origin in (typing.Union, types.UnionType, typing.Literal)


def _csv_value(name: str, cell: str, kind: type, where: tuple[str, int]) -> Any:
    """A CSV cell as the field's type; an empty cell is the field's default (None)."""
    if not cell.strip():
        # Blank prompts stay blank (and are refused by name); other blank cells mean default.
        return cell if name == "prompt" else None
    if kind is bool:
        return _csv_bool(name, cell, where)
    if kind is int or kind is float:
        return _csv_number(name, cell, kind, where)
    if kind is list or kind is dict:
        try:
            value = json.loads(cell)
        except ValueError:
            what = "a JSON list" if kind is list else "a JSON object"
            raise InputError(*where, f"{name}: must be {what}, not {cell!r}") from None
        return value
    return cell


def _cell(record: list[str], position: dict[str, int], column: str) -> str | None:
    at = position.get(column)
    return record[at] if at is not None and at < len(record) else None


def _parse_csv(
    lines: Iterable[tuple[int, str | InputError]], name: str, model: ModelSpec
) -> Iterator[Row | InputError]:
    numbers: list[int] = [0]  # the last line the reader took, for error messages

    def texts() -> Iterator[str]:
        for number, text in lines:
            numbers[0] = number
            if isinstance(text, InputError):
                raise text  # a CSV record may span lines: bad bytes end the file
            yield text

    reader = csv.reader(texts())
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise InputError(name, numbers[0], f"not valid CSV ({error})") from None
    if header is None:
        return
    columns = [column.strip().lower() for column in header]
    fields = model_fields(model)
    if "prompt" not in columns and "prompt" in fields:
        raise InputError(name, numbers[0], "the header has no 'prompt' column")
    duplicates = sorted({c for c in columns if c in fields and columns.count(c) > 1})
    if duplicates:
        raise InputError(name, numbers[0], f"duplicate column(s) {', '.join(duplicates)}")
    # Other columns (notes, ratings, ...) are ignored: CSV files come from spreadsheets.
    position: dict[str, int] = {c: columns.index(c) for c in fields if c in columns}
    kinds = _csv_kinds(model)
    index = 0
    while True:
        start = numbers[0] + 1
        try:
            record = next(reader, None)
        except csv.Error as error:
            raise InputError(name, start, f"not valid CSV ({error})") from None
        if record is None:
            return
        if not any(cell.strip() for cell in record):
            continue
        index += 1
        where = (name, start)
        try:
            item = {
                field: _csv_value(field, _cell(record, position, field) or "", kinds[field], where)
                for field in kinds
                if field in position or field == "prompt"
            }
            user_id = _clean_id(_cell(record, position, "id"))
            yield Row(index, start, _request(item, model, where), user_id)
        except InputError as error:
            yield error


_PARSERS: Final[dict[str, _Parser]] = {
    "txt": _parse_txt,
    "jsonl": _parse_jsonl,
    "csv": _parse_csv,
}


def _identified(
    items: Iterator[Row | InputError], name: str, *, count: bool = True
) -> Iterator[Row | InputError]:
    """``items`` with a second line of an id an error, and (``count``) each row's
    occurrence numbered.

    Streams: only a count per distinct content and a line per id are kept.
    """
    seen: dict[int, int] = {}  # content hash -> lines without an id that had it so far
    ids: dict[str, int] = {}  # id -> the line it was first on
    for item in items:
        if isinstance(item, InputError):
            yield item
        elif item.id is not None:
            first = ids.setdefault(item.id, item.line)
            if first == item.line:
                yield item
            else:
                yield InputError(
                    name,
                    item.line,
                    f"id {item.id!r} is also on line {first}: an id names one prompt; "
                    "give one of them another id",
                )
        elif not count:
            yield item
        else:
            content = content_hash(*identity(item.request))
            occurrence = seen[content] = seen.get(content, 0) + 1
            yield item if occurrence == 1 else attrs.evolve(item, occurrence=occurrence)


class PromptSource:
    """An input of prompts for ``model``: a path, or ``-`` for stdin, in one of :data:`FORMATS`.

    Call :meth:`validate` once (the first pass), then :meth:`rows` as often as needed.
    """

    def __init__(
        self, path: str, fmt: str | None = None, model: ModelSpec = VideoRequest.endpoint
    ) -> None:
        if isinstance(model, str) and model not in MODELS:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(sorted(MODELS))}")
        self.model = model
        self.path = path
        self.name = "<stdin>" if path == "-" else path
        if fmt is None:
            fmt = "txt" if path == "-" else FORMATS.get(Path(path).suffix.lower())
        if fmt is None:
            raise InputError(
                self.name,
                0,
                "cannot tell its format: name it .txt, .jsonl or .csv, or use --format",
            )
        self.format = fmt
        self._spool: IO[bytes] | None = None

    def close(self) -> None:
        """Drop the copy of stdin, if one was made."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    @contextlib.contextmanager
    def _binary(self, *, first: bool) -> Iterator[_Lines]:
        if self.path != "-":
            try:
                file = open(self.path, "rb")  # noqa: SIM115 (closed by the with below)
            except OSError as error:
                raise InputError(self.name, 0, error.strerror or str(error)) from None
            with file:
                yield file
            return
        if first:
            # Kept for the later passes; close() drops it.
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115
            yield _Copied(sys.stdin.buffer, self._spool)
        else:
            assert self._spool is not None, "validate() reads stdin first"
            self._spool.seek(0)
            yield self._spool

    def _parse(self, binary: _Lines, *, count: bool = True) -> Iterator[Row | InputError]:
        rows = _PARSERS[self.format](_text_lines(binary, self.name), self.name, self.model)
        return _identified(rows, self.name, count=count)

    def validate(self, keep: int = 20) -> Validation:
        """The first pass: count the prompts and collect the errors (the first ``keep``)."""
        count = 0
        errors: list[InputError] = []
        error_count = 0
        with self._binary(first=True) as binary:
            try:
                # Occurrences are not counted here: only the later passes need them.
                for item in self._parse(binary, count=False):
                    if isinstance(item, Row):
                        count += 1
                        continue
                    error_count += 1
                    if len(errors) < keep:
                        errors.append(item)
            except InputError as fatal:  # the rest cannot be read (a bad CSV header, ...)
                error_count += 1
                errors.append(fatal)
        return Validation(count, tuple(errors), error_count)

    def rows(self) -> Generator[Row, None, None]:
        """Stream the rows again; an error here means the input changed since validation."""
        with self._binary(first=False) as binary:
            for item in self._parse(binary):
                if isinstance(item, InputError):
                    raise item
                yield item


class _Copied:
    """``source`` read line by line, each piece written to ``copy`` as it passes."""

    def __init__(self, source: IO[bytes], copy: IO[bytes]) -> None:
        self._source = source
        self._copy = copy

    def readline(self, size: int = -1, /) -> bytes:
        piece = self._source.readline(size)
        self._copy.write(piece)
        return piece
