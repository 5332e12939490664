"""Clip names, the manifest and the gallery's HTML (the browser test loads it for real)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from novita_video import VideoRequest
from novita_video.cli._gallery import write_gallery
from novita_video.cli._inputs import Row
from novita_video.cli._ledger import Record, State
from novita_video.cli._outputs import (
    Entry,
    clip_name,
    remove_leftovers,
    slugify,
    write_manifest,
)


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("A panda walks through bamboo", "a-panda-walks-through-bamboo"),
        ("Ein Bär läuft über den Schnee!", "ein-bar-lauft-uber-den-schnee"),
        ("  --Hello,   World--  ", "hello-world"),
        ("熊猫在竹林里", "clip"),
        ("../../etc/passwd", "etc-passwd"),
        ("one two three four five six seven eight nine", "one-two-three-four-five-six-seven-eight"),
        ("x" * 60, "x" * 40),
    ],
)
def test_slugs_are_short_lowercase_ascii(text: str, slug: str) -> None:
    assert slugify(text) == slug
    assert re.fullmatch(r"[a-z0-9-]{1,40}", slugify(text))


def test_clip_names_come_from_the_input_only() -> None:
    row = Row(7, 12, VideoRequest("A red panda naps"))
    assert clip_name(row) == f"a-red-panda-naps-{row.key[:8]}.mp4"
    # Not the position: a prompt keeps its name when lines move around it.
    assert clip_name(Row(1, 1, VideoRequest("A red panda naps"))) == clip_name(row)


def entries() -> list[Entry]:
    made = Record(State.SUCCEEDED, "t1", "0001-a-cat.mp4", None)
    failed = Record(State.FAILED, "t2", None, "the task failed: content moderation failed")
    return [
        Entry.of(Row(1, 1, VideoRequest("a cat")), made),
        Entry.of(Row(2, 2, VideoRequest('<script>alert("x")</script> & co')), failed),
        Entry.of(Row(3, 3, VideoRequest("a dog")), Record(State.SENDING, None, None, None)),
        Entry.of(Row(4, 4, VideoRequest("a cow")), None, unsent_reason="not submitted: stop"),
    ]


def test_manifest_has_a_line_per_prompt(tmp_path: Path) -> None:
    write_manifest(entries(), tmp_path / "manifest.jsonl")
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    back = [Entry.from_json(line) for line in lines]
    assert back == entries()
    assert [e.status for e in back] == ["succeeded", "failed", "unknown", "not_submitted"]
    assert "--resubmit-unknown" in (back[2].error or "")
    assert back[3].error == "not submitted: stop"


def gallery_data(page: str) -> dict[str, Any]:
    """The JSON the gallery's script reads its cards from."""
    found = re.search(
        r'<script type="application/json" id="gallery-data">(.*?)</script>', page, re.S
    )
    assert found is not None
    return dict(json.loads(found.group(1)))


def test_gallery_escapes_prompts_and_shows_reasons(tmp_path: Path) -> None:
    write_manifest(entries(), tmp_path / "manifest.jsonl")
    write_gallery(tmp_path / "manifest.jsonl", tmp_path / "index.html")
    page = (tmp_path / "index.html").read_text()
    # The cards are drawn by the page's script from the manifest's lines, as data: no
    # prompt can close the element that holds them, or be read as markup.
    assert "<script>alert" not in page
    assert page.count("</script>") == 2  # the data's element, the script's
    cards = gallery_data(page)["cards"]
    assert [card["p"] for card in cards] == [e.prompt for e in entries()]
    assert [card["k"] for card in cards] == ["made", "failed", "unknown", "not submitted"]
    assert cards[0]["f"] == "0001-a-cat.mp4"
    assert cards[1]["e"] == "the task failed: content moderation failed"
    assert '<a href="manifest.jsonl">' in page
    # The header counts what was not made, and why, as well as what was.
    heading = "1 of 4 clips, 1 failed, 1 not submitted, 1 unknown"
    assert f"<title>novita-video: {heading}</title>" in page
    assert f"<h1>{heading}</h1>" in page


def test_gallery_data_survives_any_prompt(tmp_path: Path) -> None:
    """A prompt holding ``</script>``, ``<!--``, U+2028 or quotes is data, byte for byte."""
    tricky = 'end </script><script>alert(1)</script> <!-- \u2028 \u2029 "q" & \\ done'
    entry = Entry.of(Row(1, 1, VideoRequest(tricky)), None, unsent_reason="stop")
    write_manifest([entry], tmp_path / "manifest.jsonl")
    write_gallery(tmp_path / "manifest.jsonl", tmp_path / "index.html", notes=["spent <$1>"])
    page = (tmp_path / "index.html").read_text()
    assert "\u2028" not in page  # a line break to JavaScript: escaped, not raw
    assert "\\u2028" in page  # JSON's escape, which JavaScript reads back
    assert "<!--" not in page
    assert gallery_data(page)["cards"][0]["p"] == tricky
    assert '<p class="note">spent &lt;$1&gt;</p>' in page


def test_outputs_are_readable_like_any_file(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        write_manifest(entries(), tmp_path / "manifest.jsonl")
    finally:
        os.umask(mask)
    assert (tmp_path / "manifest.jsonl").stat().st_mode & 0o777 == 0o644


def test_leftovers_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".0001-a-cat.mp4.k2j3.part").write_bytes(b"half")
    (tmp_path / "0001-a-cat.mp4").write_bytes(b"whole")
    remove_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001-a-cat.mp4"]


def test_the_summary_lists_the_first_failures_and_counts_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from novita_video.cli._commands import FAILURES_SHOWN, _list_failures

    failed = [
        Entry.of(
            Row(n, n, VideoRequest(f"prompt number {n} " + "x" * 50)),
            Record(State.FAILED, f"t{n}", None, f"the task failed: reason {n}"),
        )
        for n in range(1, 9)
    ]
    write_manifest([*failed, *entries()], tmp_path / "manifest.jsonl")
    _list_failures(tmp_path / "manifest.jsonl")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "novita-video: failed:"
    assert lines[1].startswith("  #1 'prompt number 1 xx")
    assert lines[1].endswith("…': the task failed: reason 1")
    assert len(lines) == 1 + FAILURES_SHOWN + 1
    # 8 failed tasks and the moderation failure of entries(): 5 shown, 4 more.
    assert lines[-1] == f"  and 4 more, see {tmp_path / 'manifest.jsonl'}"
