"""The ledger: what became of each prompt, in ``DIR/.novita/ledger.sqlite``, crash-safe.

A prompt's life in the ledger (one row per prompt, keyed by :attr:`Row.key`)::

    (no row) --before its POST--> sending --task id came back--> submitted --> succeeded
                                     |                               |     \\-> failed
                                     \\--no task created-----------> rejected   (sent again)
                                     \\--maybe created, no id------> unknown    (not sent again)

The intent (``sending``) is committed *before* the POST leaves, and the task id right
after it comes back, so a run killed at any moment (SIGKILL, a power cut) leaves each
prompt either never sent, or with its task id, or visibly ``sending``: its POST was in
flight, Novita may have created and billed a task, and only ``--resubmit-unknown`` sends
it again. A prompt with a task id is never sent again: a later run waits for its task.

Why ``synchronous=FULL`` (with WAL): NORMAL survives a killed process but may lose the
last commits on a power cut; a lost intent would then send that prompt again and pay for
it twice. FULL costs one fsync per commit, a few per prompt, while submits are limited to
tens per minute anyway.

Each row also keeps what its latest POST asked for: the ``model`` (the submit endpoint)
and the whole ``request`` as JSON, beside the older ``prompt``, ``image_url`` and
``enable_prompt_expansion`` columns (kept for the readers they have; a model without the
switch stores its documented default there, true, and the truth in ``request``). They are
written with the intent (``sending``) and left alone by later states, so a prompt known by
its ``id`` whose text was corrected since shows what its task was made from.

One folder holds any models: the model is part of :attr:`Row.key`, so the same text made
with two models is two rows, and a run's rows of other models stay as they are. A clip's
``file`` is claimed (:meth:`Ledger.claim_file`) before it is written: no two prompts are
ever given one file.

Schema 2 (this one) keys rows by what a prompt is (see :mod:`._inputs`). A schema 1
ledger, keyed by the line position with the fields, is migrated when opened, in one
transaction and without paying again: each row's key is computed anew from what it
stores (``model``, ``request``, ``user_id``; ``request`` rebuilt from ``prompt``,
``image_url`` and ``enable_prompt_expansion`` in ledgers older than it), a row without an
id being the occurrence its rank by ``idx`` gives among the rows of identical content.
Rows keep their ``file``: clips on disk keep their old names. Two rows of one id (an id
line whose text was edited: that code paid again) keep the one furthest along under the
id; the other keeps its old key, untouched. Two rows naming one file (another ``--model``
run into the folder overwrote the clip) keep it on the row written last, whose clip it
holds; the other's clip is downloaded again from its task. The schema version goes to
"2", so an older novita-video refuses the folder ("written by another version") instead
of paying for every prompt again.

Every attempt of a prompt is kept. A prompt sent again while its row holds a task id
(``--retry-failed`` after a failed task; a ``--simulate`` run, whose earlier simulator
has gone) moves that task to the ``attempts`` table, in the same transaction as the new
intent: the row always describes the latest attempt, and ``attempts`` every earlier task
id with how it ended, so paying again on purpose stays on record. A send that provably
left nothing (:meth:`Ledger.restore`) takes its attempt back out. Rows also keep when
their task was created (``submitted_at``) and seen final (``ended_at``): the gallery's
time to make. The table and the columns are added in place, without a new schema
version: code of schema 2 that knows neither still reads every row right (the row is
the latest attempt) and never pays again.

A ledger is the only memory of what was paid for, so losing it must never mean paying
again: a ledger that holds no prompt while the folder's ``manifest.jsonl`` lists some as
sent (the ledger was deleted, emptied or replaced) is refused, as is a damaged one, with
one sentence and nothing sent.

One run at a time: a second run on the same directory would submit every prompt again,
so the ledger holds an exclusive lock (``DIR/.novita/lock``) that the OS drops when the
process dies. The API key is never written here; the API's base URL is, because task ids
mean nothing to another server.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from .._requests import VideoRequest
from ._inputs import Row, content_hash, prompt_key, request_fields

__all__ = ["Ledger", "LedgerError", "Record", "State"]

_SCHEMA_VERSION: Final = "2"
#: The first schema (keys by line position), migrated when opened.
_SCHEMA_V1: Final = "1"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (
    key TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    line INTEGER NOT NULL,
    user_id TEXT,
    prompt TEXT NOT NULL,
    image_url TEXT,
    enable_prompt_expansion INTEGER NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    file TEXT,
    error TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT NOT NULL,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    model TEXT,
    request TEXT,
    submitted_at REAL,
    ended_at REAL,
    replaced_at REAL NOT NULL,
    PRIMARY KEY (key, task_id)
);
"""
#: Columns added since the first schema, with their types; added in place when missing.
_ADDED_COLUMNS: Final = (
    ("model", "TEXT"),
    ("request", "TEXT"),
    ("submitted_at", "REAL"),
    ("ended_at", "REAL"),
)
#: A row's task becomes an earlier attempt: copied before the row is sent again.
_ARCHIVE: Final = """
INSERT OR REPLACE INTO attempts (key, task_id, state, error, model, request, submitted_at,
                                 ended_at, replaced_at)
SELECT key, task_id, state, error, model, request, submitted_at, ended_at, ?
FROM prompts WHERE key = ? AND task_id IS NOT NULL
"""
#: States in which a row's task has ended (``ended_at`` is when it was seen so).
_ENDED: Final = ("succeeded", "failed")
#: Which prompt's clip a file is, asked before each download.
_FILE_INDEX: Final = "CREATE INDEX IF NOT EXISTS prompts_file ON prompts (file)"


class State(enum.StrEnum):
    """Where a prompt stands (see the module docstring)."""

    SENDING = "sending"
    UNKNOWN = "unknown"
    REJECTED = "rejected"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@attrs.frozen
class Record:
    """A prompt's row in the ledger."""

    state: State
    task_id: str | None
    file: str | None
    error: str | None
    #: What its latest POST asked for: the request's fields as JSON (``None``: not known).
    request: str | None = None
    #: When its task was created and seen final (Unix seconds; ``None``: not known).
    submitted_at: float | None = None
    ended_at: float | None = None
    #: The task ids of its earlier attempts, oldest first (see the module docstring).
    earlier: tuple[str, ...] = ()

    @property
    def time_to_make(self) -> float | None:
        """Seconds from its task's creation to its end, when both were seen."""
        if self.submitted_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.submitted_at)


def _sent_in_manifest(manifest: Path) -> int:
    """How many prompts ``manifest.jsonl`` says were sent (a task id, or maybe one);
    a manifest file that cannot be read counts as one that says so."""
    if not manifest.is_file():
        return 0  # none, or something else in its place: it lists nothing
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError):
        return 1
    sent = 0
    for line in lines:
        try:
            entry = json.loads(line) if line.strip() else {}
        except ValueError:
            return max(sent, 1)
        if isinstance(entry, dict) and (entry.get("task_id") or entry.get("status") == "unknown"):
            sent += 1
    return sent


# A prompt that has (or may have) a task at the API the folder was used with.
_TIED: Final = (
    "SELECT 1 FROM prompts WHERE task_id IS NOT NULL OR state IN ('sending', 'unknown') LIMIT 1"
)


class LedgerError(Exception):
    """The ledger cannot be used: another run holds it, or it belongs to another API."""


class Ledger:
    """The sqlite ledger of one output directory; open with :meth:`open`."""

    def __init__(self, connection: sqlite3.Connection, lock: int) -> None:
        self._db = connection
        self._lock = lock
        self._claims: dict[str, str] = {}  # file name -> the key of the prompt it is for
        # Whether any prompt has an earlier attempt: until one has, reads skip the table.
        self._attempted = (
            connection.execute("SELECT 1 FROM attempts LIMIT 1").fetchone() is not None
        )

    @classmethod
    def open(cls, out: Path, api: str) -> Ledger:
        """Open (or create) ``out/.novita/ledger.sqlite`` for runs against ``api``."""
        home = out / ".novita"
        home.mkdir(parents=True, exist_ok=True)
        lock = os.open(home / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise LedgerError(
                f"another novita-video run is using {out}; wait for it or choose another --out"
            ) from None
        path = home / "ledger.sqlite"
        try:
            db = sqlite3.connect(path, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
                version = cls._check_meta(db, out, api)
                with _transaction(db):
                    cls._add_columns(db)
                    db.execute(_FILE_INDEX)  # before the migration, which asks it too
                    if version == _SCHEMA_V1:
                        cls._migrate(db)
                cls._check_not_lost(db, out)
            except BaseException:
                db.close()
                raise
        except sqlite3.DatabaseError as error:
            os.close(lock)
            raise LedgerError(
                f"{path} is damaged ({error}); nothing was sent. It is the record of what "
                "was paid for: restore it from a backup, or choose another --out"
            ) from None
        except BaseException:
            os.close(lock)
            raise
        return cls(db, lock)

    @staticmethod
    def _check_not_lost(db: sqlite3.Connection, out: Path) -> None:
        if db.execute("SELECT 1 FROM prompts LIMIT 1").fetchone() is not None:
            return
        sent = _sent_in_manifest(out / "manifest.jsonl")
        if sent:
            raise LedgerError(
                f"{out}/manifest.jsonl lists {sent} prompt(s) already sent to Novita, but "
                f"{out}/.novita/ledger.sqlite has no record of them (deleted or emptied): "
                "running again would pay for them twice. Restore the ledger, or choose "
                "another --out; nothing was sent"
            )

    @staticmethod
    def _check_meta(db: sqlite3.Connection, out: Path, api: str) -> str:
        """Check the ledger is for this code and ``api``; its schema version."""
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        if not meta:
            db.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)",
                [("schema", _SCHEMA_VERSION), ("api", api)],
            )
            return _SCHEMA_VERSION
        version = meta.get("schema")
        if version not in (_SCHEMA_V1, _SCHEMA_VERSION):
            raise LedgerError(f"{out}/.novita was written by another version of novita-video")
        if meta.get("api") != api:
            # A folder is tied to an API only once something may exist there: a run that
            # never reached its API (a mistyped base URL) leaves it free.
            if db.execute(_TIED).fetchone() is not None:
                raise LedgerError(
                    f"{out} holds a run against {meta.get('api')}, not {api}: its task ids "
                    "mean nothing there; choose another --out"
                )
            db.execute("UPDATE meta SET value = ? WHERE name = 'api'", (api,))
        return str(version)

    @staticmethod
    def _add_columns(db: sqlite3.Connection) -> None:
        # Nullable columns added in place (by schema 1 code too, which had them later).
        present = {row[1] for row in db.execute("PRAGMA table_info(prompts)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE prompts ADD COLUMN {name} {kind}")

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """Schema 1 to 2: every row keyed by what its prompt is (see the module docstring).

        Runs inside the caller's transaction: a failure leaves the ledger as it was.
        """
        found = db.execute(
            "SELECT key, user_id, prompt, image_url, enable_prompt_expansion, model, request,"
            " state, file, updated_at FROM prompts ORDER BY idx, key"
        ).fetchall()
        # content hash -> its rows without an id: (how far it got, position, key, ...)
        alike: dict[int, list[tuple[tuple[int, float], int, str, str, dict[str, Any]]]] = {}
        claims: dict[str, tuple[tuple[int, float], str]] = {}  # new key -> (rank, old key)
        renamed: dict[str, str] = {}  # old key -> new key
        for position, (
            key,
            user_id,
            prompt,
            image_url,
            expansion,
            model,
            request,
            *rest,
        ) in enumerate(found):
            state, file, updated_at = rest
            model = model or VideoRequest.endpoint
            if request is None:  # written before the column: Video-01's three fields
                fields: dict[str, Any] = {
                    "prompt": prompt,
                    "image_url": image_url,
                    "enable_prompt_expansion": bool(expansion),
                }
                db.execute(
                    "UPDATE prompts SET model = ?, request = ? WHERE key = ?",
                    (model, json.dumps(fields, ensure_ascii=False), key),
                )
            else:
                fields = json.loads(request)
            user_id = (user_id.strip() or None) if user_id is not None else None
            rank = (_how_far(State(state), file), updated_at)
            if user_id is None:
                group = alike.setdefault(content_hash(model, fields), [])
                group.append((rank, position, key, model, fields))
                continue
            new = prompt_key(model, user_id, fields)
            if new not in claims or rank > claims[new][0]:
                if new in claims:
                    del renamed[claims[new][1]]  # that row keeps its old key
                claims[new] = (rank, key)
                renamed[key] = new
        for group in alike.values():
            # Identical lines are numbered furthest along first, then by position: the
            # old code keyed a prompt by its line, so one prompt moved in the file left
            # a row at each place (refused at line 2, made at line 3); the one that was
            # made must be the first occurrence, or the next run pays for it again.
            group.sort(key=lambda row: (-row[0][0], row[1]))
            for occurrence, (_, _, key, model, fields) in enumerate(group, 1):
                renamed[key] = prompt_key(model, None, fields, occurrence)
        db.executemany(
            "UPDATE prompts SET key = ? WHERE key = ?",
            [(new, old) for old, new in renamed.items() if new != old],
        )
        # The clip on disk is the last one written: the other rows' clips are fetched again.
        db.execute(
            """
            UPDATE prompts SET file = NULL WHERE file IS NOT NULL AND EXISTS (
                SELECT 1 FROM prompts AS later WHERE later.file = prompts.file
                AND (later.updated_at, later.key) > (prompts.updated_at, prompts.key))
            """
        )
        db.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (_SCHEMA_VERSION,))

    def close(self) -> None:
        """Close the database and release the lock."""
        self._db.close()
        os.close(self._lock)

    def get(self, key: str) -> Record | None:
        """The record of the prompt with this key, if it has one."""
        found = self._db.execute(
            "SELECT state, task_id, file, error, request, submitted_at, ended_at FROM prompts"
            " WHERE key = ?",
            (key,),
        ).fetchone()
        if found is None:
            return None
        state, task_id, file, error, request, submitted_at, ended_at = found
        earlier: tuple[str, ...] = ()
        if self._attempted:
            earlier = tuple(
                task
                for (task,) in self._db.execute(
                    "SELECT task_id FROM attempts WHERE key = ? ORDER BY replaced_at, rowid",
                    (key,),
                )
            )
        return Record(State(state), task_id, file, error, request, submitted_at, ended_at, earlier)

    def failed_count(self, keys: Iterable[str]) -> int:
        """How many of the prompts ``keys`` have a task that failed (``--retry-failed``)."""
        found = 0
        for key in keys:
            row = self._db.execute("SELECT state FROM prompts WHERE key = ?", (key,)).fetchone()
            found += row is not None and row[0] == State.FAILED.value
        return found

    def claim_file(self, name: str, key: str) -> bool:
        """Take the clip file ``name`` for the prompt ``key``: False when another prompt's
        record names it, or another prompt of this run took it (its download may be on the
        way), so that no clip is ever written over another's."""
        if self._claims.get(name, key) != key:
            return False
        taken = self._db.execute(
            "SELECT 1 FROM prompts WHERE file = ? AND key != ? LIMIT 1", (name, key)
        ).fetchone()
        if taken is not None:
            return False
        self._claims[name] = key
        return True

    def counts(self) -> dict[State, int]:
        """How many prompts the ledger holds in each state (what a resumed run finds)."""
        found = self._db.execute("SELECT state, COUNT(*) FROM prompts GROUP BY state")
        return {State(state): count for state, count in found.fetchall()}

    def outstanding(self) -> dict[str | None, int]:
        """How many prompts of each model (``None``: not recorded) have a task that may not
        have ended, or a POST in doubt: what a spend cap counts as not yet charged."""
        found = self._db.execute(
            "SELECT model, COUNT(*) FROM prompts WHERE state IN (?, ?, ?) GROUP BY model",
            (State.SENDING.value, State.UNKNOWN.value, State.SUBMITTED.value),
        )
        return dict(found.fetchall())

    def in_doubt(self) -> dict[str | None, int]:
        """Of :meth:`outstanding`, the prompts whose POST is in doubt (no task id): a run
        does not follow them, so no end of theirs will be seen."""
        found = self._db.execute(
            "SELECT model, COUNT(*) FROM prompts WHERE state IN (?, ?) GROUP BY model",
            (State.SENDING.value, State.UNKNOWN.value),
        )
        return dict(found.fetchall())

    def running(self) -> list[tuple[str | None, str]]:
        """The model (``None``: not recorded) and task id of every prompt whose task was
        made and not seen ended: what a run may follow whether or not the prompt is still
        in its file (a spend cap waits for such a task of its model to learn its price)."""
        found = self._db.execute(
            "SELECT model, task_id FROM prompts WHERE state = ? AND task_id IS NOT NULL"
            " ORDER BY rowid",
            (State.SUBMITTED.value,),
        )
        return [(model, task_id) for model, task_id in found.fetchall()]

    def restore(self, row: Row, record: Record | None) -> None:
        """Put ``row``'s record back as it was (``None``: no record), one committed
        statement: a send of this run that provably made nothing leaves no trace."""
        with _transaction(self._db):
            if record is None:
                self._db.execute("DELETE FROM prompts WHERE key = ?", (row.key,))
                return
            if record.task_id is not None:  # it is the latest attempt again
                self._db.execute(
                    "DELETE FROM attempts WHERE key = ? AND task_id = ?", (row.key, record.task_id)
                )
            # What was asked for goes back too (the try of this run may have changed it).
            asked = None if record.request is None else json.loads(record.request)
            self._put(
                row,
                record.state,
                record.task_id,
                record.file,
                record.error,
                asked=asked,
                times=(record.submitted_at, record.ended_at),
            )

    def write(
        self,
        row: Row,
        state: State,
        *,
        task_id: str | None = None,
        file: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record the prompt ``row`` as ``state`` (one committed transaction); ``sending``
        also records its request as what was asked for, and makes a task the row holds an
        earlier attempt."""
        now = time.time()
        times = (now if task_id is not None else None, now if state.value in _ENDED else None)
        if state is not State.SENDING:
            self._put(row, state, task_id, file, error, asked=None, times=times)
            return
        with _transaction(self._db):
            archived = self._db.execute(_ARCHIVE, (now, row.key)).rowcount
            self._put(
                row, state, task_id, file, error, asked=request_fields(row.request), times=times
            )
        self._attempted = self._attempted or archived > 0

    def _put(
        self,
        row: Row,
        state: State,
        task_id: str | None,
        file: str | None,
        error: str | None,
        *,
        asked: Mapping[str, Any] | None,
        times: tuple[float | None, float | None],
    ) -> None:
        """One statement; ``asked``: the request's fields to record as what was asked for,
        ``None`` to keep those the row has (a new row gets ``row``'s); ``times``: when a
        task was created and ended, taken where the row's task is not the one it had."""
        request = row.request
        # What was asked for changes only when it is asked for again (an id line whose
        # text was corrected keeps the text its task was made from until then).
        fields = request_fields(request) if asked is None else asked
        image_url = fields.get("image_url")
        prompt = fields.get("prompt")
        self._db.execute(
            _INSERT if asked is None else _INSERT + _ASKED,
            (
                row.key,
                row.index,
                row.line,
                row.id,
                prompt if isinstance(prompt, str) else request.prompt,
                image_url if isinstance(image_url, str) else None,
                fields.get("enable_prompt_expansion") is not False,
                state.value,
                task_id,
                file,
                error,
                time.time(),
                request.endpoint,
                json.dumps(fields, ensure_ascii=False),
                *times,
            ),
        )


_INSERT: Final = """
INSERT INTO prompts (key, idx, line, user_id, prompt, image_url, enable_prompt_expansion,
                     state, task_id, file, error, updated_at, model, request,
                     submitted_at, ended_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    idx = excluded.idx, line = excluded.line, user_id = excluded.user_id,
    state = excluded.state, task_id = excluded.task_id, file = excluded.file,
    error = excluded.error, updated_at = excluded.updated_at,
    -- The same task keeps the times it has (none, for a row older than the columns).
    submitted_at = CASE WHEN prompts.task_id IS excluded.task_id THEN prompts.submitted_at
                        ELSE excluded.submitted_at END,
    ended_at = CASE WHEN excluded.state NOT IN ('succeeded', 'failed') THEN NULL
                    WHEN prompts.task_id IS excluded.task_id
                         AND prompts.state IN ('succeeded', 'failed') THEN prompts.ended_at
                    ELSE excluded.ended_at END
"""
_ASKED: Final = """,
    prompt = excluded.prompt, image_url = excluded.image_url,
    enable_prompt_expansion = excluded.enable_prompt_expansion,
    model = excluded.model, request = excluded.request
"""


def _how_far(state: State, file: str | None) -> int:
    """How far along a row is, to keep the best of two rows migrated to one id."""
    if state is State.SUCCEEDED:
        return 5 if file is not None else 4
    order = (State.REJECTED, State.SENDING, State.UNKNOWN, State.FAILED, State.SUBMITTED)
    return order.index(state)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction (the connection is in autocommit mode): all of it, or none."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
