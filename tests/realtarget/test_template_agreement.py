"""`template_agreement`: tokenized rows vs the target tokenizer's own chat template (real SmolLM2
tokenizer). `qwen` on SmolLM2 data fails at the system prompt, with the row shown; `smollm2` and
`auto` pass."""

from __future__ import annotations

import json

import pytest

from specforge_assets.tokenize.agreement import template_agreement
from specforge_assets.tokenize.core import Preprocessor, TokenizeOptions
from specforge_assets.tokenize.dataset import tokenize_jsonl
from specforge_assets.tokenize.templates import get_template

ROWS = [
    {
        "id": "r0",
        "conversations": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
        ],
    },
    {
        "id": "r1",
        "conversations": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a prime number."},
            {"role": "assistant", "content": "7."},
        ],
    },
    {
        "id": "r2",
        "conversations": [
            {"from": "human", "value": "Say hi."},
            {"from": "gpt", "value": "Hi!"},
            {"from": "human", "value": "Again, louder."},
            {"from": "gpt", "value": "HI!"},
        ],
    },
    {
        "id": "r3",
        "conversations": [
            {"role": "user", "content": "List three colours, one per line."},
            {"role": "assistant", "content": "red\ngreen\nblue"},
        ],
    },
    {"id": "r4", "text": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"},
]


@pytest.fixture(scope="module")
def tok_dir(smollm2_tokenizer, tmp_path_factory):
    d = tmp_path_factory.mktemp("smol_tok")
    smollm2_tokenizer.save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    p = tmp_path_factory.mktemp("mix") / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return p


def _tokenized(tok_dir, mix, tmp_path, template, **opts):
    out = tmp_path / f"tok-{template}"
    tokenize_jsonl(mix, tok_dir, get_template(template), out, TokenizeOptions(**opts), write_parquet=False)
    return out  # a dataset folder holding train.jsonl, as tokenized/dataset does


def test_qwen_on_smollm2_fails_at_the_system_prompt(smollm2_tokenizer, tok_dir, mix, tmp_path):
    res = template_agreement(_tokenized(tok_dir, mix, tmp_path, "qwen"), mix, smollm2_tokenizer, sample=10)
    assert res["passed"] is False
    m = res["first_mismatch"]
    assert m["id"] == "r0"  # rows with their own system message agree; r0 is the first without
    assert "SmolLM" in m["expected_decoded"] and "helpful assistant" in m["got_decoded"]
    assert m["expected_ids_snippet"] != m["got_ids_snippet"]
    # the first differing token is inside the system prompt, right after the shared prefix
    prefix = smollm2_tokenizer("<|im_start|>system\nYou are a helpful", add_special_tokens=False)["input_ids"]
    assert m["position"] == len(prefix)
    assert m["expected_length"] - m["got_length"] == 10
    assert "r0" in m["message"] and "token" in m["message"]
    assert res["checked"] == 4 and res["skipped_preformatted"] == 1


@pytest.mark.parametrize("template", ["smollm2", "auto"])
def test_smollm2_and_auto_pass(smollm2_tokenizer, tok_dir, mix, tmp_path, template):
    res = template_agreement(_tokenized(tok_dir, mix, tmp_path, template), mix, smollm2_tokenizer, sample=10)
    assert res["passed"] is True, res["first_mismatch"]
    assert (res["checked"], res["agreed"], res["skipped_preformatted"]) == (4, 4, 1)


def test_truncated_rows_agree_as_prefixes(smollm2_tokenizer, tok_dir, mix, tmp_path):
    ds = _tokenized(tok_dir, mix, tmp_path, "auto", max_length=24)
    res = template_agreement(ds, mix, smollm2_tokenizer, sample=10, max_length=24)
    assert res["passed"] and res["truncated"] >= 3
    # a row that stops early without reaching max_length is not a cut: it disagrees
    rows = [json.loads(l) for l in open(ds / "train.jsonl")]
    rows[0]["input_ids"] = rows[0]["input_ids"][:10]
    res = template_agreement(rows, mix, smollm2_tokenizer, sample=10, max_length=24)
    assert not res["passed"] and res["first_mismatch"]["position"] == 10


def test_in_memory_rows_sample_and_missing(smollm2_tokenizer, mix):
    pre = Preprocessor(smollm2_tokenizer, get_template("smollm2"))
    rows = [{"id": r["id"], "input_ids": [pre.process(r).input_ids]} for r in ROWS[:4]]  # SpecForge's [1, L]
    rows.append({"id": "nowhere", "input_ids": [1, 2, 3]})
    res = template_agreement(rows, mix, smollm2_tokenizer, sample=3, seed=1)
    assert res["sampled"] == 3 and res["checked"] + res["missing_conversation"] == 3
    res = template_agreement(rows, mix, smollm2_tokenizer, sample=100)
    assert res["passed"] and res["checked"] == 4 and res["missing_conversation"] == 1
    # one changed token in the middle of an answer: reported at that position, decoded
    bad = [dict(r) for r in rows[:4]]
    ids = list(bad[3]["input_ids"][0])
    ids[-4] = smollm2_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    bad[3]["input_ids"] = ids
    res = template_agreement(bad, mix, smollm2_tokenizer, sample=100)
    m = res["first_mismatch"]
    assert not res["passed"] and m["id"] == "r3" and m["position"] == len(ids) - 4
    assert "<|endoftext|>" in m["got_decoded"] and "<|endoftext|>" not in m["expected_decoded"]
