"""CLI (`tokenize`, `vocab-mapping`) on the same code path, and the vocab mapping rules."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from tok_helpers import golden, reference_tokenizer

from specforge_assets.cli import main
from specforge_assets.tokenize.vocab import TokenCounter, select


def test_cli_tokenize_matches_golden_and_vocab_mapping(tmp_path, capsys):
    from specforge_assets.tokenize.reference_tokenizers import build_tokenizer

    reference_tokenizer("qwen2.5")  # skips without the packages
    header, gold = golden("qwen2.5_qwen_256")
    from tok_helpers import corpus

    by_id = {r["id"]: r for r in corpus()}
    inp = tmp_path / "in.jsonl"
    with open(inp, "w") as f:
        for g in gold[:80]:
            f.write(json.dumps(by_id[g["id"]]) + "\n")
        f.write("{broken\n")
    out = tmp_path / "out.jsonl"
    rc = main(
        [
            "tokenize",
            "--input",
            str(inp),
            "--tokenizer",
            str(build_tokenizer("qwen2.5")),
            "--chat-template",
            "qwen",
            "--max-length",
            "256",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    rows = [json.loads(l) for l in open(out)]
    assert [(r["id"], r["input_ids"], r["loss_mask"]) for r in rows] == [
        (g["id"], g["input_ids"], g["loss_mask"]) for g in gold[:80]
    ]
    err = capsys.readouterr().err
    assert "line 81" in err and "malformed JSON" in err

    m = tmp_path / "map.pt"
    assert (
        main(
            [
                "vocab-mapping",
                "--input",
                str(out),
                "--target-vocab-size",
                "151665",
                "--draft-vocab-size",
                "500",
                "--output",
                str(m),
            ]
        )
        == 0
    )
    mp = torch.load(m, weights_only=True)
    assert mp["d2t"].dtype == torch.int64 and mp["t2d"].dtype == torch.bool
    assert mp["d2t"].shape == (500,) and mp["t2d"].shape == (151665,) and int(mp["t2d"].sum()) == 500
    # SpecForge's procedure on the same rows gives the same set
    c = Counter()
    for r in rows:
        ids = np.array(r["input_ids"])[np.array(r["loss_mask"]) == 1]
        u, n = np.unique(ids, return_counts=True)
        c.update(dict(zip(u.tolist(), n.tolist())))
    expected = sorted(t for t, _ in c.most_common(500))
    assert (mp["d2t"] + torch.arange(500)).tolist() == expected


def test_cli_unknown_template(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text("")
    assert (
        main(
            [
                "tokenize",
                "--input",
                str(inp),
                "--tokenizer",
                str(tmp_path),
                "--chat-template",
                "nope",
                "--max-length",
                "8",
                "--output",
                str(tmp_path / "o.jsonl"),
            ]
        )
        == 1
    )
    assert "unknown chat template 'nope'" in capsys.readouterr().err


def _add_rows(counter: TokenCounter, rows: list[tuple[list[int], list[int]]]) -> None:
    """Feed (input_ids, loss_mask) rows through the counter's Arrow-layout batch entry."""
    ids = np.asarray([t for a, _ in rows for t in a], dtype=np.int64)
    masks = np.asarray([m for _, ms in rows for m in ms], dtype=np.int8)
    counter.add_flat(ids, masks, np.asarray([len(a) for a, _ in rows], dtype=np.int64))


def test_vocab_tie_break_fill_and_clamp():
    c = TokenCounter(10)
    # row 0: ids 5,3 once each; row 1: id 1 twice, 3 once → 3:2, 1:2, 5:1 ; tie 3 vs 1 → 3 first seen (row 0)
    _add_rows(c, [([5, 3, 9], [1, 1, 0]), ([1, 1, 3], [1, 1, 1])])
    r = select(c, 2)
    assert (r["d2t"] + np.arange(2)).tolist() == [1, 3]
    r = select(c, 5)  # only 3 distinct → fill with zero-count ids ascending: 0, 2
    assert (r["d2t"] + np.arange(5)).tolist() == [0, 1, 2, 3, 5] and r["filled_zero_count_ids"] == 2
    r = select(c, 32000)
    assert r["clamped"] and r["draft_vocab_size"] == 10 and r["coverage"] == 1.0
    with pytest.raises(ValueError, match="outside the target vocabulary"):
        _add_rows(c, [([12], [1])])
