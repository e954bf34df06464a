"""Acceptance: identical input_ids and loss_mask to SpecForge's preprocess_conversations on every
golden file (../shared/data/parity, copied into tests/fixtures/tokenize/parity)."""

from __future__ import annotations

import pytest
from tok_helpers import COMBOS, corpus, golden, reference_tokenizer

from specforge_assets.tokenize.core import Preprocessor, TokenizeOptions
from specforge_assets.tokenize.templates import get_template
from tests.helpers.tokenize_reference import straightforward_rows

_TOKS: dict = {}


def _tok(name):
    if name not in _TOKS:
        _TOKS[name] = reference_tokenizer(name)
    return _TOKS[name]


@pytest.mark.parametrize("combo", COMBOS)
def test_parity_golden_exact(combo):
    header, gold = golden(combo)
    tok = _tok(header["tokenizer_build"])
    opts = TokenizeOptions(max_length=header["max_length"], is_preformatted=header["is_preformatted"])
    pre = Preprocessor(tok, get_template(header["reference_template"]), opts)
    rows_by_id = {r["id"]: r for r in corpus()}
    rows = [{"id": g["id"], "text": g["text"]} if header["is_preformatted"] else rows_by_id[g["id"]] for g in gold]
    results = pre.process_rows(rows)
    mismatches = [
        g["id"]
        for g, r in zip(gold, results)
        if isinstance(r, Exception) or r.input_ids != g["input_ids"] or r.loss_mask != g["loss_mask"]
    ]
    assert len(gold) == len(rows) and len(gold) > 100
    assert mismatches == [], f"{combo}: {len(mismatches)} rows differ, e.g. {mismatches[:5]}"


@pytest.mark.parametrize("combo", ["qwen2.5_qwen_256", "llama3_llama3_2048"])
def test_straightforward_baseline_matches_golden(combo):
    """The baseline used in the benchmark is the SpecForge algorithm, also exact."""
    header, gold = golden(combo)
    tok = _tok(header["tokenizer_build"])
    pre = Preprocessor(
        tok, get_template(header["reference_template"]), TokenizeOptions(max_length=header["max_length"])
    )
    rows_by_id = {r["id"]: r for r in corpus()}
    gold = gold[:60]
    res = straightforward_rows(pre, [rows_by_id[g["id"]] for g in gold])
    assert [(r.input_ids, r.loss_mask) for r in res] == [(g["input_ids"], g["loss_mask"]) for g in gold]
