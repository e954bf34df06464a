"""Bad input: every case is a clear error naming file/row/field, or a quarantined row with its
reason — never a silent drop and never a partial file."""

from __future__ import annotations

import json

import pytest

from specforge_assets.cli import main as cli_main
from specforge_assets.sources.config import resolve_source
from specforge_assets.sources.errors import SourceError
from specforge_assets.sources.normalize import build_source

from .conftest import write_jsonl

OK = [{"role": "user", "content": "What is 1 plus 1?"}, {"role": "assistant", "content": "1 plus 1 is 2."}]


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _build(tmp_path, data_root, path, fmt="auto", **entry):
    cfg = {"sources": {"bad": {"format": fmt, "data_path": str(path), "quarantine_threshold": 1.0, **entry}}}
    return build_source(resolve_source("bad", cfg, data_root), data_root, config=cfg)


def test_each_bad_row_is_quarantined_with_file_row_field_reason(tmp_path, data_root):
    rows = [
        {"id": "good", "conversations": OK},
        {"id": "wrong-type", "conversations": [{"role": "user", "content": 5}]},
        {"id": "conv-not-list", "conversations": "hello"},
        {"id": "missing"},
        {"id": "unknown-role", "conversations": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]},
        {"id": "unknown-sender", "conversations": [{"from": "alien", "value": "q"}]},
        {"id": "missing-content", "conversations": [{"role": "user"}]},
        {"id": "null-content", "conversations": [{"role": "user", "content": None}]},
        {"id": "empty", "conversations": []},
        {"id": "blank", "conversations": [{"role": "user", "content": " \n\t"}]},
        {
            "id": "lead-assistant",
            "conversations": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}],
        },
        {"id": "two-users", "conversations": [{"role": "user", "content": "q"}, {"role": "user", "content": "q2"}]},
        {"id": "late-system", "conversations": OK + [{"role": "system", "content": "s"}]},
        {"id": ["list"], "conversations": OK},
        {"id": "good", "conversations": OK},  # duplicate id
        {"id": "text-in-conv-source", "text": "hello"},
    ]
    raw = {3: b'{"id": "malformed", "conversations": [', 5: b'{"id": "latin1", "text": "caf\xe9"}', 7: b"[1, 2]"}
    path = write_jsonl(tmp_path / "in.jsonl", rows, raw)
    res = _build(tmp_path, data_root, path)
    m = res.manifest
    q = _read(res.out_dir / "quarantine.jsonl")
    assert m["rows_in"] == len(rows) + len(raw) == m["rows_train"] + m["quarantined"]
    assert m["rows_train"] == 1 and len(q) == len(rows) + len(raw) - 1
    by_reason = {r["reason"]: r for r in q}
    assert all(r["file"] == str(path) and isinstance(r["row"], int) for r in q)
    expect = {
        "malformed JSON": (3, None),
        "invalid UTF-8": (5, None),
        "expected a JSON object, got list": (7, None),
        "content must be a string, got int": (None, "conversations[0].content"),
        "conversations must be a list of messages, got str": (None, "conversations"),
        "missing field 'conversations'": (None, "conversations"),
        "unknown role 'robot'": (None, "conversations[1].role"),
        "unknown sender 'alien'": (None, "conversations[0].from"),
        "message has no 'content'": (None, "conversations[0].content"),
        "content must be a string, got null": (None, "conversations[0].content"),
        "conversations is empty": (None, "conversations"),
        "empty content": (None, "conversations[0].content"),
        "conversation starts with an assistant message": (None, "conversations[0].role"),
        "invalid role order at position 1: expected assistant, got user": (None, "conversations[1].role"),
        "system message after the conversation started": (None, "conversations[2].role"),
        "id must be a string or an integer, got list": (None, "id"),
        "duplicate id 'good'": (None, "id"),
        "text row in a source whose rows are conversations": (None, None),
    }
    for prefix, (row, field) in expect.items():
        hits = [r for reason, r in by_reason.items() if reason.startswith(prefix)]
        assert hits, f"no quarantined row with reason {prefix!r}: {sorted(by_reason)}"
        if row is not None:
            assert hits[0]["row"] == row
        if field is not None:
            assert hits[0]["field"] == field
    assert by_reason[next(r for r in by_reason if r.startswith("malformed"))]["raw"].startswith('{"id": "malformed"')


def test_empty_file_missing_path_no_rows(tmp_path, data_root):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.jsonl is empty"):
        _build(tmp_path, data_root, empty)
    with pytest.raises(SourceError, match="does not exist"):
        _build(tmp_path, data_root, tmp_path / "missing.jsonl")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    with pytest.raises(SourceError, match="no rows"):
        _build(tmp_path, data_root, blank)
    wrong = tmp_path / "data.csv"
    wrong.write_text("a,b\n")
    with pytest.raises(SourceError, match="not a .parquet, .jsonl or .json"):
        _build(tmp_path, data_root, wrong)
    assert not (data_root / "sources" / "bad" / "train.jsonl").exists()


def test_bad_json_array_file_names_line(tmp_path, data_root):
    p = tmp_path / "broken.json"
    p.write_text('[\n {"id": "a", "conversations": []},\n {"id": \n]')
    with pytest.raises(SourceError, match=r"broken\.json: malformed JSON at line 4"):
        _build(tmp_path, data_root, p)


def test_preset_rows_specforge_crashes_on_are_quarantined_in_the_asset(tmp_path, data_root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "prompt": "p",
            "prompt_id": "ok",
            "messages": [{"content": "q", "role": "user"}, {"content": "a", "role": "assistant"}],
        },
        {
            "prompt": "p",
            "prompt_id": "sys",
            "messages": [{"content": "s", "role": "system"}, {"content": "q", "role": "user"}],
        },
    ]
    path = tmp_path / "uc.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    cfg = {"sources": {"uc": {"preset": "ultrachat", "data_path": str(path), "quarantine_threshold": 1.0}}}
    res = build_source(resolve_source("uc", cfg, data_root), data_root, config=cfg)
    q = _read(res.out_dir / "quarantine.jsonl")
    assert [r["raw"]["prompt_id"] for r in q] == ["sys"]
    assert (
        q[0]["reason"] == "Unsupported UltraChat role: 'system'"
        and q[0]["field"] == "messages[0].role"
        and q[0]["row"] == 1
    )


def test_cli_fails_cleanly_without_partial_file(tmp_path, capsys):
    """SpecForge leaves a partial file after this error (and then skips forever); we leave none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = {"prompt": "p", "prompt_id": "ok", "messages": [{"content": "q", "role": "user"}]}
    bad = {"prompt": "p", "prompt_id": "sys", "messages": [{"content": "s", "role": "system"}]}
    path = tmp_path / "uc.parquet"
    pq.write_table(pa.Table.from_pylist([good] * 50 + [bad]), path)
    out = tmp_path / "out"
    assert cli_main(["prepare", "--dataset", "ultrachat", "--data-path", str(path), "--output-path", str(out)]) == 1
    err = capsys.readouterr().err
    assert "uc.parquet row 50" in err and "messages[0].role" in err and "Unsupported UltraChat role" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_bad_inputs(tmp_path, capsys):
    empty = tmp_path / "e.jsonl"
    empty.write_bytes(b"")
    assert (
        cli_main(["prepare", "--dataset", "sharegpt", "--data-path", str(empty), "--output-path", str(tmp_path / "o")])
        == 1
    )
    assert "is empty" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "prepare",
                "--dataset",
                "sharegpt",
                "--data-path",
                str(tmp_path / "nope.json"),
                "--output-path",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "does not exist" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "prepare",
                "--dataset",
                "sharegpt",
                "--data-path",
                str(empty),
                "--sample-size",
                "0",
                "--output-path",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "--sample-size must be > 0" in capsys.readouterr().err
    garbage = tmp_path / "g.jsonl"
    garbage.write_text('{"id": "a", "conversations": [\n')
    assert (
        cli_main(
            ["prepare", "--dataset", "sharegpt", "--data-path", str(garbage), "--output-path", str(tmp_path / "o")]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "g.jsonl row 0" in err and "malformed JSON" in err
    assert not (tmp_path / "o" / "sharegpt_train.jsonl").exists()


def test_crash_mid_build_leaves_previous_outputs_intact(tmp_path, data_root, monkeypatch):
    path = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "conversations": OK} for i in range(5)])
    first = _build(tmp_path, data_root, path)
    before = {p.name: p.read_bytes() for p in first.out_dir.iterdir()}
    write_jsonl(path, [{"id": f"s{i}", "conversations": OK} for i in range(5)])
    from specforge_assets.sources import normalize

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(normalize, "write_manifest", boom)
    monkeypatch.setattr(normalize, "write_lines", boom)
    with pytest.raises(RuntimeError):
        _build(tmp_path, data_root, path)
    after = {p.name: p.read_bytes() for p in first.out_dir.iterdir()}
    assert after == before  # no temp files, no half-written train.jsonl
