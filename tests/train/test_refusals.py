"""Train layer: unreadable rows skipped and counted, a draft trained on nothing / an evaluation
over zero prompts refused with one `error:` line, command-line paths relative to the cwd."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from specforge_assets.cli import main
from specforge_assets.errors import UserError
from specforge_assets.train.data import check_trainable, load_tokenized
from specforge_assets.train.errors import TrainInputError
from tests.helpers.toy import toy_rows, write_toy_dataset

from .test_loop_train import toy_target_dir


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return path


def test_unreadable_rows_are_skipped_and_counted(tmp_path):
    rows = toy_rows(3, seed=2)
    lone = '{"id": "lone", "input_ids": [1, 2], "loss_mask": [1, 1], "note": "\\ud83d"}'
    deep = '{"id": "deep", "input_ids": ' + "[" * 200 + "]" * 200 + "}"
    f = _jsonl(tmp_path / "rows.jsonl", [json.dumps(rows[0]), lone, deep, json.dumps(rows[1]), json.dumps(rows[2])])
    got = load_tokenized(f, 64)
    assert got.ids == [r["id"] for r in rows] and got.skipped_unreadable == 2
    assert got.unreadable_examples == [
        f"{f}:2: note: lone surrogate \\ud83d at char 0",
        f"{f}:3: input_ids: JSON nested deeper than 128 levels",
    ]


def test_nothing_to_train_on_is_refused(tmp_path):
    zero = _jsonl(
        tmp_path / "zero.jsonl",
        [json.dumps({"id": f"z{i}", "input_ids": [1, 2, 3], "loss_mask": [0, 0, 0]}) for i in range(3)],
    )
    with pytest.raises(TrainInputError) as ei:
        load_tokenized(zero, 64)
    assert isinstance(ei.value, UserError)
    assert str(ei.value) == (
        f"no trainable rows in {zero} (3 rows: 3 without two consecutive supervised tokens): "
        "no supervised tokens to train on; check max_length / chat template of the tokenize step"
    )
    with pytest.raises(TrainInputError, match=r"no supervised tokens in .*zero\.jsonl \(3 rows, all loss masks zero\)"):
        check_trainable(zero)
    empty = _jsonl(tmp_path / "empty" / "train.jsonl", [])
    with pytest.raises(TrainInputError, match="no rows in .*empty: nothing to train on"):
        check_trainable(empty.parent)
    pq_dir = write_toy_dataset(tmp_path / "pq", n=4, seed=0)
    assert check_trainable(pq_dir)["rows"] == 4 and check_trainable(pq_dir)["supervised_tokens"] > 0


def test_train_cli_refuses_before_launch_with_cwd_relative_paths(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    _jsonl(work / "ds" / "train.jsonl", [json.dumps({"id": "z", "input_ids": [1, 2, 3], "loss_mask": [0, 0, 0]})])
    shutil.copytree(toy_target_dir(), work / "tgt")
    monkeypatch.setenv("SPECFORGE_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.chdir(work)
    assert main(["train", "--dataset", "ds", "--target", "tgt", "--vocab-mapping", "vm.pt", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: no supervised tokens in {work / 'ds'} (1 rows, all loss masks zero): nothing to train on; "
        "check max_length / chat template of the tokenize step\n"
    )
    assert not (tmp_path / "root" / "models" / "draft_model_work").exists()  # nothing launched
    assert main(["train", "--dataset", "missing", "--target", "tgt"]) == 1
    assert f"error: {work / 'missing'}: tokenized dataset not found" in capsys.readouterr().err
    assert main(["train", "--dataset", "ds", "--target", "./no-such-target"]) == 1
    assert "error: --target ./no-such-target: no such folder" in capsys.readouterr().err

    from specforge_assets.train.cli import _path, _target

    assert _target("tgt") == work / "tgt" and _path("ds", Path("/default")) == work / "ds"
    assert _path(None, Path("/default")) == Path("/default")


def test_evaluation_over_zero_prompts_is_refused(tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    from specforge_assets.train.evaluate import evaluate_acceptance

    target = AutoModelForCausalLM.from_pretrained(str(toy_target_dir())).eval()
    with pytest.raises(TrainInputError, match="no prompts to evaluate on"):
        evaluate_acceptance(target, None, None, [], k=2, max_new_tokens=4)

    # the CLI: a held-out file with no usable prompt (text rows, no user turn, an unreadable row)
    work = tmp_path / "work"
    shutil.copytree(toy_target_dir(), work / "tgt")
    _save_tokenizer(work / "tgt")
    (work / "draft").mkdir()
    (work / "vm.pt").write_bytes(b"")
    _jsonl(
        work / "held" / "test.jsonl",
        [
            json.dumps({"id": "t", "text": "pre-formatted"}),
            json.dumps({"id": "a", "conversations": [{"role": "assistant", "content": "no user turn"}]}),
            '{"id": "lone", "conversations": [{"role": "user", "content": "\\ud83d"}]}',
        ],
    )
    monkeypatch.setenv("SPECFORGE_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.chdir(work)
    rc = main(
        [
            "evaluate",
            "--target",
            "tgt",
            "--draft",
            "draft",
            "--vocab-mapping",
            "vm.pt",
            "--test",
            "held/test.jsonl",
            "--output",
            "report",
            "--num-prompts",
            "4",
            "--k",
            "2",
            "--max-new-tokens",
            "4",
        ]
    )
    out = capsys.readouterr().err
    errors = [l for l in out.splitlines() if l.startswith("error:")]  # (transformers may draw progress bars)
    assert rc == 1 and len(errors) == 1 and "Traceback" not in out
    err = errors[0]
    assert err.startswith(f"error: no usable held-out prompts in {work / 'held' / 'test.jsonl'} ")
    assert "'skipped_text_rows': 1" in err and "'skipped_no_user_turn': 1" in err and "'skipped_unreadable': 1" in err
    assert not (work / "report").exists()
    assert (
        main(
            [
                "evaluate",
                "--target",
                "tgt",
                "--draft",
                "draft",
                "--vocab-mapping",
                "vm.pt",
                "--test",
                "held/test.jsonl",
                "--num-prompts",
                "0",
            ]
        )
        == 1
    )
    assert "num_prompts must be >= 1" in capsys.readouterr().err


def _save_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        ["hello world"],
        trainer=trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(str(folder))
