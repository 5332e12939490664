"""The command line: its parser, its four commands, and what each exit code means.

Exit codes: 0 every clip was made, 1 some prompts failed, 2 a usage or input error
(nothing was sent), 3 a fatal answer from the API stopped the batch (a bad key, no
balance), 130 interrupted. A user's mistake is one sentence on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from .._client import DEFAULT_BASE_URL, Client, check_base_url
from .._errors import (
    APIUnreachableError,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidRequestError,
    NotFoundError,
    NovitaError,
    TaskTimeoutError,
)
from .._models import TaskResult
from .._requests import MODELS, VideoRequest
from .._version import __version__
from ._inputs import FORMATS, InputError, PromptSource, model_fields
from ._ledger import Ledger, LedgerError
from ._outputs import Entry, remove_leftovers, slugify, write_gallery, write_manifest
from ._progress import Tally, format_duration, make_reporter
from ._run import Run, Settings

if TYPE_CHECKING:
    from ..testing import FakeNovita

__all__ = ["build_parser", "run_command"]

OK: Final = 0
SOME_FAILED: Final = 1
USAGE: Final = 2
FATAL: Final = 3
INTERRUPTED: Final = 130

#: The built-in simulator (``batch --simulate`` and ``simulate``): quick tasks, a roomy limit.
SIMULATED_TASK_SECONDS: Final = (3.0, 8.0)
SIMULATED_SUBMITS_PER_MINUTE: Final = 120
#: Novita's default submit limit for its video models (Minimax, Kling, Wan: 20 a minute).
NOVITA_SUBMITS_PER_MINUTE: Final = 20.0

NO_KEY: Final = (
    "no API key: set NOVITA_API_KEY to your Novita key (https://novita.ai/settings/key-management)"
)


def _base_url() -> str:
    return os.environ.get("NOVITA_BASE_URL") or DEFAULT_BASE_URL


def _say(message: str) -> None:
    print(f"novita-video: {message}", file=sys.stderr, flush=True)


def _explain(error: NovitaError) -> str:
    """A fatal error in a sentence that says what to do."""
    if isinstance(error, InsufficientBalanceError):
        return (
            f"Novita says the balance is too low ({error}); top up, then run the same "
            "command again to continue"
        )
    if isinstance(error, AuthenticationError):
        return f"Novita refused the API key ({error}); check NOVITA_API_KEY"
    if isinstance(error, APIUnreachableError):
        return f"{error}; check NOVITA_BASE_URL (it is {_base_url()})"
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
    try:
        source = PromptSource(args.prompts, args.format, args.model)
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
        except (LedgerError, OSError) as error:
            _say(str(error))
            return USAGE
        with contextlib.closing(ledger):
            remove_leftovers(out)
            try:
                return anyio.run(_run_batch, args, key, source, ledger, validation.count)
            except Exception as error:
                # A full disk or a lost output directory: the ledger is still consistent.
                cause = _innermost(error)
                if not isinstance(cause, OSError | sqlite3.Error):
                    raise
                _say(f"cannot write to {out}: {cause}")
                return SOME_FAILED


def _innermost(error: BaseException) -> BaseException:
    """The error inside task groups' exception groups, when there is only one."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def _run_batch(
    args: argparse.Namespace, key: str | None, source: PromptSource, ledger: Ledger, total: int
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
    )
    tally = Tally(total)
    async with contextlib.AsyncExitStack() as stack:
        base_url = None
        if args.simulate:
            fake = await stack.enter_async_context(_simulator())
            key, base_url = fake.api_key, fake.url
        try:
            client = Client(
                key,
                base_url=base_url,
                concurrency=args.concurrency,
                submit_rpm=rpm,
                task_timeout=args.task_timeout,
            )
        except InvalidRequestError as error:
            _say(str(error))
            return USAGE
        await stack.enter_async_context(client)
        run = Run(client, source, ledger, settings, tally, make_reporter(quiet=args.quiet), emit)
        await run.run()
    if run.input_error is not None:
        _say(f"{run.input_error} (the file changed while it was being read)")
        return USAGE
    unsent = None
    if run.fatal is not None:
        unsent = f"not submitted: the batch stopped ({run.fatal})"
    elif run.interrupted:
        unsent = "not submitted: the run was interrupted"
    manifest = out / "manifest.jsonl"
    write_manifest(
        (Entry.of(row, ledger.get(row.key), unsent_reason=unsent) for row in source.rows()),
        manifest,
    )
    write_gallery(manifest, out / "index.html")
    if isinstance(run.fatal, APIUnreachableError):
        # One sentence: nothing left the machine, so there is nothing else to report.
        _say(_explain(run.fatal))
        return USAGE
    if not args.quiet:
        _summarize(run, tally, out, time.monotonic() - started)
    if run.interrupted:
        return INTERRUPTED
    if run.fatal is not None:
        _say(_explain(run.fatal))  # even with --quiet: it says why nothing more was made
        return FATAL
    return OK if tally.done == tally.total else SOME_FAILED


def _summarize(run: Run, tally: Tally, out: Path, seconds: float) -> None:
    made = f"{tally.done} of {tally.total} clips made"
    if tally.failed:
        made += f", {tally.failed} failed"
    if tally.unknown:
        made += f", {tally.unknown} unknown"
    _say(f"{made} in {format_duration(seconds)}; see {out / 'index.html'}")
    if run.interrupted:
        running = tally.processing + tally.downloading
        _say(
            f"interrupted: {running} task(s) still being made at Novita (their ids are in the "
            f"ledger) and {tally.queued} prompt(s) not submitted; run the same command again "
            "to resume (no prompt with a task is submitted again)"
        )
    elif run.fatal is not None and tally.queued:
        _say(f"{tally.queued} prompt(s) were not submitted")
    if tally.unknown:
        _say(
            f"{tally.unknown} prompt(s) are unknown: a run stopped while their submits were in "
            "flight, so Novita may have made (and billed) their tasks; check your dashboard, "
            "then run again with --resubmit-unknown to send them again"
        )


def _result_json(result: TaskResult) -> dict[str, Any]:
    return {
        "task_id": result.task_id,
        "status": result.status.name.lower(),
        "progress": result.progress,
        "eta": result.eta,
        "reason": result.reason or None,
        "video_url": result.video_url,
    }


def _describe(result: TaskResult) -> str:
    text = f"{result.task_id}: {result.status.name.lower()}"
    if not result.is_final:
        eta = f", about {format_duration(result.eta)} left" if result.eta else ""
        text += f" ({result.progress}%{eta})"
    if result.reason:
        text += f": {result.reason}"
    return text


def _client_errors(error: NovitaError) -> int:
    if isinstance(error, NotFoundError):
        _say(f"no such task ({error})")
        return SOME_FAILED
    if isinstance(error, APIUnreachableError):
        _say(_explain(error))
        return USAGE
    if error.dooms_batch:
        _say(_explain(error))
        return FATAL
    _say(str(error))
    return SOME_FAILED


def _key_for_one_task() -> str | None:
    """The API key for ``status`` and ``wait``, or ``None`` having said how to set one."""
    key = _api_key()
    if key is None:
        _say(f"{NO_KEY}, or point NOVITA_BASE_URL at a simulator (novita-video simulate)")
    return key


def _status(args: argparse.Namespace) -> int:
    if (key := _key_for_one_task()) is None:
        return USAGE

    async def check() -> int:
        try:
            async with Client(key) as client:
                result = await client.get_result(args.task_id)
        except InvalidRequestError as error:
            _say(str(error))
            return USAGE
        except NovitaError as error:
            return _client_errors(error)
        print(json.dumps(_result_json(result)) if args.json else _describe(result))
        if result.video_url and not args.json:
            print(result.video_url)
        return OK

    return anyio.run(check)


def _wait(args: argparse.Namespace) -> int:
    if (key := _key_for_one_task()) is None:
        return USAGE

    async def wait() -> int:
        try:
            async with Client(key) as client:
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
            return _client_errors(error)
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


def _simulate(args: argparse.Namespace) -> int:
    async def serve() -> int:
        try:
            async with _simulator(args.port) as fake:
                print(f"Simulated Novita API on {fake.url} (key: {fake.api_key})")
                print(f"  export NOVITA_BASE_URL={fake.url} NOVITA_API_KEY={fake.api_key}")
                print("Ctrl-C stops it.", flush=True)
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
        except OSError as error:
            _say(f"cannot listen on port {args.port}: {error}")
            return SOME_FAILED
        return OK

    return anyio.run(serve)


# The parser.


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0..65535, not {text!r}")
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
            "Make video clips with Novita AI's API (Minimax Video-01 and Hailuo-02, Kling "
            "v1.6 image-to-video), many prompts at once."
        ),
        epilog=(
            "The API key comes from NOVITA_API_KEY, the API from NOVITA_BASE_URL "
            f"(default {DEFAULT_BASE_URL}). Exit codes: 0 every clip made, 1 some prompts "
            "failed, 2 usage or input error, 3 stopped by a fatal API answer (bad key, no "
            "balance), 130 interrupted."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    batch = commands.add_parser(
        "batch",
        help="make a clip for every prompt of a file",
        description=(
            "Make a clip for every prompt of PROMPTS into DIR: DIR/<index>-<slug>.mp4, "
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
        choices=sorted(MODELS),
        default=VideoRequest.endpoint,
        help="the model every prompt is made with (default: %(default)s)",
    )
    batch.add_argument(
        "--format",
        choices=sorted(set(FORMATS.values())),
        help="the format of PROMPTS, if its name does not tell (stdin: txt)",
    )
    batch.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
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
        default=1800.0,
        metavar="SECONDS",
        help="give up waiting for a task after this long (default: %(default)g)",
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
        "--json", action="store_true", help="print one JSON line per finished prompt on stdout"
    )
    batch.add_argument("--quiet", action="store_true", help="show no progress")

    status = commands.add_parser("status", help="show where one task stands")
    status.set_defaults(command=_status)
    status.add_argument("task_id", metavar="TASK_ID")
    status.add_argument("--json", action="store_true", help="print the answer as JSON")

    wait = commands.add_parser("wait", help="wait for one task, and download its clip")
    wait.set_defaults(command=_wait)
    wait.add_argument("task_id", metavar="TASK_ID")
    wait.add_argument("--out", metavar="DIR", help="download the clip to DIR/<task id>.mp4")
    wait.add_argument(
        "--timeout",
        type=_positive_float,
        default=1800.0,
        metavar="SECONDS",
        help="give up after this long (default: %(default)g)",
    )
    wait.add_argument("--json", action="store_true", help="print the answer as JSON")

    simulate = commands.add_parser(
        "simulate",
        help="serve the built-in simulator until Ctrl-C",
        description=f"Serve a simulated Novita API on 127.0.0.1 ({_SIMULATOR_HELP}).",
    )
    simulate.set_defaults(command=_simulate)
    simulate.add_argument(
        "--port", type=_port, default=8000, help="0 picks a free one (default: %(default)s)"
    )
    return parser


def run_command(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run its command; the exit status."""
    args = build_parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    return command(args)
