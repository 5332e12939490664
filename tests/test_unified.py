"""Every catalogue model (issue 22): discovered from Novita's catalogue, checked by its JSON
Schema before anything is sent, submitted to ``/v3/video/create``; over HTTP against the
simulator, and against odd answers of a scripted server.

The shapes marked unconfirmed in the reference notes (the catalogue's wrapper, entries
without a description or with other keys, a schema sent as a string, the unified
submit's answer, the ``task_type`` such tasks report) are read leniently, each variant
tested. ``hailuo-02`` of the catalogue is our ``minimax-hailuo-02``: one route, one
identity, and its table and schema agree.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from novita_video import (
    CatalogModel,
    CatalogRequest,
    Client,
    HailuoRequest,
    InvalidRequestError,
    ProtocolError,
    Submission,
    VideoRequest,
)
from novita_video._catalog import MINIMAX_HAILUO_02, Field
from novita_video._unified import parse_catalog
from novita_video.cli._inputs import Row
from novita_video.testing import FakeNovita
from novita_video.testing._unified import UNIFIED_MODELS
from tests.support import ManualClock, scripted_server, simulated

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
KLING = "kling-v3.0-pro-t2v"
CATALOG = "/v3/admin/video-unify-api/config"
UNIFIED = "/v3/video/create"


def entry(name: str, schema: Any, **more: Any) -> dict[str, Any]:
    return {"model": name, "json_schema": schema, **more}


SMALL = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "maxLength": 100},
        "duration": {"type": "integer", "enum": [5, 10], "default": 5},
    },
    "required": ["prompt"],
}


# The catalogue.


async def test_models_reads_every_model_with_its_fields() -> None:
    async with simulated() as (fake, client):
        models = {model.name: model for model in await client.models()}
    assert len(models) >= 8
    assert {KLING, "hailuo-2.3-t2v", "seedance-v1.5-pro-t2v", "wan-2.6-t2v"} <= set(models)
    kling = models[KLING]
    assert kling.description.startswith("Kling v3.0 Pro")
    assert kling.required == ("prompt",)
    duration = kling.field("duration")
    assert (duration.type, duration.minimum, duration.maximum, duration.default) == (
        "integer",
        3,
        15,
        5,
    )
    assert kling.field("aspect_ratio").choices == ("16:9", "9:16", "1:1")
    assert kling.field("prompt").max_length == 2500
    assert duration.allows() == "an integer from 3 to 15 (default 5)"
    seedance = models["seedance-v1.5-pro-t2v"]
    assert seedance.field("duration").default is None  # the page names no default
    assert fake.stats.requests["catalog"] == 1


async def test_the_catalogue_is_fetched_once_and_kept_ten_minutes() -> None:
    clock = ManualClock()
    async with simulated(clock=clock) as (fake, client):
        together: list[tuple[CatalogModel, ...]] = []

        async def ask() -> None:
            together.append(await client.models())

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(ask)
        assert fake.stats.requests["catalog"] == 1
        assert all(models is together[0] for models in together)
        clock.advance(599)
        await client.models()
        assert fake.stats.requests["catalog"] == 1
        clock.advance(2)
        await client.models()
        assert fake.stats.requests["catalog"] == 2
        await client.models(max_age=0)
        assert fake.stats.requests["catalog"] == 3


async def test_odd_entries_are_skipped_with_a_log_line_never_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    odd = [
        entry("fine", SMALL, description="A fine model", category="video", price="?"),
        "not an object",
        {"model": 7, "json_schema": SMALL},
        {"description": "no name", "json_schema": SMALL},
        {"model": "no-schema", "description": "its schema is missing"},
        entry("broken", {"type": 12}),
        entry("as-text", json.dumps(SMALL)),  # a schema sent as a JSON string
        entry("bare", {"type": "object"}),  # no description, no properties
        entry("fine", {"type": "object"}, description="listed twice"),
    ]
    with caplog.at_level(logging.WARNING, logger="novita_video"):
        async with simulated(catalog=odd) as (_, client):
            models = {model.name: model for model in await client.models()}
    assert list(models) == ["fine", "as-text", "bare"]
    assert models["fine"].description == "A fine model"
    assert models["bare"].description == ""
    assert models["bare"].fields == ()
    assert models["as-text"].field("duration").choices == (5, 10)
    said = " | ".join(record.getMessage() for record in caplog.records)
    for why in ("entry 1", "entry 2", "entry 3", "no-schema", "broken", "listed twice"):
        assert why in said


@pytest.mark.parametrize(
    "body",
    [
        {"configs": [entry("m", SMALL)]},
        {"data": {"configs": [entry("m", SMALL)]}},
        {"data": [entry("m", SMALL)]},
        [entry("m", SMALL)],
        {"configs": [entry("m", SMALL)], "total": 1, "next": None},
    ],
    ids=["documented", "wrapped", "wrapped-list", "bare-list", "extra-keys"],
)
async def test_the_catalogue_is_read_in_every_shape_seen(body: Any) -> None:
    async with scripted_server() as server:
        server.script(CATALOG, ("json", 200, body))
        async with Client("sk-test", base_url=server.url) as client:
            assert [model.name for model in await client.models()] == ["m"]
    # The key is sent (whether the catalogue needs it is unconfirmed).
    assert server.seen[0][2]["Authorization"] == "Bearer sk-test"


async def test_an_answer_that_is_no_catalogue_is_a_protocol_error() -> None:
    async with scripted_server() as server:
        server.script(CATALOG, ("json", 200, {"models": "none"}))
        # The client retries a GET as its policy says; the manual clock skips the waits
        # between the tries (13 s of real time), not the tries.
        clock = ManualClock()
        async with Client("sk-test", base_url=server.url, clock=clock) as client:
            with pytest.raises(ProtocolError, match="catalogue"):
                await client.models()


# Checked before anything is sent.


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"prompt": "a fox", "duration": 40}, "duration", "from 3 to 15"),
        ({"prompt": "a fox", "duration": "5"}, "duration", "an integer"),
        ({"prompt": "a fox", "aspect_ratio": "4:3"}, "aspect_ratio", "one of '16:9'"),
        ({"prompt": "x" * 2501}, "prompt", "has 2501 characters"),
        ({"duration": 5}, "prompt", "is required"),
        ({"prompt": "a fox", "durtion": 5}, "durtion", "has no field durtion"),
        ({"prompt": "a fox", "multi_prompt": [{"prompt": 3}]}, "multi_prompt", "[0][prompt]"),
        ({"prompt": "a fox", "model": KLING}, "model", "is the request's model"),
    ],
)
async def test_a_wrong_field_is_named_with_what_the_schema_allows_and_nothing_is_sent(
    body: dict[str, Any], field: str, words: str
) -> None:
    async with simulated() as (fake, client):
        with pytest.raises(InvalidRequestError) as raised:
            await client.submit(CatalogRequest(KLING, body))
        outcomes = [o async for o in client.generate([body], model=KLING)]
    assert raised.value.field == field
    assert words in str(raised.value)
    assert outcomes[0].error is not None
    assert outcomes[0].error.args == raised.value.args
    assert outcomes[0].submission is Submission.NOT_SENT
    assert fake.stats.requests["submit"] == 0


async def test_an_unknown_model_is_refused_naming_the_ones_there_are() -> None:
    async with simulated() as (fake, client):
        with pytest.raises(InvalidRequestError, match=f"'sora-2' is not in .*{KLING}"):
            await client.submit(CatalogRequest("sora-2", {"prompt": "a fox"}))
        with pytest.raises(InvalidRequestError, match="model name"):
            client.generate(["a fox"], model="not a name!")
    assert fake.stats.requests["submit"] == 0


# Sent to the unified endpoint.


async def test_a_catalogue_request_goes_to_the_unified_endpoint_and_makes_a_clip(
    tmp_path: Path,
) -> None:
    async with simulated(task_duration=(0.2, 0.4)) as (fake, client):
        task_id = await client.submit(CatalogRequest(KLING, {"prompt": "a fox", "duration": 8}))
        result = await client.wait(task_id, timeout=30)
        path = await client.download(result, tmp_path / "fox.mp4")
    task = fake.task(task_id)
    assert task.endpoint == KLING
    # The server filled in the schema's defaults; what was sent is the request's.
    assert dict(task.request.body) == {
        "prompt": "a fox",
        "duration": 8,
        "sound": False,
        "cfg_scale": 0.5,
        "aspect_ratio": "16:9",
    }
    assert result.ok
    assert result.task_type == "KLING_V3_0_PRO_T2V"
    assert path.stat().st_size > 0


async def test_generate_takes_prompts_mappings_and_requests_of_a_catalogue_model() -> None:
    items: list[Any] = [
        "a fox",
        {"prompt": "a kite", "resolution": "1080P", "duration": 10},  # 1080P: 6 s only
        {"prompt": "a cat", "duration": 10},
        CatalogRequest("hailuo-2.3-t2v", {"prompt": "a dog"}),
        7,
    ]
    async with simulated(task_duration=(0.2, 0.4)) as (fake, client):
        outcomes = sorted(
            [o async for o in client.generate(items, model="hailuo-2.3-t2v")],
            key=lambda o: o.index,
        )
    assert [o.ok for o in outcomes] == [True, False, True, True, False]
    assert isinstance(outcomes[1].error, InvalidRequestError)
    assert outcomes[1].error.field == "duration"
    assert "must be a str, a request or a mapping of hailuo-2.3-t2v's fields, not int" in str(
        outcomes[4].error
    )
    prompts = sorted(task.request.prompt for task in fake.stats.tasks.values())
    assert prompts == ["a cat", "a dog", "a fox"]
    assert {task.endpoint for task in fake.stats.tasks.values()} == {"hailuo-2.3-t2v"}


@pytest.mark.parametrize(
    "answer",
    [
        {"task_id": "t-unified"},
        {"data": {"task_id": "t-unified"}},
        {"task_id": "t-unified", "model": KLING, "status": "queued"},
    ],
    ids=["documented", "wrapped", "extra-keys"],
)
async def test_the_unified_answer_and_its_task_type_are_read_leniently(
    answer: dict[str, Any],
) -> None:
    schema = UNIFIED_MODELS[KLING].schema
    async with scripted_server() as server:
        server.script(CATALOG, ("json", 200, {"configs": [entry(KLING, dict(schema))]}))
        server.script(UNIFIED, ("json", 200, answer))
        done = {"task_id": "t-unified", "status": "TASK_STATUS_SUCCEED", "task_type": "KLING3"}
        server.script("/v3/async/task-result", ("json", 200, {"task": done, "videos": []}))
        async with Client("sk-test", base_url=server.url) as client:
            task_id = await client.submit(CatalogRequest(KLING, {"prompt": "a fox"}))
            result = await client.wait(task_id)
    assert task_id == "t-unified"
    assert result.task_type == "KLING3"
    posted = [
        body
        for (_, path, _), body in zip(server.seen, server.bodies, strict=True)
        if path == UNIFIED
    ]
    assert [json.loads(body) for body in posted] == [{"model": KLING, "prompt": "a fox"}]


# hailuo-02: one model, whichever name.


async def test_hailuo_02_goes_its_typed_route_without_the_catalogue() -> None:
    async with simulated(task_duration=(0.2, 0.4)) as (fake, client):
        task_id = await client.submit(CatalogRequest("hailuo-02", {"prompt": "a kite"}))
        outcomes = [o async for o in client.generate(["a kite"], model="hailuo-02")]
        with pytest.raises(InvalidRequestError, match="resolution"):
            await client.submit(
                CatalogRequest(
                    "hailuo-02", {"prompt": "a kite", "resolution": "1080P", "duration": 10}
                )
            )
    assert fake.task(task_id).endpoint == "minimax-hailuo-02"
    assert outcomes[0].ok
    assert isinstance(outcomes[0].request, HailuoRequest)
    assert "catalog" not in fake.stats.requests  # never fetched: our table is enough


def test_both_names_are_one_prompt_to_the_ledger_and_old_keys_stay() -> None:
    # The keys a folder made before this change holds (computed by main's code).
    typed = Row(1, 1, HailuoRequest("a kite over the dunes"))
    assert typed.key == "08b37f57d91ca164dd2326bee534d851072b99b5d748a56b8a6bf8ed784fc58f"
    by_name = Row(1, 1, CatalogRequest("hailuo-02", {"prompt": "a kite over the dunes"}))
    assert by_name.key == typed.key
    with_id = Row(1, 1, CatalogRequest("hailuo-02", {"prompt": "x", "duration": 10}), id="k7")
    assert with_id.key == "85d915ee934706df610875d32a856297f0fbb1b376edb89cc037e3c5fc336b30"
    second = Row(1, 1, VideoRequest("a panda walks through bamboo"), occurrence=2)
    assert second.key == "72a5b33f6b2b728474290b62202d673d42a730ba36e93235a631f869cfd2ff2d"
    # Another catalogue model is known by its own name and fields.
    kling = Row(1, 1, CatalogRequest(KLING, {"prompt": "a kite over the dunes"}))
    assert kling.key != typed.key


def _schema_kind(field: Field) -> dict[str, Any]:
    # What our table's field says, in JSON Schema words.
    if field.kind == "choice":
        kind = "integer" if isinstance(field.choices[0], int) else "string"
        return {"type": kind, "enum": list(field.choices)}
    if field.kind == "text":
        return {"type": "string", "minLength": field.low, "maxLength": field.high}
    return {"type": {"bool": "boolean", "image": "string", "url": "string"}[field.kind]}


def test_the_table_and_the_schema_of_hailuo_02_agree() -> None:
    schema = UNIFIED_MODELS["hailuo-02"].schema
    properties = schema["properties"]
    assert list(properties) == [field.name for field in MINIMAX_HAILUO_02.fields]
    for field in MINIMAX_HAILUO_02.fields:
        spec = properties[field.name]
        for keyword, value in _schema_kind(field).items():
            assert spec.get(keyword) == value, (field.name, keyword)
        assert spec.get("default") == field.default, field.name
        assert (field.name in schema["required"]) is field.required
    # The rule between fields (1080P only at 6 s) is in both: the same bodies pass.
    (model,) = parse_catalog({"configs": [UNIFIED_MODELS["hailuo-02"].entry()]})
    for body in (
        {"prompt": "a", "resolution": "1080P"},
        {"prompt": "a", "resolution": "1080P", "duration": 10},
        {"prompt": "a", "duration": 10},
        {"prompt": "a", "duration": 7},
        {"prompt": "", "duration": 6},
        {"prompt": "a", "fast_pretreatment": "yes"},
    ):
        typed_ok = schema_ok = True
        try:
            HailuoRequest(**body)
        except (InvalidRequestError, TypeError):
            typed_ok = False
        try:
            model.check(body)
        except InvalidRequestError:
            schema_ok = False
        assert typed_ok is schema_ok, body


def test_every_simulated_schema_is_valid_and_says_where_it_comes_from() -> None:
    import jsonschema

    assert len(UNIFIED_MODELS) >= 8
    for name, model in UNIFIED_MODELS.items():
        checker = jsonschema.validators.validator_for(model.schema)
        checker.check_schema(dict(model.schema))
        assert model.page.startswith("https://novita.ai/docs/api-reference/model-apis-"), name
        assert model.checked == "2026-12-06"
        assert "prompt" in model.schema["properties"], name


async def test_the_simulator_checks_unified_bodies_and_fills_their_defaults() -> None:
    async with FakeNovita() as fake:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        async with aiohttp.ClientSession(fake.url, headers=headers) as http:

            async def post(body: Any) -> tuple[int, Any]:
                async with http.post(UNIFIED, json=body) as answer:
                    return answer.status, await answer.json()

            assert (await post({"prompt": "a fox"}))[1]["message"].startswith("model is required")
            status, said = await post({"model": "sora-2", "prompt": "a fox"})
            assert (status, said["reason"]) == (400, "INVALID_REQUEST_BODY")
            status, said = await post({"model": KLING, "prompt": "a fox", "duration": 99})
            assert status == 400
            assert said["message"].startswith("duration:")
            first = await post({"model": KLING, "prompt": "a fox"})
            again = await post({"model": KLING, "prompt": "a fox", "duration": 5})
            assert first[0] == again[0] == 200
        async with aiohttp.ClientSession(fake.url) as anonymous:  # the docs page has no key
            async with anonymous.get(CATALOG) as answer:
                assert answer.status == 200
                body = await answer.json()
    assert len(body["configs"]) == len(UNIFIED_MODELS)
    assert all({"model", "description", "json_schema"} <= set(e) for e in body["configs"])
    assert fake.stats.duplicate_submissions == 1  # duration 5 is the default: the same


def test_without_jsonschema_a_catalogue_request_is_refused_naming_the_extra() -> None:
    # A fresh interpreter in which `import jsonschema` fails, as when the extra is not
    # installed: nothing of a catalogue request is sent; hailuo-02 still works (typed).
    script = textwrap.dedent(
        """
        import sys
        sys.modules["jsonschema"] = None
        import anyio
        from novita_video import CatalogRequest, Client, InvalidRequestError
        from novita_video.testing import FakeNovita

        async def main() -> None:
            async with FakeNovita(task_duration=(0.1, 0.2)) as fake:
                async with Client(fake.api_key, base_url=fake.url) as client:
                    try:
                        await client.submit(CatalogRequest("kling-v3.0-pro-t2v", {"prompt": "a"}))
                    except InvalidRequestError as error:
                        print("refused:", error)
                    outcomes = [o async for o in client.generate(["b"], model="wan-2.6-t2v")]
                    print("batch:", outcomes[0].submission.name, outcomes[0].error)
                    models = await client.models()
                    print("listed:", len(models))
                    task_id = await client.submit(CatalogRequest("hailuo-02", {"prompt": "c"}))
                    print("typed:", fake.task(task_id).endpoint)
                print("submits:", fake.stats.requests["submit"], fake.stats.task_count)

        anyio.run(main)
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    lines = dict(line.split(": ", 1) for line in ran.stdout.splitlines())
    assert "pip install 'novita-video[catalog]'" in lines["refused"]
    assert lines["batch"].startswith("NOT_SENT")
    assert "novita-video[catalog]" in lines["batch"]
    assert int(lines["listed"]) >= 8  # listing the catalogue needs no validator
    assert lines["typed"] == "minimax-hailuo-02"
    assert lines["submits"] == "1 1"


def test_a_catalogue_model_makes_a_checked_request_itself() -> None:
    (model,) = parse_catalog({"configs": [UNIFIED_MODELS[KLING].entry()]})
    assert isinstance(model, CatalogModel)
    request = model.request({"prompt": "a fox"}, duration=6)
    assert request == CatalogRequest(KLING, {"prompt": "a fox", "duration": 6})
    with pytest.raises(InvalidRequestError, match="duration"):
        model.request(prompt="a fox", duration=2)
    with pytest.raises(InvalidRequestError, match="JSON-serialisable"):
        CatalogRequest(KLING, {"prompt": object()})


def test_a_prompt_file_for_a_catalogue_model(tmp_path: Path) -> None:
    from novita_video.cli._inputs import PromptSource

    (kling,) = parse_catalog({"configs": [UNIFIED_MODELS[KLING].entry()]})
    (bare,) = parse_catalog({"configs": [entry("bare", {"type": "object"})]})
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a", "mood": "calm"}\n{"prompt": "b", "duration": null}\n')
    found = PromptSource(str(jsonl), model=kling).validate()
    assert [str(error) for error in found.errors] == [
        f"{jsonl}:1: unknown field(s) mood; {KLING} takes sound, prompt, duration, cfg_scale,"
        " aspect_ratio, multi_prompt, negative_prompt, id (--model chooses another model)"
    ]
    anything = PromptSource(str(jsonl), model=bare)
    assert anything.validate().error_count == 0  # a schema listing no fields takes any
    rows = list(anything.rows())
    assert [dict(row.request.body) for row in rows] == [
        {"prompt": "a", "mood": "calm"},
        {"prompt": "b"},
    ]
    csv = tmp_path / "p.csv"
    csv.write_text(
        'prompt,multi_prompt,sound\na,"[{""prompt"": ""x"", ""duration"": 3}]",yes\nb,[oops,\n'
    )
    source = PromptSource(str(csv), model=kling)
    checked = source.validate()
    assert [str(error) for error in checked.errors] == [
        f"{csv}:3: multi_prompt: must be a JSON list, not '[oops'"
    ]
    csv.write_text('prompt,multi_prompt,sound\na,"[{""prompt"": ""x"", ""duration"": 3}]",yes\n')
    (row,) = PromptSource(str(csv), model=kling).rows()
    assert dict(row.request.body) == {
        "prompt": "a",
        "multi_prompt": [{"prompt": "x", "duration": 3}],
        "sound": True,
    }
