"""The DuckDB checks pass on good output and fail, with offending ids, on crafted bad data."""

from __future__ import annotations

import json

import pytest

from specforge_assets.assets.sources import CHECKS
from specforge_assets.checks.sources import run_source_checks

GOOD = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]

BLOCKING = {c.name: c.blocking for c in CHECKS}


def _partition(
    tmp_path, rows, *, test_rows=(), quarantine=0, rows_in=None, threshold=0.1, manifest_counts=None, raw_lines=()
):
    d = tmp_path / "part"
    d.mkdir(exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(raw_lines)
    (d / "train.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if test_rows:
        (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    (d / "quarantine.jsonl").write_text(
        "".join(
            json.dumps({"file": "f", "row": i, "reason": "r", "raw": {"id": f"q{i}"}}) + "\n" for i in range(quarantine)
        )
    )
    n = len(lines) + len(test_rows)
    manifest = {
        "rows_in": rows_in if rows_in is not None else n + quarantine,
        "rows_train": len(lines),
        "rows_test": len(test_rows),
        "quarantined": quarantine,
        "spec": {"quarantine_threshold": threshold},
    }
    manifest.update(manifest_counts or {})
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_good_partition_passes_everything(tmp_path):
    rows = [
        {
            "id": f"r{i}",
            "conversations": [{"role": "system", "content": "s"}] + GOOD + [{"role": "user", "content": f"more {i}"}],
        }
        for i in range(20)
    ]
    res = run_source_checks(_partition(tmp_path, rows, test_rows=[{"id": "t", "conversations": GOOD}], quarantine=1))
    assert list(res) == [c.name for c in CHECKS]
    assert all(o.passed for o in res.values()), {n: o.metadata for n, o in res.items() if not o.passed}
    assert res["rows_reconcile"].metadata["test"] == 1


@pytest.mark.parametrize(
    "bad_row,check,offender",
    [
        ({"id": 7, "conversations": GOOD}, "schema_valid", "7"),
        ({"id": "", "conversations": GOOD}, "schema_valid", ""),
        ({"id": "x", "conversations": [{"role": "user", "content": ["list"]}]}, "schema_valid", "x"),
        ({"id": "x", "conversations": [{"role": 1, "content": "c"}]}, "schema_valid", "x"),
        ({"id": "x", "text": "pre-formatted among conversations"}, "schema_valid", None),
        ({"id": "x", "conversations": [{"role": "user", "content": "\u00a0 \n"}]}, "no_empty_content", "x"),
        (
            {"id": "x", "conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
            "no_empty_content",
            "x",
        ),
        ({"id": "x", "conversations": []}, "no_empty_content", "x"),
        ({"id": "x", "conversations": [{"role": "assistant", "content": "a"}]}, "valid_role_order", "x"),
        ({"id": "x", "conversations": GOOD + [{"role": "system", "content": "s"}]}, "valid_role_order", "x"),
        ({"id": "x", "conversations": GOOD + [{"role": "assistant", "content": "again"}]}, "valid_role_order", "x"),
        ({"id": "x", "conversations": [{"role": "system", "content": "s"}]}, "valid_role_order", "x"),
        (
            {"id": "x", "conversations": [{"role": "user", "content": "q"}, {"role": "tool", "content": "t"}]},
            "valid_role_order",
            "x",
        ),
        ({"id": "r0", "conversations": [{"role": "user", "content": "other"}]}, "unique_ids", "r0"),
    ],
)
def test_each_check_fails_on_crafted_bad_row(tmp_path, bad_row, check, offender):
    rows = [{"id": f"r{i}", "conversations": GOOD + [{"role": "user", "content": str(i)}]} for i in range(5)] + [
        bad_row
    ]
    res = run_source_checks(_partition(tmp_path, rows))
    assert not res[check].passed, res[check].metadata
    assert BLOCKING[check]  # blocking
    if offender is not None:
        assert offender in res[check].metadata["offending_ids"]
    others = {n for n, o in res.items() if not o.passed} - {check, "schema_valid"}
    assert others <= {"no_empty_content", "valid_role_order"}


def test_structurally_broken_rows_use_the_generic_scan(tmp_path):
    rows = [
        {"id": "a", "conversations": GOOD},
        {"id": "b", "conversations": "not a list"},
        {"id": "c", "conversations": [1, 2]},
    ]
    res = run_source_checks(_partition(tmp_path, rows))
    assert res["schema_valid"].metadata["scan"] == "generic"
    assert not res["schema_valid"].passed and set(res["schema_valid"].metadata["offending_ids"]) == {"b", "c"}


def test_duplicate_conversations_warn(tmp_path):
    rows = [{"id": f"r{i}", "conversations": GOOD} for i in range(4)]
    res = run_source_checks(_partition(tmp_path, rows))
    dup = res["no_duplicate_conversations"]
    assert not dup.passed and not BLOCKING["no_duplicate_conversations"] and dup.metadata["duplicate_rows"] == 3
    assert run_source_checks(_partition(tmp_path, rows), max_duplicate_rate=0.8)["no_duplicate_conversations"].passed


def test_quarantine_rate_over_threshold(tmp_path):
    rows = [{"id": f"r{i}", "conversations": GOOD + [{"role": "user", "content": str(i)}]} for i in range(8)]
    res = run_source_checks(_partition(tmp_path, rows, quarantine=2, threshold=0.1), quarantine_min_rows=0)
    q = res["quarantine_rate"]
    assert not q.passed and q.metadata["quarantine_rate"] == 0.2 and q.metadata["offending_ids"] == ["q0", "q1"]
    # under quarantine_min_rows (default 10) quarantined rows the rate is reported, not blocking
    assert run_source_checks(_partition(tmp_path, rows, quarantine=2, threshold=0.1))["quarantine_rate"].passed
    assert run_source_checks(_partition(tmp_path, rows, quarantine=2), quarantine_threshold=0.25)[
        "quarantine_rate"
    ].passed


def test_rows_must_reconcile(tmp_path):
    rows = [{"id": f"r{i}", "conversations": GOOD + [{"role": "user", "content": str(i)}]} for i in range(5)]
    res = run_source_checks(_partition(tmp_path, rows, rows_in=9))
    assert not res["rows_reconcile"].passed and res["rows_reconcile"].metadata["rows_in"] == 9
    res = run_source_checks(_partition(tmp_path, rows, manifest_counts={"rows_train": 4}))
    assert not res["rows_reconcile"].passed and res["rows_reconcile"].metadata["matches_manifest"] is False


def test_max_duplicate_rate_is_a_per_source_check_setting(tmp_path):
    """sources.yaml sets the duplicate check's threshold per source (or in `defaults:`), beside
    quarantine_threshold; being a check setting, it is not part of the source's identity (cache key)."""
    from specforge_assets.sources.config import resolve_source

    entry = {"format": "auto", "data_path": str(tmp_path / "a.jsonl")}
    cfg = {"defaults": {"max_duplicate_rate": 0.25}, "sources": {"a": entry, "b": {**entry, "max_duplicate_rate": 0.5}}}
    a, b = resolve_source("a", cfg, tmp_path), resolve_source("b", cfg, tmp_path)
    assert (a.max_duplicate_rate, b.max_duplicate_rate) == (0.25, 0.5)
    assert (
        "max_duplicate_rate" not in a.identity()
        and a.identity() == resolve_source("a", {"sources": {"a": entry}}, tmp_path).identity()
    )
