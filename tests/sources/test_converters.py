"""Pure converters on raw rows in each hub schema, including the awkward ones."""

from __future__ import annotations

import hashlib
import random

import pytest

from specforge_assets.sources.converters import build_converter
from specforge_assets.sources.errors import RowError
from specforge_assets.sources.config import get_preset


def conv(preset: str):
    p = get_preset(preset)
    return build_converter(p.converter, p.options)


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def test_ultrachat_copies_messages_and_rejects_system():
    c = conv("ultrachat")
    row = {
        "prompt": "p",
        "prompt_id": "abc",
        "messages": [{"content": "q", "role": "user"}, {"content": "a", "role": "assistant"}],
    }
    assert c(row, 0) == (
        {"id": "abc", "conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        0,
    )
    with pytest.raises(RowError, match="Unsupported UltraChat role: 'system'") as e:
        c({"prompt_id": "x", "messages": [{"content": "s", "role": "system"}]}, 0)
    assert e.value.field == "messages[0].role"


def test_sharegpt_maps_senders_and_counts_dropped():
    c = conv("sharegpt")
    row = {
        "id": 7,
        "conversations": [
            {"from": "system", "value": "sys"},
            {"from": "human", "value": "q"},
            {"from": "chatgpt", "value": "a"},
            {"from": "Human", "value": "dropped"},
            {"from": "bard", "value": None},
        ],
    }
    out, skipped = c(row, 0)
    assert out == {
        "id": "7",
        "conversations": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": None},
        ],
    }
    assert skipped == 2


def test_sharegpt_with_role_content_rows_fails_on_from():
    with pytest.raises(RowError, match="no 'from'") as e:
        conv("sharegpt")({"id": "x", "conversations": [{"role": "user", "content": "q"}]}, 0)
    assert e.value.field == "conversations[0].from"


def test_indexed_presets():
    out, _ = conv("perfectblend")({"conversations": [{"from": "human", "value": "q"}], "source": "s"}, 12)
    assert out == {"id": "12", "conversations": [{"role": "user", "content": "q"}]}
    out, _ = conv("perfectblend-llama3.1-8b-instruct")({"id": "orig", "conversations": [], "extra": 1}, 3)
    assert out == {"id": 3, "conversations": [], "extra": 1} and list(out) == ["id", "conversations", "extra"]


def test_eaglechat_identity_keeps_everything():
    row = {"id": "e1", "conversations": [{"role": "tool", "content": None}]}
    assert conv("eaglechat")(row, 5) == (row, 0)


def test_magpie_uses_uuid():
    out, skipped = conv("magpie-qwen2.5-pro-1m-v0.1")(
        {
            "uuid": "u-1",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            "model": "m",
        },
        0,
    )
    assert out["id"] == "u-1" and skipped == 0 and list(out) == ["id", "conversations"]


def test_nebius_takes_first_message_whatever_its_role():
    row = {
        "conversation": [{"content": "system text", "role": "system"}, {"content": "later", "role": "user"}],
        "generated_message": {"content": "ans", "role": "assistant"},
    }
    assert conv("nebius-llama31-8b-infinity-instruct")(row, 4)[0] == {
        "id": "4",
        "conversations": [{"role": "user", "content": "system text"}, {"role": "assistant", "content": "ans"}],
    }
    with pytest.raises(RowError, match="conversation is empty"):
        conv("nebius-llama31-8b-infinity-instruct")({"conversation": [], "generated_message": {"content": "a"}}, 0)


@pytest.mark.parametrize(
    "preset,row,user,assistant",
    [
        ("gsm8k", {"question": "q?", "answer": "x <<1+1=2>>2\n#### 2"}, "q?", "x <<1+1=2>>2\n#### 2"),
        ("opc", {"instruction": "i", "output": "o", "tag": "t"}, "i", "o"),
        ("hendrycks_math", {"problem": "p", "level": "1", "type": "t", "solution": "s"}, "p", "s"),
        ("math_qa", {"Problem": "P", "Rationale": "R", "options": ""}, "P\n", "R"),
        ("magicoder-evol-instruct", {"instruction": "i", "response": "r"}, "i", "r"),
        ("camel", {"role_1": "x", "topic;": "t", "sub_topic": "s", "message_1": "m1", "message_2": "m2"}, "m1", "m2"),
        ("codealpaca-20k", {"instruction": "do", "input": "", "output": "o"}, "do", "o"),
        ("codealpaca-20k", {"instruction": "do", "input": " ", "output": "o"}, "do\n\n ", "o"),
    ],
)
def test_md5_single_turn_presets(preset, row, user, assistant):
    out, _ = conv(preset)(row, 0)
    assert out == {
        "id": md5(user + assistant),
        "conversations": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
    }


def test_md5_of_null_is_a_row_error():
    with pytest.raises(RowError, match="question is NoneType") as e:
        conv("gsm8k")({"question": None, "answer": "a"}, 0)
    assert e.value.field == "question"


def test_opencodeinstruct_id_falls_back_on_falsy():
    c = conv("opencodeinstruct")
    assert c({"id": "oci-1", "input": "i", "output": "o"}, 0)[0]["id"] == "oci-1"
    assert c({"id": "", "input": "i", "output": "o"}, 0)[0]["id"] == md5("io")
    assert c({"id": None, "input": "i", "output": "o"}, 0)[0]["id"] == md5("io")
    # null text passes through when it is not hashed
    assert c({"id": "k", "input": None, "output": "o"}, 0)[0]["conversations"][0]["content"] is None


def test_sciq_matches_seeded_global_shuffle_and_labels_first_match():
    row = {
        "question": "Q",
        "distractor3": "same",
        "distractor1": "b",
        "distractor2": "c",
        "correct_answer": "same",
        "support": "",
    }
    random.seed(0)
    opts = ["same", "b", "c", "same"]
    random.shuffle(opts)
    label = "abcd"[opts.index("same")]
    user = "Q\n" + "\n".join(f"{l}) {o}" for l, o in zip("abcd", opts))
    assistant = f"\nanswer: {label}) same"
    out, _ = conv("sciq")(row, 0)
    assert out == {
        "id": md5(user + assistant),
        "conversations": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
    }


def test_converter_options_are_one_model_for_both_paths():
    """The row-by-row and the columnar ultrachat/sharegpt readers take the same option defaults
    (one declaration), and a misspelt option is one line naming converter and option."""
    import pyarrow as pa

    from specforge_assets.configmodel import ConfigError
    from specforge_assets.sources import fast
    from specforge_assets.sources.converters import build_converter

    row = {"prompt_id": "p1", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    slow, _ = build_converter("ultrachat")(row, 0)
    items, _ = fast.convert_arrow("ultrachat", {}, pa.RecordBatch.from_pylist([row]), 0)
    assert slow["id"] == items[0][0] == "p1"
    with pytest.raises(
        ConfigError, match=r"^configs/sources.yaml presets: converter 'sharegpt' options: unknown key 'id_feild'"
    ):
        build_converter("sharegpt", {"id_feild": "uuid"})
