"""Every Python block of the README and ``docs/`` runs as pasted, against the simulator.

The convention (stated in docs/testing.md, "Every example here runs"): a block fenced
```` ```python ```` is run unless the line just above its fence is an HTML comment
``<!-- not run: why -->``. A block titled ``test_*.py`` or ``conftest.py`` is a pytest
file: a page's such blocks are written into one folder and run by pytest together. Any
other block is a script, run by ``python`` in an empty folder with ``NOVITA_API_KEY`` and
``NOVITA_BASE_URL`` pointing at a fresh simulator, and must exit 0 within a minute.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path

import anyio
import attrs
import pytest

from novita_video.testing import FakeNovita

pytestmark = [pytest.mark.anyio]

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_FENCE = re.compile(r'^(?P<indent> *)```python(?:\s+title="(?P<title>[^"]+)")?\s*$')
_NOT_RUN = re.compile(r"^\s*<!-- not run: (?P<why>\S.*\S) -->\s*$")
#: Seconds a block may take: a few prompts at Novita's 20 submits a minute, and slack.
TIMEOUT = 60


@attrs.frozen
class Block:
    page: str
    line: int
    code: str
    title: str | None
    not_run: str | None  # why, when marked

    @property
    def is_pytest(self) -> bool:
        name = self.title or ""
        return name == "conftest.py" or (name.startswith("test_") and name.endswith(".py"))

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}" + (f":{self.title}" if self.title else "")


def blocks(path: Path) -> list[Block]:
    """The ```python blocks of a page, dedented (a block may sit in a tab or a list)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        indent = fence["indent"]
        end = index + 1
        while lines[end].rstrip() != f"{indent}```":
            end += 1
        code = textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n"
        above = _NOT_RUN.match(lines[index - 1]) if index else None
        found.append(
            Block(
                str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name,
                index + 1,
                code,
                fence["title"],
                above["why"] if above else None,
            )
        )
        index = end + 1
    return found


ALL = [block for page in PAGES for block in blocks(page)]
SCRIPTS = [block for block in ALL if block.not_run is None and not block.is_pytest]
PYTEST_PAGES = sorted({block.page for block in ALL if block.not_run is None and block.is_pytest})


def environment() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NOVITA_", "PYTEST_")) and key != "CLIPS_WEBHOOK_URL"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def test_the_convention_is_stated_and_every_block_is_run_or_says_why() -> None:
    guide = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    assert "<!-- not run: why -->" in guide
    assert len(SCRIPTS) >= 10, [block.id for block in SCRIPTS]
    assert PYTEST_PAGES == ["docs/testing.md"]
    marked = [block for block in ALL if block.not_run is not None]
    assert all(len(block.not_run or "") > 10 for block in marked), marked
    # A block not run is one a reader would not paste alone: a few, each with a reason.
    assert len(marked) <= 6, [block.id for block in marked]


def test_a_marker_is_only_a_marker_right_above_its_fence(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not run: a fragment of something -->\n```python\nx = 1\n```\n\n"
        "<!-- not run: too far above -->\n\n```python\ny = 2\n```\n"
        '=== "Tab"\n\n    ```python title="test_a.py"\n    z = 3\n    ```\n',
        encoding="utf-8",
    )
    found = [(b.code, b.not_run, b.title) for b in blocks(page)]
    assert found == [
        ("x = 1\n", "a fragment of something", None),
        ("y = 2\n", None, None),
        ("z = 3\n", None, "test_a.py"),
    ]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("block", SCRIPTS, ids=lambda block: block.id)
async def test_each_script_block_runs_against_the_simulator(block: Block, tmp_path: Path) -> None:
    script = tmp_path / (block.title or "example.py")
    script.write_text(block.code, encoding="utf-8")
    async with FakeNovita(task_duration=(0.5, 1.0)) as fake:
        env = environment() | {"NOVITA_API_KEY": fake.api_key, "NOVITA_BASE_URL": fake.url}
        with anyio.fail_after(TIMEOUT):
            done = await anyio.run_process(
                [sys.executable, "-W", "error", str(script)], cwd=tmp_path, env=env, check=False
            )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, f"{block.id} failed:\n{block.code}\n{output}"


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("page", PYTEST_PAGES)
async def test_each_pages_test_files_pass_under_pytest(page: str, tmp_path: Path) -> None:
    files = [b for b in ALL if b.page == page and b.is_pytest and b.not_run is None]
    for block in files:
        assert block.title is not None
        assert not (tmp_path / block.title).exists(), f"two blocks titled {block.title}"
        (tmp_path / block.title).write_text(block.code, encoding="utf-8")
    tests = sum(block.title != "conftest.py" for block in files)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
    with anyio.fail_after(TIMEOUT * 2):
        done = await anyio.run_process(command, cwd=tmp_path, env=environment(), check=False)
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed, output
    assert int(passed[1]) >= tests, output
