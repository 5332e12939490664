"""The documentation site (``mkdocs.yml``, ``docs/``) against the code it describes.

mkdocstrings renders whatever docstrings exist and says nothing about missing ones, so
the rules live here: every public name has a docstring, every public name is on an API
page, every exported exception is on the error page, the CLI reference lists every
option of both parsers, the quickstart carries the README's commands and its examples
run against the simulator, and ``mkdocs build --strict`` passes (broken links and
anchors, a missing include, a docstring Griffe cannot parse).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import attrs
import pytest

import novita_video
from novita_video._settings import (
    DEFAULT_BATCH,
    DEFAULT_HTTP,
    DEFAULT_POLLING,
    DEFAULT_WEBHOOKS,
    BatchLimits,
    HTTPSettings,
    PollSettings,
    WebhookSettings,
)
from novita_video.cli._commands import NOVITA_SUBMITS_PER_MINUTE, build_parser
from novita_video.testing import FakeNovita

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Public submodules documented elsewhere than on an API page (cli: the CLI reference).
NOT_ON_API_PAGES = {"cli"}


def public_modules() -> list[ModuleType]:
    """``novita_video`` and each public submodule: ``testing``, ``webhooks``, ..."""
    names = [
        info.name
        for info in pkgutil.iter_modules(novita_video.__path__)
        if not info.name.startswith("_") and info.name not in NOT_ON_API_PAGES
    ]
    return [novita_video] + [importlib.import_module(f"novita_video.{n}") for n in sorted(names)]


PUBLIC_MODULES = public_modules()
#: The parsers the CLI reference renders, as ``module:function`` (see docs/cli.md).
PARSERS = [
    "novita_video.cli._commands:build_parser",
    "novita_video.testing.__main__:build_parser",
]


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def directives(text: str) -> set[str]:
    """The objects a page renders with mkdocstrings (``::: path`` lines)."""
    return set(re.findall(r"^::: ([\w.]+)\s*$", text, flags=re.MULTILINE))


def exported(module: ModuleType) -> Iterator[tuple[str, Any]]:
    for name in module.__all__:
        if not name.startswith("_"):
            yield name, getattr(module, name)


def where(obj: Any) -> str:
    """``novita_video/_errors.py:APIStatusError`` for a report."""
    source = Path(inspect.getsourcefile(obj) or "?")
    try:
        shown = source.relative_to(ROOT)
    except ValueError:
        shown = source
    return f"{shown}:{obj.__qualname__}"


def documented_in_a_base(cls: type, name: str) -> bool:
    """An override may rely on the docstring of the member it overrides."""
    for base in cls.__mro__[1:]:
        member = base.__dict__.get(name)
        if member is not None and (getattr(member, "__doc__", None) or "").strip():
            return not isinstance(member, int | float | str | bool)
    return False


def missing_docstrings(module: ModuleType) -> list[str]:
    missing = []
    for _, obj in exported(module):
        if inspect.isfunction(obj) and not (obj.__doc__ or "").strip():
            missing.append(where(obj))
        if not inspect.isclass(obj):
            continue  # data (MODELS, a type alias) is documented by a #: comment
        if not (obj.__dict__.get("__doc__") or "").strip():
            missing.append(where(obj))
        for name, member in vars(obj).items():
            if name.startswith("_"):
                continue
            if isinstance(member, staticmethod | classmethod):
                member = member.__func__
            if not (isinstance(member, property) or inspect.isfunction(member)):
                continue  # fields, enum members and constants
            if (member.__doc__ or "").strip() or documented_in_a_base(obj, name):
                continue
            missing.append(f"{where(obj)}.{name}")
    return missing


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_public_name_has_a_docstring(module: ModuleType) -> None:
    # Classes, functions, and each public method and property a class defines itself.
    missing = missing_docstrings(module)
    assert not missing, "no docstring:\n  " + "\n  ".join(missing)


def api_page(module: ModuleType) -> str:
    """``api.md`` for the package, ``api-testing.md`` for ``novita_video.testing``, ..."""
    if module is novita_video:
        return "api.md"
    return f"api-{module.__name__.rpartition('.')[2]}.md"


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_public_name_is_on_an_api_page(module: ModuleType) -> None:
    name = api_page(module)
    assert (DOCS / name).is_file(), f"{module.__name__} has no docs/{name} (and nav entry)"
    shown = directives(page(name))
    if module is novita_video:
        shown |= directives(page("errors.md"))
    absent = [f"{module.__name__}.{n}" for n, _ in exported(module)]
    absent = [path for path in absent if path not in shown]
    assert not absent, f"add to docs/{name}: {absent}"


def exceptions() -> list[str]:
    return [
        name
        for name, obj in exported(novita_video)
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    ]


def test_every_exported_exception_is_on_the_error_page() -> None:
    errors = page("errors.md")
    rendered = directives(errors)
    for name in exceptions():
        assert f"novita_video.{name}" in rendered, f"no '::: novita_video.{name}' in errors.md"
        row = f"| [`{name}`](#novita_video.{name}) |"
        assert row in errors, f"no row for {name} in the table of docs/errors.md"
    # Rendered twice, an exception would have two anchors and ambiguous links.
    on_api = {f"novita_video.{name}" for name in exceptions()} & directives(page("api.md"))
    assert not on_api, f"exceptions belong on errors.md only: {sorted(on_api)}"


def load_hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DOCS / "_hooks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parser_options(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """``"batch --rpm"``, ``"--version"``, ...: every option of a parser and its subcommands."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        found.update(f"{prefix}{option}" for option in action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.add(f"{prefix}{name}")
                found |= parser_options(sub, f"{prefix}{name} ")
    return found


def rendered_options(markdown: str, prog: str) -> set[str]:
    """The same, read back from the rendered reference: table rows under each heading."""
    found: set[str] = set()
    command = ""
    for line in markdown.splitlines():
        heading = re.match(r"^#+ `(.+)`$", line)
        if heading:
            command = heading[1].removeprefix(prog).strip()
            if command:
                found.add(command)
            continue
        row = re.match(r"^\| `([^`]+)` \|", line)
        if row:
            for option in row[1].split(", "):
                name = option.split(" ")[0]
                if name.startswith("-"):
                    found.add(f"{command} {name}".strip())
    return found


@pytest.mark.parametrize("target", PARSERS)
def test_cli_reference_lists_every_option(target: str) -> None:
    assert f"<!-- argparse: {target} -->" in page("cli.md")
    hook = load_hook("cli_reference")
    module, _, function = target.partition(":")
    parser = getattr(importlib.import_module(module), function)()
    markdown = hook.render_target(target)
    assert rendered_options(markdown, parser.prog) == parser_options(parser)


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```sh\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_quickstart_has_the_readme_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, f"the README's sh blocks changed: {commands}"
    quickstart = page("quickstart.md")
    for command in commands:
        assert command in quickstart, f"docs/quickstart.md lacks the README's `{command}`"


def quickstart_script(title: str) -> str:
    pattern = rf'^```python title="{re.escape(title)}"\n(.*?)^```'
    found = re.search(pattern, page("quickstart.md"), flags=re.MULTILINE | re.DOTALL)
    assert found, f"no {title} in docs/quickstart.md"
    return found[1]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("title", "clips"), [("first_clip.py", ["panda.mp4"]), ("first_batch.py", ["clip-0.mp4"])]
)
@pytest.mark.slow
@pytest.mark.subprocess
async def test_quickstart_examples_run_against_the_simulator(
    title: str, clips: list[str], tmp_path: Path
) -> None:
    script = tmp_path / title
    script.write_text(quickstart_script(title), encoding="utf-8")
    async with FakeNovita(task_duration=(0.5, 1.0)) as fake:
        env = os.environ | {"NOVITA_API_KEY": fake.api_key, "NOVITA_BASE_URL": fake.url}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        done = await anyio.run_process(
            [sys.executable, str(script)], cwd=tmp_path, env=env, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    for clip in clips:
        assert (tmp_path / clip).stat().st_size > 0


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.subprocess
async def test_the_readme_example_says_why_a_clip_failed(tmp_path: Path) -> None:
    # The README's own loop prints `outcome.error` for a clip that was not made: it must
    # say why (it printed None for a failed task), and the made clips are downloaded.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^## Use it\n.*?^```python\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    assert found, "no python block under ## Use it in README.md"
    script = tmp_path / "readme_example.py"
    script.write_text(found[1], encoding="utf-8")
    async with FakeNovita(task_duration=(0.2, 0.4), failure_rate=1.0) as fake:
        env = os.environ | {"NOVITA_API_KEY": fake.api_key, "NOVITA_BASE_URL": fake.url}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        done = await anyio.run_process(
            [sys.executable, str(script)], cwd=tmp_path, env=env, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert sorted(line.split()[0] for line in lines) == ["0", "1"]
    for line in lines:
        assert "None" not in line
        assert "failed: content moderation failed" in line


@pytest.mark.slow
@pytest.mark.subprocess
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    needed = ["mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"]
    absent = [name for name in needed if importlib.util.find_spec(name.split(".")[0]) is None]
    if absent or importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip(
            f"the docs extra is not installed ({', '.join(absent) or 'mkdocstrings-python'}); "
            "pip install -e '.[docs]' to run this here. CI installs it and runs "
            "`mkdocs build --strict` in .ci/run."
        )
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=100, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "errors" / "index.html").is_file()
    # A readable reference: Client(...) one parameter a line (formatted), and no base
    # class of another library (anyio's AsyncContextManagerMixin) shown as ours.
    api = re.sub(r"<[^>]+>", "", (tmp_path / "api" / "index.html").read_text(encoding="utf-8"))
    assert "Client(\n    api_key: str | None = None,\n    *,\n    base_url:" in api
    assert "AsyncContextManagerMixin" not in api
    assert (tmp_path / "observability" / "index.html").is_file()


def _table_defaults(page: str, first_column: str) -> dict[str, str]:
    """``{name: default}`` from the markdown table whose header starts with ``first_column``."""
    lines = (DOCS / page).read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    rows: dict[str, str] = {}
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


@pytest.mark.parametrize(
    "settings", [novita_video.PollSchedule, novita_video.AdaptiveRate, novita_video.RetryPolicy]
)
def test_each_settings_table_states_the_code_defaults(settings: type) -> None:
    documented = _table_defaults("concepts.md", f"`{settings.__name__}` field")
    fields = {field.name: field.default for field in attrs.fields(settings)}
    assert set(documented) == set(fields)
    for name, default in fields.items():
        assert float(documented[name]) == default, name


def test_the_knobs_table_states_the_client_defaults() -> None:
    documented = _table_defaults("concepts.md", "knob")
    parameters = inspect.signature(novita_video.Client).parameters
    checked = 0
    for names, default in documented.items():
        for name in names.split("`, `"):
            if name not in parameters or default.endswith("()"):
                continue  # an object's defaults are its own table's
            expected = parameters[name].default
            stated = default.split(", ")[names.split("`, `").index(name)].removesuffix(" s")
            assert stated == str(expected if not isinstance(expected, float) else f"{expected:g}")
            checked += 1
    assert checked >= 8
    # Every setting of the client is in the table.
    listed = {name for names in documented for name in names.split("`, `")}
    for group in (HTTPSettings, BatchLimits, PollSettings, WebhookSettings):
        missing = {field.name for field in attrs.fields(group)} - listed
        assert not missing, f"{group.__name__}: {missing} not in the knobs table"


def test_the_command_takes_its_defaults_from_the_same_settings() -> None:
    parser = build_parser()
    batch = parser.parse_args(["batch", "prompts.txt", "--out", "clips"])
    assert batch.concurrency == DEFAULT_BATCH.concurrency
    assert batch.task_timeout == DEFAULT_BATCH.task_timeout
    assert DEFAULT_BATCH.submit_rpm == NOVITA_SUBMITS_PER_MINUTE
    wait = parser.parse_args(["wait", "task-1"])
    assert wait.timeout == DEFAULT_BATCH.task_timeout
    signature = inspect.signature(novita_video.Client).parameters
    for group in (DEFAULT_HTTP, DEFAULT_BATCH, DEFAULT_POLLING, DEFAULT_WEBHOOKS):
        for field in attrs.fields(type(group)):
            assert signature[field.name].default == getattr(group, field.name), field.name


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_virtual_time_example_of_the_testing_guide_passes(tmp_path: Path) -> None:
    pattern = r"^## Minutes in no time.*?^```python[^\n]*\n(.*?)^```"
    found = re.search(pattern, page("testing.md"), flags=re.MULTILINE | re.DOTALL)
    assert found, "no example under 'Minutes in no time' in docs/testing.md"
    (tmp_path / "test_example.py").write_text(found[1], encoding="utf-8")
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
