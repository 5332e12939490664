"""Client over real loopback HTTP: submit, get_result, download, errors, retries, key hygiene."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import novita_video
from novita_video import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    Client,
    ClientClosedError,
    InsecureTransportWarning,
    InsufficientBalanceError,
    InvalidRequestError,
    MissingAPIKeyError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    RetryPolicy,
    ScaledClock,
    ServerError,
    SubmissionUnknownError,
    TaskStatus,
    UsageError,
    VideoRequest,
)
from novita_video.testing import FakeNovita, RateLimit
from tests.support import scripted_server

pytestmark = pytest.mark.anyio

SUBMIT = "/v3/async/minimax-video-01"
RESULT = "/v3/async/task-result"
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.05)
ASSET = Path(novita_video.testing.__file__).parent / "assets" / "clip.mp4"


@pytest.fixture
async def fake() -> AsyncIterator[FakeNovita]:
    async with FakeNovita(task_duration=(0.3, 0.6), seed=1) as server:
        yield server


def client_for(fake: FakeNovita, **kwargs: object) -> Client:
    kwargs.setdefault("submit_rpm", None)
    return Client(fake.api_key, base_url=fake.url, **kwargs)  # type: ignore[arg-type]


async def test_submit_then_get_result_then_wait(fake: FakeNovita) -> None:
    async with client_for(fake) as client:
        task_id = await client.submit("A panda walks through bamboo")
        first = await client.get_result(task_id)
        assert first.task_id == task_id
        assert first.status in (
            TaskStatus.QUEUED,
            TaskStatus.PROCESSING,
        )
        final = await client.wait(task_id, timeout=30)
        assert final.status is TaskStatus.SUCCEED
        assert final.ok
        assert final.video_url
        assert final.raise_for_status() is final
    record = fake.task(task_id)
    assert record.request.prompt == "A panda walks through bamboo"
    assert record.request.enable_prompt_expansion is True


async def test_submit_sends_every_field(fake: FakeNovita) -> None:
    async with client_for(fake) as client:
        one = await client.submit(
            "a", image_url="https://x.example/a.png", enable_prompt_expansion=False
        )
        two = await client.submit(VideoRequest("b", image_url="https://x.example/b.png"))
    assert fake.task(one).request.image_url == "https://x.example/a.png"
    assert fake.task(one).request.enable_prompt_expansion is False
    assert fake.task(two).request.image_url == "https://x.example/b.png"


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (("",), {}, "prompt"),
        (("x" * 2001,), {}, "prompt"),
        ((None,), {}, "prompt"),
        (("ok",), {"image_url": "relative/cat.png"}, "image_url"),
        (("ok",), {"image_url": "file:///etc/passwd"}, "image_url"),
        ((VideoRequest("ok"),), {"image_url": "https://x.example/c.png"}, "prompt"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_sent(
    fake: FakeNovita, args: tuple[object, ...], kwargs: dict[str, object], field: str
) -> None:
    async with client_for(fake) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.submit(*args, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert fake.stats.requests["submit"] == 0


async def test_the_server_says_no(fake: FakeNovita) -> None:
    async with client_for(fake) as client:
        with pytest.raises(BadRequestError) as illegal:
            await client.submit("a [illegal] prompt")
        assert illegal.value.reason == "ILLEGAL_PROMPT"
        assert illegal.value.status_code == 400
        assert not illegal.value.dooms_batch
        with pytest.raises(NotFoundError) as missing:
            await client.get_result("no-such-task")
        assert missing.value.reason == "TASK_NOT_FOUND"
    async with Client("sk-wrong", base_url=fake.url) as client:
        with pytest.raises(AuthenticationError) as denied:
            await client.submit("a cat")
        assert denied.value.status_code == 403
        assert denied.value.reason == "INVALID_API_KEY"
        assert denied.value.dooms_batch
        assert "sk-wrong" not in str(denied.value)
        assert "sk-wrong" not in repr(denied.value)


async def test_no_balance_is_fatal() -> None:
    async with FakeNovita(balance=1) as fake, client_for(fake) as client:
        await client.submit("one")
        with pytest.raises(InsufficientBalanceError) as caught:
            await client.submit("two")
    assert caught.value.dooms_batch
    assert caught.value.reason == "BILLING_BALANCE_NOT_ENOUGH"


def test_a_missing_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOVITA_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="NOVITA_API_KEY"):
        Client()
    monkeypatch.setenv("NOVITA_API_KEY", "   ")
    with pytest.raises(MissingAPIKeyError):
        Client()
    with pytest.raises(InvalidRequestError, match="stray newline"):
        Client("sk-abc\n")


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVITA_API_KEY", "sk-from-env")
    monkeypatch.setenv("NOVITA_BASE_URL", "http://127.0.0.1:9/")
    client = Client()
    assert "127.0.0.1:9" in repr(client)
    assert "sk-from-env" not in repr(client)
    assert "api.novita.ai" in repr(Client("sk-x", base_url="https://api.novita.ai"))


@pytest.mark.parametrize(
    "base_url", ["api.novita.ai", "ftp://api.novita.ai", "https://", "https://h/?q=1"]
)
def test_bad_base_urls(base_url: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        Client("sk-x", base_url=base_url)
    assert caught.value.field == "base_url"


def test_plain_http_to_another_host_warns() -> None:
    with pytest.warns(InsecureTransportWarning, match="plain http"):
        Client("sk-x", base_url="http://api.example.com")
    Client("sk-x", base_url="http://localhost:8000")  # loopback: no warning (warnings are errors)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("concurrency", 0),
        ("max_outstanding", 1.5),
        ("submit_rpm", -1),
        ("task_timeout", 0),
        ("timeout", float("nan")),
    ],
)
def test_bad_limits(name: str, value: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        Client("sk-x", **{name: value})  # type: ignore[arg-type]
    assert caught.value.field == name


async def test_a_closed_client_says_so(fake: FakeNovita) -> None:
    client = client_for(fake)
    with pytest.raises(ClientClosedError, match="async with"):
        await client.submit("a cat")
    async with client:
        pass
    for call in (client.submit("x"), client.get_result("t"), client.wait("t")):
        with pytest.raises(ClientClosedError):
            await call
    with pytest.raises(ClientClosedError):
        client.generate(["x"])
    with pytest.raises(UsageError, match="cannot be opened again"):
        async with client:
            pass
    assert fake.stats.requests["submit"] == 0


async def test_429s_are_retried_honouring_retry_after() -> None:
    async with (
        FakeNovita(
            task_duration=(5, 6),
            submit_limit=RateLimit(2, per=0.5),
            result_limit=RateLimit(2, per=0.5),
        ) as fake,
        client_for(fake, poll_rpm=None) as client,
    ):
        with anyio.fail_after(20):
            ids = [await client.submit(f"prompt {n}") for n in range(5)]
            results = [await client.get_result(task_id) for task_id in ids]
        stats = client.statistics()
    assert [result.task_id for result in results] == ids
    assert fake.stats.rate_limited["submit"] > 0
    assert fake.stats.rate_limited["task_result"] > 0
    assert (
        stats.rate_limited
        == fake.stats.rate_limited["submit"] + fake.stats.rate_limited["task_result"]
    )
    assert fake.stats.task_count == 5
    assert fake.stats.duplicate_submissions == 0


@pytest.mark.parametrize(
    "failure",
    [
        ("json", 500, {"code": 500, "reason": "CREATE_TASK_FAILED", "message": "boom"}),
        ("raw", 502, "<html><body>502 Bad Gateway</body></html>"),
        ("drop",),
        ("json", 200, {"unexpected": True}),
        ("raw", 200, "<html>not json</html>"),
    ],
    ids=["500", "502-html", "dropped-after-send", "200-wrong-shape", "200-not-json"],
)
async def test_a_post_that_may_have_landed_is_never_repeated(failure: tuple[object, ...]) -> None:
    async with (
        scripted_server() as server,
        Client("sk-x", base_url=server.url, retry=FAST, submit_rpm=None) as client,
    ):
        server.script(SUBMIT, failure)
        with pytest.raises(SubmissionUnknownError, match="not sent again") as caught:
            await client.submit("a cat")
        assert caught.value.request == VideoRequest("a cat")
        assert client.statistics().unknown_submissions == 1
    assert server.count("POST", SUBMIT) == 1


async def test_a_post_times_out_as_unknown() -> None:
    async with (
        scripted_server() as server,
        Client("sk-x", base_url=server.url, timeout=0.2, submit_rpm=None) as client,
    ):
        server.script(SUBMIT, ("sleep", 1.0))
        with pytest.raises(SubmissionUnknownError) as caught:
            await client.submit("a cat")
        assert isinstance(caught.value.__cause__, APITimeoutError)
    assert server.count("POST", SUBMIT) == 1


async def test_the_unsafe_opt_in_does_repeat() -> None:
    async with scripted_server() as server:
        server.script(SUBMIT, ("json", 500, {"reason": "CREATE_TASK_FAILED"}))
        async with Client(
            "sk-x", base_url=server.url, retry=FAST, retry_unsafe_submits=True, submit_rpm=None
        ) as client:
            assert await client.submit("a cat") == "task-2"
    assert server.count("POST", SUBMIT) == 2


@pytest.mark.parametrize(
    "failure",
    [
        ("json", 503, {"code": 503, "reason": "", "message": "surge protection"}),
        ("raw", 504, "<html>Gateway Timeout</html>"),
        ("json", 429, {"code": 429, "reason": "RATE_LIMIT_EXCEEDED"}, {"Retry-After": "0"}),
    ],
    ids=["503", "504", "429"],
)
async def test_a_post_that_certainly_made_nothing_is_retried(failure: tuple[object, ...]) -> None:
    async with (
        scripted_server() as server,
        Client("sk-x", base_url=server.url, retry=FAST, submit_rpm=None) as client,
    ):
        server.script(SUBMIT, failure, failure)
        assert await client.submit("a cat") == "task-3"
        assert client.statistics().retries == 2
    assert server.count("POST", SUBMIT) == 3


async def test_connection_refused_is_retried_then_raised() -> None:
    async with scripted_server() as server:
        url = server.url  # the port is free again once the server is gone
    policy = RetryPolicy(max_attempts=3, initial_delay=0.01)
    async with Client("sk-x", base_url=url, retry=policy, submit_rpm=None) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.submit("a cat")
        assert caught.value.maybe_sent is False
        assert client.statistics().retries == 2
        with pytest.raises(APIConnectionError):
            await client.get_result("t")


async def test_get_result_retries_transient_failures() -> None:
    async with (
        scripted_server() as server,
        Client("sk-x", base_url=server.url, retry=FAST) as client,
    ):
        server.script(
            RESULT,
            ("raw", 502, "<html>Bad Gateway</html>"),
            ("drop",),
            ("raw", 200, "{truncated"),
            (
                "json",
                429,
                {"reason": "RATE_LIMIT_EXCEEDED"},
                {"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"},
            ),
            (
                "json",
                200,
                {
                    "task": {"task_id": "t", "status": "TASK_STATUS_NEW_ONE", "whatever": 1},
                    "new": [],
                },
            ),
        )
        result = await client.get_result("t")
        assert result.status is TaskStatus.UNKNOWN
        assert result.raw_status == "TASK_STATUS_NEW_ONE"
    assert server.count("GET", RESULT) == 5


async def test_get_result_gives_up_with_the_last_error() -> None:
    policy = RetryPolicy(max_attempts=2, initial_delay=0.01)
    async with (
        scripted_server() as server,
        Client("sk-x", base_url=server.url, retry=policy) as client,
    ):
        server.script(RESULT, *[("json", 503, {"message": "busy"})] * 2)
        with pytest.raises(ServerError, match="503"):
            await client.get_result("t")
        server.script(
            RESULT, *[("json", 429, {"reason": "RATE_LIMIT_EXCEEDED"}, {"Retry-After": "0"})] * 2
        )
        with pytest.raises(RateLimitError) as limited:
            await client.get_result("t")
        assert limited.value.retry_after == 0.0
        server.script(RESULT, *[("raw", 200, "[]")] * 2)
        with pytest.raises(ProtocolError, match="documented shape"):
            await client.get_result("t")


async def test_download_writes_the_clip_without_the_key(fake: FakeNovita, tmp_path: Path) -> None:
    async with client_for(fake) as client:
        task_id = await client.submit("a cat")
        result = await client.wait(task_id)
        mask = os.umask(0o027)
        try:
            path = await client.download(result, tmp_path / "clips" / "cat.mp4")
        finally:
            os.umask(mask)
        again = await client.download(task_id, tmp_path / "again.mp4")
    assert path.stat().st_mode & 0o777 == 0o640  # like any file the user makes
    assert path.read_bytes() == ASSET.read_bytes() == again.read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["again.mp4", "cat.mp4", "clips"]
    assert fake.stats.requests["video"] == 2
    assert fake.stats.video_requests_with_authorization == 0


async def test_an_expired_url_is_renewed(tmp_path: Path) -> None:
    clock = ScaledClock(speed=40)
    async with FakeNovita(task_duration=(1, 2), video_ttl=60, clock=clock) as fake:
        async with Client(fake.api_key, base_url=fake.url, clock=clock) as client:
            result = await client.wait(await client.submit("a cat"))
            await clock.sleep(61)  # the link's hour (here: minute) is over
            polls_before = fake.stats.requests["task_result"]
            await client.download(result, tmp_path / "cat.mp4")
        assert (tmp_path / "cat.mp4").read_bytes() == ASSET.read_bytes()
        assert fake.stats.requests["task_result"] == polls_before + 1  # one renewal


async def test_a_refused_download_leaves_no_file(tmp_path: Path) -> None:
    async with scripted_server() as server, Client("sk-x", base_url=server.url) as client:
        done = {
            "task": {"task_id": "t", "status": "TASK_STATUS_SUCCEED"},
            "videos": [{"video_url": server.url + "/v.mp4", "video_url_ttl": "3600"}],
        }
        server.script(RESULT, ("json", 200, done), ("json", 200, done))
        server.script("/v.mp4", ("raw", 403, "AccessDenied"), ("raw", 403, "AccessDenied"))
        with pytest.raises(novita_video.DownloadError) as caught:
            await client.download("t", tmp_path / "v.mp4")
        assert caught.value.status_code == 403
    assert list(tmp_path.iterdir()) == []
    assert server.count("GET", RESULT) == 2  # the first answer, then one renewal


async def test_the_key_stays_in_the_authorization_header(
    fake: FakeNovita, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_for(fake)
    async with client:
        task_id = await client.submit("a cat")
        result = await client.wait(task_id)
        await client.download(result, tmp_path / "cat.mp4")
        with pytest.raises(NotFoundError) as caught:
            await client.get_result("missing")
        text = " ".join(
            [
                repr(client),
                str(client.statistics()),
                str(caught.value),
                repr(caught.value),
                repr(result),
            ]
        )
    assert caplog.records, "DEBUG logging should say something"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "novita_video" in {record.name for record in caplog.records}
    for place in (text, logged):
        assert fake.api_key not in place
    assert fake.stats.video_requests_with_authorization == 0
    for path in tmp_path.rglob("*"):
        assert fake.api_key.encode() not in path.read_bytes()


async def test_download_takes_an_outcome(fake: FakeNovita, tmp_path: Path) -> None:
    async with client_for(
        fake, poll_schedule=novita_video.PollSchedule(progress_lead=0.3)
    ) as client:
        outcomes = [o async for o in client.generate(["a cat", ""])]
        good = next(o for o in outcomes if o.ok)
        bad = next(o for o in outcomes if not o.ok)
        path = await client.download(good, tmp_path / "cat.mp4")
        with pytest.raises(InvalidRequestError, match="no task result"):
            await client.download(bad, tmp_path / "nothing.mp4")
    assert path.read_bytes() == ASSET.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["cat.mp4"]
