"""Progress on stderr: a live ``rich`` display on a terminal, plain lines elsewhere.

:class:`Tally` counts where the prompts of a run stand: *waiting to send* (not yet at
Novita: their turn under the rate limit has not come, or their POST is on its way),
*at Novita* (a task exists: *queued* there or *processing*, as the client's last check
of it saw), *downloading*, and each ends *succeeded*, *failed* or *unknown* (its submit
may have made a task we have no id for): the manifest's words.

The ETA is a model of the run, not a division of what is left by the pace so far (which
reads minutes at 5 s, when nothing has ended yet, and is 7 times off): the prompts
waiting to send go out at the submit rate (measured once submits go, the ``--rpm`` one
until then), and each then takes what a task takes, from its submit to its clip on disk
(learned from the prompts this run settled: the 90th percentile, since the run ends
with its slowest last task). Until the first prompt settles, the time a task takes is
known only to be longer than the oldest one still outstanding: the ETA is then said as
a bound, ``ETA at least 2m05s``, from the first second.

Progress goes to stderr so that ``--json`` keeps stdout clean. ``rich`` comes with the
``cli`` extra and is imported only when a terminal shows it; without it, or when stderr
is not a terminal (a CI log, a file), plain lines are printed: at the start, every
:data:`PLAIN_INTERVAL` seconds, and each time another tenth of the prompts has settled,
whichever comes first (a line that would say nothing new waits, up to
:data:`PLAIN_HEARTBEAT` seconds). ``--quiet`` shows nothing.
"""

from __future__ import annotations

import bisect
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING, Final, Protocol, TextIO

import attrs

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = [
    "PLAIN_HEARTBEAT",
    "PLAIN_INTERVAL",
    "Reporter",
    "Tally",
    "format_duration",
    "make_reporter",
]

#: Seconds between two plain progress lines (sooner when a tenth of the prompts settled).
PLAIN_INTERVAL: Final = 10.0
#: Seconds a plain line that would repeat the last one waits (it still says the time).
PLAIN_HEARTBEAT: Final = 60.0
#: How often a plain reporter looks at the counts (it prints far less often).
_PLAIN_TICK: Final = 0.5
_LIVE_INTERVAL: Final = 0.25
#: Settled prompts' durations kept for the ETA (the latest: a run's pace changes).
_DURATIONS_KEPT: Final = 2000
#: Seconds an ETA is kept (counting down) before it is worked out again.
_ESTIMATE_EVERY: Final = 1.0
#: Ends coming this many times faster in the second half of the curve: a bell's rise.
_RISING: Final = 1.5
_NORMAL: Final = NormalDist()
#: Ends on the curve before its tail follows the slope of its last third, not the whole.
_LOCAL_AFTER: Final = 10
#: The run is over when fewer prompts than this are expected out: then all are done as
#: likely as not (the chance that none is out is about e to the minus this).
_DONE_BELOW: Final = math.log(2)
#: Tasks that must be out past a time for the survival curve to say anything of it.
_AT_RISK: Final = 3
#: Prompts not settled that stand for all of them in the ETA's sum (the rest weighed in).
_SAMPLE: Final = 200
#: Seconds of submits before their measured rate replaces the ``--rpm`` one.
_RATE_AFTER: Final = 2.0

#: The counts a prompt ends in.
FINISHED: Final = frozenset({"done", "failed", "unknown"})


def format_duration(seconds: float) -> str:
    """``42s``, ``4m05s``, ``2h07m``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@attrs.frozen
class Estimate:
    """Seconds until every prompt is settled; ``at_least`` when only a bound is known."""

    seconds: float
    at_least: bool = False

    def __str__(self) -> str:
        return ("at least " if self.at_least else "") + format_duration(self.seconds)


@attrs.define
class Tally:
    """Where the prompts of one run stand; every prompt is in exactly one count.

    ``queued``: waiting to send (not at Novita yet); ``processing``: a task at Novita
    (of which :attr:`running` were last seen processing, the rest queued there);
    ``downloading``; then ``done`` (succeeded), ``failed`` or ``unknown``.
    """

    total: int
    queued: int = 0
    processing: int = 0
    downloading: int = 0
    done: int = 0
    failed: int = 0
    unknown: int = 0
    #: Prompts that were finished before this run began (a resumed run skips them).
    finished_before: int = 0
    #: The submit rate the run was given (a minute), the ETA's until submits are measured.
    rpm: float | None = None
    #: Of ``processing``, the tasks the client's last check saw processing (not queued).
    running: int = 0
    #: The clock (monotonic seconds); tests give their own.
    clock: Callable[[], float] = time.monotonic
    started: float = attrs.field(default=attrs.Factory(lambda self: self.clock(), takes_self=True))
    # Prompts this run sent and that have not settled: key -> when its task was made
    # (insertion order is submit order: the first is the oldest, the last the youngest).
    _sent_at: dict[str, float] = attrs.field(factory=dict, init=False, repr=False)
    _submits: int = attrs.field(default=0, init=False)
    _first_submit: float | None = attrs.field(default=None, init=False)
    # Prompts this run sent that settled: (when sent, seconds to settle), the latest.
    _settled: deque[tuple[float, float]] = attrs.field(
        factory=lambda: deque(maxlen=_DURATIONS_KEPT), init=False, repr=False
    )
    # The last estimate: (when, it, how many had settled then).
    _estimated: tuple[float, Estimate | None, int] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.queued = self.total

    def now(self) -> float:
        """The tally's clock."""
        return self.clock()

    @property
    def elapsed(self) -> float:
        """Seconds since the run began."""
        return self.now() - self.started

    def move(self, source: str, target: str, key: str | None = None) -> None:
        """One prompt goes from count ``source`` to count ``target``. ``key`` (the prompt's)
        times it: from its submit (waiting to send -> at Novita) to its end."""
        setattr(self, source, getattr(self, source) - 1)
        setattr(self, target, getattr(self, target) + 1)
        if key is None:
            return
        if source == "queued" and target == "processing":
            now = self.now()
            self._sent_at[key] = now
            self._submits += 1
            if self._first_submit is None:
                self._first_submit = now
        elif target in FINISHED and (sent := self._sent_at.pop(key, None)) is not None:
            self._settled.append((sent, self.now() - sent))

    @property
    def finished(self) -> int:
        """Prompts that reached an end: done, failed or unknown."""
        return self.done + self.failed + self.unknown

    @property
    def running_at_novita(self) -> int:
        """Tasks at Novita the client's last check saw processing."""
        return max(0, min(self.running, self.processing))

    @property
    def queued_at_novita(self) -> int:
        """Tasks at Novita not seen processing yet (queued there, or not checked yet)."""
        return self.processing - self.running_at_novita

    @property
    def per_minute(self) -> float:
        """Prompts finished per minute by this run."""
        elapsed = self.elapsed
        worked = self.finished - self.finished_before
        return 60.0 * worked / elapsed if elapsed > 0 and worked > 0 else 0.0

    def submit_rate(self) -> float | None:
        """Submits a second: measured once they have gone on for a while, else the
        rate the run was given; ``None`` when neither is known."""
        now = self.now()
        if self._first_submit is not None and now - self.started >= _RATE_AFTER:
            # Over the whole sending time, so a stall (a 429's slow-down) lowers it.
            measured = self._submits / max(now - self.started, 1e-9)
            if measured > 0:
                return measured
        if self.rpm is not None and math.isfinite(self.rpm) and self.rpm > 0:
            return self.rpm / 60.0
        if self._first_submit is not None and now > self.started:
            return self._submits / (now - self.started)
        return None

    def estimate(self) -> Estimate | None:
        """How long until every prompt is settled (see the module docstring), if anything
        is known; the remaining time of a run with nothing left is 0. Worked out again
        when a prompt settled or :data:`_ESTIMATE_EVERY` seconds passed (it costs a pass
        over the tasks out), counting down in between."""
        now = self.now()
        cached = self._estimated
        if cached is not None and now - cached[0] < _ESTIMATE_EVERY and cached[2] == self.finished:
            found = cached[1]
            if found is None or found.seconds == 0:
                return found
            return attrs.evolve(found, seconds=max(found.seconds - (now - cached[0]), 0.0))
        found = self._estimate(now)
        self._estimated = (now, found, self.finished)
        return found

    def _estimate(self, now: float) -> Estimate | None:
        waiting = self.queued
        outstanding = self.total - waiting - self.finished
        if waiting == 0 and outstanding == 0:
            return Estimate(0.0)
        rate = self.submit_rate()
        if waiting and rate is None:
            return None
        rate = rate or 1.0  # only read when nothing waits
        # The ages of the tasks out, oldest first; resumed ones (their submit unseen) as new.
        ages = [now - sent_at for sent_at in self._sent_at.values()]
        ages += [0.0] * max(0, outstanding - len(ages))
        if not self._settled:
            # Nothing settled yet: no task has taken less than the oldest one out has.
            at_least = ages[0] if ages else 0.0
            if waiting:
                return Estimate(waiting / rate + at_least, at_least=True)
            return Estimate(max(at_least - ages[-1], 1.0), at_least=True)
        survival = Survival.fit([duration for _, duration in self._settled], ages)
        # Every prompt not settled, as an age (below 0: the time until it is sent), a
        # sample of at most _SAMPLE of each kind standing for the rest.
        sending = [-(n + 1) / rate for n in range(waiting)]
        unsettled = _sample(ages, _SAMPLE) + _sample(sending, _SAMPLE)
        return Estimate(survival.last_end(unsettled))

    @property
    def eta(self) -> float | None:
        """Seconds until every prompt is settled, if anything is known (see
        :meth:`estimate`; a bound counts)."""
        found = self.estimate()
        return None if found is None else found.seconds

    def settled_words(self) -> str:
        """``5 succeeded, 1 failed`` (an unknown count only when there is one)."""
        words = f"{self.done} succeeded, {self.failed} failed"
        return words + (f", {self.unknown} unknown" if self.unknown else "")

    def counts(self) -> str:
        """The counts, without the time: what a plain line says that may be new."""
        return (
            f"{self.finished} of {self.total} settled ({self.settled_words()}); "
            f"waiting to send {self.queued}, queued at Novita {self.queued_at_novita}, "
            f"processing {self.running_at_novita}, "
            f"downloading {self.downloading}"
        )

    def describe(self) -> str:
        """One line: the elapsed time, the counts, the pace and the ETA."""
        found = self.estimate()
        pace = f"{self.per_minute:.1f}/min" if self.per_minute else "-/min"
        eta = "-" if found is None else str(found)
        return f"{format_duration(self.elapsed)} elapsed: {self.counts()}; {pace}, ETA {eta}"


def _sample(values: list[float], most: int) -> list[tuple[float, float]]:
    """At most ``most`` of ``values``, evenly spread, each with the weight it carries."""
    if len(values) <= most:
        return [(value, 1.0) for value in values]
    step = len(values) / most
    return [(values[int(n * step)], step) for n in range(most)]


@attrs.frozen
class Survival:
    """How long tasks take, as the share still out after so many seconds: a Kaplan-Meier
    estimate from the durations of the settled tasks and the ages of those still out
    (which take at least that long: counting only the settled would see only the quick
    ones), as far as at least :data:`_AT_RISK` tasks were out to tell; past that, drawn
    on straight at the slope of the curve's last third, to no more than twice the time
    seen (a task out that long is likelier stuck than typical).
    """

    #: Times (seconds) and the share still out right after each, from (0, 1).
    times: tuple[float, ...]
    shares: tuple[float, ...]
    #: No task is expected out this long.
    end: float
    #: The bell the tail follows, if it does (else a straight line to ``end``).
    bell: NormalDist | None = None

    @classmethod
    def fit(cls, durations: list[float], ages: list[float]) -> Survival:
        """The survival of tasks that settled after ``durations`` and are out at ``ages``."""
        # An end before a task out of the same age: the usual tie rule.
        marks = sorted([(duration, 0) for duration in durations] + [(age, 1) for age in ages])
        at_risk = len(marks)
        share = 1.0
        times, shares = [0.0], [1.0]
        seen = 0.0  # how far the curve is known: while enough tasks were out to tell
        for when, still_out in marks:
            if at_risk < _AT_RISK:
                break
            if not still_out:
                share *= 1.0 - 1.0 / at_risk
                times.append(when)
                shares.append(share)
            seen = when
            at_risk -= 1
        if len(times) == 1:  # every end among the last few: too few to draw a curve
            times.append(min(durations))
            share = 1.0 - 1.0 / len(marks)
            shares.append(share)
        # Past the last end, the share stays put as long as tasks were out to see it.
        first, last = times[1], max(times[-1], seen)
        if last > times[-1]:
            times.append(last)
            shares.append(share)
        if share <= 0 or last <= first:
            return cls(tuple(times), tuple(shares), last)
        # The tail's shape: ends coming faster and faster (the rising side of a bell, as
        # task times usually are) follow a bell fitted to the curve; evenly, a straight
        # line at the slope of the curve's last third.
        middle = (first + last) / 2
        early = (1.0 - _at(times, shares, middle)) / (middle - first)
        late = (_at(times, shares, middle) - share) / (last - middle)
        bell = None
        if late > _RISING * early:
            done = min(1.0 - share, 0.9)
            low, high = _at_share(times, shares, 1 - done / 2), _at_share(times, shares, 1 - done)
            gap = _NORMAL.inv_cdf(done) - _NORMAL.inv_cdf(done / 2)
            if high > low and gap > 0:
                spread = (high - low) / gap
                bell = NormalDist(high - spread * _NORMAL.inv_cdf(done), spread)
        if bell is not None:
            return cls(tuple(times), tuple(shares), 2 * last, bell)
        # The slope of the last third, once there are ends enough to tell one.
        slope = (1.0 - share) / (last - first)
        if len(times) > _LOCAL_AFTER:
            window = (last - first) / 3
            slope = max((_at(times, shares, last - window) - share) / window, 0.0) or slope
        return cls(tuple(times), tuple(shares), min(last + share / slope, 2 * last))

    def out_after(self, seconds: float) -> float:
        """The share of tasks still out ``seconds`` after their submit."""
        if seconds <= 0:
            return 1.0
        if seconds >= self.end:
            return 0.0
        last = self.times[-1]
        if seconds < last:
            return _at(self.times, self.shares, seconds)
        if self.bell is not None:
            beyond = 1.0 - self.bell.cdf(last)
            if beyond <= 0:
                return 0.0
            return self.shares[-1] * (1.0 - self.bell.cdf(seconds)) / beyond
        return self.shares[-1] * (self.end - seconds) / (self.end - last)

    def last_end(self, unsettled: list[tuple[float, float]]) -> float:
        """Seconds from now until every prompt of these (age, weight) is as likely settled
        as not; an age below 0 is a prompt sent that much later."""
        tail = max(1.0, (self.end - self.times[1]) / 10)
        # Each prompt's share still out now, the denominator of its odds.
        now_out = [(age, weight, self.out_after(age)) for age, weight in unsettled]

        def expected(after: float) -> float:
            total = 0.0
            for age, weight, out in now_out:
                if out > 0:
                    total += weight * self.out_after(age + after) / out
                else:  # a straggler past every estimate: soon, we expect
                    total += weight * max(0.0, 1.0 - after / tail)
            return total

        low = 0.0
        high = max(0.0, -min(age for age, _ in unsettled)) + self.end + tail
        if expected(low) < _DONE_BELOW:
            return 0.0
        for _ in range(24):
            middle = (low + high) / 2
            if expected(middle) < _DONE_BELOW:
                high = middle
            else:
                low = middle
        return high


def _at_share(times: Sequence[float], shares: Sequence[float], share: float) -> float:
    """The time at which the curve comes down to ``share``, drawn straight between steps."""
    for index in range(1, len(times)):
        if shares[index] <= share:
            above, below = shares[index - 1], shares[index]
            weight = (above - share) / (above - below) if above > below else 1.0
            return times[index - 1] + (times[index] - times[index - 1]) * weight
    return times[-1]


def _at(times: Sequence[float], shares: Sequence[float], seconds: float) -> float:
    """The share at ``seconds`` on a step curve, drawn straight between its steps."""
    index = bisect.bisect_right(times, seconds)
    if index >= len(times):
        return shares[-1]
    before, after = times[index - 1], times[index]
    weight = (seconds - before) / (after - before) if after > before else 1.0
    return shares[index - 1] + (shares[index] - shares[index - 1]) * weight


class Reporter(Protocol):
    """Shows a :class:`Tally` every :attr:`interval` seconds, until :meth:`close`."""

    interval: float

    def show(self, tally: Tally) -> None:
        """Show where the prompts stand now."""

    def settled(self, tally: Tally) -> None:
        """A prompt just settled: show it now if that is news (quick when it is not)."""

    def close(self, tally: Tally) -> None:
        """Take the display down (the command prints its own summary)."""


class _Silent:
    interval = math.inf

    def show(self, tally: Tally) -> None:
        pass

    def settled(self, tally: Tally) -> None:
        pass

    def close(self, tally: Tally) -> None:
        pass


class _Plain:
    """Plain lines: at the start, every :data:`PLAIN_INTERVAL` seconds and at each tenth
    of the prompts settled, whichever first; a line with nothing new waits up to
    :data:`PLAIN_HEARTBEAT` seconds."""

    interval = _PLAIN_TICK

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last_at: float | None = None
        self._last_counts = ""
        self._last_tenth = 0

    def show(self, tally: Tally) -> None:
        now = tally.now()
        counts = tally.counts()
        tenth = 10 * tally.finished // tally.total if tally.total else 10
        since = math.inf if self._last_at is None else now - self._last_at
        due = (
            self._last_at is None
            or tenth > self._last_tenth
            or (since >= PLAIN_INTERVAL and counts != self._last_counts)
            or since >= PLAIN_HEARTBEAT
        )
        if not due:
            return
        self._last_at, self._last_counts, self._last_tenth = now, counts, tenth
        print(f"novita-video: {tally.describe()}", file=self._stream, flush=True)

    def settled(self, tally: Tally) -> None:
        # A tenth settled is said as it happens, not at the next look: a run of seconds
        # may be over by then.
        if tally.total and 10 * tally.finished // tally.total > self._last_tenth:
            self.show(tally)

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

        found = tally.estimate()
        pace = Text(
            f"{tally.finished}/{tally.total} settled  {format_duration(tally.elapsed)} elapsed  "
            f"{tally.per_minute:.1f}/min  ETA {'-' if found is None else found}"
        )
        bar = Table.grid(padding=(0, 2))
        bar.add_row(ProgressBar(total=tally.total, completed=tally.finished, width=30), pace)
        counts = Text.assemble(
            ("waiting to send ", "dim"),
            f"{tally.queued}  ",
            ("queued at Novita ", "cyan"),
            f"{tally.queued_at_novita}  ",
            ("processing ", "cyan"),
            f"{tally.running_at_novita}  ",
            ("downloading ", "blue"),
            f"{tally.downloading}  ",
            ("succeeded ", "green"),
            f"{tally.done}  ",
            ("failed ", "red"),
            f"{tally.failed}",
            (f"  unknown {tally.unknown}" if tally.unknown else "", "yellow"),
        )
        return Group(bar, counts)

    def show(self, tally: Tally) -> None:
        self._live.update(self._render(tally), refresh=True)

    def settled(self, tally: Tally) -> None:
        pass  # redrawn four times a second anyway

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
