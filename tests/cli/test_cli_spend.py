"""Money in the command (issue 22), through the real command as a subprocess against the
simulator's account: the balance before and after a run reported as spent (summary,
``--json``, the gallery, ``DIR/runs.jsonl``), and ``--max-spend`` stopping a run within
one submit per concurrency slot of the cap, a cap that belongs to the folder."""

from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from novita_video.cli._commands import build_parser
from tests.cli.cli_support import (
    FAST,
    cli_env,
    eventually,
    manifest,
    prompts_file,
    run_cli,
    simulator,
    start_cli,
)
from tests.review.spend_support import PRICE, record, runs
from tests.support import scripted_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.subprocess]


async def test_what_a_run_spent_is_in_the_summary_json_gallery_and_runs_record(
    tmp_path: Path,
) -> None:
    prompts = prompts_file(tmp_path / "p.txt", ["a fox", "a cat", "a dog"])
    out = tmp_path / "out"
    args = ("batch", str(prompts), "--out", str(out), *FAST)
    async with simulator(starting_balance="10") as fake:
        env = cli_env(fake.url)
        first = await run_cli(*args, "--json", env=env)
        again = await run_cli(*args, env=env)
        quiet = await run_cli(*args, "--quiet", env=env)
    assert first.code == 0, first.stderr
    said = "spent $1.29 this run (balance $10.00 -> $8.71; account-wide: other use counts too)"
    assert said in first.stderr
    last = json.loads(first.stdout.splitlines()[-1])["run"]
    assert (last["balance_before"], last["balance_after"], last["spent"]) == ("10", "8.71", "1.29")
    assert (last["prompts"], last["made"], last["exit"], last["stopped"]) == (3, 3, 0, None)
    # The gallery is the latest run's: it says what the folder spent too.
    gallery = (out / "index.html").read_text()
    assert "Spent $0.00 this run" in gallery
    assert "this folder has spent $1.29 since its first run" in gallery
    assert "spent $0.00 this run (balance $8.71 -> $8.71" in again.stderr
    assert quiet.stderr == ""
    lines = runs(out)
    assert [line["spent"] for line in lines] == ["1.29", "0", "0"]
    assert lines[0] == last
    assert record(out)["baseline"]["availableBalance"] == "100000"  # $10.00, the first run's
    assert record(out)["max_spend"] is None


async def test_max_spend_stops_within_one_submit_per_slot_and_belongs_to_the_folder(
    tmp_path: Path,
) -> None:
    slots = 4
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(40)])
    out = tmp_path / "out"
    args = ("batch", str(prompts), "--out", str(out), *FAST, "--concurrency", str(slots))
    async with simulator(starting_balance="20") as fake:
        env = cli_env(fake.url)
        capped = await run_cli(*args, "--max-spend", "3", env=env)
        spent_first = fake.spent()
        kept = await run_cli(*args, env=env)  # the folder's cap, not a fresh $3
        spent_kept = fake.spent()
        raised = await run_cli(*args, "--max-spend", "5", env=env)
        spent_raised = fake.spent()
        lifted = await run_cli(*args, "--max-spend", "none", env=env)
        tasks = fake.stats.task_count
        duplicates = fake.stats.duplicate_submissions
    assert capped.code == 5, capped.stderr
    assert Decimal(3) - slots * PRICE <= spent_first <= Decimal(3) + slots * PRICE
    assert "the spend cap of $3.00 is reached" in capped.stderr
    assert "higher --max-spend" in capped.stderr
    first_line = runs(out)[0]
    assert (first_line["stopped"], first_line["exit"], first_line["max_spend"]) == (
        "spend cap",
        5,
        "3",
    )
    assert kept.code == 5
    assert "keeping this folder's spend cap of $3.00" in kept.stderr
    assert spent_kept == spent_first  # nothing more was sent
    assert raised.code == 5
    assert Decimal(5) - slots * PRICE <= spent_raised <= Decimal(5) + slots * PRICE
    assert lifted.code == 0, lifted.stderr
    assert tasks == 40
    assert duplicates == 0
    assert record(out)["max_spend"] is None


async def test_the_manifest_of_a_capped_run_says_what_was_not_sent(tmp_path: Path) -> None:
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(20)])
    out = tmp_path / "out"
    args = ("batch", str(prompts), "--out", str(out), *FAST, "--max-spend", "1", "--json")
    async with simulator(starting_balance="20") as fake:
        ran = await run_cli(*args, env=cli_env(fake.url))
        made = fake.stats.task_count
    assert ran.code == 5
    assert made == 2  # $0.86 of $1.00: a third would pass it
    entries = manifest(out)
    assert (
        sorted(entry["status"] for entry in entries) == ["not_submitted"] * 18 + ["succeeded"] * 2
    )
    unsent = [entry for entry in entries if entry["status"] == "not_submitted"]
    assert all("spend cap" in entry["error"] for entry in unsent)
    assert json.loads(ran.stdout.splitlines()[-1])["run"]["stopped"] == "spend cap"


async def test_a_crashed_run_cannot_spend_the_folders_cap_again(tmp_path: Path) -> None:
    slots = 2
    prompts = prompts_file(tmp_path / "p.txt", [f"clip number {n}" for n in range(30)])
    out = tmp_path / "out"
    args = (
        "batch", str(prompts), "--out", str(out), "--rpm", "120",
        "--concurrency", str(slots), "--max-spend", "4",
    )  # fmt: skip
    async with simulator(starting_balance="20", task_duration=(1.0, 2.0)) as fake:
        env = cli_env(fake.url)
        process = await start_cli(*args, env=env)
        await eventually(lambda: fake.stats.task_count >= 4)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        killed_at = fake.spent()
        rerun = await run_cli(*args, env=env)
        spent = fake.spent()
    assert killed_at < Decimal(4)
    assert rerun.code == 5, rerun.stderr
    # Both runs together stayed within the one cap (plus what the slots had in flight).
    assert spent <= Decimal(4) + slots * PRICE
    # Not far below it either: a rerun counts the tasks the killed run left running
    # (one a slot) even where the folder saw charges land on acceptance, since other use
    # of the account looks the same (review 4): that may stop it that many tasks early.
    assert spent >= Decimal(4) - 2 * slots * PRICE


async def test_a_cap_that_cannot_be_kept_sends_nothing(tmp_path: Path) -> None:
    prompts = prompts_file(tmp_path / "p.txt", ["a fox"])
    async with scripted_server() as server:  # its balance answer is no balance
        ran = await run_cli(
            "batch", str(prompts), "--out", str(tmp_path / "o"), "--max-spend", "2",
            env=cli_env(server.url),
        )  # fmt: skip
    assert ran.code == 5
    assert "the spend cap of $2.00 cannot be kept: the balance cannot be read" in ran.stderr
    assert server.count("POST", "/v3/async/minimax-video-01") == 0


def test_help_says_other_use_stops_it_earlier_never_later(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["batch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-spend USD" in text
    assert "other use of the account makes the run stop earlier, never later" in text
    assert "one per --concurrency slot" in text
    with pytest.raises(SystemExit):
        build_parser().parse_args(["batch", "p", "--out", "o", "--max-spend", "-3"])
    assert "must be an amount of US dollars >= 0 (or none)" in capsys.readouterr().err


def test_a_folder_keeps_a_price_per_model_and_counts_the_ledgers_outstanding_tasks(
    tmp_path: Path,
) -> None:
    from novita_video.cli._spend import FolderSpend, UnpricedTasksError

    (tmp_path / ".novita").mkdir()
    path = tmp_path / ".novita" / "spend.json"
    # A record of one price per folder (an earlier release): whose it was is not known.
    path.write_text(json.dumps({"version": 1, "spent": "1", "max_spend": "5", "price": "0.23"}))
    folder = FolderSpend.load(tmp_path)
    assert folder.prices == {}
    cap = folder.cap("minimax-video-01")
    assert cap is not None
    assert cap.price is None  # learned again, never the 0.23 of some other model
    kling = Decimal("0.30")
    folder.prices = {
        "minimax-hailuo-02": Decimal("0.23"),
        "minimax-video-01": PRICE,
        "kling-v1.6-t2v": kling,
    }
    folder.charged_at = {"minimax-hailuo-02": "end", "kling-v1.6-t2v": "accept"}
    folder.save()
    again = FolderSpend.load(tmp_path)
    assert again.prices == folder.prices
    assert record(tmp_path)["price"] == str(PRICE)  # what older releases read: the dearest
    # Tasks the ledger holds that may not be charged yet: hailuo-02 is minimax-hailuo-02,
    # at its own price; no model (an early ledger) at the dearest known; those of a model
    # seen charged on acceptance too, at its price (other use of the account while tasks
    # ran looks the same as charges on acceptance: review 4). A named model
    # of unknown price is no longer counted at the dearest known (it may be dearer
    # still, and is charged after the run has spent the room): no cap is made at all,
    # so nothing is sent, which bounds the money at least as tightly as any price would.
    outstanding = {"hailuo-02": 2, None: 1, "kling-v1.6-t2v": 4}
    for model in ("minimax-video-01", "hailuo-02"):
        with pytest.raises(UnpricedTasksError, match=r"1 of wan-t2v.*--max-spend none") as why:
            again.cap(model, outstanding={**outstanding, "wan-t2v": 1})
        assert why.value.models == {"wan-t2v": 1}
    cap = again.cap("minimax-video-01", outstanding=outstanding)
    assert cap is not None
    assert cap.price == PRICE
    assert cap.unseen == 1  # the one of no model, at this model's price (the dearest)
    assert cap.estimate == Decimal(1) + 2 * Decimal("0.23") + PRICE + 4 * kling
    hailuo = again.cap("hailuo-02", outstanding=outstanding)
    assert hailuo is not None
    assert (hailuo.price, hailuo.charged_at) == (Decimal("0.23"), "end")
    assert hailuo.estimate == Decimal(1) + 2 * Decimal("0.23") + PRICE + 4 * kling
    # Seen charged on acceptance but of no known price (a record edited by hand): as
    # unpriced as any other model's, never taken as "in the spending already".
    del again.prices["kling-v1.6-t2v"]
    with pytest.raises(UnpricedTasksError) as why:
        again.cap("minimax-video-01", outstanding=outstanding)
    assert why.value.models == {"kling-v1.6-t2v": 4}


async def test_a_folder_waits_for_its_models_earlier_task_of_unknown_price_not_anothers(
    tmp_path: Path,
) -> None:
    # A task of this model left running by an earlier run, while its price is not known,
    # is the first task: the rerun's cap sends nothing until the run tells it that task
    # ended (here it never does: the tasks' deadline passes, and it stops). A task of
    # another model of known price does not hold this one back (it counts at its price);
    # nor one the run does not follow (a simulator's task, sent again rather than
    # awaited). One of another model of unknown price refuses the cap (it might cost
    # more than the room the run would spend before its charge lands), which sends less
    # than waiting would, never more.
    from novita_video import Balance, SpendCapReachedError
    from novita_video.cli._spend import FolderSpend, UnpricedTasksError
    from tests.support import ManualClock

    (tmp_path / ".novita").mkdir()
    folder = FolderSpend(tmp_path / ".novita" / "spend.json", spent=Decimal("0.5"))
    folder.max_spend = Decimal(5)
    folder.learning = {"minimax-video-01": Decimal("0.25")}
    folder.save()
    folder = FolderSpend.load(tmp_path)
    assert folder.learning == {"minimax-video-01": Decimal("0.25")}

    async def read() -> Balance:
        return Balance(Decimal(10), Decimal(10))

    own = folder.cap("minimax-video-01", outstanding={"minimax-video-01": 1}, task_timeout=60)
    assert own is not None
    assert own.learning_from == Decimal("0.25")  # the fall since then is the price
    clock = ManualClock()
    own.bind(read, clock)
    with pytest.raises(SpendCapReachedError, match="cannot tell what a task costs"):
        await own.admit("m")
    assert clock.now() >= 60
    # The record keeps where the price is learned from, for the run that resumes it.
    assert record(tmp_path)["learning"] == {"minimax-video-01": "0.25"}
    with pytest.raises(UnpricedTasksError, match=r"kling-v1\.6-t2v"):
        folder.cap("minimax-video-01", outstanding={"kling-v1.6-t2v": 1}, task_timeout=60)
    folder.prices = {"kling-v1.6-t2v": Decimal(2)}
    for outstanding, follows in (({"kling-v1.6-t2v": 1}, True), ({"minimax-video-01": 1}, False)):
        other = folder.cap(
            "minimax-video-01", outstanding=outstanding, task_timeout=60, follows=follows
        )
        assert other is not None
        other.bind(read, ManualClock())
        await other.admit("m")  # the first task, at once


def test_a_cap_that_cannot_tell_a_price_does_not_ask_for_a_higher_cap() -> None:
    # A higher --max-spend cannot help a cap that never saw what a task costs (a run of a
    # minute or more of balance readings to reach through the command; the sentence is
    # the command's own).
    from novita_video import SpendCapReachedError
    from novita_video.cli._commands import _explain

    unknown = SpendCapReachedError(
        "the spend cap of $1.00 cannot tell what a task costs: no charge showed",
        Decimal(1),
        Decimal(0),
    )
    reached = SpendCapReachedError("the spend cap of $1.00 is reached", Decimal(1), Decimal(1))
    assert "--max-spend none" in _explain(unknown)
    assert "higher --max-spend" not in _explain(unknown)
    assert "higher --max-spend" in _explain(reached)


def test_a_stop_for_a_first_task_in_doubt_asks_for_no_cap_not_a_wait() -> None:
    # Once the first task's submit is in doubt, no run under the cap learns the price (a
    # prompt in doubt is not followed, nor sent again under it): waiting for charges is
    # no way on, only --max-spend none is.
    from novita_video import SpendCapReachedError
    from novita_video.cli._commands import _explain

    doubt = SpendCapReachedError(
        "the spend cap of $1.00 cannot tell what a task costs: the submit of its first "
        "task is in doubt (no answer came), so that task's end cannot be seen",
        Decimal(1),
        Decimal(0),
    )
    said = _explain(doubt)
    assert "--max-spend none" in said
    assert "once the tasks made have been charged" not in said
    assert "higher --max-spend" not in said


async def test_a_damaged_spend_record_stops_a_capped_run_but_not_one_without_a_cap(
    tmp_path: Path,
) -> None:
    # A run without a cap needs no record of spending: a damaged one must not block it
    # (it blocked every run of the folder, --max-spend none included). The capped run's
    # refusal says how to go on; the run without a cap keeps the damaged file aside.
    prompts = prompts_file(tmp_path / "p.txt", ["a fox", "a cat"])
    out = tmp_path / "out"
    common = ("batch", str(prompts), "--out", str(out), *FAST, "--no-download")
    async with simulator(starting_balance="100", task_duration=(0.2, 0.2)) as fake:
        env = cli_env(fake.url)
        first = await run_cli(*common, "--max-spend", "0.10", env=env)
        path = out / ".novita" / "spend.json"
        path.write_text("{ not json")
        capped = await run_cli(*common, env=env)
        made = fake.stats.task_count
        free = await run_cli(*common, "--max-spend", "none", env=env)
        tasks = fake.stats.task_count
    assert first.code == 5, first.stderr  # the first task alone passes a $0.10 cap
    assert capped.code == 2, capped.stderr
    assert "--max-spend none" in capped.stderr
    assert made == 1
    assert free.code == 0, free.stderr
    assert tasks == 2
    assert (out / ".novita" / "spend.json.damaged").read_text() == "{ not json"
    assert record(out)["max_spend"] is None
