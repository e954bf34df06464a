"""A batching OpenAI-compatible chat server over Hugging Face `generate`, for the GPU experiment.

Why it exists: the experiment (bench/real_target_experiment.py) regenerates ~16k answers with
SmolLM2-135M on an H200 that can reach no package index, so vLLM / SGLang cannot be installed there.
`transformers serve` without continuous batching answers one request at a time (~28 ms a token
for this model: ~16 hours for the data), and its `--continuous-batching` mode stalled on 16
concurrent requests in a test on this project's CPU machine. Plain batched `generate` was
measured at ~5,100 tokens/s at batch 512 on the H200 (bench/gpu_probe_smollm2.py), so this server
collects the requests that arrive within `--wait-ms` (up to `--max-batch`), left-pads them, samples
them in one `generate` call and answers each. It is a benchmark tool, not part of the product:
the product's regeneration client talks to it exactly as to any OpenAI-compatible server.

What it honours: `messages` (rendered with the model's own chat template), `max_tokens`,
`temperature` (0 = greedy), `top_p`. Per-request `seed` is accepted and ignored (one batch shares
one random stream); `n` > 1 and streaming are refused with HTTP 400. Replies carry
`finish_reason` "stop" (an end-of-turn token was produced) or "length", and `usage`.

    python bench/batch_server.py MODEL_DIR --port 30000 [--device cuda:0] [--max-batch 512]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import queue
import threading
import time
import uuid

import torch


class Batcher:
    """Collects requests into batches and runs them through `model.generate` on one thread."""

    def __init__(self, model, tok, *, max_batch: int, wait_ms: float):
        self.model, self.tok = model, tok
        self.max_batch, self.wait_s = max_batch, wait_ms / 1000
        self.q: queue.Queue = queue.Queue()
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos = sorted(
            {int(e) for e in eos if e is not None} | ({tok.eos_token_id} if tok.eos_token_id is not None else set())
        )
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos[0]
        self.stats = {"batches": 0, "requests": 0, "completion_tokens": 0, "busy_s": 0.0}
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, ids: list[int], params: tuple) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self.q.put((ids, params, fut))
        return fut

    def _loop(self) -> None:
        while True:
            batch = [self.q.get()]
            end = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                left = end - time.monotonic()
                try:
                    batch.append(self.q.get(timeout=max(left, 0)) if left > 0 else self.q.get_nowait())
                except queue.Empty:
                    break
            groups: dict = {}
            for item in batch:
                groups.setdefault(item[1], []).append(item)
            for params, items in groups.items():
                try:
                    self._run(params, items)
                except Exception as e:  # noqa: BLE001 - every waiting request gets the error
                    for _, _, fut in items:
                        if not fut.done():
                            fut.set_exception(e)

    @torch.no_grad()
    def _run(self, params: tuple, items: list) -> None:
        temperature, top_p, max_tokens = params
        t0 = time.perf_counter()
        items = sorted(items, key=lambda it: len(it[0]))
        width = max(len(it[0]) for it in items)
        dev = next(self.model.parameters()).device
        ids = torch.full((len(items), width), self.pad, dtype=torch.long)
        att = torch.zeros((len(items), width), dtype=torch.long)
        for i, (p, _, _) in enumerate(items):
            ids[i, width - len(p) :] = torch.tensor(p)
            att[i, width - len(p) :] = 1
        kw = dict(do_sample=temperature > 0, max_new_tokens=max_tokens, pad_token_id=self.pad, eos_token_id=self.eos)
        if temperature > 0:
            kw.update(temperature=temperature, top_p=top_p, top_k=0)
        out = self.model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), **kw)[:, width:].tolist()
        for (p, _, fut), toks in zip(items, out):
            cut = next((j for j, t in enumerate(toks) if t in self.eos), None)
            body = toks if cut is None else toks[:cut]
            text = self.tok.decode(body, skip_special_tokens=True)
            n = len(body) + (0 if cut is None else 1)
            fut.set_result(
                {
                    "content": text,
                    "finish_reason": "length" if cut is None else "stop",
                    "prompt_tokens": len(p),
                    "completion_tokens": n,
                }
            )
            self.stats["completion_tokens"] += n
        self.stats["batches"] += 1
        self.stats["requests"] += len(items)
        self.stats["busy_s"] += time.perf_counter() - t0


def build_app(batcher: Batcher, tok, served_name: str):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(_: Request):
        return JSONResponse({"status": "ok"})

    async def models(_: Request):
        return JSONResponse({"object": "list", "data": [{"id": served_name, "object": "model", "owned_by": "bench"}]})

    async def stats(_: Request):
        return JSONResponse(batcher.stats)

    async def chat(req: Request):
        try:
            body = await req.json()
            msgs = body["messages"]
            if body.get("stream") or int(body.get("n") or 1) != 1:
                return JSONResponse({"error": {"message": "stream and n > 1 are not supported"}}, status_code=400)
            temperature = float(body.get("temperature") if body.get("temperature") is not None else 1.0)
            top_p = float(body.get("top_p") if body.get("top_p") is not None else 1.0)
            max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
        except (ValueError, KeyError, TypeError) as e:
            return JSONResponse({"error": {"message": f"bad request: {e}"}}, status_code=400)
        r = await asyncio.wrap_future(batcher.submit(list(ids), (temperature, top_p, max_tokens)))
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": served_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": r["content"]},
                        "finish_reason": r["finish_reason"],
                    }
                ],
                "usage": {
                    "prompt_tokens": r["prompt_tokens"],
                    "completion_tokens": r["completion_tokens"],
                    "total_tokens": r["prompt_tokens"] + r["completion_tokens"],
                },
            }
        )

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/stats", stats),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=30000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-batch", type=int, default=512)
    ap.add_argument("--wait-ms", type=float, default=200)
    ap.add_argument("--served-name", default=None, help="model name in replies (default: the model path)")
    a = ap.parse_args()
    import uvicorn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.model)
    dtype = getattr(torch, a.dtype) if a.device != "cpu" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(a.device).eval()
    app = build_app(Batcher(model, tok, max_batch=a.max_batch, wait_ms=a.wait_ms), tok, a.served_name or a.model)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
