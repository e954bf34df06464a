"""EAGLE3 draft: aux layer rule, shapes, TTT attention, checkpoint format (SpecForge/SGLang names)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from specforge_assets.train.eagle3 import (
    CHECKPOINT_TENSOR_NAMES,
    Eagle3Config,
    TTTCache,
    aux_layer_ids,
    build_draft,
    load_draft_checkpoint,
    save_draft_checkpoint,
    ttt_attention,
)
from tests.helpers.toy import build_toy_target, build_vocab_mapping, toy_rows


@pytest.fixture(scope="module")
def target():
    return build_toy_target(pretrain_steps=0, seed=3)


@pytest.fixture(scope="module")
def mapping():
    return build_vocab_mapping(toy_rows(32), draft_vocab_size=40, vocab_size=64)


def test_aux_layer_rule():
    # SpecForge/SGLang default [1, L//2-1, L-4] (reference: Qwen3-8B 36 layers -> [1,17,32], 40 -> [1,19,36])
    assert aux_layer_ids(32) == [1, 15, 28]
    assert aux_layer_ids(36) == [1, 17, 32]
    assert aux_layer_ids(40) == [1, 19, 36]
    assert aux_layer_ids(8) == [1, 3, 4]
    # collapsed defaults fall back to round(linspace(0, L-2, 3))
    assert aux_layer_ids(4) == [0, 1, 2]  # default would be [1, 1, 0]
    assert aux_layer_ids(5) == [0, 2, 3]  # default [1, 1, 1]
    assert aux_layer_ids(6) == [0, 2, 4]  # default [1, 2, 2]
    for L in range(4, 80):
        ids = aux_layer_ids(L)
        assert len(set(ids)) == 3 and all(0 <= i <= L - 2 for i in ids)
    with pytest.raises(ValueError, match="at least 4 layers"):
        aux_layer_ids(3)


def test_shapes(target, mapping):
    draft = build_draft(target, d2t=mapping["d2t"], t2d=mapping["t2d"], seed=0)
    c = draft.config
    H = target.config.hidden_size
    assert (c.hidden_size, c.vocab_size, c.draft_vocab_size, c.target_hidden_size) == (H, 64, 40, H)
    assert c.aux_layer_ids == [0, 1, 2]
    hd = c.head_dim
    assert draft.fc.weight.shape == (H, 3 * H)
    assert draft.midlayer.self_attn.q_proj.weight.shape == (c.num_attention_heads * hd, 2 * H)
    assert draft.midlayer.self_attn.k_proj.weight.shape == (c.num_key_value_heads * hd, 2 * H)
    assert draft.midlayer.self_attn.o_proj.weight.shape == (H, c.num_attention_heads * hd)
    assert draft.lm_head.weight.shape == (40, H)
    assert draft.d2t.dtype == torch.long and draft.d2t.shape == (40,)
    assert draft.t2d.dtype == torch.bool and draft.t2d.shape == (64,)
    # embeddings copied from the target and frozen
    assert torch.equal(draft.embed_tokens.weight, target.get_input_embeddings().weight)
    assert not draft.embed_tokens.weight.requires_grad
    ids = torch.randint(0, 64, (2, 9))
    logits = draft(ids, torch.randn(2, 9, 3 * H))
    assert logits.shape == (2, 9, 40)


def test_rope_matches_target_rotary():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    t = LlamaForCausalLM(cfg)
    d = build_draft(t)
    assert d.config.rope_scaling["rope_type"] == "llama3"
    assert torch.allclose(d.rotary.inv_freq, t.model.rotary_emb.inv_freq.float())


def test_ttt_attention_matches_masked_reference():
    torch.manual_seed(0)
    B, h, T, d = 2, 3, 7, 8
    q = torch.randn(B, h, T, d)
    k0, v0 = torch.randn(B, h, T, d), torch.randn(B, h, T, d)
    dk = [torch.randn(B, h, T, d) for _ in range(2)]
    dv = [torch.randn(B, h, T, d) for _ in range(2)]
    out = ttt_attention(q, k0, v0, dk, dv, d**-0.5)
    # reference: concatenated keys with an explicit mask (causal block + two diagonal blocks)
    K = torch.cat([k0, *dk], dim=2)
    V = torch.cat([v0, *dv], dim=2)
    causal = torch.ones(T, T).tril().bool()
    eye = torch.eye(T).bool()
    mask = torch.cat([causal, eye, eye], dim=1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, K, V, attn_mask=mask)
    assert torch.allclose(out, ref, atol=1e-5)


def test_training_unroll_matches_inference_chain(target, mapping):
    """Step i at anchor p during training == the (i+1)-th drafted token from prefix 0..p."""
    torch.manual_seed(1)
    draft = build_draft(target, d2t=mapping["d2t"], t2d=mapping["t2d"], seed=0).eval()
    H = target.config.hidden_size
    T, p = 10, 5
    aux = torch.randn(1, T, 3 * H)
    ids = torch.randint(8, 64, (1, T))
    pos = torch.arange(T)
    with torch.no_grad():
        cache = TTTCache()
        h0 = draft.step(ids, draft.project(aux), pos, cache)
        ids1 = torch.roll(ids, -1, dims=1)
        h1 = draft.step(ids1, h0, pos, cache)
        # inference: prefix 0..p only, then one more step at position p
        c2 = TTTCache()
        g0 = draft.step(ids[:, : p + 1], draft.project(aux[:, : p + 1]), pos[: p + 1], c2)
        g1 = draft.step(ids1[:, p : p + 1], g0[:, -1:], pos[p : p + 1], c2)
    assert torch.allclose(h0[:, p], g0[:, -1], atol=1e-5)
    assert torch.allclose(h1[:, p], g1[:, 0], atol=1e-5)


def test_checkpoint_format_and_roundtrip(tmp_path, target, mapping):
    draft = build_draft(target, d2t=mapping["d2t"], t2d=mapping["t2d"], seed=0)
    out = save_draft_checkpoint(draft, tmp_path / "draft", target.config, extra_manifest={"note": "test"}, dtype=None)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        d2t, t2d = f.get_tensor("d2t"), f.get_tensor("t2d")
        fc = f.get_tensor("fc.weight")
    assert keys == set(CHECKPOINT_TENSOR_NAMES)
    assert not any("embed" in k for k in keys)
    assert d2t.dtype == torch.int64 and t2d.dtype == torch.bool
    assert torch.equal(d2t, mapping["d2t"]) and torch.equal(t2d, mapping["t2d"])
    H = target.config.hidden_size
    assert fc.shape == (H, 3 * H)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLMEagle3"]
    assert cfg["num_hidden_layers"] == 1
    assert cfg["vocab_size"] == 64 and cfg["draft_vocab_size"] == 40
    assert cfg["hidden_size"] == H and cfg["target_hidden_size"] == H
    assert cfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [0, 1, 2]
    assert cfg["tie_word_embeddings"] is False
    for k in (
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "rms_norm_eps",
        "rope_theta",
        "max_position_embeddings",
        "hidden_act",
        "model_type",
        "torch_dtype",
    ):
        assert k in cfg, k
    assert json.loads((out / "manifest.json").read_text())["note"] == "test"
    assert Eagle3Config.from_hf_dict(cfg).aux_layer_ids == [0, 1, 2]
    # round trip: same logits, embeddings from the target
    back = load_draft_checkpoint(out, target)
    ids = torch.randint(0, 64, (1, 6))
    aux = torch.randn(1, 6, 3 * H)
    with torch.no_grad():
        assert torch.allclose(back(ids, aux), draft(ids, aux), atol=1e-6)
    # default export is bf16 (what SpecForge ships); ints/bools untouched
    out2 = save_draft_checkpoint(draft, tmp_path / "bf16")
    with safe_open(str(out2 / "model.safetensors"), "pt") as f:
        assert f.get_tensor("fc.weight").dtype == torch.bfloat16
        assert f.get_tensor("d2t").dtype == torch.int64


def test_bad_vocab_mapping_rejected(target, mapping):
    draft = build_draft(target, d2t=mapping["d2t"], t2d=mapping["t2d"])
    with pytest.raises(ValueError, match="shapes"):
        draft.load_vocab_mapping(mapping["d2t"][:10], mapping["t2d"])
    bad = mapping["t2d"].clone()
    bad[mapping["t2d"].nonzero()[0]] = False
    bad[(~mapping["t2d"]).nonzero()[0]] = True
    with pytest.raises(ValueError, match="inconsistent"):
        draft.load_vocab_mapping(mapping["d2t"], bad)
