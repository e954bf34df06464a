"""Mix: unreadable rows (lone surrogate, deep nesting) quarantined with counts that reconcile;
prompt-only rows refused per row; a mix of zero rows refused (nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specforge_assets.checks import mix as checks
from specforge_assets.errors import UserError
from specforge_assets.mix.mix import MixError, build_mix


def conv(i: int) -> dict:
    return {
        "id": f"c{i}",
        "conversations": [
            {"role": "user", "content": f"question number {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ],
    }


def prompt_only(i: int) -> dict:
    return {"id": f"p{i}", "conversations": [{"role": "user", "content": f"please answer {i}"}]}


def write(root: Path, key: str, lines: list[str]) -> None:
    d = root / "sources" / key
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.jsonl").write_text("".join(l + "\n" for l in lines), encoding="utf-8")


def test_unreadable_and_prompt_only_rows_are_quarantined(tmp_path):
    lone = '{"id": "lone", "conversations": [{"role": "user", "content": "broken \\ud83d"}, {"role": "assistant", "content": "ok"}]}'
    deep = '{"id": "deep", "x": ' + "[" * 200 + "]" * 200 + "}"
    lines = [json.dumps(conv(i)) for i in range(10)] + [lone, deep, json.dumps(prompt_only(1))]
    write(tmp_path, "a", lines)
    rep = build_mix(tmp_path, {"eval": {"fraction": 0}})
    assert rep["rows_in"] == 13 and rep["train_rows"] == 10 and rep["test_rows"] == 0
    assert rep["quarantined_rows"] == 3 and rep["rows_no_assistant_turn"] == 1
    q = [json.loads(l) for l in open(tmp_path / "mix" / "quarantine.jsonl")]
    assert [(x["line"], x.get("field"), x["reason"]) for x in q] == [
        (11, "conversations[0].content", "invalid JSON: lone surrogate \\ud83d at char 7"),
        (12, "x", "invalid JSON: JSON nested deeper than 128 levels"),
        (13, None, "invalid row: no assistant turn: regenerate this source first"),
    ]
    reconciled = checks.counts_reconcile(tmp_path / "mix", rep)
    assert reconciled.passed, reconciled.description
    assert checks.no_duplicate_content(tmp_path / "mix").passed


def test_zero_row_mix_is_refused(tmp_path):
    write(tmp_path, "a", [json.dumps(prompt_only(i)) for i in range(4)])
    with pytest.raises(MixError) as ei:
        build_mix(tmp_path, {})
    assert isinstance(ei.value, UserError)
    assert str(ei.value) == (
        "the mix would have 0 rows: all 4 rows of sources ['a'] are prompt-only (no assistant "
        "turn): regenerate these sources first (regenerated/<key>/train.jsonl is used when present)"
    )
    assert not (tmp_path / "mix" / "train.jsonl").exists()

    write(tmp_path, "b", ["{broken", '{"id": 1, "text": "\\udc00"}'])
    with pytest.raises(
        MixError,
        match=r"^the mix would have 0 rows: all 2 rows of sources \['b'\] were dropped "
        r"\(2 invalid JSON\)$",
    ):
        build_mix(tmp_path, {"sources": ["b"]})
    with pytest.raises(MixError, match="no source has data"):
        build_mix(tmp_path / "empty", {})
