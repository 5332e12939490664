"""Reading the server through the one converter: lenient on growth, strict on shape."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from novita_video import ProtocolError, TaskStatus, VideoRequest
from novita_video._wire import dump_request, parse_error, parse_submitted, parse_task_result

WALL = 1_700_000_000.0

DOCUMENTED = {
    "task": {
        "task_id": "abc",
        "task_type": "MINIMAX_VIDEO_01",
        "status": "TASK_STATUS_SUCCEED",
        "reason": "",
        "eta": 0,
        "progress_percent": 100,
    },
    "images": [],
    "videos": [
        {
            "video_url": "https://s.example/abc.mp4?sig=1",
            "video_url_ttl": "3600",
            "video_type": "mp4",
        }
    ],
    "audios": [],
    "extra": {"seed": "1", "debug_info": {"request_info": "", "submit_time_ms": "1"}},
}


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_the_documented_answer() -> None:
    result = parse_task_result(body(DOCUMENTED), wall=WALL)
    assert result.task_id == "abc"
    assert result.status is TaskStatus.SUCCEED
    assert result.raw_status == "TASK_STATUS_SUCCEED"
    assert result.eta is None  # 0 means "no estimate"
    assert result.progress == 100
    (video,) = result.videos
    assert video.ttl == 3600
    assert video.type == "mp4"
    assert video.expires_at == datetime.fromtimestamp(WALL + 3600, UTC)


def test_unknown_fields_and_statuses_are_tolerated() -> None:
    data = json.loads(json.dumps(DOCUMENTED))
    data["task"]["status"] = "TASK_STATUS_PAUSED"
    data["task"]["brand_new"] = {"x": 1}
    data["future"] = [1, 2]
    data["videos"][0]["video_codec"] = "h265"
    result = parse_task_result(body(data), wall=WALL)
    assert result.status is TaskStatus.UNKNOWN
    assert result.raw_status == "TASK_STATUS_PAUSED"
    assert len(result.videos) == 1


@pytest.mark.parametrize("ttl", ["", None, "soon", -1, "-1", 1e300, True, {"s": 1}, [3600]])
def test_a_ttl_the_client_cannot_read_costs_nothing(ttl: object) -> None:
    # The clip is finished and paid for: Novita's documented hour is assumed instead.
    data = json.loads(json.dumps(DOCUMENTED))
    data["videos"][0]["video_url_ttl"] = ttl
    result = parse_task_result(body(data), wall=WALL)
    assert result.ok
    (video,) = result.videos
    assert video.ttl == 3600
    assert video.expires_at == datetime.fromtimestamp(WALL + 3600, UTC)


def test_a_video_without_a_url_is_left_out_and_a_missing_type_is_mp4() -> None:
    data = json.loads(json.dumps(DOCUMENTED))
    data["videos"] = [{"video_url_ttl": "3600"}, {"video_url": "https://s.example/b.mp4"}]
    (video,) = parse_task_result(body(data), wall=WALL).videos
    assert (video.url, video.type, video.ttl) == ("https://s.example/b.mp4", "mp4", 3600)


def test_fractional_estimates_are_kept() -> None:
    data = json.loads(json.dumps(DOCUMENTED))
    data["task"].update(status="TASK_STATUS_PROCESSING", eta=12.75, progress_percent=33.3)
    result = parse_task_result(body(data), wall=WALL)
    assert (result.eta, result.progress) == (12.75, 33.3)


@pytest.mark.parametrize(
    ("task", "eta", "progress"),
    [
        ({"eta": 12, "progress_percent": 40}, 12.0, 40),
        ({"eta": "7", "progress_percent": "55"}, 7.0, 55),
        ({"eta": 2.5, "progress_percent": 33.6}, 2.5, 33.6),
        ({"eta": None, "progress_percent": None}, None, 0),
        ({}, None, 0),
        ({"eta": -3, "progress_percent": 250}, None, 100),
    ],
)
def test_numbers_in_any_reasonable_form(
    task: dict[str, Any], eta: float | None, progress: int
) -> None:
    data = {"task": {"task_id": "t", "status": "TASK_STATUS_PROCESSING", **task}}
    result = parse_task_result(body(data), wall=WALL)
    assert (result.eta, result.progress) == (eta, progress)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
        (b"", "not JSON"),
        (b'{"task": {"task_id": "t", "status": "TASK_STATUS_QUEUED"', "not JSON"),
        (b"[]", "documented shape"),
        (b'"text"', "documented shape"),
        (b"{}", "documented shape"),
        (b'{"task": null}', "documented shape"),
        (b'{"task": {"status": "TASK_STATUS_QUEUED"}}', "documented shape"),
        (b'{"task": {"task_id": {"a": 1}, "status": "x"}}', "documented shape"),
        (b'{"task": {"task_id": "", "status": "x"}}', "empty task_id"),
        (b'{"task": {"task_id": "t", "status": "x"}, "videos": {"a": 1}}', "documented shape"),
    ],
)
def test_wrong_shapes_are_protocol_errors_with_a_snippet(raw: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as caught:
        parse_task_result(raw, wall=WALL)
    assert caught.value.snippet == " ".join(raw.decode().split())[:200]


def test_deep_nesting_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_task_result(b"[" * 100_000, wall=WALL)
    assert parse_error(b"[" * 100_000)[0] == ""


def test_snippets_are_short() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_task_result(b"x" * 10_000, wall=WALL)
    assert len(caught.value.snippet) <= 203


def test_submit_answer() -> None:
    assert parse_submitted(b'{"task_id": "t-1", "extra": 1}') == "t-1"
    for raw in (b"{}", b'{"task_id": ""}', b'{"task_id": 5}', b"nope"):
        with pytest.raises(ProtocolError):
            parse_submitted(raw)


def test_error_bodies() -> None:
    assert parse_error(b'{"code": 400, "reason": "ILLEGAL_PROMPT", "message": "no"}') == (
        "ILLEGAL_PROMPT",
        "no",
    )
    assert parse_error(b"<html>Service Unavailable</html>") == (
        "",
        "<html>Service Unavailable</html>",
    )
    assert parse_error(b"[1]") == ("", "[1]")
    assert parse_error(b'{"reason": 5}') == ("", '{"reason": 5}')


def test_request_bodies_leave_out_what_is_unset() -> None:
    assert dump_request(VideoRequest("a cat")) == {
        "prompt": "a cat",
        "enable_prompt_expansion": True,
    }
    assert dump_request(
        VideoRequest("a cat", image_url="https://x.example/c.png", enable_prompt_expansion=False)
    ) == {
        "prompt": "a cat",
        "image_url": "https://x.example/c.png",
        "enable_prompt_expansion": False,
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
task_like = st.fixed_dictionaries(
    {
        "task": st.dictionaries(
            st.sampled_from(["task_id", "status", "eta", "progress_percent", "reason"]), json_values
        )
    },
    optional={
        "videos": json_values
        | st.lists(
            st.dictionaries(
                st.sampled_from(["video_url", "video_url_ttl", "video_type"]), json_values
            ),
            max_size=2,
        )
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, task_like))
def test_any_json_is_a_result_or_a_protocol_error(value: Any) -> None:
    try:
        raw = json.dumps(value).encode()
    except ValueError:
        return
    try:
        result = parse_task_result(raw, wall=WALL)
    except ProtocolError:
        return
    assert isinstance(result.status, TaskStatus)
    assert 0 <= result.progress <= 100


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_are_a_result_or_a_protocol_error(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_task_result(raw, wall=WALL)


@pytest.mark.parametrize(
    "eta",
    ['"soon"', "true", '"NaN"', "1e400", "1" + "0" * 400, "-3", "[1]", '{"a": 1}', "null", '""'],
)
def test_an_unreadable_eta_is_a_missing_hint(eta: str) -> None:
    # A hint that cannot be read is a missing hint, not a broken answer about a task.
    body = f'{{"task": {{"task_id": "t", "status": "TASK_STATUS_PROCESSING", "eta": {eta}}}}}'
    result = parse_task_result(body.encode(), wall=0.0)
    assert result.status is TaskStatus.PROCESSING
    assert result.eta is None


@pytest.mark.parametrize(("value", "expected"), [("12.5", 12.5), (7, 7.0), ("  3 ", 3.0)])
def test_a_readable_eta_is_read_however_it_is_written(value: object, expected: float) -> None:
    body = {"task": {"task_id": "t", "status": "TASK_STATUS_PROCESSING", "eta": value}}
    assert parse_task_result(json.dumps(body).encode(), wall=0.0).eta == expected


@settings(max_examples=300, deadline=None)
@given(task_like)
def test_the_fast_path_reads_a_running_task_as_the_converter_does(value: Any) -> None:
    # The commonest answer skips the converter (a poll is the hot path); whatever it
    # reads, it must read exactly as the converter would, and leave it everything else.
    from novita_video._wire import _running_task, _structure, _WireTaskResult, from_wire

    fast = _running_task(value)
    if fast is None:
        return
    slow = _structure(value, _WireTaskResult, "task-result", b"")
    assert fast.task == slow.task
    assert not slow.videos

    def read(wire: _WireTaskResult) -> object:
        try:
            return from_wire(wire, wall=WALL, body=b"")
        except ProtocolError as error:  # an empty task id: refused alike
            return str(error)

    assert read(fast) == read(slow)


@pytest.mark.parametrize("task_id", ["t-1", ""])
@pytest.mark.parametrize("reason", ["", None, "x"])
def test_the_fast_path_and_the_converter_agree_on_plain_running_tasks(
    task_id: str, reason: str | None
) -> None:
    from novita_video._wire import _running_task, _structure, _WireTaskResult

    value = {
        "task": {"task_id": task_id, "status": "TASK_STATUS_QUEUED", "reason": reason, "eta": 3},
        "videos": [],
        "extra": {"seed": "1"},
    }
    fast = _running_task(value)
    assert fast is not None
    assert fast.task == _structure(value, _WireTaskResult, "task-result", b"").task
