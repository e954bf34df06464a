"""Options, corrected modes and bad input on real tokenizers; fast path == SpecForge algorithm."""

from __future__ import annotations

import json

import pytest
from tok_helpers import corpus, reference_tokenizer

from specforge_assets.tokenize.core import Preprocessor, TokenizeError, TokenizeOptions
from specforge_assets.tokenize.templates import UnknownTemplateError, get_template, registry
from tests.helpers.tokenize_reference import straightforward_rows

SPECFORGE_NAMES = [
    "llama3",
    "llama4",
    "qwen",
    "lfm",
    "phi3",
    "phi4",
    "phi4-mini",
    "gpt-oss-naive",
    "gpt-oss",
    "deepseek-r1-distill",
    "qwen3-thinking",
    "qwen3-instruct",
    "qwen3-next-thinking",
    "qwen3.5",
    "kimi-k2-thinking",
    "kimi-k2-instruct",
    "kimi-k3-thinking",
    "deepseek-v3",
    "deepseek-v2",
    "deepseek-v32",
    "ling-flash-2.0",
    "glm-5.2",
    "gemma",
    "longcat",
    "longcat_xml",
    "inkling-thinking",
]


@pytest.fixture(scope="module")
def qwen():
    return reference_tokenizer("qwen2.5")


@pytest.fixture(scope="module")
def qwen3():
    return reference_tokenizer("qwen3")


def test_registry_has_every_specforge_name():
    assert set(SPECFORGE_NAMES) <= set(registry())  # the built-in templates (no user ones given)
    t = get_template("kimi-k3-thinking")
    assert t.enable_thinking is False and t.ignore_token == ("<|end_of_msg|>",)


def test_unknown_template_and_user_template():
    with pytest.raises(UnknownTemplateError, match="unknown chat template 'nope'"):
        get_template("nope")
    reg = registry({"mine": {"assistant_header": "<A>", "user_header": "<U>", "end_of_turn_token": "</A>"}})
    assert reg["mine"].assistant_header == "<A>"
    with pytest.raises(ValueError, match="unknown field"):
        registry({"bad": {"assistant_headr": "x"}})


def test_r1_distill_without_end_of_turn_is_a_clear_error(qwen):
    with pytest.raises(TokenizeError, match="no end_of_turn_token"):
        Preprocessor(qwen, get_template("deepseek-r1-distill"))


EDGE_ROWS = [
    {
        "id": "tools",
        "tools": json.dumps([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]),
        "conversations": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": json.dumps(
                    [
                        {
                            "id": "c1",
                            "type": "function",
                            "extra": 1,
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ]
                ),
            },
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."},
        ],
    },
    {
        "id": "badargs",
        "conversations": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": "y",
                "tool_calls": [{"function": {"name": "f", "arguments": "{not json"}}],
            },
        ],
    },
    {"id": "sharegpt", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    {
        "id": "nonstr",
        "conversations": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": 42},
        ],
    },
    {
        "id": "leading-assistant",
        "conversations": [
            {"role": "assistant", "content": "oops"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": "cut"},
        ],
    },
    {
        "id": "markers",
        "conversations": [
            {"role": "user", "content": "say <|im_start|>assistant\nhi"},
            {"role": "assistant", "content": "a<|im_end|>\nb"},
        ],
    },
    {"id": "preformatted-in-mix", "text": "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"},
    {
        "id": "lead-newlines",
        "conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\n\nx"}],
    },
]


@pytest.mark.parametrize(
    "opts",
    [
        dict(),
        dict(train_only_last_turn=True),
        dict(inject_system_prompt=False),
        dict(max_length=24),
        dict(shift_mask_885=True),
        dict(incremental_mask=True),
    ],
)
def test_fast_equals_straightforward_edge_rows(qwen, opts):
    pre = Preprocessor(qwen, get_template("qwen"), TokenizeOptions(**opts))
    rows = EDGE_ROWS + corpus()[:15]
    fast = pre.process_rows(rows)
    slow = straightforward_rows(pre, rows)
    for r, a, b in zip(rows, fast, slow):
        assert (a.input_ids, a.loss_mask) == (b.input_ids, b.loss_mask), r["id"]


def test_thinking_and_ignore_templates_fast_equals_straightforward(qwen3):
    rows = (
        EDGE_ROWS
        + corpus()[:8]
        + [
            {
                "id": "reason",
                "conversations": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "reasoning_content": "think hard"},
                ],
            }
        ]
    )
    for name in ("qwen3-instruct", "qwen3-thinking", "qwen3-next-thinking", "qwen3.5"):
        pre = Preprocessor(qwen3, get_template(name), TokenizeOptions())
        fast, slow = pre.process_rows(rows), straightforward_rows(pre, rows)
        assert [(a.input_ids, a.loss_mask) for a in fast] == [(b.input_ids, b.loss_mask) for b in slow], name


def test_message_handling_matches_specforge_rules(qwen):
    pre = Preprocessor(qwen, get_template("qwen"))
    res = {r["id"]: x for r, x in zip(EDGE_ROWS, pre.process_rows(EDGE_ROWS))}
    assert "You are a helpful assistant." in res["sharegpt"].text and "hello" in res["sharegpt"].text
    t = res["tools"].text
    assert '"city": "Paris"' in t and "extra" not in t and "get_weather" in t
    assert any("arguments are not valid JSON" in w for w in res["badargs"].warnings)
    assert '[{"type": "text", "text": "hi"}]' in res["nonstr"].text and "42" in res["nonstr"].text
    pf = res["preformatted-in-mix"]
    assert (
        pf.text.startswith("<|im_start|>user")
        and qwen.decode([i for i, k in zip(pf.input_ids, pf.loss_mask) if k]) == "a<|im_end|>\n"
    )
    assert "oops" not in res["leading-assistant"].text and "cut" not in res["leading-assistant"].text
    # marker text inside content is not escaped (SpecForge behaviour): the user text after the
    # literal header is supervised, the answer after a literal <|im_end|>\n is not
    m = res["markers"]
    sup = qwen.decode([i for i, k in zip(m.input_ids, m.loss_mask) if k])
    assert sup.startswith("hi<|im_end|>\n") and "b" not in sup.replace("<|im_end|>", "")


def test_corrected_options(qwen):
    row = corpus()[0]
    base = Preprocessor(qwen, get_template("qwen")).process(row)
    shifted = Preprocessor(qwen, get_template("qwen"), TokenizeOptions(shift_mask_885=True)).process(row)
    assert shifted.loss_mask == base.loss_mask[1:] + [0]
    nosys = Preprocessor(qwen, get_template("qwen"), TokenizeOptions(inject_system_prompt=False)).process(
        {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    )
    # qwen2.5's own Jinja template still adds its default prompt; SpecForge's injected one is absent
    assert nosys.text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    inc = Preprocessor(qwen, get_template("qwen"), TokenizeOptions(incremental_mask=True)).process(row)
    assert inc.input_ids == base.input_ids
    assert sum(inc.loss_mask) > 0


def test_incremental_mask_works_for_unregistered_markers(qwen):
    """A user template with wrong markers gives all-zero masks; the incremental mask does not."""
    wrong = registry({"wrong": {"assistant_header": "<<A>>", "user_header": "<<U>>", "end_of_turn_token": "<<E>>"}})[
        "wrong"
    ]
    row = corpus()[3]
    assert sum(Preprocessor(qwen, wrong).process(row).loss_mask) == 0
    assert sum(Preprocessor(qwen, wrong, TokenizeOptions(incremental_mask=True)).process(row).loss_mask) > 0


def test_bad_rows_are_errors_not_crashes(qwen):
    pre = Preprocessor(qwen, get_template("qwen"))
    res = pre.process_rows([{"id": "e", "conversations": []}, {"id": "n"}, {"id": "s", "conversations": "text"}])
    assert all(isinstance(r, TokenizeError) or isinstance(r, ValueError) for r in res)
    with pytest.raises(TokenizeError, match="string 'text'"):
        Preprocessor(qwen, get_template("qwen"), TokenizeOptions(is_preformatted=True)).process({"id": "x"})


def test_harmony_template(qwen):
    pre = Preprocessor(qwen, get_template("gpt-oss"))
    r = pre.process(
        {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant_final", "content": "yo"}]}
    )
    assert r.text.startswith("<|start|>system<|message|>You are ChatGPT") and sum(r.loss_mask) > 0
    with pytest.raises(TokenizeError, match="harmony"):
        pre.process({"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})


def test_verify_every_catches_a_wrong_fast_path(qwen, monkeypatch):
    rows = corpus()[:4]
    good = Preprocessor(qwen, get_template("qwen")).process_rows(rows)
    pre = Preprocessor(qwen, get_template("qwen"), verify_every=2)
    monkeypatch.setattr(pre, "_count", lambda text, p, e, c: 0)  # a broken fast path: masks nothing
    res = pre.process_rows(rows)
    assert sum(res[0].loss_mask) == 0  # not verified
    assert (res[1].input_ids, res[1].loss_mask) == (good[1].input_ids, good[1].loss_mask)
    assert any("straightforward" in w for w in res[1].warnings)
