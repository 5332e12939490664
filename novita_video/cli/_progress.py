"""Progress on stderr: a live ``rich`` display on a terminal, plain lines elsewhere.

:class:`Tally` counts where the prompts of a run stand. "queued" prompts are not yet at
Novita (waiting for their turn under the rate limit), "processing" ones have a task
there (or are being sent), then a clip is "downloading", and each prompt ends "done",
"failed" or "unknown" (its submit may have made a task we have no id for).

Progress goes to stderr so that ``--json`` keeps stdout clean. ``rich`` comes with the
``cli`` extra and is imported only when a terminal shows it; without it, or when stderr
is not a terminal (a CI log, a file), a plain line is printed every
:data:`PLAIN_INTERVAL` seconds. ``--quiet`` shows nothing.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Final, Protocol, TextIO

import attrs

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["PLAIN_INTERVAL", "Reporter", "Tally", "format_duration", "make_reporter"]

#: Seconds between two plain progress lines.
PLAIN_INTERVAL: Final = 10.0
_LIVE_INTERVAL: Final = 0.25


def format_duration(seconds: float) -> str:
    """``42s``, ``4m05s``, ``2h07m``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@attrs.define
class Tally:
    """Where the prompts of one run stand; every prompt is in exactly one count."""

    total: int
    queued: int = 0
    processing: int = 0
    downloading: int = 0
    done: int = 0
    failed: int = 0
    unknown: int = 0
    #: Prompts that were finished before this run began (a resumed run skips them).
    finished_before: int = 0
    started: float = attrs.field(factory=time.monotonic)

    def __attrs_post_init__(self) -> None:
        self.queued = self.total

    def move(self, source: str, target: str) -> None:
        """One prompt goes from count ``source`` to count ``target``."""
        setattr(self, source, getattr(self, source) - 1)
        setattr(self, target, getattr(self, target) + 1)

    @property
    def finished(self) -> int:
        """Prompts that reached an end: done, failed or unknown."""
        return self.done + self.failed + self.unknown

    @property
    def per_minute(self) -> float:
        """Prompts finished per minute by this run."""
        elapsed = time.monotonic() - self.started
        worked = self.finished - self.finished_before
        return 60.0 * worked / elapsed if elapsed > 0 and worked > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until every prompt is finished at the current pace, if there is one."""
        rate = self.per_minute
        return 60.0 * (self.total - self.finished) / rate if rate > 0 else None

    def describe(self) -> str:
        """One line: the counts, the pace and the ETA."""
        eta = self.eta
        pace = f"{self.per_minute:.1f}/min" if self.per_minute else "-/min"
        return (
            f"{self.finished}/{self.total}: queued {self.queued}, processing {self.processing}, "
            f"downloading {self.downloading}, done {self.done}, failed {self.failed}"
            + (f", unknown {self.unknown}" if self.unknown else "")
            + f"; {pace}, ETA {format_duration(eta) if eta is not None else '-'}"
        )


class Reporter(Protocol):
    """Shows a :class:`Tally` every :attr:`interval` seconds, until :meth:`close`."""

    interval: float

    def show(self, tally: Tally) -> None:
        """Show where the prompts stand now."""

    def close(self, tally: Tally) -> None:
        """Take the display down (the command prints its own summary)."""


class _Silent:
    interval = math.inf

    def show(self, tally: Tally) -> None:
        pass

    def close(self, tally: Tally) -> None:
        pass


class _Plain:
    interval = PLAIN_INTERVAL

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = ""

    def show(self, tally: Tally) -> None:
        line = tally.describe()
        if line != self._last:  # while the first tasks run for minutes, no copies in the log
            self._last = line
            print(f"novita-video: {line}", file=self._stream, flush=True)

    def close(self, tally: Tally) -> None:
        pass


class _Live:
    interval = _LIVE_INTERVAL

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self._live = Live(console=Console(file=stream), auto_refresh=False, transient=True)
        self._live.start()

    def _render(self, tally: Tally) -> RenderableType:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        eta = tally.eta
        pace = Text(
            f"{tally.finished}/{tally.total}  {tally.per_minute:.1f} clips/min  ETA "
            f"{format_duration(eta) if eta is not None else '-'}"
        )
        bar = Table.grid(padding=(0, 2))
        bar.add_row(ProgressBar(total=tally.total, completed=tally.finished, width=30), pace)
        counts = Text.assemble(
            ("queued ", "dim"),
            f"{tally.queued}  ",
            ("processing ", "cyan"),
            f"{tally.processing}  ",
            ("downloading ", "blue"),
            f"{tally.downloading}  ",
            ("done ", "green"),
            f"{tally.done}  ",
            ("failed ", "red"),
            f"{tally.failed}",
            (f"  unknown {tally.unknown}" if tally.unknown else "", "yellow"),
        )
        return Group(bar, counts)

    def show(self, tally: Tally) -> None:
        self._live.update(self._render(tally), refresh=True)

    def close(self, tally: Tally) -> None:
        self._live.stop()


def make_reporter(*, quiet: bool, stream: TextIO | None = None) -> Reporter:
    """The reporter for this run: silent, live (a terminal with rich) or plain lines."""
    if quiet:
        return _Silent()
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        try:
            return _Live(stream)
        except ImportError:  # the cli extra is not installed: plain lines will do
            pass
    return _Plain(stream)
