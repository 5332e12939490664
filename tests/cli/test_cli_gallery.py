"""The gallery in a real headless browser: every clip's first frame decodes, and a broken
or missing file is seen as broken (so the check can fail)."""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import anyio
import pytest

from tests.cli.cli_support import (
    CLIP,
    FAST,
    cli_env,
    clips,
    manifest,
    prompts_file,
    run_cli,
    simulator,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip(
        "no chromium on PATH (apt-get install -y chromium); CI installs it",
        allow_module_level=True,
    )


class Page(HTMLParser):
    """The videos (their attributes) and the text of a dumped DOM."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.videos: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "video":
            self.videos.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def open_in_browser(page: Path, profile: Path) -> Page:
    """The DOM of ``page`` after chromium has had time to load its videos."""
    assert CHROMIUM is not None, "chromium is required in CI"
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                page.as_uri(),
            ],
            stderr=subprocess.DEVNULL,
        )
    return Page(done.stdout.decode())


async def test_the_gallery_plays_every_clip_in_a_browser(tmp_path: Path) -> None:
    prompts = ["A fox <b>jumps</b> & lands", "a [illegal] scene", "A whale sings", "A lynx naps"]
    path = prompts_file(tmp_path / "p.txt", prompts)
    out = tmp_path / "out"
    async with simulator() as fake:
        ran = await run_cli("batch", str(path), "--out", str(out), *FAST, env=cli_env(fake.url))
    assert ran.code == 1, ran.stderr
    assert len(clips(out)) == 3

    page = await open_in_browser(out / "index.html", tmp_path / "profile")
    assert [video["src"] for video in page.videos] == [
        x["file"] for x in manifest(out) if x["file"]
    ]
    for video in page.videos:
        assert video["data-state"] == "loaded", video
        assert video["data-size"] == "320x180", video  # the simulator's clip, decoded
    text = "".join(page.text)
    assert "A fox <b>jumps</b> & lands" in text  # shown as text, not markup
    assert "ILLEGAL_PROMPT" in text

    # The same check sees a clip that is garbage, and one that is gone.
    first, second, third = (out / x["file"] for x in manifest(out) if x["file"])
    first.write_bytes(b"\x00not a video\x00" * 100)
    second.unlink()
    page = await open_in_browser(out / "index.html", tmp_path / "profile2")
    assert [video["data-state"] for video in page.videos] == ["error", "error", "loaded"]
    assert third.read_bytes() == CLIP


async def test_the_readme_command(tmp_path: Path) -> None:
    """``novita-video batch examples/prompts.txt --out clips --simulate``, as the README says."""
    from tests.cli.cli_support import REPO

    ran = await run_cli(
        "batch",
        "examples/prompts.txt",
        "--out",
        str(tmp_path / "clips"),
        "--simulate",
        env=cli_env(None, None),
        cwd=REPO,
    )
    assert ran.code == 0, ran.stderr
    out = tmp_path / "clips"
    lines = manifest(out)
    assert len(lines) == 8
    assert len(clips(out)) == 8
    page = await open_in_browser(out / "index.html", tmp_path / "profile")
    assert [video["data-state"] for video in page.videos] == ["loaded"] * 8
