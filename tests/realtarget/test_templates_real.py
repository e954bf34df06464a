"""Golden tests with the real SmolLM2 tokenizer: `auto` and the `smollm2` registry entry render
exactly what the model's own template renders (input_ids == apply_chat_template), and supervise
exactly each assistant turn's content plus its end of turn (`<|im_end|>` and the newline the
template writes after it, as SpecForge's ChatML `qwen` entry does). `auto` agrees with the
registry entry for every registry template that has a tokenizer here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from specforge_assets.tokenize.core import Preprocessor, TokenizeOptions
from specforge_assets.tokenize.templates import derive_template_fields, get_template, registry
from tests.helpers.tokenize_reference import straightforward_rows

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CONVERSATIONS = [
    {
        "id": "one-turn",
        "conversations": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
        ],
    },
    {
        "id": "system-three-turns",
        "conversations": [
            {"role": "system", "content": "You are a terse math tutor."},
            {"role": "user", "content": "What is 12 * 7?"},
            {"role": "assistant", "content": "12 * 7 = 84."},
            {"role": "user", "content": "And divided by 4?"},
            {"role": "assistant", "content": "84 / 4 = 21."},
            {"role": "user", "content": "Thanks! Is 21 prime?"},
            {"role": "assistant", "content": "No: 21 = 3 * 7."},
        ],
    },
    {
        "id": "code-unicode-whitespace",
        "conversations": [
            {"role": "user", "content": "Write a Python function that reverses a string.\n\nKeep it short."},
            {
                "role": "assistant",
                "content": "```python\ndef reverse(s: str) -> str:\n    return s[::-1]\n```\n"
                "It uses slicing with a step of -1.  ",
            },
            {"role": "user", "content": "Translate 'good morning' into French and Japanese — with accents."},
            {"role": "assistant", "content": "French: « Bonjour » ; Japanese: おはようございます 🌅"},
        ],
    },
    {
        "id": "sharegpt-system",
        "conversations": [
            {"from": "system", "value": "Answer in one sentence."},
            {"from": "human", "value": "Why is the sky blue?"},
            {"from": "gpt", "value": "Air molecules scatter blue sunlight more than red (Rayleigh scattering)."},
            {"from": "human", "value": "And at sunset?"},
            {"from": "gpt", "value": "The light crosses more air, so the blue is scattered away and reds remain."},
        ],
    },
]


def _real_conversations() -> list[dict]:
    """Real GSM8K question/answer pairs as conversations (one of them 2-turn), when ../shared is
    beside the checkout (the handwritten ones above run either way)."""
    root = Path(os.environ.get("SPECFORGE_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared"))
    p = root / "data" / "real" / "gsm8k" / "train.jsonl"
    if not p.is_file():
        return []
    with open(p, encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(5), f)]
    out = [
        {
            "id": f"gsm8k-{i}",
            "conversations": [
                {"role": "user", "content": r["question"]},
                {"role": "assistant", "content": r["answer"]},
            ],
        }
        for i, r in enumerate(rows[:3])
    ]
    out.append(
        {
            "id": "gsm8k-two-turns",
            "conversations": [
                {"role": "user", "content": rows[3]["question"]},
                {"role": "assistant", "content": rows[3]["answer"]},
                {"role": "user", "content": rows[4]["question"]},
                {"role": "assistant", "content": rows[4]["answer"]},
            ],
        }
    )
    return out


@pytest.fixture(scope="module")
def conversations():
    return CONVERSATIONS + _real_conversations()


def _messages(row) -> list[dict]:
    """The conversation in role/content form (what the model's template is given)."""
    role = {"human": "user", "gpt": "assistant"}
    return [
        {
            "role": role.get(m.get("role", m.get("from")), m.get("role", m.get("from"))),
            "content": m.get("content", m.get("value")),
        }
        for m in row["conversations"]
    ]


def _expected(tok, messages):
    """Independent oracle for SmolLM2's ChatML: the text built by hand (checked against the
    tokenizer's own render), the ids of apply_chat_template, and the mask from offset mapping:
    tokens inside each assistant content + `<|im_end|>\\n`."""
    text, spans = "", []
    if messages[0]["role"] != "system":
        text += f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n"
    for m in messages:
        text += f"<|im_start|>{m['role']}\n"
        start = len(text)
        text += f"{m['content']}<|im_end|>\n"
        if m["role"] == "assistant":
            spans.append((start, len(text)))
    assert tok.apply_chat_template(messages, tokenize=False) == text
    ids = tok.apply_chat_template(messages, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == ids
    mask = [int(any(s <= a and b <= e for s, e in spans)) for a, b in enc["offset_mapping"]]
    return ids, mask, spans


@pytest.mark.parametrize("name", ["auto", "smollm2"])
def test_smollm2_golden(smollm2_tokenizer, conversations, name):
    tok = smollm2_tokenizer
    pre = Preprocessor(tok, get_template(name))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for row in conversations:
        messages = _messages(row)
        ids, mask, _ = _expected(tok, messages)
        out = pre.process(row)
        assert out.input_ids == ids, row["id"]
        assert out.loss_mask == mask, row["id"]
        # each supervised run is exactly one assistant turn's content + <|im_end|> + "\n"
        runs, cur = [], []
        for i, (t, m) in enumerate(zip(out.input_ids, out.loss_mask)):
            if m:
                cur.append(t)
            elif cur:
                runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        assert [tok.decode(r) for r in runs] == [a + "<|im_end|>\n" for a in answers], row["id"]
        assert all(r[-2] == im_end for r in runs)


def test_smollm2_entry_is_the_models_own_default_system_prompt(smollm2_tokenizer):
    fields = derive_template_fields(smollm2_tokenizer)
    assert fields["default_system_prompt"] == SMOL_SYSTEM
    entry = get_template("smollm2")
    assert entry.system_prompt == fields["default_system_prompt"]
    assert (entry.assistant_header, entry.user_header, entry.end_of_turn_token) == (
        fields["assistant_header"],
        fields["user_header"],
        fields["end_of_turn_token"],
    )


def test_qwen_entry_on_smollm2_is_off_by_the_system_prompt(smollm2_tokenizer):
    """The bug `auto` / `smollm2` fix: qwen's prompt instead of SmolLM2's own, every row off."""
    tok = smollm2_tokenizer
    row = CONVERSATIONS[0]
    ids, _, _ = _expected(tok, _messages(row))
    got = Preprocessor(tok, get_template("qwen")).process(row)
    assert got.input_ids != ids
    assert "You are a helpful assistant." in tok.decode(got.input_ids)
    assert len(ids) - len(got.input_ids) == 10  # SmolLM2's prompt is 10 tokens longer


def test_auto_fast_path_equals_straightforward(smollm2_tokenizer, conversations):
    pre = Preprocessor(smollm2_tokenizer, get_template("auto"), TokenizeOptions(max_length=64))
    fast = pre.process_rows(conversations)
    slow = straightforward_rows(pre, conversations)
    assert [(f.input_ids, f.loss_mask) for f in fast] == [(s.input_ids, s.loss_mask) for s in slow]
    assert any(f.truncated and sum(f.loss_mask) for f in fast)


# registry template -> the tokenizer it belongs to (every one that the tests can load offline)
PAIRS = [
    ("smollm2", "smollm2"),
    ("qwen", "qwen2.5"),
    ("qwen3-instruct", "qwen3"),
    ("llama3", "llama3"),
    ("deepseek-v3", "deepseek-v3"),
]


@pytest.mark.parametrize("template,tokenizer", PAIRS, ids=[f"{t}@{k}" for t, k in PAIRS])
def test_auto_agrees_with_registry_entry(
    template, tokenizer, conversations, smollm2_tokenizer_or_skip, reference_tokenizer
):
    tok = smollm2_tokenizer_or_skip() if tokenizer == "smollm2" else reference_tokenizer(tokenizer)
    assert template in registry()
    auto = Preprocessor(tok, get_template("auto"))
    for row in conversations:
        has_system = _messages(row)[0]["role"] == "system"
        # without a system message the registry entry injects its default prompt (SpecForge
        # parity); `auto` renders the model's own default: compare with injection off, except
        # for smollm2 whose injected prompt *is* the model's default
        opts = TokenizeOptions(inject_system_prompt=has_system or template == "smollm2")
        reg = Preprocessor(tok, get_template(template), opts).process(row)
        a = auto.process(row)
        assert a.input_ids == reg.input_ids, (template, row["id"])
        assert a.loss_mask == reg.loss_mask, (template, row["id"])
        assert sum(a.loss_mask) > 0
        assert not [w for w in a.warnings if "incremental" in w], a.warnings


def test_auto_needs_a_chat_template(tmp_path):
    from specforge_assets.tokenize.core import TokenizeError

    class NoTemplate:
        chat_template = None

    with pytest.raises(TokenizeError, match="has none; name a registry template"):
        Preprocessor(NoTemplate(), get_template("auto"))


def test_auto_is_reserved():
    with pytest.raises(ValueError, match="reserved"):
        registry({"auto": {"assistant_header": "x"}})
    assert get_template("auto").name == "auto"
