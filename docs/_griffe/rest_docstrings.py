"""A Griffe extension: the SDK's reST-flavoured docstrings, rendered as Markdown.

The docstrings follow Python's own habits (they read well in ``help()`` and in an
editor): ``double backticks``, roles such as :class:`Client` and :meth:`Client.wait`,
literal blocks introduced by ``::``, ``>>>`` examples, and ``#:`` comments that document
an attribute. mkdocstrings renders docstrings as Markdown, where a ``>>>`` line is a
nested quote and a role is stray punctuation, so this extension rewrites each docstring
once the package is loaded:

* a role becomes an optional cross-reference (a link when its target is on the site,
  plain code otherwise, never a broken link);
* a ``::`` literal block and a run of ``>>>`` lines become fenced code blocks;
* an attribute without a docstring takes the ``#:`` comment above it, if any.

Enabled in ``mkdocs.yml`` under the python handler's ``extensions``.
"""

from __future__ import annotations

import html
import re
import sys
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:class|meth|attr|func|mod|data|exc|obj):`(?P<tilde>~?)(?P<target>[\w.]+)(?P<call>\(\))?`"
)
_DOCTEST_SKIP = re.compile(r"\s*#\s*doctest:.*$")
_PYTHONISH = re.compile(r"^\s*(import |from |async |await |def |class |@|print\(|\w+(\.\w+)* = )")


def _show_setting_defaults(function: griffe.Function) -> None:
    # `concurrency: int = DEFAULT_BATCH.concurrency` reads better as its value: the
    # settings objects are the one source of the defaults, the page shows what they are.
    import novita_video._settings as settings

    for parameter in function.parameters:
        default = str(parameter.default) if parameter.default is not None else ""
        owner, _, field = default.partition(".")
        if owner.startswith("DEFAULT_") and hasattr(settings, owner):
            parameter.default = repr(getattr(getattr(settings, owner), field))


def _drop_foreign_bases(cls: griffe.Class) -> None:
    # "Bases: AsyncContextManagerMixin" says how Client is built, with a class of anyio's
    # that a reader cannot use: only the package's own and Python's bases are shown.
    kept = []
    for base in cls.bases:
        path = str(getattr(base, "canonical_path", base))
        root = path.partition(".")[0]
        if "." not in path or root == "novita_video" or root in sys.stdlib_module_names:
            kept.append(base)
    cls.bases = kept


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


class RestDocstrings(griffe.Extension):
    """Rewrite every docstring of the loaded package; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._exports: dict[str, str] = {}  # public name -> its documented path

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Called once the whole package is loaded: every docstring is known."""
        self._exports = {}
        for module in (pkg, *_submodules(pkg)):
            for name in _exports(module):
                self._exports.setdefault(name, f"{module.path}.{name}")
        for obj in _walk(pkg):
            if isinstance(obj, griffe.Function):
                _show_setting_defaults(obj)
            if isinstance(obj, griffe.Class):
                _drop_foreign_bases(obj)
            if obj.docstring is None and isinstance(obj, griffe.Attribute):
                comment = _comment_above(obj)
                if comment:
                    obj.docstring = griffe.Docstring(comment, parent=obj)
            if obj.docstring is not None:
                obj.docstring.value = self.convert(obj.docstring.value, obj)

    # The rewriting.

    def convert(self, text: str, obj: griffe.Object) -> str:
        """The Markdown for one docstring of ``obj``."""
        lines = _fence_blocks(text.splitlines())
        out: list[str] = []
        in_fence = False
        for line in lines:
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
            out.append(line if in_fence else self._roles(line, obj))
        return "\n".join(out)

    def _roles(self, line: str, obj: griffe.Object) -> str:
        def link(match: re.Match[str]) -> str:
            target = match["target"]
            shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
            shown += match["call"] or ""
            identifier = self._resolve(target, obj)
            if identifier is None:
                return f"`{shown}`"
            return (
                f'<autoref identifier="{html.escape(identifier)}" optional>'
                f"<code>{html.escape(shown)}</code></autoref>"
            )

        return _ROLE.sub(link, line)

    def _resolve(self, target: str, obj: griffe.Object) -> str | None:
        """The documented path of a role's target, or None for a name outside the package."""
        head, _, rest = target.partition(".")
        if head in self._exports:
            return self._exports[head] + (f".{rest}" if rest else "")
        if head == obj.package.name:
            return target
        # A member of the object's own class, or a name its module defines or imports.
        owner = obj if isinstance(obj, griffe.Class) else obj.parent
        if isinstance(owner, griffe.Class) and head in owner.members:
            return f"{owner.path}.{target}"
        member = obj.module.members.get(head)
        if member is None:
            return None
        if member.is_alias:
            path = member.target_path
            if not path.startswith(f"{obj.package.name}."):
                return None  # the standard library, aiohttp, ...: shown as code
            return path + (f".{rest}" if rest else "")
        return f"{obj.module.path}.{target}"


def _submodules(module: griffe.Module) -> list[griffe.Module]:
    found = []
    for member in module.members.values():
        if not member.is_alias and isinstance(member, griffe.Module):
            found.append(member)
            found.extend(_submodules(member))
    return found


def _exports(module: griffe.Module) -> list[str]:
    names = []
    for item in module.exports or ():
        names.append(item if isinstance(item, str) else str(item.name))
    return names


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_walk(member))
    return found


def _comment_above(attr: griffe.Attribute) -> str:
    """The ``#:`` comment lines right above an attribute's definition."""
    if attr.lineno is None or attr.filepath is None:
        return ""
    try:
        lines = attr.lines_collection[attr.filepath]
    except KeyError:
        return ""
    found: list[str] = []
    number = attr.lineno - 2
    while number >= 0 and lines[number].lstrip().startswith("#:"):
        found.insert(0, lines[number].lstrip()[2:].strip())
        number -= 1
    return " ".join(found)


def _fence_blocks(lines: list[str]) -> list[str]:
    """Turn ``::`` literal blocks and ``>>>`` runs into fenced code blocks."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(">>>"):
            indent = _indent(line)
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(_DOCTEST_SKIP.sub("", lines[i][indent:]))
                i += 1
            _add_fence(out, " " * indent, "pycon", block)
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            base = _indent(line)
            head = line.rstrip()[:-2].rstrip()
            # "Example::" keeps a colon; a lone "::" disappears.
            if head.strip():
                out.append(head + ":")
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > base:
                block = []
                while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
                    block.append(lines[j])
                    j += 1
                while block and not block[-1].strip():
                    block.pop()
                body = textwrap.dedent("\n".join(block)).splitlines()
                language = "python" if any(_PYTHONISH.match(b) for b in body) else "text"
                _add_fence(out, " " * base, language, body)
                i = j
                continue
            i += 1
            continue
        out.append(line)
        i += 1
    return out


def _add_fence(out: list[str], indent: str, language: str, body: list[str]) -> None:
    if out and out[-1].strip():
        out.append("")
    out.append(f"{indent}```{language}")
    out.extend(f"{indent}{b}" if b.strip() else "" for b in body)
    out.append(f"{indent}```")
    out.append("")
