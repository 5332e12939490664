"""The command line: its parser, its five commands, and what each exit code means.

Exit codes: 0 every clip was made, 1 some prompts failed, 2 a usage or input error
(nothing was sent), 3 a fatal answer from the API stopped the batch (a bad key, no
balance, no such model at this URL), 4 the ledger could not be written (the task ids it
could not record are printed on stderr), 5 the spend cap (``--max-spend``) stopped the
batch (or could not be kept: the balance could not be read), 128 + the signal's number
when a signal stopped the run: 130 SIGINT, 143 SIGTERM, 129 SIGHUP. A user's mistake is
one sentence on stderr, never a traceback.

The summary at the end of a batch is counted from the manifest's own lines as they are
written, so the terminal, ``manifest.jsonl`` and the gallery always say the same. The
balance is read before and after a batch: what it fell by is reported as spent (in the
summary, the gallery's header, the last line of ``--json`` and ``DIR/runs.jsonl``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import json
import math
import os
import re
import shlex
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from .._balance import Balance, SpendCap, dollars
from .._client import DEFAULT_BASE_URL, Client, _check_key, check_base_url
from .._errors import (
    APITimeoutError,
    APIUnreachableError,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidRequestError,
    NotFoundError,
    NovitaError,
    SpendCapReachedError,
)
from .._http import HTTPTransport
from .._models import TaskResult, TaskStatus, TaskTimeoutError
from .._requests import MODELS, VideoRequest
from .._settings import DEFAULT_BATCH, DEFAULT_HTTP
from .._unified import ALIASES, UNIFIED_PATH, CatalogModel, canonical_model, require_jsonschema
from .._version import __version__
from ._gallery import write_gallery
from ._inputs import FORMATS, InputError, ModelSpec, PromptSource, model_fields
from ._ledger import Ledger, LedgerError, State
from ._outputs import (
    FAILED_STATUSES,
    Entry,
    failures,
    remove_leftovers,
    slugify,
    write_manifest,
)
from ._progress import Tally, format_duration, make_reporter
from ._run import STOP_SIGNALS, STOP_TIMEOUT, Run, Settings, Wire, signal_name
from ._spend import FolderSpend, SpendRecordError, UnpricedTasksError, append_run

if TYPE_CHECKING:
    from ..testing import FakeNovita

__all__ = ["build_parser", "run_command"]

OK: Final = 0
SOME_FAILED: Final = 1
USAGE: Final = 2
FATAL: Final = 3
#: The ledger could not be written: the run stopped, and the task ids it could not
#: record were printed (a rerun would not know them).
LEDGER: Final = 4
#: The spend cap stopped the batch, or could not be kept (the balance could not be read).
SPEND_CAP: Final = 5
INTERRUPTED: Final = 128 + signal.SIGINT

#: The built-in simulator (``batch --simulate`` and ``simulate``): quick tasks, a roomy limit.
SIMULATED_TASK_SECONDS: Final = (3.0, 8.0)
SIMULATED_SUBMITS_PER_MINUTE: Final = 120
#: Novita's default submit limit for its video models (Minimax, Kling, Wan: 20 a minute).
NOVITA_SUBMITS_PER_MINUTE: Final = DEFAULT_BATCH.submit_rpm

#: Seconds a balance read before or after a run may take (it only informs the summary,
#: unless a spend cap needs it).
BALANCE_WAIT: Final = 20.0

NO_KEY: Final = (
    "no API key: set NOVITA_API_KEY to your Novita key (https://novita.ai/settings/key-management)"
)


def _base_url() -> str:
    return os.environ.get("NOVITA_BASE_URL") or DEFAULT_BASE_URL


def _say(message: str) -> None:
    _line(f"novita-video: {message}")


def _line(text: str) -> None:
    # After SIGHUP the terminal may be gone; what the run owes its files comes first.
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


def _explain(error: NovitaError, model: str | None = None) -> str:
    """A fatal error in a sentence that says what to do."""
    if isinstance(error, SpendCapReachedError):
        if "cannot tell what a task costs" in str(error) and "in doubt" in str(error):
            # No later run sees that task end either (a prompt in doubt is not followed,
            # nor is it sent again under the cap): only a run without the cap goes on.
            return (
                f"the batch stopped: {error}; the prompts not sent are not_submitted. A "
                "later run under the cap cannot learn the price either: run the same "
                "command with --max-spend none to send without a cap"
            )
        if "cannot tell what a task costs" in str(error):
            # A higher cap would not help: the price is what is missing.
            return (
                f"the batch stopped: {error}; the prompts not sent are not_submitted. Run "
                "the same command again once the tasks made have been charged (the "
                "balance shows it), or with --max-spend none to send without a cap"
            )
        return (
            f"the batch stopped: {error}; the prompts not sent are not_submitted. The cap "
            "is this folder's: run the same command with a higher --max-spend to spend more"
        )
    if isinstance(error, InsufficientBalanceError):
        return (
            f"Novita says the balance is too low ({error}); top up, then run the same "
            "command again to continue"
        )
    if isinstance(error, AuthenticationError):
        return f"Novita refused the API key ({error}); check NOVITA_API_KEY"
    if isinstance(error, APIUnreachableError):
        return f"{error}; check NOVITA_BASE_URL (it is {_base_url()})"
    if isinstance(error, NotFoundError) and model is not None:
        return (
            f"the API at {_base_url()} has no model {model} ({error}); check NOVITA_BASE_URL "
            "and --model, then run the same command again"
        )
    return f"Novita refused every further request ({error})"


# The commands.


def _api_key() -> str | None:
    key = os.environ.get("NOVITA_API_KEY", "")
    return key if key.strip() else None


@contextlib.asynccontextmanager
async def _simulator(port: int = 0) -> AsyncIterator[FakeNovita]:
    from ..testing import FakeNovita, RateLimit  # the server side of aiohttp: only when asked

    fake = FakeNovita(
        port=port,
        task_duration=SIMULATED_TASK_SECONDS,
        submit_limit=RateLimit(SIMULATED_SUBMITS_PER_MINUTE),
    )
    async with fake:
        yield fake


def _batch(args: argparse.Namespace) -> int:
    key = _api_key()
    if key is None and not args.simulate:
        _say(f"{NO_KEY}, or add --simulate to try the built-in simulator without one")
        return USAGE
    args.given_model = args.model  # what runs.jsonl records: the name the user gave
    args.model = canonical_model(args.model)  # hailuo-02 of the catalogue: our table's
    spec: ModelSpec = args.model
    if args.model not in MODELS:
        found = _catalog_model(args, key)
        if isinstance(found, int):
            return found
        spec = found
    try:
        source = PromptSource(args.prompts, args.format, spec)
    except InputError as error:
        _say(str(error))
        return USAGE
    with contextlib.closing(source):
        try:
            validation = source.validate()
        except InputError as error:  # the file cannot be opened
            _say(str(error))
            return USAGE
        for problem in validation.errors:
            print(problem, file=sys.stderr)
        if validation.error_count:
            more = validation.error_count - len(validation.errors)
            _say(
                f"{validation.error_count} error(s) in {source.name}"
                + (f" ({more} not shown)" if more else "")
                + "; nothing was submitted"
            )
            return USAGE
        if validation.count == 0:
            _say(f"no prompts in {source.name}; nothing to do")
            return USAGE
        out = Path(args.out)
        base_url = _base_url()
        api = "simulator" if args.simulate else base_url.rstrip("/")
        if not args.simulate:
            try:  # before the ledger records this API for the folder
                check_base_url(base_url, warn=False)
            except InvalidRequestError as error:
                _say(f"NOVITA_BASE_URL: {error}")
                return USAGE
        try:
            out.mkdir(parents=True, exist_ok=True)
            ledger = Ledger.open(out, api)
        except LedgerError as error:
            _say(str(error))
            return USAGE
        except OSError as error:
            _say(f"--out {out}: {_out_problem(out, error)}; nothing was submitted")
            return USAGE
        with contextlib.closing(ledger):
            remove_leftovers(out)
            if not args.quiet:
                _say_resumed(
                    out, ledger.counts(), resubmit=args.resubmit_unknown, simulate=args.simulate
                )
                if args.retry_failed:
                    _say_retrying(ledger.failed_count(row.key for row in source.rows()))
            try:
                return anyio.run(_run_batch, args, key, source, ledger, validation.count)
            except Exception as error:
                # A full disk or a lost output directory: the ledger is still consistent.
                cause = _innermost(error)
                if not isinstance(cause, OSError | sqlite3.Error):
                    raise
                _say(f"cannot write to {out}: {cause}")
                return SOME_FAILED


def _catalog_model(args: argparse.Namespace, key: str | None) -> CatalogModel | int:
    """The catalogue model ``--model`` names, fetched before any line is checked; or the
    exit status, having said why it cannot be used."""
    try:
        require_jsonschema()
    except InvalidRequestError:
        _say(
            f"--model {args.model}: a model of Novita's catalogue, whose lines are checked "
            "against its JSON Schema before anything is sent; that needs jsonschema: "
            "pip install 'novita-video[catalog]'"
        )
        return USAGE

    async def fetch() -> CatalogModel | int:
        try:
            async with _catalog_client(args, key) as client:
                return await client.model(args.model)
        except InvalidRequestError as error:
            _say(
                f"--model {args.model}: {str(error).removeprefix('model: ')}; "
                "`novita-video models` lists them"
            )
            return USAGE
        except NovitaError as error:
            _say(f"cannot read Novita's catalogue of models: {error}")
            return FATAL if error.dooms_batch else SOME_FAILED

    return anyio.run(fetch)


@contextlib.asynccontextmanager
async def _catalog_client(args: argparse.Namespace, key: str | None) -> AsyncIterator[Client]:
    """A client of the API the command is for (the built-in simulator with --simulate)."""
    async with contextlib.AsyncExitStack() as stack:
        url = _base_url()
        if args.simulate:
            fake = await stack.enter_async_context(_simulator())
            key, url = fake.api_key, fake.url
        yield await stack.enter_async_context(_reader(key, url))


def _reader(key: str | None, url: str) -> Client:
    """A plain client of ``url`` for one look (the catalogue, the balance)."""
    return Client(
        transport=HTTPTransport(
            base_url=check_base_url(url, warn=False),
            api_key=_check_key(key),
            settings=DEFAULT_HTTP,
            user_agent=f"novita-video/{__version__}",
        )
    )


async def _read_balance(key: str | None, url: str) -> Balance | NovitaError:
    """The account's balance, or why it could not be read (within :data:`BALANCE_WAIT`)."""
    try:
        with anyio.move_on_after(BALANCE_WAIT):
            async with _reader(key, url) as reader:
                return await reader.balance()
        return APITimeoutError(f"balance: no answer within {BALANCE_WAIT:g} s", True)
    except NovitaError as error:
        return error


def _out_problem(out: Path, error: OSError) -> str:
    """Why the output folder cannot be used, in words."""
    if isinstance(error, FileExistsError | NotADirectoryError) or (
        out.exists() and not out.is_dir()
    ):
        return "a file is in the way (it must be a folder, or not exist yet: it is made)"
    if isinstance(error, PermissionError):
        return "no permission to write there; choose a folder you can write to"
    if error.errno == errno.EROFS:
        return "the file system is read-only; choose a folder you can write to"
    if error.errno == errno.ENOSPC:
        return "the disk is full"
    if isinstance(error, FileNotFoundError):
        return "cannot be made there (its parent folder cannot be created)"
    return f"cannot be used ({error.strerror or error})"


def _say_resumed(
    out: Path, counts: dict[State, int], *, resubmit: bool, simulate: bool = False
) -> None:
    """What an earlier run left in ``out``, before this one goes on from there."""
    if not counts:
        return
    made = counts.get(State.SUCCEEDED, 0)
    failed = counts.get(State.FAILED, 0) + counts.get(State.REJECTED, 0)
    running = counts.get(State.SUBMITTED, 0)
    unknown = counts.get(State.SENDING, 0) + counts.get(State.UNKNOWN, 0)
    parts = [f"{made} clip(s) made"]
    if running and simulate:
        # Each --simulate run starts a simulator of its own: the last one, and its
        # tasks, ended with its run.
        parts.append(
            f"{running} task(s) of an earlier run's simulator, which ended with it "
            "(made again by this run's)"
        )
    elif running:
        parts.append(f"{running} task(s) still being made (waiting for them, not resubmitting)")
    if failed:
        parts.append(f"{failed} failed (refused ones are sent again)")
    if unknown and simulate:
        parts.append(f"{unknown} unknown (sent again: the simulator that may have made them ended)")
    elif unknown:
        what = "sending them again (--resubmit-unknown)" if resubmit else "not sent again"
        parts.append(f"{unknown} unknown ({what})")
    _say(f"resuming {out}: an earlier run left " + ", ".join(parts))


def _say_retrying(failed: int) -> None:
    """``--retry-failed``: how many prompts will be sent again, before any is."""
    if not failed:
        _say("--retry-failed: no prompt of this file has a failed task; none is sent again")
        return
    _say(
        f"--retry-failed: sending again the {failed} prompt(s) whose task failed: a new "
        "task each (paid for again); their failed tasks stay in the ledger as earlier attempts"
    )


def _innermost(error: BaseException) -> BaseException:
    """The error inside task groups' exception groups, when there is only one."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def _run_batch(
    args: argparse.Namespace, key: str | None, source: PromptSource, ledger: Ledger, total: int
) -> int:
    # The stop signals are caught from here to the end: one that comes while the
    # manifest is being written waits for it, instead of killing the command half-way.
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        return await _batch_run(args, key, source, ledger, total, signals)


async def _batch_run(
    args: argparse.Namespace,
    key: str | None,
    source: PromptSource,
    ledger: Ledger,
    total: int,
    signals: AsyncIterator[signal.Signals],
) -> int:
    out = Path(args.out)
    started = time.monotonic()
    emit: Callable[[Entry], None] | None = None
    if args.json:

        def emit(entry: Entry) -> None:
            print(entry.to_json(), flush=True)

    rpm = args.rpm
    if rpm is None:
        rpm = SIMULATED_SUBMITS_PER_MINUTE if args.simulate else NOVITA_SUBMITS_PER_MINUTE
    settings = Settings(
        out=out,
        model=args.model,
        download=not args.no_download,
        resubmit_unknown=args.resubmit_unknown,
        tasks_survive=not args.simulate,
        task_timeout=args.task_timeout,
        stop_timeout=args.stop_timeout,
        retry_failed=args.retry_failed,
    )
    tally = Tally(total, rpm=rpm)
    async with contextlib.AsyncExitStack() as stack:
        url = _base_url()
        if args.simulate:
            fake = await stack.enter_async_context(_simulator())
            key, url = fake.api_key, fake.url
            if not args.quiet:
                _say(
                    f"simulating: a simulator of Novita's API started for this run on "
                    f"{fake.url} ({_SIMULATOR_HELP}); nothing is sent to Novita, nothing is "
                    "billed, and its tasks end with this run"
                )
        try:
            # The SDK's own transport, in a Wire: a stop can give up the POSTs on the wire.
            wire = Wire(
                HTTPTransport(
                    base_url=check_base_url(url),
                    api_key=_check_key(key),
                    settings=DEFAULT_HTTP,
                    user_agent=f"novita-video/{__version__}",
                )
            )
            client = Client(
                key,
                concurrency=args.concurrency,
                submit_rpm=rpm,
                task_timeout=args.task_timeout,
                redis_url=args.redis_url,
                transport=wire,
            )
        except InvalidRequestError as error:
            _say(str(error))
            return USAGE
        money = await _money_before(args, key, url, ledger)
        if isinstance(money, int):
            return money
        settings = attrs.evolve(settings, spend_cap=money.cap)
        reporter = make_reporter(quiet=args.quiet)
        run = Run(client, source, ledger, settings, tally, reporter, emit, wire)
        await run.run(signals)
        if isinstance(money.before, Balance) and run.stopped_by is None:
            # Not after a signal: the time left before SIGKILL is the manifest's.
            money.after = await _read_balance(key, url)
            if isinstance(money.after, Balance):
                money.folder.observe(money.after)
                if money.cap is not None:
                    # Every task the cap let through that ended is charged by now: a
                    # top-up during the run may hide their charges from the readings.
                    money.folder.spent = max(money.folder.spent, money.cap.charged(now=True))
                with contextlib.suppress(OSError):
                    money.folder.save()
    if run.input_error is not None:
        _say(f"{run.input_error} (the file changed while it was being read)")
        return USAGE
    code = _report(args, run, source, ledger, time.monotonic() - started, money)
    record = money.record(args, run, code)
    append_run(out, record)
    if args.json:
        with contextlib.suppress(OSError):
            print(json.dumps({"run": record}), flush=True)
    return code


@attrs.define
class Money:
    """What a run knows of money: the balance before and after (or why it is not known),
    the folder's record of spending, and its spend cap."""

    started: str
    folder: FolderSpend
    before: Balance | NovitaError
    cap: SpendCap | None = None
    after: Balance | NovitaError | None = None
    #: The manifest's counts, once it is written.
    counts: Counts | None = None

    @property
    def spent(self) -> Decimal | None:
        """What the balance fell by during the run (account-wide), when both are known."""
        if isinstance(self.before, Balance) and isinstance(self.after, Balance):
            return self.after.spent_since(self.before)
        return None

    def sentence(self) -> str:
        """The summary's words on money."""
        if not isinstance(self.before, Balance):
            return f"the balance could not be read ({self.before}), so the spend is not known"
        if not isinstance(self.after, Balance):
            why = "the run was stopped" if self.after is None else str(self.after)
            text = f"balance {dollars(self.before.available)} before; not read after ({why})"
        else:
            spent = self.spent
            assert spent is not None
            text = (
                f"spent {dollars(spent)} this run (balance {dollars(self.before.available)}"
                f" -> {dollars(self.after.available)}; account-wide: other use counts too)"
            )
        if self.folder.max_spend is not None:
            text += (
                f"; this folder has spent {dollars(self.folder.spent)} of its "
                f"{dollars(self.folder.max_spend)} cap"
            )
        elif self.folder.spent != self.spent:
            text += f"; this folder has spent {dollars(self.folder.spent)} since its first run"
        return text

    def note(self) -> str:
        """The gallery's line under its heading."""
        return self.sentence()[0].upper() + self.sentence()[1:] + "."

    def record(self, args: argparse.Namespace, run: Run, code: int) -> dict[str, Any]:
        """This run's line of ``DIR/runs.jsonl`` (and of ``--json``)."""

        def amount(value: Balance | NovitaError | None) -> str | None:
            return _plain(value.available) if isinstance(value, Balance) else None

        stopped = None
        if isinstance(run.fatal, SpendCapReachedError):
            stopped = "spend cap"
        elif run.fatal is not None:
            stopped = "fatal answer"
        elif run.stopped_by is not None:
            stopped = signal_name(run.stopped_by)
        spent = self.spent
        return {
            "started": self.started,
            "ended": _now(),
            "model": getattr(args, "given_model", args.model),
            "prompts": None if self.counts is None else self.counts.total,
            "made": None if self.counts is None else self.counts.made,
            "balance_before": amount(self.before),
            "balance_after": amount(self.after),
            "spent": None if spent is None else _plain(spent),
            "folder_spent": _plain(self.folder.spent) if self.folder.baseline else None,
            "max_spend": None if self.folder.max_spend is None else _plain(self.folder.max_spend),
            "stopped": stopped,
            "exit": code,
        }


def _plain(amount: Decimal) -> str:
    """Dollars as a plain decimal string: ``"8.71"``, ``"0"``, ``"10"``."""
    return format(amount.normalize(), "f")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def _money_before(
    args: argparse.Namespace, key: str | None, url: str, ledger: Ledger
) -> Money | int:
    """Read the balance, and make the folder's spend cap; or the exit status, said."""
    out = Path(args.out)
    try:
        folder = FolderSpend.load(out)
    except SpendRecordError as error:
        if args.max_spend != "none":
            _say(
                f"{error}: what this folder spent is not known, so no spend cap can be "
                "kept; nothing was sent. Run once with --max-spend none (a run without a "
                "cap needs no record: it sets the damaged one aside and starts a new one "
                "from its first reading), or use a new --out folder"
            )
            return USAGE
        folder = FolderSpend.set_aside(out)
        _say(f"{error}: set aside as {folder.damaged}; a new record starts from this run")
    if args.max_spend == "none":
        folder.max_spend = None
    elif args.max_spend is not None:
        folder.max_spend = args.max_spend
    elif folder.max_spend is not None and not args.quiet:
        _say(
            f"keeping this folder's spend cap of {dollars(folder.max_spend)} "
            "(--max-spend changes it, --max-spend none lifts it)"
        )
    made = sum(count for state, count in ledger.counts().items() if state is not State.REJECTED)
    if folder.max_spend is not None and not folder.found and made:
        # The record is gone but the tasks it counted are not: a cap counted from zero
        # would let this folder spend it again.
        _say(
            f"{folder.path} is missing, but the ledger holds {made} task(s) of earlier runs: "
            f"what this folder spent is not known, so the spend cap of "
            f"{dollars(folder.max_spend)} cannot be kept; nothing was sent. Put the file "
            "back, or run once with --max-spend none (a new record then counts from that "
            "run's first reading), or use a new --out folder"
        )
        return SPEND_CAP
    before = await _read_balance(key, url)
    if isinstance(before, Balance):
        folder.observe(before)
    elif folder.max_spend is not None:
        _say(
            f"the spend cap of {dollars(folder.max_spend)} cannot be kept: the balance "
            f"cannot be read ({before}); nothing was sent"
        )
        return SPEND_CAP
    folder.save()
    try:
        cap = folder.cap(
            args.model,
            outstanding=ledger.outstanding(),
            task_timeout=args.task_timeout,
            follows=not args.simulate,  # as the run's tasks_survive: it resumes them
        )
    except UnpricedTasksError as error:
        _say(str(error))
        return SPEND_CAP
    if cap is not None and cap.price is None and not args.simulate:
        # A prompt in doubt is never followed (nor its task's end seen), so the cap does
        # not wait for it as for an earlier first task: it cannot learn the price from it.
        model = canonical_model(args.model)
        for name, count in ledger.in_doubt().items():
            if name is not None and canonical_model(name) == model:
                for _ in range(count):
                    cap.resumed(ended=False, in_doubt=True)
    return Money(_now(), folder, before, cap)


def _stopped(signum: signal.Signals) -> str:
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal_name(signum)}"


def _report(
    args: argparse.Namespace,
    run: Run,
    source: PromptSource,
    ledger: Ledger,
    seconds: float,
    money: Money,
) -> int:
    """Write the manifest and the gallery, say how the run ended; the exit status."""
    out = Path(args.out)
    unsent = None
    if run.fatal is not None:
        unsent = f"not submitted: the batch stopped ({run.fatal})"
    elif run.stopped_by is not None:
        unsent = f"not submitted: the run was {_stopped(run.stopped_by)}"
    elif run.ledger_error is not None:
        unsent = "not submitted: the run stopped (the ledger could not be written)"
    manifest = out / "manifest.jsonl"
    counts = money.counts = Counts(download=not args.no_download)
    entries = (Entry.of(row, ledger.get(row.key), unsent_reason=unsent) for row in source.rows())
    written = False
    try:
        write_manifest(counts.counting(entries), manifest)
        write_gallery(manifest, out / "index.html", notes=[money.note()])
        written = True
    except OSError as error:
        _say(f"cannot write to {out}: {error}")
    if written and isinstance(run.fatal, APIUnreachableError):
        # One sentence: nothing left the machine, so there is nothing else to report.
        _say(_explain(run.fatal))
        return USAGE
    if written and not args.quiet:
        _say(money.sentence())
        _summarize(run, counts, out, seconds, simulate=args.simulate)
        _list_failures(manifest)
    # Said even with --quiet: each may have cost money, and only here is it said.
    _list_in_doubt(run)
    if run.fatal is not None:
        _say(_explain(run.fatal, args.model))  # it says why nothing more was made
    if run.ledger_error is not None:
        _list_unrecorded(run, out)
        return LEDGER
    if not written:
        return SOME_FAILED
    if run.stopped_by is not None:
        return 128 + run.stopped_by
    if isinstance(run.fatal, SpendCapReachedError):
        return SPEND_CAP
    if run.fatal is not None:
        return FATAL
    return OK if counts.made == counts.total else SOME_FAILED


class Counts:
    """What the manifest says of the prompts, counted from its lines as they are written:
    the summary on the terminal is made of these, never of the run's progress counts."""

    #: The summary's words for the manifest's statuses, in the order it says them.
    KINDS: Final = ("failed", "unknown", "pending", "not downloaded", "not submitted")

    def __init__(self, *, download: bool) -> None:
        self.download = download
        self.total = 0
        self.made = 0
        self.others: Counter[str] = Counter()

    def counting(self, entries: Iterable[Entry]) -> Iterator[Entry]:
        """``entries``, each counted as it passes."""
        for entry in entries:
            self.total += 1
            kind = self.kind(entry)
            if kind == "made":
                self.made += 1
            else:
                self.others[kind] += 1
            yield entry

    def kind(self, entry: Entry) -> str:
        """``made`` or one of :attr:`KINDS`."""
        if entry.file is not None:
            return "made"
        if entry.status == "succeeded":
            if entry.error:  # its download failed
                return "failed"
            return "not downloaded" if self.download else "made"
        if entry.status in FAILED_STATUSES:
            return "failed"
        return entry.status.replace("_", " ")

    def __getitem__(self, kind: str) -> int:
        return self.made if kind == "made" else self.others[kind]


def _summarize(
    run: Run, counts: Counts, out: Path, seconds: float, *, simulate: bool = False
) -> None:
    made = ", ".join(
        [f"{counts.made} of {counts.total} clips made"]
        + [f"{counts[kind]} {kind}" for kind in Counts.KINDS if counts[kind]]
    )
    _say(f"{made} in {format_duration(seconds)}; see {out / 'index.html'}")
    if run.stopped_by is not None and simulate:
        _say(
            f"{_stopped(run.stopped_by)}: {counts['pending']} task(s) were still being made "
            f"by this run's simulator, which ended with it, and {counts['not submitted']} "
            "prompt(s) were not submitted; run the same command again to make them (each "
            "--simulate run starts a new simulator)"
        )
    elif run.stopped_by is not None:
        _say(
            f"{_stopped(run.stopped_by)}: {counts['pending']} task(s) still being made at "
            f"Novita (their ids are in the ledger) and {counts['not submitted']} prompt(s) "
            "not submitted; run the same command again to resume (no prompt with a task "
            "is submitted again)"
        )
    if counts["unknown"] and simulate:
        _say(
            f"{counts['unknown']} prompt(s) are unknown: the run stopped while their submits "
            "were in flight; the next --simulate run sends them again (nothing was billed)"
        )
    elif counts["unknown"]:
        _say(
            f"{counts['unknown']} prompt(s) are unknown: a run stopped while their submits were "
            "in flight, so Novita may have made (and billed) their tasks; check your dashboard, "
            "then run again with --resubmit-unknown to send them again"
        )


def _shown(prompt: str) -> str:
    """A prompt on one short line."""
    return repr(prompt if len(prompt) <= 40 else prompt[:39] + "…")


def _list_in_doubt(run: Run) -> None:
    """The prompts whose POSTs this run left on the wire at its stop."""
    if not run.in_doubt:
        return
    given_up = f", given up: {run.cut_reason}" if run.cut_reason else ""
    _say(
        f"in doubt: {len(run.in_doubt)} submit(s) were on the wire when the run stopped"
        f"{given_up}; Novita may have made (and billed) their tasks (unknown in the ledger):"
    )
    for row in run.in_doubt:
        _line(f"  #{row.index} {_shown(row.request.prompt)}")


def _list_unrecorded(run: Run, out: Path) -> None:
    """The ledger failed: say so, and print every task id it could not record as a
    ``novita-video wait`` command line (the prompt in a shell comment)."""
    path = out / ".novita" / "ledger.sqlite"
    _say(f"cannot write the ledger {path} ({run.ledger_error}); the run stopped")
    if not run.unrecorded:
        _say("every task id Novita gave is in the ledger; free some space, then run again")
        return
    _say(
        f"{len(run.unrecorded)} task(s) Novita made (and billed) are not in the ledger, and "
        "a later run would not know them: wait for each, and download its clip, with"
    )
    for row, task_id in run.unrecorded:
        _line(
            f"novita-video wait {shlex.quote(task_id)} --out {shlex.quote(str(out))}"
            f"  # prompt #{row.index}: {_shown(row.request.prompt)}"
        )


#: Failed prompts listed by name at the end of a run; the manifest has the rest.
FAILURES_SHOWN: Final = 5


def _list_failures(manifest: Path) -> None:
    failed = failures(manifest)
    shown = list(itertools.islice(failed, FAILURES_SHOWN))
    if not shown:
        return
    _say("failed:")
    for entry in shown:
        _line(f"  #{entry.index} {_shown(entry.prompt)}: {entry.error or entry.status}")
    more = sum(1 for _ in failed)
    if more:
        _line(f"  and {more} more, see {manifest}")


#: A task's status in the manifest's words (``succeeded``, not Novita's ``SUCCEED``); a
#: task not final is ``queued`` or ``processing`` at Novita (``pending`` in a manifest).
STATUS_WORDS: Final = {
    TaskStatus.QUEUED: "queued",
    TaskStatus.PROCESSING: "processing",
    TaskStatus.SUCCEED: "succeeded",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
    TaskStatus.UNKNOWN: "unknown",
}


def _status_word(result: TaskResult) -> str:
    return STATUS_WORDS.get(result.status, result.status.name.lower())


def _result_json(result: TaskResult) -> dict[str, Any]:
    return {
        "task_id": result.task_id,
        "status": _status_word(result),
        "progress": result.progress,
        "eta": result.eta,
        "reason": result.reason or None,
        "video_url": result.video_url,
    }


def _describe(result: TaskResult) -> str:
    text = f"{result.task_id}: {_status_word(result)}"
    if not result.is_final:
        eta = f", about {format_duration(result.eta)} left" if result.eta else ""
        text += f" ({result.progress}%{eta})"
    if result.reason:
        text += f": {result.reason}"
    return text


#: Why a task id is not found by ``status --simulate`` / ``wait --simulate``.
_SIMULATED_IDS: Final = (
    "task ids from `batch --simulate` cannot be found this way: each such run has a "
    "simulator of its own, which ended with it"
)


def _client_errors(error: NovitaError, *, simulate: bool = False) -> int:
    if isinstance(error, NotFoundError):
        where = f"the simulator at {SIMULATOR_URL} has" if simulate else "Novita has"
        why = f"; {_SIMULATED_IDS}" if simulate else ""
        _say(f"no such task: {where} no task of that id ({error}){why}")
        return SOME_FAILED
    if isinstance(error, APIUnreachableError):
        if simulate:
            _say(
                f"nothing answers at {SIMULATOR_URL}: --simulate asks a simulator started "
                "with `novita-video simulate` (in another terminal) and its tasks; "
                f"{_SIMULATED_IDS}"
            )
        else:
            _say(_explain(error))
        return USAGE
    if error.dooms_batch:
        _say(_explain(error))
        return FATAL
    _say(str(error))
    return SOME_FAILED


#: Where ``novita-video simulate`` serves by default, and the key it accepts.
SIMULATOR_URL: Final = "http://127.0.0.1:8000"
SIMULATOR_KEY: Final = "sk-simulated"


def _one_task_client(args: argparse.Namespace) -> Client | None:
    """The client for ``status`` and ``wait``, or ``None`` having said how to set a key."""
    key = SIMULATOR_KEY if args.simulate else _api_key()
    if key is None:
        _say(f"{NO_KEY}, or add --simulate to ask a running `novita-video simulate`")
        return None
    try:
        return Client(key, base_url=SIMULATOR_URL if args.simulate else None)
    except InvalidRequestError as error:  # NOVITA_BASE_URL is not a URL
        _say(str(error))
        return None


def _status(args: argparse.Namespace) -> int:
    if (opened := _one_task_client(args)) is None:
        return USAGE

    async def check() -> int:
        try:
            async with opened as client:
                result = await client.get_result(args.task_id)
        except InvalidRequestError as error:
            _say(str(error))
            return USAGE
        except NovitaError as error:
            return _client_errors(error, simulate=args.simulate)
        print(json.dumps(_result_json(result)) if args.json else _describe(result))
        if result.video_url and not args.json:
            print(result.video_url)
        return OK

    return anyio.run(check)


def _wait(args: argparse.Namespace) -> int:
    if (opened := _one_task_client(args)) is None:
        return USAGE

    async def wait() -> int:
        try:
            async with opened as client:
                result = await client.wait(args.task_id, timeout=args.timeout)
                path = None
                if result.ok and args.out is not None:
                    name = f"{slugify(args.task_id, limit=64)}.mp4"
                    path = await client.download(result, Path(args.out) / name)
        except InvalidRequestError as error:
            _say(str(error))
            return USAGE
        except TaskTimeoutError as error:
            _say(str(error))
            return SOME_FAILED
        except NovitaError as error:
            return _client_errors(error, simulate=args.simulate)
        except OSError as error:
            _say(f"cannot write the clip: {error}")
            return SOME_FAILED
        if args.json:
            body = _result_json(result) | {"file": None if path is None else str(path)}
            print(json.dumps(body))
        else:
            print(_describe(result))
            if path is not None:
                print(path)
        return OK if result.ok else SOME_FAILED

    return anyio.run(wait)


def _models(args: argparse.Namespace) -> int:
    key = SIMULATOR_KEY if args.simulate else _api_key()
    if key is None:
        _say(f"{NO_KEY}, or add --simulate to list the built-in simulator's models")
        return USAGE

    async def fetch() -> tuple[CatalogModel, ...] | int:
        try:
            async with _catalog_client(args, key) as client:
                return await client.models()
        except InvalidRequestError as error:
            _say(str(error))
            return USAGE
        except NovitaError as error:
            _say(f"cannot read Novita's catalogue of models: {error}")
            return _client_errors(error) if error.dooms_batch else SOME_FAILED

    found = anyio.run(fetch)
    if isinstance(found, int):
        return found
    models = found
    if args.name is not None:
        name = args.name
        chosen = [model for model in models if model.name == name]
        if not chosen:
            if name in MODELS:
                _say(
                    f"{name} is one of this SDK's own models, not in the catalogue: its "
                    "fields are in docs/models.md (and batch --help)"
                )
                return OK
            _say(f"no model {name!r} in the catalogue; `novita-video models` lists them")
            return USAGE
        models = tuple(chosen)
    if args.json:
        shown = [_model_json(model) for model in models]
        print(json.dumps(shown[0] if args.name is not None else {"models": shown}, indent=1))
    elif args.name is not None:
        _print_model(models[0])
    else:
        _print_catalog(models)
    return OK


def _route(name: str) -> str:
    typed = ALIASES.get(name)
    return f"POST /v3/async/{typed}" if typed else f"POST {UNIFIED_PATH}"


def _model_json(model: CatalogModel) -> dict[str, Any]:
    return {
        "model": model.name,
        "description": model.description,
        "route": _route(model.name),
        "fields": [attrs.asdict(field) for field in model.fields],
    }


#: Characters of a description in the catalogue's table.
DESCRIPTION_SHOWN: Final = 60


def _print_catalog(models: Sequence[CatalogModel]) -> None:
    width = max([len("MODEL"), *(len(model.name) for model in models)])
    print(f"{'MODEL':<{width}}  DESCRIPTION / FIELDS (* required)")
    for model in models:
        text = model.description or "(no description)"
        if len(text) > DESCRIPTION_SHOWN:
            text = text[: DESCRIPTION_SHOWN - 1] + "…"
        fields = ", ".join(f"{f.name}{'*' if f.required else ''}" for f in model.fields)
        print(f"{model.name:<{width}}  {text}")
        print(f"{'':<{width}}    {fields or '(no fields listed)'}")
    own = ", ".join(sorted(MODELS))
    aliases = ", ".join(f"{name} = {typed}" for name, typed in ALIASES.items())
    print(
        f"\n{len(models)} model(s). This SDK's own models go their typed routes: {own} "
        f"({aliases}). `novita-video models NAME` shows one model's fields."
    )


def _print_model(model: CatalogModel) -> None:
    print(f"{model.name}: {model.description or '(no description)'}")
    print(f"sent as {_route(model.name)}")
    for field in model.fields:
        mark = " (required)" if field.required else ""
        print(f"  {field.name}{mark}: {field.allows()}")
        if field.description:
            print(f"      {field.description}")


def _simulate(argv: Sequence[str]) -> int:
    # The simulator's own command, knobs, defaults and output: one way to start it.
    from ..testing.__main__ import main as serve  # the server side: only when asked

    return serve(argv, prog="novita-video simulate")


# The parser.


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


_MODEL_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _model_name(text: str) -> str:
    if not _MODEL_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a model name: {text!r}")
    return text


def _max_spend(text: str) -> Decimal | str:
    if text.strip().lower() == "none":
        return "none"
    try:
        value = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        value = Decimal("NaN")
    if not (value.is_finite() and value >= 0):
        raise argparse.ArgumentTypeError(
            f"must be an amount of US dollars >= 0 (or none), not {text!r}"
        )
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text!r}")
    return value


_SIMULATOR_HELP: Final = (
    f"tasks take {SIMULATED_TASK_SECONDS[0]:g} to {SIMULATED_TASK_SECONDS[1]:g} s, at most "
    f"{SIMULATED_SUBMITS_PER_MINUTE} submits a minute, key sk-simulated"
)


def build_parser() -> argparse.ArgumentParser:
    """The ``novita-video`` parser; each subcommand sets ``command`` to its function."""
    parser = argparse.ArgumentParser(
        prog="novita-video",
        description=(
            "Make video clips with Novita AI's API, many prompts at once: Minimax Video-01 "
            "and Hailuo-02, Kling v1.6 and Wan 2.1 by their own endpoints, and every other "
            "model of Novita's catalogue (Kling 3.0, Hailuo 2.3, Seedance, Wan 2.6, Vidu, "
            "...: see `novita-video models`)."
        ),
        epilog=(
            "The API key comes from NOVITA_API_KEY, the API from NOVITA_BASE_URL "
            f"(default {DEFAULT_BASE_URL}). Exit codes: 0 every clip made, 1 some prompts "
            "failed (or a file could not be written), 2 usage or input error, 3 stopped by "
            "a fatal API answer (bad key, no balance, no such model at this URL), 4 the "
            "ledger could not be written (the task ids it could not record are printed on "
            "stderr), 5 stopped by the spend cap (--max-spend), 130 / 143 / 129 stopped by "
            "SIGINT / SIGTERM / SIGHUP."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    batch = commands.add_parser(
        "batch",
        help="make a clip for every prompt of a file",
        description=(
            "Make a clip for every prompt of PROMPTS into DIR: DIR/<slug>-<hash>.mp4, "
            "DIR/manifest.jsonl and DIR/index.html (a gallery). The whole file is checked "
            "before anything is sent. Run the same command again after a crash or Ctrl-C "
            "to resume: DIR/.novita/ledger.sqlite remembers every task, so no prompt with "
            "a task is submitted twice."
        ),
    )
    batch.set_defaults(command=_batch)
    batch.add_argument(
        "prompts",
        metavar="PROMPTS",
        help=(
            ".txt (a prompt a line; blank lines and # comments skipped), .jsonl (objects "
            "with the model's fields and an optional id) or .csv (a prompt column, any of "
            "the model's other fields and id; other columns ignored); - reads stdin. "
            + "; ".join(
                f"{model}: {', '.join(model_fields(model)[:-1])}" for model in sorted(MODELS)
            )
        ),
    )
    batch.add_argument("--out", required=True, metavar="DIR", help="where the clips go")
    batch.add_argument(
        "--model",
        type=_model_name,
        default=VideoRequest.endpoint,
        metavar="NAME",
        help=(
            f"the model every prompt is made with: one of this SDK's ({', '.join(sorted(MODELS))}) "
            "or any model of Novita's catalogue (`novita-video models` lists them; their "
            "lines are checked against the model's JSON Schema, which needs pip install "
            "'novita-video[catalog]'); hailuo-02 is minimax-hailuo-02 (default: %(default)s)"
        ),
    )
    batch.add_argument(
        "--format",
        choices=sorted(set(FORMATS.values())),
        help="the format of PROMPTS, if its name does not tell (stdin: txt)",
    )
    batch.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_BATCH.concurrency,
        metavar="N",
        help="submit requests in flight at once (default: %(default)s)",
    )
    batch.add_argument(
        "--rpm",
        type=_positive_float,
        metavar="N",
        help=(
            f"submits per minute (default: {NOVITA_SUBMITS_PER_MINUTE:g}, Novita's limit for "
            f"its video models; {SIMULATED_SUBMITS_PER_MINUTE} with --simulate)"
        ),
    )
    batch.add_argument(
        "--task-timeout",
        type=_positive_float,
        default=DEFAULT_BATCH.task_timeout,
        metavar="SECONDS",
        help="give up waiting for a task after this long (default: %(default)g)",
    )
    batch.add_argument(
        "--redis-url",
        metavar="URL",
        help=(
            "share the key's limits with every other run or app that names the same Redis "
            "(redis://host:6379/0, unix:///path; default: $NOVITA_REDIS_URL; needs "
            "pip install 'novita-video[redis]')"
        ),
    )
    batch.add_argument(
        "--stop-timeout",
        type=_positive_float,
        default=STOP_TIMEOUT,
        metavar="SECONDS",
        help=(
            "on SIGINT, SIGTERM or SIGHUP, wait this long for the submits on the wire to "
            "answer, then give them up as unknown (default: %(default)g, inside docker "
            "stop's 10 s)"
        ),
    )
    batch.add_argument(
        "--max-spend",
        type=_max_spend,
        metavar="USD",
        help=(
            "stop submitting once the account's balance has fallen by USD dollars since this "
            "folder's first run (kept in DIR/.novita/spend.json: a rerun keeps the cap and "
            "counts what earlier runs spent; --max-spend again raises or lowers it, "
            "--max-spend none lifts it). The balance is read before each submit, so at "
            "most the submits already in flight (one per --concurrency slot) pass the cap; "
            "tasks not yet seen charged, this run's and those earlier runs left running, "
            "count at the model's price, learned from the balance by sending one task "
            "alone and waiting for it to end (or for the one an earlier run left running; "
            "a price never seen is not taken as free: the run stops). The balance "
            "is account-wide: other use of the account makes the run stop earlier, never "
            "later. Unsent prompts stay not_submitted; exit code 5"
        ),
    )
    batch.add_argument(
        "--no-download", action="store_true", help="record the tasks, do not fetch the clips"
    )
    batch.add_argument(
        "--simulate",
        action="store_true",
        help=f"use the built-in simulator, no key needed ({_SIMULATOR_HELP})",
    )
    batch.add_argument(
        "--resubmit-unknown",
        action="store_true",
        help=(
            "send again the prompts whose submit was in flight when a run stopped "
            "(Novita may have made, and billed, their tasks already)"
        ),
    )
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        help=(
            "send again the prompts whose task failed (moderation, an error at Novita): a "
            "new task each, paid for again; says how many first. Never the unknown ones "
            "(see --resubmit-unknown)"
        ),
    )
    batch.add_argument(
        "--json",
        action="store_true",
        help=(
            "print one JSON line per finished prompt on stdout, and a last line "
            '{"run": {...}} with the balance before and after and what was spent'
        ),
    )
    batch.add_argument("--quiet", action="store_true", help="show no progress")

    simulated = (
        "ask the simulator that `novita-video simulate` serves (http://127.0.0.1:8000, "
        "key sk-simulated) instead of Novita"
    )
    task_id_help = "the task id a submit returned (batch runs list them in DIR/manifest.jsonl)"
    status = commands.add_parser(
        "status",
        help="show where one task stands",
        description=(
            "Ask Novita once where one task stands: queued, processing (with progress and "
            "the time left), succeeded (with its video URL, valid for an hour) or failed "
            "(with the reason)."
        ),
    )
    status.set_defaults(command=_status)
    status.add_argument("task_id", metavar="TASK_ID", help=task_id_help)
    status.add_argument("--json", action="store_true", help="print the answer as JSON")
    status.add_argument("--simulate", action="store_true", help=simulated)

    wait = commands.add_parser(
        "wait",
        help="wait for one task, and download its clip",
        description=(
            "Wait until one task ends (checking it as the SDK's poller does), print how it "
            "ended, and with --out download its clip. Exit 0 when the clip was made."
        ),
    )
    wait.set_defaults(command=_wait)
    wait.add_argument("task_id", metavar="TASK_ID", help=task_id_help)
    wait.add_argument("--out", metavar="DIR", help="download the clip to DIR/<task id>.mp4")
    wait.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_BATCH.task_timeout,
        metavar="SECONDS",
        help="give up after this long (default: %(default)g)",
    )
    wait.add_argument("--json", action="store_true", help="print the answer as JSON")
    wait.add_argument("--simulate", action="store_true", help=simulated)

    models = commands.add_parser(
        "models",
        help="list the video models of Novita's catalogue, and their fields",
        description=(
            "Print the video models the key's account can use, from Novita's catalogue "
            "(GET /v3/admin/video-unify-api/config): each one's name, description and "
            "fields (* required). With NAME, one model's fields in full: type, what is "
            "allowed, default. Any of them works with batch --model NAME."
        ),
    )
    models.set_defaults(command=_models)
    models.add_argument("name", nargs="?", metavar="NAME", help="show this model's fields")
    models.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    models.add_argument(
        "--simulate",
        action="store_true",
        help="list the built-in simulator's catalogue (no key needed)",
    )

    # Parsed by the simulator's own parser (see run_command): listed here for --help.
    commands.add_parser(
        "simulate",
        help="serve the simulator until Ctrl-C (as python -m novita_video.testing; --help)",
        add_help=False,
    )
    return parser


def run_command(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run its command; the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["simulate"]:
        return _simulate(argv[1:])
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)
