"""MkDocs hook: publish the repository files that included pages link to.

``docs/benchmarks/index.md`` includes ``benchmarks/README.md`` whole (pymdownx.snippets),
and that README links to its neighbours (``contender_hand_loop.py``, ...). The page sits
at the same relative place in the site as the README in the repository, and this hook
publishes the neighbours beside it, so the README's relative links work on the site as
they do on GitHub, and ``mkdocs build --strict`` still fails on a link to a file that is
not there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

#: Repository folders whose top-level source files are published under the same path.
PUBLISHED = {"benchmarks": "*.py"}


def on_files(files: Files, *, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Add each published repository file to the site, at its repository path."""
    root = Path(config.config_file_path).parent
    for folder, pattern in PUBLISHED.items():
        for path in sorted((root / folder).glob(pattern)):
            uri = f"{folder}/{path.name}"
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
