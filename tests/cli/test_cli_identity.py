"""A prompt is known by what it is, and one folder holds any models (issue 20, cases 1, 4).

Runs of the real command against the simulator, whose count of tasks per prompt is the
judge: editing the prompts file (inserting, deleting, reordering, duplicating lines,
correcting an id line's text) never pays for a prompt again; another ``--model`` in the
same ``--out`` makes its own clips beside the others, never over them; a ledger written
by the code before (schema 1, keyed by line position: ``tests/cli/data/*.sql``, dumped
from runs of that code) is migrated without paying again.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest

from novita_video import HailuoRequest, KlingT2VRequest, VideoRequest
from novita_video.cli._gallery import write_gallery
from novita_video.cli._inputs import PromptSource, Row
from novita_video.cli._ledger import Ledger, LedgerError, State
from novita_video.cli._outputs import Entry, clip_name, write_manifest
from novita_video.testing import FakeNovita
from tests.cli.cli_support import (
    FAST,
    cli_env,
    clips,
    ledger,
    manifest,
    prompts_file,
    run_cli,
    simulator,
    write,
)

DATA = Path(__file__).parent / "data"
#: The API the fixtures' ledgers were written against (a simulator on that port).
FIXTURE_API = "http://127.0.0.1:18731"


def tasks_per_prompt(fake: FakeNovita) -> Counter[str]:
    return Counter(task.request.prompt for task in fake.stats.tasks.values())


def files_by_prompt(out: Path) -> dict[str, str]:
    return {line["prompt"]: line["file"] for line in manifest(out)}


def inodes(out: Path) -> dict[str, int]:
    """Each clip's inode: a clip written over (a new file renamed into place) changes it."""
    return {path.name: path.stat().st_ino for path in clips(out)}


def old_folder(out: Path, fixture: str, api: str = FIXTURE_API) -> dict[str, bytes]:
    """``out`` as the code before left it: its ledger (from ``fixture``), and a clip file
    (distinct bytes) for every file the ledger names; the clips' bytes by name."""
    (out / ".novita").mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(out / ".novita" / "ledger.sqlite")) as db, db:
        db.executescript((DATA / fixture).read_text(encoding="utf-8"))
        # The fixture was made against a simulator on another port: point it at ours.
        db.execute("UPDATE meta SET value = ? WHERE name = 'api'", (api,))
        names = {row[0] for row in db.execute("SELECT file FROM prompts WHERE file IS NOT NULL")}
    db.close()
    made = {name: f"the clip of {name}".encode() for name in names}
    for name, body in made.items():
        (out / name).write_bytes(body)
    return made


# The input: identity in the file.


def test_identical_lines_are_numbered_and_the_first_stays_first(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a panda", "a kite", "a panda"])
    first, kite, second = PromptSource(str(path)).rows()
    assert (first.occurrence, second.occurrence) == (1, 2)
    assert len({first.key, kite.key, second.key}) == 3
    # Lines inserted before them, or between them, change nothing of who is who.
    prompts_file(path, ["a heron", "a panda", "a heron", "a panda", "a kite"])
    keys = [row.key for row in PromptSource(str(path)).rows()]
    assert keys[1] == first.key
    assert keys[3] == second.key
    assert keys[4] == kite.key


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "p.jsonl",
            '{"prompt": "a fox", "id": "fox"}\n{"prompt": "a cat"}\n'
            '{"prompt": "another fox", "id": " fox "}\n',
        ),
        ("p.csv", "prompt,id\na fox,fox\na cat,\nanother fox,fox\n"),
    ],
)
def test_two_lines_with_one_id_are_an_error_naming_both(
    tmp_path: Path, name: str, text: str
) -> None:
    found = PromptSource(str(write(tmp_path / name, text))).validate()
    assert found.count == 2
    assert [str(error) for error in found.errors] == [
        f"{tmp_path / name}:4: id 'fox' is also on line 2: an id names one prompt; give one "
        "of them another id"
        if name.endswith(".csv")
        else f"{tmp_path / name}:3: id 'fox' is also on line 1: an id names one prompt; "
        "give one of them another id"
    ]


def test_an_id_is_its_identity_with_its_model() -> None:
    fox = Row(1, 1, VideoRequest("a fox in snw"), id="fox")
    assert fox.key == Row(9, 12, VideoRequest("a fox in snow"), id="fox").key
    assert fox.key != Row(1, 1, HailuoRequest("a fox in snw"), id="fox").key
    assert fox.key != Row(1, 1, VideoRequest("a fox in snw")).key


# Clip names and the manifest.


def test_a_clip_is_never_given_a_name_in_use(tmp_path: Path) -> None:
    cat = Row(1, 1, VideoRequest("a cat"))
    other = Row(2, 2, VideoRequest("a cat", enable_prompt_expansion=False))
    ledger_ = Ledger.open(tmp_path, "api")
    try:
        name = clip_name(cat)
        assert re.fullmatch(r"a-cat-[0-9a-f]{8}\.mp4", name)
        (tmp_path / name).write_bytes(b"a clip paid for, not recorded")  # e.g. a full disk
        second = clip_name(cat, tmp_path, ledger_)
        assert second == name.replace(".mp4", "-2.mp4")
        # Claimed for this run: no other prompt is given it while its download runs.
        assert ledger_.claim_file(second, other.key) is False
        ledger_.write(cat, State.SUCCEEDED, task_id="t1", file=second)
        assert clip_name(cat, tmp_path, ledger_) == second  # its own: the name it has
        assert ledger_.claim_file(second, other.key) is False  # recorded as cat's
    finally:
        ledger_.close()
    assert clip_name(cat) != clip_name(Row(1, 1, KlingT2VRequest("a cat")))


def test_the_manifest_says_what_a_corrected_id_line_was_made_from(tmp_path: Path) -> None:
    sent = Row(1, 1, VideoRequest("a fox in snw"), id="fox")
    ledger_ = Ledger.open(tmp_path, "api")
    try:
        ledger_.write(sent, State.SENDING)
        ledger_.write(sent, State.SUCCEEDED, task_id="t1", file="a-fox-in-snw.mp4")
        now = Row(1, 1, VideoRequest("a fox in snow"), id="fox")
        entry = Entry.of(now, ledger_.get(now.key))
    finally:
        ledger_.close()
    assert (entry.model, entry.prompt, entry.task_id) == ("minimax-video-01", "a fox in snow", "t1")
    assert entry.made_from == {"prompt": "a fox in snw"}
    write_manifest([entry], tmp_path / "manifest.jsonl")
    write_gallery(tmp_path / "manifest.jsonl", tmp_path / "index.html")
    assert "made from an earlier prompt: a fox in snw" in (tmp_path / "index.html").read_text()


def test_the_ledger_keeps_what_was_asked_until_it_is_asked_again(tmp_path: Path) -> None:
    sent = Row(1, 1, VideoRequest("a fox in snw"), id="fox")
    now = Row(2, 2, VideoRequest("a fox in snow"), id="fox")
    opened = Ledger.open(tmp_path, "api")
    try:
        opened.write(sent, State.SENDING)
        opened.write(sent, State.UNKNOWN, error="cut off")
        before = opened.get(sent.key)
        opened.write(now, State.SUBMITTED, task_id="t1")  # a state: what was asked stays
        record = opened.get(now.key)
        assert record is not None
        assert record.request is not None
        assert json.loads(record.request)["prompt"] == "a fox in snw"
        opened.write(now, State.SENDING)  # asked again (--resubmit-unknown): the new text
        record = opened.get(now.key)
        assert record is not None
        assert record.request is not None
        assert json.loads(record.request)["prompt"] == "a fox in snow"
        # That try provably made nothing: the record goes back whole, request included;
        # the task the row held when it was sent again (t1) stays on record, an earlier
        # attempt, since a task Novita made is never forgotten.
        opened.restore(now, before)
        restored = opened.get(now.key)
        assert restored is not None
        assert attrs.evolve(restored, earlier=()) == before
        assert restored.earlier == ("t1",)
        assert ledger(tmp_path)[0]["prompt"] == "a fox in snw"
    finally:
        opened.close()


# The ledger: migrating schema 1.


def test_an_old_ledger_is_migrated_in_place(tmp_path: Path) -> None:
    old_folder(tmp_path, "ledger-v1.sql")
    with contextlib.closing(sqlite3.connect(tmp_path / ".novita" / "ledger.sqlite")) as db, db:
        # A row of a ledger older still (before --model): no model, no request.
        db.execute(
            "UPDATE prompts SET model = NULL, request = NULL WHERE prompt = 'a red kite at dusk'"
        )
        # An id line edited since its clip was made: the code before made (and paid for)
        # a second row, here one refused.
        db.execute(
            "INSERT INTO prompts VALUES ('old-key', 3, 3, 'fox', 'a fox in snoww', NULL, 1,"
            " 'rejected', NULL, NULL, 'ILLEGAL_PROMPT', 1.0, 'minimax-hailuo-02',"
            """ '{"prompt": "a fox in snoww", "duration": 6}')"""
        )
        before = dict(db.execute("SELECT task_id, file FROM prompts WHERE task_id IS NOT NULL"))
    db.close()
    opened = Ledger.open(tmp_path, FIXTURE_API)
    try:
        rows = {
            "panda": Row(1, 1, VideoRequest("a panda in bamboo")),
            "panda again": Row(3, 3, VideoRequest("a panda in bamboo"), occurrence=2),
            "kite": Row(2, 2, VideoRequest("a red kite at dusk")),
            "lighthouse": Row(4, 4, VideoRequest("a lighthouse in a storm")),
            "fox": Row(1, 1, HailuoRequest("a fox, its text edited", duration=6), id="fox"),
            "heron": Row(2, 2, HailuoRequest("a heron fishing")),
        }
        found = {name: opened.get(row.key) for name, row in rows.items()}
    finally:
        opened.close()
    assert {name: record and record.file for name, record in found.items()} == {
        # Identical lines: the earlier row (by position) is the first occurrence.
        "panda": "0001-a-panda-in-bamboo.mp4",
        "panda again": "0003-a-panda-in-bamboo.mp4",
        "kite": "0002-a-red-kite-at-dusk.mp4",
        "lighthouse": "0004-a-lighthouse-in-a-storm.mp4",
        # Of the id's two rows, the one with a clip is the id's.
        "fox": "0001-a-fox-in-snow.mp4",
        "heron": "0002-a-heron-fishing.mp4",
    }
    assert all(record is not None and record.state is State.SUCCEEDED for record in found.values())
    kite = found["kite"]
    assert kite is not None
    assert kite.request is not None
    assert json.loads(kite.request)["prompt"] == "a red kite at dusk"
    after = ledger(tmp_path)
    assert {row["task_id"]: row["file"] for row in after if row["task_id"]} == before
    # The other row of the id stays as it was, under its old key.
    assert [row["state"] for row in after if row["key"] == "old-key"] == ["rejected"]


def test_old_code_refuses_a_migrated_ledger(tmp_path: Path) -> None:
    old_folder(tmp_path, "ledger-v1.sql")
    Ledger.open(tmp_path, FIXTURE_API).close()
    with contextlib.closing(sqlite3.connect(tmp_path / ".novita" / "ledger.sqlite")) as db, db:
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    db.close()
    # The check of the code before, as it was: anything but schema "1" is refused with
    # "written by another version of novita-video", before anything is sent.
    assert meta.get("schema") != "1"
    assert meta["schema"] == "2"
    # And a ledger of a later schema is refused here the same way.
    with contextlib.closing(sqlite3.connect(tmp_path / ".novita" / "ledger.sqlite")) as db, db:
        db.execute("UPDATE meta SET value = '3' WHERE name = 'schema'")
    db.close()
    with pytest.raises(LedgerError, match="written by another version"):
        Ledger.open(tmp_path, FIXTURE_API)


# The command.


def command_test(test: Any) -> Any:
    """A test that runs the command (slow: a process per run)."""
    return pytest.mark.anyio(pytest.mark.slow(pytest.mark.subprocess(test)))


async def batch(path: Path, out: Path, fake: FakeNovita, *args: str) -> str:
    """Run the command to its end; its stderr (it must exit 0)."""
    ran = await run_cli("batch", str(path), "--out", str(out), *FAST, *args, env=cli_env(fake.url))
    assert ran.code == 0, ran.stderr
    return ran.stderr


PROMPTS = ["a lighthouse in a storm", "a red kite at dusk", "a fox in snow", "a heron fishing"]


@command_test
async def test_inserting_reordering_and_deleting_lines_never_pays_again(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", PROMPTS)
    out = tmp_path / "out"
    async with simulator() as fake:
        await batch(path, out, fake)
        names = files_by_prompt(out)
        tasks = {line["prompt"]: line["task_id"] for line in manifest(out)}
        on_disk = inodes(out)
        edits = {
            "a line inserted at the top": ["a new first line", *PROMPTS],
            "the lines reordered": ["a new first line", *reversed(PROMPTS)],
            "a line deleted": ["a new first line", *PROMPTS[1:]],
        }
        for edit, prompts in edits.items():
            prompts_file(path, prompts)
            stderr = await batch(path, out, fake)
            assert f"{len(prompts)} of {len(prompts)} clips made" in stderr, edit
            assert tasks_per_prompt(fake) == Counter([*PROMPTS, "a new first line"]), edit
            lines = manifest(out)
            assert [line["prompt"] for line in lines] == prompts, edit
            assert [line["index"] for line in lines] == list(range(1, len(prompts) + 1))
            for line in lines:
                if line["prompt"] in names:  # each keeps its task, its clip and its name
                    assert line["task_id"] == tasks[line["prompt"]], edit
                    assert line["file"] == names[line["prompt"]], edit
        assert fake.stats.duplicate_submissions == 0
    assert {name: inodes(out)[name] for name in on_disk} == on_disk  # none written over


@command_test
async def test_a_duplicated_line_is_a_prompt_of_its_own(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a panda", "a kite"])
    out = tmp_path / "out"
    async with simulator() as fake:
        await batch(path, out, fake)
        first = manifest(out)[0]
        prompts_file(path, ["a panda", "a panda", "a kite"])  # duplicated, above the kite
        await batch(path, out, fake)
        assert tasks_per_prompt(fake) == {"a panda": 2, "a kite": 1}  # only the new line
        panda, again, _ = manifest(out)
        assert (panda["task_id"], panda["file"]) == (first["task_id"], first["file"])
        assert again["task_id"] != panda["task_id"]
        assert again["file"] != panda["file"]
        prompts_file(path, ["a kite", "a panda"])  # one panda deleted: the first stays
        await batch(path, out, fake)
        assert tasks_per_prompt(fake) == {"a panda": 2, "a kite": 1}
        assert manifest(out)[1]["task_id"] == first["task_id"]
    assert len(clips(out)) == 3


@command_test
async def test_an_id_line_corrected_keeps_its_task_and_says_so(tmp_path: Path) -> None:
    fox = {"id": "fox", "prompt": "a fox in snw"}
    owl = {"id": "owl", "prompt": "an owl at night"}
    path = write(tmp_path / "p.jsonl", f"{json.dumps(fox)}\n{json.dumps(owl)}\n")
    out = tmp_path / "out"
    async with simulator() as fake:
        await batch(path, out, fake)
        made = manifest(out)[0]
        fox["prompt"] = "a fox in snow"  # the typo corrected, and a line added above
        write(path, f'{{"prompt": "a hare"}}\n{json.dumps(fox)}\n{json.dumps(owl)}\n')
        stderr = await batch(path, out, fake)
        assert tasks_per_prompt(fake) == {"a fox in snw": 1, "an owl at night": 1, "a hare": 1}
    assert "id 'fox' (line 2): its prompt changed since its task was sent" in stderr
    assert "prompt was 'a fox in snw'" in stderr
    assert "owl" not in stderr
    corrected = manifest(out)[1]
    assert corrected["prompt"] == "a fox in snow"
    assert (corrected["task_id"], corrected["file"]) == (made["task_id"], made["file"])
    assert corrected["made_from"] == {"prompt": "a fox in snw"}
    assert manifest(out)[2]["made_from"] is None


@command_test
async def test_two_lines_with_one_id_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.jsonl",
        '{"prompt": "a fox", "id": "fox"}\n{"prompt": "a cat"}\n{"prompt": "a fox", "id": "fox"}\n',
    )
    async with simulator() as fake:
        ran = await run_cli(
            "batch", str(path), "--out", str(tmp_path / "out"), *FAST, env=cli_env(fake.url)
        )
        assert fake.stats.requests["submit"] == 0
    assert ran.code == 2
    assert f"{path}:3: id 'fox' is also on line 1" in ran.stderr
    assert "nothing was submitted" in ran.stderr


@command_test
async def test_another_model_in_the_same_folder_makes_its_own_clips(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a cat", "a dog", "a cow"])
    out = tmp_path / "out"
    kling = ("--model", "kling-v1.6-t2v")
    async with simulator() as fake:
        await batch(path, out, fake)
        first = manifest(out)
        video01 = inodes(out)
        stderr = await batch(path, out, fake, *kling)
        assert "3 of 3 clips made" in stderr
        assert fake.stats.task_count == 6  # the same texts, another model: three prompts more
        assert len(clips(out)) == 6
        assert {name: inodes(out).get(name) for name in video01} == video01  # none written over
        second = manifest(out)
        assert not {line["file"] for line in second} & {line["file"] for line in first}
        assert {line["model"] for line in second} == {"kling-v1.6-t2v"}

        back = await batch(path, out, fake)  # and back: nothing new, its own clips
        assert "3 of 3 clips made" in back
        assert fake.stats.task_count == 6
        assert manifest(out) == first
        assert {line["model"] for line in first} == {"minimax-video-01"}
        again = await batch(path, out, fake, *kling)
        assert "3 of 3 clips made" in again
        assert manifest(out) == second
        assert fake.stats.task_count == 6
    # Each file is the clip of the task its manifest line names, of its model.
    tasks = fake.stats.tasks
    for line in [*first, *second]:
        assert tasks[line["task_id"]].endpoint == line["model"]
        assert tasks[line["task_id"]].request.prompt == line["prompt"]
    assert len(ledger(out)) == 6


@command_test
async def test_a_folder_of_the_code_before_is_migrated_without_paying_again(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    txt = prompts_file(
        tmp_path / "p.txt",
        ["a panda in bamboo", "a red kite at dusk", "a panda in bamboo", "a lighthouse in a storm"],
    )
    jsonl = write(
        tmp_path / "h.jsonl",
        '{"prompt": "a fox in snow", "id": "fox", "duration": 6}\n{"prompt": "a heron fishing"}\n',
    )
    hailuo = ("--model", "minimax-hailuo-02")
    async with simulator() as fake:
        made = old_folder(out, "ledger-v1.sql", fake.url.rstrip("/"))
        tasks = {row["file"]: row["task_id"] for row in ledger(out)}
        on_disk = inodes(out)
        assert "4 of 4 clips made" in await batch(txt, out, fake)
        assert [line["file"] for line in manifest(out)] == [
            "0001-a-panda-in-bamboo.mp4",
            "0002-a-red-kite-at-dusk.mp4",
            "0003-a-panda-in-bamboo.mp4",
            "0004-a-lighthouse-in-a-storm.mp4",
        ]
        assert all(tasks[line["file"]] == line["task_id"] for line in manifest(out))
        assert "2 of 2 clips made" in await batch(jsonl, out, fake, *hailuo)
        assert [line["file"] for line in manifest(out)] == [
            "0001-a-fox-in-snow.mp4",
            "0002-a-heron-fishing.mp4",
        ]
        assert fake.stats.requests["submit"] == 0
        # Migrated, the prompts are known by what they are: a line inserted at the top
        # is the only one paid for.
        prompts_file(txt, ["a new first line", *txt.read_text().splitlines()])
        assert "5 of 5 clips made" in await batch(txt, out, fake)
        assert tasks_per_prompt(fake) == {"a new first line": 1}
    assert inodes(out) | on_disk == inodes(out)  # every old clip where it was, not rewritten
    assert all((out / name).read_bytes() == body for name, body in made.items())
    with contextlib.closing(sqlite3.connect(out / ".novita" / "ledger.sqlite")) as db, db:
        assert db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone() == ("2",)
    db.close()


@command_test
async def test_a_folder_two_models_shared_before_is_set_right(tmp_path: Path) -> None:
    # The code before let Kling's clips replace Video-01's files of the same names, and
    # then said "2 of 2 clips made" for Video-01 over Kling's clips (case 4).
    out = tmp_path / "out"
    path = prompts_file(tmp_path / "c.txt", ["a cat", "a dog"])
    async with simulator() as fake:
        old_folder(out, "ledger-v1-two-models.sql", fake.url.rstrip("/"))
        on_disk = inodes(out)
        kling = await batch(path, out, fake, "--model", "kling-v1.6-t2v")
        assert "2 of 2 clips made" in kling
        assert [line["file"] for line in manifest(out)] == ["0001-a-cat.mp4", "0002-a-dog.mp4"]
        ran = await run_cli("batch", str(path), "--out", str(out), *FAST, env=cli_env(fake.url))
        assert fake.stats.requests["submit"] == 0
    # Video-01's clips are gone: its tasks are asked for again (this simulator has never
    # heard of them), and the files Kling's clips are in are left alone.
    assert ran.code == 1
    assert "0 of 2 clips made, 2 failed" in ran.stderr
    lines = manifest(out)
    assert [(line["status"], line["file"]) for line in lines] == [("succeeded", None)] * 2
    assert all("download failed" in line["error"] for line in lines)
    assert inodes(out) == on_disk
