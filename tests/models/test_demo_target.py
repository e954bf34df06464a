"""The demo target: tokenizer + chat template round trip, a loadable Qwen2 model, determinism."""

from __future__ import annotations

import json

import pytest

from specforge_assets.fileio import sha256_file
from specforge_assets.train.demo_target import (
    CHAT_TEMPLATE,
    DEFAULT_SYSTEM_PROMPT,
    build_demo_target,
    render_chatml,
)

from .corpus import conversations


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory):
    out = tmp_path_factory.mktemp("target") / "target_model"
    return build_demo_target(
        out,
        conversations(48),
        pretrain_steps=0,
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        log=lambda s: None,
    )


def test_files_and_config(tiny_target):
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "manifest.json",
    ):
        assert (tiny_target / name).exists(), name
    cfg = json.loads((tiny_target / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["num_hidden_layers"] == 4
    tok_cfg = json.loads((tiny_target / "tokenizer_config.json").read_text())
    assert tok_cfg["chat_template"] == CHAT_TEMPLATE
    man = json.loads((tiny_target / "manifest.json").read_text())
    assert man["kind"] == "demo_target" and man["params"]["pretrain_steps"] == 0
    assert "torch" in man["packages"]


def test_chat_template_round_trip(tiny_target):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_target)
    raw = Tokenizer.from_file(str(tiny_target / "tokenizer.json"))
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for row in conversations(10, seed=3):
        msgs = row["conversations"]
        text = tok.apply_chat_template(msgs, tokenize=False)
        assert text == render_chatml(msgs)
        assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")
        ids = tok(text, add_special_tokens=False)["input_ids"]
        # however the folder is loaded (transformers' Qwen2 class or the raw tokenizer.json),
        # tokenization is the same, and decoding gives the text back
        assert ids == raw.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
        for special in ("<|im_start|>", "<|im_end|>"):
            assert tok.convert_tokens_to_ids(special) in ids
    # explicit system prompt wins, generation prompt opens the assistant turn
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_target)
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= enc["input_ids"].shape[1] + 5


def test_deterministic_and_pretraining_learns(tmp_path):
    rows = conversations(48)
    kw = dict(
        pretrain_steps=15,
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        batch_size=4,
        block_size=64,
        log=lambda s: None,
    )
    a = build_demo_target(tmp_path / "a", rows, **kw)
    b = build_demo_target(tmp_path / "b", rows, **kw)
    assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")
    assert sha256_file(a / "tokenizer.json") == sha256_file(b / "tokenizer.json")
    man = json.loads((a / "manifest.json").read_text())
    assert man["pretrain_loss_last"] < man["pretrain_loss_first"]
    # rebuilding over an existing folder replaces it atomically
    build_demo_target(a, rows, **{**kw, "pretrain_steps": 0})
    assert json.loads((a / "manifest.json").read_text())["params"]["pretrain_steps"] == 0


def test_no_texts_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no usable texts"):
        build_demo_target(tmp_path / "x", [{"id": "1"}], pretrain_steps=0)
