"""What a batch leaves for people: clip file names and ``manifest.jsonl``.

Clip names come from the input, never from the server: ``<slug>-<hash>.mp4``, a short
ASCII slug of the prompt's text and the first 8 hex digits of its identity
(:attr:`Row.key`: its id, or its model, fields and occurrence; never its line position).
A prompt keeps its clip's name when lines are inserted, deleted or moved around it, and
the same text made with two models gets two names. Once a clip is downloaded its name is
in the ledger and stays (a folder made before names had a hash keeps its
``0001-<slug>.mp4`` files). A name is never given to two prompts: when a file of that name
is already there (or another prompt's record names it), the next of ``<slug>-<hash>-2.mp4``,
``-3``, ... is taken, so no paid clip is ever written over.

The manifest has one JSON line per prompt of the input, with the ``model`` it is made
with; the gallery (:mod:`._gallery`) is made from the manifest. Both are written to a
temporary file and renamed into place, so a reader never sees half of one. A prompt known
by its ``id`` whose fields were changed since its task was sent keeps that task and clip:
its line says what they were made from (``made_from``), and the command says so on
stderr (:func:`changed_since_sent`). Each line also has the task's ``time_to_make`` and the
``earlier_tasks`` of a prompt sent again on purpose (``--retry-failed``).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Final

import attrs

from .._download import replacing
from ._inputs import Row, request_fields
from ._ledger import Ledger, Record, State

__all__ = [
    "Entry",
    "changed_since_sent",
    "clip_name",
    "counts",
    "failures",
    "kind_of",
    "read_manifest",
    "remove_leftovers",
    "replacing_text",
    "slugify",
    "write_manifest",
]

SLUG_LENGTH: Final = 40

#: What the manifest says of a prompt, by its ledger state (no record: not submitted).
STATUS: Final = {
    State.SENDING: "unknown",
    State.UNKNOWN: "unknown",
    State.REJECTED: "rejected",
    State.SUBMITTED: "pending",
    State.SUCCEEDED: "succeeded",
    State.FAILED: "failed",
}
NOT_SUBMITTED: Final = "not_submitted"
UNKNOWN_REASON: Final = (
    "its submit was in flight when a run stopped, so Novita may have made (and billed) a "
    "task; check the dashboard, then run again with --resubmit-unknown to send it again"
)


def slugify(text: str, limit: int = SLUG_LENGTH) -> str:
    """Lowercase ASCII letters, digits and dashes, at most ``limit`` long, never empty.

    >>> slugify("Ein Bär läuft durch den Schnee!")
    'ein-bar-lauft-durch-den-schnee'
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    if len(slug) > limit:
        cut = slug[: limit + 1]
        # End on a whole word when one fits; a single long word is cut anyway.
        slug = cut[: cut.rindex("-")] if "-" in cut else slug[:limit]
    return slug or "clip"


#: Hex digits of a prompt's key in its clip's name (32 bits: a clash needs the same slug
#: too, and is then resolved by :func:`clip_name`).
NAME_HASH: Final = 8


def clip_name(row: Row, out: Path | None = None, ledger: Ledger | None = None) -> str:
    """The file name of a row's clip: ``a-panda-walks-through-bamboo-3fa2b1c4.mp4``.

    With the folder ``out`` and its ``ledger``: the name the prompt's record already has,
    or else the first of ``<slug>-<hash>.mp4``, ``<slug>-<hash>-2.mp4``, ... that no file
    in ``out`` and no other prompt has, claimed for this prompt (see the module docstring).
    """
    stem = f"{slugify(row.request.prompt)}-{row.key[:NAME_HASH]}"
    if out is None or ledger is None:
        return f"{stem}.mp4"
    record = ledger.get(row.key)
    if record is not None and record.file is not None:
        return record.file  # its own clip: downloaded again under the name it had
    for number in itertools.count(1):
        name = f"{stem}.mp4" if number == 1 else f"{stem}-{number}.mp4"
        if not os.path.lexists(out / name) and ledger.claim_file(name, row.key):
            return name
    raise AssertionError("unreachable")  # pragma: no cover


def _made_from(row: Row, record: Record | None) -> dict[str, Any] | None:
    """The fields its task was asked with that differ from ``row``'s (an id line edited
    since it was sent), or ``None``. A refused prompt is not listed: it is sent anew."""
    if record is None or record.request is None or record.state is State.REJECTED:
        return None
    sent = json.loads(record.request)
    now = json.loads(json.dumps(request_fields(row.request)))  # tuples as JSON has them
    changed = {
        name: sent.get(name) for name in sorted({*sent, *now}) if sent.get(name) != now.get(name)
    }
    return changed or None


def changed_since_sent(row: Row, record: Record | None) -> str | None:
    """A sentence for stderr when ``row`` (known by its id) was changed since its task was
    sent: that task, made from the earlier fields, stays the prompt's; else ``None``."""
    made_from = _made_from(row, record)
    if made_from is None:
        return None
    was = ", ".join(f"{name} was {value!r}" for name, value in made_from.items())
    if len(was) > 160:
        was = was[:159] + "…"
    return (
        f"id {row.id!r} (line {row.line}): its {', '.join(made_from)} changed since its task "
        f"was sent ({was}); that task (and its clip) is kept, not paid for again; give "
        "the line another id to make a new one"
    )


def _task_ids(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(ids)  # a JSON list read back, or a tuple


@attrs.frozen
class Entry:
    """One line of the manifest: a prompt and what became of it."""

    index: int
    line: int
    id: str | None
    #: The model (submit endpoint) it is made with.
    model: str
    prompt: str
    task_id: str | None
    status: str
    file: str | None
    error: str | None
    #: The fields its task was made from, where they differ from the line's (see
    #: :func:`changed_since_sent`); ``None`` when the task is of the line as it is.
    made_from: Mapping[str, Any] | None = None
    #: Seconds from its task's creation to its end as the command saw it (``None``: no
    #: task, not ended yet, or ended before novita-video kept the times).
    time_to_make: float | None = None
    #: The ids of the tasks its earlier attempts made, oldest first (``--retry-failed``).
    earlier_tasks: tuple[str, ...] = attrs.field(default=(), converter=_task_ids)

    @classmethod
    def of(cls, row: Row, record: Record | None, *, unsent_reason: str | None = None) -> Entry:
        """The entry for ``row`` given its ledger record (``None``: never submitted)."""
        time_to_make = earlier = None
        if record is None:
            status, task_id, file, error = NOT_SUBMITTED, None, None, unsent_reason
        else:
            made_in = record.time_to_make
            time_to_make = None if made_in is None else round(made_in, 1)
            earlier = record.earlier
            status, task_id, file = STATUS[record.state], record.task_id, record.file
            error = record.error
            if status == "unknown" and error is None:
                error = UNKNOWN_REASON
        request = row.request
        return cls(
            row.index,
            row.line,
            row.id,
            request.endpoint,
            request.prompt,
            task_id,
            status,
            file,
            error,
            _made_from(row, record),
            time_to_make,
            earlier or (),
        )

    def to_json(self) -> str:
        """The entry as one line of JSON."""
        return json.dumps(attrs.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Entry:
        """Read back a line written by :meth:`to_json`."""
        return cls(**json.loads(line))


def remove_leftovers(out: Path) -> None:
    """Delete the temporary files (``.<name>.<random>.part``) of a run that was killed.

    Only a run holding the ledger's lock calls this, so no other run is writing them.
    """
    for leftover in out.glob(".*.part"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


@contextlib.contextmanager
def replacing_text(path: Path) -> Iterator[IO[str]]:
    """A text file that replaces ``path`` whole when the block ends without error."""
    with replacing(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as file:
        yield file


def write_manifest(entries: Iterable[Entry], path: Path) -> None:
    """Write ``manifest.jsonl``, one line per entry."""
    with replacing_text(path) as file:
        for entry in entries:
            file.write(entry.to_json() + "\n")


def read_manifest(manifest: Path) -> Iterator[Entry]:
    """The entries of ``manifest.jsonl``, in order, read lazily."""
    with manifest.open(encoding="utf-8") as file:
        for line in file:
            yield Entry.from_json(line)


#: Manifest statuses of prompts that ended without a clip, for good or for now.
FAILED_STATUSES: Final = ("failed", "rejected")


def counts(manifest: Path) -> str:
    """``"3 of 5 clips, 1 failed, 1 not submitted"``: what the manifest says was made."""
    made = total = 0
    others: Counter[str] = Counter()
    for entry in read_manifest(manifest):
        total += 1
        kind = kind_of(entry)
        if kind == "made":
            made += 1
        else:
            others[kind] += 1
    parts = [f"{made} of {total} clips"]
    parts += [f"{count} {status}" for status, count in sorted(others.items())]
    return ", ".join(parts)


def kind_of(entry: Entry) -> str:
    """What the gallery's heading and cards call a manifest line: ``made`` (its clip is
    in the folder), ``failed`` (failed, refused, or its download failed), ``not
    downloaded`` (made at Novita, not fetched), or its status in words (``pending``,
    ``unknown``, ``not submitted``)."""
    if entry.file is not None:
        return "made"
    if _failed(entry):
        return "failed"
    if entry.status == "succeeded":
        return "not downloaded"
    return entry.status.replace("_", " ")


def failures(manifest: Path) -> Iterator[Entry]:
    """The manifest's prompts that failed (refused, failed, or not downloaded), in order."""
    return (entry for entry in read_manifest(manifest) if _failed(entry))


def _failed(entry: Entry) -> bool:
    # A clip made whose download failed has an error; one not asked to be downloaded has none.
    if entry.file is not None:
        return False
    return entry.status in FAILED_STATUSES or (entry.status == "succeeded" and bool(entry.error))
