"""Chaos: the simulator's misbehaviour, as a frozen config and a seeded die.

:class:`Chaos` says how often each fault happens; every knob is off by default,
so a simulator without chaos answers exactly as before (and draws no random
numbers for it, so a seeded run replays the same task ids). :class:`Saboteur`
holds the live :class:`Chaos` (a test may swap it mid-run) and its own random
stream, seeded from the simulator's ``seed``, and makes one cheap decision per
request: which :class:`Fault`, if any, spoils it. The server applies the fault
(``_server``) and records the ground truth (``_stats``).

Which faults leave a task behind matters most, because a POST sent twice is
billed twice. For a submit:

=====================  ==============  ================================================
fault                  task created?   the client sees
=====================  ==============  ================================================
``drop_before``        no              the connection closes, no answer
``rate_limit_storm``   no              429 ``RATE_LIMIT_EXCEEDED``
``server_error_503``   no              503, surge protection rejects before creating
``server_error_504``   no              504 from the proxy, the request never got in
``server_error_500``   with p=0.5      500 ``CREATE_TASK_FAILED`` (``submit_500_creates``)
``server_error_502``   yes             502: the API answered, the proxy lost the answer
``drop_after``         yes             the connection closes, no answer
``malformed``          yes             200 with a truncated or non-JSON body
``slow``               yes             200, ``slow_seconds`` late (past a client's timeout)
=====================  ==============  ================================================

A created task whose submit got no usable answer lands in
``SimulatorStats.unanswered_tasks`` (a slow one leaves it if its late answer is
delivered after all): the cases where a client cannot know whether it was billed,
and must not blindly submit again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, Final

import attrs

from ._tasks import PROCESSING, QUEUED, TaskState

__all__ = [
    "ODD_STATUSES",
    "SERVER_ERROR_STATUSES",
    "Chaos",
    "Fault",
    "Saboteur",
    "StuckPlan",
]

#: The 5xx statuses chaos can answer with.
SERVER_ERROR_STATUSES: Final = (500, 502, 503, 504)
#: Statuses a poll may answer that no client was told about (Novita's JS SDK knows
#: UNKNOWN; PAUSED is made up, standing for whatever Novita adds next).
ODD_STATUSES: Final = ("TASK_STATUS_UNKNOWN", "TASK_STATUS_PAUSED")
# A spoilt body is cut between these shares of its length: never empty, never whole.
_CUT: Final = (0.1, 0.9)


def _rate(instance: Chaos, attribute: attrs.Attribute[Any], value: object) -> None:
    # bool is an int subclass: a rate of True is a bug, not 1.0.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ValueError(f"chaos {attribute.name} must be a number in [0, 1], not {value!r}")


def _seconds(instance: Chaos, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"chaos {attribute.name} must be a finite number > 0, not {value!r}")


def _count(
    minimum: int, *, optional: bool
) -> Callable[[Chaos, attrs.Attribute[Any], object], None]:
    def check(instance: Chaos, attribute: attrs.Attribute[Any], value: object) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = f"an int >= {minimum}" + (" or None" if optional else "")
            raise ValueError(f"chaos {attribute.name} must be {what}, not {value!r}")

    return check


def _to_statuses(value: object) -> object:
    # A list from JSON or the command line; stored as a tuple so Chaos stays hashable.
    return tuple(value) if isinstance(value, list) else value


def _statuses(instance: Chaos, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        not isinstance(value, tuple)
        or not value
        or not all(
            isinstance(s, int) and not isinstance(s, bool) and s in SERVER_ERROR_STATUSES
            for s in value
        )
    ):
        raise ValueError(
            f"chaos server_error_statuses must be a non-empty tuple drawn from "
            f"{SERVER_ERROR_STATUSES}, not {value!r}"
        )


def _rate_field(text: str) -> Any:
    # The help text lives with the field: the command line builds its flags from it.
    return attrs.field(default=0.0, validator=_rate, metadata={"help": text})


@attrs.frozen(kw_only=True)
class Chaos:
    """How often the simulator misbehaves; every knob off by default.

    Rates are probabilities in [0, 1], drawn per request (or per task, or per
    download) from a random stream seeded by the simulator's ``seed``. Give one to
    ``FakeNovita(chaos=...)``, swap it at run time with ``fake.chaos = Chaos()``
    or ``fake.set_chaos(submit_server_errors=0.0)``, or set it from the command
    line with ``--chaos-...`` flags. At most one request fault hits a request.

    >>> Chaos(submit_server_errors=0.05, html_share=0.5, result_drops=0.01)   # doctest: +SKIP

    Per request, on ``POST`` submit (see the module docstring for which create a task):

    * ``submit_drops_before``: close the connection before handling (no task).
    * ``submit_rate_limits``: answer 429 (a storm, see ``rate_limit_burst``; no task).
    * ``submit_server_errors``: answer a status from ``server_error_statuses``: 503 and 504
      create no task, 500 creates one with probability ``submit_500_creates``, 502 does.
    * ``submit_drops_after``: create the task, then close the connection without an answer.
    * ``submit_malformed``: create the task, answer 200 with a cut or non-JSON body.
    * ``submit_slow``: create the task, answer ``slow_seconds`` (simulator clock) late.

    Per request, on ``GET`` task-result (none of these changes a task; as on submit, a 502
    is the proxy losing an answer the API gave, so that poll counts in ``polls``):

    * ``result_drops``: close the connection before answering.
    * ``result_rate_limits``, ``result_server_errors``: as for submit (500 is
      ``GET_RESULT_FAILED``).
    * ``result_malformed``: a 200 with a body cut mid-way or not JSON.
    * ``result_slow``: the answer comes ``slow_seconds`` late.

    Shared by both endpoints:

    * ``server_error_statuses``: the 5xx statuses drawn from, uniformly.
    * ``html_share``: share of 502/503/504 answers that are a proxy's HTML page instead of
      Novita's JSON error body (a 500 comes from the API itself, always JSON).
    * ``submit_500_creates``: probability that a submit answered 500 created its task.
    * ``slow_seconds``: how late a slow answer is; set it past the client's timeout.
    * ``rate_limit_burst``: a 429 storm lasts this many consecutive requests on its endpoint.
    * ``rate_limit_retry_after``: seconds sent in ``Retry-After`` with a storm's 429s;
      None sends no header.

    Per task or per download:

    * ``unknown_statuses``: a poll of an unfinished task answers ``TASK_STATUS_UNKNOWN`` or
      ``TASK_STATUS_PAUSED``, with fields no client knows.
    * ``stuck_tasks``: a new task never finishes: PROCESSING forever, progress frozen, eta 0
      or absent.
    * ``expired_links``: a task's first answer with a video link hands out one that has
      already expired (storage answers 403); later answers hand out fresh ones.
    * ``truncated_downloads``: a video download announces the full Content-Length, then the
      connection closes part-way through the body.
    * ``revoke_key_after``: once this many tasks were accepted (counted since the simulator
      started), the key is revoked: 403 ``INVALID_API_KEY`` for every API request after.

    Per webhook event (a task submitted with ``extra.webhook.url``; drawn at submit):

    * ``webhook_loss``: the event is silently never sent, as a lost delivery would be.
    * ``webhook_duplicates``: the event is sent twice (each copy retried on its own), as an
      at-least-once sender does; a receiver must be idempotent.
    """

    submit_drops_before: float = _rate_field("close the connection before a submit is handled")
    submit_rate_limits: float = _rate_field("start a 429 storm on submit")
    submit_server_errors: float = _rate_field("answer a submit 5xx (500/502 may create the task)")
    submit_drops_after: float = _rate_field("create the task, then close without an answer")
    submit_malformed: float = _rate_field("create the task, answer 200 with broken JSON")
    submit_slow: float = _rate_field("create the task, answer slow_seconds late")
    result_drops: float = _rate_field("close the connection before a task-result answer")
    result_rate_limits: float = _rate_field("start a 429 storm on task-result")
    result_server_errors: float = _rate_field("answer a task-result 5xx")
    result_malformed: float = _rate_field("answer a task-result 200 with broken JSON")
    result_slow: float = _rate_field("answer a task-result slow_seconds late")
    server_error_statuses: tuple[int, ...] = attrs.field(
        default=SERVER_ERROR_STATUSES,
        converter=_to_statuses,
        validator=_statuses,
        metadata={"help": "the 5xx statuses drawn from, e.g. 503,504 (default: all four)"},
    )
    html_share: float = _rate_field("share of 502/503/504 answered as an HTML proxy page")
    submit_500_creates: float = attrs.field(
        default=0.5,
        validator=_rate,
        metadata={"help": "probability a submit answered 500 created its task (default 0.5)"},
    )
    slow_seconds: float = attrs.field(
        default=120.0,
        validator=_seconds,
        metadata={"help": "how late a slow answer comes, simulator seconds (default 120)"},
    )
    rate_limit_burst: int = attrs.field(
        default=1,
        validator=_count(1, optional=False),
        metadata={"help": "consecutive 429s per storm (default 1)"},
    )
    rate_limit_retry_after: int | None = attrs.field(
        default=1,
        validator=_count(0, optional=True),
        metadata={"help": "Retry-After seconds on a storm's 429s, 'none' for no header"},
    )
    unknown_statuses: float = _rate_field("a poll of an unfinished task gets an unknown status")
    stuck_tasks: float = _rate_field("a new task stays PROCESSING forever")
    expired_links: float = _rate_field("a task's first video link is already expired")
    truncated_downloads: float = _rate_field("a video download is cut part-way")
    revoke_key_after: int | None = attrs.field(
        default=None,
        validator=_count(0, optional=True),
        metadata={"help": "revoke the key once this many tasks were accepted"},
    )
    webhook_loss: float = _rate_field("a task's webhook event is never sent (lost)")
    webhook_duplicates: float = _rate_field("a task's webhook event is sent twice")

    @property
    def request_faults(self) -> bool:
        """Whether any per-request fault can fire (the server's fast path checks this)."""
        return any(
            getattr(self, name) > 0.0
            for name in (
                "submit_drops_before",
                "submit_rate_limits",
                "submit_server_errors",
                "submit_drops_after",
                "submit_malformed",
                "submit_slow",
                "result_drops",
                "result_rate_limits",
                "result_server_errors",
                "result_malformed",
                "result_slow",
                "truncated_downloads",
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """The knobs as JSON-able values (``Chaos(**body)`` reads them back)."""
        body = attrs.asdict(self)
        body["server_error_statuses"] = list(self.server_error_statuses)
        return body


@attrs.frozen
class Fault:
    """One request's misbehaviour, as drawn by :class:`Saboteur`.

    ``kind`` is how it is counted in ``SimulatorStats.chaos`` (``"drop_before"``,
    ``"server_error_502"``, ...). ``before`` faults answer in place of the handler
    (no task is created); the others spoil the handler's 200 answer after it ran
    (for a submit: after the task was created).
    """

    kind: str
    before: bool
    status: int = 0
    html: bool = False
    retry_after: int | None = None


_DROP_BEFORE: Final = Fault("drop_before", before=True)
_DROP_AFTER: Final = Fault("drop_after", before=False)
_MALFORMED: Final = Fault("malformed", before=False)
_SLOW: Final = Fault("slow", before=False)
_TRUNCATED: Final = Fault("truncated_download", before=False)


@attrs.frozen
class StuckPlan:
    """How a task that never finishes looks: progress frozen, eta 0 or left out."""

    progress: int
    omit_eta: bool

    def hold(self, state: TaskState, *, report_progress: bool) -> TaskState:
        """The state a poll shows: QUEUED as drawn, then PROCESSING forever."""
        if state.status == QUEUED:
            return state
        return TaskState(PROCESSING, self.progress if report_progress else 0, 0, "")


class Saboteur:
    """The live :class:`Chaos` and its random stream: one decision per call.

    Draws happen only for knobs that are on, so chaos off costs a few attribute
    reads per request and leaves every other random stream untouched.
    """

    def __init__(self, chaos: Chaos, seed: int | None) -> None:
        # Its own stream: turning chaos on must not change the task ids a seed replays.
        self._rng = random.Random(None if seed is None else f"novita-chaos:{seed}")
        self._storm_left: dict[str, int] = {}
        self._chaos = chaos
        self._active = chaos.request_faults

    @property
    def chaos(self) -> Chaos:
        """The knobs in force."""
        return self._chaos

    @chaos.setter
    def chaos(self, chaos: Chaos) -> None:
        # A storm in progress belongs to the old knobs: "chaos off" means off at once.
        self._storm_left.clear()
        self._chaos = chaos
        self._active = chaos.request_faults

    def _hit(self, rate: float) -> bool:
        return rate > 0.0 and self._rng.random() < rate

    def request_fault(self, endpoint: str) -> Fault | None:
        """The fault for one request to ``endpoint`` (``"submit"``, ...), or None."""
        if not self._active:
            return None
        chaos = self._chaos
        if endpoint == "submit":
            if self._hit(chaos.submit_drops_before):
                return _DROP_BEFORE
            storm = self._storm(endpoint, chaos.submit_rate_limits)
            if storm is not None:
                return storm
            if self._hit(chaos.submit_server_errors):
                return self._server_error(creates_on_500=self._hit(chaos.submit_500_creates))
            if self._hit(chaos.submit_drops_after):
                return _DROP_AFTER
            if self._hit(chaos.submit_malformed):
                return _MALFORMED
            if self._hit(chaos.submit_slow):
                return _SLOW
        elif endpoint == "task_result":
            if self._hit(chaos.result_drops):
                return _DROP_BEFORE
            storm = self._storm(endpoint, chaos.result_rate_limits)
            if storm is not None:
                return storm
            if self._hit(chaos.result_server_errors):
                return self._server_error(creates_on_500=False)
            if self._hit(chaos.result_malformed):
                return _MALFORMED
            if self._hit(chaos.result_slow):
                return _SLOW
        elif endpoint == "video" and self._hit(chaos.truncated_downloads):
            return _TRUNCATED
        return None

    def _storm(self, endpoint: str, rate: float) -> Fault | None:
        left = self._storm_left.pop(endpoint, 0)
        if left:
            # Inside a burst: no draw, the storm goes on.
            if left > 1:
                self._storm_left[endpoint] = left - 1
        elif self._hit(rate):
            if self._chaos.rate_limit_burst > 1:
                self._storm_left[endpoint] = self._chaos.rate_limit_burst - 1
        else:
            return None
        return Fault(
            "rate_limit_storm",
            before=True,
            status=429,
            retry_after=self._chaos.rate_limit_retry_after,
        )

    def _server_error(self, *, creates_on_500: bool) -> Fault:
        chaos = self._chaos
        status = self._rng.choice(chaos.server_error_statuses)
        html = status != 500 and self._hit(chaos.html_share)
        # 503/504 are refused before the API creates anything; a 502 is the proxy losing
        # an answer the API gave; a 500 may come before or after the task was created.
        before = status in (503, 504) or (status == 500 and not creates_on_500)
        return Fault(f"server_error_{status}", before=before, status=status, html=html)

    def stuck_plan(self) -> StuckPlan | None:
        """Whether a new task never finishes, and how it looks meanwhile."""
        if not self._hit(self._chaos.stuck_tasks):
            return None
        return StuckPlan(progress=self._rng.randrange(100), omit_eta=self._rng.random() < 0.5)

    def odd_status(self) -> str | None:
        """A status to answer instead of an unfinished task's own, or None."""
        if not self._hit(self._chaos.unknown_statuses):
            return None
        return self._rng.choice(ODD_STATUSES)

    def webhook_fate(self) -> tuple[bool, bool]:
        """Whether a task's webhook event is lost, and (if not) whether it is sent twice."""
        if self._hit(self._chaos.webhook_loss):
            return True, False
        return False, self._hit(self._chaos.webhook_duplicates)

    def expire_link(self) -> bool:
        """Whether a task's first video link is handed out already expired."""
        return self._hit(self._chaos.expired_links)

    def cut(self, size: int) -> int:
        """Where to cut a body of ``size`` bytes: at least one byte sent, at least one kept."""
        low, high = (max(1, min(size - 1, int(size * share))) for share in _CUT)
        return self._rng.randint(low, high)

    def spoil_json(self, body: bytes) -> bytes:
        """A 200 body no JSON parser accepts: cut mid-way (a strict prefix of an
        object never parses), empty, or a page of HTML."""
        choice = self._rng.randrange(3)
        if choice == 0 and len(body) > 1:
            return body[: self.cut(len(body))]
        if choice == 1:
            return b""
        return b"<html><body>OK</body></html>"
