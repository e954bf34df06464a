"""Greedy chain speculative decoding with an EAGLE3 draft: acceptance length and losslessness.

Per round: the draft proposes k tokens from the target's aux features (as EAGLE3 does when
serving), the target scores prefix + proposal in one forward, the longest prefix of proposals
equal to the target's greedy choices is accepted, plus the target's own next token (the bonus).

* ``acceptance_length`` = tokens produced per verifying target forward, bonus included
  (mean of accepted+1 over rounds; the prefill that yields the first token is not a round).
  An untrained draft scores ~1.0; the maximum is k+1.
* ``per_position_acceptance[j]`` = P(draft token j+1 accepted | tokens 1..j accepted) over rounds
  where position j+1 was reached; ``per_position_acceptance_cumulative[j]`` = P(first j+1 all
  accepted).
* ``rounds_per_prompt[i]`` = accepted-draft-count per round for prompt i;
  :func:`acceptance_by_group` turns it into per-category numbers.
* ``generated_per_prompt[i]`` = the speculative output for prompt i (when lossless, the target's
  own greedy answer: multi-turn evaluation asks the next turn after it).
* ``lossless`` = the speculative output equals plain greedy decoding by the target, token for
  token, for every prompt (a mismatch means an alignment bug).

The target keeps a KV cache (`use_cache=True`, the default). Prefill once, then each round
feeds only the last accepted token plus the k proposals, and the cache is cropped back to the
accepted length. `use_cache=False` re-reads the whole sequence every forward; it is the simplest
reference, and the fallback for models whose cache cannot be cropped.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import torch

from .eagle3 import LlamaForCausalLMEagle3, build_draft
from .settings import EvaluationSettings

_EVAL = EvaluationSettings()  # `k` and `max_new_tokens` default to configs/train.yaml `evaluation:`'s


def _prompt_ids(tokenizer, prompt: Any, chat_template: str | None) -> list[int]:
    if isinstance(prompt, dict) and "input_ids" in prompt:
        return list(prompt["input_ids"])
    if isinstance(prompt, (list, tuple)) and (len(prompt) == 0 or isinstance(prompt[0], int)):
        return list(prompt)
    if tokenizer is None:
        raise ValueError("conversation prompts need a tokenizer")
    if isinstance(prompt, dict) and "conversations" in prompt:
        prompt = prompt["conversations"]
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    msgs = list(prompt)
    if msgs and msgs[-1].get("role") == "assistant":  # evaluate on the prompt up to the last answer
        msgs = msgs[:-1]
    kw = {"chat_template": chat_template} if chat_template else {}
    ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, **kw)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def _new_cache():
    from transformers import DynamicCache

    return DynamicCache()


@functools.lru_cache(maxsize=None)
def _cache_kwarg(model_cls: type) -> str:
    """`cache` in newer transformers (where `past_key_values` is deprecated), else `past_key_values`.
    Looked up once per model class, not on every forward."""
    import inspect

    try:
        params = inspect.signature(model_cls.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def _target_forward(
    target, ids: list[int], aux_layers: list[int] | None, device, cache=None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Forward `ids` (the whole sequence, or with `cache` only the tokens after it).
    Returns the aux features and the greedy next-token choice at each fed position."""
    x = torch.tensor([ids], device=device)
    want_hidden = aux_layers is not None
    if cache is None:
        out = target(input_ids=x, output_hidden_states=want_hidden, use_cache=False)
    else:
        out = target(
            input_ids=x, output_hidden_states=want_hidden, use_cache=True, **{_cache_kwarg(type(target)): cache}
        )
    aux = torch.cat([out.hidden_states[i + 1] for i in aux_layers], dim=-1) if want_hidden else None
    return aux, out.logits[0].argmax(-1)


@torch.no_grad()
def greedy_generate(
    target, ids: list[int], max_new_tokens: int, eos_ids: set[int], device, use_cache: bool = True
) -> list[int]:
    """Plain greedy decoding by the target."""
    seq = list(ids)
    new: list[int] = []
    cache = _new_cache() if use_cache else None
    feed = seq
    for _ in range(max_new_tokens):
        _, greedy = _target_forward(target, feed if use_cache else seq, None, device, cache)
        t = int(greedy[-1])
        seq.append(t)
        new.append(t)
        feed = [t]
        if t in eos_ids:
            break
    return new


@torch.no_grad()
def speculative_generate(
    target,
    draft: LlamaForCausalLMEagle3,
    ids: list[int],
    *,
    k: int,
    max_new_tokens: int,
    eos_ids: set[int],
    device,
    use_cache: bool = True,
) -> tuple[list[int], list[int]]:
    """(new tokens, accepted-draft-count per verify round)."""
    aux_layers = list(draft.config.aux_layer_ids)
    seq = list(ids)
    cache = _new_cache() if use_cache else None
    aux, greedy = _target_forward(target, seq, aux_layers, device, cache)  # prefill
    first = int(greedy[-1])
    seq.append(first)
    new = [first]
    rounds: list[int] = []
    # invariant: aux (and the cache) hold the target's features for positions 0..len(seq)-2
    while len(new) < max_new_tokens and new[-1] not in eos_ids:
        n = len(seq) - 1
        next_ids = torch.tensor([seq[1 : n + 1]], device=device)
        proposal = draft.propose(aux[:, :n].to(next(draft.parameters()).dtype), next_ids, k)
        if cache is not None:  # feed seq[-1] + proposal after the cached n positions
            aux_new, g = _target_forward(target, [seq[-1]] + proposal, aux_layers, device, cache)
            base = 0
        else:
            aux_full, g = _target_forward(target, seq + proposal, aux_layers, device)
            base = n
        # target's choice after seq[-1] is g[base]; after proposal[j] it is g[base+1+j]
        acc = 0
        while acc < k and proposal[acc] == int(g[base + acc]):
            acc += 1
        accepted = proposal[:acc] + [int(g[base + acc])]
        rounds.append(acc)
        for t in accepted:
            seq.append(t)
            new.append(t)
            if t in eos_ids or len(new) >= max_new_tokens:
                break
        if cache is not None:  # keep positions n..n+acc (seq[-1] and the accepted proposals)
            aux = torch.cat([aux, aux_new[:, : acc + 1]], dim=1)
            extra = cache.get_seq_length() - (n + acc + 1)
            if extra > 0:
                cache.crop(-extra)  # a negative count removes that many (old and new transformers alike)
        else:
            aux = aux_full[:, : len(seq) - 1]
    return new[:max_new_tokens], rounds


def _summarise(all_rounds: list[list[int]], k: int) -> dict:
    flat = [a for r in all_rounds for a in r]
    n = len(flat)
    acc_len = (sum(a + 1 for a in flat) / n) if n else 1.0
    cond, cum = [], []
    for j in range(k):
        reached = sum(1 for a in flat if a >= j)
        passed = sum(1 for a in flat if a >= j + 1)
        cond.append(passed / reached if reached else 0.0)
        cum.append(passed / n if n else 0.0)
    return {
        "acceptance_length": acc_len,
        "per_position_acceptance": cond,
        "per_position_acceptance_cumulative": cum,
        "num_rounds": n,
    }


def acceptance_by_group(rounds_per_prompt: Sequence[Sequence[int]], groups: Sequence[Any], k: int) -> dict:
    """{group: {n, acceptance_length, per_position_acceptance}} over the prompts of each group
    (`groups[i]` is prompt i's group), computed exactly like the overall numbers."""
    if len(groups) != len(rounds_per_prompt):
        raise ValueError(f"{len(groups)} group labels for {len(rounds_per_prompt)} prompts")
    by: dict[Any, list] = {}
    for g, r in zip(groups, rounds_per_prompt):
        by.setdefault(g, []).append(list(r))
    out = {}
    for g, rs in by.items():
        s = _summarise(rs, k)
        out[g] = {
            "n": len(rs),
            "acceptance_length": s["acceptance_length"],
            "per_position_acceptance": s["per_position_acceptance"],
            "num_rounds": s["num_rounds"],
        }
    return out


def evaluate_acceptance(
    target_model,
    tokenizer,
    draft_model: LlamaForCausalLMEagle3 | None,
    prompts: Sequence[Any],
    *,
    k: int = _EVAL.k,  # type: ignore[assignment]  # the model's default is one int
    max_new_tokens: int = _EVAL.max_new_tokens,
    chat_template: str | None = None,
    vocab_mapping: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    stop_at_eos: bool = True,
    check_lossless: bool = True,
    max_prompt_tokens: int | None = None,
    use_cache: bool = True,
    reference_cache: dict | None = None,
) -> dict:
    """Acceptance of `draft_model` (None: an untrained, randomly initialised draft) on `prompts`
    (conversations — the trailing assistant turn is dropped — or token-id lists).

    `reference_cache` ({tuple(prompt ids): greedy output}) lets several calls on the same prompts
    (other k, other drafts) share the target's plain greedy decoding that the lossless check
    compares with: it depends on the prompt and `max_new_tokens` only, so it is computed once.

    Zero prompts are refused (`TrainInputError`): an acceptance length over nothing is not 0 or NaN,
    it is no measurement."""
    from .errors import TrainInputError

    prompts = list(prompts)
    if not prompts:
        raise TrainInputError("no prompts to evaluate on: an acceptance length needs at least one prompt")
    if k < 1 or max_new_tokens < 1:
        raise TrainInputError(
            f"evaluation needs k >= 1 and max_new_tokens >= 1 (got k={k}, max_new_tokens={max_new_tokens})"
        )
    device = next(target_model.parameters()).device
    target_model.eval()
    if draft_model is None:
        d2t, t2d = vocab_mapping if vocab_mapping is not None else (None, None)
        draft_model = build_draft(target_model, d2t=d2t, t2d=t2d, seed=seed).to(device)
    draft_model = draft_model.to(device).eval()
    dtype = next(target_model.parameters()).dtype
    if next(draft_model.parameters()).dtype != dtype:
        draft_model = draft_model.to(dtype)
    eos: set[int] = set()
    if stop_at_eos:
        e = getattr(target_model.config, "eos_token_id", None)
        if e is None and tokenizer is not None:
            e = tokenizer.eos_token_id
        eos = set(e if isinstance(e, (list, tuple)) else ([e] if e is not None else []))
    all_rounds, mismatches, generated = [], [], 0
    generated_per_prompt: list[list[int]] = []
    cache_fallback = None
    samples = []
    for i, p in enumerate(prompts):
        ids = _prompt_ids(tokenizer, p, chat_template)
        if max_prompt_tokens:
            ids = ids[-max_prompt_tokens:]
        try:
            spec, rounds = speculative_generate(
                target_model,
                draft_model,
                ids,
                k=k,
                max_new_tokens=max_new_tokens,
                eos_ids=eos,
                device=device,
                use_cache=use_cache,
            )
        except (AttributeError, NotImplementedError, TypeError, ValueError, RuntimeError) as e:
            if not use_cache:
                raise
            # a model whose KV cache cannot be fed incrementally or cropped: full re-forwards
            use_cache, cache_fallback = False, f"{type(e).__name__}: {e}"[:300]
            spec, rounds = speculative_generate(
                target_model,
                draft_model,
                ids,
                k=k,
                max_new_tokens=max_new_tokens,
                eos_ids=eos,
                device=device,
                use_cache=False,
            )
        all_rounds.append(rounds)
        generated_per_prompt.append(list(spec))
        generated += len(spec)
        if check_lossless:
            key = (tuple(ids), max_new_tokens, tuple(sorted(eos)))
            ref = reference_cache.get(key) if reference_cache is not None else None
            if ref is None:
                ref = greedy_generate(target_model, ids, max_new_tokens, eos, device, use_cache=use_cache)
                if reference_cache is not None:
                    reference_cache[key] = ref
            if ref != spec:
                first = next((j for j, (a, b) in enumerate(zip(ref, spec)) if a != b), min(len(ref), len(spec)))
                mismatches.append({"prompt": i, "first_mismatch": first})
        if i < 3:
            samples.append(
                {
                    "prompt_tokens": len(ids),
                    "generated": spec[:32],
                    "mean_accept": (sum(rounds) / len(rounds) + 1) if rounds else None,
                }
            )
    res = _summarise(all_rounds, k)
    res.update(
        {
            "k": k,
            "lossless": (not mismatches) if check_lossless else None,
            "mismatches": mismatches,
            "num_prompts": len(all_rounds),
            "tokens_generated": generated,
            "max_new_tokens": max_new_tokens,
            "samples": samples,
            "kv_cache": use_cache,
            "kv_cache_fallback": cache_fallback,
            "rounds_per_prompt": all_rounds,
            "generated_per_prompt": generated_per_prompt,
        }
    )
    return res
