"""Review of issue 20: a prompt's identity across edits a user or a tool makes."""

from __future__ import annotations

from pathlib import Path

from novita_video.cli._inputs import PromptSource


def _keys(path: Path, text: str, model: str) -> list[str]:
    path.write_text(text, encoding="utf-8")
    source = PromptSource(str(path), model=model)
    assert source.validate().error_count == 0
    return [row.key for row in source.rows()]


def test_a_number_written_1_or_1_0_is_one_prompt(tmp_path: Path) -> None:
    model = "kling-v1.6-t2v"
    as_int = _keys(tmp_path / "a.jsonl", '{"prompt": "a panda", "guidance_scale": 1}\n', model)
    as_float = _keys(tmp_path / "b.jsonl", '{"prompt": "a panda", "guidance_scale": 1.0}\n', model)
    from_csv = _keys(tmp_path / "c.csv", "prompt,guidance_scale\na panda,1\n", model)
    assert as_int == as_float == from_csv
