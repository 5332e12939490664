"""The API key goes to Novita and nowhere else.

Not into a log line at DEBUG (every logger, aiohttp's included), a repr, an exception (its
message, its chain, its pickle, anything its attributes reach), a file the command leaves
(manifest, ledger and its WAL, gallery, clips), the command's stdout or stderr; never to
a video URL, even on the API's own host, nor across a redirect; and a warning says when
it would travel over plain http to another machine.
"""

from __future__ import annotations

import logging
import pickle
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from aiohttp import web

from novita_video import (
    APIStatusError,
    Client,
    ClientClosedError,
    InsecureTransportWarning,
    InvalidRequestError,
    NotFoundError,
    NovitaError,
    Outcome,
    ScaledClock,
    TaskTimeoutError,
)
from novita_video.testing import FakeNovita
from tests.cli.cli_support import FAST, KEY, cli_env, manifest, prompts_file, run_cli, simulator
from tests.reliability.reliability_support import CLIP, Stub, every_fault, json_answer, succeeded
from tests.support import serve_app

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

SECRET = "sk-live-Reliability-5e1f0c9a7b3d4e2f"
WRONG = "sk-live-Wrong-a1b2c3d4e5f60718"
LOGGERS = ("", "novita_video", "aiohttp", "aiohttp.client", "aiohttp.server", "asyncio")


def texts(value: object, depth: int = 0, seen: set[int] | None = None) -> Iterator[str]:
    """Every string reachable from ``value``: its repr, and, through exceptions (args,
    attributes, cause, context), attrs objects, mappings and sequences, what they hold."""
    seen = set() if seen is None else seen
    if id(value) in seen or depth > 8:
        return
    seen.add(id(value))
    if isinstance(value, str):
        yield value
        return
    if isinstance(value, bytes | bytearray):
        yield bytes(value).decode("latin-1")
        return
    yield repr(value)
    children: list[object] = []
    if isinstance(value, BaseException):
        children += [*value.args, value.__cause__, value.__context__, str(value)]
        children += getattr(value, "__notes__", [])
    if attrs.has(type(value)):
        children += [getattr(value, field.name) for field in attrs.fields(cast(Any, type(value)))]
    if isinstance(value, dict):
        children += [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple | set | frozenset):
        children += list(value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        children += list(vars(value).values())
    for child in children:
        if child is not None:
            yield from texts(child, depth + 1, seen)


def assert_clean(things: list[object], *secrets: str) -> None:
    for thing in things:
        for text in texts(thing):
            for secret in secrets:
                assert secret not in text, f"the key leaked through {type(thing).__name__}"
        if isinstance(thing, BaseException):
            whole = "".join(traceback.format_exception(thing))
            assert not any(secret in whole for secret in secrets)
            pickled = pickle.dumps(thing)
            assert not any(secret.encode() in pickled for secret in secrets)


@pytest.mark.anyio
async def test_no_log_repr_or_exception_holds_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    clock = ScaledClock(20.0)
    chaos = every_fault(0.05, slow_seconds=30.0, html_share=0.5)
    things: list[object] = []
    async with FakeNovita(
        api_key=SECRET, clock=clock, seed=5, task_duration=(5.0, 10.0), chaos=chaos,
        failure_rate=0.1,
    ) as fake:  # fmt: skip
        client = Client(
            SECRET, base_url=fake.url, clock=clock, timeout=0.5, submit_rpm=None,
            task_timeout=60.0, concurrency=8,
        )  # fmt: skip
        holders: list[object] = [client]  # they hold the key: only their reprs are shown
        async with client:
            outcomes: list[Outcome] = []
            batch = client.generate(f"a heron on one leg, take {i}" for i in range(60))
            holders.append(batch)
            async with batch:
                async for outcome in batch:
                    outcomes.append(outcome)
                    if outcome.ok:
                        await client.download(outcome, tmp_path / f"{outcome.index}.mp4")
            things += [*outcomes, *(o.error for o in outcomes), client.statistics()]
            failed = next(o for o in outcomes if o.task_id and not o.ok)
            with pytest.raises(InvalidRequestError) as no_video:
                await client.download(failed, tmp_path / "none.mp4")
            fake.chaos = every_fault(0.0)  # what follows must fail for its own reason
            with pytest.raises(NotFoundError) as not_found:
                await client.get_result("no-such-task")
            slow = await client.submit("a slow one")
            with pytest.raises(TaskTimeoutError) as late:
                await client.wait(slow, timeout=0.01)
            things += [no_video.value, not_found.value, late.value]
        with pytest.raises(ClientClosedError) as closed:
            await client.get_result("t")
        things.append(closed.value)
        async with Client(WRONG, base_url=fake.url) as wrong:
            with pytest.raises(APIStatusError) as refused:
                await wrong.submit("a cat")
            things.append(refused.value)
            holders.append(wrong)
        assert fake.stats.video_requests_with_authorization == 0
    for bad in (f"{SECRET}\n", f"{SECRET} x"):
        with pytest.raises(InvalidRequestError) as malformed:
            Client(bad, base_url="https://api.novita.ai")
        things.append(malformed.value)

    errors = [o.error for o in outcomes if o.error is not None]
    assert {type(e).__name__ for e in errors} >= {"SubmissionUnknownError"}
    assert all(isinstance(e, NovitaError) for e in errors)
    assert_clean(things, SECRET, WRONG)
    for holder in holders:
        for secret in (SECRET, WRONG):
            assert secret not in repr(holder)
            assert secret not in str(holder)
    assert caplog.records, "nothing was logged: the capture is blind"
    assert any(r.name == "novita_video" and r.levelno == logging.DEBUG for r in caplog.records)
    for record in caplog.records:
        assert_clean([record.getMessage(), record.args], SECRET, WRONG)
    assert SECRET not in caplog.text
    assert WRONG not in caplog.text


@pytest.mark.anyio
async def test_no_file_or_stream_of_the_command_holds_the_key(tmp_path: Path) -> None:
    path = prompts_file(tmp_path / "p.txt", [f"a heron on one leg, take {i}" for i in range(12)])
    out, elsewhere = tmp_path / "out", tmp_path / "wrong"
    # The command's read timeout is a minute and its task timeout half an hour: no slow
    # answers and no stuck tasks here, every other fault.
    chaos = every_fault(0.05, submit_slow=0.0, result_slow=0.0, stuck_tasks=0.0)
    async with simulator(chaos=chaos, failure_rate=0.2, seed=11) as fake:
        env = cli_env(fake.url)
        runs = [await run_cli("batch", str(path), "--out", str(out), *FAST, "--json", env=env)]
        task_id = next(x["task_id"] for x in manifest(out) if x["task_id"])
        runs.append(await run_cli("status", task_id, "--json", env=env))
        runs.append(await run_cli("wait", task_id, "--out", str(out / "one"), env=env))
        refused = await run_cli(
            "batch", str(path), "--out", str(elsewhere), *FAST, env=cli_env(fake.url, WRONG)
        )
        runs.append(refused)
        assert fake.stats.video_requests_with_authorization == 0
    assert refused.code == 3
    assert "Novita refused the API key" in refused.stderr
    for ran in runs:
        assert "Traceback" not in ran.stderr
        for secret in (KEY, WRONG):
            assert secret not in ran.stdout
            assert secret not in ran.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != path]
    names = {p.name for p in files}
    assert {"manifest.jsonl", "index.html", "ledger.sqlite"} <= names
    for file in files:
        data = file.read_bytes()
        assert KEY.encode() not in data, file
        assert WRONG.encode() not in data, file


def clip_answer() -> web.Response:
    return web.Response(body=CLIP, content_type="video/mp4")


@pytest.mark.anyio
async def test_storage_and_redirects_never_see_the_key(tmp_path: Path) -> None:
    async with (
        Stub().serving() as api,
        Stub().serving() as storage,
        Stub().serving() as elsewhere,
    ):

        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{elsewhere.url}/final.mp4?sig=abc")

        async def final(request: web.Request) -> web.StreamResponse:
            return clip_answer()

        async def own_host_clip(request: web.Request) -> web.StreamResponse:
            return clip_answer()

        storage.routes["/clip.mp4"] = redirect
        elsewhere.routes["/final.mp4"] = final
        api.routes["/storage/own.mp4"] = own_host_clip
        async with Client(SECRET, base_url=api.url) as client:
            # A link to storage that redirects to a third host.
            api.routes["/v3/async/task-result"] = json_answer(
                succeeded("t1", f"{storage.url}/clip.mp4?sig=1")
            )
            result = await client.get_result("t1")
            await client.download(result, tmp_path / "redirected.mp4")
            # A link on the API's own host: still storage, still no key.
            api.routes["/v3/async/task-result"] = json_answer(
                succeeded("t2", f"{api.url}/storage/own.mp4?sig=2")
            )
            await client.download("t2", tmp_path / "own.mp4")
            # The API itself redirecting: not followed, so the key stays home.
            api.routes["/v3/async/task-result"] = redirect
            with pytest.raises(APIStatusError) as refused:
                await client.get_result("t3")

    assert refused.value.status_code == 302
    assert (tmp_path / "redirected.mp4").read_bytes() == CLIP
    assert (tmp_path / "own.mp4").read_bytes() == CLIP
    assert [(s.method, s.path_qs) for s in storage.seen] == [("GET", "/clip.mp4?sig=1")]
    assert [(s.method, s.path_qs) for s in elsewhere.seen] == [("GET", "/final.mp4?sig=abc")]
    api_calls = [s for s in api.seen if s.path_qs.startswith("/v3/")]
    video_calls = [s for s in api.seen if s.path_qs.startswith("/storage/")]
    assert len(api_calls) == 3
    assert len(video_calls) == 1
    # The key goes where it belongs, and nowhere else.
    assert all(s.headers.get("Authorization") == f"Bearer {SECRET}" for s in api_calls)
    for seen in [*storage.seen, *elsewhere.seen, *video_calls]:
        assert "Authorization" not in seen.headers
        assert SECRET not in repr(seen)


@pytest.mark.parametrize(
    ("base_url", "warns"),
    [
        ("http://api.novita.example", True),
        ("http://10.1.2.3:8080", True),
        ("http://[2001:db8::1]:8080", True),
        ("http://192.168.1.20", True),
        ("https://api.novita.example", False),
        ("http://127.0.0.1:8000", False),
        ("http://127.9.9.9", False),
        ("http://localhost:8000", False),
        ("http://[::1]:8000", False),
    ],
)
@pytest.mark.parametrize("given", ["argument", "environment"])
def test_plain_http_to_another_host_warns(
    monkeypatch: pytest.MonkeyPatch, base_url: str, warns: bool, given: str
) -> None:
    options: dict[str, Any] = {}
    if given == "argument":
        options["base_url"] = base_url
    else:
        monkeypatch.setenv("NOVITA_BASE_URL", base_url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Client(SECRET, **options)
    kinds = [w.category for w in caught]
    assert kinds == ([InsecureTransportWarning] if warns else [])
    assert all(SECRET not in str(w.message) for w in caught)


@pytest.mark.anyio
async def test_a_proxy_echoing_the_key_puts_it_in_no_file_of_the_command(
    tmp_path: Path,
) -> None:
    # A proxy in front of the API answers every submit 400 with the Authorization header
    # it received in its message, and every poll with it in an HTML page: the command
    # quotes those errors in the manifest, the gallery and the ledger.
    async def echo(request: web.Request) -> web.StreamResponse:
        await request.read()
        echoed = request.headers.get("Authorization", "")
        if request.method == "POST":
            body = {"code": 400, "reason": "ILLEGAL_PROMPT", "message": f"no: {echoed}"}
            return web.json_response(body, status=400, headers={"X-Seen": echoed})
        return web.Response(status=404, text=f"<p>{echoed}</p>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    path = prompts_file(tmp_path / "p.txt", [f"a heron, take {i}" for i in range(3)])
    out = tmp_path / "out"
    async with serve_app(app) as url:
        ran = await run_cli("batch", str(path), "--out", str(out), *FAST, env=cli_env(url))
        status = await run_cli("status", "some-task", env=cli_env(url))
    assert ran.code == 1, ran.stderr
    assert [line["status"] for line in manifest(out)] == ["rejected"] * 3
    assert all("[redacted]" in (line["error"] or "") for line in manifest(out))
    for stream in (ran.stdout, ran.stderr, status.stdout, status.stderr):
        assert KEY not in stream
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"manifest.jsonl", "index.html", "ledger.sqlite"} <= {p.name for p in files}
    for file in files:
        assert KEY.encode() not in file.read_bytes(), file
