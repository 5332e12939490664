"""The package's rooms depend downward only: no import cycle, type-only imports counted.

Read from the source with ``ast`` (nothing is imported), so a cycle hidden behind
``if TYPE_CHECKING:`` or inside a function is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import novita_video

PACKAGE = Path(novita_video.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {candidate for candidate in candidates if candidate in modules}
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_module_of_the_package_imports_itself_around_a_cycle() -> None:
    graph = import_graph()
    assert "novita_video._batch" in graph  # the graph was read
    assert "novita_video._client" in graph["novita_video.cli._run"]
    assert not cycles(graph), [" -> ".join(cycle) for cycle in cycles(graph)]


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_leaves_import_nothing_of_the_package() -> None:
    graph = import_graph()
    for leaf in ("_errors", "_stats", "_catalog", "_clock", "_version"):
        assert graph[f"novita_video.{leaf}"] == set(), leaf
    # The settings sit just above: their checks raise the SDK's own error.
    assert graph["novita_video._settings"] == {"novita_video._errors"}


def test_public_classes_show_the_package_as_their_home() -> None:
    import typing

    import attrs

    assert novita_video.Client.__module__ == "novita_video"
    for name in novita_video.__all__:
        obj = getattr(novita_video, name)
        if not isinstance(obj, type):
            continue
        # Data classes keep their module: their annotations are read from it.
        assert obj.__module__ == "novita_video" or attrs.has(obj), name
        if attrs.has(obj):
            typing.get_type_hints(obj)  # (cattrs and others read them this way)


def test_no_public_method_returns_a_private_type() -> None:
    import inspect
    import typing

    for name in novita_video.__all__:
        cls = getattr(novita_video, name)
        if not isinstance(cls, type):
            continue
        for attribute, member in vars(cls).items():
            if attribute.startswith("_") or not inspect.isfunction(member):
                continue
            returned = typing.get_type_hints(member).get("return")
            for kind in (returned, *typing.get_args(returned)):
                if not isinstance(kind, type) or kind.__module__ == "builtins":
                    continue
                public = kind.__name__ in novita_video.__all__ or not kind.__module__.startswith(
                    "novita_video"
                )
                assert public, f"{name}.{attribute} returns the private {kind.__name__}"
