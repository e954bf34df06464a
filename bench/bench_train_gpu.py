"""EAGLE3 online training throughput: tokens/s and MFU with a Llama-3.1-8B-shaped target.

Random weights (no download): the target is built from a config on the GPU in bf16; the draft
is the 1-layer EAGLE3 draft (draft vocab 32000) trained with TTT 7 through the same
``Eagle3Trainer.train_step`` that ``train_draft`` uses (target forward with hidden states +
draft TTT forward/backward + AdamW step).

MFU counts model FLOPs only:
  target forward: 2·tokens·(non-embedding params incl. lm_head) + causal attention 2·T²·H per layer per row;
  draft, per TTT step: 2·tokens·(midlayer + lm_head params) + causal attention 2·T²·H per row,
  times 3 for forward+backward; fc: 2·tokens·3H·H times 2 (its input needs no gradient).
Peak: 989 TFLOP/s bf16 dense (H100 SXM and H200 datasheet).

Usage (one GPU / two GPUs):
  python bench/bench_train_gpu.py --batch-size 2 --steps 10
  torchrun --nproc_per_node 2 bench/bench_train_gpu.py --batch-size 2 --steps 10
  python bench/bench_train_gpu.py --preset tiny --device cpu --steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from specforge_assets.train.eagle3 import build_draft  # noqa: E402
from specforge_assets.train.loop import Eagle3Trainer, target_features  # noqa: E402
from specforge_assets.train.settings import TrainConfig  # noqa: E402

PEAK_BF16 = 989e12

PRESETS = {
    # meta-llama/Llama-3.1-8B shapes
    "llama3-8b": dict(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),
    # HuggingFaceTB/SmolLM2-135M-Instruct shapes (the reference real target)
    "smollm2": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    ),
}


def flops_per_step(tcfg, dcfg, B: int, T: int, ttt: int) -> dict:
    H, L, V, I = tcfg.hidden_size, tcfg.num_hidden_layers, tcfg.vocab_size, tcfg.intermediate_size
    hd = H // tcfg.num_attention_heads
    kv = tcfg.num_key_value_heads * hd
    layer = H * H + 2 * H * kv + H * H + 3 * H * I
    tokens = B * T
    target = 2 * tokens * (L * layer + H * V) + L * B * 2 * T * T * H
    Hd, Id, Vd = dcfg.hidden_size, dcfg.intermediate_size, dcfg.draft_vocab_size
    kvd = dcfg.num_key_value_heads * dcfg.head_dim
    qd = dcfg.num_attention_heads * dcfg.head_dim
    mid = 2 * Hd * qd + 2 * (2 * Hd * kvd) + qd * Hd + 3 * Hd * Id
    per_step = 2 * tokens * (mid + Hd * Vd) + B * 2 * T * T * qd
    draft = 3 * ttt * per_step + 2 * (2 * tokens * 3 * dcfg.target_hidden_size * Hd)
    return {"target_fwd": target, "draft_fwd_bwd": draft, "total": target + draft}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama3-8b", choices=sorted(PRESETS))
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--ttt", type=int, default=7)
    ap.add_argument("--draft-vocab", type=int, default=32000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="append the result as one JSON line here")
    a = ap.parse_args()

    from transformers import AutoModelForCausalLM, LlamaConfig

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if a.device == "auto":
        device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = torch.device(a.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    tcfg = LlamaConfig(**PRESETS[a.preset])
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        target = AutoModelForCausalLM.from_config(tcfg, dtype=dtype, attn_implementation="sdpa")
    target.eval().requires_grad_(False)
    Vd = min(a.draft_vocab, tcfg.vocab_size)
    g = torch.Generator().manual_seed(1)
    used = torch.randperm(tcfg.vocab_size, generator=g)[:Vd].sort().values
    d2t = used - torch.arange(Vd)
    t2d = torch.zeros(tcfg.vocab_size, dtype=torch.bool)
    t2d[used] = True
    draft = build_draft(target, d2t=d2t, t2d=t2d, seed=0).to(device)  # fp32 master weights, bf16 autocast
    build_s = time.perf_counter() - t0

    cfg = TrainConfig(
        ttt_length=a.ttt,
        max_length=a.max_length,
        batch_size=a.batch_size,
        compile=a.compile,
        lr=1e-4,
        warmup_ratio=0.0,
        dtype="auto",
    )
    trainer = Eagle3Trainer(cfg, target, draft, device, total_steps=a.warmup + a.steps + 10)
    B, T = a.batch_size, a.max_length
    gen = torch.Generator().manual_seed(100 + rank)
    ids = torch.randint(0, tcfg.vocab_size, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[:, :16] = 0
    batch = {"input_ids": ids, "loss_mask": mask}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(a.warmup):
        trainer.train_step(batch)
    sync()
    if world > 1:
        dist.barrier()
    t1 = time.perf_counter()
    for _ in range(a.steps):
        res = trainer.train_step(batch)
    sync()
    step_s = (time.perf_counter() - t1) / a.steps
    loss = float(res["loss"])

    # target forward alone, for the breakdown
    with torch.no_grad():
        idsd = ids.to(device)
        sync()
        t2 = time.perf_counter()
        n_fwd = max(1, min(5, a.steps))
        for _ in range(n_fwd):
            target_features(target, idsd, None, list(draft.config.aux_layer_ids))
        sync()
        target_s = (time.perf_counter() - t2) / n_fwd

    fl = flops_per_step(tcfg, draft.config, B, T, a.ttt)
    tok_s_rank = B * T / step_s
    tot = torch.tensor([tok_s_rank], device=device, dtype=torch.float64)
    if world > 1:
        dist.all_reduce(tot)
    res = {
        "preset": a.preset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": world,
        "batch_size_per_gpu": B,
        "max_length": T,
        "ttt": a.ttt,
        "draft_vocab": Vd,
        "compile": a.compile,
        "step_s": step_s,
        "tokens_per_s_per_gpu": tok_s_rank,
        "tokens_per_s_total": float(tot[0]),
        "target_fwd_s": target_s,
        "draft_share_s": step_s - target_s,
        "tflops_per_step": fl["total"] / 1e12,
        "target_tflops": fl["target_fwd"] / 1e12,
        "draft_tflops": fl["draft_fwd_bwd"] / 1e12,
        "achieved_tflops_per_gpu": fl["total"] / step_s / 1e12,
        "mfu": fl["total"] / step_s / PEAK_BF16,
        "target_fwd_mfu": fl["target_fwd"] / target_s / PEAK_BF16,
        "draft_mfu": fl["draft_fwd_bwd"] / max(step_s - target_s, 1e-9) / PEAK_BF16,
        "max_mem_gib": (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None,
        "build_s": build_s,
        "loss": loss,
        "aux_layers": list(draft.config.aux_layer_ids),
        "torch": torch.__version__,
    }
    if rank == 0:
        line = json.dumps(res)
        print(line, flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
