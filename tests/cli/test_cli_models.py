"""``novita-video batch --model``: Hailuo-02 and Kling v1.6 i2v prompts, their fields in
JSONL and CSV, their errors by line, and the ledger identity of a prompt's fields."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from novita_video import MODELS, HailuoRequest, KlingI2VRequest, VideoRequest
from novita_video.cli._commands import build_parser
from novita_video.cli._inputs import PromptSource, Row
from novita_video.testing import FakeNovita
from tests.cli.cli_support import FAST, cli_env, clips, ledger, manifest, run_cli, simulator, write

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

IMG = "https://img.example/first.png"


def bodies(fake: FakeNovita, endpoint: str) -> list[dict[str, Any]]:
    """The bodies the simulator accepted for ``endpoint``, in prompt order."""
    tasks = [t for t in fake.stats.tasks.values() if t.endpoint == endpoint]
    return sorted((dict(t.request.body) for t in tasks), key=lambda body: body["prompt"])


def rows(path: Path, model: str) -> list[Row]:
    source = PromptSource(str(path), model=model)
    validation = source.validate()
    assert validation.errors == ()
    return list(source.rows())


async def test_a_hailuo_batch_sends_each_lines_duration_and_resolution(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.jsonl",
        '{"prompt": "A kite over dunes", "duration": 10}\n'
        '{"prompt": "A lighthouse", "resolution": "1080P", "id": "lh"}\n'
        '{"prompt": "A tram", "duration": 6, "resolution": "768P",'
        ' "enable_prompt_expansion": false}\n',
    )
    out = tmp_path / "out"
    args = ("batch", str(path), "--out", str(out), "--model", "minimax-hailuo-02", *FAST)
    async with simulator() as fake:
        ran = await run_cli(*args, "--quiet", env=cli_env(fake.url))
        assert ran.code == 0, ran.stderr
        expected = [
            {"prompt": "A kite over dunes", "duration": 10, "resolution": "768P"},
            {"prompt": "A lighthouse", "duration": 6, "resolution": "1080P"},
            {"prompt": "A tram", "duration": 6, "resolution": "768P"},
        ]
        sent = bodies(fake, "minimax-hailuo-02")
        assert [{k: body[k] for k in ("prompt", "duration", "resolution")} for body in sent] == (
            expected
        )
        assert [body["enable_prompt_expansion"] for body in sent] == [True, True, False]
        assert fake.stats.task_count == 3
        assert len(clips(out)) == 3
        assert [(x["line"], x["id"], x["status"]) for x in manifest(out)] == [
            (1, None, "succeeded"),
            (2, "lh", "succeeded"),
            (3, None, "succeeded"),
        ]
        recorded = ledger(out)
        assert {row["model"] for row in recorded} == {"minimax-hailuo-02"}
        assert json.loads(recorded[0]["request"])["duration"] == 10

        # A duration edited is another request: that row alone is made again.
        write(path, path.read_text().replace('"duration": 10', '"duration": 6'))
        again = await run_cli(*args, "--quiet", env=cli_env(fake.url))
        assert again.code == 0, again.stderr
        assert fake.stats.task_count == 4
        assert fake.stats.duplicate_submissions == 0
        assert [t.request.body.get("duration") for t in fake.stats.tasks.values()][-1] == 6


async def test_a_kling_batch_from_csv_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.csv",
        "prompt,image_url,guidance_scale,negative_prompt,mode,notes\n"
        f'"A cat turns, slowly",{IMG},0.3,blur,Professional,first\n'
        f"A dog wags,{IMG},,,,\n",
    )
    out = tmp_path / "out"
    async with simulator() as fake:
        ran = await run_cli(
            "batch",
            str(path),
            "--out",
            str(out),
            "--model",
            "kling-v1.6-i2v",
            *FAST,
            "--quiet",
            env=cli_env(fake.url),
        )
        assert ran.code == 0, ran.stderr
        assert bodies(fake, "kling-v1.6-i2v") == [
            {
                "image_url": IMG,
                "prompt": "A cat turns, slowly",
                "negative_prompt": "blur",
                "guidance_scale": 0.3,
                "mode": "Professional",
            },
            # Blank cells are the defaults, which the simulator fills in.
            {"image_url": IMG, "prompt": "A dog wags", "guidance_scale": 0.5, "mode": "Standard"},
        ]
    names = [x["file"] for x in manifest(out)]
    assert re.fullmatch(r"a-cat-turns-slowly-[0-9a-f]{8}\.mp4", names[0]), names
    assert re.fullmatch(r"a-dog-wags-[0-9a-f]{8}\.mp4", names[1]), names
    assert {x["model"] for x in manifest(out)} == {"kling-v1.6-i2v"}


async def test_a_bad_model_field_is_reported_by_line_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "p.jsonl",
        '{"prompt": "fine", "duration": 10}\n'
        '{"prompt": "too long", "duration": 10, "resolution": "1080P"}\n'
        '{"prompt": "odd", "duration": 8}\n',
    )
    async with simulator() as fake:
        ran = await run_cli(
            "batch",
            str(path),
            "--out",
            str(tmp_path / "out"),
            "--model",
            "minimax-hailuo-02",
            env=cli_env(fake.url),
        )
        assert fake.stats.requests["submit"] == 0
    assert ran.code == 2
    assert f"{path}:2: resolution: 1080P is only made for 6-second clips" in ran.stderr
    assert f"{path}:3: duration: must be 6 or 10, not 8" in ran.stderr
    assert "2 error(s)" in ran.stderr
    assert "nothing was submitted" in ran.stderr


@pytest.mark.parametrize(
    ("model", "name", "content", "line", "message"),
    [
        ("kling-v1.6-i2v", "a.txt", "a cat\n", 1, "image_url: kling-v1.6-i2v needs image_url"),
        (
            "minimax-video-01",
            "b.jsonl",
            '{"prompt": "a", "duration": 10}\n',
            1,
            "unknown field(s) duration; minimax-video-01 takes prompt, image_url, "
            "enable_prompt_expansion, id (--model chooses another model)",
        ),
        (
            "minimax-hailuo-02",
            "c.csv",
            "prompt,duration\na,6\nb,ten\n",
            3,
            "duration: must be a whole",
        ),
        ("kling-v1.6-i2v", "d.csv", f"prompt,image_url,guidance_scale\na,{IMG},2\n", 2, "0 to 1"),
        (
            "kling-v1.6-i2v",
            "e.jsonl",
            f'{{"prompt": "a", "image_url": "{IMG}", "mode": ""}}\n',
            1,
            "mode",
        ),
    ],
)
def test_model_field_errors_name_their_line(
    tmp_path: Path, model: str, name: str, content: str, line: int, message: str
) -> None:
    path = write(tmp_path / name, content)
    validation = PromptSource(str(path), model=model).validate()
    (error,) = validation.errors
    assert error.line == line
    assert str(error).startswith(f"{path}:{line}: ")
    assert message in str(error)


def test_csv_cells_take_their_fields_types(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.csv",
        "prompt,duration,resolution,enable_prompt_expansion,id\na,10,,no,x\nb,,1080P,,\n",
    )
    first, second = rows(path, "minimax-hailuo-02")
    assert first.request == HailuoRequest("a", duration=10, enable_prompt_expansion=False)
    assert first.id == "x"
    assert second.request == HailuoRequest("b", resolution="1080P")


def test_identity_covers_model_and_every_field() -> None:
    kite = Row(1, 1, HailuoRequest("a kite"))
    assert kite.key == Row(1, 5, HailuoRequest("a kite", duration=6)).key  # defaults are fields
    others = [
        Row(1, 1, VideoRequest("a kite")),
        Row(1, 1, HailuoRequest("a kite", duration=10)),
        Row(1, 1, HailuoRequest("a kite", resolution="1080P")),
        Row(1, 1, HailuoRequest("a kite", enable_prompt_expansion=False)),
        Row(1, 1, KlingI2VRequest(IMG, "a kite")),
        Row(1, 1, KlingI2VRequest(IMG, "a kite", mode="Professional")),
        Row(1, 1, HailuoRequest("a kite"), id="k"),
    ]
    assert len({kite.key, *(row.key for row in others)}) == 1 + len(others)
    # One id is two prompts with two models.
    assert Row(1, 1, VideoRequest("a kite"), id="k").key != others[-1].key


def test_help_lists_the_models(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps at hyphens otherwise
    with pytest.raises(SystemExit):
        build_parser().parse_args(["batch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    # Our own models by name; any other is a catalogue model (tests/cli/test_cli_catalog.py).
    assert "--model NAME" in text
    assert "one of this SDK's (" + ", ".join(sorted(MODELS)) + ")" in text
    assert "(default: minimax-video-01)" in text
    args = build_parser().parse_args(["batch", "p.txt", "--out", "o"])
    assert args.model == "minimax-video-01"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["batch", "p.txt", "--out", "o", "--model", "sora 2!"])
    assert "not a model name: 'sora 2!'" in capsys.readouterr().err


async def test_simulate_works_for_every_model(tmp_path: Path) -> None:
    inputs = {
        "minimax-video-01": '{"prompt": "A fox"}\n',
        "minimax-hailuo-02": '{"prompt": "A kite", "duration": 10}\n',
        "kling-v1.6-i2v": f'{{"prompt": "A cat", "image_url": "{IMG}"}}\n',
    }
    codes: dict[str, int] = {}

    async def batch(model: str) -> None:
        path = write(tmp_path / f"{model}.jsonl", inputs[model])
        out = tmp_path / model
        ran = await run_cli(
            "batch",
            str(path),
            "--out",
            str(out),
            "--model",
            model,
            "--simulate",
            "--quiet",
            env=cli_env(None, None),
        )
        codes[model] = ran.code
        assert len(clips(out)) == 1, ran.stderr

    # Simulated tasks take 3 to 8 real seconds: the three runs share that wait.
    async with anyio.create_task_group() as group:
        for model in inputs:
            group.start_soon(batch, model)
    assert codes == dict.fromkeys(inputs, 0)
