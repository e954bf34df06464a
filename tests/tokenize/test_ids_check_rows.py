"""The tokenize checks read JSONL (mix, errors.jsonl, rows to compare) under the one row rule:
a malformed line is counted, never a crash."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from specforge_assets.checks.tokenize import ids_unique_and_complete


def _dataset(tmp_path, shard_ids, mix_ids, error_lines):
    ds, mix = tmp_path / "ds", tmp_path / "mix"
    ds.mkdir()
    mix.mkdir()
    pq.write_table(pa.table({"id": shard_ids}), ds / "part-00000.parquet")
    (mix / "train.jsonl").write_text("".join(json.dumps({"id": i}) + "\n" for i in mix_ids))
    (ds / "errors.jsonl").write_bytes(b"".join(error_lines))
    return ds, mix / "train.jsonl"


def test_a_malformed_errors_line_is_counted_not_a_crash(tmp_path):
    ds, train = _dataset(
        tmp_path, ["a", "b"], ["a", "b", "c"], [json.dumps({"id": "c"}).encode() + b"\n", b'{"id": "d",\n', b"\n"]
    )
    out = ids_unique_and_complete(ds, train)
    assert (out.passed, out.severity) == (False, "WARN")  # c is quarantined: accounted for
    assert out.metadata["quarantined"] == 1 and out.metadata["unreadable_error_rows"] == 1


def test_a_row_quarantined_only_by_a_malformed_line_is_unaccounted(tmp_path):
    ds, train = _dataset(tmp_path, ["a"], ["a", "c"], [b'{"id": "c"\n'])
    out = ids_unique_and_complete(ds, train)
    assert (out.passed, out.severity) == (False, "ERROR")
    assert "1 mix ids neither tokenized nor quarantined" in out.description
    assert out.metadata["unreadable_error_rows"] == 1


def test_clean_errors_file_keeps_the_metadata_keys(tmp_path):
    ds, train = _dataset(tmp_path, ["a"], ["a"], [])
    out = ids_unique_and_complete(ds, train)
    assert out.passed and "unreadable_error_rows" not in out.metadata


def test_template_agreement_counts_unreadable_rows(tmp_path):
    """`tokenize.agreement.template_agreement` reads files under the row rule: a malformed or
    non-object line is counted in `unreadable_rows`, never a crash, never silently dropped."""
    from specforge_assets.tokenize.agreement import template_agreement

    tok, conv = tmp_path / "tok.jsonl", tmp_path / "conv.jsonl"
    tok.write_bytes(b'{"id": "a", "input_ids": [1]}\n{"id": "b", \n')
    conv.write_bytes(b'[1, 2]\n{"id": "c", "text": "x"}\n')
    out = template_agreement(tok, conv, tokenizer=None)
    assert (out["sampled"], out["missing_conversation"], out["unreadable_rows"]) == (1, 1, 2)
    none_compared = template_agreement(tmp_path / "tok.jsonl", tmp_path / "conv.jsonl", None, sample=0)
    assert none_compared["unreadable_rows"] == 2  # counted even when nothing is compared
