"""The command's promise, as a property: whatever a user does to the prompts file and to
the runs, and whatever the server does, no prompt is paid for twice and none is lost.

Hypothesis draws a story: a prompts file, then a few runs of ``novita-video batch`` into
one folder, each after an edit of the file (a line inserted, deleted, duplicated, the
lines reordered, a text changed, the ``--model`` switched), each maybe interrupted
(SIGINT, SIGTERM or SIGKILL once the simulator has seen some of its submits) and maybe
under a server fault (submits answered 500 after the task was made, connections dropped
after the task was made, a task-result outage, a bad key). Then one clean run.

The judge is the simulator's own record of the tasks it made (``SimulatorStats``):

* every prompt of any version of the file was paid for at most once: a prompt without an
  ``id`` is its model, its text and which occurrence of that text it is, so a text is
  paid for at most as many times as it ever stood in one version under one model; a
  prompt with an ``id`` is paid for at most once, whatever its text became;
* after the clean run, every prompt of the final file is in the manifest, and every one
  not made says why (failed, in doubt, refused, not submitted);
* every task whose id reached the command is in the ledger and, when its prompt is in the
  final file, in the manifest (only a SIGKILL between the answer and the ledger's commit
  may leave it "in doubt" instead);
* no clip file holds another task's clip: a proxy between the command and the simulator
  stamps each served clip with its task id.

It runs the real command as a subprocess, tens of times: marked slow (a few minutes on
CI's 2 cores); ``derandomize`` keeps CI's examples the same from run to run.
"""

from __future__ import annotations

import json
import os
import signal
import struct
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from novita_video.testing import Chaos, FakeNovita
from tests.cli.cli_support import KEY, cli_env, forward, ledger, manifest, run_cli, start_cli
from tests.support import serve_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]

MODELS = ("minimax-video-01", "kling-v1.6-t2v")
TEXTS = ("a panda in bamboo", "a red kite", "a fox in snow")
IDS = ("shot-x", "shot-y")
SIGNALS = {
    "SIGINT": signal.SIGINT,
    "SIGTERM": signal.SIGTERM,
    "SIGHUP": signal.SIGHUP,
    "SIGKILL": signal.SIGKILL,
}
#: What a run stopped by a signal may exit with: the signal's own code, or its end if it
#: finished first (0, or 1 when a prompt was not made).
#: A signal that comes before the command is listening (Python still importing) ends it as
#: the signal's default does, before anything was sent.
EXITS = {"SIGINT": {130, -2}, "SIGTERM": {143, -15}, "SIGHUP": {129, -1}, "SIGKILL": {-9}}


def _free_box(task_id: str) -> bytes:
    # An MP4 'free' box: players skip it, so the clip stays a clip.
    payload = f"novita-task:{task_id}".encode()
    return struct.pack(">I4s", 8 + len(payload), b"free") + payload


@attrs.frozen
class Line:
    text: str
    id: str | None = None

    def json(self) -> str:
        item: dict[str, str] = {"prompt": self.text}
        if self.id is not None:
            item["id"] = self.id
        return json.dumps(item)


@attrs.frozen
class Step:
    edit: tuple[Any, ...]
    model: str
    stop: tuple[str, int] | None  # a signal and after how many new submits
    fault: str | None


lines = st.one_of(
    st.builds(Line, st.sampled_from(TEXTS)),
    st.builds(Line, st.sampled_from(TEXTS), st.sampled_from(IDS)),
)
edits = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 8), lines),
    st.tuples(st.just("delete"), st.integers(0, 8)),
    st.tuples(st.just("duplicate"), st.integers(0, 8)),
    st.tuples(st.just("reorder"), st.randoms(use_true_random=False)),
    st.tuples(st.just("retext"), st.integers(0, 8), st.sampled_from(TEXTS)),
    st.tuples(st.just("none")),
)
steps = st.builds(
    Step,
    edits,
    st.sampled_from(MODELS),
    # Half the runs are stopped, half meet a fault: the rare paths are the point.
    st.one_of(st.none(), st.tuples(st.sampled_from(sorted(SIGNALS)), st.integers(0, 3))),
    st.sampled_from([None, None, None, "submit_500", "drop_after", "outage", "bad_key"]),
)


def edited(current: list[Line], edit: tuple[Any, ...]) -> list[Line]:
    kind, *args = edit
    result = list(current)
    if kind == "insert":
        result.insert(args[0] % (len(result) + 1), args[1])
    elif kind == "delete" and result:
        del result[args[0] % len(result)]
    elif kind == "duplicate" and result:
        at = args[0] % len(result)
        result.insert(at, result[at])
    elif kind == "reorder":
        args[0].shuffle(result)
    elif kind == "retext" and result:
        at = args[0] % len(result)
        result[at] = attrs.evolve(result[at], text=args[1])
    # Two lines with one id are an error the command refuses (tested elsewhere): keep
    # the first of each id here, so that every run is one the command accepts.
    seen: set[str] = set()
    kept = []
    for line in result:
        if line.id is not None:
            if line.id in seen:
                line = attrs.evolve(line, id=None)
            seen.add(line.id or "")
        kept.append(line)
    return kept


class StampingProxy:
    """Forwards to the simulator; stamps every clip it serves with its task id."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        status, body, content_type = await forward(self.upstream, request, await request.read())
        if request.path.startswith("/storage/") and status == 200:
            body += _free_box(request.path.rsplit("/", 1)[-1].removesuffix(".mp4"))
        body = body.replace(self.upstream.encode(), self.url.encode())
        return web.Response(status=status, body=body, content_type=content_type)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[StampingProxy]:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        async with serve_app(app) as url:
            self.url = url
            yield self


class Story:
    """The runs of one example, and what the judge needs to know of them."""

    def __init__(self, fake: FakeNovita, proxy: StampingProxy, folder: Path) -> None:
        self.fake = fake
        self.proxy = proxy
        self.folder = folder
        self.out = folder / "out"
        self.prompts = folder / "prompts.jsonl"
        # (model, text) -> the most lines that text had in one version under that model;
        # (model, id) -> every text that id has had.
        self.most: Counter[tuple[str, str]] = Counter()
        self.id_texts: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        self.killed = False

    def write(self, current: list[Line], model: str) -> None:
        self.prompts.write_text("".join(line.json() + "\n" for line in current), encoding="utf-8")
        counts = Counter(line.text for line in current if line.id is None)
        for text, count in counts.items():
            self.most[model, text] = max(self.most[model, text], count)
        for line in current:
            if line.id is not None:
                self.id_texts[model, line.id].add(line.text)

    def args(self, model: str) -> tuple[str, ...]:
        return (
            "batch",
            str(self.prompts),
            "--out",
            str(self.out),
            "--model",
            model,
            "--rpm",
            "6000",
            "--concurrency",
            "2",
            "--task-timeout",
            "60",
        )

    async def run(self, step: Step) -> None:
        key = "sk-not-the-key" if step.fault == "bad_key" else KEY
        self.fake.chaos = {
            "submit_500": Chaos(
                submit_server_errors=0.5, server_error_statuses=(500,), submit_500_creates=1.0
            ),
            "drop_after": Chaos(submit_drops_after=0.4),
            "outage": Chaos(result_server_errors=1.0, server_error_statuses=(503,)),
        }.get(step.fault or "", Chaos())
        env = cli_env(self.proxy.url, key=key)
        async with anyio.create_task_group() as tg:
            if step.fault == "outage":
                tg.start_soon(self._end_outage_after, 1.5)
            if step.stop is None:
                ran = await run_cli(*self.args(step.model), env=env)
                assert "Traceback" not in ran.stderr, ran.stderr
            else:
                await self._stopped(step.model, env, *step.stop)
        self.fake.chaos = Chaos()

    async def _end_outage_after(self, seconds: float) -> None:
        # Real time: the outage must outlast several of the command's polls.
        await anyio.sleep(seconds)
        self.fake.chaos = Chaos()

    async def _stopped(self, model: str, env: dict[str, str], name: str, after: int) -> None:
        start = self.fake.stats.requests["submit"]
        process = await start_cli(*self.args(model), env=env)
        try:
            with anyio.fail_after(60):
                while self.fake.stats.requests["submit"] - start < after:
                    if process.returncode is not None:
                        break
                    await anyio.sleep(0.005)
            if process.returncode is None:
                process.send_signal(SIGNALS[name])
                self.killed |= name == "SIGKILL"
        finally:
            with anyio.fail_after(60):
                code = await process.wait()
        assert code in EXITS[name] | {0, 1, 2, 3}, (name, code)

    def judge(self, final: list[Line], model: str) -> None:
        stats = self.fake.stats
        tasks = stats.tasks

        # Paid at most once per prompt (see the module docstring).
        made: Counter[tuple[str, str]] = Counter(
            (record.endpoint, record.request.prompt) for record in tasks.values()
        )
        id_texts = {text for texts in self.id_texts.values() for text in texts}
        for (endpoint, text), count in made.items():
            if text in id_texts and (endpoint, text) not in self.most:
                continue  # only ever an id line's text: judged below
            by_ids = sum(
                1 for (m, _), texts in self.id_texts.items() if m == endpoint and text in texts
            )
            assert count <= self.most[endpoint, text] + by_ids, (endpoint, text, count)
        for (endpoint, user_id), texts in self.id_texts.items():
            plain = sum(self.most[endpoint, text] for text in texts)
            paid = sum(made[endpoint, text] for text in texts)
            assert paid <= 1 + plain, (endpoint, user_id, texts, paid)

        # The final file, each prompt accounted for.
        entries = manifest(self.out)
        assert sorted(e["prompt"] for e in entries) == sorted(line.text for line in final)
        why = {"failed", "unknown", "rejected", "not_submitted"}
        for entry in entries:
            if entry["status"] != "succeeded":
                assert entry["status"] in why, json.dumps(entry)
                assert entry["error"], json.dumps(entry)

        # Every task whose id came back is recorded.
        answered = set(tasks) - set(stats.unanswered_tasks)
        recorded = {row["task_id"] for row in ledger(self.out) if row["task_id"]}
        in_doubt = sum(1 for row in ledger(self.out) if row["state"] in ("sending", "unknown"))
        missing = answered - recorded
        assert not missing or (self.killed and len(missing) <= in_doubt), missing
        listed = {e["task_id"] for e in entries if e["task_id"]}
        for entry in entries:
            if entry["task_id"]:
                assert tasks[entry["task_id"]].endpoint == model
        final_texts = {line.text for line in final}
        unlisted: Counter[str] = Counter()
        for task_id in answered & recorded:
            record = tasks[task_id]
            if record.endpoint == model and record.request.prompt in final_texts:
                # Listed, unless another occurrence of the same text holds the line now.
                same = [e for e in entries if e["prompt"] == record.request.prompt]
                if task_id not in listed and not all(e["task_id"] for e in same):
                    unlisted[record.request.prompt] += 1
        for text, count in unlisted.items():
            # A line of this text holds no task (its submit in doubt: the id never came
            # back), so these tasks are not its: each must be of an occurrence of the text
            # that has left the file since (a line deleted), or of an id line's old text.
            held = sum(1 for line in final if line.text == text and line.id is None)
            left = self.most[model, text] - held
            by_ids = sum(
                1 for (m, _), texts in self.id_texts.items() if m == model and text in texts
            )
            assert count <= left + by_ids, (text, count, left, by_ids)

        # No clip file holds another task's clip, and no file serves two prompts.
        files = [e["file"] for e in entries if e["status"] == "succeeded" and e["file"]]
        assert len(files) == len(set(files))
        for entry in entries:
            if entry["status"] == "succeeded" and entry["file"]:
                body = (self.out / entry["file"]).read_bytes()
                assert body.endswith(_free_box(entry["task_id"])), entry


@pytest.mark.timeout(900)
@settings(
    max_examples=int(os.environ.get("NOVITA_PROPERTY_EXAMPLES", "12")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    first=st.lists(lines, min_size=1, max_size=5),
    story=st.lists(steps, min_size=1, max_size=3),
    last_model=st.sampled_from(MODELS),
)
async def test_no_prompt_paid_twice_none_lost(
    tmp_path_factory: pytest.TempPathFactory,
    first: list[Line],
    story: list[Step],
    last_model: str,
) -> None:
    folder = tmp_path_factory.mktemp("story")
    async with FakeNovita(api_key=KEY, task_duration=(0.2, 0.8), failure_rate=0.1) as fake:
        async with StampingProxy(fake.url).serving() as proxy:
            tale = Story(fake, proxy, folder)
            current = edited(first, ("none",))
            for step in story:
                current = edited(current, step.edit)
                tale.write(current, step.model)
                await tale.run(step)
            current = current or [Line(TEXTS[0])]  # an empty file is refused (tested elsewhere)
            tale.write(current, last_model)
            final = await run_cli(*tale.args(last_model), env=cli_env(proxy.url))
            assert final.code in (0, 1), final.stderr
            tale.judge(current, last_model)
