"""Probe, before the real-target experiment: what one GPU does with a SmolLM2-135M-shaped model.

Random weights in SmolLM2-135M-Instruct's exact shape (Llama, 30 layers, hidden 576, 9 heads /
3 KV heads, vocab 49,152, tied embeddings) and its real tokenizer, so the timings equal the real
model's without carrying its weights. Measures the costs the experiment's plan depends on:

  eval      seconds per verify round and per greedy token of this project's own
            `evaluate_acceptance` (batch 1, KV cache), untrained draft, k = 4 and 7
  generate  batched `model.generate` (bf16, sampling) tokens/s at several batch sizes
  serve     `transformers serve --continuous-batching`: tokens/s with N concurrent requests
            through this project's regeneration client path (httpx), if the serving extras exist
  train     one EAGLE3 training step (TTT 7) of this project's trainer at batch x 512 tokens

Each part is time-boxed and prints one JSON line; a failing part prints its error and the rest go on.

    python bench/gpu_probe_smollm2.py --tokenizer DIR [--parts eval,generate,serve,train] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_gpu import PRESETS  # noqa: E402 - one definition of SmolLM2's shape

SMOLLM2 = {**PRESETS["smollm2"], "bos_token_id": 1, "eos_token_id": 2}

OUT: list[dict] = []


def emit(rec: dict, out: str | None) -> None:
    line = json.dumps(rec)
    print(line, flush=True)
    OUT.append(rec)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def model(dtype, device):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    with torch.device(device):
        m = AutoModelForCausalLM.from_config(LlamaConfig(**SMOLLM2), dtype=dtype, attn_implementation="sdpa")
    return m.eval().requires_grad_(False)


def part_eval(tok, device, a) -> dict:
    from specforge_assets.train.evaluate import evaluate_acceptance

    target = model(torch.float32, device)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(100, 40000, (120,), generator=g).tolist() for _ in range(a.eval_prompts)]
    res = {}
    for k in (4, 7):
        t0 = time.perf_counter()
        r = evaluate_acceptance(
            target, tok, None, prompts, k=k, max_new_tokens=a.eval_tokens, check_lossless=False, stop_at_eos=False
        )
        spec_s = time.perf_counter() - t0
        res[f"k{k}_round_s"] = spec_s / max(1, r["num_rounds"])
        res[f"k{k}_acceptance_length"] = r["acceptance_length"]
    from specforge_assets.train.evaluate import greedy_generate

    t0 = time.perf_counter()
    for p in prompts:
        greedy_generate(target, p, a.eval_tokens, set(), device)
    res["greedy_token_s"] = (time.perf_counter() - t0) / (len(prompts) * a.eval_tokens)
    return res


def part_generate(tok, device, a) -> dict:
    m = model(torch.bfloat16, device)
    res = {}
    for bs in a.gen_batches:
        ids = torch.randint(100, 40000, (bs, 100), device=device)
        att = torch.ones_like(ids)
        torch.cuda.synchronize() if device.type == "cuda" else None
        t0 = time.perf_counter()
        out = m.generate(
            input_ids=ids,
            attention_mask=att,
            max_new_tokens=a.gen_tokens,
            min_new_tokens=a.gen_tokens,
            do_sample=True,
            temperature=0.7,
            top_p=1.0,
            pad_token_id=0,
        )
        torch.cuda.synchronize() if device.type == "cuda" else None
        dt = time.perf_counter() - t0
        n = (out.shape[1] - 100) * bs
        res[f"bs{bs}_tok_s"] = n / dt
        res[f"bs{bs}_step_s"] = dt / (out.shape[1] - 100)
    return res


async def _fire(base: str, n: int, max_tokens: int, timeout: float, model: str = "probe") -> dict:
    import httpx

    sem = asyncio.Semaphore(n)
    done = {"ok": 0, "tokens": 0, "err": 0, "first_err": None}

    async def one(c, i):
        async with sem:
            try:
                r = await c.post(
                    f"{base}/v1/chat/completions",
                    json={
                        "model": model,
                        "messages": [{"role": "user", "content": f"Tell me a long story number {i}."}],
                        "max_tokens": max_tokens,
                        "temperature": 0.7,
                    },
                )
                r.raise_for_status()
                done["ok"] += 1
                done["tokens"] += int(r.json().get("usage", {}).get("completion_tokens") or 0)
            except Exception as e:  # noqa: BLE001 - a probe records every failure kind
                done["err"] += 1
                done["first_err"] = done["first_err"] or f"{type(e).__name__}: {e}"[:300]

    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=n)) as c:
        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one(c, i) for i in range(n))), timeout)
        done["seconds"] = time.perf_counter() - t0
    return done


def part_serve(tok, device, a) -> dict:
    import httpx

    d = Path("/tmp/probe_model")
    m = model(torch.bfloat16, "cpu")
    m.save_pretrained(d)
    tok.save_pretrained(d)
    res = {}
    port = 8731
    cmd = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        str(d),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cuda" if device.type == "cuda" else "cpu",
        "--continuous-batching",
    ]
    log = open("/tmp/probe_serve.log", "wb")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        t0 = time.time()
        while time.time() - t0 < 120:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if p.poll() is not None:
                raise RuntimeError(f"server exited {p.returncode}")
            time.sleep(1)
        res["startup_s"] = time.time() - t0
        for n in a.serve_concurrency:
            r = asyncio.run(_fire(base, n, a.gen_tokens, a.serve_timeout, model=str(d)))  # served under its path
            r["tok_s"] = r["tokens"] / r["seconds"] if r.get("seconds") else None
            res[f"c{n}"] = r
    finally:
        os.killpg(p.pid, 15)
        p.wait(timeout=30)
        log.close()
        res["log_tail"] = Path("/tmp/probe_serve.log").read_text(errors="replace")[-600:]
    return res


def part_train(tok, device, a) -> dict:
    res = {}
    for bs in a.train_batches:
        cmd = [
            sys.executable,
            str(Path(__file__).parent / "bench_train_gpu.py"),
            "--preset",
            "smollm2",
            "--batch-size",
            str(bs),
            "--max-length",
            "512",
            "--ttt",
            "7",
            "--draft-vocab",
            "32000",
            "--steps",
            "10",
            "--warmup",
            "3",
            "--device",
            "auto",
        ] + (["--compile"] if a.compile else [])
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.part_timeout)
        line = [x for x in p.stdout.splitlines() if x.startswith("{")]
        res[f"bs{bs}"] = json.loads(line[-1]) if line else {"error": (p.stderr or p.stdout)[-500:]}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--parts", default="eval,generate,serve,train")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--eval-prompts", type=int, default=6)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--gen-batches", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--serve-concurrency", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--serve-timeout", type=float, default=90)
    ap.add_argument("--train-batches", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--part-timeout", type=float, default=150)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    from transformers import AutoTokenizer

    device = torch.device(
        "cuda" if (a.device == "auto" and torch.cuda.is_available()) else (a.device if a.device != "auto" else "cpu")
    )
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    emit(
        {
            "part": "env",
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "cpus": os.cpu_count(),
        },
        a.out,
    )
    for part in a.parts.split(","):
        t0 = time.time()
        try:
            rec = globals()[f"part_{part}"](tok, device, a)
        except Exception:  # noqa: BLE001 - the probe reports and goes on
            rec = {"error": traceback.format_exc()[-1200:]}
        emit({"part": part, "seconds": round(time.time() - t0, 1), **rec}, a.out)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
