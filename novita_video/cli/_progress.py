"""Progress on stderr: a live ``rich`` display on a terminal, plain lines elsewhere.

:class:`Tally` counts where the prompts of a run stand: *waiting to send* (not yet at
Novita: their turn under the rate limit has not come, or their POST is on its way),
*at Novita* (a task exists: *queued* there or *processing*, as the client's last check
of it saw), *downloading*, and each ends *succeeded*, *failed* or *unknown* (its submit
may have made a task we have no id for): the manifest's words.

The ETA is a model of the run, not a division of what is left by the pace so far (which
reads minutes at 5 s, when nothing has ended yet, and is 7 times off). The run ends when
its last prompt does: the prompts waiting to send go out at the submit rate (measured
once submits go, the ``--rpm`` one until then), and each then takes what a task takes,
from its submit to its clip on disk. The ETA is the time by which every prompt not
settled is as likely settled as not: the median of the *slowest* of them, each task out
weighed by its age (one out for long is likelier near its end, or a straggler). When
sending takes longer than a task, that is about the sending time plus a slow task; when
everything was sent at once (a raised ``--rpm``), it is the slowest of many tasks
running together, which lies in the tail of the task times that nothing has reached.

What a task takes is learned from this run (and, on a rerun, from the times the ledger
kept of the earlier runs' tasks): a Kaplan-Meier curve of the times of the settled and
the ages of those still out (which take at least that long: counting only the settled
would see only the quick ones), as far as tasks reached. Past that the curve is drawn
on in the shape that fits it best among three: ends evenly spread up to a last one (the
simulator's), a bell (most task times), or a long tail (a bell on the time's logarithm).
When shapes that fit about as well foretell ends more than :data:`_AGREE` times apart,
the ETA says that range (``ETA 1m10s to 3m05s``) rather than guessing; until a first
prompt settles, it is a bound, ``ETA at least 2m05s`` (no task takes less than the
oldest one out has been out), from the first second.

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
from typing import TYPE_CHECKING, Final, Literal, Protocol, TextIO

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
_NORMAL: Final = NormalDist()
#: The run is over when fewer prompts than this are expected out: then all are done as
#: likely as not (the chance that none is out is about e to the minus this).
_DONE_BELOW: Final = math.log(2)
#: Tasks that must be out past a time for the survival curve to say anything of it.
_AT_RISK: Final = 3
#: Prompts not settled that stand for all of them in the ETA's sum (the rest weighed in).
_SAMPLE: Final = 200
#: Seconds of submits before their measured rate replaces the ``--rpm`` one.
_RATE_AFTER: Final = 2.0
#: A shape of the tail is as likely as the best one when it misses the curve by no
#: more than this many times as much (their misses differ that much by chance alone).
_AS_LIKELY: Final = 2.0
#: The share of the curve that must be known (tasks ended, of those that reached its
#: end) before the shapes are told apart by how well they fit it: before, the quick
#: start of the task times fits them all about as well (the ETA is their range).
_KNOWN_AFTER: Final = 0.3
#: Shapes as likely as the best whose ETAs are no further apart than this give one ETA
#: (the best's); further apart, the ETA is said as their range.
_AGREE: Final = 2.0
#: Halvings of the time to the last end's search (to a thousandth of its first span).
_HALVINGS: Final = 10
#: No ETA is longer than this (seconds): a month.
_LONGEST: Final = 30 * 86400.0
#: The smallest time a logarithm is taken of (seconds).
_TINY: Final = 1e-3

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
    """Seconds until every prompt is settled: ``at_least`` when only a bound is known,
    and up to ``up_to`` when only a range is."""

    seconds: float
    at_least: bool = False
    up_to: float | None = None

    def __str__(self) -> str:
        if self.up_to is not None:
            return f"{format_duration(self.seconds)} to {format_duration(self.up_to)}"
        return ("at least " if self.at_least else "") + format_duration(self.seconds)

    def later(self, seconds: float) -> Estimate:
        """This estimate ``seconds`` later (counting down, never below 0)."""
        up_to = None if self.up_to is None else max(self.up_to - seconds, 0.0)
        return attrs.evolve(self, seconds=max(self.seconds - seconds, 0.0), up_to=up_to)


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
    # Prompts at Novita with a known start that have not settled: key -> when its task
    # was made (a resumed one's from the ledger: before this run began).
    _sent_at: dict[str, float] = attrs.field(factory=dict, init=False, repr=False)
    _submits: int = attrs.field(default=0, init=False)
    _first_submit: float | None = attrs.field(default=None, init=False)
    # Seconds the latest settled prompts took (this run's, and earlier runs' tasks).
    _settled: deque[float] = attrs.field(
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

    def move(self, source: str, target: str, key: str | None = None, *, age: float = 0.0) -> None:
        """One prompt goes from count ``source`` to count ``target``. ``key`` (the prompt's)
        times it: from its submit (waiting to send -> at Novita) to its end; a task made
        before this run (resumed) comes with its ``age``, the seconds since it was made."""
        setattr(self, source, getattr(self, source) - 1)
        setattr(self, target, getattr(self, target) + 1)
        if key is None:
            return
        if source == "queued" and target == "processing":
            now = self.now()
            self._sent_at[key] = now - max(age, 0.0)
            if age <= 0:  # a submit of this run: it counts in the submit rate
                self._submits += 1
                if self._first_submit is None:
                    self._first_submit = now
        elif target in FINISHED and (sent := self._sent_at.pop(key, None)) is not None:
            self._settled.append(self.now() - sent)

    def learn(self, seconds: float) -> None:
        """A task of an earlier run took ``seconds`` (from the ledger): the ETA learns
        from it as from a prompt this run settled."""
        if seconds >= 0 and math.isfinite(seconds):
            self._settled.append(seconds)

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
        # (Nothing known is not kept: the first submit makes a rate known at once; nor is
        # an ETA that has run out while prompts are left.)
        if (
            cached is not None
            and cached[1] is not None
            and now - cached[0] < min(_ESTIMATE_EVERY, cached[1].seconds or math.inf)
            and cached[2] == self.finished
        ):
            return cached[1].later(now - cached[0])
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
        # The ages of the tasks out, oldest first; those with an unknown start as new.
        ages = sorted((now - sent_at for sent_at in self._sent_at.values()), reverse=True)
        ages += [0.0] * max(0, outstanding - len(ages))
        if not self._settled:
            # Nothing settled yet: no task has taken less than the oldest one out has.
            at_least = ages[0] if ages else 0.0
            if waiting:
                return Estimate(waiting / rate + at_least, at_least=True)
            return Estimate(max(at_least - ages[-1], 1.0), at_least=True)
        survival = Survival.fit(list(self._settled), ages)
        # Every prompt not settled, as an age (below 0: the time until it is sent), a
        # sample of at most _SAMPLE of each kind standing for the rest.
        sending = [-(n + 1) / rate for n in range(waiting)]
        unsettled = _sample(ages, _SAMPLE) + _sample(sending, _SAMPLE)
        # The ETA of each shape as likely as the best one: one ETA if they agree. While
        # the curve is known only near its start, every shape is as likely.
        best = min(survival.misses.values())
        early = 1.0 - survival.shares[-1] < _KNOWN_AFTER
        ends = {
            shape: survival.last_end(unsettled, shape)
            for shape, miss in survival.misses.items()
            if early or miss <= _AS_LIKELY * best
        }
        low, high = min(ends.values()), max(ends.values())
        if high <= _AGREE * low:
            return Estimate(ends[survival.shape])
        return Estimate(low, up_to=high)

    @property
    def eta(self) -> float | None:
        """Seconds until every prompt is settled, if anything is known (see
        :meth:`estimate`; a bound counts, and a range by its low end)."""
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


Shape = Literal["even", "bell", "long"]


@attrs.frozen
class Tail:
    """A shape of task times, fitted to a curve: the share of tasks ended by so many
    seconds is :meth:`ended`."""

    shape: Shape
    #: ``even``: the first and the last end; ``bell``: the bell's mean and spread in
    #: seconds; ``long``: in the logarithm of seconds.
    first: float
    second: float

    def ended(self, seconds: float) -> float:
        """The share of tasks ended ``seconds`` after their submit."""
        if self.shape == "even":
            if seconds >= self.second:
                return 1.0
            return max(0.0, (seconds - self.first) / (self.second - self.first))
        if self.shape == "long":
            seconds = math.log(max(seconds, _TINY))
        return _NORMAL.cdf((seconds - self.first) / self.second)

    def seconds(self, ended: float) -> float:
        """When the share ``ended`` of tasks has ended (0 < ended < 1)."""
        if self.shape == "even":
            return self.first + (self.second - self.first) * ended
        at = self.first + self.second * _NORMAL.inv_cdf(ended)
        return math.exp(at) if self.shape == "long" else at

    @classmethod
    def fit(cls, shape: Shape, plot: Sequence[tuple[float, float]], seen: float) -> Tail:
        """The tail of ``shape`` nearest a probability plot, (seconds, share ended) points:
        least squares of the time on the share (the normal score of the share for a
        bell), as on probability paper."""
        if shape == "even":
            points = [(ended, when) for when, ended in plot]
        else:
            scale = (lambda s: math.log(max(s, _TINY))) if shape == "long" else (lambda s: s)
            points = [(_NORMAL.inv_cdf(ended), scale(when)) for when, ended in plot]
        if len(points) >= 2:
            mean_u = sum(u for u, _ in points) / len(points)
            mean_x = sum(x for _, x in points) / len(points)
            spread = sum((u - mean_u) ** 2 for u, _ in points)
            if spread > 0:
                slope = sum((u - mean_u) * (x - mean_x) for u, x in points) / spread
                if slope > 0:
                    if shape == "even":
                        first = mean_x - slope * mean_u
                        # What was seen ended after it: the last end is later still.
                        return cls(shape, first, max(first + slope, seen * 1.001))
                    return cls(shape, mean_x - slope * mean_u, slope)
        # One end seen (or all at the same time): a shape as wide as what was seen.
        when, ended = plot[0]
        if shape == "even":
            return cls(shape, 0.0, max(when / ended, seen * 1.001))
        width = max(seen - when, when / 4, _TINY)
        if shape == "long":
            width = abs(math.log(max(seen, _TINY) / max(when, _TINY))) or 0.25
            return cls(shape, math.log(max(when, _TINY)) - width * _NORMAL.inv_cdf(ended), width)
        return cls(shape, when - width * _NORMAL.inv_cdf(ended), width)

    def miss(self, plot: Sequence[tuple[float, float]]) -> float:
        """How far this shape's times for the shares ended are from the times seen: the
        sum of squares of the logarithm of their ratios (so every shape is judged on the
        same scale, whatever it was fitted on)."""
        total = 0.0
        for when, ended in plot:
            ratio = max(self.seconds(ended), _TINY) / max(when, _TINY)
            total += math.log(ratio) ** 2
        return total


@attrs.frozen
class Survival:
    """How long tasks take, as the share still out after so many seconds.

    Up to the age that at least :data:`_AT_RISK` tasks reached it is a Kaplan-Meier
    estimate from the durations of the settled tasks and the ages of those still out
    (which take at least that long: counting only the settled would see only the quick
    ones). Past that nothing was seen, and the curve goes on in one of the shapes of
    :class:`Tail`, each fitted to it: :attr:`shape` is the one that fits it best, and
    :attr:`misses` says how well each does.
    """

    #: Times (seconds) and the share still out right after each, from (0, 1).
    times: tuple[float, ...]
    shares: tuple[float, ...]
    tails: dict[Shape, Tail]
    misses: dict[Shape, float]

    @property
    def shape(self) -> Shape:
        """The tail's shape that fits the curve best."""
        return min(self.misses, key=lambda shape: self.misses[shape])

    @classmethod
    def fit(cls, durations: list[float], ages: list[float]) -> Survival:
        """The survival of tasks that settled after ``durations`` and are out at ``ages``."""
        # An end before a task out of the same age: the usual tie rule.
        marks = sorted([(duration, 0) for duration in durations] + [(age, 1) for age in ages])
        at_risk = len(marks)
        share = 1.0
        times, shares = [0.0], [1.0]
        seen = 0.0  # how far the curve is known: while enough tasks were out to tell
        plot: list[tuple[float, float]] = []  # (seconds, the share ended by then)
        for when, still_out in marks:
            if at_risk < _AT_RISK:
                break
            if not still_out:
                # Plotted halfway up its step (Hazen's position): a step's top would put
                # the last end at a share of 1, the infinite end of a bell.
                plot.append((when, 1.0 - share * (1.0 - 0.5 / at_risk)))
                share *= 1.0 - 1.0 / at_risk
                times.append(when)
                shares.append(share)
            seen = when
            at_risk -= 1
        if len(times) == 1:  # every end among the last few: too few to draw a curve
            when = min(durations)
            share = 1.0 - 1.0 / len(marks)
            plot.append((when, 0.5 / len(marks)))
            times.append(when)
            shares.append(share)
        # Past the last end, the share stays put as long as tasks were out to see it.
        if seen > times[-1]:
            times.append(seen)
            shares.append(share)
        shapes: tuple[Shape, ...] = ("even", "bell", "long")
        # The shapes are fitted to, and judged on, at most _SAMPLE points of the plot,
        # evenly spread: as good a likeness, at a fraction of the cost
        if len(plot) > _SAMPLE:  # (the first and the last kept: the ends of the curve)
            step = (len(plot) - 1) / (_SAMPLE - 1)
            plot = [plot[round(n * step)] for n in range(_SAMPLE)]
        tails = {shape: Tail.fit(shape, plot, seen) for shape in shapes}
        misses = {shape: tail.miss(plot) for shape, tail in tails.items()}
        return cls(tuple(times), tuple(shares), tails, misses)

    def out_after(self, seconds: float, shape: Shape | None = None) -> float:
        """The share of tasks still out ``seconds`` after their submit (past the curve,
        on the tail of ``shape``, the best one's by default)."""
        return self._share(shape)(seconds)

    def _share(self, shape: Shape | None) -> Callable[[float], float]:
        """:meth:`out_after` for one shape, its constants worked out once."""
        times, shares, last = self.times, self.shares, self.times[-1]
        tail = self.tails[shape or self.shape]
        beyond = 1.0 - tail.ended(last)
        scale = shares[-1] / beyond if beyond > 0 else 0.0

        def out_after(seconds: float) -> float:
            if seconds <= 0:
                return 1.0
            if seconds < last:
                return _at(times, shares, seconds)
            return scale * (1.0 - tail.ended(seconds))

        return out_after

    def last_end(self, unsettled: list[tuple[float, float]], shape: Shape | None = None) -> float:
        """Seconds from now until every prompt of these (age, weight) is as likely settled
        as not (the median of the last end); an age below 0 is a prompt sent that much
        later."""
        out_after = self._share(shape)
        # Each prompt's share still out now, the denominator of its odds.
        now_out = [(age, weight / out) for age, weight in unsettled if (out := out_after(age)) > 0]
        # Stragglers, out past every time the shape allows: soon, we expect, within a
        # tenth of the longest time seen.
        stragglers = sum(weight for age, weight in unsettled if out_after(age) <= 0)
        soon = max(1.0, self.times[-1] / 10)

        def expected(after: float) -> float:
            late = stragglers * max(0.0, 1.0 - after / soon)
            return late + sum(odds * out_after(age + after) for age, odds in now_out)

        if expected(0.0) < _DONE_BELOW:
            return 0.0
        low, high = 0.0, max(1.0, -min(age for age, _ in unsettled) + self.times[-1])
        while expected(high) >= _DONE_BELOW and high < _LONGEST:
            low, high = high, 2 * high
        # To a thousandth of the time to the end at most: far finer than a second shown.
        for _ in range(_HALVINGS):
            middle = (low + high) / 2
            if expected(middle) < _DONE_BELOW:
                high = middle
            else:
                low = middle
        return min(high, _LONGEST)


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
