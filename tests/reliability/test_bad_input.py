"""Bad input, one table: each case gets a clear error naming what is wrong, before
anything is sent where that is possible (the simulator counts zero submits), and the
command never shows a traceback.

Layers, in the order a prompt meets them:

* ``prompt``, ``image_url``: a value given to the SDK, through ``client.submit`` (an
  :class:`InvalidRequestError` naming the field) and through ``client.generate`` (the
  same error as that item's outcome). Boundary values that are valid (1 and 2000
  characters, unicode) must arrive at the simulator exactly as given.
* ``client``: settings given to :class:`Client`.
* ``file``: an input file for ``novita-video batch`` (exit 2, ``file:line: why`` on
  stderr); the command's own peak memory (``wait4``) must stay far below the 100 MB
  file it streams.
* ``env``: the command's environment (key, base URL).
* ``submit answer``, ``result answer``, ``poll answer``: a scripted server answering
  in a wrong shape; the client retries nothing (``max_attempts=1``), so the first
  answer decides. A wait retries what may mend until its own timeout, whatever
  ``max_attempts`` says: its :class:`TaskTimeoutError` then names the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from novita_video import (
    APIStatusError,
    BadRequestError,
    Client,
    InvalidRequestError,
    MissingAPIKeyError,
    NotFoundError,
    ProtocolError,
    RetryPolicy,
    ServerError,
    SubmissionUnknownError,
    TaskTimeoutError,
)
from tests.cli.cli_support import cli_env, prompts_file, simulator
from tests.reliability.reliability_support import run_measured
from tests.support import scripted_server, simulated

pytestmark = [pytest.mark.anyio]
#: The layers a row checks by running the command (slow: a subprocess each); the others
#: go through the SDK in milliseconds and belong in the quick tier.
COMMAND_LAYERS = ("file", "env")

SUBMIT = "/v3/async/minimax-video-01"
RESULT = "/v3/async/task-result"
#: The command's floor is about 40 MB (Python, aiohttp, anyio, attrs, cattrs imported).
PEAK_RSS_MB = 64
DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON, nested deeper than Python's recursion limit


BIG = 100 * 1024 * 1024
BIG_LINE = "a calm lake at dawn, mist over the water, " * 45 + "\n"  # 1891 characters
BIG_LINES = BIG // len(BIG_LINE)


def big_file(path: Path, *, lines: bool) -> None:
    """100 MB of prompts, the last one too long: it must be read to its end, in pieces."""
    with path.open("w", encoding="utf-8") as file:
        if not lines:
            file.write("x" * BIG)
            return
        for _ in range(BIG_LINES):
            file.write(BIG_LINE)
        file.write("y" * 2001 + "\n")


@attrs.frozen
class Case:
    """One row of the table: what goes in at which layer, and what must come out.

    ``says`` is a part of the error message; ``None`` means the input is valid and must
    arrive at the simulator as given. ``error`` is the exception class expected.
    """

    layer: str
    value: Any
    says: str | None = None
    error: type[Exception] = InvalidRequestError
    file: str = ""
    writer: Callable[[Path], None] | None = None


def case(
    id: str,
    layer: str,
    value: Any,
    says: str | None = None,
    error: type[Exception] = InvalidRequestError,
    *,
    file: str = "",
    writer: Callable[[Path], None] | None = None,
    bug: str = "",
) -> Any:
    """A row; ``bug`` marks a known bug (strict xfail: it fails until fixed)."""
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    if layer in COMMAND_LAYERS:
        marks += [pytest.mark.slow, pytest.mark.subprocess]
    return pytest.param(Case(layer, value, says, error, file, writer), id=id, marks=marks)


UNKNOWN = SubmissionUnknownError
SHAPE = "not the documented shape"
SUBMIT_ANSWER, RESULT_ANSWER = "submit answer", "result answer"
# A video that is not an object (a ttl that is not a number costs nothing: an hour is assumed).
SUCCEED_VIDEO_WORD = {"task": {"task_id": "t", "status": "TASK_STATUS_SUCCEED"}, "videos": ["x"]}
NOT_FOUND = {"code": 404, "reason": "TASK_NOT_FOUND", "message": "no such task"}
OTHER_TASK = {"task": {"task_id": "other", "status": "TASK_STATUS_SUCCEED"}}

CASES = [
    # Prompts, through the SDK (None: valid, must arrive as given).
    case("prompt-0-chars", "prompt", "", "must not be empty"),
    case("prompt-1-char", "prompt", "x"),
    case("prompt-2000-chars", "prompt", "x" * 2000),
    case("prompt-2001-chars", "prompt", "x" * 2001, "this one has 2001"),
    case("prompt-2000-emoji", "prompt", "🐼" * 2000),
    case("prompt-2001-emoji", "prompt", "🐼" * 2001, "this one has 2001"),
    case("prompt-unicode", "prompt", "Ein Bär läuft, 一只熊猫\ttab\nnewline"),
    case("prompt-blank", "prompt", " \n\t\u3000", "only white space"),
    case("prompt-nul", "prompt", "a\x00b", "NUL"),
    case("prompt-int", "prompt", 42, "not int"),
    case("prompt-none", "prompt", None, "not NoneType"),
    case("prompt-bytes", "prompt", b"a cat", "not bytes"),
    case("prompt-lone-surrogate", "prompt", "a cat \ud800", "surrogate"),
    # Image URLs, through the SDK.
    case("url-relative", "image_url", "images/cat.png", "its scheme is none"),
    case("url-file", "image_url", "file:///etc/passwd", "'file'"),
    case("url-ftp", "image_url", "ftp://example.com/cat.png", "'ftp'"),
    case("url-no-host", "image_url", "https://", "with a host"),
    case("url-space", "image_url", "https://a b.com/x.png", "white space"),
    case("url-port", "image_url", "https://e.com:99999/x.png", "not a valid URL"),
    case("url-huge", "image_url", "https://e.com/" + "a" * 9000, "at most 8192 characters"),
    case("url-int", "image_url", 7, "not int"),
    case("url-unicode", "image_url", "https://例え.jp/猫.png"),
    # The client's settings.
    case("key-blank", "client", {"api_key": "  "}, "no Novita API key", MissingAPIKeyError),
    case("key-newline", "client", {"api_key": "sk-a\n"}, "stray newline"),
    case("base-url-no-scheme", "client", {"base_url": "api.novita.ai"}, "absolute http(s) URL"),
    case("base-url-query", "client", {"base_url": "https://api.novita.ai?x=1"}, "query"),
    # Input files of the command.
    case(
        "jsonl-bad-line", "file", b'{"prompt": "ok"}\n{"prompt": \n', "p.jsonl:2: not valid JSON",
        file="p.jsonl",
    ),
    case(
        "jsonl-not-object", "file", b'["a cat"]\n', "p.jsonl:1: must be a JSON object",
        file="p.jsonl",
    ),
    case(
        "jsonl-misspelt-field", "file", b'{"prompt": "a", "imageurl": "x"}\n',
        "p.jsonl:1: unknown field(s) imageurl", file="p.jsonl",
    ),
    case(
        "jsonl-prompt-int", "file", b'{"prompt": 42}\n', "p.jsonl:1: prompt: must be a str",
        file="p.jsonl",
    ),
    case(
        "jsonl-file-url", "file", b'{"prompt": "a", "image_url": "file:///etc/passwd"}\n',
        "p.jsonl:1: image_url: must be an absolute http(s) URL", file="p.jsonl",
    ),
    case(
        "jsonl-deeply-nested", "file", f'{{"prompt": {DEEP}}}\n'.encode(), "p.jsonl:1:",
        file="p.jsonl",
    ),
    case(
        "jsonl-lone-surrogate", "file", b'{"prompt": "a cat \\ud800"}\n', "p.jsonl:1: prompt:",
        file="p.jsonl",
    ),
    case(
        "csv-no-prompt-column", "file", b"text,notes\nhello,x\n",
        "p.csv:1: the header has no 'prompt' column", file="p.csv",
    ),
    case("txt-empty", "file", b"", "no prompts in", file="p.txt"),
    case("txt-blank", "file", b"# only a comment\n\n   \n", "no prompts in", file="p.txt"),
    case(
        "txt-latin-1", "file", "café au lait\n".encode("latin-1"), "p.txt:1: not UTF-8 text",
        file="p.txt",
    ),
    case(
        "txt-utf-16", "file", "a cat\n".encode("utf-16"), "p.txt:1: not UTF-8 text", file="p.txt"
    ),
    case("txt-nul", "file", b"a\x00b\n", "p.txt:1: prompt: must not contain NUL", file="p.txt"),
    case(
        "txt-100-mb", "file", None, f"p.txt:{BIG_LINES + 1}: prompt: must be at most 2000",
        file="p.txt", writer=lambda path: big_file(path, lines=True),
    ),
    case(
        "txt-100-mb-one-line", "file", None, "p.txt:1: ", file="p.txt",
        writer=lambda path: big_file(path, lines=False),
    ),
    # The command's environment ("{host}" is the simulator's host:port).
    case("env-no-key", "env", {"NOVITA_API_KEY": None}, "no API key"),
    case("env-blank-key", "env", {"NOVITA_API_KEY": " \t"}, "no API key"),
    case("env-key-space", "env", {"NOVITA_API_KEY": "sk-a b"}, "api_key: must be printable ASCII"),
    case(
        "env-base-url-no-scheme", "env", {"NOVITA_BASE_URL": "{host}"},
        "base_url: must be an absolute http(s) URL",
    ),
    # Answers of a wrong shape.
    case("submit-html-200", SUBMIT_ANSWER, ("raw", 200, "<html>OK</html>"), "not JSON", UNKNOWN),
    case("submit-id-int", SUBMIT_ANSWER, ("json", 200, {"task_id": 7}), SHAPE, UNKNOWN),
    case("submit-no-id", SUBMIT_ANSWER, ("json", 200, {"id": "t"}), SHAPE, UNKNOWN),
    case("submit-empty-id", SUBMIT_ANSWER, ("json", 200, {"task_id": ""}), "empty", UNKNOWN),
    case("submit-list", SUBMIT_ANSWER, ("json", 200, ["t"]), SHAPE, UNKNOWN),
    case(
        "submit-html-400", SUBMIT_ANSWER, ("raw", 400, "<html>Bad Request</html>"), "HTTP 400",
        BadRequestError,
    ),
    case("submit-deeply-nested", SUBMIT_ANSWER, ("raw", 200, DEEP), "nested too deeply", UNKNOWN),
    case("result-task-null", RESULT_ANSWER, ("json", 200, {"task": None}), SHAPE, ProtocolError),
    case(
        "result-no-status", RESULT_ANSWER, ("json", 200, {"task": {"task_id": "t"}}), "status",
        ProtocolError,
    ),
    case(
        "result-video-word", RESULT_ANSWER,
        ("json", 200, SUCCEED_VIDEO_WORD), "expected _WireVideo @ $.videos[0]", ProtocolError,
    ),
    case(
        "result-status-list", RESULT_ANSWER,
        ("json", 200, {"task": {"task_id": "t", "status": ["A"]}}), "status", ProtocolError,
    ),
    case("result-empty", RESULT_ANSWER, ("raw", 200, ""), "not JSON", ProtocolError),
    case("result-404", RESULT_ANSWER, ("json", 404, NOT_FOUND), "TASK_NOT_FOUND", NotFoundError),
    case(
        "result-html-502", RESULT_ANSWER, ("raw", 502, "<html>502 Bad Gateway</html>"), "HTTP 502",
        ServerError,
    ),
    case("result-redirect", RESULT_ANSWER, ("raw", 302, ""), "HTTP 302", APIStatusError),
    case(
        "result-deeply-nested", RESULT_ANSWER, ("raw", 200, DEEP), "nested too deeply",
        ProtocolError,
    ),
    case(
        "poll-other-task", "poll answer", ("json", 200, OTHER_TASK),
        "asked for task t, the answer is for other", ProtocolError,
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
async def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check = {
        "prompt": check_request,
        "image_url": check_request,
        "client": check_client,
        "file": check_command,
        "env": check_command,
        "submit answer": check_answer,
        "result answer": check_answer,
        "poll answer": check_answer,
    }[case.layer]
    await check(case, tmp_path, monkeypatch)


async def check_request(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = case.value if case.layer == "prompt" else "a cat"
    image_url = case.value if case.layer == "image_url" else None
    async with simulated() as (fake, client):
        if case.says is None:
            task_id = await client.submit(prompt, image_url=image_url)
            (task,) = fake.stats.to_dict()["tasks"].values()
            assert task["task_id"] == task_id
            assert (task["prompt"], task["image_url"]) == (prompt, image_url)
            return
        with pytest.raises(InvalidRequestError) as raised:
            await client.submit(prompt, image_url=image_url)
        item = {"prompt": prompt, "image_url": image_url}
        async with client.generate([item]) as batch:
            (outcome,) = [outcome async for outcome in batch]
        assert fake.stats.requests["submit"] == 0
    error = raised.value
    assert error.field == case.layer
    assert str(error).startswith(f"{case.layer}: ")
    assert case.says in str(error)
    assert isinstance(outcome.error, InvalidRequestError)
    assert outcome.error.field == case.layer
    assert case.says in str(outcome.error)
    assert outcome.request is None


async def check_client(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOVITA_API_KEY", raising=False)
    monkeypatch.delenv("NOVITA_BASE_URL", raising=False)
    options = {"api_key": "sk-fine", **case.value}
    with pytest.raises(case.error) as raised:
        Client(**options)
    assert case.says is not None
    assert case.says in str(raised.value)


async def check_command(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    if case.layer == "file":
        path = tmp_path / case.file
        if case.writer is not None:
            case.writer(path)
        else:
            path.write_bytes(case.value)
    else:
        path = prompts_file(tmp_path / "p.txt", ["a cat"])
    async with simulator() as fake:
        env = cli_env(fake.url)
        if case.layer == "env":
            host = fake.url.removeprefix("http://")
            for name, value in case.value.items():
                if value is None:
                    env.pop(name, None)
                else:
                    env[name] = value.format(host=host)
        ran = await run_measured("batch", str(path), "--out", str(out), env=env)
        requests = fake.stats.requests
    if case.writer is not None:
        path.unlink()  # 100 MB: not worth keeping among pytest's last temporary folders
    assert ran.code == 2, ran.stderr
    assert "Traceback" not in ran.stderr
    assert case.says is not None
    assert case.says in ran.stderr
    assert sum(requests.values()) == 0  # nothing was sent at all
    assert ran.peak_rss_mb < PEAK_RSS_MB
    if case.writer is not None:
        print(f"\n100 MB input: the command peaked at {ran.peak_rss_mb:.1f} MB")


async def check_answer(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with scripted_server() as server:
        path = SUBMIT if case.layer == SUBMIT_ANSWER else RESULT
        server.script(path, case.value)
        retry = RetryPolicy(max_attempts=1)
        async with Client("sk-fine", base_url=server.url, retry=retry) as client:
            call: Awaitable[object]
            if case.layer == SUBMIT_ANSWER:
                call = client.submit("a cat")
            elif case.layer == RESULT_ANSWER:
                call = client.get_result("t")
            else:
                server.script(path, *[case.value] * 20)  # every check is answered so
                # Real time (2 s): the wait's deadline must pass while real HTTP checks
                # come back wrong; a manual clock would end it before the first answer.
                call = client.wait("t", timeout=2)
            expected = TaskTimeoutError if case.layer == "poll answer" else case.error
            with pytest.raises(expected) as raised:
                await call
    if case.layer == "poll answer":
        assert isinstance(raised.value.__cause__, case.error)
    assert case.says is not None
    assert case.says in str(raised.value)
    assert server.count("POST", SUBMIT) == (1 if case.layer == SUBMIT_ANSWER else 0)


@pytest.mark.slow
@pytest.mark.subprocess
async def test_a_mistyped_base_url_leaves_the_folder_usable(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a cat"])
    out = tmp_path / "out"
    async with simulator() as fake:
        mistyped = cli_env(fake.url) | {"NOVITA_BASE_URL": fake.url.removeprefix("http://")}
        first = await run_measured("batch", str(path), "--out", str(out), env=mistyped)
        assert first.code == 2
        fixed = await run_measured("batch", str(path), "--out", str(out), env=cli_env(fake.url))
    assert fixed.code == 0, fixed.stderr
