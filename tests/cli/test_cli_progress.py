"""Progress: the counts, the ETA's first words, the plain lines' rhythm, which display a
run gets, on and off a terminal, and the ETA of a rerun against the simulator (the ETA's
tables on virtual time are in test_cli_eta.py)."""

from __future__ import annotations

import contextlib
import io
import os
import pty
import re
import signal
import sys
import time
from pathlib import Path

import anyio
import pytest

from novita_video.cli._progress import (
    PLAIN_HEARTBEAT,
    PLAIN_INTERVAL,
    Tally,
    format_duration,
    make_reporter,
)
from tests.cli.cli_support import (
    FAST,
    cli_env,
    command,
    eventually,
    prompts_file,
    read_all,
    run_cli,
    simulator,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """Virtual seconds, for a Tally."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (42, "42s"), (245, "4m05s"), (7620, "2h07m")]
)
def test_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_tally_moves_prompts_between_counts() -> None:
    clock = Clock()
    tally = Tally(4, rpm=60, clock=clock)
    assert (tally.queued, tally.finished) == (4, 0)
    tally.move("queued", "processing", "a")
    clock.now = 5.0
    tally.move("processing", "downloading", "a")
    tally.move("downloading", "done", "a")
    tally.move("queued", "failed", "b")
    assert (tally.queued, tally.processing, tally.done, tally.failed) == (2, 0, 1, 1)
    assert tally.per_minute > 0
    assert tally.eta is not None
    line = tally.describe()
    assert line.startswith("5s elapsed: 2 of 4 settled (1 succeeded, 1 failed); waiting to send 2")


def test_at_novita_queued_and_processing_are_told_apart() -> None:
    tally = Tally(10, clock=Clock())
    for key in "abcd":
        tally.move("queued", "processing", key)
    tally.running = 3  # the client's last checks saw 3 of them processing
    assert (tally.queued, tally.queued_at_novita, tally.running_at_novita) == (6, 1, 3)
    assert "waiting to send 6, queued at Novita 1, processing 3, downloading 0" in tally.counts()
    tally.running = 9  # more than are out (a resumed run's waits): never counted twice
    assert (tally.queued_at_novita, tally.running_at_novita) == (0, 4)


def test_the_eta_is_said_from_the_first_second() -> None:
    """Before any submit, the ETA is the time to send at the run's rate, as a bound; with
    tasks out and none settled, a bound that grows with the oldest task's age."""
    clock = Clock()
    tally = Tally(40, rpm=120, clock=clock)
    assert str(tally.estimate()) == "at least 20s"
    assert "ETA at least 20s" in tally.describe()
    for number in range(4):
        clock.now = number * 0.5
        tally.move("queued", "processing", str(number))
    clock.now = 3.0
    found = tally.estimate()
    assert found is not None
    assert found.at_least
    assert found.seconds >= 3.0 + 36 / 2 - 1  # the oldest is 3 s out; 36 to send at 2 a second
    clock.now = 4.0
    tally.move("processing", "done", "0")
    found = tally.estimate()
    assert found is not None
    assert not found.at_least


def test_a_finished_run_has_nothing_left() -> None:
    tally = Tally(1, clock=Clock())
    tally.move("queued", "done")
    found = tally.estimate()
    assert found is not None
    assert found.seconds == 0


def test_quiet_shows_nothing() -> None:
    stream = Terminal()
    reporter = make_reporter(quiet=True, stream=stream)
    reporter.show(Tally(3))
    reporter.close(Tally(3))
    assert stream.getvalue() == ""


def test_plain_lines_every_ten_seconds_or_tenth_settled() -> None:
    """Off a terminal: a line at the start, then one every 10 s or each time another
    tenth of the prompts settled, whichever comes first; nothing new waits a minute."""
    stream = io.StringIO()
    reporter = make_reporter(quiet=False, stream=stream)
    assert reporter.interval <= 1  # it looks often, and prints far less often
    clock = Clock()
    tally = Tally(20, rpm=1200, clock=clock)

    def shown_at(seconds: float) -> int:
        clock.now = seconds
        before = len(stream.getvalue().splitlines())
        reporter.show(tally)
        return len(stream.getvalue().splitlines()) - before

    assert shown_at(0) == 1  # the start
    for key in map(str, range(20)):
        tally.move("queued", "processing", key)
    assert shown_at(1) == 0
    tally.move("processing", "done", "0")  # 1 of 20: not a tenth yet
    assert shown_at(2) == 0
    tally.move("processing", "failed", "1")  # 2 of 20: a tenth
    assert shown_at(3) == 1
    assert shown_at(4) == 0
    tally.move("processing", "done", "2")
    assert shown_at(12.9) == 0  # 9.9 s after the last line
    assert shown_at(13) == 1  # 10 s, and something changed
    assert shown_at(23) == 0  # 10 s more, but nothing new
    assert shown_at(13 + PLAIN_HEARTBEAT) == 1  # still alive, and how long it has been
    for key in map(str, range(3, 20)):
        tally.move("processing", "done", key)
    assert shown_at(100) == 1
    lines = stream.getvalue().splitlines()
    assert lines[0] == (
        "novita-video: 0s elapsed: 0 of 20 settled (0 succeeded, 0 failed); waiting to send "
        "20, queued at Novita 0, processing 0, downloading 0; -/min, ETA at least 1s"
    )
    assert lines[1].startswith("novita-video: 3s elapsed: 2 of 20 settled (1 succeeded, 1 failed)")
    assert lines[-1].startswith("novita-video: 1m40s elapsed: 20 of 20 settled")
    assert lines[-1].endswith("ETA 0s")
    assert PLAIN_INTERVAL == 10


def test_a_live_display_on_a_terminal() -> None:
    stream = Terminal()
    reporter = make_reporter(quiet=False, stream=stream)
    assert reporter.interval < 1
    tally = Tally(5, rpm=60)
    tally.move("queued", "processing", "a")
    reporter.show(tally)
    reporter.close(tally)
    shown = stream.getvalue()
    for word in (
        "0/5",
        "elapsed",
        "waiting to send",
        "queued at Novita",
        "processing",
        "succeeded",
        "failed",
        "ETA",
    ):
        assert word in shown


def test_plain_lines_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich.live", None)  # as if the cli extra were missing
    stream = Terminal()
    reporter = make_reporter(quiet=False, stream=stream)
    reporter.show(Tally(2))
    assert stream.getvalue().startswith("novita-video: 0s elapsed: 0 of 2 settled")


PROGRESS = re.compile(r"novita-video: \S+ elapsed: (\d+) of (\d+) settled .*ETA (.+)$")


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.subprocess
async def test_a_short_run_off_a_terminal_prints_lines_as_it_goes(tmp_path: Path) -> None:
    """A run of seconds used to print nothing between its start and its summary."""
    path = prompts_file(tmp_path / "p.txt", [f"a quick fox, take {n}" for n in range(20)])
    async with simulator(task_duration=(0.5, 1.5)) as fake:
        ran = await run_cli(
            "batch", str(path), "--out", str(tmp_path / "out"), *FAST, env=cli_env(fake.url)
        )
    assert ran.code == 0, ran.stderr
    lines = [found for line in ran.stderr.splitlines() if (found := PROGRESS.match(line))]
    settled = [int(found.group(1)) for found in lines]
    assert settled[0] == 0
    assert len(lines) >= 4, ran.stderr  # the start, and (at least) some tenths settled
    assert settled == sorted(settled)
    assert all(found.group(3) != "-" for found in lines)  # an ETA from the first line
    assert ran.stderr.splitlines()[-1].startswith("novita-video: 20 of 20 clips made")


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.subprocess
async def test_a_run_on_a_terminal_shows_the_live_display(tmp_path: Path) -> None:
    pytest.importorskip("rich")
    path = prompts_file(tmp_path / "p.txt", [f"a slow fox, take {n}" for n in range(6)])
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    shown = b""
    async with simulator(task_duration=(1.0, 2.0)) as fake:
        args = ("batch", str(path), "--out", str(tmp_path / "out"), *FAST)
        env = cli_env(fake.url) | {"COLUMNS": "160", "TERM": "xterm"}
        process = await anyio.open_process(command(*args), env=env, stderr=follower)
        os.close(follower)
        async with process:
            with anyio.fail_after(60):
                while process.returncode is None:
                    await anyio.sleep(0.05)
                    with contextlib.suppress(OSError):  # nothing to read yet
                        shown += os.read(leader, 65536)
                    if b"clips made" in shown:
                        await process.wait()
    os.close(leader)
    text = shown.decode(errors="replace")
    assert process.returncode == 0, text
    for words in ("waiting to send", "queued at Novita", "elapsed", "ETA", "succeeded"):
        assert words in text
    assert "6 of 6 clips made" in text


def seconds_of(said: str) -> float:
    """``42s``, ``4m05s``, ``2h07m`` in seconds."""
    found = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", said)
    assert said
    assert found is not None, said
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return 3600 * hours + 60 * minutes + seconds


async def timed_lines(args: tuple[str, ...], env: dict[str, str]) -> list[tuple[float, str]]:
    """Run the command; each line of its stderr with when it reached this process."""
    lines: list[tuple[float, str]] = []
    async with await anyio.open_process(command(*args), env=env) as process:
        assert process.stderr is not None
        buffered = b""
        with anyio.fail_after(90):
            async for chunk in process.stderr:
                buffered += chunk
                *whole, buffered = buffered.split(b"\n")
                lines += [(time.monotonic(), line.decode()) for line in whole]
            await process.wait()
    assert process.returncode == 0, "\n".join(line for _, line in lines)
    return lines


def check_etas(lines: list[tuple[float, str]], held_from: float) -> None:
    """From ``held_from`` of the prompts settled to four fifths, each plain line's ETA is
    a number (or a range) within ±50 % of the time the run then really took to end, or
    within 4 s: lines say whole seconds, a task's end is seen at a poll (a second or two
    after it, and ends come in lumps), and lines are timed as they reach this process, on
    a busy machine. (What is measured is the run's own end: real time is the point. The
    tables of test_cli_eta.py hold the ETA to ±50 % without these.)"""
    ended = next(when for when, line in lines if "clips made" in line)
    held = 0
    for when, line in lines:
        found = PROGRESS.match(line)
        if found is None or not held_from <= int(found.group(1)) / int(found.group(2)) <= 0.8:
            continue
        truth, said = ended - when, found.group(3)
        assert not said.startswith("at least"), line  # a bound, long after tasks ended
        low, _, high = said.partition(" to ")
        slack = max(0.5 * truth, 4.0)
        assert seconds_of(low) <= truth + slack, (line, truth)
        assert seconds_of(high or low) >= truth - slack, (line, truth)
        held += 1
    assert held >= 3, "\n".join(line for _, line in lines)  # a line at each tenth settled


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.subprocess
async def test_the_eta_of_a_rerun_that_resumes_every_task(tmp_path: Path) -> None:
    """A run stopped once its 40 tasks were made; the next one resumes them all, a burst
    of tasks running together: its ETA counts them by their true age and times them as
    they end (it said ``at least 1s`` to the end: resumed tasks were never timed)."""
    path = prompts_file(tmp_path / "p.txt", [f"a fox resumed, take {n}" for n in range(40)])
    args = ("batch", str(path), "--out", str(tmp_path / "out"), *FAST)
    async with simulator(task_duration=(8.0, 16.0)) as fake:
        env = cli_env(fake.url)
        async with await anyio.open_process(command(*args), env=env) as process:
            await eventually(lambda: fake.stats.task_count == 40)
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(20):
                assert process.stderr is not None
                await read_all(process.stderr)
                await process.wait()
        lines = await timed_lines(args, env)
    assert fake.stats.task_count == 40  # every task resumed, none made again
    check_etas(lines, 0.4)
