"""The command and Novita's catalogue (issue 22), through the real command as a subprocess:
``models`` prints it (a table, ``--json``, ``--simulate``), ``batch --model`` takes any of
its models with their fields from JSONL keys or CSV columns, every line is checked against
the model's schema before the first submit, and ``hailuo-02`` is ``minimax-hailuo-02`` to a
folder's ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from novita_video.testing._unified import UNIFIED_MODELS
from tests.cli.cli_support import (
    FAST,
    REPO,
    Ran,
    cli_env,
    clips,
    ledger,
    manifest,
    run_cli,
    simulator,
    write,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

KLING = "kling-v3.0-pro-t2v"


async def test_models_prints_the_catalogue_as_a_table_and_as_json() -> None:
    async with simulator() as fake:
        env = cli_env(fake.url)
        table = await run_cli("models", env=env)
        listed = await run_cli("models", "--json", env=env)
        one = await run_cli("models", KLING, env=env)
        unknown = await run_cli("models", "sora-2", env=env)
    simulated = await run_cli("models", "--simulate", "--json", env=cli_env(None, None))
    no_key = await run_cli("models", env=cli_env(None, None))
    assert table.code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("MODEL")
    for name in UNIFIED_MODELS:
        assert any(line.startswith(name + " ") for line in lines), name
    assert "prompt*, duration, resolution, enable_prompt_expansion" in table.stdout
    assert "hailuo-02 = minimax-hailuo-02" in table.stdout
    models = json.loads(listed.stdout)["models"]
    assert json.loads(simulated.stdout) == json.loads(listed.stdout)
    assert len(models) >= 8
    kling = next(model for model in models if model["model"] == KLING)
    assert kling["route"] == "POST /v3/video/create"
    duration = next(field for field in kling["fields"] if field["name"] == "duration")
    assert (duration["type"], duration["minimum"], duration["maximum"]) == ("integer", 3, 15)
    hailuo = next(model for model in models if model["model"] == "hailuo-02")
    assert hailuo["route"] == "POST /v3/async/minimax-hailuo-02"
    assert one.code == 0
    assert "duration: an integer from 3 to 15 (default 5)" in one.stdout
    assert "prompt (required): a string of 0 to 2500 characters" in one.stdout
    assert unknown.code == 2
    assert "no model 'sora-2' in the catalogue" in unknown.stderr
    assert no_key.code == 2
    assert "--simulate" in no_key.stderr


async def test_a_batch_through_a_catalogue_only_model_from_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = write(
        tmp_path / "p.jsonl",
        '{"prompt": "a fox", "duration": 8, "aspect_ratio": "9:16"}\n'
        '{"prompt": "a kite", "sound": true, "id": "kite"}\n'
        '{"prompt": "a cat", "multi_prompt": [{"prompt": "one", "duration": 3}]}\n',
    )
    csv = write(
        tmp_path / "p.csv",
        "prompt,duration,sound,cfg_scale,notes\n"
        "a fox,8,true,0.7,the first\n"
        "a dog,,no,,blank cells are defaults\n",
    )
    async with simulator() as fake:
        env = cli_env(fake.url)
        ran_jsonl = await run_cli(
            "batch", str(jsonl), "--out", str(tmp_path / "j"), "--model", KLING, *FAST, env=env
        )
        ran_csv = await run_cli(
            "batch", str(csv), "--out", str(tmp_path / "c"), "--model", KLING, *FAST, env=env
        )
        bodies = [
            (task.request.prompt, dict(task.request.body)) for task in fake.stats.tasks.values()
        ]
        endpoints = {task.endpoint for task in fake.stats.tasks.values()}
    assert ran_jsonl.code == 0, ran_jsonl.stderr
    assert ran_csv.code == 0, ran_csv.stderr
    assert endpoints == {KLING}
    assert len(clips(tmp_path / "j")) == 3
    assert len(clips(tmp_path / "c")) == 2
    assert {entry["model"] for entry in manifest(tmp_path / "j")} == {KLING}
    sent = dict(bodies)
    assert sent["a dog"]["sound"] is False  # "no" in a CSV cell
    assert sent["a dog"]["duration"] == 5  # a blank cell: the schema's default
    assert (sent["a kite"]["sound"], sent["a cat"]["multi_prompt"]) == (
        True,
        [{"prompt": "one", "duration": 3}],
    )
    fox = [body for prompt, body in bodies if prompt == "a fox"]
    assert {(b["duration"], b["aspect_ratio"]) for b in fox} == {(8, "9:16"), (8, "16:9")}
    assert any(b.get("cfg_scale") == 0.7 for b in fox)


async def test_every_line_is_checked_against_the_schema_before_the_first_submit(
    tmp_path: Path,
) -> None:
    jsonl = write(
        tmp_path / "p.jsonl",
        '{"prompt": "a fox"}\n'
        '{"prompt": "a kite", "duration": 40}\n'
        '{"prompt": "a cat"}\n'
        '{"prompt": "a dog", "durtion": 5}\n'
        '{"prompt": "a cow", "aspect_ratio": "4:3"}\n',
    )
    csv = write(tmp_path / "p.csv", "prompt,duration\na fox,5\na kite,ten\n")
    async with simulator() as fake:
        env = cli_env(fake.url)
        bad = await run_cli(
            "batch", str(jsonl), "--out", str(tmp_path / "o"), "--model", KLING, env=env
        )
        bad_csv = await run_cli(
            "batch", str(csv), "--out", str(tmp_path / "c"), "--model", KLING, env=env
        )
        submits = fake.stats.requests["submit"]
    assert bad.code == 2
    said = bad.stderr
    assert f"{jsonl}:2: duration: cannot be 40; {KLING} allows an integer from 3 to 15" in said
    assert f"{jsonl}:4: unknown field(s) durtion; {KLING} takes" in said
    assert f"{jsonl}:5: aspect_ratio: cannot be '4:3'" in said
    assert "3 error(s)" in said
    assert "nothing was submitted" in said
    assert bad_csv.code == 2
    assert f"{csv}:3: duration: must be a whole number, not 'ten'" in bad_csv.stderr
    assert submits == 0


async def test_hailuo_02_and_minimax_hailuo_02_are_one_model_to_a_folder(tmp_path: Path) -> None:
    prompts = write(
        tmp_path / "p.jsonl",
        '{"prompt": "a kite over the dunes"}\n{"prompt": "a red kite", "duration": 10}\n',
    )
    out = tmp_path / "out"
    async with simulator() as fake:
        env = cli_env(fake.url)
        base = ("batch", str(prompts), "--out", str(out), *FAST)
        first = await run_cli(*base, "--model", "minimax-hailuo-02", env=env)
        names = sorted(path.name for path in clips(out))
        keys = sorted(row["key"] for row in ledger(out))
        again = await run_cli(*base, "--model", "hailuo-02", env=env)
        tasks = fake.stats.task_count
    assert first.code == 0, first.stderr
    assert again.code == 0, again.stderr
    assert tasks == 2  # switching the name paid for nothing again
    assert sorted(path.name for path in clips(out)) == names  # nor renamed a clip
    assert sorted(row["key"] for row in ledger(out)) == keys
    assert {entry["model"] for entry in manifest(out)} == {"minimax-hailuo-02"}
    assert "2 of 2 clips made" in again.stderr


async def test_a_model_not_in_the_catalogue_is_refused_before_anything(tmp_path: Path) -> None:
    prompts = write(tmp_path / "p.txt", "a fox\n")
    async with simulator() as fake:
        ran = await run_cli(
            "batch",
            str(prompts),
            "--out",
            str(tmp_path / "o"),
            "--model",
            "sora-2",
            env=cli_env(fake.url),
        )
        submits = fake.stats.requests["submit"]
    assert ran.code == 2
    assert "--model sora-2: 'sora-2' is not in Novita's catalogue for this key" in ran.stderr
    assert KLING in ran.stderr
    assert "`novita-video models` lists them" in ran.stderr
    assert submits == 0
    assert "Traceback" not in ran.stderr


async def test_without_jsonschema_a_catalogue_model_is_refused_naming_the_extra(
    tmp_path: Path,
) -> None:
    prompts = write(tmp_path / "p.txt", "a fox\n")
    code = (
        "import sys; sys.modules['jsonschema'] = None; "
        "from novita_video.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    async with simulator() as fake:
        env = cli_env(fake.url)
        args = ["batch", str(prompts), "--out", str(tmp_path / "o"), *FAST]
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-c", code, *args, "--model", KLING],
                env=env,
                check=False,
                cwd=REPO,
            )
            typed = await anyio.run_process(
                [sys.executable, "-c", code, *args, "--model", "hailuo-02"],
                env=env,
                check=False,
                cwd=REPO,
            )
        tasks = [task.endpoint for task in fake.stats.tasks.values()]
    refused = Ran(done.returncode, done.stdout.decode(), done.stderr.decode())
    assert refused.code == 2
    assert "pip install 'novita-video[catalog]'" in refused.stderr
    assert typed.returncode == 0, typed.stderr.decode()  # our table needs no schema
    assert tasks == ["minimax-hailuo-02"]
