"""The gallery in a real headless Chromium, offline: every clip's first frame decodes, a
broken or missing file is seen as broken, and a gallery of 10,000 cards filters,
searches every prompt and makes its players only as they come into view.

The browser is driven over the DevTools protocol (``browser_support``): Debian's
``chromium``, which CI installs, and aiohttp, nothing else. How fast the 10,000-card
gallery opens is measured by the benchmark (``python -m benchmarks.command``), not here:
a test must pass on a busy machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from novita_video.cli._gallery import PAGE_SIZE, write_gallery
from novita_video.cli._outputs import Entry, write_manifest
from tests.cli.browser_support import CHROMIUM, Page, chromium
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

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip(
        "no chromium on PATH (apt-get install -y chromium); CI installs it",
        allow_module_level=True,
    )

#: Card kinds, as the page marks them (``data-kind``).
NOT_MADE = {"pending", "unknown", "not submitted", "not downloaded"}


async def opened(page: Page, gallery: Path, fragment: str = "") -> None:
    await page.goto(gallery.as_uri() + fragment)
    await page.wait_for("document.body.dataset.ready === '1'")


async def cards(page: Page) -> list[dict[str, Any]]:
    """The cards on screen: index, kind, model, text, whether a player is in it."""
    found = await page.evaluate(
        "JSON.stringify([...document.querySelectorAll('#cards figure')].map(f => ({"
        " index: Number(f.id.slice(5)), kind: f.dataset.kind, model: f.dataset.model,"
        " text: f.textContent, player: !!f.querySelector('.player'),"
        " video: !!f.querySelector('video')})))"
    )
    return list(json.loads(found))


async def rendered(page: Page, before: int) -> None:
    await page.wait_for(f"Number(document.body.dataset.rendered) > {before}")


async def render_count(page: Page) -> int:
    return int(await page.evaluate("Number(document.body.dataset.rendered)"))


async def videos(page: Page, settled: int) -> list[dict[str, str]]:
    """The players, once ``settled`` of them have decoded or failed."""
    await page.wait_for(f"document.querySelectorAll('video[data-state]').length >= {settled}")
    found = await page.evaluate(
        "JSON.stringify([...document.querySelectorAll('video')].map(v => ({"
        " src: v.getAttribute('src'), state: v.dataset.state, size: v.dataset.size,"
        " preload: v.preload, broken: v.closest('figure').classList.contains('broken')})))"
    )
    return list(json.loads(found))


def offline(page: Page) -> None:
    """The page asked for nothing but files of its folder (and the browser's own icons)."""
    asked = page.requested()
    assert asked
    assert all(url.startswith(("file://", "data:")) for url in asked), asked
    assert page.thrown() == []


async def test_the_gallery_plays_every_clip_in_a_browser(tmp_path: Path) -> None:
    prompts = ["A fox <b>jumps</b> & lands", "a [illegal] scene", "A whale sings", "A lynx naps"]
    path = prompts_file(tmp_path / "p.txt", prompts)
    out = tmp_path / "out"
    async with simulator() as fake:
        ran = await run_cli("batch", str(path), "--out", str(out), *FAST, env=cli_env(fake.url))
    assert ran.code == 1, ran.stderr
    assert len(clips(out)) == 3
    files = [x["file"] for x in manifest(out) if x["file"]]

    async with chromium() as browser:
        page = await browser.new_page(1280, 2400)  # every card in view
        await opened(page, out / "index.html")
        players = await videos(page, 3)
        assert [video["src"] for video in players] == files
        for video in players:
            assert video["state"] == "loaded", video
            assert video["size"] == "320x180", video  # the simulator's clip, decoded
        shown = await cards(page)
        assert "A fox <b>jumps</b> & lands" in shown[0]["text"]  # text, not markup
        assert shown[1]["kind"] == "failed"
        assert "ILLEGAL_PROMPT" in shown[1]["text"]
        task = manifest(out)[0]["task_id"]
        assert f"task {task}" in shown[0]["text"]
        assert "minimax-video-01" in shown[0]["text"]
        assert "made in " in shown[0]["text"]
        assert await page.evaluate("document.querySelector('a[href=\"manifest.jsonl\"]') !== null")
        offline(page)

        # The same check sees a clip that is garbage, and one that is gone.
        first, second, third = (out / name for name in files)
        first.write_bytes(b"\x00not a video\x00" * 100)
        second.unlink()
        page = await browser.new_page(1280, 2400)
        await opened(page, out / "index.html")
        players = await videos(page, 3)
        assert [video["state"] for video in players] == ["error", "error", "loaded"]
        assert [video["broken"] for video in players] == [True, True, False]
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
    assert len(manifest(out)) == 8
    assert len(clips(out)) == 8
    async with chromium() as browser:
        page = await browser.new_page(1280, 3000)
        await opened(page, out / "index.html")
        assert [video["state"] for video in await videos(page, 8)] == ["loaded"] * 8


#: The 10,000 cards' statuses, in turn: six made, then one of each other kind.
CYCLE = ("succeeded",) * 6 + ("failed", "pending", "unknown", "not_submitted")
TRICKY = "</script><script>document.title='owned'</script> \u2028<!--"


def big_gallery(folder: Path, total: int = 10_000) -> Path:
    """A manifest of ``total`` prompts of two models, every status; the first 100 clips
    on disk (the simulator's), the others named but absent (no browser gets that far)."""
    folder.mkdir()
    entries = []
    for index in range(1, total + 1):
        status = CYCLE[index % len(CYCLE)]
        file = f"clip-{index:05d}.mp4" if status == "succeeded" else None
        if file is not None and index <= 100:
            (folder / file).write_bytes(CLIP)
        model = "kling-v1.6-t2v" if index % 3 == 0 else "minimax-video-01"
        error = "the task failed: content moderation failed" if status == "failed" else None
        entries.append(
            Entry(
                index,
                index + 1,
                None,
                model,
                f"a lighthouse in a storm, take {index} {TRICKY if index == 4321 else ''}",
                None if status == "not_submitted" else f"task-{index:05d}",
                status,
                file,
                error,
                None,
                42.0 if file else None,
            )
        )
    write_manifest(entries, folder / "manifest.jsonl")
    write_gallery(folder / "manifest.jsonl", folder / "index.html")
    return folder / "index.html"


async def test_a_gallery_of_10000_cards_filters_searches_and_plays_lazily(
    tmp_path: Path,
) -> None:
    gallery = big_gallery(tmp_path / "big")
    expected = [CYCLE[index % len(CYCLE)] for index in range(1, 10_001)]
    async with chromium() as browser:
        page = await browser.new_page(1280, 900)
        await opened(page, gallery)
        first = await cards(page)
        assert [card["index"] for card in first] == list(range(1, PAGE_SIZE + 1))
        assert await page.evaluate("document.getElementById('shown').textContent") == (
            f"1\u2013{PAGE_SIZE} of 10,000"
        )
        # Players only where a person can see: the first screen's, not the page's.
        in_view = len([card for card in first if card["video"]])
        holders = len([card for card in first if card["player"]])
        assert 1 <= in_view < holders
        assert {video["preload"] for video in await videos(page, 0)} == {"metadata"}
        assert await page.evaluate("document.querySelectorAll('video').length") == in_view
        await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        await page.wait_for(f"document.querySelectorAll('video').length > {in_view}")
        assert await page.evaluate("document.querySelectorAll('video').length") <= holders

        # Pending, unknown and not submitted are not painted as failures.
        colours = json.loads(
            await page.evaluate(
                "JSON.stringify(Object.fromEntries([...document.querySelectorAll("
                "'#cards figure .missing')].map(m => [m.closest('figure').dataset.kind,"
                " getComputedStyle(m).backgroundColor])))"
            )
        )
        assert set(colours) == {"failed", "pending", "unknown", "not submitted"}
        assert len(set(colours.values())) == 4
        assert colours["failed"] == "rgb(122, 31, 31)"

        # Filters: failed, then not made, then made, each over all 10,000.
        for button, kinds, count in (
            ("failed", {"failed"}, expected.count("failed")),
            ("notmade", NOT_MADE, 3000),
            ("made", {"made"}, expected.count("succeeded")),
        ):
            before = await render_count(page)
            await page.click(f"button[data-show={button}]")
            await rendered(page, before)
            shown = await cards(page)
            assert {card["kind"] for card in shown} <= kinds
            assert len(shown) == PAGE_SIZE
            assert await page.evaluate("Number(document.body.dataset.matches)") == count
            assert await page.evaluate("location.hash") == f"#show={button}"

        # By model: the select narrows what the filter shows.
        before = await render_count(page)
        await page.evaluate(
            "(() => { const s = document.getElementById('model'); s.value = 'kling-v1.6-t2v';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        await rendered(page, before)
        shown = await cards(page)
        assert {card["model"] for card in shown} == {"kling-v1.6-t2v"}
        assert {card["kind"] for card in shown} == {"made"}
        made_kling = sum(1 for n, s in enumerate(expected, 1) if s == "succeeded" and n % 3 == 0)
        assert await page.evaluate("Number(document.body.dataset.matches)") == made_kling

        # Search covers every prompt, whatever page it is on (with every filter off).
        await page.click("button[data-show=all]")
        await page.evaluate(
            "(() => { const s = document.getElementById('model'); s.value = '';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        before = await render_count(page)
        await page.type("#search", "take 9999")
        await rendered(page, before)
        (found,) = await cards(page)
        assert found["index"] == 9999
        assert await page.evaluate("document.getElementById('shown').textContent") == (
            "1\u20131 of 1 matching (of 10,000)"
        )
        # A task id, and a reason, are searched too.
        await page.evaluate("document.getElementById('search').value = ''")
        before = await render_count(page)
        await page.type("#search", "task-07777")
        await rendered(page, before)
        assert [card["index"] for card in await cards(page)] == [7777]

        # A prompt holding </script> and U+2028 is text on its card, and broke nothing.
        await page.evaluate("document.getElementById('search').value = ''")
        before = await render_count(page)
        await page.type("#search", "take 4321")
        await rendered(page, before)
        (tricky,) = await cards(page)
        assert "</script><script>document.title='owned'</script>" in tricky["text"]
        assert (await page.evaluate("document.title")).startswith("novita-video: 6000 of 10000")
        offline(page)

        # The view is in the address: opened again, it is the same; #clip-N finds a card.
        page = await browser.new_page(1280, 900)
        await opened(page, gallery, "#show=failed&page=3")
        shown = await cards(page)
        assert {card["kind"] for card in shown} == {"failed"}
        assert "page 3 of" in await page.evaluate("document.querySelector('.where').textContent")
        page = await browser.new_page(1280, 900)
        await opened(page, gallery, "#clip-5000")
        assert 5000 in [card["index"] for card in await cards(page)]
        offline(page)
