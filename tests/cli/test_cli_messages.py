"""What the command says when a user's own things are in the way: the output folder, a
broken JSONL line, a file name given as an image URL, a folder an earlier run used."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from novita_video.cli._commands import _out_problem
from novita_video.cli._inputs import PromptSource
from tests.cli.cli_support import FAST, cli_env, prompts_file, run_cli, simulator, write

pytestmark = [pytest.mark.anyio, pytest.mark.subprocess]


@pytest.mark.slow
@pytest.mark.subprocess
async def test_an_out_that_is_a_file_is_said_in_words(tmp_path: Path) -> None:
    prompts = prompts_file(tmp_path / "p.txt", ["a cat"])
    in_the_way = write(tmp_path / "clips", "not a folder")
    for out in (in_the_way, in_the_way / "sub"):
        ran = await run_cli("batch", str(prompts), "--out", str(out), env=cli_env("http://x"))
        assert ran.code == 2
        assert f"--out {out}: a file is in the way" in ran.stderr
        assert "nothing was submitted" in ran.stderr
        assert "Errno" not in ran.stderr
        assert "Traceback" not in ran.stderr


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (OSError(errno.EROFS, "Read-only file system"), "the file system is read-only"),
        (PermissionError(errno.EACCES, "Permission denied"), "no permission to write there"),
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (OSError(errno.EIO, "Input/output error"), "cannot be used (Input/output error)"),
    ],
)
def test_out_problems_in_words(tmp_path: Path, error: OSError, words: str) -> None:
    assert _out_problem(tmp_path / "x", error).startswith(words)


def problems(tmp_path: Path, text: str, model: str = "minimax-video-01") -> list[str]:
    source = PromptSource(str(write(tmp_path / "p.jsonl", text)), model=model)
    return [str(problem) for problem in source.validate().errors]


def test_a_broken_jsonl_line_and_a_file_given_as_a_url_are_explained(tmp_path: Path) -> None:
    text = (
        '{"prompt": "a cat"}\n'
        '{"prompt": "a dog", \n'
        '{"prompt": "a cow"} x\n'
        '{"prompt": "a pig", "image_url": "pictures/pig.png"}\n'
    )
    broken, trailing, file_url = problems(tmp_path, text)
    assert broken.startswith(f"{tmp_path / 'p.jsonl'}:2: not valid JSON: the line ends before")
    assert 'each line must be one JSON object, such as {"prompt": "a red kite"}' in broken
    assert ":3: not valid JSON at column 21" in trailing
    assert ":4: image_url: must be an absolute http(s) URL" in file_url
    assert "'pictures/pig.png' looks like a file" in file_url


def test_a_local_image_of_hailuo_is_read_beside_the_prompts_file(tmp_path: Path) -> None:
    (tmp_path / "pig.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    text = '{"prompt": "a pig", "image": "pig.png"}\n{"prompt": "a cow", "image": "cow.png"}\n'
    (missing,) = problems(tmp_path, text, "minimax-hailuo-02")
    assert ":2: image: cannot read" in missing
    assert "cow.png" in missing


@pytest.mark.slow
@pytest.mark.subprocess
async def test_a_resumed_run_says_what_it_found(tmp_path: Path) -> None:
    prompts = prompts_file(tmp_path / "p.txt", ["a cat", "a dog", "a [illegal] cow"])
    out = str(tmp_path / "out")
    async with simulator() as fake:
        first = await run_cli("batch", str(prompts), "--out", out, *FAST, env=cli_env(fake.url))
        assert first.code == 1
        assert "resuming" not in first.stderr
        again = await run_cli("batch", str(prompts), "--out", out, *FAST, env=cli_env(fake.url))
    assert (
        f"novita-video: resuming {out}: an earlier run left 2 clip(s) made, 1 failed "
        "(refused ones are sent again)"
    ) in again.stderr
