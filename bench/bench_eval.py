"""Evaluation speed: the speculative/greedy loops with the target's KV cache vs full re-forwards.

    .venv/bin/python bench/bench_eval.py [--data data] [--prompts 8] [--max-new-tokens 64]

Uses the demo's target (`data/models/target_model`) and trained draft (`data/models/draft_model`),
so run `make demo` first. Both modes run in this process on the same prompts; the tokens and
accepted-per-round counts must be identical. Raw numbers: bench/results/eval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from specforge_assets.train.eagle3 import load_draft_checkpoint
    from specforge_assets.train.evaluate import greedy_generate, speculative_generate

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO / "data"))
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args()
    data = Path(args.data)
    torch.manual_seed(0)
    target = AutoModelForCausalLM.from_pretrained(str(data / "models" / "target_model"), dtype=torch.float32).eval()
    draft = load_draft_checkpoint(data / "models" / "draft_model", target).eval()
    rows = [json.loads(l) for l in open(data / "tokenized" / "dataset" / "train.jsonl")][: args.prompts]
    prompts = [r["input_ids"][: max(8, len(r["input_ids"]) // 2)] for r in rows]
    res: dict = {
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "k": args.k,
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
        "threads": torch.get_num_threads(),
    }
    outs = {}
    for use_cache in (False, True):
        t0 = time.perf_counter()
        spec = [
            speculative_generate(
                target,
                draft,
                p,
                k=args.k,
                max_new_tokens=args.max_new_tokens,
                eos_ids=set(),
                device="cpu",
                use_cache=use_cache,
            )
            for p in prompts
        ]
        t1 = time.perf_counter()
        greedy = [greedy_generate(target, p, args.max_new_tokens, set(), "cpu", use_cache=use_cache) for p in prompts]
        t2 = time.perf_counter()
        name = "kv_cache" if use_cache else "full_reforward"
        res[name] = {"speculative_s": round(t1 - t0, 2), "greedy_s": round(t2 - t1, 2)}
        outs[name] = (spec, greedy)
        print(name, res[name], flush=True)
    res["identical"] = outs["kv_cache"] == outs["full_reforward"]
    res["speedup_speculative"] = round(res["full_reforward"]["speculative_s"] / res["kv_cache"]["speculative_s"], 2)
    res["speedup_greedy"] = round(res["full_reforward"]["greedy_s"] / res["kv_cache"]["greedy_s"], 2)
    print(json.dumps(res, indent=1))
    (REPO / "bench" / "results" / "eval.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
