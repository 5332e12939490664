"""The package as users get it: a wheel and an sdist build; the wheel installs into a fresh
environment; and a user's script type-checks (``mypy --strict``) against novita-video
installed from the wheel or, as the README does, editable (``pip install -e``).

Slow (a fresh virtual environment each, its dependencies from the package index or pip's
cache), but this is the only place the installed package is what is tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parent.parent
USER_APP = Path(__file__).resolve().parent / "packaging" / "user_app.py"


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    # Nothing of this checkout on the path: the installed package is what is tested.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    done = subprocess.run(
        [str(arg) for arg in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def fresh_env(where: Path) -> Path:
    """A new virtual environment (no site packages of ours); its python."""
    run(sys.executable, "-m", "venv", where)
    return where / "bin" / "python"


def type_check(python: Path, cwd: Path) -> None:
    # The mypy of the test environment, reading the packages installed for `python`.
    app = cwd / "app.py"
    app.write_text(USER_APP.read_text(encoding="utf-8"), encoding="utf-8")
    out = run(
        sys.executable, "-m", "mypy", "--strict", "--python-executable", python,
        "--no-incremental", app, cwd=cwd,
    )  # fmt: skip
    assert "Success: no issues found" in out


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", where, ROOT)
    return where


def test_the_wheel_and_the_sdist_carry_the_package_and_its_types(dist: Path) -> None:
    (wheel,) = dist.glob("novita_video-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("novita_video/py.typed", "novita_video/testing/assets/clip.mp4"):
        assert needed in names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)
    (sdist,) = dist.glob("novita_video-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {member.split("/", 1)[1] for member in archive.getnames() if "/" in member}
    assert {"pyproject.toml", "README.md", "novita_video/py.typed"} <= members


def test_a_user_script_type_checks_against_the_installed_wheel(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("novita_video-*.whl")
    python = fresh_env(tmp_path / "env")
    run(python, "-m", "pip", "install", "--quiet", wheel)
    # Installed, not read from this checkout: run from elsewhere.
    where = run(python, "-c", "import novita_video; print(novita_video.__file__)", cwd=tmp_path)
    assert str(ROOT) not in where
    type_check(python, tmp_path)


def test_a_user_script_type_checks_against_an_editable_install(tmp_path: Path) -> None:
    python = fresh_env(tmp_path / "env")
    run(python, "-m", "pip", "install", "--quiet", "-e", ROOT)
    type_check(python, tmp_path)
