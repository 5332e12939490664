"""MkDocs hook: the CLI reference, rendered from the argparse parsers themselves.

A page line ``<!-- argparse: package.module:function -->`` is replaced by the reference
of the parser that ``function()`` returns: its usage, description, every argument (its
group, value, default and help, as ``--help`` says them) and every subcommand, so the
page lists exactly the options the command accepts. ``tests/test_docs.py`` checks that
the rendered Markdown lists every option of both parsers, and nothing else.

Only argparse's documented surface is used, except where it offers none: the argument
groups (``_action_groups``), mutually exclusive groups and the subcommands' help.
"""

from __future__ import annotations

import argparse
import functools
import html
import importlib
import re
from collections.abc import Iterator
from typing import Any

MARKER = re.compile(r"^<!-- argparse: (?P<target>[\w.]+:\w+) -->[ \t]*$", re.MULTILINE)
#: Usage lines are wrapped at this width, whatever the terminal building the site.
USAGE_WIDTH = 80


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each argparse marker of a page with its rendered reference."""
    return MARKER.sub(lambda match: render_target(match["target"]), markdown)


def render_target(target: str) -> str:
    """The reference of the parser that ``module:function`` builds."""
    module_name, _, function = target.partition(":")
    parser = getattr(importlib.import_module(module_name), function)()
    if not isinstance(parser, argparse.ArgumentParser):
        raise TypeError(f"{target} returned {parser!r}, not an ArgumentParser")
    return "\n".join(_render(parser, level=2))


def _subcommands(action: argparse.Action) -> list[tuple[str, argparse.ArgumentParser]]:
    choices = action.choices
    if isinstance(choices, dict) and all(
        isinstance(sub, argparse.ArgumentParser) for sub in choices.values()
    ):
        return list(choices.items())
    return []


def _text(text: str) -> str:
    """Help text as Markdown that shows it verbatim (``<index>`` is not a tag)."""
    text = html.escape(" ".join(text.split()), quote=False)
    return re.sub(r"([\\`*_\[\]|])", r"\\\1", text)


def _help(action: argparse.Action, prog: str) -> str:
    """The help as ``--help`` prints it (``%(default)s`` expanded), plus a default it omits."""
    if not action.help or action.help == argparse.SUPPRESS:
        text = ""
    else:
        # What argparse.HelpFormatter._expand_help does.
        params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
        params["prog"] = prog
        for key, value in list(params.items()):
            if hasattr(value, "__name__"):
                params[key] = value.__name__
        if params.get("choices") is not None:
            params["choices"] = ", ".join(str(choice) for choice in params["choices"])
        text = action.help % params
    default = action.default
    shows_default = "default" in text.lower()
    if (
        action.nargs != 0
        and not shows_default
        and default is not None
        and default is not argparse.SUPPRESS
        and not action.required
    ):
        shown = " ".join(map(str, default)) if isinstance(default, tuple | list) else default
        text = f"{text} (default: {shown})" if text else f"default: {shown}"
    return text


def _value(action: argparse.Action) -> str:
    """What follows the option on the command line: ``N``, ``LO HI``, ``{csv,jsonl,txt}``."""
    if action.nargs == 0:
        return ""
    metavar = action.metavar
    if metavar is None:
        if action.choices is not None:
            metavar = "{" + ",".join(map(str, action.choices)) + "}"
        else:
            metavar = action.dest.upper() if action.option_strings else action.dest
    if isinstance(metavar, tuple):
        return " ".join(metavar)
    if isinstance(action.nargs, int) and action.nargs > 1:
        return " ".join([metavar] * action.nargs)
    return metavar


def _usage(parser: argparse.ArgumentParser) -> str:
    original = parser.formatter_class
    parser.formatter_class = functools.partial(original, width=USAGE_WIDTH)  # type: ignore[assignment]
    try:
        return parser.format_usage().strip()
    finally:
        parser.formatter_class = original


def _exclusive(parser: argparse.ArgumentParser) -> dict[argparse.Action, list[str]]:
    others: dict[argparse.Action, list[str]] = {}
    for group in parser._mutually_exclusive_groups:
        for action in group._group_actions:
            others[action] = [
                other.option_strings[-1]
                for other in group._group_actions
                if other is not action and other.option_strings
            ]
    return others


def _render(parser: argparse.ArgumentParser, level: int) -> Iterator[str]:
    hashes = "#" * level
    yield f"{hashes} `{parser.prog}`"
    yield ""
    if parser.description:
        yield _text(parser.description)
        yield ""
    yield "```text"
    yield _usage(parser)
    yield "```"
    yield ""
    exclusive = _exclusive(parser)
    subcommands: list[tuple[str, argparse.ArgumentParser, str]] = []
    for group in parser._action_groups:
        rows = []
        for action in group._group_actions:
            if isinstance(action, argparse._HelpAction):
                continue
            subs = _subcommands(action)
            if subs:
                helps = {a.dest: a.help or "" for a in action._get_subactions()}
                subcommands.extend((name, sub, helps.get(name, "")) for name, sub in subs)
                continue
            names = ", ".join(action.option_strings) or _value(action)
            value = _value(action) if action.option_strings else ""
            shown = f"`{names} {value}`" if value else f"`{names}`"
            text = _text(_help(action, parser.prog))
            if action.required and action.option_strings:
                text = f"required; {text}"
            if action in exclusive:
                text += " (not with " + ", ".join(f"`{o}`" for o in exclusive[action]) + ")"
            rows.append(f"| {shown} | {text} |")
        if not rows:
            continue
        title = group.title or "arguments"
        yield f"**{title[0].upper()}{title[1:]}**"
        yield ""
        yield "| argument | what it does |"
        yield "| --- | --- |"
        yield from rows
        yield ""
    if subcommands:
        yield "| command | what it does |"
        yield "| --- | --- |"
        for name, sub, text in subcommands:
            yield f"| [`{name}`](#{_anchor(sub.prog)}) | {_text(text)} |"
        yield ""
    if parser.epilog:
        yield _text(parser.epilog)
        yield ""
    for _, sub, _ in subcommands:
        yield from _render(sub, level + 1)


def _anchor(title: str) -> str:
    """The id Python-Markdown's toc gives a heading (its default slugify)."""
    import unicodedata

    value = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)
