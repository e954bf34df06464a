"""Streaming dataset writer: worker processes give identical output; errors are quarantined."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from tok_helpers import build_chatml_tokenizer, corpus

from specforge_assets.tokenize.core import TokenizeOptions
from specforge_assets.tokenize.dataset import tokenize_jsonl
from specforge_assets.tokenize.templates import get_template


def test_two_workers_identical_and_errors_reconcile(tmp_path):
    rows = corpus()[:150]
    tok = build_chatml_tokenizer(tmp_path / "tok", [m["content"] for r in rows for m in r["conversations"]])
    inp = tmp_path / "in.jsonl"
    with open(inp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write("[1, 2]\n")
        f.write(json.dumps({"id": "empty", "conversations": []}) + "\n")
    opts = TokenizeOptions(max_length=1024)
    s1 = tokenize_jsonl(inp, tok, get_template("qwen"), tmp_path / "o1", opts, workers=1, shard_rows=64)
    s2 = tokenize_jsonl(inp, tok, get_template("qwen"), tmp_path / "o2", opts, workers=2, shard_rows=64)
    assert (tmp_path / "o1" / "train.jsonl").read_bytes() == (tmp_path / "o2" / "train.jsonl").read_bytes()
    assert s1["rows"] == s2["rows"] == 150 and s1["rows_failed"] == 2 and s1["rows_in"] == 152
    assert len(s1["shards"]) == 3
    t = pq.read_table(tmp_path / "o1" / s1["shards"][0])
    assert t.column_names[:4] == ["id", "source", "input_ids", "loss_mask"] and t.num_rows == 64
    errs = [json.loads(l) for l in open(tmp_path / "o1" / "errors.jsonl")]
    assert [e["line"] for e in errs] == [151, 152] and "empty conversation" in errs[1]["reason"]
