"""Progress: the counts, the pace, and which display a run gets."""

from __future__ import annotations

import io
import sys

import pytest

from novita_video.cli._progress import Tally, format_duration, make_reporter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (42, "42s"), (245, "4m05s"), (7620, "2h07m")]
)
def test_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_tally_moves_prompts_between_counts() -> None:
    tally = Tally(4)
    assert (tally.queued, tally.finished, tally.eta) == (4, 0, None)
    tally.move("queued", "processing")
    tally.move("processing", "downloading")
    tally.move("downloading", "done")
    tally.move("queued", "failed")
    assert (tally.queued, tally.processing, tally.done, tally.failed) == (2, 0, 1, 1)
    assert tally.per_minute > 0
    assert tally.eta is not None
    assert tally.describe().startswith("2/4: queued 2, processing 0, downloading 0, done 1")


def test_quiet_shows_nothing() -> None:
    stream = Terminal()
    reporter = make_reporter(quiet=True, stream=stream)
    reporter.show(Tally(3))
    reporter.close(Tally(3))
    assert stream.getvalue() == ""


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    reporter = make_reporter(quiet=False, stream=stream)
    tally = Tally(3)
    reporter.show(tally)
    reporter.show(tally)  # nothing new: no second line
    tally.move("queued", "processing")
    reporter.show(tally)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "novita-video: 0/3: queued 3, processing 0, downloading 0, done 0, failed 0; -/min, ETA -",
        "novita-video: 0/3: queued 2, processing 1, downloading 0, done 0, failed 0; -/min, ETA -",
    ]


def test_a_live_display_on_a_terminal() -> None:
    stream = Terminal()
    reporter = make_reporter(quiet=False, stream=stream)
    assert reporter.interval < 1
    tally = Tally(5)
    tally.move("queued", "processing")
    reporter.show(tally)
    reporter.close(tally)
    shown = stream.getvalue()
    for word in ("0/5", "queued", "processing", "done", "failed", "ETA"):
        assert word in shown


def test_plain_lines_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich.live", None)  # as if the cli extra were missing
    stream = Terminal()
    reporter = make_reporter(quiet=False, stream=stream)
    reporter.show(Tally(2))
    assert stream.getvalue().startswith("novita-video: 0/2: queued 2")
