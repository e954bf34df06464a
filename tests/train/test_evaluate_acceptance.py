"""Greedy chain speculative decoding: lossless vs plain greedy, trained draft beats untrained."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from specforge_assets.train.eagle3 import load_draft_checkpoint, load_vocab_mapping_file
from specforge_assets.train.evaluate import _prompt_ids, evaluate_acceptance
from specforge_assets.train.loop import train_draft
from specforge_assets.train.settings import TrainConfig
from tests.helpers.toy import toy_rows, write_toy_dataset, write_vocab_mapping

from .test_loop_train import toy_target_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaltoy")
    target_dir = toy_target_dir()
    write_toy_dataset(d / "dataset", n=128, seed=0)
    vm = write_vocab_mapping(d / "vm" / "vocab_mapping.pt", toy_rows(128, seed=0), draft_vocab_size=58)
    cfg = TrainConfig(ttt_length=4, lr=3e-3, warmup_ratio=0.05, epochs=6, batch_size=8, max_length=64, log_every=0)
    train_draft(
        cfg,
        target_path=target_dir,
        dataset_path=d / "dataset",
        vocab_mapping_path=vm,
        out_dir=d / "draft",
        log=lambda *_: None,
    )
    target = AutoModelForCausalLM.from_pretrained(str(target_dir)).eval()
    return target, load_draft_checkpoint(d / "draft", target), load_vocab_mapping_file(vm)


def test_trained_draft_beats_untrained_and_is_lossless(trained):
    target, draft, mapping = trained
    prompts = [r["input_ids"][:7] for r in toy_rows(6, seed=123)]  # held-out progressions
    k = 4
    res = evaluate_acceptance(target, None, draft, prompts, k=k, max_new_tokens=16)
    base = evaluate_acceptance(target, None, None, prompts, k=k, max_new_tokens=16, vocab_mapping=mapping)
    for r in (res, base):
        assert r["lossless"] is True, r["mismatches"]
        assert r["num_prompts"] == 6 and r["tokens_generated"] == 6 * 16
        assert len(r["per_position_acceptance"]) == k
        assert 1.0 <= r["acceptance_length"] <= k + 1
    assert base["acceptance_length"] < 1.3
    assert res["acceptance_length"] > base["acceptance_length"] + 0.8, (res, base)
    assert res["per_position_acceptance"][0] > base["per_position_acceptance"][0]


def test_lossless_check_detects_a_wrong_decoder(trained, monkeypatch):
    """If verification were misaligned, the output would differ from plain greedy: make the
    speculative loop accept every proposal and check that `lossless` turns False."""
    import specforge_assets.train.evaluate as ev

    target, _, mapping = trained
    real = ev._target_forward

    def lying_forward(tgt, ids, aux_layers, device, cache=None):
        aux, greedy = real(tgt, ids, aux_layers, device, cache)
        if aux_layers is None:  # plain greedy decoding stays honest
            return aux, greedy
        return aux, torch.roll(greedy, 1)  # off-by-one verification

    monkeypatch.setattr(ev, "_target_forward", lying_forward)
    prompts = [r["input_ids"][:7] for r in toy_rows(2, seed=7)]
    res = evaluate_acceptance(target, None, None, prompts, k=2, max_new_tokens=8, vocab_mapping=mapping)
    assert res["lossless"] is False and res["mismatches"]


def test_kv_cache_gives_the_same_tokens_and_rounds_as_full_reforwards(trained):
    """The cached loop (prefill, then last token + k proposals per round, cache cropped to the
    accepted length) must decode exactly what re-reading the whole sequence decodes."""
    from specforge_assets.train.evaluate import greedy_generate, speculative_generate

    target, draft, _ = trained
    for r in toy_rows(4, seed=99):
        ids = r["input_ids"][:9]
        a = speculative_generate(target, draft, ids, k=3, max_new_tokens=20, eos_ids=set(), device="cpu")
        b = speculative_generate(
            target, draft, ids, k=3, max_new_tokens=20, eos_ids=set(), device="cpu", use_cache=False
        )
        assert a == b
        assert (
            greedy_generate(target, ids, 20, set(), "cpu")
            == greedy_generate(target, ids, 20, set(), "cpu", use_cache=False)
            == a[0]
        )


def test_conversation_prompts_use_chat_template():
    class Tok:
        eos_token_id = 2

        def apply_chat_template(self, msgs, add_generation_prompt, tokenize, **kw):
            assert add_generation_prompt and tokenize
            self.seen = msgs
            return {"input_ids": [1, 5, 6]}

    tok = Tok()
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "old answer"}]
    assert _prompt_ids(tok, {"id": "x", "conversations": conv}, None) == [1, 5, 6]
    assert tok.seen == conv[:1]  # the reference answer is dropped: the target answers itself
    assert _prompt_ids(tok, [3, 4], None) == [3, 4]
