"""The published draft's format check (`sglang_checkpoint_format` on models/draft_model): a folder
written by save_draft_checkpoint passes; each way a folder can differ from what SGLang's EAGLE3
loader reads is named."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from specforge_assets.train.eagle3 import build_draft, checkpoint_format_problems, save_draft_checkpoint
from tests.helpers.toy import cached_toy_target


FIXTURE_TARGET = Path(__file__).resolve().parent.parent / "fixtures" / "train" / "toy_target"


def _draft_folder(tmp_path):
    from transformers import AutoModelForCausalLM

    target_dir = FIXTURE_TARGET if (FIXTURE_TARGET / "model.safetensors").exists() else cached_toy_target()
    target = AutoModelForCausalLM.from_pretrained(str(target_dir)).eval()
    return save_draft_checkpoint(build_draft(target, seed=0), tmp_path / "draft", target.config)


def test_saved_checkpoint_passes_and_each_defect_is_named(tmp_path):
    out = _draft_folder(tmp_path)
    problems, shapes = checkpoint_format_problems(out)
    assert problems == [] and "d2t" in shapes and "t2d" in shapes
    cfg = json.loads((out / "config.json").read_text())

    tensors = load_file(str(out / "model.safetensors"))
    tensors["embed_tokens.weight"] = torch.zeros(2, 2)
    tensors["d2t"] = torch.zeros(cfg["draft_vocab_size"] + 1, dtype=torch.int64)
    save_file(tensors, str(out / "model.safetensors"))
    cfg["architectures"] = ["LlamaForCausalLM"]
    del cfg["hidden_size"]
    (out / "config.json").write_text(json.dumps(cfg))
    problems, _ = checkpoint_format_problems(out)
    text = "\n".join(problems)
    assert "architectures=['LlamaForCausalLM']" in text
    assert "config.json lacks hidden_size" in text
    assert "unexpected ['embed_tokens.weight']" in text and "embedding weights present" in text
    assert f"d2t shape [{cfg['draft_vocab_size'] + 1}]" in text

    (out / "model.safetensors").unlink()
    assert "model.safetensors missing" in checkpoint_format_problems(out)[0]
