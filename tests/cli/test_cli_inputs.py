"""Reading prompt files: the three formats, line numbers, every error, and streaming."""

from __future__ import annotations

import io
import sys
import tracemalloc
from pathlib import Path

import pytest

from novita_video.cli._inputs import InputError, PromptSource, Row
from tests.cli.cli_support import write


def read(path: Path, fmt: str | None = None) -> list[Row]:
    source = PromptSource(str(path), fmt)
    validation = source.validate()
    assert validation.errors == ()
    rows = list(source.rows())
    assert len(rows) == validation.count
    return rows


def test_txt_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "# heading\n\nA cat on a boat\n   \n  A dog  \r\n#done\n")
    rows = read(path)
    assert [(r.index, r.line, r.request.prompt) for r in rows] == [
        (1, 3, "A cat on a boat"),
        (2, 5, "A dog"),
    ]


def test_jsonl_fields_and_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.jsonl",
        '{"prompt": "A fox", "id": 7}\n\n'
        '{"prompt": "A bird", "image_url": "https://example.com/b.png",'
        ' "enable_prompt_expansion": false, "id": "b"}\n',
    )
    first, second = read(path)
    assert (first.index, first.line, first.id, first.request.prompt) == (1, 1, "7", "A fox")
    assert (second.index, second.line, second.id) == (2, 3, "b")
    assert second.request.image_url == "https://example.com/b.png"
    assert second.request.enable_prompt_expansion is False


def test_csv_columns_quotes_and_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.csv",
        "\ufeffID,Prompt,notes,enable_prompt_expansion\n"
        'c1,"A whale, singing",keep,no\n'
        "\n"
        'c2,"Two\nlines",,\n'
        "c3,A third,,TRUE\n",
    )
    rows = read(path)
    assert [(r.index, r.line, r.id, r.request.prompt) for r in rows] == [
        (1, 2, "c1", "A whale, singing"),
        (2, 4, "c2", "Two\nlines"),
        (3, 6, "c3", "A third"),
    ]
    assert [r.request.enable_prompt_expansion for r in rows] == [False, True, True]


def test_format_option_wins_over_the_name(tmp_path: Path) -> None:
    path = write(tmp_path / "prompts.data", '{"prompt": "x"}\n')
    assert read(path, "jsonl")[0].request.prompt == "x"
    with pytest.raises(InputError, match="cannot tell its format"):
        PromptSource(str(path))


@pytest.mark.parametrize(
    ("name", "content", "line", "message"),
    [
        ("a.jsonl", '{"prompt": "ok"}\n{"prompt": "ok",\n', 2, "not valid JSON"),
        ("b.jsonl", '["a list"]\n', 1, "must be a JSON object"),
        (
            "c.jsonl",
            '{"prompt": "x", "image_ulr": "https://a/b"}\n',
            1,
            "unknown field(s) image_ulr",
        ),
        ("d.jsonl", '{"image_url": "https://a/b"}\n', 1, "no 'prompt'"),
        ("e.jsonl", '{"prompt": "x", "image_url": "file:///etc/passwd"}\n', 1, "image_url"),
        ("f.jsonl", '{"prompt": "x", "id": [1]}\n', 1, "id: must be"),
        ("g.jsonl", '{"prompt": "x", "enable_prompt_expansion": "yes"}\n', 1, "true or false"),
        ("h.txt", "fine\n\n" + "x" * 2001 + "\n", 3, "at most 2000 characters"),
        ("i.txt", b"fine\n\xff\xfe oops\n", 2, "not UTF-8"),
        ("j.csv", "text,id\nhello,1\n", 1, "no 'prompt' column"),
        ("k.csv", "prompt,image_url\nok,\nx,not a url\n", 3, "image_url"),
        ("l.csv", "prompt,enable_prompt_expansion\nx,maybe\n", 2, "must be true or false"),
        ("m.csv", "prompt,prompt\nx,y\n", 1, "duplicate column(s) prompt"),
        ("n.csv", "prompt,id\n  ,x\n", 2, "must not be empty"),
    ],
)
def test_errors_name_their_line(
    tmp_path: Path, name: str, content: str | bytes, line: int, message: str
) -> None:
    source = PromptSource(str(write(tmp_path / name, content)))
    validation = source.validate()
    assert validation.error_count == 1
    (error,) = validation.errors
    assert error.line == line
    assert str(error).startswith(f"{tmp_path / name}:{line}: ")
    assert message in str(error)


def test_every_error_is_counted_and_the_first_ones_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.jsonl",
        "".join("oops\n" if i % 2 else '{"prompt": "ok"}\n' for i in range(50)),
    )
    validation = PromptSource(str(path)).validate(keep=3)
    assert (validation.count, validation.error_count) == (25, 25)
    assert [e.line for e in validation.errors] == [2, 4, 6]


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="No such file"):
        PromptSource(str(tmp_path / "absent.txt")).validate()


def test_stdin_is_read_once_and_replayed(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"one\n# skip\ntwo\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    source = PromptSource("-")
    assert source.validate().count == 2
    assert [r.request.prompt for r in source.rows()] == ["one", "two"]
    assert [r.request.prompt for r in source.rows()] == ["one", "two"]
    source.close()


def test_identity_is_content_and_occurrence_never_position() -> None:
    from novita_video import VideoRequest

    cat = Row(1, 1, VideoRequest("a cat"))
    assert cat.key == Row(7, 9, VideoRequest("a cat")).key  # neither position nor line
    others = [
        Row(1, 1, VideoRequest("a cat"), occurrence=2),
        Row(1, 1, VideoRequest("a dog")),
        Row(1, 1, VideoRequest("a cat", enable_prompt_expansion=False)),
        Row(1, 1, VideoRequest("a cat", image_url="https://example.com/c.png")),
        Row(1, 1, VideoRequest("a cat"), id="x"),
    ]
    assert len({cat.key, *(row.key for row in others)}) == 1 + len(others)
    # A line with an id is that id: its text may change, it stays the same prompt.
    assert Row(3, 3, VideoRequest("a cat, corrected"), id="x").key == others[-1].key


@pytest.mark.slow
def test_a_big_file_is_streamed_not_held(tmp_path: Path) -> None:
    line = "A slow pan across a misty mountain lake at dawn, loons calling, " * 2
    path = tmp_path / "big.txt"
    with path.open("w") as file:
        for i in range(40_000):
            file.write(f"{i} {line}\n")
    size = path.stat().st_size
    source = PromptSource(str(path))
    tracemalloc.start()
    try:
        assert source.validate().count == 40_000
        _, validated = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert sum(1 for _ in source.rows()) == 40_000
        _, streamed = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 5_000_000
    assert validated < size / 20
    # To number identical lines, the rows' pass keeps a 64-bit hash and a count per
    # distinct prompt (about 70 bytes), never its line (about 135 bytes here, and a str
    # of it more than that).
    assert streamed < size / 20 + 80 * 40_000
