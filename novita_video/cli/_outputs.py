"""What a batch leaves for people: clip file names, ``manifest.jsonl`` and ``index.html``.

Clip names come from the input, never from the server: ``<index>-<slug>.mp4``, the
prompt's 1-based position and a short ASCII slug of its text. The manifest has one JSON
line per prompt of the input; the gallery is made from the manifest, one ``<video>`` per
clip with its prompt, and each failure with its reason. Both are written to a temporary
file and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Final
from urllib.parse import quote

import attrs

from .._download import replacing
from ._inputs import Row
from ._ledger import Record, State

__all__ = [
    "Entry",
    "clip_name",
    "counts",
    "failures",
    "remove_leftovers",
    "slugify",
    "write_gallery",
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


def clip_name(row: Row) -> str:
    """The file name of a row's clip: ``0007-a-panda-walks-through-bamboo.mp4``."""
    return f"{row.index:04d}-{slugify(row.request.prompt)}.mp4"


@attrs.frozen
class Entry:
    """One line of the manifest: a prompt and what became of it."""

    index: int
    line: int
    id: str | None
    prompt: str
    task_id: str | None
    status: str
    file: str | None
    error: str | None

    @classmethod
    def of(cls, row: Row, record: Record | None, *, unsent_reason: str | None = None) -> Entry:
        """The entry for ``row`` given its ledger record (``None``: never submitted)."""
        if record is None:
            status, task_id, file, error = NOT_SUBMITTED, None, None, unsent_reason
        else:
            status, task_id, file = STATUS[record.state], record.task_id, record.file
            error = record.error
            if status == "unknown" and error is None:
                error = UNKNOWN_REASON
        return cls(row.index, row.line, row.id, row.request.prompt, task_id, status, file, error)

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
def _replacing(path: Path) -> Iterator[IO[str]]:
    """A text file that replaces ``path`` whole when the block ends without error."""
    with replacing(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as file:
        yield file


def write_manifest(entries: Iterable[Entry], path: Path) -> None:
    """Write ``manifest.jsonl``, one line per entry."""
    with _replacing(path) as file:
        for entry in entries:
            file.write(entry.to_json() + "\n")


def _entries(manifest: Path) -> Iterator[Entry]:
    with manifest.open(encoding="utf-8") as file:
        for line in file:
            yield Entry.from_json(line)


_STYLE: Final = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem; background: #fafafa; color: #222; }
main { display: grid; gap: 1.2rem; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); }
figure { margin: 0; background: #fff; border-radius: 8px; box-shadow: 0 1px 3px #0002;
         overflow: hidden; }
video, .missing { display: block; width: 100%; aspect-ratio: 16 / 9; background: #111; }
.missing { display: flex; align-items: center; justify-content: center; color: #eee;
           padding: 1rem; box-sizing: border-box; text-align: center; }
figure.failed .missing, figure.broken video { background: #7a1f1f; }
figcaption { padding: .6rem .8rem; }
.index { color: #888; margin-right: .4rem; }
.reason { display: block; color: #a33; font-size: 90%; margin-top: .3rem; }
"""

# Each video marks itself when its first frame is decoded, or breaks: a missing or corrupt
# file is then shown as such, and a test (or a script) can read the marks from the DOM.
_SCRIPT: Final = """
for (const video of document.querySelectorAll("video")) {
  const mark = (state) => {
    video.dataset.state = state;
    video.dataset.size = video.videoWidth + "x" + video.videoHeight;
  };
  if (video.readyState >= 2) mark("loaded");
  video.addEventListener("loadeddata", () => mark("loaded"));
  video.addEventListener("error", () => {
    mark("error");
    video.closest("figure").classList.add("broken");
  });
}
"""


def _figure(entry: Entry) -> str:
    caption = f'<span class="index">#{entry.index}</span>{html.escape(entry.prompt)}'
    if entry.file is not None:
        source = html.escape(quote(entry.file))
        return (
            f'<figure class="clip" id="clip-{entry.index}">'
            f'<video src="{source}" controls muted loop playsinline preload="metadata"></video>'
            f"<figcaption>{caption}</figcaption></figure>\n"
        )
    note = "not downloaded" if entry.status == "succeeded" else entry.status.replace("_", " ")
    why = entry.error or (f"task {entry.task_id}" if entry.task_id else "")
    reason = f'<span class="reason">{html.escape(why)}</span>' if why else ""
    return (
        f'<figure class="clip failed" id="clip-{entry.index}">'
        f'<div class="missing">{html.escape(note)}</div>'
        f"<figcaption>{caption}{reason}</figcaption></figure>\n"
    )


#: Manifest statuses of prompts that ended without a clip, for good or for now.
FAILED_STATUSES: Final = ("failed", "rejected")


def counts(manifest: Path) -> str:
    """``"3 of 5 clips, 1 failed, 1 not submitted"``: what the manifest says was made."""
    made = total = 0
    others: Counter[str] = Counter()
    for entry in _entries(manifest):
        total += 1
        if entry.file is not None:
            made += 1
        elif _failed(entry):
            others["failed"] += 1
        elif entry.status == "succeeded":
            others["not downloaded"] += 1
        else:
            others[entry.status.replace("_", " ")] += 1
    parts = [f"{made} of {total} clips"]
    parts += [f"{count} {status}" for status, count in sorted(others.items())]
    return ", ".join(parts)


def failures(manifest: Path) -> Iterator[Entry]:
    """The manifest's prompts that failed (refused, failed, or not downloaded), in order."""
    return (entry for entry in _entries(manifest) if _failed(entry))


def _failed(entry: Entry) -> bool:
    # A clip made whose download failed has an error; one not asked to be downloaded has none.
    if entry.file is not None:
        return False
    return entry.status in FAILED_STATUSES or (entry.status == "succeeded" and bool(entry.error))


def write_gallery(manifest: Path, path: Path) -> None:
    """Write ``index.html`` from ``manifest.jsonl``: every clip, every failure."""
    heading = html.escape(counts(manifest))
    with _replacing(path) as file:
        file.write(
            '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>novita-video: {heading}</title>\n"
            f"<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{heading}</h1>\n<main>\n"
        )
        for entry in _entries(manifest):
            file.write(_figure(entry))
        file.write(f"</main>\n<script>{_SCRIPT}</script>\n</body>\n</html>\n")
