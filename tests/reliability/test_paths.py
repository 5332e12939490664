"""No string from the server decides where a file is written.

A stub API hands out a task id and a video URL full of ``../`` (plain and
percent-encoded), and its storage answers with a ``Content-Disposition`` naming a file
outside the output folder. Through ``client.download(result, path)`` and through the
command, the clip lands at the chosen path and nowhere else: the whole test folder is
listed before and after, and the paths the server named do not exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from novita_video import Client, VideoRequest
from novita_video._balance import BALANCE_PATH
from novita_video.cli._inputs import Row
from novita_video.cli._outputs import clip_name
from tests.cli.cli_support import KEY, cli_env, manifest, prompts_file, run_cli
from tests.reliability.reliability_support import CLIP, Stub, json_answer, succeeded

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

EVIL_ID = "../../../../../../tmp/novita-pwned-task"
EVIL_PATHS = [
    "/storage/../../../../../../tmp/novita-pwned-1.mp4",
    "/storage/..%2F..%2F..%2F..%2Ftmp%2Fnovita-pwned-2.mp4",
    "/storage/%2e%2e/%2e%2e/novita-pwned-3.mp4",
]
NAMED = [
    Path("/tmp/novita-pwned-task"),
    Path("/tmp/novita-pwned-task.mp4"),
    Path("/tmp/novita-pwned-1.mp4"),
    Path("/tmp/novita-pwned-2.mp4"),
    Path("/tmp/novita-pwned-3.mp4"),
    Path("/tmp/novita-pwned-4.mp4"),
]


async def evil_storage(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=CLIP,
        content_type="video/mp4",
        headers={"Content-Disposition": 'attachment; filename="../../../tmp/novita-pwned-4.mp4"'},
    )


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("video_path", EVIL_PATHS)
async def test_download_writes_only_the_chosen_path(tmp_path: Path, video_path: str) -> None:
    out = tmp_path / "out"
    async with Stub().serving() as stub:
        stub.fallback = evil_storage  # whatever path the client asks for
        stub.routes["/v3/async/task-result"] = json_answer(
            succeeded(EVIL_ID, stub.url + video_path + "?sig=1")
        )
        async with Client(KEY, base_url=stub.url) as client:
            result = await client.get_result(EVIL_ID)
            written = await client.download(result, out / "chosen.mp4")
    assert written == out / "chosen.mp4"
    assert files_under(tmp_path) == {Path("out/chosen.mp4")}
    assert (out / "chosen.mp4").read_bytes() == CLIP
    assert [s.method for s in stub.seen] == ["GET", "GET"]  # the result, then the clip
    assert not any(path.exists() for path in NAMED)


@pytest.mark.parametrize("video_path", EVIL_PATHS[:2])
async def test_the_command_writes_only_inside_its_folder(tmp_path: Path, video_path: str) -> None:
    path = prompts_file(tmp_path / "p.txt", ["a fox in the snow"])
    out = tmp_path / "out"
    async with Stub().serving() as stub:
        stub.fallback = evil_storage  # whatever path the client asks for
        stub.routes["/v3/async/minimax-video-01"] = json_answer({"task_id": EVIL_ID})
        # The balance is read before and after a run: an account without one, not a clip
        # the command would retry reading for seconds.
        stub.routes[BALANCE_PATH] = json_answer({"reason": "API_NOT_FOUND"}, status=404)
        stub.routes["/v3/async/task-result"] = json_answer(
            succeeded(EVIL_ID, stub.url + video_path + "?sig=1")
        )
        ran = await run_cli("batch", str(path), "--out", str(out), env=cli_env(stub.url))
        waited = await run_cli("wait", EVIL_ID, "--out", str(out / "waited"), env=cli_env(stub.url))
    assert ran.code == 0, ran.stderr
    assert waited.code == 0, waited.stderr
    assert "Traceback" not in ran.stderr + waited.stderr
    (line,) = manifest(out)
    assert line["task_id"] == EVIL_ID  # kept as data, never used as a path
    name = clip_name(Row(1, 1, VideoRequest("a fox in the snow")))  # from the input only
    assert line["file"] == name
    outside = files_under(tmp_path) - {Path("p.txt")}
    assert {p for p in outside if ".novita" not in p.parts} == {
        Path("out") / name,
        Path("out/manifest.jsonl"),
        Path("out/index.html"),
        Path("out/runs.jsonl"),  # one line per run: what it spent
        # `wait` names the clip after the task id the user typed, made a safe slug.
        Path("out/waited/tmp-novita-pwned-task.mp4"),
    }
    assert (out / name).read_bytes() == CLIP
    assert not any(path.exists() for path in NAMED)
